"""LiteRT (`.tflite`) conversion of a model on its preprocessed inputs.

The LiteRT graph is `model(inputs, training=False)`: the inputs are the
model's (the tensors `serve_tensors` takes: resized, normalised images,
waveforms, token ids, presence), the outputs each head's raw output. The
parsing and tokenization stay outside (tensorflow-text ops convert with
select TF ops but do not run in LiteRT), and `preprocessing.json`
describes each input for the app that feeds it. What a tower computes
from its input (an audio tower's log-mel spectrogram, a normalisation
layer) is inside the graph, converted to LiteRT builtins.

Modes: `none` (float32), `float16` (float16 weights), `dynamic`
(int8 weights, float activations) and `int8` (int8 weights and
activations, calibrated on a representative dataset; float32 inputs and
outputs, with float kernels where an op has no int8 one).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from keras_mm.errors import ExportError
from keras_mm.recipes.schema import LITERT_MODES

MODES = LITERT_MODES
MODEL_FILE = "model.tflite"
PREPROCESSING_FILE = "preprocessing.json"
# A config value that is a list of this many strings or more (a
# vocabulary) is written to a file beside preprocessing.json.
VOCABULARY_MIN_ITEMS = 2
CONVERT_TIMEOUT = 1800
# Files from this size on keep their tensor names: re-serializing one
# through the flatbuffer object API puts every buffer inline, and a
# flatbuffer cannot pass 2 GiB.
STRIP_NAMES_MAX_BYTES = 1 << 30


def tensor_saved_model(model, signature, folder):
    """Writes a SavedModel of `model` on `signature` (`{model input:
    TensorSpec}`) whose `serving_default` returns `{head: output}`."""
    from keras_mm.serving.exporter import write_archive

    def serve(inputs):
        outputs = model(inputs, training=False)
        if not isinstance(outputs, dict):
            outputs = dict(zip(model.output_names, tf.nest.flatten(outputs)))
        return {k: tf.cast(v, tf.float32) for k, v in outputs.items()}

    return write_archive(folder, [model],
                         [("serving_default", serve, dict(signature))])


def fixed_batch(signature, batch_size):
    """`signature` with its batch dimension set to `batch_size`."""
    return {k: tf.TensorSpec([batch_size] + spec.shape.as_list()[1:],
                             spec.dtype, name=spec.name)
            for k, spec in signature.items()}


def convert_litert(model, signature, mode="none", representative=None,
                   batch_size="auto"):
    """The `.tflite` bytes of `model` on its preprocessed inputs.

    With `batch_size="auto"` the batch dimension stays dynamic when
    LiteRT can lower the graph so; recurrent towers (a GRU's tensor lists
    need a static element shape) are converted at a fixed batch of 1, the
    on-device case. Returns `(bytes, batch size or None)`.

    Args:
        model: a Keras model (a keras_mm model, or any model taking a dict).
        signature: `{model input: tf.TensorSpec}` (batch dimension None).
        mode: `none`, `float16`, `dynamic` or `int8`.
        representative: for `int8`, a callable returning an iterable of
            `{model input: array}` batches (training data).
        batch_size: `"auto"`, None (dynamic) or a fixed batch size.

    Raises:
        ExportError: an unknown mode, `int8` without representative data,
            or a model with ops LiteRT cannot run (the converter's message).
    """
    if mode not in MODES:
        raise ExportError(f"LiteRT quantize={mode!r}: choose one of "
                          f"{', '.join(MODES)}")
    if mode == "int8" and representative is None:
        raise ExportError("LiteRT int8 needs representative data to "
                          "calibrate the activations (training batches)")
    if batch_size == "auto":
        try:
            return _convert(model, signature, mode, representative), None
        except ExportError:
            batch_size = 1
    if batch_size is not None:
        signature = fixed_batch(signature, batch_size)
    return _convert(model, signature, mode, representative,
                    batch_size=batch_size), batch_size


def _convert(model, signature, mode, representative, batch_size=None):
    # The converter runs in a child process: TF's int8 calibrator crashes
    # (SIGSEGV) on some graphs (a GRU at batch 1), which must not take the
    # caller down with it.
    with tempfile.TemporaryDirectory(prefix="keras_mm_litert_") as folder:
        saved_model = os.path.join(folder, "saved_model")
        tensor_saved_model(model, signature, saved_model)
        args = [saved_model, mode, os.path.join(folder, MODEL_FILE)]
        if mode == "int8":
            calibration = os.path.join(folder, "calibration.npz")
            batches = list(_rebatch(representative(), batch_size))
            if not batches:
                raise ExportError("LiteRT int8: the calibration data is "
                                  "empty (the training split has no "
                                  "batches)")
            np.savez(calibration, **{f"{i}/{k}": v
                                     for i, batch in enumerate(batches)
                                     for k, v in batch.items()})
            args.append(calibration)
        done = subprocess.run(
            [sys.executable, "-m", "keras_mm.compression.litert_convert",
             *args], capture_output=True, text=True,
            timeout=CONVERT_TIMEOUT)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines()
                     if line.startswith(("ConverterError", "error:",
                                         "ValueError", "Error"))]
            why = " ".join(lines[-2:])[:1500] if lines else (
                "the converter process died (" + (
                    f"signal {signal.Signals(-done.returncode).name}"
                    if done.returncode < 0 else f"exit {done.returncode}")
                + ")")
            raise ExportError(
                f"LiteRT conversion ({mode}"
                f"{', batch 1' if batch_size else ''}) failed: {why}; the "
                "model holds ops LiteRT builtins cannot run (string or "
                "decode ops belong in the preprocessors, outside the "
                "graph), or the converter cannot quantize it this way (try "
                "another mode)")
        with open(args[2], "rb") as f:
            return strip_tensor_names(f.read())


def strip_tensor_names(blob):
    """`blob` (`.tflite` bytes) without the names of its intermediate
    tensors and its description.

    The converter names each tensor after every TF op fused into it
    (`model/tower/Relu;model/tower/norm/batchnorm/add;...`), about 7 KB
    on a small fused model, 3% of its int8 file. Nothing at run time
    reads them; the subgraphs' input and output tensors keep their names,
    and the signatures (which map the input and output names to tensor
    indices) are kept whole. A file of `STRIP_NAMES_MAX_BYTES` or more is
    returned as it is.
    """
    if len(blob) >= STRIP_NAMES_MAX_BYTES:
        return blob
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(blob)
    model.description = None
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _rebatch(batches, batch_size):
    """`batches` (dicts of arrays) cut into batches of `batch_size`."""
    for batch in batches:
        if batch_size is None:
            yield batch
            continue
        size = len(next(iter(batch.values())))
        for start in range(0, size, batch_size):
            yield {k: v[start:start + batch_size] for k, v in batch.items()}


def _split_vocabularies(name, config, folder):
    """`config` with each list of strings (a vocabulary) replaced by the
    name of a file written to `folder`, one item a line."""
    out = {}
    for key, value in config.items():
        if (isinstance(value, list) and len(value) >= VOCABULARY_MIN_ITEMS
                and all(isinstance(v, str) for v in value)):
            file_name = f"{name}.{key}.txt"
            with open(os.path.join(folder, file_name), "w",
                      encoding="utf-8") as f:
                f.write("".join(f"{item}\n" for item in value))
            out[key] = {"file": file_name, "items": len(value)}
        else:
            out[key] = value
    return out


def preprocessing_manifest(functions, folder, batch_size=None):
    """Writes `preprocessing.json` (and vocabulary files) to `folder`:
    what each LiteRT input expects, and what each output is.

    `functions`: the export's `ServingFunctions` (model, fitted
    preprocessors, heads); `batch_size`: the file's fixed batch (None:
    any). Returns the manifest dict.
    """
    from keras_mm.data.base_preprocessor import serialize_preprocessor

    preprocessors = {}
    for name, pre in functions.preprocessors.items():
        try:
            entry = serialize_preprocessor(pre)
        except (TypeError, ValueError):  # e.g. a keras-hub tokenizer
            entry = {"modality": pre.modality,
                     "note": "its config is not JSON; see the run folder's "
                             "preprocessors"}
        if "config" in entry:
            entry["config"] = _split_vocabularies(name, entry["config"],
                                                  folder)
        preprocessors[name] = entry
    owners = {}
    for name, pre in functions.preprocessors.items():
        for key in pre.output_signature():
            owners[key] = name
    inputs = {}
    for key, spec in functions.tensor_signature().items():
        shape = [batch_size] + spec.shape.as_list()[1:]
        inputs[key] = {"dtype": spec.dtype.name, "shape": shape,
                       "preprocessor": owners.get(key)}
    if "presence" in inputs:
        inputs["presence"]["columns"] = functions.presence_order
        inputs["presence"]["note"] = ("1 where the modality is present, 0 "
                                      "where it is missing")
    outputs = {}
    for head, (kind, _) in functions.heads.items():
        outputs[head] = {"kind": kind}
        if functions.class_names.get(head):
            outputs[head]["class_names"] = functions.class_names[head]
    manifest = {"format": "keras_mm.litert/1", "model": MODEL_FILE,
                "batch_size": batch_size,
                "inputs": inputs, "outputs": outputs,
                "id_bounds": functions.id_bounds(),
                "preprocessors": preprocessors}
    with open(os.path.join(folder, PREPROCESSING_FILE), "w",
              encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return manifest
