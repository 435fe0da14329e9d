"""`keras_mm.export`: SavedModels for TF Serving, verified and atomic.

Two small multi-input models cover the six tower types:
- "media": image + audio + text, gated fusion WITH a presence mask,
  classification + multilabel heads;
- "seq": video frames + sensor series + table, concat fusion WITHOUT a
  presence mask, regression + binary heads.

Each is exported (and verified in a fresh interpreter) once per module. Raw
inputs are written by independent tools (Pillow PNGs, `wave` WAVs, NumPy);
the Keras model on tf.data-preprocessed inputs is the reference every
SavedModel output is compared with. No TensorFlow or model is mocked.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2

import keras_mm
from media_files import wav_bytes

from keras_mm.builder.spec import load_registries
from keras_mm.data import AudioPreprocessor
from keras_mm.data import ImagePreprocessor
from keras_mm.data import Pipeline
from keras_mm.data import SensorPreprocessor
from keras_mm.data import TabularPreprocessor
from keras_mm.data import TextPreprocessor
from keras_mm.data import VideoPreprocessor
from keras_mm.data import convert_manifest_to_tfrecords
from keras_mm.data import list_shards
from keras_mm.errors import ExportError
from keras_mm.serving import client
from keras_mm.serving import export
from keras_mm.serving import next_version
from keras_mm.serving import predict
from keras_mm.serving import verify
from keras_mm.serving import verify_savedmodel
from keras_mm.serving.serving_config import write_serving_config
from keras_mm.serving.warmup import read_warmup_requests

import serving_emulation as tfs
from serving_protos import compile_serving_protos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-5
TEXTS = ["a red cat sat", "the blue dog ran", "a cat and a dog", "red dog",
         "blue cat sat on a mat"]
CLASSES = ["cat", "dog", "bird"]


TOWERS, FUSIONS, HEADS = load_registries()


# -- raw data written by independent tools ------------------------------------

def png_bytes(pixels):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def random_png(rng, shape=(9, 11)):
    return png_bytes(rng.integers(0, 256, shape))


def random_wav(rng, n):
    return wav_bytes(rng.integers(-8000, 8000, n))


def media_rows(rng, n):
    return [{"image": random_png(rng, (8 + i % 3, 7 + i % 4)),
             "audio": random_wav(rng, 700 + 150 * i),
             "text": TEXTS[i % len(TEXTS)]} for i in range(n)]


def seq_rows(rng, n, frames):
    return [{"clip": frames[:2 + i % 5],
             "imu": rng.normal(size=(6 + 3 * i, 3)).astype("float32"),
             "age": float(20 + 7 * i), "height": 1.5 + 0.07 * i,
             "city": ["oslo", "rome", "lima"][i % 3]} for i in range(n)]


# -- the two models -----------------------------------------------------------

def media_model():
    pre = {"image": ImagePreprocessor("image", size=(8, 8), channels=1),
           "audio": AudioPreprocessor("audio", sample_rate=8000,
                                      duration=0.125, random_crop=False),
           "text": TextPreprocessor("text", max_len=6, max_vocab_size=40,
                                    learn_params={"lower_thresh": 1})}
    pre["text"].adapt(TEXTS * 2)
    spec = {
        "name": "media",
        "inputs": {
            "image": {"modality": "image", "shape": [8, 8, 1],
                      "tower": {"encoder": "cnn", "dim": 8, "filters": [4]}},
            "audio": {"modality": "audio", "shape": [1000],
                      "tower": {"encoder": "cnn", "dim": 8, "filters": [4],
                                "sample_rate": 8000, "frame_length": 64,
                                "frame_step": 32, "num_mel_bins": 8}},
            "text": {"modality": "text", "shape": [6],
                     "vocab_size": pre["text"].vocab_size,
                     "tower": {"encoder": "bag", "dim": 8,
                               "embedding_dim": 8}}},
        "fusion": {"type": "gated", "units": 8, "presence_mask": True},
        "heads": {"label": {"type": "classification", "num_classes": 3,
                            "class_names": CLASSES},
                  "tags": {"type": "multilabel", "num_labels": 2}}}
    return keras_mm.build_model(spec), pre


def seq_model(rng):
    pre = {"clip": VideoPreprocessor("clip", num_frames=4, size=(8, 8),
                                     channels=1),
           "imu": SensorPreprocessor("imu", channels=3, length=10,
                                     crop="start", random_crop=False),
           "tab": TabularPreprocessor("tab", numeric=["age", "height"],
                                      categorical=["city"])}
    pre["imu"].adapt([rng.normal(size=(12, 3)).astype("float32")
                      for _ in range(4)])
    pre["tab"].adapt([{"age": 30.0, "height": 1.7, "city": "oslo"},
                      {"age": 40.0, "height": 1.8, "city": "rome"},
                      {"age": 50.0, "height": 1.6, "city": "oslo"}])
    spec = {
        "name": "seq",
        "inputs": {
            "clip": {"modality": "video", "shape": [4, 8, 8, 1],
                     "mask": True,
                     "tower": {"encoder": "frames", "temporal": "mean",
                               "dim": 8, "filters": [4]}},
            "imu": {"modality": "sensor", "shape": [10, 3], "mask": True,
                    "tower": {"encoder": "gru", "dim": 8}},
            "tab": {"modality": "tabular", "numeric": 2,
                    "categorical": pre["tab"].cardinalities,
                    "tower": {"dim": 8, "hidden_units": [8]}}},
        "fusion": {"type": "concat", "presence_mask": False},
        "heads": {"score": {"type": "regression"},
                  "flag": {"type": "binary"}}}
    return keras_mm.build_model(spec), pre


class Exported:
    """A model, its preprocessors, its export and the loaded SavedModel."""

    def __init__(self, model, pre, path, rows):
        self.model = model
        self.pre = pre
        self.path = path
        self.rows = rows
        self.loaded = tf.saved_model.load(path)
        self.serve = self.loaded.signatures["serving_default"]
        self.specs = self.serve.structured_input_signature[1]

    def call(self, rows, signature="serving_default"):
        fn = self.loaded.signatures[signature]
        batch = client.batch_inputs(rows, self.specs)
        return {k: v.numpy() for k, v in fn(**{
            k: tf.constant(v) for k, v in batch.items()}).items()}

    def keras(self, rows, presence=None):
        return keras_reference(self.model, self.pre, rows, self.specs,
                               presence)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    rng = np.random.default_rng(1)
    model, pre = media_model()
    golden = media_rows(rng, 3)
    golden[2]["image"] = b""                  # an absent modality
    path = export(model, pre, "media", golden_examples=golden,
                  base_dir=tmp_path_factory.mktemp("models"))
    return Exported(model, pre, path, golden)


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    rng = np.random.default_rng(2)
    model, pre = seq_model(rng)
    frames = [random_png(rng, (8, 8)) for _ in range(6)]
    golden = seq_rows(rng, 3, frames)
    golden[1]["age"] = None                   # a missing numeric cell
    golden[2]["city"] = "paris"               # an unseen category
    path = export(model, pre, "seq", golden_examples=golden,
                  base_dir=tmp_path_factory.mktemp("models"))
    exported = Exported(model, pre, path, golden)
    exported.frames = frames
    return exported


# -- the reference: Keras on tf.data-preprocessed inputs ----------------------

def keras_reference(model, preprocessors, rows, specs, presence=None):
    """Keras model outputs (as the signature names them) on `rows`,
    preprocessed the training way: `parse` per example in a tf.data map,
    `batch`, `transform`, then `model(x, training=False)`."""
    raw = client.batch_inputs(rows, specs)
    dataset = tf.data.Dataset.from_tensor_slices(raw)
    dataset = dataset.map(lambda r: {n: p.parse(r) for n, p in
                                     preprocessors.items()})
    batch = next(iter(dataset.batch(len(rows))))
    features = {}
    for name, pre in preprocessors.items():
        features.update(pre.transform(batch[name]))
    names = [t.name for t in model.inputs]
    if "presence" in names:
        features["presence"] = tf.stack(
            [features[f"{m}_present"] for m in model.get_layer(
                "fusion").modalities], axis=1)
        if presence is not None:
            np.testing.assert_array_equal(features["presence"], presence)
    outputs = model({n: features[n] for n in names}, training=False)
    return named_outputs(model, outputs)


def named_outputs(model, outputs):
    result = {}
    for head, value in outputs.items():
        value = np.asarray(value, np.float32)
        layer = model.get_layer(head)
        kind = type(layer).__name__
        if kind == "ClassificationHead":
            result[f"{head}_probabilities"] = value
            result[f"{head}_class_id"] = value.argmax(-1)
            result[f"{head}_class_name"] = np.array(
                [layer.class_names[i].encode() for i in value.argmax(-1)],
                dtype=object)
        elif kind == "BinaryHead":
            result[f"{head}_probability"] = value.reshape(-1)
            result[f"{head}_class_id"] = (value.reshape(-1) >= 0.5)
        elif kind == "MultilabelHead":
            result[f"{head}_scores"] = value
        else:
            result[f"{head}_value"] = value
    return result


def assert_outputs_close(got, want, atol=ATOL):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        value = np.asarray(value)
        if value.dtype == object or value.dtype.kind in "biu":
            np.testing.assert_array_equal(
                np.asarray(got[key]).astype(value.dtype), value, err_msg=key)
        else:
            np.testing.assert_allclose(got[key], value, atol=atol, rtol=0,
                                       err_msg=key)


def saved_report(path):
    with open(os.path.join(path, "assets.extra",
                           "keras_mm_verify.json")) as f:
        return json.load(f)


# -- export layout, verification report, signatures ---------------------------

@pytest.fixture(scope="session")
def serving_protos(tmp_path_factory):
    """TF Serving's `BatchingParameters` / `MonitoringConfig`, compiled once
    from the .proto files vendored in tests/protos/."""
    return compile_serving_protos(tmp_path_factory.mktemp("serving_protos"))


def parse_serving_files(model_dir, protos):
    """The three config files parsed strictly into TF Serving's messages
    (an unknown field raises `text_format.ParseError`)."""
    def parse(name, message):
        with open(os.path.join(model_dir, name)) as f:
            return text_format.Parse(f.read(), message)

    return (parse("models.config",
                  model_server_config_pb2.ModelServerConfig()),
            parse("batching_parameters.txt",
                  protos.session_bundle_config.BatchingParameters()),
            parse("monitoring.config",
                  protos.monitoring_config.MonitoringConfig()))


def test_export_layout_serving_files_and_verification(media, seq,
                                                     serving_protos):
    model_dir = os.path.dirname(media.path)
    assert os.path.basename(media.path) == "1"
    assert sorted(os.listdir(model_dir)) == [
        "1", "SERVING.md", "batching_parameters.txt", "models.config",
        "monitoring.config"]
    config, batching, monitoring = parse_serving_files(model_dir,
                                                       serving_protos)
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "media", "/models/media", "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 1
    assert batching.max_batch_size.value == 64
    assert batching.HasField("batch_timeout_micros")
    assert not batching.pad_variable_length_inputs
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path.startswith("/monitoring")
    commands = open(os.path.join(model_dir, "SERVING.md")).read()
    assert "--model_config_file=/models/media/models.config" in commands
    assert "tensorflow_model_server" in commands

    report = saved_report(media.path)
    assert report["ok"], report
    # The second model (video, sensor, tabular) passed verification too.
    assert saved_report(seq.path)["ok"]
    checks = report["checks"]
    assert checks["op_audit"]["forbidden"] == []
    assert checks["op_audit"]["unknown"] == []
    # The text preprocessing runs tensorflow-text ops inside the graph.
    assert "FastWordpieceTokenizeWithOffsets" in checks["op_audit"][
        "text_ops"]
    assert checks["golden"]["examples"] == 3
    assert checks["no_keras"]["ok"] and report["imported_keras"] == []
    assert set(report["signatures"]) == {"serving_default", "serve_tensors",
                                         "serve_examples"}
    assert set(checks["load"]["methods"].values()) == {
        "tensorflow/serving/predict"}


def test_serving_md_request_values_are_each_of_their_inputs_kind(media,
                                                                 seq):
    """SERVING.md's REST body gives each input a value of its kind: the
    base64 of a PNG for an image, a WAV for audio, a GIF or PNG frames for
    video, a CSV (with the input's channels) or .npy for a sensor."""
    import base64

    from keras_mm.serving.client import SPEC_FILE

    starts = {"image": b"\x89PNG", "audio": b"RIFF", "video": b"GIF8",
              "npy": b"\x93NUMPY"}
    seen = set()
    for exported in (media, seq):
        text = open(os.path.join(os.path.dirname(exported.path),
                                 "SERVING.md")).read()
        body = text.split("with `request.json`:\n\n```\n")[1]
        (row,) = json.loads(body.split("\n```")[0])["instances"]
        with open(os.path.join(exported.path, SPEC_FILE)) as f:
            inputs = json.load(f)["inputs"]
        assert set(row) == set(inputs)
        for key, value in row.items():
            info = inputs[key]
            kind = info["modality"]
            if kind in ("text", "tabular") or info["dtype"] != "string":
                continue
            frames = value if isinstance(value, list) else [value]
            for frame in frames:
                data = base64.b64decode(frame["b64"].rstrip("."))
                if kind == "sensor" and info["source"] == "csv":
                    series = np.loadtxt(data.decode().splitlines(),
                                        delimiter=",", ndmin=2)
                    assert series.shape[1] == info["channels"], key
                elif kind == "sensor":
                    assert data.startswith(starts["npy"]), key
                elif isinstance(value, list):     # encoded video frames
                    assert data.startswith(starts["image"]), key
                else:
                    assert data.startswith(starts[kind]), (key, data)
            seen.add(kind)
    assert {"image", "audio", "video"} <= seen
    # A sensor read from CSV / .npy files (the exports above take arrays).
    from keras_mm.serving.serving_config import _example_values
    row, _ = _example_values({
        "a": {"dtype": "string", "shape": [None], "modality": "sensor",
              "source": "csv", "channels": 4},
        "b": {"dtype": "string", "shape": [None], "modality": "sensor",
              "source": "npy", "channels": 2}})
    series = np.loadtxt(base64.b64decode(row["a"]["b64"]).decode()
                        .splitlines(), delimiter=",", ndmin=2)
    assert series.shape == (2, 4)
    assert base64.b64decode(row["b"]["b64"].rstrip(".")).startswith(
        starts["npy"])


def test_serving_config_files_parse_into_tf_serving_messages(
        tmp_path, serving_protos):
    """The files keras_mm writes are the messages TF Serving reads, with
    every value where TF Serving looks for it (vendored .proto files)."""
    paths = write_serving_config(
        str(tmp_path), "demo", base_path="/srv/demo", num_versions=2,
        max_batch_size=8, batch_timeout_micros=500, max_enqueued_batches=10,
        num_batch_threads=3)
    assert sorted(os.path.basename(p) for p in paths) == [
        "SERVING.md", "batching_parameters.txt", "models.config",
        "monitoring.config"]
    config, batching, monitoring = parse_serving_files(str(tmp_path),
                                                       serving_protos)
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "demo", "/srv/demo", "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 2
    assert {f.name: v.value for f, v in batching.ListFields()} == {
        "max_batch_size": 8, "batch_timeout_micros": 500,
        "max_enqueued_batches": 10, "num_batch_threads": 3}
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == \
        "/monitoring/prometheus/metrics"
    assert [f.name for f, _ in monitoring.prometheus_config.ListFields()] \
        == ["enable", "path"]
    # The compiled messages are strict: a misspelled field is refused.
    with pytest.raises(text_format.ParseError,
                       match='no field named "max_batch_sise"'):
        text_format.Parse("max_batch_sise { value: 8 }",
                          serving_protos.session_bundle_config
                          .BatchingParameters())


def test_signatures_take_raw_inputs_batch_first(media, seq):
    def signature(exported, name):
        fn = exported.loaded.signatures[name]
        return ({k: (v.dtype.name, v.shape.as_list()) for k, v in
                 fn.structured_input_signature[1].items()},
                sorted(fn.structured_outputs))

    inputs, outputs = signature(media, "serving_default")
    assert inputs == {"image": ("string", [None]),
                      "audio": ("string", [None]),
                      "text": ("string", [None])}
    assert outputs == ["label_class_id", "label_class_name",
                       "label_probabilities", "tags_scores"]
    inputs, outputs = signature(seq, "serving_default")
    assert inputs == {"clip": ("string", [None, None]),
                      "imu": ("float32", [None, None, 3]),
                      "age": ("float32", [None]),
                      "height": ("float32", [None]),
                      "city": ("string", [None])}
    assert outputs == ["flag_class_id", "flag_probability", "score_value"]
    inputs, _ = signature(seq, "serve_tensors")
    assert inputs["clip"] == ("float32", [None, 4, 8, 8, 1])
    assert inputs["clip_mask"] == ("bool", [None, 4])
    assert inputs["tab_categorical"] == ("int32", [None, 1])
    inputs, _ = signature(seq, "serve_examples")
    assert inputs == {"examples": ("string", [None])}


def test_signatures_share_one_model_graph_and_each_weight_is_stored_once(
        media):
    from tensorflow.core.protobuf import saved_model_pb2

    graph = saved_model_pb2.SavedModel()
    with open(os.path.join(media.path, "saved_model.pb"), "rb") as f:
        graph.ParseFromString(f.read())
    names = [fn.signature.name for fn in
             graph.meta_graphs[0].graph_def.library.function]
    # serving_default, serve_tensors and serve_examples call one traced
    # model function, and serve_examples calls serving_default's body
    assert sum(n.startswith("__inference_predict_model_inputs_")
               for n in names) == 1, names
    assert sum(n.startswith("__inference__serve_raw_")
               for n in names) == 1, names
    with_convolutions = [fn.signature.name for fn in
                         graph.meta_graphs[0].graph_def.library.function
                         if any(node.op == "Conv2D" for node in fn.node_def)]
    assert len(with_convolutions) == 1 and with_convolutions[0].startswith(
        "__inference_predict_model_inputs_"), with_convolutions
    stored = tf.train.list_variables(os.path.join(media.path, "variables",
                                                  "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored
                 if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert values == sum(int(np.prod(v.shape)) for v in media.model.weights)


def test_golden_outputs_and_warmup_requests(media):
    report = saved_report(media.path)
    assert report["checks"]["golden"]["problems"] == []
    # The warm-up file holds PredictionLogs of real requests that the
    # signature answers like the Keras model.
    requests = read_warmup_requests(os.path.join(
        media.path, "assets.extra", "tf_serving_warmup_requests"))
    assert [r.model_spec.name for r in requests] == ["media", "media"]
    assert [r.model_spec.signature_name for r in requests] == [
        "serving_default"] * 2
    want = media.keras(media.rows)
    for request in requests:
        # Decoded as TF Serving does (names, dtypes, shapes checked).
        arrays = tfs.decode_grpc_request(request, media.specs)
        got = {k: v.numpy() for k, v in media.serve(**{
            k: tf.constant(v) for k, v in arrays.items()}).items()}
        n = len(arrays["image"])
        assert_outputs_close(got, {k: v[:n] for k, v in want.items()})


# -- parity: SavedModel on raw bytes == Keras on tf.data-preprocessed inputs --

@pytest.mark.parametrize("modality", ["image", "audio", "text", "video",
                                      "sensor", "tabular"])
def test_parity_for_each_modality(media, seq, modality):
    """Only `modality`'s raw values change across the batch: the outputs
    differ from example to example, and match the Keras model."""
    rng = np.random.default_rng(10)
    if modality in ("image", "audio", "text"):
        exported = media
        fresh = media_rows(rng, 4)
        rows = [dict(media.rows[0], **{modality: r[modality]})
                for r in fresh]
    else:
        exported = seq
        fresh = seq_rows(rng, 4, seq.frames)
        keys = {"video": ["clip"], "sensor": ["imu"],
                "tabular": ["age", "height", "city"]}[modality]
        rows = [dict(seq.rows[0], **{k: r[k] for k in keys}) for r in fresh]
    got = exported.call(rows)
    want = exported.keras(rows)
    assert_outputs_close(got, want)
    first = next(k for k in sorted(got) if got[k].dtype.kind == "f")
    assert np.ptp(got[first], axis=0).max() > 1e-6, \
        f"{modality} does not change the outputs"


def test_pipeline_and_tfrecords_parity(media, tmp_path):
    """The training pipeline (manifest -> `Pipeline`), its TFRecords
    (`serve_examples`), the preprocessed tensors (`serve_tensors`) and the
    raw bytes (`serving_default`) all give the Keras model's outputs."""
    rng = np.random.default_rng(3)
    rows = media_rows(rng, 5)
    rows[1]["text"] = ""
    files = tmp_path / "files"
    files.mkdir()
    manifest = []
    for i, row in enumerate(rows):
        (files / f"{i}.png").write_bytes(row["image"])
        (files / f"{i}.wav").write_bytes(row["audio"])
        manifest.append({"image": f"files/{i}.png", "audio": f"files/{i}.wav",
                         "text": row["text"], "label": CLASSES[i % 3]})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in manifest))
    names = [t.name for t in media.model.inputs]
    pipeline = Pipeline(str(path), media.pre, presence_mask=True,
                        input_names=names, bad_input="missing")
    features = next(iter(pipeline.dataset(batch_size=5)))
    want = named_outputs(media.model,
                         media.model(features, training=False))
    assert_outputs_close(media.call(rows), want)

    tensors = media.loaded.signatures["serve_tensors"](**features)
    assert_outputs_close({k: v.numpy() for k, v in tensors.items()}, want)

    shards = tmp_path / "shards"
    convert_manifest_to_tfrecords(str(path), str(shards), num_shards=2,
                                  file_columns=["image", "audio"],
                                  progress=False)
    records = [r.numpy() for r in
               tf.data.TFRecordDataset(list_shards(str(shards)))]
    examples = media.loaded.signatures["serve_examples"](
        examples=tf.constant(records))
    assert_outputs_close({k: v.numpy() for k, v in examples.items()}, want)


def test_pipeline_and_tfrecords_parity_video_sensor_tabular(seq, tmp_path):
    """The same for frame lists (video), `.npy` series (sensor: a Pipeline
    reads files, so its preprocessor is the export's with source='npy') and
    table cells (tabular): the manifest `Pipeline`, the `Pipeline` over its
    TFRecords (bitwise equal), `serve_tensors`, `serving_default` and
    `serve_examples` all give the Keras model's outputs."""
    from keras_mm.data.tfrecords import encode_example

    rows = seq_rows(np.random.default_rng(4), 5, seq.frames)
    rows[1]["age"] = None                     # a missing numeric cell
    rows[2]["city"] = "paris"                 # an unseen category
    files = tmp_path / "files"
    files.mkdir()
    manifest = []
    for i, row in enumerate(rows):
        clip = []
        for j, frame in enumerate(row["clip"]):
            (files / f"{i}_{j}.png").write_bytes(frame)
            clip.append(f"files/{i}_{j}.png")
        np.save(files / f"{i}.npy", row["imu"])
        manifest.append({"clip": clip, "imu": f"files/{i}.npy",
                         "age": row["age"], "height": row["height"],
                         "city": row["city"]})
    path = tmp_path / "seq.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in manifest))
    pre = dict(seq.pre, imu=SensorPreprocessor.from_config(
        dict(seq.pre["imu"].get_config(), source="npy")))
    names = [t.name for t in seq.model.inputs]
    options = dict(input_names=names, bad_input="missing")
    features = next(iter(Pipeline(str(path), pre, **options).dataset(
        batch_size=5)))
    want = named_outputs(seq.model, seq.model(features, training=False))
    assert_outputs_close(seq.call(rows), want)
    tensors = seq.loaded.signatures["serve_tensors"](**features)
    assert_outputs_close({k: v.numpy() for k, v in tensors.items()}, want)

    shards = tmp_path / "shards"
    convert_manifest_to_tfrecords(
        str(path), str(shards), num_shards=2, progress=False,
        columns={"clip": "files", "imu": "file", "age": "float",
                 "height": "float", "city": "string"})
    from_shards = next(iter(Pipeline(str(shards), pre, **options).dataset(
        batch_size=5, cycle_length=1)))
    assert sorted(from_shards) == sorted(features)
    for key, value in features.items():
        assert from_shards[key].numpy().tobytes() == \
            value.numpy().tobytes(), key

    info = json.load(open(os.path.join(seq.path, "assets.extra",
                                       "keras_mm.json")))
    kinds = {f["column"]: f["kind"]
             for f in info["example_features"].values()}
    examples = [encode_example(
        {"clip": list(r["clip"]), "imu": r["imu"].reshape(-1).tolist(),
         "age": r["age"], "height": r["height"], "city": r["city"]},
        kinds).SerializeToString() for r in rows]
    served = seq.loaded.signatures["serve_examples"](
        examples=tf.constant(examples))
    assert_outputs_close({k: v.numpy() for k, v in served.items()}, want)


def test_serve_examples_converts_stored_kinds(seq):
    """serve_examples parses the training TFRecords' feature names and
    kinds (frame lists, float lists, numbers, category strings)."""
    rows = seq.rows
    golden = json.load(open(os.path.join(seq.path, "assets.extra",
                                         "keras_mm.json")))
    assert golden["example_features"]["clip"] == {"column": "clip",
                                                  "kind": "files"}
    assert golden["example_features"]["imu"]["kind"] == "floats"
    examples = [__import__("base64").b64decode(s)
                for s in golden["golden"]["examples"]]
    got = seq.loaded.signatures["serve_examples"](
        examples=tf.constant(examples))
    assert_outputs_close({k: v.numpy() for k, v in got.items()},
                         seq.keras(rows))


# -- missing modalities -------------------------------------------------------

def test_missing_modality_uses_the_presence_mask(media):
    row = media.rows[0]
    rows = [{"image": row["image"]},                          # image only
            {"audio": row["audio"], "text": row["text"]},     # no image
            {"text": row["text"]}]
    got = media.call(rows)
    modalities = media.model.get_layer("fusion").modalities
    want = media.keras(rows, presence=[[float(m in row) for m in modalities]
                                       for row in rows])
    assert_outputs_close(got, want)
    # An absent modality contributes nothing: other bytes, same outputs.
    other = media.call([{"image": row["image"], "text": ""}])
    assert_outputs_close(other, {k: v[:1] for k, v in got.items()})
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="every input empty"):
        media.call([{"image": b"", "audio": b"", "text": ""}])


@pytest.mark.parametrize("empty, name", [
    ({"clip": []}, "`clip`"),
    ({"imu": np.full((5, 3), np.nan, np.float32)}, "`imu`"),
    ({"imu": np.zeros((0, 3), np.float32)}, "`imu`"),
    ({"age": None, "height": None, "city": ""}, "`age`, `height`, `city`"),
])
def test_missing_modality_without_presence_mask_is_invalid_argument(
        seq, empty, name):
    row = dict(seq.rows[0], **empty)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        seq.call([seq.rows[1], row])
    message = verify_savedmodel.error_summary(info.value)
    assert f"input {name} is empty" in message
    assert "trained without a presence mask" in message


# -- malformed requests -------------------------------------------------------

def test_malformed_requests_are_refused(media, seq):
    serve = media.serve
    good = {k: tf.constant(v) for k, v in client.batch_inputs(
        media.rows[:1], media.specs).items()}
    cases = {
        "corrupt image": dict(good, image=tf.constant([b"\x89PNG junk"])),
        "corrupt wav": dict(good, audio=tf.constant([b"RIFF junk"])),
        "wav at 16 kHz": dict(good, audio=tf.constant(
            [wav_bytes(np.zeros(2000), rate=16000)])),
        "empty batch": {k: v[:0] for k, v in good.items()},
        "batch sizes differ": dict(good, text=tf.constant(["a", "b"])),
        "oversized wav": dict(good, audio=tf.constant(
            [wav_bytes(np.zeros(8000 * 61))])),
        "wrong rank": dict(good, text=tf.constant([["a cat"]])),
    }
    messages = {}
    for case, request in cases.items():
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            serve(**request)
        messages[case] = verify_savedmodel.error_summary(info.value)
    assert "PNG" in messages["corrupt image"]
    assert "differs from the configured sample_rate" in messages[
        "wav at 16 kHz"]
    assert "empty batch" in messages["empty batch"]
    assert "input `text`" in messages["batch sizes differ"]
    assert "input `audio`: a value is longer than" in messages[
        "oversized wav"]
    assert "text" in messages["wrong rank"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="expected to be a string tensor but is a "
                             "float tensor"):
        serve(**dict(good, image=tf.zeros([1], tf.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="imu .* not compatible"):
        seq.serve(**dict({k: tf.constant(v) for k, v in client.batch_inputs(
            seq.rows[:1], seq.specs).items()},
            imu=tf.zeros([1, 5, 4])))
    # The model still answers afterwards.
    assert_outputs_close(media.call(media.rows[:1]),
                         {k: v[:1] for k, v in media.keras(
                             media.rows).items()})
    # The verifier sent the same kinds of requests, each refused.
    for exported in (media, seq):
        cases = saved_report(exported.path)["checks"]["malformed"]["cases"]
        assert cases and all(c["ok"] for c in cases), cases
        names = " ".join(c["case"] for c in cases)
        for kind in ("empty batch", "wrong dtype", "wrong rank"):
            assert kind in names
    media_cases = " ".join(c["case"] for c in saved_report(
        media.path)["checks"]["malformed"]["cases"])
    assert "corrupt image bytes" in media_cases
    assert "oversized WAV" in media_cases
    # ... and to serve_tensors: each refused by its own check.
    for exported in (media, seq):
        report = saved_report(exported.path)["checks"]["malformed"]
        assert report["problems"] == [], report["problems"]
        tensors = {c["case"]: c["error"] for c in report["cases"]
                   if c["case"].startswith("serve_tensors: ")}
        assert "empty batch: send at least one example" in tensors[
            "serve_tensors: empty batch"]
        names = " ".join(tensors)
        for kind in ("wrong rank", "wrong dtype", "wrong dimension", "NaN"):
            assert kind in names, names
    media_tensors = {c["case"]: c["error"] for c in saved_report(
        media.path)["checks"]["malformed"]["cases"]}
    assert "ids must lie in [0, " in media_tensors[
        "serve_tensors: text: id past the vocabulary"]
    assert "holds NaN or infinite values" in media_tensors[
        "serve_tensors: image: NaN"]
    assert "values must be 0 (absent) or 1" in media_tensors[
        "serve_tensors: presence: a value other than 0 or 1"]


# -- the op audit -------------------------------------------------------------

class PyFuncImagePreprocessor(ImagePreprocessor):
    """An image preprocessor that sneaks a tf.py_function into parse."""

    def parse(self, raw, training=False):
        out = super().parse(raw, training)
        image = tf.py_function(lambda x: x, [out[self.name]], tf.float32)
        image.set_shape(out[self.name].shape)
        return dict(out, **{self.name: image})


def tiny_image_model():
    spec = {"inputs": {"image": {"modality": "image", "shape": [8, 8, 1],
                                 "tower": {"encoder": "cnn", "dim": 4,
                                           "filters": [2]}}},
            "heads": {"label": {"type": "classification",
                                "num_classes": 2}}}
    return keras_mm.build_model(spec)


def test_op_audit_fails_on_py_function(tmp_path):
    model = tiny_image_model()
    pre = {"image": PyFuncImagePreprocessor("image", size=(8, 8),
                                            channels=1)}
    rng = np.random.default_rng(4)
    with pytest.raises(ExportError, match="failed verification") as info:
        export(model, pre, "pyfunc", base_dir=tmp_path,
               golden_examples=[{"image": random_png(rng)}])
    report = json.loads(str(info.value).split("\n", 1)[1])
    assert not report["ok"]
    assert report["checks"]["op_audit"]["forbidden"] == ["EagerPyFunc"]
    assert not report["checks"]["op_audit"]["ok"]
    # Nothing was published, nothing left behind.
    assert os.listdir(tmp_path / "pyfunc") == []


def test_op_audit_flags_unknown_custom_ops(media, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    copy = tmp_path / "copy"
    shutil.copytree(media.path, copy)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((copy / "saved_model.pb").read_bytes())
    _, forbidden, unknown, _ = verify_savedmodel.audit_ops(tf, str(copy))
    assert (forbidden, unknown) == ([], [])
    node = next(n for f in proto.meta_graphs[0].graph_def.library.function
                for n in f.node_def if n.op == "Softmax")
    node.op = "IoDecodeMp3"        # a tensorflow-io op TF Serving lacks
    (copy / "saved_model.pb").write_bytes(proto.SerializeToString())
    _, forbidden, unknown, _ = verify_savedmodel.audit_ops(tf, str(copy))
    assert (forbidden, unknown) == ([], ["IoDecodeMp3"])


# -- atomic versions ----------------------------------------------------------

ATOMIC_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    import numpy as np
    import test_export as t
    model = t.tiny_image_model()
    pre = {{"image": t.ImagePreprocessor("image", size=(8, 8), channels=1)}}
    rng = np.random.default_rng(5)
    t.export(model, pre, "atomic", base_dir={base!r},
             golden_examples=[{{"image": t.random_png(rng)}}])
    print("EXPORT FINISHED", flush=True)
""")


def test_killed_export_leaves_no_version_and_next_export_succeeds(tmp_path):
    base = tmp_path / "models"
    code = ATOMIC_CHILD.format(repo=REPO, tests=os.path.join(REPO, "tests"),
                               base=str(base))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.Popen([sys.executable, "-c", code], env=env,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL,
                             start_new_session=True)
    model_dir = base / "atomic"
    temp = None
    deadline = time.time() + 240
    try:
        # Kill it (and its verifier) once the SavedModel is written into
        # the temp folder: midway, before verification and publishing.
        while time.time() < deadline and child.poll() is None:
            if model_dir.is_dir():
                temps = [p for p in model_dir.iterdir()
                         if p.name.startswith(".tmp-")]
                if temps and (temps[0] / "saved_model.pb").exists():
                    temp = temps[0]
                    break
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert temp is not None, "the export finished or failed before the kill"
    assert child.returncode == -signal.SIGKILL
    # A TF Serving instance polling the folder sees no version.
    entries = os.listdir(model_dir)
    assert not [e for e in entries if e.isdigit()], entries
    assert temp.name in entries        # the dead export's leftovers

    model = tiny_image_model()
    pre = {"image": ImagePreprocessor("image", size=(8, 8), channels=1)}
    rows = [{"image": random_png(np.random.default_rng(6))}]
    path = export(model, pre, "atomic", base_dir=base, golden_examples=rows,
                  verify=False)
    assert path == str(model_dir / "1")
    assert not [e for e in os.listdir(model_dir) if e.startswith(".tmp-")]
    assert next_version(str(model_dir)) == 2
    with pytest.raises(ExportError, match="already exists"):
        export(model, pre, "atomic", base_dir=base, golden_examples=rows,
               version=1, verify=False)
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](
        image=tf.constant([rows[0]["image"]]))
    assert out["label_probabilities"].shape == (1, 2)


def test_running_exports_temp_folder_holds_its_version(tmp_path):
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / f".tmp-2-{os.getpid()}").mkdir()       # alive: us
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (model_dir / f".tmp-7-{dead.pid}").mkdir()          # dead writer
    assert next_version(str(model_dir)) == 3
    from keras_mm.serving import atomic
    assert atomic.remove_stale_temp_dirs(str(model_dir)) == [
        f".tmp-7-{dead.pid}"]
    assert sorted(os.listdir(model_dir)) == sorted(
        ["1", f".tmp-2-{os.getpid()}"])


def test_export_argument_errors(media, tmp_path):
    rows = media.rows[:1]
    with pytest.raises(ExportError, match="lacks inputs \\['text'\\]"):
        export(media.model, media.pre, "x", base_dir=tmp_path,
               golden_examples={"image": [rows[0]["image"]],
                                "audio": [rows[0]["audio"]]})
    with pytest.raises(ExportError, match="model input 'text' has no "
                                          "preprocessor"):
        export(media.model, {k: media.pre[k] for k in ("image", "audio")},
               "x", base_dir=tmp_path, golden_examples=rows)
    wrong = dict(media.pre, image=ImagePreprocessor("image", size=(9, 8),
                                                    channels=1))
    with pytest.raises(ExportError, match="model input 'image' has shape"):
        export(media.model, wrong, "x", base_dir=tmp_path,
               golden_examples=rows)
    with pytest.raises(ExportError, match="plain folder name"):
        export(media.model, media.pre, "../x", base_dir=tmp_path,
               golden_examples=rows)
    with pytest.raises(ExportError, match="cannot be preprocessed"):
        export(media.model, media.pre, "x", base_dir=tmp_path,
               golden_examples=[dict(rows[0], image=b"not an image")])
    assert not (tmp_path / "x").exists() or not [
        e for e in os.listdir(tmp_path / "x") if e.isdigit()]


# -- predict and clients ------------------------------------------------------

def test_predict_with_a_subset_of_inputs(media, seq, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(media.rows[0]["image"])
    result = predict(media.path, {"image": str(image)})
    want = media.keras([{"image": media.rows[0]["image"]}])
    assert result["label_class_name"] in CLASSES
    assert result["label_class_name"] == want["label_class_name"][0].decode()
    np.testing.assert_allclose(result["label_probabilities"],
                               want["label_probabilities"][0], atol=ATOL)
    audio = _write(tmp_path / "b.wav", media.rows[1]["audio"])
    result = predict(media.path, {"text": "a red cat", "audio": audio},
                     loaded=media.loaded)
    want = media.keras([{"text": "a red cat",
                         "audio": media.rows[1]["audio"]}])
    np.testing.assert_allclose(result["tags_scores"], want["tags_scores"][0],
                               atol=ATOL)

    frames = [_write(tmp_path / f"f{i}.png", f)
              for i, f in enumerate(seq.frames[:3])]
    series = tmp_path / "imu.npy"
    np.save(series, seq.rows[0]["imu"])
    values = {"clip": frames, "imu": str(series), "age": 31.0,
              "height": "1.7", "city": "rome"}
    result = predict(seq.path, values, loaded=seq.loaded)
    want = seq.keras([{"clip": seq.frames[:3], "imu": seq.rows[0]["imu"],
                       "age": 31.0, "height": 1.7, "city": "rome"}])
    np.testing.assert_allclose(result["score_value"],
                               want["score_value"][0], atol=ATOL)
    # Without a presence mask a left-out input is refused, by name.
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="input `imu` is empty"):
        predict(seq.path, {k: v for k, v in values.items() if k != "imu"},
                loaded=seq.loaded)
    with pytest.raises(ExportError, match="unknown input"):
        predict(media.path, {"video": "x.gif"}, loaded=media.loaded)
    with pytest.raises(ExportError, match="does not exist"):
        predict(media.path, {"image": str(tmp_path / "missing.png")},
                loaded=media.loaded)


def test_predict_flags_name_the_modality_not_the_input(seq, tmp_path,
                                                       capsys):
    """`keras-mm predict --sensor F` goes to the sensor input whatever its
    name (`imu` here), `--video` to `clip`: the same prediction as the
    inputs given by name."""
    from keras_mm.cli.main import main

    frames = [_write(tmp_path / f"f{i}.png", f)
              for i, f in enumerate(seq.frames[:3])]
    series = tmp_path / "imu.npy"
    np.save(series, seq.rows[0]["imu"])
    table = {"age": "31.0", "height": "1.7", "city": "rome"}
    want = predict(seq.path, dict(table, clip=frames, imu=str(series)),
                   loaded=seq.loaded)
    assert main(["predict", seq.path, "--sensor", str(series),
                 "--video", *frames] +
                [f"--input={k}={v}" for k, v in table.items()]) == 0
    got = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(got["score_value"], want["score_value"],
                               atol=ATOL)
    with pytest.raises(ExportError, match="no audio input; its inputs are "
                                          r".*imu \(sensor\)"):
        predict(seq.path, table, modalities={"audio": "a.wav"},
                loaded=seq.loaded)
    with pytest.raises(ExportError, match="'imu' is given twice"):
        predict(seq.path, {"imu": str(series)},
                modalities={"sensor": str(series)}, loaded=seq.loaded)


def test_a_modality_flag_with_several_such_inputs_asks_for_the_name():
    from keras_mm.serving.predict import inputs_of_modalities

    metadata = {"inputs": {"front": {"modality": "image"},
                           "side": {"modality": "image"},
                           "caption": {"modality": "text"}}}
    assert inputs_of_modalities({"text": "hi"}, metadata) == {"caption": "hi"}
    with pytest.raises(ExportError, match="2 image inputs \\(front, side\\); "
                                          "say which with --input front="):
        inputs_of_modalities({"image": "a.png"}, metadata)


def _write(path, data):
    path.write_bytes(data)
    return str(path)


def test_rest_and_grpc_requests_round_trip_into_the_signature(seq):
    """The client's bodies and PredictRequests, decoded the way TF Serving
    documents it (tests/serving_emulation.py, not keras_mm code), call the
    signature exactly like the arrays themselves: frames and the city as
    bytes, series and cells as floats, a batch of 3 with ragged series and
    frame lists and a missing cell (NaN)."""
    rows = [dict(seq.rows[i]) for i in range(3)]
    rows[1]["imu"] = rows[1]["imu"][:4]          # ragged: padded with NaN
    want = seq.call(rows)
    specs = client.input_specs(seq.path)
    for columnar, layout in ((False, "row"), (True, "columnar")):
        text = json.dumps(client.rest_request(rows, specs,
                                              columnar=columnar))
        name, got_layout, arrays = tfs.decode_rest_request(text, seq.specs)
        assert (name, got_layout) == ("serving_default", layout)
        assert arrays["clip"].dtype == object and \
            arrays["clip"].shape[0] == 3
        assert np.isnan(arrays["age"][1]) and np.isnan(
            arrays["imu"][1, 4:]).all()
        got = {k: v.numpy() for k, v in seq.serve(**{
            k: tf.constant(v) for k, v in arrays.items()}).items()}
        assert_outputs_close(got, want, atol=0)
    request = client.grpc_request("seq", rows, input_specs=specs)
    wire = predict_pb2.PredictRequest.FromString(
        request.SerializeToString())
    assert (wire.model_spec.name, wire.model_spec.signature_name) == (
        "seq", "serving_default")
    arrays = tfs.decode_grpc_request(wire, seq.specs)
    got = {k: v.numpy() for k, v in seq.serve(**{
        k: tf.constant(v) for k, v in arrays.items()}).items()}
    assert_outputs_close(got, want, atol=0)
    response = tfs.grpc_response(got, "seq")
    parsed = client.parse_grpc_response(predict_pb2.PredictResponse
                                        .FromString(
                                            response.SerializeToString()))
    assert_outputs_close(parsed, want, atol=0)


def test_clients_talk_to_servers_over_the_network(media):
    """REST (row and columnar) and gRPC clients against small in-process
    servers that decode requests as TF Serving documents it and run the
    SavedModel's signature."""
    rows = media.rows[:2]
    want = media.call(rows)
    specs = client.input_specs(media.path)
    with tfs.rest_server(media.loaded.signatures, "media") as url:
        for columnar in (False, True):
            got = client.predict_rest(url, client.rest_request(
                rows, specs, columnar=columnar))
            # JSON strings come back as text.
            got["label_class_name"] = np.array(
                [s.encode() for s in got["label_class_name"]], dtype=object)
            assert_outputs_close(got, want)
        with pytest.raises(RuntimeError, match="HTTP 400.*missing "
                                               "\\['text'\\]"):
            client.predict_rest(url, client.rest_request(
                [{"image": rows[0]["image"], "audio": rows[0]["audio"]}]))
    with tfs.grpc_server(media.loaded.signatures, "media") as target:
        request = client.grpc_request("media", rows, input_specs=specs)
        got = client.predict_grpc(target, request)
    assert_outputs_close(got, want, atol=0)


def test_stack_raw_pads_frames_and_series_and_names_bad_values():
    frames = client.stack_raw([[b"a", b"b"], [], None, [b"c"]],
                              client.InputSpec("string", [None, None]), "v")
    assert frames.tolist() == [[b"a", b"b"], [b"", b""], [b"", b""],
                               [b"c", b""]]
    series = client.stack_raw([np.ones((2, 3)), np.zeros((0, 3)), None],
                              client.InputSpec("float32", [None, None, 3]),
                              "s")
    assert series.shape == (3, 2, 3)
    assert np.isnan(series[1]).all() and np.isnan(series[0]).sum() == 0
    cells = client.stack_raw(["2.5", "", None, 3],
                             client.InputSpec("float32", [None]), "age")
    np.testing.assert_array_equal(cells, [2.5, np.nan, np.nan, 3.0])
    assert client.stack_raw(["3", b"2", "x", None],
                            client.InputSpec("string", [None]),
                            "c").tolist() == [b"3", b"2", b"x", b""]
    with pytest.raises(ValueError, match="input 's': example 0 has shape"):
        client.stack_raw([np.ones((2, 4))],
                         client.InputSpec("float32", [None, None, 3]), "s")
    with pytest.raises(ValueError, match="'age'.*not a number"):
        client.stack_raw(["abc"], client.InputSpec("float32", [None]), "age")
    with pytest.raises(KeyError, match="unknown input"):
        client.batch_inputs([{"nope": 1}], {"age": client.InputSpec(
            "float32", [None])})


def test_verify_reports_a_folder_without_a_savedmodel(tmp_path):
    report = verify(tmp_path)
    assert not report["ok"]
    assert "no saved_model.pb" in report["error"]


def test_atomic_write_text_gives_readable_file_and_no_leftovers(tmp_path):
    from keras_mm.serving.atomic import atomic_write_text
    target = tmp_path / "sub" / "models.config"
    old = os.umask(0o022)
    try:
        atomic_write_text(str(target), "model_config_list {}\n")
    finally:
        os.umask(old)
    assert target.read_text() == "model_config_list {}\n"
    assert (target.stat().st_mode & 0o777) == 0o644   # not mkstemp's 0600
    assert sorted(p.name for p in target.parent.iterdir()) == \
        ["models.config"]
