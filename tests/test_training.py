"""One-device training: `keras_mm.training.train` end to end, the run
folder, early stopping, checkpoints, schedules, evaluate / export_run.

Real training on a tiny demo set (text + sensor towers, concat fusion, a
classification and a regression head). `tiny_recipe` is also used by
test_distributed.py and test_fault_tolerance.py.
"""

import csv
import json
import os

import numpy as np
import pytest
import yaml

CLASS_NAMES = ["warm_low", "warm_high", "cool_low", "cool_high"]


def tiny_recipe(data_dir, *, name="tiny", epochs=3, batch_size=8,
                regression=False, generate=True, sizes=(32, 16, 16),
                **training):
    """A small recipe on the demo set in `data_dir` (built when absent).

    Text (bag of words) + sensor (GRU) towers, concat fusion with a
    presence mask; no BatchNormalization (its per-replica statistics would
    make multi-replica runs differ from one device).
    """
    data_dir = os.fspath(data_dir)
    recipe = {
        "name": name,
        "data": {
            "splits": {s: os.path.join(data_dir, f"{s}.csv")
                       for s in ("train", "val", "test")},
        },
        "inputs": {
            "text": {"modality": "text",
                     "preprocess": {"max_len": 8, "max_vocab_size": 60},
                     "tower": {"encoder": "bag", "dim": 8,
                               "embedding_dim": 8}},
            "sensor": {"modality": "sensor",
                       "preprocess": {"channels": 3, "length": 40,
                                      "source": "csv"},
                       "tower": {"encoder": "gru", "dim": 8}},
        },
        "fusion": {"type": "concat", "presence_mask": True},
        "heads": {"label": {"type": "classification", "num_classes": 4,
                            "class_names": CLASS_NAMES, "source": "label"}},
        "training": {"epochs": epochs, "batch_size": batch_size,
                     "jit_compile": False, "tensorboard": False,
                     "optimizer": {"type": "adam", "learning_rate": 0.01},
                     **training},
        "evaluation": {"splits": ["val", "test"]},
    }
    if regression:
        recipe["heads"]["level"] = {"type": "regression",
                                    "source": "label_id"}
    if generate:
        recipe["data"]["generate"] = {
            "type": "demo", "out_dir": data_dir, "num_train": sizes[0],
            "num_val": sizes[1], "num_test": sizes[2]}
    return recipe


def write_recipe(path, recipe):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(recipe, f, sort_keys=False)
    return os.fspath(path)


def assert_loss_went_down(history, what="the run", by=0.01):
    """`history["loss"]` (history.csv / `TrainResult.history`) is at least
    `by` (relative) lower at the last epoch than at the first: the model
    did learn (a frozen model's epoch means differ only by rounding)."""
    loss = history["loss"]
    assert len(loss) >= 2, f"{what}: too few epochs to compare: {loss}"
    assert loss[-1] < (1 - by) * loss[0], \
        f"{what}: the loss did not go down by {by:.0%}: {loss}"


def read_history(run_dir):
    """`history.csv` of a run folder as `{column: [values]}`."""
    from keras_mm.training.run_artifacts import read_history_csv

    return read_history_csv(os.path.join(run_dir, "history.csv"))


def assert_png(path):
    from PIL import Image

    assert os.path.getsize(path) > 0, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()


# -- end to end ------------------------------------------------------------------


def test_train_end_to_end_writes_the_run_folder(tmp_path, capsys):
    import keras

    from keras_mm.recipes import load_recipe
    from keras_mm.training import evaluate, export_run, load_run, train

    recipe = tiny_recipe(
        tmp_path / "demo", name="e2e", epochs=4, regression=True,
        tensorboard=True,
        # min_delta larger than any change: epoch 2 is no improvement and
        # patience 1 stops the run there.
        early_stopping={"patience": 1, "min_delta": 10.0,
                        "restore_best_weights": True},
        schedule={"type": "cosine", "warmup_steps": 2})
    recipe["evaluation"]["compare_unimodal"] = True
    recipe["export"] = {"base_dir": os.fspath(tmp_path / "saved"),
                        "golden_examples": 2}
    recipe["training"]["runs_dir"] = os.fspath(tmp_path / "runs")
    path = write_recipe(tmp_path / "e2e.yaml", recipe)

    result = train(path, overrides=["training.batch_size=8"],
                   runs_dir=tmp_path / "runs", verbose=2)
    out = capsys.readouterr().out
    run_dir = result.run_dir
    assert run_dir == os.fspath(tmp_path / "runs" / "e2e")
    assert os.path.exists(tmp_path / "demo" / "train.csv")  # generated

    # Early stopping stopped after 2 of 4 epochs; the history has 2 rows.
    assert result.epochs_run == 2
    with open(os.path.join(run_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for key in ("loss", "val_loss", "label_accuracy", "val_label_accuracy",
                "level_loss"):
        assert key in rows[0], rows[0].keys()
    assert result.history["loss"] == [float(r["loss"]) for r in rows]
    assert_loss_went_down(result.history, "the fused run")
    run_info = json.load(open(os.path.join(run_dir, "run.json")))
    assert run_info["epochs_run"] == 2 and run_info["strategy"] == "default"
    assert run_info["resumed_from_epoch"] == 0
    assert not os.path.exists(os.path.join(run_dir, "backup"))
    # The whole command's phases (seconds) and the finished mark.
    assert run_info["finished"] is True
    assert run_info["export_path"] == result.export_path
    phases = run_info["phases"]
    for phase in ("validate", "adapt", "build", "tracing", "fit",
                  "evaluate", "scoreboard", "export", "verify"):
        assert phases[phase] > 0, phases
    assert phases["tracing"] < phases["fit"]
    assert phases["scoreboard"] + phases["fit"] + phases["export"] + \
        phases["verify"] < phases["total"]
    unimodal_info = json.load(open(os.path.join(run_dir, "unimodal", "text",
                                                "run.json")))
    assert unimodal_info["phases"]["fit"] > 0

    # metrics.json: per split, per head.
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert metrics == json.loads(json.dumps(result.metrics))
    assert sorted(metrics) == ["test", "val"]
    for split in ("val", "test"):
        entry = metrics[split]
        assert entry["num_examples"] == 16
        assert sorted(entry["heads"]) == ["label", "level"]
        label = entry["heads"]["label"]
        assert 0.0 <= label["accuracy"] <= 1.0
        matrix = np.array(label["confusion_matrix"])
        assert matrix.shape == (4, 4) and matrix.sum() == 16
        assert label["accuracy"] == pytest.approx(
            np.trace(matrix) / 16, abs=1e-6)
        assert "mae" in entry["heads"]["level"]
        assert entry["loss"] == pytest.approx(
            label["loss"] + entry["heads"]["level"]["loss"], rel=1e-4)

    # Plots, TensorBoard logs, recipe, preprocessors.
    assert_png(os.path.join(run_dir, "learning_curves.png"))
    for split in ("val", "test"):
        assert_png(os.path.join(run_dir, f"confusion_label_{split}.png"))
    assert not os.path.exists(os.path.join(run_dir,
                                           "confusion_level_test.png"))
    events = [f for _, _, files in os.walk(os.path.join(run_dir,
                                                        "tensorboard"))
              for f in files if f.startswith("events.out.tfevents")]
    assert events, ("no TensorBoard events: is the tensorboard package "
                    "installed (setup.cfg install_requires)?")
    saved = load_recipe(os.path.join(run_dir, "recipe.yaml"))
    assert saved["training"]["batch_size"] == 8
    assert saved["inputs"].keys() == recipe["inputs"].keys()
    assert saved["data"]["splits"]["train"] == recipe["data"]["splits"][
        "train"]
    pre = json.load(open(os.path.join(run_dir, "preprocessors.json")))
    assert [pre[n]["modality"] for n in pre] == ["text", "sensor"]

    # The best checkpoint reloads and is what was evaluated.
    assert result.best_checkpoint == os.path.join(run_dir, "best.keras")
    model = keras.saving.load_model(result.best_checkpoint)
    assert sorted(model.output_names) == ["label", "level"]
    again = evaluate(run_dir, splits=("test",))
    assert again["test"]["loss"] == pytest.approx(metrics["test"]["loss"],
                                                  abs=1e-6)
    assert again["test"]["heads"]["label"]["confusion_matrix"] == \
        metrics["test"]["heads"]["label"]["confusion_matrix"]
    by_recipe = evaluate(path, splits=["val"],
                         checkpoint=result.best_checkpoint)
    assert by_recipe["val"]["loss"] == pytest.approx(metrics["val"]["loss"],
                                                     abs=1e-6)
    _, loaded, preprocessors = load_run(run_dir)
    assert list(preprocessors) == ["text", "sensor"]
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)

    # Scoreboard: fused and each single modality, per split; printed.
    models = [(r["model"], r["split"]) for r in result.scoreboard]
    assert models == [("fused", "val"), ("fused", "test"),
                      ("text only", "val"), ("text only", "test"),
                      ("sensor only", "val"), ("sensor only", "test")]
    assert sorted(result.unimodal) == ["sensor", "text"]
    for name in ("text", "sensor"):
        unimodal_dir = os.path.join(run_dir, "unimodal", name)
        assert os.path.exists(os.path.join(unimodal_dir, "metrics.json"))
        assert_loss_went_down(read_history(unimodal_dir), f"{name} only")
    assert "label_accuracy" in out and "sensor only" in out
    assert "Epoch 2: early stopping" in out
    # Each message once: the scoreboard table, each single-modality run,
    # the export.
    assert [line.split()[:3] for line in out.splitlines()].count(
        ["model", "split", "loss"]) == 1, out
    for name in ("text", "sensor"):
        assert out.count(f"training the {name}-only model of the "
                         "scoreboard") == 1, out
    assert out.count(f"exported to {result.export_path}") == 1, out

    # Export + verification; export_run publishes the next version.
    assert result.export_path == os.fspath(tmp_path / "saved" / "e2e" / "1")
    assert os.path.exists(os.path.join(result.export_path, "saved_model.pb"))
    assert result.verify_report["ok"] is True
    second = export_run(run_dir, verify=False)
    assert second == os.fspath(tmp_path / "saved" / "e2e" / "2")


def test_checkpoint_off_saves_final_model_and_no_val_split(tmp_path):
    from keras_mm.training import evaluate, train

    recipe = tiny_recipe(tmp_path / "demo", name="plain", epochs=2,
                         checkpoint=False, backup=False,
                         early_stopping={"monitor": "val_loss",
                                         "patience": 3})
    del recipe["data"]["splits"]["val"]
    recipe["evaluation"]["splits"] = ["test"]
    result = train(recipe, runs_dir=tmp_path / "runs", export=False,
                   verbose=0)
    assert result.best_checkpoint.endswith("final.keras")
    assert list(result.metrics) == ["test"]
    assert "val_loss" not in result.history
    assert len(result.history["loss"]) == 2
    assert_loss_went_down(result.history)
    metrics = evaluate(result.run_dir, splits="test")
    assert metrics["test"]["loss"] == pytest.approx(
        result.metrics["test"]["loss"], abs=1e-6)


# -- pieces ----------------------------------------------------------------------


def test_epoch_order_depends_only_on_seed_and_epoch(tmp_path):
    from keras_mm.datasets import make_demo_dataset
    from keras_mm.training import run_data, run_preprocessors
    from keras_mm.training.run_folder import load_recipe
    from keras_mm.builder.spec import complete_spec
    from keras_mm.recipes import recipe_model_spec

    make_demo_dataset(tmp_path / "demo", num_train=24, num_val=4, num_test=4)
    recipe = load_recipe(tiny_recipe(tmp_path / "demo", generate=False), ())
    pre = run_preprocessors.adapt_preprocessors(
        run_preprocessors.make_preprocessors(recipe), recipe)
    spec = complete_spec(recipe_model_spec(recipe), pre)
    pipe = run_data.make_pipeline(recipe, "train", pre, spec)

    def labels(initial_epoch, seed=0):
        ds, steps = run_data.epoch_dataset(pipe, 8, seed=seed, epochs=3,
                                           initial_epoch=initial_epoch)
        batches = [b[1]["label"].numpy().tolist() for b in ds]
        return [sum(batches[i:i + steps], [])
                for i in range(0, len(batches), steps)]

    full = labels(0)
    assert len(full) == 3 and all(len(e) == 24 for e in full)
    assert full[0] != full[1] and sorted(full[0]) == sorted(full[1])
    assert labels(1) == full[1:]          # resumed at epoch 1: same batches
    assert labels(2) == full[2:]
    assert labels(0, seed=1) != full


def test_schedules_start_from_the_learning_rate():
    from keras_mm.errors import ConfigError
    from keras_mm.training.optimizers import build_optimizer, build_schedule

    cosine = build_schedule({"type": "cosine", "warmup_steps": 10}, 0.1, 110)
    assert float(cosine(0)) == pytest.approx(0.0)
    assert float(cosine(10)) == pytest.approx(0.1)
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-7)
    plain = build_schedule({"type": "cosine"}, 0.1, 100)
    assert float(plain(50)) == pytest.approx(0.05, rel=1e-5)
    assert build_schedule(None, 0.1, 100) == 0.1
    with pytest.raises(ConfigError, match="training.schedule.decay_rate"):
        build_schedule({"type": "exponential"}, 0.1, 100)
    optimizer = build_optimizer(
        {"epochs": 2, "optimizer": {"type": "sgd", "learning_rate": 0.5,
                                    "momentum": 0.9},
         "schedule": {"type": "polynomial", "end_learning_rate": 0.0}}, 5)
    assert float(optimizer.learning_rate) == pytest.approx(0.5)
    assert optimizer.momentum == 0.9
    assert float(optimizer._learning_rate(10)) == pytest.approx(0.0)


def test_early_stopping_replays_history():
    from keras_mm.training import ResumableEarlyStopping
    from keras_mm.training.resumable_early_stopping import (replay_best,
                                                            resolve_mode)

    rows = [(0, {"val_loss": 1.0}), (1, {"val_loss": 0.8}),
            (2, {"val_loss": 0.9}), (3, {"val_loss": 0.85})]
    stop = ResumableEarlyStopping(monitor="val_loss", patience=2,
                                  history=rows[:3]).replay()
    assert (stop.best, stop.best_epoch, stop.wait) == (0.8, 1, 1)
    assert not stop.stopped
    stop = ResumableEarlyStopping(monitor="val_loss", patience=2,
                                  history=rows).replay()
    assert stop.stopped and stop.stopped_epoch == 3
    assert replay_best(rows, "val_loss", "min") == 0.8
    assert resolve_mode("val_label_accuracy") == "max"
    assert resolve_mode("val_level_mae") == "min"
    assert resolve_mode("val_thing") is None


def test_resume_with_another_recipe_is_refused(tmp_path):
    from keras_mm.errors import ConfigError
    from keras_mm.recipes import save_recipe
    from keras_mm.training import train
    from keras_mm.training.run_folder import load_recipe

    recipe = tiny_recipe(tmp_path / "demo", name="changed", generate=False)
    run_dir = tmp_path / "runs" / "changed"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "training_metadata.json").write_text(
        json.dumps({"epoch": 1, "batch": 0}))
    save_recipe(load_recipe(recipe, ()), run_dir / "recipe.yaml")
    with pytest.raises(ConfigError, match=r"training\.batch_size.*delete"):
        train(recipe, ["training.batch_size=4"], runs_dir=tmp_path / "runs",
              export=False, verbose=0)


def test_missing_data_without_generate_names_the_file(tmp_path):
    from keras_mm.errors import DataError
    from keras_mm.training import train

    recipe = tiny_recipe(tmp_path / "nowhere", generate=False)
    with pytest.raises(DataError, match=r"nowhere.train\.csv.*generate"):
        train(recipe, runs_dir=tmp_path / "runs", export=False, verbose=0)


def test_scoreboard_table():
    from keras_mm.training import format_scoreboard, scoreboard_rows

    rows = scoreboard_rows({"test": {"loss": 0.5, "num_examples": 4,
                                     "heads": {"label": {
                                         "accuracy": 0.75, "loss": 0.5,
                                         "confusion_matrix": [[1]]}}}})
    rows += scoreboard_rows({"test": {"loss": 0.9, "heads": {
        "label": {"accuracy": 0.5}}}}, "image only")
    text = format_scoreboard(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["model", "split", "loss", "label_accuracy"]
    assert lines[2].split() == ["fused", "test", "0.5000", "0.7500"]
    assert lines[3].split() == ["image", "only", "test", "0.9000", "0.5000"]


def test_rerun_after_a_failure_past_training_does_not_retrain(tmp_path):
    """Backups live until the whole command is done: when a later step
    fails (here the export), the same command restores the trained model
    instead of training again."""
    from keras_mm.errors import ExportError
    from keras_mm.training import train

    recipe = tiny_recipe(tmp_path / "demo", name="late", epochs=2,
                         deterministic=True)
    # Version 1 is taken (versions are immutable): the export fails at
    # once, after training and evaluation.
    (tmp_path / "saved" / "late" / "1").mkdir(parents=True)
    recipe["export"] = {"base_dir": os.fspath(tmp_path / "saved"),
                        "version": 1}
    with pytest.raises(ExportError, match=r"late.1 already exists"):
        train(recipe, runs_dir=tmp_path / "runs", verbose=0)
    run_dir = tmp_path / "runs" / "late"
    assert (run_dir / "backup" / "training_metadata.json").exists()
    first = json.load(open(run_dir / "metrics.json"))

    result = train(recipe, runs_dir=tmp_path / "runs", export=False,
                   verbose=2)
    assert result.resumed_from_epoch == 2 and result.epochs_run == 2
    assert len(result.history["loss"]) == 2
    assert_loss_went_down(result.history)
    assert result.metrics == first
    assert not (run_dir / "backup").exists()


def test_train_from_tfrecords(tmp_path):
    """TFRecord splits: adapting on raw records, batch counts from the
    shards' features.json, golden export requests read from the records."""
    from keras_mm.data import convert_manifest_to_tfrecords
    from keras_mm.datasets import make_demo_dataset
    from keras_mm.training import train

    make_demo_dataset(tmp_path / "demo", num_train=20, num_val=8,
                      num_test=8)
    recipe = tiny_recipe(tmp_path / "demo", name="records", epochs=2,
                         generate=False)
    for split in ("train", "val", "test"):
        convert_manifest_to_tfrecords(
            os.fspath(tmp_path / "demo" / f"{split}.csv"),
            os.fspath(tmp_path / "records" / split), num_shards=2,
            columns=["text", "sensor", "label"], file_columns=["sensor"],
            progress=False)
        recipe["data"]["splits"][split] = os.fspath(
            tmp_path / "records" / split)
    recipe["data"]["format"] = "tfrecord"
    # 20 examples, 2 epochs: the run need not beat the majority class (the
    # untrained-model guard has its own tests); this test is about the
    # TFRecord path through training and export.
    recipe["export"] = {"base_dir": os.fspath(tmp_path / "saved"),
                        "golden_examples": 3, "verify": False,
                        "allow_untrained": True}
    result = train(recipe, runs_dir=tmp_path / "runs", verbose=0)
    info = json.load(open(os.path.join(result.run_dir, "run.json")))
    assert info["steps_per_epoch"] == 3                      # ceil(20 / 8)
    assert_loss_went_down(result.history)
    assert result.metrics["test"]["num_examples"] == 8
    vocab = json.load(open(os.path.join(result.run_dir,
                                        "preprocessors.json")))
    assert len(vocab["text"]["config"]["vocab"]) > 10      # adapted
    meta = json.load(open(os.path.join(result.export_path, "assets.extra",
                                       "keras_mm.json")))
    assert meta["golden"]["num_examples"] == 3
