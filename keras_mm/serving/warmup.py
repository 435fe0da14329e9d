"""TF Serving warm-up requests (`assets.extra/tf_serving_warmup_requests`).

TF Serving replays these `PredictionLog` records when it loads a version,
so the first user request does not pay for graph initialisation.
"""

import os

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from keras_mm.serving.client import grpc_request

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def write_warmup_requests(version_dir, model_name, batches,
                          signature_name="serving_default"):
    """Writes one PredictionLog per batch of raw inputs; returns the path."""
    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            request = grpc_request(model_name, batch, signature_name)
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(path):
    """Returns the `PredictRequest`s stored in a warm-up file."""
    requests = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests
