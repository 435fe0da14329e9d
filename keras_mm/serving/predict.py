"""`predict(path, ...)`: run an exported SavedModel on raw files."""

import json
import os

import numpy as np

from keras_mm.errors import ExportError
from keras_mm.serving.client import (SPEC_FILE, InputSpec, read_raw_inputs,
                                     stack_raw)

# Inputs whose raw value is a file's content, never literal text.
_FILE_MODALITIES = ("image", "audio", "video")


def _load_metadata(path):
    meta_path = os.path.join(path, SPEC_FILE)
    if not os.path.exists(meta_path):
        return None
    with open(meta_path) as f:
        return json.load(f)


def _check_files(values, metadata):
    """A value meant as a file that does not exist is an error, not text."""
    if metadata is None:
        return
    for name, value in values.items():
        info = metadata["inputs"].get(name, {})
        file_input = info.get("modality") in _FILE_MODALITIES or (
            info.get("modality") == "sensor"
            and info.get("source") in ("csv", "npy", "array"))
        if not file_input:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)) and \
                    not os.path.isfile(item):
                raise ExportError(
                    f"input {name!r}: file {os.fspath(item)!r} does not "
                    "exist; give the path of a "
                    f"{info.get('modality')} file")


def predict(path, values, signature="serving_default", loaded=None):
    """Runs one example through the SavedModel at `path`.

    Args:
        path: a version folder (`saved_models/<name>/<version>`).
        values: `{input name: value}` for any subset of the signature's
            inputs: a file path (image, WAV, video frames as a list of
            paths or a GIF, sensor `.npy` / `.csv`), text, or a number /
            category for table columns. The other inputs are sent empty,
            which marks that modality absent where the model was trained
            with a presence mask, and otherwise gets a clear
            INVALID_ARGUMENT naming the input.
        signature: the raw-input signature to call.
        loaded: an already loaded SavedModel (saves reloading it).

    Returns:
        dict `{output name: value}` of the single example (class names as
        `str`, arrays as lists).

    Raises:
        ExportError: unknown input names or missing files.
        tf.errors.InvalidArgumentError: the model refused the request.
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (text ops of the export)

    path = os.fspath(path)
    metadata = _load_metadata(path)
    if loaded is None:
        loaded = tf.saved_model.load(path)
    if signature not in loaded.signatures:
        raise ExportError(f"{path} has no signature {signature!r}; it has "
                          f"{sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    specs = {k: InputSpec.of(v)
             for k, v in fn.structured_input_signature[1].items()}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ExportError(f"unknown input(s) {unknown}; this model takes "
                          f"{sorted(specs)} (any subset)")
    _check_files(values, metadata)
    raw = read_raw_inputs(values, specs)
    request = {}
    for name, spec in specs.items():
        try:
            array = stack_raw([raw.get(name)], spec, name)
        except (TypeError, ValueError) as e:
            raise ExportError(str(e)) from None
        request[name] = tf.constant(array, dtype=spec.dtype)
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
