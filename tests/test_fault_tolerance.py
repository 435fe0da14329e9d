"""A run killed with SIGKILL mid-epoch resumes from its last backup when the
same command is started again, and ends with the metrics of a run that was
never interrupted (deterministic ops on).

The command is a small script calling `keras_mm.training.train` on a
recipe file, with one extra callback that logs each finished batch to a
file and sleeps a little, so that the test can kill the process in the
middle of the second epoch. The recipe has dropout (its random state must
come back with the backup), random crops of the sensor series in the
tf.data pipeline (the shuffle and crops of an epoch depend only on the seed
and the epoch), early stopping with best-weight restoring and a best
checkpoint (their state must survive the restart).
"""

import csv
import json
import os
import signal
import textwrap
import time

import pytest

from subprocess_runs import finish, start
from test_training import assert_loss_went_down, tiny_recipe, write_recipe

# End-to-end runs in subprocesses (a minute or more on 2 cores): in the
# slow set, which CI runs (`pytest -m slow`).
pytestmark = pytest.mark.slow

EPOCHS = 3

COMMAND = textwrap.dedent("""
    import json, os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras_mm.training import train

    recipe, runs_dir, batch_log = sys.argv[1:4]

    class LogBatches(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            with open(batch_log, "a") as f:
                f.write(f"{self.epoch} {batch}\\n")
            time.sleep(0.25)

    result = train(recipe, export=False, runs_dir=runs_dir, verbose=2,
                   callbacks=[LogBatches()])
    print("RESUMED_FROM", result.resumed_from_epoch, flush=True)
""")


def _start(script, recipe, runs_dir, batch_log, log_path):
    return start([script, recipe, runs_dir, batch_log], log_path)


def _batches(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(map(int, line.split())) for line in f if line.strip()]


def _backup_epoch(run_dir):
    path = os.path.join(run_dir, "backup", "training_metadata.json")
    try:
        with open(path) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError):
        return None


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return [{k: float(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def _assert_close(a, b, path="metrics"):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    else:
        assert a == pytest.approx(b, abs=1e-6), path


def test_sigkill_mid_epoch_then_same_command_resumes(tmp_path):
    from keras_mm.datasets import make_demo_dataset

    make_demo_dataset(tmp_path / "demo", num_train=32, num_val=16,
                      num_test=16)
    recipe = tiny_recipe(
        tmp_path / "demo", name="ft", epochs=EPOCHS, generate=False,
        deterministic=True,
        early_stopping={"patience": 5, "restore_best_weights": True})
    recipe["trunk"] = {"hidden_units": [8], "dropout": 0.3}
    recipe["inputs"]["sensor"]["preprocess"]["random_crop"] = True  # 50->40
    recipe_path = write_recipe(tmp_path / "ft.yaml", recipe)
    script = tmp_path / "train_ft.py"
    script.write_text(COMMAND)
    script = os.fspath(script)

    # The uninterrupted reference and the run to be killed, side by side.
    ref_runs, runs = tmp_path / "reference", tmp_path / "runs"
    reference = _start(script, recipe_path, ref_runs, tmp_path / "ref.txt",
                       tmp_path / "reference.log")
    victim = _start(script, recipe_path, runs, tmp_path / "batches.txt",
                    tmp_path / "killed.log")
    run_dir = os.fspath(runs / "ft")
    deadline = time.monotonic() + 300
    killed_at = None
    while time.monotonic() < deadline and victim.poll() is None:
        done = _batches(tmp_path / "batches.txt")
        # Kill once epoch 1 (the second) is under way and the backup of
        # epoch 0 is on disk: mid-epoch, after the first backup.
        if done and done[-1][0] == 1 and done[-1][1] >= 1 and \
                _backup_epoch(run_dir) == 1:
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = done[-1]
            break
        time.sleep(0.05)
    output = finish(victim, timeout=30)
    assert killed_at is not None, "the run ended before it could be " \
        "killed:\n" + output[-4000:]
    assert victim.returncode == -signal.SIGKILL
    assert "RESUMED_FROM" not in output
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    assert _backup_epoch(run_dir) == 1
    assert len(_history(run_dir)) >= 1

    # The same command again: resumes at epoch 1 (the interrupted one).
    resumed = _start(script, recipe_path, runs, tmp_path / "batches.txt",
                     tmp_path / "resumed.log")
    output = finish(resumed, timeout=300)
    assert resumed.returncode == 0, output[-6000:]
    assert output.count(f"resuming ft from the backup in {run_dir}") == 1
    assert f"epoch 2 of {EPOCHS}" in output
    assert "RESUMED_FROM 1" in output
    assert "Epoch 1/" not in output         # epoch 0 was not trained again
    epochs_seen = {e for e, _ in _batches(tmp_path / "batches.txt")}
    assert epochs_seen == {0, 1, 2}

    ref_output = finish(reference, timeout=300)
    assert reference.returncode == 0, ref_output[-6000:]
    assert "RESUMED_FROM 0" in ref_output

    ref_dir = os.fspath(ref_runs / "ft")
    info = json.load(open(os.path.join(run_dir, "run.json")))
    assert info["resumed_from_epoch"] == 1 and info["epochs_run"] == EPOCHS
    assert not os.path.exists(os.path.join(run_dir, "backup"))
    _assert_close(_history(run_dir), _history(ref_dir), "history")
    assert_loss_went_down({"loss": [row["loss"] for row in _history(ref_dir)]},
                          "the reference run")
    _assert_close(json.load(open(os.path.join(run_dir, "metrics.json"))),
                  json.load(open(os.path.join(ref_dir, "metrics.json"))))
