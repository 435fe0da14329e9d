"""Several replicas reach the weights of one device on the same global batch.

- `MirroredStrategy` over 2 logical CPU devices (configured before
  TensorFlow starts, hence a subprocess), through `model.fit`, and through
  the keras_mm distributed loop for a model with a boolean (mask) input,
  where `model.fit` fails in Keras 3.15;
- `MultiWorkerMirroredStrategy` with 2 worker processes on 127.0.0.1
  (`TF_CONFIG` per process), through the keras_mm distributed loop
  (`model.fit` fails there in Keras 3.15), started by the test and killed
  after a time limit.

Tolerance: every weight within atol 1e-5 of the one-device run (measured
differences are ~3e-8: float32 summation order of the gradient all-reduce).
The recipe has no BatchNormalization (per-replica batch statistics differ
from those of the global batch by design) and uses deterministic ops. Both
tests train the same recipe (best checkpoint, backups and early stopping
on), so the one-device reference runs once, beside the mirrored runs
(module fixture `mirrored_runs`), and serves both.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from test_training import assert_loss_went_down, tiny_recipe

# End-to-end runs in subprocesses (a minute or more on 2 cores): in the
# slow set, which CI runs (`pytest -m slow`).
pytestmark = pytest.mark.slow

ATOL = 1e-5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = json.loads(sys.argv[1])
    if args.get("logical_cpus"):
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] *
            args["logical_cpus"])
    import numpy as np
    from keras_mm.training import train
    for run in args["runs"]:
        result = train(args["recipe"], run["overrides"], export=False,
                       runs_dir=args["runs_dir"], verbose=2)
        np.savez(run["out"], *[np.asarray(w)
                                for w in result.model.get_weights()])
        with open(run["out"] + ".json", "w") as f:
            json.dump({"is_chief": result.is_chief,
                       "history": result.history,
                       "metrics": result.metrics}, f)
    print("WORKER DONE", flush=True)
""")


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _weights(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def _assert_same_weights(a, b):
    assert len(a) == len(b)
    worst = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    assert worst <= ATOL, f"max weight difference {worst} > {ATOL}"
    return worst


def _recipe(folder):
    """The recipe of both tests, on the demo set in `folder / "demo"`.

    Checkpointing, backups and early stopping run on every replica and
    worker (a non-chief worker writes to a private folder, removed at the
    end); without best-weight restoring the final weights are those of
    the last epoch, compared across strategies.
    """
    from keras_mm.datasets import make_demo_dataset

    make_demo_dataset(folder / "demo", num_train=32, num_val=16,
                      num_test=16)
    recipe = tiny_recipe(folder / "demo", name="dist", epochs=2,
                         batch_size=8, deterministic=True,
                         early_stopping={"patience": 5,
                                         "restore_best_weights": False})
    path = folder / "dist.json"
    path.write_text(json.dumps(recipe))
    return os.fspath(path)


def _run_script(tmp_path, args, env, timeout):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run([sys.executable, os.fspath(script),
                           json.dumps(args)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 and "WORKER DONE" in proc.stdout, \
        proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    """One process with 2 logical CPUs: MirroredStrategy and one device,
    without and with a boolean input; `(folder, recipe path)`."""
    tmp_path = tmp_path_factory.mktemp("mirrored")
    recipe_path = _recipe(tmp_path)
    # With a boolean input (the sensor's step mask, on by default)
    # `model.fit` fails under MirroredStrategy in Keras 3.15; the trainer
    # then takes the distributed loop. Without it, model.fit.
    mask = ["inputs.sensor.mask=true"]
    no_mask = ["inputs.sensor.mask=false"]
    runs = [{"overrides": ["training.strategy=mirrored", "name=mirrored"]
             + no_mask, "out": os.fspath(tmp_path / "mirrored.npz")},
            {"overrides": ["training.strategy=default", "name=single"]
             + no_mask, "out": os.fspath(tmp_path / "single.npz")},
            {"overrides": ["training.strategy=mirrored", "name=mirrored_mask"]
             + mask, "out": os.fspath(tmp_path / "mirrored_mask.npz")},
            {"overrides": ["training.strategy=default", "name=single_mask"]
             + mask, "out": os.fspath(tmp_path / "single_mask.npz")}]
    _run_script(tmp_path, {"recipe": recipe_path, "runs": runs,
                           "runs_dir": os.fspath(tmp_path / "runs"),
                           "logical_cpus": 2}, _env(), timeout=420)
    return tmp_path, recipe_path


def test_mirrored_two_cpu_replicas_match_one_device(mirrored_runs):
    tmp_path, _ = mirrored_runs
    info = json.load(open(tmp_path / "runs" / "mirrored" / "run.json"))
    assert info["strategy"] == "mirrored" and info["num_replicas"] == 2
    assert info["custom_loop"] is False
    single_info = json.load(open(tmp_path / "runs" / "single" / "run.json"))
    assert single_info["num_replicas"] == 1
    _assert_same_weights(_weights(tmp_path / "mirrored.npz"),
                         _weights(tmp_path / "single.npz"))
    info = json.load(open(tmp_path / "runs" / "mirrored_mask" / "run.json"))
    assert info["num_replicas"] == 2 and info["custom_loop"] is True
    assert "boolean inputs (sensor_mask)" in " ".join(info["notes"])
    _assert_same_weights(_weights(tmp_path / "mirrored_mask.npz"),
                         _weights(tmp_path / "single_mask.npz"))
    for name in ("mirrored", "mirrored_mask"):
        # The best checkpoint was kept, the backup removed at the end.
        assert (tmp_path / "runs" / name / "best.keras").exists()
        assert not (tmp_path / "runs" / name / "backup").exists()
    # The runs did train (untrained models would match trivially).
    for name in ("mirrored", "mirrored_mask"):
        history = json.load(open(tmp_path / f"{name}.npz.json"))["history"]
        assert len(history["loss"]) == 2
        assert_loss_went_down(history, name)


def test_multi_worker_two_processes_match_one_device(tmp_path,
                                                    mirrored_runs):
    reference, recipe_path = mirrored_runs
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs, logs = [], []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster,
                                "task": {"type": "worker", "index": index}})
        runs = [{"overrides": ["training.strategy=multi_worker"],
                 "out": os.fspath(tmp_path / f"worker{index}.npz")}]
        args = {"recipe": recipe_path,
                "runs_dir": os.fspath(tmp_path / "runs"), "runs": runs}
        log = open(tmp_path / f"worker{index}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, os.fspath(script), json.dumps(args)],
            env=_env(TF_CONFIG=tf_config), cwd=REPO, stdout=log,
            stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 420
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    outputs = [open(tmp_path / f"worker{i}.log").read() for i in range(2)]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0 and "WORKER DONE" in output, \
            output[-6000:]
    assert "keras_mm distributed loop" in outputs[0]

    chief = json.load(open(tmp_path / "worker0.npz.json"))
    other = json.load(open(tmp_path / "worker1.npz.json"))
    # The one-device reference (same recipe, same global batch).
    single = json.load(open(reference / "single.npz.json"))
    assert chief["is_chief"] and not other["is_chief"]
    assert other["metrics"] == {}
    info = json.load(open(tmp_path / "runs" / "dist" / "run.json"))
    assert info["strategy"] == "multi_worker" and info["num_replicas"] == 2
    assert info["custom_loop"] is True
    single_info = json.load(open(reference / "runs" / "single" /
                                 "run.json"))
    assert single_info["strategy"] == "default"
    assert single_info["num_replicas"] == 1
    run_dir = tmp_path / "runs" / "dist"
    assert (run_dir / "best.keras").exists()
    assert not (run_dir / "backup").exists()
    assert not any(n.startswith(".worker") for n in os.listdir(run_dir))
    assert_loss_went_down(chief["history"], "the multi-worker run")
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(chief["history"][key],
                                   single["history"][key], atol=ATOL)
    w0 = _weights(tmp_path / "worker0.npz")
    _assert_same_weights(w0, _weights(tmp_path / "worker1.npz"))
    _assert_same_weights(w0, _weights(reference / "single.npz"))
    assert chief["metrics"]["test"]["loss"] == pytest.approx(
        single["metrics"]["test"]["loss"], abs=1e-5)
