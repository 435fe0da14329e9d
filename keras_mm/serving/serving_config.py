"""TF Serving configuration files written beside each exported model.

`saved_models/<name>/` receives:
- `models.config`: a `ModelServerConfig` text proto (name, base_path,
  version policy), built with the `tensorflow-serving-api` protos;
- `batching_parameters.txt`: a `BatchingParameters` text proto
  (`--enable_batching --batching_parameters_file=...`);
- `monitoring.config`: a `MonitoringConfig` text proto enabling the
  Prometheus endpoint (`--monitoring_config_file=...`);
- `SERVING.md`: the `tensorflow_model_server` / `docker run` command lines
  and request examples for this model.

The `tensorflow-serving-api` package does not ship the
`BatchingParameters` and `MonitoringConfig` protos, so those two files are
written from templates whose field names follow TF Serving's
`session_bundle_config.proto` and `monitoring_config.proto`.
"""

import base64
import json
import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_mm.serving.atomic import atomic_write_text

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def model_server_config(name, base_path, num_versions=1):
    """Returns the `models.config` text for one model."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    model.model_version_policy.latest.num_versions = int(num_versions)
    return text_format.MessageToString(config)


def batching_parameters(max_batch_size=64, batch_timeout_micros=2000,
                        max_enqueued_batches=100, num_batch_threads=4):
    """Returns the `batching_parameters.txt` text.

    `pad_variable_length_inputs` stays off on purpose: TF Serving pads with
    a tensor's *first element*, which would add copies of a real frame or
    step to shorter frame lists / series. With batching on, concurrent
    requests must then share their non-batch shapes (TF Serving answers
    INVALID_ARGUMENT otherwise): send frame lists and series padded to one
    fixed length (empty strings / NaN steps, which the preprocessors drop).
    """
    return (f"max_batch_size {{ value: {int(max_batch_size)} }}\n"
            f"batch_timeout_micros {{ value: {int(batch_timeout_micros)} }}\n"
            f"max_enqueued_batches {{ value: {int(max_enqueued_batches)} }}\n"
            f"num_batch_threads {{ value: {int(num_batch_threads)} }}\n")


def monitoring_config(path=PROMETHEUS_PATH):
    """Returns the `monitoring.config` text (Prometheus on)."""
    return ("prometheus_config {\n"
            "  enable: true\n"
            f"  path: \"{path}\"\n"
            "}\n")


# The first bytes of each kind of file, for the request examples: a b64
# value there starts as the base64 of a real file of that kind does.
_FILE_STARTS = {"png": b"\x89PNG\r\n\x1a\n\x00", "jpg": b"\xff\xd8\xff",
                "wav": b"RIFF$\x00\x00\x00WAVE", "gif": b"GIF89a",
                "npy": b"\x93NUMPY\x01\x00v"}


def _b64_example(ext, info):
    """The b64 value of a `.ext` file in the REST example: the whole of a
    two-row CSV series (it is short), else the start of a file of that
    kind followed by `...`."""
    if ext == "csv":
        row = ",".join(["0.0"] * int(info.get("channels") or 3))
        return base64.b64encode(f"{row}\n{row}\n".encode()).decode()
    start = _FILE_STARTS[ext]
    return base64.b64encode(start[:len(start) // 3 * 3]).decode() + "..."


def _file_extension(modality, info):
    if modality == "image":
        return "png"
    if modality == "audio":
        return "wav"
    if modality == "video":
        return "gif"
    return info.get("source") if info.get("source") in ("csv", "npy") \
        else "csv"


def _example_values(inputs):
    """A JSON instance and a Python row for the request examples, each
    value of its input's kind (a PNG, a WAV, a GIF or a CSV series)."""
    json_row, python_row = {}, {}
    for key, info in (inputs or {}).items():
        modality = info.get("modality")
        shape = info.get("shape") or [None]
        if info.get("dtype") == "string":
            if modality == "text":
                json_row[key] = "a red square"
                python_row[key] = '"a red square"'
            elif len(shape) == 2:        # encoded frames
                frame = {"b64": _b64_example("png", info)}
                json_row[key] = [frame, dict(frame)]
                python_row[key] = ('[open(p, "rb").read() for p in '
                                   '["f0.png", "f1.png"]]')
            elif modality in ("image", "audio", "video", "sensor"):
                ext = _file_extension(modality, info)
                json_row[key] = {"b64": _b64_example(ext, info)}
                python_row[key] = f'open("{key}.{ext}", "rb").read()'
            else:
                json_row[key] = "blue"
                python_row[key] = '"blue"'
        elif len(shape) == 3:            # a [T, C] series
            row = [0.0] * int(shape[2] or 1)
            json_row[key] = [row, row]
            python_row[key] = f"[{row}, {row}]"
        else:
            json_row[key] = 1.0
            python_row[key] = "1.0"
    return json_row, python_row


def serving_instructions(name, model_dir, inputs=None):
    """Markdown with the exact command lines serving `model_dir`.

    Args:
        name: the served model name.
        model_dir: `saved_models/<name>`.
        inputs: `{raw input: {"dtype", "shape", "modality"}}` (the export's
            `keras_mm.json` `inputs`), for the request examples.
    """
    local = os.path.abspath(model_dir)
    json_row, python_row = _example_values(inputs)
    body = json.dumps({"signature_name": "serving_default",
                       "instances": [json_row]})
    python_items = ",\n        ".join(f'"{k}": {v}'
                                       for k, v in python_row.items())
    return f"""# Serving `{name}` with TF Serving

Docker (the files of this folder are mounted at `/models/{name}`, the
`base_path` of `models.config`):

```
docker run --rm -p 8500:8500 -p 8501:8501 \\
  -v "{local}:/models/{name}" -t tensorflow/serving \\
  --model_config_file=/models/{name}/models.config \\
  --enable_batching=true \\
  --batching_parameters_file=/models/{name}/batching_parameters.txt \\
  --monitoring_config_file=/models/{name}/monitoring.config
```

Without Docker, set `base_path` in `models.config` to `{local}`
(`keras_mm.export(..., serving_base_path=...)`) and run:

```
tensorflow_model_server --port=8500 --rest_api_port=8501 \\
  --model_config_file={local}/models.config \\
  --enable_batching=true \\
  --batching_parameters_file={local}/batching_parameters.txt \\
  --monitoring_config_file={local}/monitoring.config
```

The warm-up requests in `<version>/assets.extra/tf_serving_warmup_requests`
are replayed at load. Prometheus metrics:
`http://localhost:8501{PROMETHEUS_PATH}`.

REST (binary values as `{{"b64": ...}}`, the base64 of the file; an empty
value marks a modality absent where the model has a presence mask):

```
curl -X POST http://localhost:8501/v1/models/{name}:predict -d @request.json
```

with `request.json`:

```
{body}
```

gRPC (port 8500), in Python (`keras_mm.serving.client` builds both kinds
of requests from raw files):

```
from keras_mm.serving import client
specs = client.input_specs("{local}/<version>")
rows = [{{
        {python_items}}}]
request = client.grpc_request("{name}", rows, input_specs=specs)
print(client.predict_grpc("localhost:8500", request))
body = client.rest_request(rows, specs)          # the REST body
```
"""


def write_serving_config(model_dir, name, base_path=None, num_versions=1,
                         inputs=None, **batching):
    """Writes the serving files into `model_dir`; returns their paths.

    Args:
        model_dir: `saved_models/<name>`.
        name: model name served by TF Serving.
        base_path: the path TF Serving sees (default `/models/<name>`, the
            `tensorflow/serving` Docker image's layout).
        num_versions: how many of the latest versions are served.
        inputs: the raw inputs' description (`serving_instructions`).
        **batching: overrides of `batching_parameters`.
    """
    base_path = base_path or f"/models/{name}"
    files = {
        "models.config": model_server_config(name, base_path, num_versions),
        "batching_parameters.txt": batching_parameters(**batching),
        "monitoring.config": monitoring_config(),
        "SERVING.md": serving_instructions(name, model_dir, inputs),
    }
    paths = []
    for filename, text in files.items():
        path = os.path.join(model_dir, filename)
        atomic_write_text(path, text)
        paths.append(path)
    return paths
