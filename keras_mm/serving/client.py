"""A small client for TF Serving: REST JSON and gRPC `PredictRequest`s.

Only the client's side of the wire lives here: building request bodies
and `PredictRequest`s, sending them, and reading the responses. (The
tests decode the requests the way TF Serving documents it, with their own
code, so a mistake here cannot cancel out against a matching "server".)

Raw inputs are what the `serving_default` signature of a keras_mm export
takes: encoded image bytes, text, WAV bytes, lists of encoded frames (or
GIF bytes), float `[T, C]` series, table cells. Binary values travel as
`{"b64": ...}` in REST (TF Serving decodes them for `DT_STRING` inputs) and
as `DT_STRING` tensor protos in gRPC.

Rows of different lengths are padded the way the preprocessors expect:
frame lists with empty strings (dropped by `VideoPreprocessor`), series
with NaN steps (reported missing by `SensorPreprocessor`; REST sends them
as the `NaN` token, which TF Serving's JSON accepts). An input left out of
a row is sent empty (`b""`, NaN), which marks that modality absent where
the model was trained with a presence mask.

Example:

>>> specs = input_specs("saved_models/demo/1")          # doctest: +SKIP
>>> body = rest_request([{"image": open("a.png", "rb").read(),
...                       "text": "a red square"}], specs)  # doctest: +SKIP
>>> # POST json.dumps(body) to http://HOST:8501/v1/models/demo:predict
>>> request = grpc_request("demo", batch_inputs(rows, specs))  # doctest: +SKIP
>>> # PredictionServiceStub(channel).Predict(request, timeout=10)
"""

import base64
import json
import math
import os

import numpy as np

SPEC_FILE = os.path.join("assets.extra", "keras_mm.json")


class InputSpec:
    """dtype name, shape (`None` = any) and, for string inputs, the largest
    accepted value in bytes (`max_bytes`, None = unchecked) of one signature
    input."""

    def __init__(self, dtype, shape, max_bytes=None):
        self.dtype = str(getattr(dtype, "name", dtype))
        self.shape = [None if d is None or d < 0 else int(d)
                      for d in (shape.as_list() if hasattr(shape, "as_list")
                                else shape)]
        self.max_bytes = None if max_bytes is None else int(max_bytes)

    @classmethod
    def of(cls, spec):
        """From a `tf.TensorSpec`, an `InputSpec` or `{"dtype", "shape"}`."""
        if isinstance(spec, InputSpec):
            return spec
        if isinstance(spec, dict):
            return cls(spec["dtype"], spec["shape"], spec.get("max_bytes"))
        return cls(spec.dtype, spec.shape)

    @property
    def is_string(self):
        return self.dtype == "string"

    def __repr__(self):
        extra = "" if self.max_bytes is None else \
            f", max_bytes={self.max_bytes}"
        return f"InputSpec({self.dtype!r}, {self.shape}{extra})"


def input_specs(path):
    """`{input: InputSpec}` of an export's `serving_default`, read from its
    `assets.extra/keras_mm.json` (no TensorFlow needed), with the
    `max_bytes` the export accepts per string input."""
    with open(os.path.join(os.fspath(path), SPEC_FILE)) as f:
        metadata = json.load(f)
    return {k: InputSpec(v["dtype"], v["shape"], v.get("max_bytes"))
            for k, v in metadata["inputs"].items()}


# -- raw values ---------------------------------------------------------------

def read_raw_inputs(values, input_specs=None, literal=()):
    """Turns CLI-style values into raw inputs.

    Args:
        values: dict `{input name: value}`; a value that names an existing
            file is read: as bytes for string inputs, as a float array for
            float inputs (`.npy` with NumPy, `.csv` as numbers, a header
            line allowed); a list of file paths becomes a list of bytes
            (video frames); anything else is kept (text, numbers, arrays).
        input_specs: `{input: spec}`; without it `.npy` / `.csv` files are
            read as arrays and other files as bytes.
        literal: names of inputs whose values are kept as they are, never
            read from a file of that name (text, table cells).
    """
    specs = {k: InputSpec.of(v) for k, v in (input_specs or {}).items()}
    raw = {}
    for name, value in values.items():
        if name in literal:
            raw[name] = value
            continue
        spec = specs.get(name)
        as_bytes = None if spec is None else spec.is_string
        if isinstance(value, (list, tuple)):
            raw[name] = [_read_one(v, as_bytes) for v in value]
        else:
            raw[name] = _read_one(value, as_bytes)
    return raw


def _read_one(value, as_bytes=None):
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        path = os.fspath(value)
        if not as_bytes:
            if path.endswith(".npy"):
                return np.load(path).astype("float32")
            if path.endswith(".csv") or as_bytes is False:
                return _read_csv_floats(path)
        with open(path, "rb") as f:
            return f.read()
    return value


def _read_csv_floats(path):
    rows = []
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().split(",")]
            if not line.strip():
                continue
            try:
                rows.append([float(c) if c else math.nan for c in cells])
            except ValueError:
                if rows:  # a header is only allowed on the first line
                    raise ValueError(
                        f"{path}: row {len(rows) + 1} is not numeric: "
                        f"{line.strip()!r}") from None
    return np.asarray(rows, dtype="float32").reshape(len(rows), -1)


def _as_bytes(value, name, max_bytes=None, index=None):
    """bytes / text (None = empty) -> bytes; anything else is refused: a
    number is not silently turned into its digits, nor NaN into an absent
    value."""
    where = f"input {name!r}" + ("" if index is None
                                 else f": example {index}")
    if value is None:
        data = b""
    elif isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
        data = bytes(value)
    elif isinstance(value, (str, np.str_)):
        data = str(value).encode("utf-8")
    else:
        kind = type(value).__name__
        hint = f" (send {str(value)!r} if you mean that text)" if isinstance(
            value, (bool, int, float, np.generic)) else ""
        raise TypeError(f"{where} is a {kind}; this input takes bytes or "
                        f"text{hint}, or None for an absent value")
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"{where} is {len(data)} bytes; this export "
                         f"accepts at most {max_bytes} bytes per value "
                         "(max_bytes): send a smaller file")
    return data


def _as_float(value, name):
    if value is None:
        return math.nan
    if isinstance(value, (bytes, str, np.bytes_, np.str_)):
        text = value.decode() if isinstance(value, (bytes, np.bytes_)) \
            else str(value)
        text = text.strip()
        if not text:
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"input {name!r}: {value!r} is not a number")\
                from None
    return float(value)


def stack_raw(values, spec, name="input"):
    """Stacks a list of per-example raw values into one batch array.

    Args:
        values: one raw value per example; None (or a missing value) is
            sent empty.
        spec: the signature input's spec (`tf.TensorSpec`, `InputSpec`).
        name: input name, for error messages.

    Returns:
        A NumPy array: `object` (bytes) for string inputs, else the spec's
        dtype. String `[B, T]` inputs (video frames) are padded with `b""`;
        float `[B, T, C]` inputs (series) with NaN steps.
    """
    spec = InputSpec.of(spec)
    rank = len(spec.shape)
    values = list(values)
    if spec.is_string:
        limit = spec.max_bytes
        if rank == 1:
            out = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                out[i] = _as_bytes(v, name, limit, i)
            return out
        if rank == 2:
            for i, v in enumerate(values):
                if v is not None and not isinstance(
                        v, (bytes, str, list, tuple, np.ndarray)):
                    raise TypeError(
                        f"input {name!r}: example {i} is a "
                        f"{type(v).__name__}; this input takes a list of "
                        "encoded frames (bytes) or one GIF (bytes)")
            rows = [[] if v is None or (isinstance(v, (bytes, str))
                                        and not v)
                    else [_as_bytes(x, name, limit, i) for x in (
                        [v] if isinstance(v, (bytes, str)) else v)]
                    for i, v in enumerate(values)]
            width = spec.shape[1] or max([len(r) for r in rows] + [1])
            out = np.full((len(rows), width), b"", dtype=object)
            for i, row in enumerate(rows):
                if len(row) > width:
                    raise ValueError(
                        f"input {name!r}: example {i} has {len(row)} values;"
                        f" this input takes at most {width}")
                out[i, :len(row)] = row
            return out
        raise ValueError(f"input {name!r}: string inputs of rank {rank} "
                         "are not supported")
    dtype = spec.dtype
    if rank == 1:
        return np.asarray([_as_float(v, name) for v in values], dtype=dtype)
    rows = []
    for i, v in enumerate(values):
        if v is None:
            v = np.zeros([0] + [d or 0 for d in spec.shape[2:]], dtype)
        if isinstance(v, (bytes, str)):
            raise TypeError(
                f"input {name!r}: example {i} is {type(v).__name__}; this "
                f"input takes {dtype} arrays of shape {spec.shape[1:]} "
                "(a .npy or .csv file is read into one)")
        array = np.asarray(v, dtype=dtype)
        if array.ndim == rank - 2:    # a single step
            array = array[None]
        if array.ndim != rank - 1:
            raise ValueError(
                f"input {name!r}: example {i} has shape {array.shape}; "
                f"expected {tuple(spec.shape[1:])} (None = any length)")
        for axis, want in enumerate(spec.shape[2:], start=1):
            if want is not None and array.shape[axis] != want:
                raise ValueError(
                    f"input {name!r}: example {i} has shape {array.shape};"
                    f" axis {axis} must be {want}")
        rows.append(array)
    if spec.shape[1] is not None:
        length = spec.shape[1]
    else:
        length = max([r.shape[0] for r in rows] + [0])
    tail = [d if d is not None else (rows[0].shape[k + 1] if rows else 0)
            for k, d in enumerate(spec.shape[2:])]
    fill = math.nan if np.dtype(dtype).kind == "f" else 0
    out = np.full([len(rows), length] + tail, fill, dtype=dtype)
    for i, row in enumerate(rows):
        if row.shape[0] > length:
            raise ValueError(f"input {name!r}: example {i} has "
                             f"{row.shape[0]} steps; at most {length}")
        out[i, :row.shape[0]] = row
    return out


def batch_inputs(instances, input_specs):
    """Rows `[{input: raw value}]` -> `{input: batch array}` (`stack_raw`).

    Inputs a row leaves out are sent empty. Unknown inputs raise a
    `KeyError` naming the known ones.
    """
    instances = list(instances)
    specs = {k: InputSpec.of(s) for k, s in input_specs.items()}
    for row in instances:
        unknown = sorted(set(row) - set(specs))
        if unknown:
            raise KeyError(f"unknown input(s) {unknown}; the signature "
                           f"takes {sorted(specs)}")
    return {name: stack_raw([row.get(name) for row in instances], spec, name)
            for name, spec in specs.items()}


def columns_to_rows(columns):
    """`{input: [v0, v1, ...]}` -> `[{input: v0}, {input: v1}, ...]`."""
    columns = dict(columns)
    sizes = {k: len(v) for k, v in columns.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inputs have different numbers of examples: "
                         f"{sizes}")
    n = next(iter(sizes.values()), 0)
    return [{k: columns[k][i] for k in columns} for i in range(n)]


# -- REST --------------------------------------------------------------------

def _json_value(value):
    if isinstance(value, (bytes, np.bytes_)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_json_value(v) for v in value]
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def rest_request(instances, input_specs=None,
                 signature_name="serving_default", columnar=False):
    """The TF Serving REST `:predict` body.

    Args:
        instances: rows `[{input: raw value}]`.
        input_specs: `{input: spec}` (`input_specs(path)`); with it the rows
            are padded to common shapes and inputs a row leaves out are sent
            empty, as TF Serving needs. Without it values go as they are.
        signature_name: the signature to call.
        columnar: `{"inputs": {input: [values]}}` instead of the row format
            `{"instances": [{input: value}]}`.
    """
    instances = list(instances)
    if input_specs is not None:
        batch = batch_inputs(instances, input_specs)
        instances = [{k: v[i] for k, v in batch.items()}
                     for i in range(len(instances))]
    if columnar:
        names = list(instances[0]) if instances else []
        return {"signature_name": signature_name,
                "inputs": {k: [_json_value(row[k]) for row in instances]
                           for k in names}}
    return {"signature_name": signature_name,
            "instances": [{k: _json_value(v) for k, v in row.items()}
                          for row in instances]}


def _from_json_output(value):
    """`{"b64": ...}` (outputs named `*_bytes`) -> bytes, recursively."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_from_json_output(v) for v in value]
    return value


def _output_array(value):
    value = _from_json_output(value)

    def has_bytes(v):
        return isinstance(v, bytes) or (isinstance(v, list) and any(
            has_bytes(x) for x in v))

    if has_bytes(value):    # object, not "S": NumPy strips trailing NULs
        return np.array(value, dtype=object)
    return np.asarray(value)


def parse_rest_response(body):
    """`{output: numpy array}` from a TF Serving REST response.

    Row (`"predictions"`) and columnar (`"outputs"`) responses; a model
    with a single output answers without its name (returned as
    `"output"`); `{"b64": ...}` values (outputs named `*_bytes`) become
    bytes.
    """
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    if "error" in body:
        raise RuntimeError(f"TF Serving error: {body['error']}")
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict) or set(outputs) == {"b64"}:
            outputs = {"output": outputs}
        return {k: _output_array(v) for k, v in outputs.items()}
    rows = body["predictions"]
    if rows and not (isinstance(rows[0], dict) and set(rows[0]) != {"b64"}):
        return {"output": _output_array(rows)}
    names = list(rows[0]) if rows else []
    return {k: _output_array([row[k] for row in rows]) for k in names}


def predict_rest(url, body, timeout=30.0):
    """POSTs `body` to a TF Serving `:predict` URL; returns the parsed
    response (`parse_rest_response`).

    Example: `predict_rest("http://localhost:8501/v1/models/demo:predict",
    rest_request(rows, specs))`.
    """
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return parse_rest_response(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", errors="replace")
        raise RuntimeError(f"{url}: HTTP {e.code}: {detail}") from None


# -- gRPC --------------------------------------------------------------------

def grpc_request(model_name, batch, signature_name="serving_default",
                 version=None, input_specs=None):
    """Builds a gRPC `PredictRequest` from `{input: batch array}`.

    With `input_specs`, `batch` may also be rows `[{input: raw value}]`
    (stacked with `batch_inputs`), and arrays are cast to the input dtypes.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if isinstance(batch, (list, tuple)):
        if input_specs is None:
            raise ValueError("rows need input_specs to be stacked")
        batch = batch_inputs(batch, input_specs)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in batch.items():
        if input_specs is not None and name in input_specs:
            spec = InputSpec.of(input_specs[name])
            value = np.asarray(value, dtype=object if spec.is_string
                               else spec.dtype)
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def parse_grpc_response(response):
    """`{output: numpy array}` from a `PredictResponse`."""
    import tensorflow as tf

    return {name: tf.make_ndarray(proto)
            for name, proto in response.outputs.items()}


def predict_grpc(target, request, timeout=30.0):
    """Sends a `PredictRequest` to TF Serving at `target` (`host:8500`);
    returns the parsed response (`parse_grpc_response`)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return parse_grpc_response(stub.Predict(request, timeout=timeout))
