"""Hostile training runs (issue 13 items 5 and 7): a run that learned
nothing is not exported, checkpoints are written atomically, a full disk
names the file, a corrupt checkpoint says so, and the export verifier dies
with its parent."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest

from test_training import tiny_recipe

from keras_mm.errors import DataError, ExportError


# -- atomic writes and full disks ---------------------------------------------


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path):
    from keras_mm.serving.atomic import atomic_file

    path = tmp_path / "best.keras"
    path.write_bytes(b"old, complete")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(path) as tmp:
            assert tmp.endswith("best.keras") and tmp != os.fspath(path)
            with open(tmp, "wb") as f:
                f.write(b"half of the new one")
            raise KeyboardInterrupt       # killed mid-write
    assert path.read_bytes() == b"old, complete"
    assert os.listdir(tmp_path) == ["best.keras"]     # no temp file left
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["best.keras"]


def test_enospc_message_names_the_path(tmp_path):
    from keras_mm.serving.atomic import name_path

    # /dev/full: every write fails with ENOSPC and no file name.
    with pytest.raises(OSError) as info:
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 65536)
            f.flush()
    assert info.value.errno == errno.ENOSPC
    target = os.fspath(tmp_path / "runs" / "best.keras")
    assert target not in str(info.value)
    named = name_path(info.value, target)
    assert named.errno == errno.ENOSPC and named.filename == target
    assert target in str(named) and "free space" in str(named)


FULL_DISK_SCRIPT = r"""
import json, os, sys
import keras
from keras_mm.training.run_callbacks import make_callbacks
from keras_mm.serving.atomic import atomic_write_text
from keras_mm.training.finished_run import check_checkpoint

folder = sys.argv[1]
training = {"early_stopping": None, "tensorboard": False, "backup": None,
            "checkpoint": {"monitor": "loss", "mode": "min"}}
callbacks, _, checkpointing = make_callbacks(
    training, folder, 0, has_val=False, verbose=0, say=print)
checkpoint = [c for c in callbacks
              if isinstance(c, keras.callbacks.ModelCheckpoint)][0]
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
checkpoint.set_model(model)
checkpoint.on_train_begin()
checkpoint.on_epoch_end(0, {"loss": 1.0})          # fits on the disk
best = os.path.join(folder, "best.keras")
before = open(best, "rb").read()
fd = os.open(os.path.join(folder, "filler"), os.O_WRONLY | os.O_CREAT)
try:                                               # fill the disk
    while True:
        os.write(fd, b"\0" * 4096)
except OSError:
    os.close(fd)
report = {}
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(256),
                          keras.layers.Dense(2)])
checkpoint.set_model(model)
try:
    checkpoint.on_epoch_end(1, {"loss": 0.5})      # better: saved again
    report["raised"] = None
except OSError as error:
    report["raised"] = [error.errno, str(error)]
try:
    atomic_write_text(os.path.join(folder, "metrics.json"), "x" * 200000)
except OSError as error:
    report["text"] = [error.errno, str(error)]
report["same_bytes"] = open(best, "rb").read() == before
report["entries"] = sorted(os.listdir(folder))
try:
    check_checkpoint(best)
    report["readable"] = True
except Exception as error:
    report["readable"] = str(error)
print("REPORT " + json.dumps(report))
"""


def _tmpfs_command(folder, size_kb):
    return ["unshare", "-r", "-m", "sh", "-c",
            f"mount -t tmpfs -o size={size_kb}k tmpfs {folder} && "
            f'exec "$0" "$@"']


def test_full_disk_never_truncates_the_best_checkpoint(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    probe = subprocess.run(_tmpfs_command(folder, 64) + ["true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a small tmpfs in a user namespace here: "
                    f"{probe.stderr.strip()}")
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT)
    proc = subprocess.run(
        _tmpfs_command(folder, 256) + [sys.executable, str(script),
                                       str(folder)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith("REPORT ")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(lines[0][len("REPORT "):])
    best = os.path.join(folder, "best.keras")
    assert report["raised"] is not None, report
    assert report["raised"][0] == errno.ENOSPC, report
    assert best in report["raised"][1], report
    assert report["text"][0] == errno.ENOSPC
    assert os.path.join(folder, "metrics.json") in report["text"][1]
    # The previous checkpoint is whole, and no temp file is left behind.
    assert report["same_bytes"] is True, report
    assert report["readable"] is True, report
    assert report["entries"] == ["best.keras", "filler"], report


def test_corrupt_checkpoint_error_names_the_path(tmp_path):
    from keras_mm.training.finished_run import load_model

    path = tmp_path / "best.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}" * 5000)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])       # a full disk's leftover
    with pytest.raises(DataError) as info:
        load_model(os.fspath(path))
    message = str(info.value)
    assert message.startswith(f"{path}: the checkpoint is corrupt or "
                              "truncated"), message
    assert "File not found" not in message
    with pytest.raises(DataError, match="no such checkpoint"):
        load_model(os.fspath(tmp_path / "absent.keras"))


# -- the verifier dies with its parent ----------------------------------------


PARENT_SCRIPT = r"""
import os, sys
import importlib
verify = importlib.import_module("keras_mm.serving.verify")
verify.SCRIPT = sys.argv[1]          # a stand-in verifier that sleeps
verify.verify(sys.argv[2], timeout=120)
"""

SLEEPER_SCRIPT = r"""
import os, sys, time
with open(sys.argv[1] + "/../child.pid", "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            state = [line for line in f if line.startswith("State:")][0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "Z" not in state.split()[1]        # a zombie is gone too


def test_sigkill_during_verification_kills_the_verifier(tmp_path):
    export = tmp_path / "saved" / "1"
    export.mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"")
    (tmp_path / "sleeper.py").write_text(SLEEPER_SCRIPT)
    (tmp_path / "parent.py").write_text(PARENT_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"),
                               str(tmp_path / "sleeper.py"), str(export)])
    pid_file = tmp_path / "saved" / "child.pid"
    child = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                pid_file.exists() and pid_file.read_text()):
            assert parent.poll() is None, "the parent exited early"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.05)
        assert not _alive(child), \
            "the verifier outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


# -- a run that learned nothing is not exported -------------------------------


def test_untrained_reason_baselines():
    from keras_mm.training.baseline_check import (  # noqa: I001
        head_baseline, untrained_reason)

    spec = {"heads": {"label": {"type": "classification"},
                      "level": {"type": "regression"}}}
    chance = [[4, 0], [4, 0]]               # always class 0: 50% majority
    learned = [[3, 1], [1, 3]]
    assert head_baseline(chance)[0] == pytest.approx(0.5)
    assert head_baseline(chance)[1] == pytest.approx(0.6931, abs=1e-4)

    def metrics(matrix, loss):
        return {"test": {"loss": loss, "heads": {
            "label": {"loss": loss, "confusion_matrix": matrix},
            "level": {"loss": 0.1}}}}

    history = {"loss": [1.0, 0.9]}
    reason = untrained_reason(history, metrics(chance, 0.9), spec)
    assert "head 'label' never beats the trivial baseline" in reason
    assert "accuracy 0.500 vs 0.500 for the majority class" in reason
    assert untrained_reason(history, metrics(learned, 0.5), spec) is None
    # Majority-class accuracy but a loss below the prior's: it learned.
    assert untrained_reason(history, metrics(chance, 0.5), spec) is None
    reason = untrained_reason({"loss": [1.0, float("nan")]},
                              metrics(learned, 0.5), spec)
    assert reason == "the loss went non-finite (nan) at epoch 2"


def test_exploding_learning_rate_is_not_exported(tmp_path):
    from keras_mm.training import train

    recipe = tiny_recipe(tmp_path / "demo", name="boom", epochs=1,
                         sizes=(16, 8, 8),
                         optimizer={"type": "adam", "learning_rate": 1e30})
    saved = tmp_path / "saved"
    recipe["export"] = {"base_dir": os.fspath(saved), "verify": False,
                        "golden_examples": 1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ExportError) as info:
            train(recipe, runs_dir=tmp_path / "runs", verbose=0)
    message = str(info.value)
    assert message.startswith("boom: the model looks untrained: ")
    assert "export.allow_untrained: true" in message
    assert any("looks untrained" in str(w.message) for w in caught)
    assert not saved.exists() or not os.listdir(saved)
    result = info.value.result
    assert result.untrained and result.export_path is None
    assert os.path.exists(os.path.join(result.run_dir, "metrics.json"))

    assert "run the same command again" in message
    # The backup is kept: asked for, the same command exports the trained
    # model (with the warning) without training again.
    assert os.path.isdir(os.path.join(result.run_dir, "backup"))
    with pytest.warns(RuntimeWarning, match="looks untrained"):
        again = train(recipe, runs_dir=tmp_path / "runs", verbose=0,
                      overrides=["export.allow_untrained=true"])
    assert again.untrained and again.resumed_from_epoch == 1
    assert os.path.exists(os.path.join(again.export_path, "saved_model.pb"))
    assert not os.path.isdir(os.path.join(result.run_dir, "backup"))


def test_label_baseline_is_the_best_constant_prediction():
    from keras_mm.training.run_artifacts import label_baseline

    rng = np.random.default_rng(0)
    y = rng.normal(3.0, 2.0, size=(50, 2))
    # Predicting the split's mean scores exactly the baseline...
    stats = label_baseline("regression", y, np.broadcast_to(y.mean(0),
                                                            y.shape))
    assert stats["mse"] == pytest.approx(stats["baseline_mse"], rel=1e-12)
    assert stats["baseline_mse"] == pytest.approx(y.var(0).mean())
    assert stats["num_examples"] == 50
    # ... and any other constant does worse.
    other = label_baseline("regression", y, np.full_like(y, 2.5))
    assert other["mse"] > other["baseline_mse"]

    tags = (rng.random((40, 3)) < [0.2, 0.5, 0.9]).astype(float)
    freq = tags.mean(0)
    stats = label_baseline("multilabel", tags,
                           np.broadcast_to(freq, tags.shape))
    assert stats["bce"] == pytest.approx(stats["prior_bce"], rel=1e-9)
    entropy = -(freq * np.log(freq) + (1 - freq) * np.log(1 - freq))
    assert stats["prior_bce"] == pytest.approx(entropy.mean())
    assert stats["majority_accuracy"] == pytest.approx(
        np.maximum(freq, 1 - freq).mean())
    perfect = label_baseline("multilabel", tags, tags * 0.98 + 0.01)
    assert perfect["accuracy"] == 1.0 and perfect["bce"] < stats["prior_bce"]


def test_untrained_reason_regression_and_multilabel_heads():
    from keras_mm.training.baseline_check import untrained_reason

    spec = {"heads": {"level": {"type": "regression"},
                      "tags": {"type": "multilabel"}}}

    def metrics(mse, bce, accuracy):
        return {"test": {"loss": 1.0, "heads": {
            "level": {"loss": mse, "baseline": {
                "mse": mse, "baseline_mse": 2.0, "num_examples": 10}},
            "tags": {"loss": bce, "baseline": {
                "bce": bce, "prior_bce": 0.5, "accuracy": accuracy,
                "majority_accuracy": 0.8, "num_examples": 10}}}}}

    history = {"loss": [1.0, 0.9]}
    assert untrained_reason(history, metrics(1.0, 0.3, 0.9), spec) is None
    reason = untrained_reason(history, metrics(2.5, 0.3, 0.9), spec)
    assert reason == ("head 'level' never beats the trivial baseline (test: "
                      "mean squared error 2.5 vs 2 for predicting the mean)")
    reason = untrained_reason(history, metrics(1.0, 0.7, 0.8), spec)
    assert reason.startswith("head 'tags' never beats the trivial baseline "
                             "(test: per-label accuracy 0.800 vs 0.800")
    # Better accuracy alone, or a lower cross-entropy alone, is learning.
    assert untrained_reason(history, metrics(1.0, 0.7, 0.9), spec) is None
    assert untrained_reason(history, metrics(1.0, 0.4, 0.8), spec) is None
    # Constant labels leave nothing to beat (and no claim either way).
    flat = metrics(2.5, 0.7, 0.8)
    flat["test"]["heads"]["level"]["baseline"]["baseline_mse"] = 0.0
    flat["test"]["heads"]["tags"]["baseline"]["prior_bce"] = 0.0
    assert untrained_reason(history, flat, spec) is None


def test_untrained_regression_run_and_its_export_are_refused(tmp_path):
    from keras_mm.training import export_run, train

    recipe = tiny_recipe(tmp_path / "demo", name="flat", epochs=1,
                         sizes=(16, 8, 8), regression=True,
                         optimizer={"type": "sgd", "learning_rate": 1e-12})
    del recipe["heads"]["label"]                    # regression only
    saved = tmp_path / "saved"
    recipe["export"] = {"base_dir": os.fspath(saved), "verify": False,
                        "golden_examples": 1, "allow_untrained": True}
    with pytest.warns(RuntimeWarning, match="looks untrained"):
        result = train(recipe, runs_dir=tmp_path / "runs", verbose=0)
    assert "head 'level' never beats the trivial baseline" in \
        result.untrained
    with open(os.path.join(result.run_dir, "metrics.json")) as f:
        stats = json.load(f)["test"]["heads"]["level"]["baseline"]
    assert stats["num_examples"] == 8 and stats["mse"] > \
        stats["baseline_mse"] > 0

    # `keras-mm export` of the finished run checks it too, whatever the
    # recipe said at training time, unless told.
    with pytest.raises(ExportError) as info:
        export_run(result.run_dir, base_dir=saved, allow_untrained=False)
    message = str(info.value)
    assert "the model looks untrained: head 'level' never beats" in message
    assert "--allow-untrained" in message
    versions = sorted(v for v in os.listdir(saved / "flat") if v.isdigit())
    assert versions == ["1"]                         # nothing new published
    with pytest.warns(RuntimeWarning, match="looks untrained"):
        path = export_run(result.run_dir, base_dir=saved, verify=False)
    assert os.path.basename(path) == "2"
