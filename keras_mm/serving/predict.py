"""`predict(path, ...)`: run an exported SavedModel on raw files."""

import json
import os

import numpy as np

from keras_mm.errors import ExportError
from keras_mm.serving.client import (SPEC_FILE, InputSpec, read_raw_inputs,
                                     stack_raw)

# Inputs whose raw value is a file's content, never literal text.
_FILE_MODALITIES = ("image", "audio", "video")
# Inputs whose raw value is the text given, never a file's content (a text
# that happens to name a file is still sent as that text).
_LITERAL_MODALITIES = ("text", "tabular")


def _literal_inputs(metadata):
    if metadata is None:
        return ()
    return tuple(name for name, info in metadata["inputs"].items()
                 if info.get("modality") in _LITERAL_MODALITIES)


def _named_files(values, metadata):
    """`{input: file path(s)}` of the values sent as files' contents."""
    literal = _literal_inputs(metadata)
    files = {}
    for name, value in values.items():
        if name in literal:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        paths = [os.fspath(v) for v in items
                 if isinstance(v, (str, os.PathLike)) and os.path.isfile(v)]
        if paths:
            files[name] = paths[0] if len(paths) == 1 else \
                f"{paths[0]} (+{len(paths) - 1} more)"
    return files


def request_error(error, values, metadata, path):
    """A TF error of the signature -> the same error class, with ONE line:
    TF's op message, the input it names (else every input sent) and the
    file each was read from."""
    import tensorflow as tf
    from keras_mm.serving.verify_savedmodel import error_summary

    if isinstance(error, UnicodeDecodeError):
        summary = ("TensorFlow's error message quotes bytes of a malformed "
                   "value (not shown); check that each file is of its "
                   "input's format")
    else:
        summary = error_summary(error, limit=600)
    if summary.startswith("assertion failed:"):
        summary = summary[len("assertion failed:"):].strip()
    summary = " ".join(summary.split())
    files = _named_files(values, metadata)
    named = [n for n in values if f"`{n}`" in summary or f"'{n}'" in summary]
    shown = named or list(values)
    parts = [f"{n}={files[n]}" if n in files else n for n in shown]
    label = "input" if len(shown) == 1 else "inputs"
    message = (f"{path}: the model refused the request ({label} "
               f"{', '.join(parts)}): {summary}")
    klass = type(error) if isinstance(error, tf.errors.OpError) \
        else tf.errors.InvalidArgumentError
    return klass(None, None, message)


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


def inputs_of_modalities(by_modality, metadata, values=None):
    """`{modality: value}` (the CLI's `--image`, `--audio`, `--sensor` ...)
    -> `{input name: value}`: each goes to the model's one input of that
    modality, whatever its name (a model whose accelerometer input is
    `imu` takes `--sensor imu.csv`).

    Raises:
        ExportError: the model has no input of a modality, or several
            (then `--input NAME=VALUE` says which), or an input is given
            twice.
    """
    values = dict(values or {})
    inputs = (metadata or {}).get("inputs") or {}
    for modality, value in by_modality.items():
        names = [n for n, info in inputs.items()
                 if info.get("modality") == modality]
        if not inputs and not names:
            names = [modality]          # no metadata: the input's name
        if not names:
            kinds = ", ".join(f"{n} ({info.get('modality')})"
                              for n, info in inputs.items())
            raise ExportError(f"--{modality}: this model has no {modality} "
                              f"input; its inputs are {kinds}")
        if len(names) > 1:
            raise ExportError(
                f"--{modality}: this model has {len(names)} {modality} "
                f"inputs ({', '.join(names)}); say which with --input "
                f"{names[0]}=VALUE")
        if names[0] in values:
            raise ExportError(f"input {names[0]!r} is given twice (--"
                              f"{modality} and --input {names[0]}=...)")
        values[names[0]] = value
    return values


def predict(path, values, signature="serving_default", loaded=None,
            modalities=None):
    """Runs one example through the SavedModel at `path`.

    Args:
        path: a version folder (`saved_models/<name>/<version>`).
        values: `{input name: value}` for any subset of the signature's
            inputs: a file path (image, WAV, video frames as a list of
            paths or a GIF, sensor `.npy` / `.csv`), text, or a number /
            category for table columns. Text and table values are sent as
            given, even where they name a file (read a text file yourself,
            or use `keras-mm predict --text-file`). The other inputs are sent empty,
            which marks that modality absent where the model was trained
            with a presence mask, and otherwise gets a clear
            INVALID_ARGUMENT naming the input.
        signature: the raw-input signature to call.
        loaded: an already loaded SavedModel (saves reloading it).
        modalities: `{modality: value}` for inputs named by modality
            (`{"sensor": "imu.csv"}`): each goes to the model's one input
            of that modality (`inputs_of_modalities`).

    Returns:
        dict `{output name: value}` of the single example (class names as
        `str`, arrays as lists).

    Raises:
        ExportError: unknown input names or missing files.
        tf.errors.InvalidArgumentError: the model refused the request;
            the message is one line: TF's op message, the input it names
            and the file that input was read from.
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (text ops of the export)

    path = os.fspath(path)
    metadata = _load_metadata(path)
    if modalities:
        values = inputs_of_modalities(modalities, metadata, values)
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
    raw = read_raw_inputs(values, specs, literal=_literal_inputs(metadata))
    limits = {k: v.get("max_bytes")
              for k, v in ((metadata or {}).get("inputs") or {}).items()}
    request = {}
    for name, spec in specs.items():
        spec = InputSpec(spec.dtype, spec.shape, limits.get(name))
        try:
            array = stack_raw([raw.get(name)], spec, name)
        except (TypeError, ValueError) as e:
            file = _named_files({name: values[name]}, metadata).get(name) \
                if name in values else None
            raise ExportError(f"{file}: {e}" if file else str(e)) from None
        request[name] = tf.constant(array, dtype=spec.dtype)
    try:
        outputs = fn(**request)
    except (tf.errors.OpError, UnicodeDecodeError) as e:
        raise request_error(e, values, metadata, path) from None
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
