"""A small client for TF Serving: REST JSON and gRPC `PredictRequest`s.

Raw inputs are what the `serving_default` signature takes: encoded image
bytes, text, WAV bytes, lists of encoded frames, float arrays. Binary
values travel as `{"b64": ...}` in REST (TF Serving decodes them for
`DT_STRING` inputs) and as `DT_STRING` tensor protos in gRPC.

Example:

>>> request = rest_request([{"image": open("a.png", "rb").read(),
...                          "text": "a red square"}])
>>> # POST json.dumps(request) to
>>> # http://HOST:8501/v1/models/NAME:predict
"""

import base64
import os

import numpy as np


def read_raw_inputs(values):
    """Turns CLI-style values into raw inputs.

    Args:
        values: dict `{input name: value}`; a value that names an existing
            file is read as bytes (`.npy` and `.csv` files as float arrays);
            a list of file paths becomes a list of bytes (video frames);
            anything else is kept (text).
    """
    raw = {}
    for name, value in values.items():
        if isinstance(value, (list, tuple)):
            raw[name] = [_read_one(v) for v in value]
        else:
            raw[name] = _read_one(value)
    return raw


def _read_one(value):
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        path = os.fspath(value)
        if path.endswith(".npy"):
            return np.load(path).astype("float32")
        if path.endswith(".csv"):
            return np.loadtxt(path, delimiter=",", dtype="float32", ndmin=2)
        with open(path, "rb") as f:
            return f.read()
    return value


def _json_value(value):
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def rest_request(instances, signature_name="serving_default"):
    """Builds the TF Serving REST body (row format, `instances`)."""
    return {"signature_name": signature_name,
            "instances": [{k: _json_value(v) for k, v in row.items()}
                          for row in instances]}


def _from_json_value(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_from_json_value(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def rest_to_tensors(body, input_specs):
    """Decodes a REST body the way TF Serving does, into batched tensors.

    Args:
        body: the dict built by `rest_request`.
        input_specs: `{name: tf.TensorSpec}` of the signature.
    """
    import tensorflow as tf

    rows = body["instances"]
    tensors = {}
    for name, spec in input_specs.items():
        column = [_from_json_value(row[name]) for row in rows]
        tensors[name] = tf.constant(column, dtype=spec.dtype)
    return tensors


def batch_inputs(instances, input_specs):
    """Stacks rows of raw values into numpy arrays for `grpc_request`."""
    batch = {}
    for name, spec in input_specs.items():
        column = [row[name] for row in instances]
        if spec.dtype.name == "string":
            batch[name] = np.array(column, dtype=object)
        else:
            batch[name] = np.asarray(column, dtype=spec.dtype.name)
    return batch


def grpc_request(model_name, batch, signature_name="serving_default",
                 version=None):
    """Builds a gRPC `PredictRequest` from a dict of batched arrays."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in batch.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def grpc_to_tensors(request):
    """Decodes a `PredictRequest`'s inputs into tensors (as TF Serving)."""
    import tensorflow as tf

    return {name: tf.constant(tf.make_ndarray(proto))
            for name, proto in request.inputs.items()}
