"""The `keras-mm` command line, invoked for real (in-process and as the
installed console script)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from keras_mm.cli.main import main
from keras_mm.errors import ConfigError


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "export", "verify", "predict",
                    "data"):
        assert command in out


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "verify",
                                     "predict", "data"])
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: keras-mm" in capsys.readouterr().out


def test_bad_recipe_is_one_clear_line(tmp_path, capsys):
    recipe = tmp_path / "x.yaml"
    recipe.write_text(
        "data: {splits: {train: t.csv}}\n"
        "inputs: {image: {modality: image, shape: [8, 8, 1]}}\n"
        "fusion: {type: concatt}\n"
        "heads: {label: {type: classification, num_classes: 2}}\n")
    assert main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "x.yaml" in err[0] and "fusion.type" in err[0]
    assert "concatt" in err[0] and "concat" in err[0]
    # --debug lets the same error out with its traceback.
    with pytest.raises(ConfigError, match="fusion.type"):
        main(["--debug", "train", str(recipe)])


def test_verify_of_a_folder_without_model_fails(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "saved_model.pb" in report["error"]


def test_predict_needs_an_input(tmp_path, capsys):
    assert main(["predict", str(tmp_path)]) == 1
    assert "give at least one input" in capsys.readouterr().err


def test_data_demo_then_inspect(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["data", "demo", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(out / "train.csv"), "--rows",
                 "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "manifest" and summary["rows"] == 600
    assert {"image", "audio", "text", "sensor", "label"} <= set(
        summary["columns"])
    assert len(summary["examples"]) == 2


def test_data_convert_then_inspect_tfrecords(tmp_path, capsys):
    from keras_mm.datasets import make_demo_dataset

    make_demo_dataset(tmp_path / "demo", num_train=8, num_val=0, num_test=0)
    shards = tmp_path / "shards"
    assert main(["data", "convert", str(tmp_path / "demo" / "train.csv"),
                 str(shards), "--shards", "2", "--file-column", "image"]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(shards)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "tfrecord" and summary["records"] == 8
    assert len(summary["files"]) == 2


def test_console_script_runs():
    proc = subprocess.run(_keras_mm_command() + ["--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert "keras-mm" in proc.stdout


def test_trainer_lines_are_printed_once_under_the_cli_logging():
    """`keras-mm` shows keras_mm's INFO log records on stderr; a trainer line
    (printed to stdout) must not come back there as a log record."""
    code = ("import logging, sys; "
            "from keras_mm.cli.main import configure_logging; "
            "configure_logging(debug=False); "
            "from keras_mm.training import trainer; "
            "trainer._say(1, 'exported to saved_models/x/1')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    both = proc.stdout + proc.stderr
    assert both.count("exported to saved_models/x/1") == 1, both[-2000:]



def _keras_mm_command():
    exe = shutil.which("keras-mm")
    return [exe] if exe else [sys.executable, "-m", "keras_mm.cli.main"]


def test_tensorflow_start_up_noise_is_not_shown(tmp_path):
    """TensorFlow's C++ start-up lines (absl pre-init notice, oneDNN,
    "Could not find cuda drivers", cuInit) are printed before
    TF_CPP_MIN_LOG_LEVEL applies; the CLI keeps them off stderr unless
    --debug. `data inspect` runs TensorFlow ops (the manifest check)."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = tmp_path / "d"
    proc = subprocess.run(_keras_mm_command() + ["data", "demo", "--out",
                                                 str(out)],
                          capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        f"demo set written to {out} (600 train, 150 val, 150 test)"]
    proc = subprocess.run(_keras_mm_command() + [
        "data", "inspect", str(out / "train.csv")], capture_output=True,
        text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "import tensorflow" not in proc.stderr
    assert proc.stderr == "", proc.stderr[-2000:]
    json.loads(proc.stdout)


def test_start_up_noise_filter_keeps_other_lines():
    from keras_mm.cli.main import _STARTUP_NOISE

    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called "
        "are written to STDERR",
        "I0000 00:00:1796174910.580150   23655 port.cc:153] oneDNN custom "
        "operations are on.",
        "E0000 00:00:1796175841.416882    5221 cuda_platform.cc:52] failed "
        "call to cuInit: INTERNAL: CUDA error",
        "To enable the following instructions: AVX2 FMA, in other "
        "operations, rebuild TensorFlow with the appropriate compiler flags."]
    kept = ["E0000 00:00:1.0 1 op_kernel.cc:1] a real kernel error",
            "Traceback (most recent call last):", "UserWarning: something"]
    assert all(_STARTUP_NOISE.match(line) for line in noise)
    assert not any(_STARTUP_NOISE.match(line) for line in kept)


@pytest.mark.slow
def test_train_demo_prints_each_line_once(tmp_path):
    """`keras-mm train recipes/demo.yaml` (generating its data, with the
    four single-modality runs of its scoreboard): no line of stdout and
    stderr together comes out twice, TensorFlow's start-up noise is not
    shown, and the run is exported. Keras' own lines ("Epoch 1/2",
    "19/19 - 3s - loss: ...", EarlyStopping's "Restoring model weights
    ...") repeat legitimately, once per model."""
    import collections
    import re

    recipe = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "recipes", "demo.yaml")
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run(
        _keras_mm_command() + ["train", recipe, "--runs-dir", "runs",
                               "--set", "training.epochs=2",
                               "--set", "export.base_dir=saved_models"],
        cwd=tmp_path, capture_output=True, text=True, timeout=3000, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    # A record of a logger with its own handler comes out as
    # "INFO:tensorflow:<message>": the same message as "<message>".
    lines = [re.sub(r"^(DEBUG|INFO|WARNING|ERROR):[\w.]+:", "", line.rstrip())
             for line in (proc.stdout + "\n" + proc.stderr).splitlines()
             if line.strip()]
    keras_epoch = re.compile(r"^(Epoch \d+/\d+|\d+/\d+ - .*|Restoring model "
                             r"weights from the end of the best epoch.*)$")
    counts = collections.Counter(line for line in lines
                                 if not keras_epoch.match(line))
    twice = {line: n for line, n in counts.items() if n > 1}
    assert twice == {}, twice
    noise = [line for line in lines
             if "oneDNN" in line or "absl::InitializeLog" in line
             or re.match(r"^[IWE]\d{4} ", line)]
    assert noise == [], noise
    assert any(line.startswith("exported to ") for line in lines), lines[-20:]
    assert any("only" in line for line in lines)        # the scoreboard
