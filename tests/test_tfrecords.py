"""TFRecord shards: Example encoding, manifest conversion, resume, pipeline."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from test_pipeline import LABELS
from test_pipeline import N
from test_pipeline import collect
from test_pipeline import make_manifest
from test_pipeline import make_preprocessors
from test_pipeline import write_png
from keras_mm.data.manifest import Manifest
from keras_mm.data.pipeline import Pipeline
from keras_mm.data.tfrecords import convert_manifest_to_tfrecords
from keras_mm.data.tfrecords import decode_example
from keras_mm.data.tfrecords import encode_example
from keras_mm.data.video_preprocessor import VideoPreprocessor
from keras_mm.errors import DataError

FILE_COLUMNS = ["image", "audio", "imu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfrecords")
    make_manifest(str(folder))
    return folder


def test_example_round_trip_of_every_kind():
    kinds = {"f": "file", "fs": "files", "s": "string", "x": "float",
             "i": "int", "v": "floats", "none": "file", "nan": "float"}
    values = {"f": b"\x89PNG\x00bytes", "fs": [b"a", b"", b"ccc"],
              "s": "héllo", "x": 0.1, "i": -7, "v": [1.5, float("nan")],
              "none": None, "nan": None}
    example = encode_example(values, kinds, row=12, missing_files=["none"])
    out = decode_example(tf.constant(example.SerializeToString()), kinds)
    assert out["f"].numpy() == values["f"]
    assert out["fs"].numpy().tolist() == values["fs"]
    assert out["s"].numpy().decode() == "héllo"
    assert out["x"].numpy() == np.float32(0.1)
    assert out["i"].numpy() == -7 and out["i"].dtype == tf.int64
    np.testing.assert_array_equal(out["v"].numpy(), [1.5, np.nan])
    assert out["none"].numpy() == b""
    assert math.isnan(out["nan"].numpy())
    assert out["_row"].numpy() == 12
    assert out["_missing_files"].numpy().tolist() == [b"none"]
    with pytest.raises(ValueError, match=r"columns\['f'\]='blob' is not"):
        encode_example({}, {"f": "blob"})


def test_tfrecords_give_bitwise_the_manifest_batches(data_dir, tmp_path):
    manifest = str(data_dir / "train.csv")
    result = convert_manifest_to_tfrecords(
        manifest, tmp_path / "shards", num_shards=3,
        file_columns=FILE_COLUMNS, progress=False)
    assert len(result["shards"]) == 3 and result["num_examples"] == N
    info = json.loads((tmp_path / "shards" / "features.json").read_text())
    assert info["columns"]["image"] == "file"
    assert info["columns"]["age"] == "int"
    assert info["shard_sizes"] == [3, 3, 4]

    from_manifest = collect(Pipeline(
        manifest, make_preprocessors(), labels=LABELS,
        presence_mask=True).dataset(batch_size=4))
    pipe = Pipeline(str(tmp_path / "shards" / "*.tfrecord"),
                    make_preprocessors(), labels=LABELS, presence_mask=True)
    in_order = collect(pipe.dataset(batch_size=4, cycle_length=1))
    interleaved = collect(pipe.dataset(batch_size=4))
    order = np.argsort(interleaved[1]["score"][:, 0], kind="stable")
    for part in (0, 1):
        assert sorted(from_manifest[part]) == sorted(in_order[part])
        for k, v in from_manifest[part].items():
            assert in_order[part][k].tobytes() == v.tobytes(), k
            assert interleaved[part][k][order].tobytes() == v.tobytes(), k


def test_parallel_workers_write_the_same_shards(data_dir, tmp_path, capfd):
    manifest = Manifest.read(data_dir / "train.csv")
    one = convert_manifest_to_tfrecords(manifest, tmp_path / "one", 4,
                                        file_columns=FILE_COLUMNS,
                                        num_workers=1)
    assert "10/10" in capfd.readouterr().err          # the progress bar
    four = convert_manifest_to_tfrecords(manifest, tmp_path / "four", 4,
                                         file_columns=FILE_COLUMNS,
                                         num_workers=4, progress=False)
    for a, b in zip(one["shards"], four["shards"]):
        assert open(a, "rb").read() == open(b, "rb").read()


def test_resume_rewrites_only_the_missing_shard(data_dir, tmp_path):
    out = tmp_path / "shards"
    first = convert_manifest_to_tfrecords(
        data_dir / "train.csv", out, 4, file_columns=FILE_COLUMNS,
        progress=False)
    assert len(first["written"]) == 4 and not first["skipped"]
    contents = [open(p, "rb").read() for p in first["shards"]]
    # Backdate the shards so that a rewrite is visible in the mtime.
    for p in first["shards"]:
        os.utime(p, ns=(10 ** 18, 10 ** 18))
    os.remove(first["shards"][2])
    (out / "data-00001-of-00004.tfrecord.tmp-dead").write_bytes(b"partial")
    second = convert_manifest_to_tfrecords(
        data_dir / "train.csv", out, 4, file_columns=FILE_COLUMNS,
        progress=False)
    assert second["written"] == [first["shards"][2]]
    assert second["skipped"] == [first["shards"][k] for k in (0, 1, 3)]
    mtimes = [os.stat(p).st_mtime_ns for p in second["shards"]]
    assert [m == 10 ** 18 for m in mtimes] == [True, True, False, True]
    assert [open(p, "rb").read() for p in second["shards"]] == contents
    assert not [n for n in os.listdir(out) if ".tmp-" in n]

    other = make_manifest(str(tmp_path / "other"), n=4)
    with pytest.raises(DataError, match=r"another conversion.*overwrite"):
        convert_manifest_to_tfrecords(other, out, 4,
                                      file_columns=FILE_COLUMNS,
                                      progress=False)
    again = convert_manifest_to_tfrecords(other, out, 4, overwrite=True,
                                          file_columns=FILE_COLUMNS,
                                          progress=False)
    assert len(again["written"]) == 4


def test_missing_file_at_conversion(data_dir, tmp_path):
    folder = tmp_path / "m"
    path = make_manifest(str(folder), n=4)
    os.remove(folder / "files" / "img2.png")
    with pytest.raises(DataError, match=r"row 3, column 'image'.*img2.png "
                                        r"does not exist"):
        convert_manifest_to_tfrecords(path, tmp_path / "err", 2,
                                      file_columns=FILE_COLUMNS,
                                      on_missing_file="error",
                                      progress=False)
    result = convert_manifest_to_tfrecords(path, tmp_path / "rec", 2,
                                           file_columns=FILE_COLUMNS,
                                           progress=False)
    assert result["missing_files"] == 1
    pipe = Pipeline(str(tmp_path / "rec"), make_preprocessors(),
                    labels=LABELS, bad_input="missing", presence_mask=True)
    features, _ = collect(pipe.dataset(batch_size=4, cycle_length=1))
    np.testing.assert_array_equal(features["presence"][:, 0], [1, 1, 0, 1])
    (entry,) = pipe.report.rows
    assert entry["reason"] == "missing_file"
    assert entry["manifest_row"] == 3 and entry["row"] == 1
    assert entry["file"].endswith("data-00001-of-00002.tfrecord")


def test_file_sharding_per_input_pipeline(data_dir, tmp_path):
    convert_manifest_to_tfrecords(data_dir / "train.csv", tmp_path / "s", 4,
                                  file_columns=FILE_COLUMNS, progress=False)
    pipe = Pipeline(str(tmp_path / "s"), make_preprocessors(),
                    labels=LABELS)
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(2, pid, 2)
        labels = collect(pipe.dataset(batch_size=2, input_context=ctx))[1]
        seen.append(labels["score"][:, 0].tolist())
    # Shards 0 and 2 (rows 0-1, 5-6) go to pipeline 0; 1 and 3 to 1.
    assert sorted(seen[0]) == [0.0, 0.25, 1.25, 1.5]
    assert sorted(seen[0] + seen[1]) == [float(f"{i / 4:.2f}")
                                         for i in range(N)]


def test_video_frame_lists_and_gzip(tmp_path):
    """A JSONL manifest with lists of frame files -> `files` kind."""
    rows = []
    os.makedirs(tmp_path / "f")
    for i in range(3):
        frames = []
        for j in range(i + 1):
            write_png(tmp_path / "f" / f"{i}_{j}.png", 10 * i + j)
            frames.append(f"f/{i}_{j}.png")
        rows.append({"clip": frames, "y": i % 2})
    (tmp_path / "v.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows))
    pre = {"clip": VideoPreprocessor("clip", num_frames=2, size=(8, 8))}
    labels = {"y": {"type": "binary"}}
    direct = collect(Pipeline(str(tmp_path / "v.jsonl"), pre,
                              labels=labels).dataset(batch_size=3))
    np.testing.assert_array_equal(direct[0]["clip_mask"],
                                  [[True, False], [True, True],
                                   [True, True]])
    np.testing.assert_array_equal(direct[1]["y"], [[0.0], [1.0], [0.0]])
    convert_manifest_to_tfrecords(tmp_path / "v.jsonl", tmp_path / "s", 2,
                                  columns={"clip": "files", "y": "int"},
                                  compression="GZIP", progress=False)
    shards = collect(Pipeline(str(tmp_path / "s"), pre, labels=labels)
                     .dataset(batch_size=3, cycle_length=1))
    for part in (0, 1):
        for k, v in direct[part].items():
            assert shards[part][k].tobytes() == v.tobytes()
