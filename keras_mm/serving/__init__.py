"""Export to TF Serving: SavedModels, serving config, verifier, clients.

- `export(model, preprocessors, name, golden_examples=...)`: writes
  `saved_models/<name>/<version>/` atomically (verified first);
- `verify(path)`: the stand-alone verifier (fresh interpreter importing
  only tensorflow + tensorflow_text), returns its JSON report;
- `predict(path, {input: file or text})`: one prediction from raw files;
- `keras_mm.serving.client`: REST JSON / gRPC `PredictRequest` builders.
"""

from keras_mm.serving.atomic import next_version
from keras_mm.serving.exporter import export
from keras_mm.serving.predict import predict
from keras_mm.serving.serving_functions import ServingFunctions
from keras_mm.serving.verify import verify

__all__ = ["ServingFunctions", "export", "next_version", "predict",
           "verify"]
