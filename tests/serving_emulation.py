"""TF Serving's side of the wire, for the tests, written from its documents.

Nothing here imports keras_mm: a mistake in `keras_mm.serving.client`
cannot cancel out against a matching mistake in the "server".

REST follows TF Serving's RESTful API page (tensorflow_serving/g3doc/
api_rest.md, "Predict API", "JSON mapping", "Encoding binary values",
"JSON conformance"):
- the body holds an optional `"signature_name"` and either `"instances"`
  (row format) or `"inputs"` (columnar format), never both;
- row format: a list with one item per example; with several named inputs
  each item is an object `{input: value}`, all with the same inputs, which
  share their 0-th dimension (the number of items);
- columnar format: an object `{input: tensor}` in natural nested form (or
  the tensor itself where the signature has one input);
- `DT_STRING` values are JSON strings (their UTF-8 bytes) or binary
  `{"b64": <base64>}` objects; float values are numbers or the `NaN`,
  `Infinity`, `-Infinity` tokens; integers are numbers; bools true/false;
- responses: `{"predictions": ...}` for row requests (a list of objects,
  or of values when there is one output), `{"outputs": ...}` for columnar
  ones; string outputs named `*_bytes` go as `{"b64": ...}`.

gRPC uses the real `tensorflow_serving.apis.predict_pb2` messages and
decodes each `TensorProto` with `tf.make_ndarray`.
"""

import base64
import binascii
import contextlib
import http.server
import json
import threading
from concurrent import futures

import numpy as np


class RestError(ValueError):
    """What TF Serving answers with HTTP 400 and `{"error": message}`."""


def _spec_parts(spec):
    """(dtype name, shape list with None) of a `tf.TensorSpec`-like spec."""
    dtype = getattr(spec.dtype, "name", spec.dtype)
    shape = spec.shape.as_list() if hasattr(spec.shape, "as_list") \
        else list(spec.shape)
    return str(dtype), shape


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _leaf(value, dtype, where):
    if dtype == "string":
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_b64(value):
            if not isinstance(value["b64"], str):
                raise RestError(f"{where}: the b64 value is not a string")
            try:
                return base64.b64decode(value["b64"], validate=True)
            except binascii.Error as e:
                raise RestError(f"{where}: invalid base64: {e}") from None
        raise RestError(f"{where}: {value!r} is not a string or a "
                        "{\"b64\": ...} object (DT_STRING)")
    if dtype == "bool":
        if isinstance(value, bool):
            return value
        raise RestError(f"{where}: {value!r} is not true/false")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RestError(f"{where}: {value!r} is not a number ({dtype})")
    if dtype.startswith(("int", "uint")):
        if isinstance(value, float):
            raise RestError(f"{where}: {value!r} is not an integer")
        return value
    return float(value)


def _tensor(value, dtype, where):
    """A nested JSON list -> a NumPy array; ragged lists are refused."""
    flat = []

    def walk(v, depth, path):
        if isinstance(v, list):
            shapes = [walk(x, depth + 1, f"{path}[{i}]")
                      for i, x in enumerate(v)]
            if any(s != shapes[0] for s in shapes):
                raise RestError(f"{where}: ragged list at {path or 'top'}:"
                                f" inner shapes {shapes}")
            return [len(v)] + (shapes[0] if shapes else [])
        flat.append(_leaf(v, dtype, f"{where}{path}"))
        return []

    shape = walk(value, 0, "")
    if dtype == "string":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.asarray(flat, dtype=dtype).reshape(shape)


def decode_rest_request(body, signature_inputs):
    """Decodes a `:predict` body as TF Serving documents it.

    Args:
        body: the JSON text (str or bytes) that went over the wire.
        signature_inputs: `{name: spec}` of the called signature (specs
            with `.dtype` and `.shape`, e.g. `tf.TensorSpec`).

    Returns:
        `(signature_name, "row" | "columnar", {name: numpy array})`; string
        inputs are `object` arrays of bytes.

    Raises:
        RestError: for anything TF Serving would refuse.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    request = json.loads(body)       # accepts NaN / Infinity, as TF Serving
    if not isinstance(request, dict):
        raise RestError("the body must be a JSON object")
    unknown = set(request) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise RestError(f"unknown keys in the body: {sorted(unknown)}")
    if ("instances" in request) == ("inputs" in request):
        raise RestError("give either 'instances' or 'inputs', not both "
                        "and not neither")
    specs = {k: _spec_parts(v) for k, v in signature_inputs.items()}
    signature_name = request.get("signature_name", "serving_default")
    if "instances" in request:
        layout = "row"
        rows = request["instances"]
        if not isinstance(rows, list) or not rows:
            raise RestError("'instances' must be a non-empty list")
        named = isinstance(rows[0], dict) and not _is_b64(rows[0])
        if named:
            keys = set(rows[0])
            for i, row in enumerate(rows):
                if not isinstance(row, dict) or set(row) != keys:
                    raise RestError(
                        f"instances[{i}] has inputs "
                        f"{sorted(row) if isinstance(row, dict) else row!r}"
                        f"; every instance must have {sorted(keys)}")
            columns = {k: [row[k] for row in rows] for k in keys}
        elif len(specs) == 1:
            columns = {next(iter(specs)): rows}
        else:
            raise RestError("the signature has several inputs: each "
                            "instance must be an object {input: value}")
    else:
        layout = "columnar"
        inputs = request["inputs"]
        if isinstance(inputs, dict) and not _is_b64(inputs):
            columns = dict(inputs)
        elif len(specs) == 1:
            columns = {next(iter(specs)): inputs}
        else:
            raise RestError("the signature has several inputs: 'inputs' "
                            "must be an object {input: tensor}")
    missing = sorted(set(specs) - set(columns))
    extra = sorted(set(columns) - set(specs))
    if missing or extra:
        raise RestError(f"inputs do not match the signature: missing "
                        f"{missing}, unknown {extra}")
    arrays = {}
    for name, (dtype, shape) in specs.items():
        array = _tensor(columns[name], dtype, f"input {name!r}")
        if len(array.shape) != len(shape) or any(
                want is not None and want != got
                for want, got in zip(shape, array.shape)):
            raise RestError(f"input {name!r}: shape {list(array.shape)} "
                            f"does not fit the signature's {shape}")
        arrays[name] = array
    return signature_name, layout, arrays


def _json_output(array, name):
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind == "S":
        def text(v):
            if isinstance(v, list):
                return [text(x) for x in v]
            v = bytes(v)
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(v).decode("ascii")}
            return v.decode("utf-8")
        return text(array.tolist())
    return array.tolist()


def encode_rest_response(outputs, layout):
    """The documented response for `{output: array}` to a `layout`
    ("row" / "columnar") request, as JSON text (NaN as a token)."""
    outputs = {k: np.asarray(getattr(v, "numpy", lambda v=v: v)())
               for k, v in outputs.items()}
    values = {k: _json_output(v, k) for k, v in outputs.items()}
    if layout == "columnar":
        body = {"outputs": next(iter(values.values())) if len(values) == 1
                else values}
    else:
        n = {len(v) for v in values.values()}
        assert len(n) == 1, f"outputs of different batch sizes: {n}"
        (n,) = n
        if len(values) == 1:
            body = {"predictions": next(iter(values.values()))}
        else:
            body = {"predictions": [{k: v[i] for k, v in values.items()}
                                    for i in range(n)]}
    return json.dumps(body)


def decode_grpc_request(request, signature_inputs):
    """`{name: numpy array}` of a real `PredictRequest` (`tf.make_ndarray`),
    refusing inputs that differ from the signature in name, dtype or
    shape, as TF Serving does."""
    import tensorflow as tf

    specs = {k: _spec_parts(v) for k, v in signature_inputs.items()}
    if set(request.inputs) != set(specs):
        raise ValueError(f"inputs {sorted(request.inputs)} do not match the"
                         f" signature's {sorted(specs)}")
    arrays = {}
    for name, (dtype, shape) in specs.items():
        proto = request.inputs[name]
        if proto.dtype != tf.as_dtype(dtype).as_datatype_enum:
            raise ValueError(f"input {name!r}: dtype "
                             f"{tf.as_dtype(proto.dtype).name}, the "
                             f"signature takes {dtype}")
        array = tf.make_ndarray(proto)
        if array.ndim != len(shape) or any(
                want is not None and want != got
                for want, got in zip(shape, array.shape)):
            raise ValueError(f"input {name!r}: shape {list(array.shape)} "
                             f"does not fit the signature's {shape}")
        arrays[name] = array
    return arrays


def grpc_response(outputs, model_name=None):
    """A real `PredictResponse` holding `{output: tensor or array}`."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    if model_name:
        response.model_spec.name = model_name
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(
            np.asarray(getattr(value, "numpy", lambda: value)())))
    return response


def _call(signature, arrays):
    import tensorflow as tf

    return signature(**{k: tf.constant(v) for k, v in arrays.items()})


@contextlib.contextmanager
def rest_server(signatures, model_name):
    """An HTTP server on 127.0.0.1 answering
    `POST /v1/models/<model_name>:predict` with `signatures[name]`; yields
    the `:predict` URL. Errors answer 400 `{"error": ...}`."""
    inputs = {name: fn.structured_input_signature[1]
              for name, fn in signatures.items()}
    path = f"/v1/models/{model_name}:predict"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            data = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                if self.path != path:
                    raise RestError(f"no model at {self.path}")
                name = json.loads(data).get("signature_name",
                                            "serving_default")
                if name not in signatures:
                    raise RestError(f"no signature {name!r}")
                _, layout, arrays = decode_rest_request(data, inputs[name])
                out = encode_rest_response(
                    _call(signatures[name], arrays), layout)
                status = 200
            except Exception as e:     # TF Serving: 400 {"error": ...}
                out, status = json.dumps({"error": str(e)}), 400
            payload = out.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def grpc_server(signatures, model_name):
    """A gRPC `PredictionService` on 127.0.0.1 running `signatures`;
    yields its `host:port`."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            name = request.model_spec.signature_name or "serving_default"
            if request.model_spec.name != model_name or \
                    name not in signatures:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"{request.model_spec.name}/{name}")
            try:
                arrays = decode_grpc_request(
                    request, signatures[name].structured_input_signature[1])
            except ValueError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            return grpc_response(_call(signatures[name], arrays),
                                 model_name)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def isnan_equal(a, b):
    """Exact equality of two arrays, NaN == NaN (float) or bytes (object)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return a.tolist() == b.tolist()

