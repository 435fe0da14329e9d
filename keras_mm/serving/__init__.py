"""Export to TF Serving: SavedModels, serving config, verifier, clients."""

from keras_mm.serving.exporter import export, next_version
from keras_mm.serving.predict import predict
from keras_mm.serving.verify import verify

__all__ = ["export", "next_version", "predict", "verify"]
