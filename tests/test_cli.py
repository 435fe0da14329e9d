"""The `keras-mm` command line, invoked for real (in-process and as the
installed console script)."""

import json
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
    exe = shutil.which("keras-mm")
    command = [exe] if exe else [sys.executable, "-m", "keras_mm.cli.main"]
    proc = subprocess.run(command + ["--version"], capture_output=True,
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

