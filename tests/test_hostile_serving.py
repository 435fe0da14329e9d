"""Hostile requests against an exported model (issue 13): the serving
signatures, the client builders and `keras-mm predict`.

One small export (image + text + table, gated fusion WITH a presence mask)
is loaded once per module. Each test sends what an adversarial probe sent
and checks that the answer is either right (equal to the answer of an
equivalent well-formed request) or refused with a readable
`InvalidArgumentError` naming the input. No TensorFlow or model is mocked.
"""

import base64
import io
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_mm
from keras_mm.cli.main import main
from keras_mm.data import ImagePreprocessor
from keras_mm.data import TabularPreprocessor
from keras_mm.data import TextPreprocessor
from keras_mm.errors import ExportError
from keras_mm.serving import client
from keras_mm.serving import export
from keras_mm.serving import predict
from keras_mm.serving.verify_savedmodel import error_summary

TEXTS = ["a red cat sat", "the blue dog ran", "a cat and a dog", "red dog"]
CITIES = ["oslo", "rome", "lima"]


def png_bytes(pixels):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_model():
    pre = {"image": ImagePreprocessor("image", size=(8, 8), channels=3),
           "text": TextPreprocessor("text", max_len=5, max_vocab_size=30,
                                    learn_params={"lower_thresh": 1}),
           "tab": TabularPreprocessor("tab", numeric=["age"],
                                      categorical=["city"])}
    pre["text"].adapt(TEXTS * 2)
    pre["tab"].adapt([{"age": 30.0, "city": "oslo"},
                      {"age": 50.0, "city": "rome"},
                      {"age": 40.0, "city": "lima"}])
    spec = {
        "name": "hostile",
        "inputs": {
            "image": {"modality": "image", "shape": [8, 8, 3],
                      "tower": {"encoder": "cnn", "dim": 8, "filters": [4]}},
            "text": {"modality": "text", "shape": [5],
                     "vocab_size": pre["text"].vocab_size,
                     "tower": {"encoder": "bag", "dim": 8,
                               "embedding_dim": 8}},
            "tab": {"modality": "tabular", "numeric": 1,
                    "categorical": pre["tab"].cardinalities,
                    "tower": {"dim": 8, "hidden_units": [8]}}},
        "fusion": {"type": "gated", "units": 8, "presence_mask": True},
        "heads": {"label": {"type": "classification", "num_classes": 3}}}
    return keras_mm.build_model(spec), pre


def make_rows(rng, n):
    return [{"image": png_bytes(rng.integers(0, 256, (8 + i, 9, 3))),
             "text": TEXTS[i % len(TEXTS)], "age": 30.0 + 5 * i,
             "city": CITIES[i % 3]} for i in range(n)]


class Served:
    def __init__(self, path, pre, rows):
        self.path = path
        self.pre = pre
        self.rows = rows
        self.loaded = tf.saved_model.load(path)
        self.signatures = self.loaded.signatures
        self.specs = self.signatures[
            "serving_default"].structured_input_signature[1]
        with open(f"{path}/assets.extra/keras_mm.json") as f:
            self.metadata = json.load(f)

    def raw(self, rows):
        return {k: tf.constant(v)
                for k, v in client.batch_inputs(rows, self.specs).items()}

    def tensors(self, rows):
        """The preprocessed model inputs of `rows` (as the pipeline gives
        them), keyed by the model input names."""
        raw = self.raw(rows)
        features = {}
        for p in self.pre.values():
            features.update(p(raw))
        names = self.signatures["serve_tensors"].structured_input_signature[1]
        features["presence"] = tf.stack(
            [features[f"{m}_present"] for m in self.metadata[
                "presence_order"]], 1)
        return {k: features[k] for k in names}

    def call(self, name, **inputs):
        return {k: v.numpy() for k, v in self.signatures[name](
            **inputs).items()}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model, pre = make_model()
    rows = make_rows(np.random.default_rng(0), 3)
    path = export(model, pre, "hostile", golden_examples=rows,
                  base_dir=tmp_path_factory.mktemp("models"), verify=False)
    return Served(path, pre, rows)


def refused(fn, **inputs):
    """The readable one-line summary of the InvalidArgumentError `fn`
    raises (a UnicodeDecodeError from TF's formatting fails the test)."""
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        fn(**inputs)
    return error_summary(info.value)


def assert_same(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        if want[key].dtype == object:
            assert got[key].tolist() == want[key].tolist(), key
        else:
            np.testing.assert_allclose(got[key], want[key], atol=1e-6,
                                       err_msg=key)


# -- serve_tensors ------------------------------------------------------------

def test_serve_tensors_answers_like_serving_default_and_checks_the_shape(
        served):
    good = served.tensors(served.rows)
    assert_same(served.call("serve_tensors", **good),
                served.call("serving_default", **served.raw(served.rows)))
    fn = served.signatures["serve_tensors"]
    big = dict(good, image=tf.image.resize(good["image"], [16, 16]))
    message = refused(fn, **big)
    assert "input `image`: expected shape [batch, 8, 8, 3]" in message
    assert "[3 16 16 3]" in message


def test_serve_tensors_refuses_token_ids_out_of_range(served):
    good = served.tensors(served.rows[:1])
    fn = served.signatures["serve_tensors"]
    vocab = served.pre["text"].vocab_size
    for bad in (-1, vocab):
        ids = good["text"].numpy().copy()
        ids[0, 0] = bad
        message = refused(fn, **dict(good, text=tf.constant(ids)))
        assert f"input `text`: ids must lie in [0, its vocabulary size " \
               f"{vocab})" in message, message
    # The table's category ids are checked against each column's size.
    cards = served.pre["tab"].cardinalities
    message = refused(fn, **dict(good, tab_categorical=tf.constant(
        [[cards[0]]], tf.int32)))
    assert f"input `tab_categorical`: ids must lie in [0, the column " \
           f"cardinalities {cards})" in message
    # The largest valid id is accepted.
    ids = good["text"].numpy().copy()
    ids[0, 0] = vocab - 1
    served.call("serve_tensors", **dict(good, text=tf.constant(ids)))


def test_serve_tensors_refuses_non_finite_values(served):
    good = served.tensors(served.rows[:2])
    fn = served.signatures["serve_tensors"]
    image = good["image"].numpy().copy()
    image[1, 2, 3, 0] = np.nan
    message = refused(fn, **dict(good, image=tf.constant(image)))
    assert "input `image`: holds NaN or infinite values" in message
    numeric = good["tab_numeric"].numpy().copy()
    numeric[0, 0] = np.inf
    message = refused(fn, **dict(good, tab_numeric=tf.constant(numeric)))
    assert "input `tab_numeric`: holds NaN or infinite" in message


def test_serve_tensors_refuses_all_absent_and_non_binary_presence(served):
    good = served.tensors(served.rows[:2])
    fn = served.signatures["serve_tensors"]
    presence = good["presence"].numpy().copy()
    presence[1] = 0.0
    message = refused(fn, **dict(good, presence=tf.constant(presence)))
    assert "input `presence`: every modality is absent" in message
    assert "[1]" in message and "image, text, tab" in message
    message = refused(fn, **dict(good, presence=tf.constant(
        [[0.5, 1.0, 1.0], [1.0, 1.0, 1.0]])))
    assert "input `presence`: values must be 0 (absent) or 1" in message
    # One present modality is enough, and equals serving_default with the
    # other inputs sent empty.
    only_text = [{"text": served.rows[0]["text"]}]
    got = served.call("serve_tensors", **served.tensors(only_text))
    assert_same(got, served.call("serving_default",
                                 **served.raw(only_text)))


def test_every_signature_says_empty_batch(served):
    raw = {k: v[:0] for k, v in served.raw(served.rows).items()}
    tensors = {k: v[:0] for k, v in served.tensors(served.rows).items()}
    cases = {"serving_default": raw, "serve_tensors": tensors,
             "serve_examples": {"examples": tf.zeros([0], tf.string)}}
    for name, inputs in cases.items():
        message = refused(served.signatures[name], **inputs)
        assert message.startswith(
            "assertion failed: [empty batch: send at least one example"), \
            (name, message)


# -- serve_examples -------------------------------------------------------------

def test_garbage_examples_get_a_readable_error(served):
    fn = served.signatures["serve_examples"]
    metadata = served.metadata
    examples = [base64.b64decode(e) for e in metadata["golden"]["examples"]]
    want = served.call("serving_default", **served.raw(served.rows))
    assert_same(served.call("serve_examples",
                            examples=tf.constant(examples)), want)
    garbage = b"\xff\xfe\x80 not an Example \xc3\x28"
    message = refused(fn, examples=tf.constant([examples[0], garbage,
                                                examples[2]]))
    assert "input `examples`: the values at these batch indices are not " \
           "serialized tf.train.Example protos:] [1]" in message
    assert "\ufffd" not in message
    # The model still answers.
    assert_same(served.call("serve_examples",
                            examples=tf.constant(examples)), want)


# -- client builders ------------------------------------------------------------

def test_client_refuses_numbers_and_nan_for_string_inputs():
    spec = client.InputSpec("string", [None])
    for value, kind in ((123, "int"), (math.nan, "float"), (2.0, "float"),
                        (True, "bool"), (np.float32("nan"), "float32")):
        with pytest.raises(TypeError, match=f"input 'city': example 1 is "
                                            f"a {kind}; this input takes "
                                            "bytes or text"):
            client.stack_raw(["oslo", value], spec, "city")
    with pytest.raises(TypeError, match="send '123' if you mean that text"):
        client.batch_inputs([{"city": 123}], {"city": spec})
    frames = client.InputSpec("string", [None, None])
    with pytest.raises(TypeError, match="input 'clip': example 0 is a "
                                        "float"):
        client.stack_raw([math.nan], frames, "clip")
    with pytest.raises(TypeError, match="input 'clip': example 0 is a int"):
        client.stack_raw([[b"\x89PNG", 7]], frames, "clip")
    # bytes, text and None (absent) still go.
    assert client.stack_raw([b"a", "b", None], spec, "c").tolist() == [
        b"a", b"b", b""]


def test_client_checks_the_exports_max_bytes(served):
    specs = client.input_specs(served.path)
    metadata = served.metadata
    limit = metadata["inputs"]["text"]["max_bytes"]
    assert specs["text"].max_bytes == limit
    row = dict(served.rows[0], text="x" * (limit + 1))
    with pytest.raises(ValueError, match=f"input 'text': example 0 is "
                                         f"{limit + 1} bytes; this export "
                                         f"accepts at most {limit}"):
        client.rest_request([row], specs)
    with pytest.raises(ValueError, match="at most"):
        client.batch_inputs([row], specs)
    # At the limit it is sent.
    body = client.rest_request([dict(row, text="x" * limit)], specs)
    assert len(body["instances"]) == 1


# -- keras-mm predict ------------------------------------------------------------

def test_predict_text_is_text_even_when_a_file_has_that_name(
        served, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cat").write_text("the blue dog ran the blue dog ran")
    got = predict(served.path, {"text": "cat"}, loaded=served.loaded)
    want = served.call("serving_default", **served.raw([{"text": "cat"}]))
    np.testing.assert_allclose(got["label_probabilities"],
                               want["label_probabilities"][0], atol=1e-6)
    other = served.call("serving_default", **served.raw(
        [{"text": "the blue dog ran the blue dog ran"}]))
    assert np.abs(other["label_probabilities"][0]
                  - want["label_probabilities"][0]).max() > 1e-6
    # A table cell is a value too.
    (tmp_path / "rome").write_text("lima")
    got = predict(served.path, {"city": "rome"}, loaded=served.loaded)
    want = served.call("serving_default", **served.raw([{"city": "rome"}]))
    np.testing.assert_allclose(got["label_probabilities"],
                               want["label_probabilities"][0], atol=1e-6)


def test_cli_predict_text_file(served, tmp_path, capsys):
    text = tmp_path / "caption.txt"
    text.write_text("a red cat sat", encoding="utf-8")
    assert main(["predict", served.path, "--text-file", str(text)]) == 0
    got = json.loads(capsys.readouterr().out)
    want = predict(served.path, {"text": "a red cat sat"},
                   loaded=served.loaded)
    assert got["label_class_id"] == want["label_class_id"]
    np.testing.assert_allclose(got["label_probabilities"],
                               want["label_probabilities"], atol=1e-6)
    text.write_bytes(b"\xff\xfe bad")
    assert main(["predict", served.path, "--text-file", str(text)]) == 1
    err = capsys.readouterr().err
    assert f"--text-file {text}: not UTF-8 text" in err


def test_cli_predict_errors_are_one_line_with_input_and_file(
        served, tmp_path, capsys):
    image = tmp_path / "broken.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n\xff\x00 this is not an image")
    assert main(["predict", served.path, "--image", str(image)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    print(err[0])
    assert "Graph execution error" not in err[0]
    assert f"image={image}" in err[0]
    assert err[0].startswith(f"keras-mm predict: error: {served.path}: the "
                             "model refused the request")
    # An oversized value is refused on the client side, naming the file.
    big = tmp_path / "big.png"
    metadata = served.metadata
    big.write_bytes(b"\x89PNG" + b"\x00" * metadata["inputs"]["image"][
        "max_bytes"])
    with pytest.raises(ExportError, match=f"{big}: input 'image': example "
                                          "0 is .* bytes; this export "
                                          "accepts at most"):
        predict(served.path, {"image": str(big)}, loaded=served.loaded)
