"""`.ts` files as users bring them: `keras-mm data ts`, the converter behind
it, its errors, and the truncation count of the sensor pipeline."""

import csv
import json
import os

import numpy as np
import pytest

from keras_mm.cli.main import main
from keras_mm.data.pipeline import Pipeline
from keras_mm.data.sensor_preprocessor import SensorPreprocessor
from keras_mm.data.ts_format import read_ts, series_lengths
from keras_mm.datasets import basicmotions
from keras_mm.datasets.ts_dataset import build_ts_dataset, stratified_split
from keras_mm.errors import DataError

CHANNELS = 12
CLASSES = ("walk", "run", "sit")


def make_series(n, seed):
    """`n` examples of 12 channels, 7-29 steps, some '?' values."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        x = np.round(rng.normal(size=(int(rng.integers(7, 30)), CHANNELS)),
                     4)
        if i % 4 == 1:
            x[2, 5] = np.nan                    # a missing value
        examples.append((x, CLASSES[i % 3]))
    return examples


def ts_text(examples, problem="Toy12"):
    lines = [f"# {problem}, written by the test", f"@problemName {problem}",
             "@timeStamps false", "@missing true", "@univariate false",
             f"@dimensions {CHANNELS}", "@equalLength false",
             f"@classLabel true {' '.join(CLASSES)}", "@data"]
    for x, label in examples:
        dims = [",".join("?" if np.isnan(v) else repr(float(v))
                         for v in x[:, c]) for c in range(CHANNELS)]
        lines.append(":".join(dims) + ":" + label)
    return "\n".join(lines) + "\n"


@pytest.fixture
def ts_folder(tmp_path):
    folder = tmp_path / "ts" / "toy12"
    folder.mkdir(parents=True)
    data = {"train": make_series(18, 0), "test": make_series(9, 1)}
    for split, examples in data.items():
        (folder / f"Toy12_{split.upper()}.ts").write_text(ts_text(examples))
    return folder, data


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tree_bytes(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_convert_12_channels_unequal_lengths_missing_values(ts_folder,
                                                            tmp_path):
    folder, data = ts_folder
    info = build_ts_dataset(folder, tmp_path / "a", val_fraction=0.34,
                            seed=3)
    build_ts_dataset(folder, tmp_path / "b", val_fraction=0.34, seed=3)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert info["channels"] == CHANNELS
    assert info["class_names"] == list(CLASSES)
    assert info["sizes"] == {"train": 12, "val": 6, "test": 9}
    written = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert written["lengths"] == info["lengths"]
    seen_train = []
    for split in ("train", "val", "test"):
        rows = read_rows(tmp_path / "a" / f"{split}.csv")
        assert list(rows[0]) == ["series", "label", "ts_row"]
        source = data["test" if split == "test" else "train"]
        for r in rows:
            x, label = source[int(r["ts_row"]) - 1]
            got = np.load(tmp_path / "a" / r["series"])
            assert got.dtype == np.dtype("<f4") and got.shape == x.shape
            np.testing.assert_array_equal(got, x.astype(np.float32))
            assert r["label"] == label
        lengths = [len(source[int(r["ts_row"]) - 1][0]) for r in rows]
        assert info["lengths"][split]["max"] == max(lengths)
        assert info["lengths"][split]["min"] == min(lengths)
        if split != "test":
            seen_train += [int(r["ts_row"]) for r in rows]
    # val is a stratified part of TRAIN: every training row exactly once,
    # two of each class in val.
    assert sorted(seen_train) == list(range(1, 19))
    val = read_rows(tmp_path / "a" / "val.csv")
    assert sorted(r["label"] for r in val) == sorted(CLASSES * 2)
    assert info["missing_values"]["train"] + info["missing_values"][
        "val"] == sum(np.isnan(x).sum() for x, _ in data["train"])
    assert info["suggested_length"] == max(
        len(data["train"][int(r["ts_row"]) - 1][0])
        for r in read_rows(tmp_path / "a" / "train.csv"))
    # Another seed, another split.
    other = build_ts_dataset(folder, tmp_path / "c", val_fraction=0.34,
                             seed=4)
    assert other["sizes"] == info["sizes"]
    assert read_rows(tmp_path / "c" / "val.csv") != val


def test_problem_name_lookup_single_file_split_and_inputs(ts_folder,
                                                          tmp_path):
    folder, data = ts_folder
    # A problem name, found in a subfolder of --search-dir (any case).
    info = build_ts_dataset("TOY12", tmp_path / "p",
                            search_dir=folder.parent, file_format="csv",
                            inputs={"left": [0, 1], "right": [11]})
    row = read_rows(tmp_path / "p" / "test.csv")[4]
    x = np.loadtxt(tmp_path / "p" / row["right"], delimiter=",", ndmin=2)
    want = data["test"][int(row["ts_row"]) - 1][0][:, [11]]
    np.testing.assert_allclose(x, want, atol=1e-6)
    assert info["inputs"]["left"]["channels"] == 2
    # One .ts file without a TEST file: a seeded, stratified test split.
    single = tmp_path / "one.ts"
    single.write_text(ts_text(data["train"], problem="One"))
    info = build_ts_dataset(single, tmp_path / "s", test_fraction=0.34)
    assert info["sizes"] == {"train": 12, "test": 6}
    test_rows = read_rows(tmp_path / "s" / "test.csv")
    assert sorted(r["label"] for r in test_rows) == sorted(CLASSES * 2)
    with pytest.raises(DataError, match=r"no \.ts problem 'Nope' here"):
        build_ts_dataset("Nope", tmp_path / "n", search_dir=folder.parent)
    assert stratified_split(["a"] * 5, 0.0, 0) == ([0, 1, 2, 3, 4], [])


HEADER = ("@problemName Bad\n@dimensions 2\n@equalLength true\n"
          "@classLabel true a b\n@data\n")


@pytest.mark.parametrize("body, message", [
    ("1,2,3:4,5,6:a\n1,2:3,4:b\n",
     r"row 2: line 7: 2 steps, but the first data row has 3 .*@equalLength "
     "true"),
    ("1,2,3::a\n", "row 1: line 6: dimension 2 has no value"),
    ("1,2,3:4,5,6:c\n", r"row 1: line 6: label 'c' is not one of"),
    ("1,2:3,4:a\n1,2:3,4,x:b\n",
     r"row 2: line 7: dimension 2, value 3: 'x' is not a number"),
])
def test_malformed_ts_names_file_and_line(tmp_path, body, message):
    path = tmp_path / "Bad_TRAIN.ts"
    path.write_text(HEADER + body)
    with pytest.raises(DataError, match=message) as err:
        build_ts_dataset(path, tmp_path / "out")
    assert str(err.value).startswith(str(path))
    assert not (tmp_path / "out").exists()


def test_train_test_mismatch_and_bad_bytes(tmp_path):
    (tmp_path / "P_TRAIN.ts").write_text(HEADER + "1,2:3,4:a\n1,2:3,4:b\n")
    (tmp_path / "P_TEST.ts").write_text(HEADER.replace(
        "@dimensions 2", "@dimensions 1") + "1,2:a\n")
    with pytest.raises(DataError,
                       match=r"P_TEST\.ts: 1 dimensions, but the TRAIN file"):
        build_ts_dataset(tmp_path, tmp_path / "out")
    bad = tmp_path / "Q_TRAIN.ts"
    bad.write_bytes(HEADER.encode() + b"1,2:3,\xff4:a\n")
    with pytest.raises(DataError, match=r"Q_TRAIN\.ts: line 6: not UTF-8"):
        read_ts(bad)


def test_cli_data_ts(ts_folder, tmp_path, capsys):
    folder, _ = ts_folder
    out = tmp_path / "cli"
    assert main(["data", "ts", str(folder), "--out", str(out),
                 "--val-fraction", "0.2", "--input", "acc=0,1,2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("written to") == 1
    assert "Toy12: 15 train / 3 val / 9 test examples, 12 channel(s)" \
        in printed
    assert "input acc: preprocess: {channels: 3, length:" in printed
    assert list(read_rows(out / "val.csv")[0]) == ["acc", "label", "ts_row"]
    assert main(["data", "ts", str(folder), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "ts", str(folder), "--out", str(tmp_path / "x"),
                 "--input", "acc"]) == 1
    assert "--input: 'acc' is not NAME=DIMS" in capsys.readouterr().err


def test_real_basicmotions_through_data_ts(shared_data, tmp_path, capsys):
    """`data ts BasicMotions` == the .ts values; `build_basicmotions` is the
    same converter with the 6 dimensions split in two inputs."""
    assert main(["data", "ts", "BasicMotions", "--search-dir",
                 str(shared_data), "--out", str(tmp_path / "g")]) == 0
    assert "BasicMotions: 40 train / 40 test examples, 6 channel(s), 4 " \
        "classes (Standing, Running, Walking, Badminton)" \
        in capsys.readouterr().out
    basicmotions.build_basicmotions(shared_data / "basicmotions",
                                    tmp_path / "b")
    ref = read_ts(shared_data / "basicmotions" / "BasicMotions_TEST.ts")
    assert series_lengths(ref) == [100] * 40
    for g, b in zip(read_rows(tmp_path / "g" / "test.csv"),
                    read_rows(tmp_path / "b" / "test.csv")):
        full = np.load(tmp_path / "g" / g["series"])
        np.testing.assert_array_equal(full, ref.series[int(g["ts_row"]) - 1]
                                      .astype(np.float32))
        np.testing.assert_array_equal(
            full, np.concatenate([np.load(tmp_path / "b" / b[n])
                                  for n in ("accelerometer", "gyroscope")],
                                 axis=1))


# -- truncation: counted and reported like other bad input -----------------

def _pipeline(manifest, length, truncate, **kwargs):
    pre = SensorPreprocessor("series", channels=CHANNELS, length=length,
                             source="npy", truncate=truncate,
                             normalize=False)
    return Pipeline(manifest, {"series": pre}, **kwargs)


def test_series_longer_than_length_are_counted(ts_folder, tmp_path):
    folder, data = ts_folder
    build_ts_dataset(folder, tmp_path / "d")
    manifest = tmp_path / "d" / "train.csv"
    rows = read_rows(manifest)
    lengths = [len(data["train"][int(r["ts_row"]) - 1][0]) for r in rows]
    length = 20
    longer = [i + 1 for i, n in enumerate(lengths) if n > length]
    assert 0 < len(longer) < len(rows)
    pipe = _pipeline(manifest, length, "warn", bad_input="error",
                     report_path=tmp_path / "report.json")
    report = pipe.validate()
    assert report.count("series", "truncated") == len(longer)
    assert report.skipped == 0 and report.count() == len(longer)
    assert [e["row"] for e in report.rows] == longer[:10]
    entry = report.rows[0]
    assert entry["column"] == "series" and entry["action"] == "truncated"
    assert entry["steps"] == lengths[longer[0] - 1]
    assert f"{entry['steps']} steps, longer than length=20" in \
        entry["detail"]
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["counts"] == {"series": {"truncated": len(longer)}}
    # Every example is kept, cut to `length` (its first 20 steps).
    batches = [b[0] if isinstance(b, tuple) else b
               for b in pipe.dataset(32).as_numpy_iterator()]
    series = np.concatenate([f["series"] for f in batches])
    assert series.shape == (len(rows), length, CHANNELS)
    mask = np.concatenate([f["series_mask"] for f in batches])
    i = longer[0] - 1
    assert mask[i, length - 1]
    # "allow": not reported; "error": stops at the first, naming the row.
    assert _pipeline(manifest, length, "allow").validate().clean
    with pytest.raises(DataError, match=(
            rf"train\.csv, row {longer[0]}, column 'series': "
            rf"{lengths[longer[0] - 1]} steps, longer than length=20.*"
            "preprocess.truncate is 'error': raise the input's "
            "preprocess.length")):
        _pipeline(manifest, length, "error").validate()
    with pytest.raises(ValueError, match=r"truncate='cut' is not one of"):
        SensorPreprocessor("s", channels=2, truncate="cut")
