"""Hostile manifests (issue 13, items 3 and 6): an undecodable sensor file
among good ones under every bad-input policy (adapt sees only checked rows),
a header-only manifest, and file paths that resolve outside the manifest's
folder (`allow_paths_outside`, convert and training)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_mm.data import Pipeline
from keras_mm.data import SensorPreprocessor
from keras_mm.data.manifest import Manifest
from keras_mm.data.tfrecords import convert_manifest_to_tfrecords
from keras_mm.errors import DataError

CHANNELS, LENGTH = 3, 6
CLASSES = ["a", "b"]


def _write_series(path, rng, scale):
    x = rng.normal(scale, 1.0 + scale, size=(LENGTH, CHANNELS))
    np.savetxt(path, x, fmt="%.5f", delimiter=",")


def _manifest(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("sensor,label\n")
        for sensor, label in rows:
            f.write(f"{sensor},{label}\n")
    return str(path)


def _sensor_set(folder, bad_row=None, n=6):
    """`n` good sensor CSVs (3 channels); with `bad_row` (1-based) one
    undecodable file (2 columns) is inserted at that row. Returns the
    manifest rows."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"s{i}.csv"
        _write_series(os.path.join(folder, name), rng, scale=float(i))
        rows.append((name, CLASSES[i % 2]))
    if bad_row is not None:
        with open(os.path.join(folder, "bad.csv"), "w") as f:
            f.write("1.0,2.0\n3.0,4.0\n")       # 2 columns, 3 expected
        rows.insert(bad_row - 1, ("bad.csv", "a"))
    return rows


def _recipe(train, policy, **data):
    from keras_mm.training.run_folder import load_recipe

    return load_recipe({
        "name": "hostile",
        "data": {"splits": {"train": train}, "bad_records": policy, **data},
        "inputs": {"sensor": {
            "modality": "sensor",
            "preprocess": {"channels": CHANNELS, "length": LENGTH,
                           "source": "csv"},
            "tower": {"encoder": "gru", "dim": 4}}},
        "fusion": {"type": "concat"},
        "heads": {"label": {"type": "classification", "num_classes": 2,
                            "class_names": CLASSES}},
        "training": {"epochs": 1, "batch_size": 4, "tensorboard": False},
    }, ())


def _adapted(recipe):
    from keras_mm.training import run_preprocessors

    return run_preprocessors.adapt_preprocessors(
        run_preprocessors.make_preprocessors(recipe), recipe)


def _examples(pipe):
    """All examples of one pass: `{key: array}` concatenated over batches."""
    out = {}
    for features, labels in pipe.dataset(batch_size=4):
        for key, value in {**features, **labels}.items():
            out.setdefault(key, []).append(value.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


# -- item 3: adapt on validated rows ----------------------------------------


def test_bad_sensor_file_under_error_policy_is_a_data_error(tmp_path):
    folder = tmp_path / "d"
    rows = _sensor_set(folder, bad_row=4)
    train = _manifest(folder / "train.csv", rows)
    # Before the fix: a raw InvalidArgumentError from inside adapt.
    with pytest.raises(DataError, match=r"train\.csv, row 4, column "
                       r"'sensor': decode_error") as info:
        _adapted(_recipe(train, "error"))
    assert info.value.row == 4 and info.value.reason == "decode_error"


@pytest.mark.parametrize("policy", ["skip", "missing"])
def test_adapt_sees_only_checked_rows(tmp_path, policy):
    """Adapt with one bad sensor file == adapt on the manifest without that
    row; the training pipeline then applies the same policy."""
    from keras_mm.training import run_data

    folder = tmp_path / "d"
    rows = _sensor_set(folder, bad_row=3)
    train = _manifest(folder / "train.csv", rows)
    clean = _manifest(folder / "clean.csv", [r for r in rows
                                            if r[0] != "bad.csv"])
    recipe = _recipe(train, policy)
    pre = _adapted(recipe)["sensor"]
    reference = _adapted(_recipe(clean, policy))["sensor"]
    assert pre.mean == reference.mean and pre.std == reference.std
    assert not np.allclose(pre.mean, 0.0)

    pipe = run_data.make_pipeline(recipe, "train", {"sensor": pre}, {})
    got = _examples(pipe)
    report = pipe.report
    assert report.count("sensor", "decode_error") == 1
    assert report.rows[0]["row"] == 3
    good = _examples(run_data.make_pipeline(
        _recipe(clean, policy), "train", {"sensor": pre}, {}))
    if policy == "skip":
        assert report.skipped == 1
        np.testing.assert_array_equal(got["sensor"], good["sensor"])
    else:
        assert report.marked_missing == 1 and report.skipped == 0
        keep = [i for i in range(len(rows)) if i != 2]
        np.testing.assert_array_equal(got["sensor"][keep], good["sensor"])
        assert not got["sensor_mask"][2].any()     # row 3: all steps masked
        assert got["label"].tolist() == [CLASSES.index(r[1]) for r in rows]


def test_check_before_adapt_is_not_run_twice(tmp_path):
    """Every input took part in the check before adapt: the train split's
    pipeline reuses that result (the data is decoded once)."""
    from keras_mm.data import validation
    from keras_mm.training import run_data

    folder = tmp_path / "d"
    train = _manifest(folder / "train.csv", _sensor_set(folder, bad_row=2))
    recipe = _recipe(train, "skip")
    pre = _adapted(recipe)
    pipe = run_data.make_pipeline(recipe, "train", pre, {})
    assert validation.fingerprint(pipe) in validation._VALIDATION_CACHE
    assert pipe.validate().skipped == 1


# -- item 3: header-only manifests -------------------------------------------


def test_header_only_manifest_names_its_columns_and_says_no_rows(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("sensor,label\n")
    manifest = Manifest.read(path)
    assert manifest.columns == ["sensor", "label"] and len(manifest) == 0
    with pytest.raises(DataError, match=r"no column 'text'; the manifest has "
                       r"columns sensor, label$"):
        manifest.column("text")
    with pytest.raises(DataError, match=r"m\.csv: the manifest has no rows "
                       r"\(only a header, with columns sensor, label\)"):
        Pipeline(str(path), {"sensor": SensorPreprocessor(
            "sensor", channels=CHANNELS, source="csv")})
    empty = tmp_path / "m.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"no column 'sensor': the manifest "
                       r"has no rows"):
        Pipeline(str(empty), {"sensor": SensorPreprocessor(
            "sensor", channels=CHANNELS, source="csv")})


# -- item 6: paths outside the manifest's folder ----------------------------


def _outside_set(tmp_path):
    """data/ with good files, a file outside it, a symlink inside data/
    pointing outside, and a symlink pointing inside."""
    folder = tmp_path / "data"
    rows = _sensor_set(folder, n=4)
    rng = np.random.default_rng(1)
    _write_series(tmp_path / "secret.csv", rng, 0.0)
    os.symlink(tmp_path / "secret.csv", folder / "link_out.csv")
    os.symlink(folder / "s0.csv", folder / "link_in.csv")
    return folder, rows


def test_convert_refuses_paths_outside_by_default(tmp_path):
    folder, rows = _outside_set(tmp_path)
    for bad in ("../secret.csv", str(tmp_path / "secret.csv"),
                "link_out.csv", "sub/../../secret.csv"):
        path = _manifest(folder / "m.csv", rows[:2] + [(bad, "a")])
        out = tmp_path / "shards"
        with pytest.raises(DataError, match=r"m\.csv, row 3, column 'sensor'"
                           r": the path resolves to .*secret\.csv, outside "
                           r"the manifest's folder .*allow-paths-outside"):
            convert_manifest_to_tfrecords(path, out, 1, file_columns=[
                "sensor"], progress=False)
        assert not out.exists() or not list(out.iterdir())
    path = _manifest(folder / "m.csv", rows[:2] + [("link_in.csv", "a")])
    result = convert_manifest_to_tfrecords(path, tmp_path / "in", 1,
                                           file_columns=["sensor"],
                                           progress=False)
    assert result["num_examples"] == 3
    path = _manifest(folder / "m.csv", rows[:2] + [("../secret.csv", "a")])
    result = convert_manifest_to_tfrecords(
        path, tmp_path / "allowed", 1, file_columns=["sensor"],
        progress=False, allow_paths_outside=True)
    secret = (tmp_path / "secret.csv").read_bytes()
    stored = [tf.train.Example.FromString(r.numpy()).features.feature[
        "sensor"].bytes_list.value[0] for r in
        tf.data.TFRecordDataset(result["shards"])]
    assert stored[2] == secret


def test_cli_convert_refuses_then_allows_with_the_flag(tmp_path, capsys):
    from keras_mm.cli.main import main

    folder, rows = _outside_set(tmp_path)
    path = _manifest(folder / "m.csv", rows[:1] + [("../secret.csv", "a")])
    command = ["data", "convert", path, str(tmp_path / "out"), "--shards",
               "1", "--file-column", "sensor"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "row 2, column 'sensor'" in err and "secret.csv" in err
    assert "--allow-paths-outside" in err
    assert main(command + ["--allow-paths-outside"]) == 0


def _outside_pipe(path, policy, **kwargs):
    return Pipeline(path, {"sensor": SensorPreprocessor(
        "sensor", channels=CHANNELS, length=LENGTH, source="csv",
        mean=[0.0] * CHANNELS, std=[1.0] * CHANNELS)},
        labels={"label": {"type": "classification", "num_classes": 2,
                          "class_names": CLASSES}},
        bad_input=policy, **kwargs)


def test_pipeline_outside_path_is_a_bad_record_under_each_policy(tmp_path):
    folder, rows = _outside_set(tmp_path)
    path = _manifest(folder / "m.csv", rows[:2] + [("link_out.csv", "b")]
                     + rows[2:])
    with pytest.raises(DataError, match=r"m\.csv, row 3, column 'sensor': "
                       r"path_outside: the path resolves to .*secret\.csv, "
                       r"outside the manifest's folder .*allow_paths_outside "
                       r"is off"):
        _outside_pipe(path, "error", allow_paths_outside=False).validate()

    skipped = _outside_pipe(path, "skip", allow_paths_outside=False)
    got = _examples(skipped)
    assert skipped.report.count("sensor", "path_outside") == 1
    assert skipped.report.count() == 1 and skipped.report.skipped == 1
    clean = _examples(_outside_pipe(_manifest(folder / "c.csv", rows),
                                    "skip"))
    np.testing.assert_array_equal(got["sensor"], clean["sensor"])

    # missing == the same manifest with that cell empty (the file unread)
    marked = _outside_pipe(path, "missing", allow_paths_outside=False)
    got = _examples(marked)
    assert marked.report.count() == 1
    assert marked.report.rows[0]["reason"] == "path_outside"
    blank = _manifest(folder / "b.csv", rows[:2] + [("", "b")] + rows[2:])
    want = _examples(_outside_pipe(blank, "missing"))
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])

    allowed = _outside_pipe(path, "error", allow_paths_outside=True)
    assert allowed.validate().clean


def test_training_pipeline_follows_the_recipe_setting(tmp_path):
    from keras_mm.training import run_data

    folder, rows = _outside_set(tmp_path)
    path = _manifest(folder / "m.csv", rows + [("../secret.csv", "a")])
    pre = {"sensor": SensorPreprocessor("sensor", channels=CHANNELS,
                                        length=LENGTH, source="csv",
                                        mean=[0.0] * CHANNELS,
                                        std=[1.0] * CHANNELS)}
    recipe = _recipe(path, "error")
    assert recipe["data"]["allow_paths_outside"] is False
    with pytest.raises(DataError, match=r"row 5, column 'sensor': "
                       r"path_outside.*data\.allow_paths_outside"):
        _adapted(recipe)
    with pytest.raises(DataError, match="path_outside"):
        run_data.make_pipeline(recipe, "train", pre, {}).validate()
    trusted = _recipe(path, "error", allow_paths_outside=True)
    assert run_data.make_pipeline(trusted, "train", pre, {}).validate().clean
