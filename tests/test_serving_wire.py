"""The client's REST bodies and gRPC requests, read the way TF Serving
documents them, without a SavedModel (cheap).

The decoder (tests/serving_emulation.py) is written from TF Serving's REST
API page with json + base64 + NumPy; gRPC requests are real
`predict_pb2.PredictRequest`s decoded with `tf.make_ndarray`. The expected
arrays below are written out by hand, not computed with keras_mm.
"""

import base64
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

import serving_emulation as tfs
from keras_mm.serving import client

S = tf.TensorSpec
NAN = math.nan
# base64 of these bytes holds "+" and "/": the standard alphabet, which TF
# Serving decodes, not the URL-safe one.
BINARY = b"\xfb\xff\xbf\x89PNG\r\n\x1a\n\x00"
SPECS = {"image": S([None], tf.string), "clip": S([None, None], tf.string),
         "imu": S([None, None, 3], tf.float32), "age": S([None], tf.float32),
         "city": S([None], tf.string)}
ROWS = [
    {"image": BINARY, "clip": [b"f0", b"\xff\xfe"],
     "imu": [[1, 2, 3], [4, 5, 6]], "age": 31, "city": "oslo"},
    {"image": b"", "clip": [], "imu": np.zeros((0, 3)), "age": None,
     "city": "z\u00fcrich"},
    {"clip": [b"a", b"b", b"c"], "imu": [[7, 8, 9]], "age": "2.5",
     "city": ""},                                  # no image: sent empty
]


def objects(values):
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


EXPECTED = {
    "image": objects([BINARY, b"", b""]),
    "clip": np.array([[b"f0", b"\xff\xfe", b""], [b"", b"", b""],
                      [b"a", b"b", b"c"]], dtype=object),
    "imu": np.array([[[1, 2, 3], [4, 5, 6]],
                     [[NAN] * 3, [NAN] * 3],
                     [[7, 8, 9], [NAN] * 3]], dtype=np.float32),
    "age": np.array([31, NAN, 2.5], dtype=np.float32),
    "city": objects([b"oslo", "z\u00fcrich".encode("utf-8"), b""]),
}


def assert_arrays_equal(got, want):
    assert sorted(got) == sorted(want)
    for name in want:
        assert tfs.isnan_equal(got[name], want[name]), (
            name, got[name], want[name])


# -- the decoder itself, on the documentation's own examples ------------------

def test_decoder_reads_the_documented_row_and_columnar_examples():
    specs = {"tag": S([None], tf.string), "signal": S([None, 5], tf.int32),
             "sensor": S([None, 2, 2], tf.float32)}
    row = """{"instances": [
        {"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},
        {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]}
    ]}"""
    columnar = """{"inputs": {"tag": ["foo", "bar"],
        "signal": [[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]],
        "sensor": [[[1, 2], [3, 4]], [[4, 5], [6, 8]]]}}"""
    want = {"tag": objects([b"foo", b"bar"]),
            "signal": np.array([[1, 2, 3, 4, 5], [3, 4, 1, 2, 5]], np.int32),
            "sensor": np.array([[[1, 2], [3, 4]], [[4, 5], [6, 8]]],
                               np.float32)}
    for body, layout in ((row, "row"), (columnar, "columnar")):
        name, got_layout, arrays = tfs.decode_rest_request(body, specs)
        assert (name, got_layout) == ("serving_default", layout)
        assert_arrays_equal(arrays, want)
    # One named input: the values themselves; binary as {"b64": ...};
    # NaN / Infinity tokens for floats.
    _, _, arrays = tfs.decode_rest_request(
        '{"signature_name": "s", "instances": [{"b64": "aW1hZ2UgYnl0ZXM="},'
        ' "seaside"]}', {"image": S([None], tf.string)})
    assert arrays["image"].tolist() == [b"image bytes", b"seaside"]
    _, _, arrays = tfs.decode_rest_request(
        '{"inputs": [[1.0, -3.14, NaN, Infinity]]}',
        {"x": S([None, 4], tf.float32)})
    assert tfs.isnan_equal(arrays["x"], np.array(
        [[1.0, -3.14, NAN, math.inf]], np.float32))


@pytest.mark.parametrize("body, message", [
    ({"instances": [{"x": 1.0}], "inputs": {"x": [1.0]}}, "not both"),
    ({"instances": [{"x": 1.0}]}, r"missing \['s'\]"),
    ({"inputs": {"x": [1.0], "s": ["a"], "y": [2.0]}}, r"unknown \['y'\]"),
    ({"instances": [{"x": 1.0, "s": "a"}, {"x": 2.0}]}, "every instance"),
    ({"inputs": {"x": [[1.0], [2.0, 3.0]], "s": ["a", "b"]}}, "ragged"),
    ({"inputs": {"x": [1.0], "s": [3]}}, "not a string"),
    ({"inputs": {"x": ["1.5"], "s": ["a"]}}, "not a number"),
    ({"inputs": {"x": [1.0], "s": [{"b64": "-_8="}]}}, "invalid base64"),
    ({"inputs": {"x": [[1.0]], "s": ["a"]}}, "does not fit"),
    ({"instances": [1.0, 2.0]}, "several inputs"),
])
def test_decoder_refuses_what_tf_serving_refuses(body, message):
    specs = {"x": S([None], tf.float32), "s": S([None], tf.string)}
    with pytest.raises(tfs.RestError, match=message):
        tfs.decode_rest_request(json.dumps(body), specs)


# -- keras_mm's client against it ---------------------------------------------

@pytest.mark.parametrize("columnar", [False, True])
def test_rest_body_is_tf_serving_json(columnar):
    """Several inputs (binary and text strings, frame lists, float series
    and cells), a batch of 3, ragged and missing values: the body decodes,
    as TF Serving documents it, into exactly the padded arrays."""
    body = client.rest_request(ROWS, SPECS, signature_name="serving_default",
                               columnar=columnar)
    text = json.dumps(body)
    assert '"NaN"' not in text and "NaN" in text     # the token, not text
    raw = json.loads(text)
    if columnar:
        assert set(raw) == {"signature_name", "inputs"}
        assert {k: len(v) for k, v in raw["inputs"].items()} == \
            dict.fromkeys(SPECS, 3)
        image = raw["inputs"]["image"][0]
    else:
        assert set(raw) == {"signature_name", "instances"}
        assert [sorted(r) for r in raw["instances"]] == [sorted(SPECS)] * 3
        image = raw["instances"][0]["image"]
    assert image == {"b64": base64.b64encode(BINARY).decode("ascii")}
    assert "+" in image["b64"] and "/" in image["b64"]
    name, layout, arrays = tfs.decode_rest_request(text, SPECS)
    assert (name, layout) == ("serving_default",
                              "columnar" if columnar else "row")
    assert_arrays_equal(arrays, EXPECTED)


def test_grpc_request_is_a_predict_request_tf_make_ndarray_reads():
    request = client.grpc_request("demo", ROWS, version=7,
                                  input_specs=SPECS)
    wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert (wire.model_spec.name, wire.model_spec.signature_name,
            wire.model_spec.version.value) == ("demo", "serving_default", 7)
    assert {k: tf.as_dtype(v.dtype).name for k, v in wire.inputs.items()} \
        == {k: v.dtype.name for k, v in SPECS.items()}
    assert_arrays_equal(tfs.decode_grpc_request(wire, SPECS), EXPECTED)
    # The check is live: a float64 series (no specs to cast to) is refused
    # as TF Serving refuses a DT_DOUBLE for a DT_FLOAT input.
    loose = client.grpc_request("demo", dict(EXPECTED, imu=EXPECTED[
        "imu"].astype(np.float64)))
    with pytest.raises(ValueError, match="'imu': dtype float64"):
        tfs.decode_grpc_request(loose, SPECS)


@pytest.mark.parametrize("layout", ["row", "columnar"])
def test_parse_rest_response_reads_documented_responses(layout):
    outputs = {"label_probabilities": np.array([[0.25, 0.75], [1.0, 0.0]],
                                               np.float32),
               "label_class_name": objects([b"cat", b"dog"]),
               "thumb_bytes": objects([b"\x00\xff\x00", b"\xfb"])}
    text = tfs.encode_rest_response(outputs, layout)
    assert ("predictions" if layout == "row" else "outputs") in json.loads(
        text)
    got = client.parse_rest_response(text)
    np.testing.assert_array_equal(got["label_probabilities"],
                                  outputs["label_probabilities"])
    assert got["label_class_name"].tolist() == ["cat", "dog"]   # as text
    assert got["thumb_bytes"].dtype == object
    assert got["thumb_bytes"].tolist() == [b"\x00\xff\x00", b"\xfb"]
    single = client.parse_rest_response(tfs.encode_rest_response(
        {"score": np.array([0.5, 2.0], np.float32)}, layout))
    assert list(single) == ["output"]
    np.testing.assert_array_equal(single["output"], [0.5, 2.0])
    with pytest.raises(RuntimeError, match="TF Serving error: boom"):
        client.parse_rest_response('{"error": "boom"}')
