"""TF Serving configuration files written beside each exported model.

`saved_models/<name>/` receives:
- `models.config`: a `ModelServerConfig` text proto (name, base_path,
  version policy);
- `batching_parameters.txt`: a `BatchingParameters` text proto;
- `monitoring.config`: a `MonitoringConfig` enabling the Prometheus
  endpoint.

`models.config` is built with the `tensorflow-serving-api` protos. That
package does not ship the `BatchingParameters` and `MonitoringConfig`
protos, so those two small files are written from templates whose field
names follow `session_bundle_config.proto` and `monitoring_config.proto` of
TF Serving.
"""

import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_mm.serving.atomic import atomic_write_text


def model_server_config(name, base_path, num_versions=2):
    """Returns the `models.config` text for one model."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    model.model_version_policy.latest.num_versions = num_versions
    return text_format.MessageToString(config)


def batching_parameters(max_batch_size=64, batch_timeout_micros=2000,
                        max_enqueued_batches=100, num_batch_threads=4):
    """Returns the `batching_parameters.txt` text."""
    return (f"max_batch_size {{ value: {int(max_batch_size)} }}\n"
            f"batch_timeout_micros {{ value: {int(batch_timeout_micros)} }}\n"
            f"max_enqueued_batches {{ value: {int(max_enqueued_batches)} }}\n"
            f"num_batch_threads {{ value: {int(num_batch_threads)} }}\n")


def monitoring_config(path="/monitoring/prometheus/metrics"):
    """Returns the `monitoring.config` text (Prometheus on)."""
    return ("prometheus_config {\n"
            "  enable: true\n"
            f"  path: \"{path}\"\n"
            "}\n")


def write_serving_config(model_dir, name, base_path=None, **batching):
    """Writes the three files into `model_dir`; returns their paths.

    Args:
        model_dir: `saved_models/<name>`.
        name: model name served by TF Serving.
        base_path: the path TF Serving sees (default `/models/<name>`, the
            `tensorflow/serving` Docker image's layout).
        **batching: overrides of `batching_parameters`.
    """
    base_path = base_path or f"/models/{name}"
    files = {
        "models.config": model_server_config(name, base_path),
        "batching_parameters.txt": batching_parameters(**batching),
        "monitoring.config": monitoring_config(),
    }
    paths = []
    for filename, text in files.items():
        path = os.path.join(model_dir, filename)
        atomic_write_text(path, text)
        paths.append(path)
    return paths
