"""Python processes for the end-to-end kill-and-resume tests: started with
the repository on `PYTHONPATH` and their output in a log file."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    return env


def start(args, log_path):
    """`python *args` in the repository, stdout and stderr to `log_path`."""
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, *map(os.fspath, args)],
                            env=repo_env(), cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    proc.log_file = log
    return proc


def finish(proc, timeout):
    """Waits for `proc` (killed after `timeout` s); returns its output."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.log_file.close()
    with open(proc.log_file.name) as f:
        return f.read()
