"""`predict(path, ...)`: run an exported SavedModel on raw files."""

import numpy as np

from keras_mm.errors import ExportError
from keras_mm.serving.client import read_raw_inputs


def _empty_like(spec):
    if spec.dtype.name == "string":
        shape = [1] + [d or 1 for d in spec.shape[1:]]
        return np.full(shape, b"", dtype=object)
    shape = [1] + [d or 1 for d in spec.shape[1:]]
    return np.full(shape, np.nan, dtype=spec.dtype.name)


def predict(path, values, signature="serving_default"):
    """Runs one example through the SavedModel at `path`.

    Args:
        path: a version folder.
        values: `{input name: file path or text}`; any subset of the
            signature's inputs (the others are sent empty, which marks the
            modality absent where the model was trained with presence
            masks, and otherwise gets a clear INVALID_ARGUMENT).

    Returns:
        dict `{output name: numpy value of the single example}`.
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (text ops of the export)

    loaded = tf.saved_model.load(path)
    fn = loaded.signatures[signature]
    specs = fn.structured_input_signature[1]
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ExportError(
            f"unknown input(s) {unknown}; this model takes "
            f"{sorted(specs)}")
    raw = read_raw_inputs(values)
    request = {}
    for name, spec in specs.items():
        if name in raw:
            value = raw[name]
            if spec.dtype.name == "string":
                if isinstance(value, list):
                    value = np.array([value], dtype=object)
                else:
                    if isinstance(value, str):
                        value = value.encode("utf-8")
                    value = np.array([value], dtype=object)
            else:
                value = np.asarray(value, dtype=spec.dtype.name)[None]
            request[name] = tf.constant(value, dtype=spec.dtype)
        else:
            request[name] = tf.constant(_empty_like(spec), dtype=spec.dtype)
    outputs = fn(**request)
    result = {}
    for key, tensor in sorted(outputs.items()):
        value = tensor.numpy()[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        result[key] = value
    return result
