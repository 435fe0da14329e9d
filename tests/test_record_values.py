"""ONE code path for record values: manifest == TFRecords == serve_examples.

A manifest (CSV cells written by `csv`, files by Pillow / `wave` / `csv`)
holds the edge values NaN, +-inf, 1e20, " 2.5" and "" in every kind of cell
the six modalities read: file paths (present, padded with spaces, empty),
frame lists, sensor CSV values, text, and tabular numbers / categories
stored as floats, strings and ints. The same rows go through

- the manifest `Pipeline`,
- its TFRecords (`convert_manifest_to_tfrecords`) through a `Pipeline`,
- the serialized records through the real `ServingFunctions.examples_to_raw`
  and each preprocessor's serving call (what `serve_examples` runs),

and the converted raw values equal the table below, bitwise, on all three
paths, as do the model-ready features. Refused cells are refused by all
three with an error naming the column.
"""

import csv
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from test_pipeline import make_preprocessors
from test_pipeline import write_png
from test_pipeline import write_wav
from keras_mm.data import record_values
from keras_mm.data.manifest import Manifest
from keras_mm.data.pipeline import Pipeline
from keras_mm.data.tabular_preprocessor import TabularPreprocessor
from keras_mm.data.text_preprocessor import TextPreprocessor
from keras_mm.data.tfrecords import convert_manifest_to_tfrecords
from keras_mm.data.tfrecords import list_shards
from keras_mm.data.video_preprocessor import VideoPreprocessor
from keras_mm.errors import DataError
from keras_mm.serving.serving_functions import ServingFunctions

INF, NAN = math.inf, math.nan
# column -> (CSV cells, column type, converted raw values).
TABLE = {
    # numbers stored as floats / as strings (+-inf pass: the tabular
    # preprocessor imputes every non-finite value, as it does NaN).
    "x": (["1.5", "nan", "inf", "-inf", "1e20", " 2.5", ""], None,
          [1.5, NAN, INF, -INF, 1e20, 2.5, NAN]),
    "xs": (["1.5", "nan", "inf", "-inf", "1e20", " 2.5", ""], "string",
           [1.5, NAN, INF, -INF, 1e20, 2.5, NAN]),
    # categories stored as floats / strings / ints.
    "c": (["3", "3.0", "nan", "inf", "-inf", " 2.5", ""], None,
          ["3", "3", "", "inf", "-inf", "2.500000", ""]),
    "cs": (["a", " b ", "", "inf", " 2.5", "1e20", "nan"], "string",
           ["a", "b", "", "inf", "2.5", "1e20", "nan"]),
    "ci": (["7", "-2", "9007199254740993", "0", "1", "2", "3"], None,
           ["7", "-2", "9007199254740993", "0", "1", "2", "3"]),
}
TEXT = ["a cat sat", "", " dog ran ", "inf", "nan", "1e20", " 2.5"]
# Sensor CSV files: the edge values as cells of the series (row 2: none).
SENSOR = [["1.5,nan", "inf,-inf"], ["1e20, 2.5", ","], None,
          ["nan,nan"], [" 2.5,1", "-inf,3"], ["0,0"], ["1,2", "3,4"]]
ROWS = 7


def write_files(folder):
    os.makedirs(folder / "f", exist_ok=True)
    rows = []
    for i in range(ROWS):
        write_png(folder / "f" / f"img{i}.png", i)
        write_png(folder / "f" / f"frame{i}.png", 20 + i)
        write_wav(folder / "f" / f"snd{i}.wav", i)
        imu = ""
        if SENSOR[i] is not None:
            imu = f"f/imu{i}.csv"
            (folder / imu).write_text("ax,ay\n" + "\n".join(SENSOR[i]))
        image = ["f/img{}.png", " f/img{}.png ", ""][i % 3].format(i)
        clip = ["f/frame{0}.png|f/img{0}.png", "", "f/frame{0}.png"][i % 3]
        row = {"image": image, "audio": "" if i == 3 else f"f/snd{i}.wav",
               "clip": clip.format(i), "imu": imu, "caption": TEXT[i]}
        row.update({c: cells[i] for c, (cells, _, _) in TABLE.items()})
        rows.append(row)
    path = folder / "edge.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def read_manifest(path):
    types = {c: t for c, (_, t, _) in TABLE.items() if t}
    return Manifest.read(path, column_types=dict(types, clip="paths"))


def edge_preprocessors():
    base = make_preprocessors()
    return {
        "image": base["image"], "audio": base["audio"], "imu": base["imu"],
        "clip": VideoPreprocessor("clip", num_frames=2, size=(8, 8)),
        "caption": TextPreprocessor("caption", max_len=4,
                                    vocab=base["caption"].vocab),
        "tab": TabularPreprocessor(
            "tab", numeric=["x", "xs"], categorical=["c", "cs", "ci"],
            mean=[1.0, 2.0], variance=[4.0, 9.0],
            vocabularies=[["3", "inf", "2.500000"], ["b", "inf", "2.5"],
                          ["9007199254740993", "7"]])}


def tiny_model(preprocessors):
    """A Keras model taking every model-ready output (ServingFunctions
    needs one; its outputs are not what this file checks)."""
    inputs, parts = [], []
    for pre in preprocessors.values():
        for key, spec in pre.output_signature().items():
            if key.endswith("_present"):
                continue
            x = keras.Input(shape=spec.shape[1:], dtype=spec.dtype.name,
                            name=key)
            inputs.append(x)
            parts.append(keras.layers.Flatten()(keras.ops.cast(x,
                                                               "float32")))
    out = keras.layers.Dense(1, name="score")(
        keras.layers.Concatenate()(parts))
    return keras.Model(inputs, {"score": out})


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edge")
    path = write_files(folder)
    pre = edge_preprocessors()
    result = convert_manifest_to_tfrecords(
        read_manifest(path), folder / "shards", num_shards=1,
        file_columns=["image", "audio", "clip", "imu"], progress=False)
    records = [r.numpy() for r in tf.data.TFRecordDataset(
        list_shards(str(folder / "shards")))]
    functions = ServingFunctions(tiny_model(pre), pre,
                                 column_kinds=result["info"]["columns"])
    return {"folder": folder, "path": path, "pre": pre,
            "records": records, "functions": functions,
            "kinds": result["info"]["columns"]}


def pipelines(edge):
    common = dict(bad_input="missing", keep_present=True)
    return (Pipeline(read_manifest(edge["path"]), edge["pre"], **common),
            Pipeline(str(edge["folder"] / "shards"), edge["pre"], **common))


def stack_raw(pipe):
    rows = [raw for _, raw, _ in pipe.raw_dataset()]
    return {c: [r[c].numpy() for r in rows] for c in rows[0]}


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "OS":
        return a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and \
        a.tobytes() == b.tobytes()


def test_the_three_paths_give_the_table_values(edge):
    manifest, shards = pipelines(edge)
    served = {k: v.numpy() for k, v in
              edge["functions"].examples_to_raw(
                  tf.constant(edge["records"])).items()}
    raws = {"manifest": stack_raw(manifest), "tfrecords": stack_raw(shards),
            "serve_examples": {k: list(v) for k, v in served.items()}}
    for column, (_, _, want) in TABLE.items():
        if isinstance(want[0], str):
            want = np.array([w.encode() for w in want], object)
        else:
            want = np.array(want, np.float32)
        for path, raw in raws.items():
            got = np.array(raw[column], want.dtype)
            assert same(got, want), (path, column, got, want)
    # File-valued cells: the same bytes ("" / no frames where empty).
    for column in ("image", "audio", "imu", "caption"):
        for path in ("tfrecords", "serve_examples"):
            assert raws[path][column] == raws["manifest"][column], \
                (path, column)
    assert raws["manifest"]["image"][2] == b""
    assert raws["manifest"]["image"][1] == \
        (edge["folder"] / "f" / "img1.png").read_bytes()
    frames = {path: [[f for f in v if f] for v in raw["clip"]]
              for path, raw in raws.items()}   # serving pads with b""
    assert frames["tfrecords"] == frames["serve_examples"] == \
        frames["manifest"]
    assert [len(v) for v in frames["manifest"]] == [2, 0, 1] * 2 + [2]


def test_the_three_paths_give_bitwise_equal_features(edge):
    manifest, shards = pipelines(edge)
    want = next(iter(manifest.dataset(batch_size=ROWS)))
    from_shards = next(iter(shards.dataset(batch_size=ROWS,
                                           cycle_length=1)))


    @tf.function   # as in the SavedModel's serve_examples signature
    def serve_features(records):
        raw = edge["functions"].examples_to_raw(records)
        features = {}
        for pre in edge["pre"].values():
            features.update(pre(raw, training=False))
        return features

    served = serve_features(tf.constant(edge["records"]))
    assert sorted(want) == sorted(from_shards) == sorted(served)
    for key, value in want.items():
        assert same(from_shards[key].numpy(), value.numpy()), key
        if key == "audio":
            # The log-mel of equal waveforms rounds differently in a tf.data
            # function and in a tf.function (measured: up to 3e-6,
            # with oneDNN off too); the raw bytes are equal (test above).
            np.testing.assert_allclose(served[key].numpy(), value.numpy(),
                                       rtol=1e-5, atol=1e-5)
            continue
        assert same(served[key].numpy(), value.numpy()), ("serve", key)
    # The edge values reach the model as defined: non-finite numbers are
    # missing (imputed), categories map by their key strings.
    np.testing.assert_array_equal(
        want["tab_present"].numpy(), np.ones(ROWS, np.float32))
    ids = want["tab_categorical"].numpy()
    np.testing.assert_array_equal(ids[:, 0], [1, 1, 0, 2, 0, 3, 0])
    np.testing.assert_array_equal(ids[:, 1], [0, 1, 0, 2, 3, 0, 0])
    np.testing.assert_array_equal(ids[:, 2], [2, 0, 1, 0, 0, 0, 0])
    assert want["caption_present"].numpy().tolist() == \
        [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert want["image_present"].numpy().tolist() == [1.0, 1.0, 0.0] * 2 + \
        [1.0]


@pytest.mark.parametrize("column,cell,message", [
    ("c", "1e20", r"2\*\*24"),
    ("xs", "abc", "not .*numbers?"),
])
def test_refused_cells_are_refused_on_every_path(tmp_path, column, cell,
                                                  message):
    cells, ctype, _ = TABLE[column]
    rows = [{column: v} for v in cells]
    rows[1][column] = cell
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[column])
        writer.writeheader()
        writer.writerows(rows)
    manifest = Manifest.read(str(path), column_types={column: ctype}
                             if ctype else None)
    if column == "xs":
        tab = TabularPreprocessor("tab", numeric=[column], mean=[0.0],
                                  variance=[1.0])
    else:
        tab = TabularPreprocessor("tab", categorical=[column],
                                  vocabularies=[["3"]])
    pre = {"tab": tab}
    with pytest.raises(DataError, match=rf"row 2, column '{column}'.*"
                                        f"{message}"):
        Pipeline(manifest, pre, columns={"tab": column}).validate()
    result = convert_manifest_to_tfrecords(manifest, tmp_path / "s", 1,
                                           progress=False)
    with pytest.raises(DataError, match=rf"row 2.*column '{column}'.*"
                                        f"{message}"):
        Pipeline(str(tmp_path / "s"), pre,
                 columns={"tab": column}).validate()
    functions = ServingFunctions(tiny_model(pre), pre,
                                 columns={"tab": column},
                                 column_kinds=result["info"]["columns"])
    records = [r.numpy() for r in tf.data.TFRecordDataset(
        list_shards(str(tmp_path / "s")))]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"(?s)column '{column}'.*{message}"):
        functions.examples_to_raw(tf.constant(records))


def test_python_key_string_is_the_graph_conversion():
    """Class names go through `key_string`, the cells through
    `key_strings`: the same strings for the same values."""
    values = [3.0, 2.5, -0.0, INF, -INF, NAN, 0.1, -7.25]
    graph = record_values.key_strings(tf.constant(values, tf.float32), "float",
                                "v").numpy().tolist()
    assert [record_values.key_string(v) for v in values] == \
        [g.decode() for g in graph]
    assert [record_values.key_string(v) for v in (3, True, " a ", None,
                                            ["x", 2.0])] == \
        ["3", "1", "a", "", "x|2"]
    with pytest.raises(ValueError, match=r"labels\['y'\]: 1e\+20 is a float "
                                         r"of 2\*\*24"):
        record_values.key_string(1e20, "labels['y']")
