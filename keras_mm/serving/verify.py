"""`verify(path)`: checks an export in a fresh interpreter.

The checks themselves live in `verify_savedmodel.py`, a script that imports
only tensorflow and tensorflow_text; this wrapper runs it with `python -I`
(isolated: no keras_mm on the path), bounds it in time and returns its JSON
report. A crash or a hang is a failure that names the step it was in.
"""

import json
import os
import signal
import subprocess
import sys

from keras_mm.errors import ExportError

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "verify_savedmodel.py")


def verify(path, timeout=600, raise_on_failure=False):
    """Verifies the SavedModel at `path`; returns the report dict.

    Args:
        path: a version folder (`saved_models/<name>/<version>`).
        timeout: seconds before the verifier is killed (a hang fails).
        raise_on_failure: raise `ExportError` instead of returning a
            failed report.
    """
    path = os.fspath(path)
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        report = {"path": path, "ok": False,
                  "error": f"{path} holds no saved_model.pb; pass a "
                           "version folder such as saved_models/NAME/1"}
    else:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        try:
            proc = subprocess.run(
                [sys.executable, "-I", SCRIPT, path], capture_output=True,
                text=True, timeout=timeout, env=env,
                preexec_fn=die_with_parent())
            report = _parse(proc.stdout, proc.stderr, proc.returncode, path)
        except subprocess.TimeoutExpired as e:
            report = {"path": path, "ok": False,
                      "error": f"verifier hung for {timeout}s during "
                               f"{_last_step(e.stderr)}"}
    if raise_on_failure and not report["ok"]:
        raise ExportError("verification failed:\n"
                          + json.dumps(report, indent=2))
    return report


PR_SET_PDEATHSIG = 1


def die_with_parent():
    """A `preexec_fn` tying a child process to this one (Linux): the kernel
    sends the child SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`),
    so a killed export leaves no verifier running. Returns None where
    prctl is unavailable (the child is then only bounded by its timeout).

    A parent that died between fork and prctl is caught by comparing the
    child's parent pid with ours.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def tie():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return tie


def _last_step(stderr):
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    steps = [line for line in (stderr or "").splitlines()
             if line.startswith("verify: ")]
    return steps[-1][len("verify: "):] if steps else "start-up"


def _parse(stdout, stderr, returncode, path):
    start = stdout.find("\n{") + 1 if not stdout.startswith("{") else 0
    if stdout[start:start + 1] == "{":
        try:
            report, _ = json.JSONDecoder().raw_decode(stdout[start:])
            if returncode not in (0, 1) and report.get("ok"):
                report["ok"] = False
            return report
        except json.JSONDecodeError:
            pass
    return {"path": path, "ok": False,
            "error": f"verifier exited with code {returncode} during "
                     f"{_last_step(stderr)}",
            "stderr_tail": (stderr or "")[-2000:]}


def main(argv=None):
    """`python -m keras_mm.serving.verify PATH`: prints the JSON report;
    exit status 1 when verification fails."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Verify a keras_mm SavedModel export in a fresh "
                    "interpreter (tensorflow + tensorflow_text only).")
    parser.add_argument("path", help="version folder, e.g. "
                                     "saved_models/demo/1")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    report = verify(args.path, timeout=args.timeout)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
