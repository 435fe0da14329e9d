"""`keras_mm.export`: versioned, verified, atomic SavedModels for TF Serving.

Layout written under `base_dir` (default `saved_models/`):

```
saved_models/<name>/
  models.config  batching_parameters.txt  monitoring.config  SERVING.md
  <version>/                  # integer, the next free one by default
    saved_model.pb  variables/
    assets.extra/tf_serving_warmup_requests
    assets.extra/keras_mm.json   # inputs, outputs, golden requests
    assets.extra/keras_mm_verify.json   # the verifier's report
```

Everything is first written to a hidden `.tmp-<version>-<pid>` folder
beside the target (TF Serving only loads integer-named folders), verified
in a fresh interpreter (`keras_mm.serving.verify`), flushed to disk, then
renamed. A killed export leaves no visible version; the next export
removes its leftovers (temp folders whose process is gone).
"""

import base64
import json
import os
import time

import numpy as np
import tensorflow as tf
import keras

from keras_mm.errors import ExportError
from keras_mm.serving import atomic
from keras_mm.serving.client import batch_inputs, columns_to_rows
from keras_mm.serving.embed_signatures import EmbedSignatures
from keras_mm.serving.serving_config import write_serving_config
from keras_mm.serving.serving_functions import (ServingFunctions,
                                                raw_input_limit)
from keras_mm.serving.verify import verify as verify_export
from keras_mm.serving.warmup import write_warmup_requests

METADATA_FILE = os.path.join("assets.extra", "keras_mm.json")
VERIFY_FILE = os.path.join("assets.extra", "keras_mm_verify.json")
PARITY_FILE = os.path.join("assets.extra", "keras_mm_parity.json")
FORMAT = "keras_mm.export/1"


def encode_tensor(value):
    """A JSON record of a tensor (strings as base64), for keras_mm.json."""
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    if array.dtype.kind in "OSU":
        flat = [v if isinstance(v, bytes) else str(v).encode("utf-8")
                for v in array.reshape(-1).tolist()]
        return {"dtype": "string", "shape": list(array.shape),
                "b64": [base64.b64encode(v).decode("ascii") for v in flat]}
    if array.dtype.kind == "b":
        dtype = "bool"
    elif array.dtype.kind in "iu":
        dtype = "int64" if array.dtype.itemsize == 8 else "int32"
    else:
        dtype = "float32"
    values = array.astype(dtype).reshape(-1).tolist()
    if dtype == "float32":  # JSON has no NaN: None stands for it
        values = [None if v != v else v for v in values]
    return {"dtype": dtype, "shape": list(array.shape), "values": values}


def store_weights_once(archive):
    """Keeps each weight once in `archive`'s SavedModel.

    Keras 3.15's TF `ExportArchive` saves every weight twice: `track(model)`
    lists the Keras variables, and `write_out` lists the `tf.Variable`s
    the endpoints capture (`_all_variables`); a checkpoint stores both,
    so `variables/` was twice the weights. The endpoints need only the
    captured ones (a fresh process reloads the same outputs bitwise;
    lookup tables and assets are tracked apart), so the Keras lists are
    emptied before writing.
    """
    trackable = archive._tf_trackable
    trackable.variables = []
    trackable.trainable_variables = []
    trackable.non_trainable_variables = []


def write_archive(folder, tracked, endpoints):
    """Writes a SavedModel of `endpoints` (`(name, function, input
    signature)`) with Keras' `ExportArchive`: the objects in `tracked`
    (the model, lookup tables) are tracked and each weight is stored once
    (`store_weights_once`)."""
    archive = keras.export.ExportArchive()
    for obj in tracked:
        archive.track(obj)
    for endpoint, function, signature in endpoints:
        archive.add_endpoint(endpoint, function, input_signature=[signature])
    store_weights_once(archive)
    archive.write_out(folder, verbose=False)
    return folder


def _golden_batch(functions, golden_examples):
    specs = functions.raw_signature()
    if isinstance(golden_examples, dict):
        missing = sorted(set(specs) - set(golden_examples))
        if missing:
            raise ExportError(
                f"golden_examples lacks inputs {missing}; give a batch of "
                f"raw values for every serving input ({sorted(specs)})")
        rows = columns_to_rows({k: golden_examples[k] for k in specs})
    else:
        rows = list(golden_examples)
    if not rows:
        raise ExportError("golden_examples is empty: give a few real "
                          "examples (raw bytes) of every input")
    try:
        return batch_inputs(rows, specs)
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"golden_examples: {e}") from None


def reference_outputs(functions, raw_batch, inputs=None):
    """The Keras model's outputs on `raw_batch` preprocessed by tf.data.

    An independent per-example reference, NOT the training pipeline's code
    path: `parse` per example in a `tf.data.Dataset.map`, `batch`,
    `transform(training=False)` in a second map; then
    `model(x, training=False)` in a `tf.function`, as Keras' predict step
    runs it. The training pipeline and the serving signatures both run
    `transform(parse_batch(raw))` (one `tf.map_fn` of `parse` over a batch,
    or a batched `parse_batch`); `parse_batch` must equal per-example
    `parse` bitwise, so agreeing with this reference checks both. These are
    the export's golden outputs, which the SavedModel must reproduce from
    the raw bytes. `inputs`: `reference_model_inputs(functions,
    raw_batch)` when the caller has them already.
    """
    if inputs is None:
        inputs = reference_model_inputs(functions, raw_batch)
    # Called as Keras' own predict step calls it: in a tf.function (no
    # XLA), so graph-level kernel choices (oneDNN fusions) match those of
    # the SavedModel and the comparison holds at atol 1e-5 for trained
    # models too.
    call = tf.function(functions.predict_model_inputs, jit_compile=False,
                       autograph=False)
    return call(inputs)


def reference_model_inputs(functions, raw_batch):
    """The model inputs of `reference_outputs`: `raw_batch` parsed per
    example in a tf.data map, batched, transformed."""
    size = len(next(iter(raw_batch.values())))
    preprocessors = functions.preprocessors

    def parse(raw):
        return {name: pre.parse(raw, training=False)
                for name, pre in preprocessors.items()}

    def transform(parsed):
        features = {}
        for name, pre in preprocessors.items():
            features.update(pre.transform(parsed[name], training=False))
        return features

    dataset = (tf.data.Dataset.from_tensor_slices(dict(raw_batch))
               .map(parse).batch(size).map(transform))
    features = next(iter(dataset))
    return functions.model_inputs(features)


def export(model, preprocessors, name, *, golden_examples,
           base_dir="saved_models", version=None, columns=None,
           column_kinds=None, verify=True, serving_base_path=None,
           verify_timeout=600, atol=1e-5, max_bytes=None, batching=None,
           num_versions=1, explain=False, extra_metadata=None,
           before_publish=None):
    """Exports `model` with its preprocessing as a TF Serving SavedModel.

    Signatures (method `tensorflow/serving/predict`, batch-first):
    `serving_default` (raw inputs: encoded image bytes, text, WAV bytes,
    frames `[B, T]` or GIF bytes, float series `[B, T, C]`, table cells),
    `serve_tensors` (preprocessed model inputs) and `serve_examples`
    (serialized `tf.train.Example`s with the training TFRecords' feature
    names). See `keras_mm.serving.serving_functions` for the outputs.
    With `explain=True`, also `explain`: the raw inputs of
    `serving_default`, its outputs plus per-modality Shapley values
    (`keras_mm.serving.explain_signature`). A model with a contrastive
    head also gets `embed_<input>` (one input's raw values -> its
    L2-normalised embedding) and `score` (a pair's raw values -> cosine
    similarity and logit): `keras_mm.serving.embed_signatures`.

    Args:
        model: a (trained) model built by `keras_mm.build_model`.
        preprocessors: `{model input name: preprocessor}`, the fitted
            objects the training pipeline used.
        name: the served model name (`<base_dir>/<name>/`).
        golden_examples: a few real examples: rows `[{raw input: value}]`
            or columns `{raw input: [values]}` (image / WAV bytes, text,
            frame lists, arrays, cells). They are stored with the export
            along with the Keras model's outputs on them (preprocessed by
            tf.data), replayed by the verifier, and sent as TF Serving
            warm-up requests.
        base_dir: folder holding the models.
        version: integer version; default the next free one. An existing
            version is never overwritten.
        columns, column_kinds: the training TFRecords' column names and
            stored kinds, for `serve_examples` (see `ServingFunctions`).
        verify: run `keras_mm.serving.verify` in a fresh interpreter before
            publishing (strongly advised; nothing is published on failure).
        serving_base_path: base_path written to `models.config` (default
            `/models/<name>`, the `tensorflow/serving` Docker layout).
        verify_timeout: seconds allowed to the verifier.
        atol: tolerance of the golden comparison.
        max_bytes: `{input or modality: bytes}`: largest raw value accepted.
        batching: overrides of `batching_parameters.txt` values.
        num_versions: versions TF Serving keeps loaded (`models.config`).
        explain: add the `explain` signature (needs a model with a
            `presence` input; recipe key `export.explain`).
        extra_metadata: more keys for `keras_mm.json` (a quantized
            export's `quantization` summary).
        before_publish: `fn(folder, final folder) -> report or None`,
            called on the complete, verified version folder (the temp
            folder, published as the final one) before publishing; it
            raises `ExportError` to refuse (nothing is published), and its
            report goes to `assets.extra/keras_mm_parity.json` (the parity
            report of a compressed export).

    Returns:
        The path of the published version folder.

    Raises:
        ExportError: bad arguments, or verification failed (the report is
            in the message); nothing was published.

    Example:

    >>> path = keras_mm.export(model, preprocessors, "av_mnist",
    ...                        golden_examples=[{"image": png, "audio": wav}])
    ...                                                   # doctest: +SKIP
    """
    name = str(name)
    if not name or os.sep in name or "/" in name or name.startswith("."):
        raise ExportError(
            f"export name {name!r} must be a plain folder name such as "
            "'demo'")
    model_dir = os.path.join(os.fspath(base_dir), name)
    with atomic.publish_version(model_dir, version) as publication:
        version, tmp_dir = publication.version, publication.folder
        final_dir = publication.final
        functions = ServingFunctions(model, preprocessors, columns=columns,
                                     column_kinds=column_kinds,
                                     max_bytes=max_bytes)
        embedder = EmbedSignatures(functions)
        explainer = None
        if explain:
            from keras_mm.serving.explain_signature import ExplainSignature

            explainer = ExplainSignature(functions)
        golden = _golden_batch(functions, golden_examples)
        golden_tensors = {k: tf.constant(v) for k, v in golden.items()}
        try:
            golden_inputs = reference_model_inputs(functions, golden_tensors)
            expected = reference_outputs(functions, golden_tensors,
                                         golden_inputs)
            explain_expected = None if explainer is None else \
                explainer.reference(golden_inputs)
            embed_expected = embedder.reference(golden_inputs)
        except tf.errors.InvalidArgumentError as e:
            raise ExportError(
                "the golden examples cannot be preprocessed / predicted: "
                f"{e.message.strip().splitlines()[0]}") from None
        golden_serialized = functions.serialize_examples(golden)

        endpoints = [
            ("serving_default", functions.serve_raw,
             functions.raw_signature()),
            ("serve_tensors", functions.serve_tensors,
             functions.tensor_signature()),
            ("serve_examples", functions.serve_examples,
             functions.example_signature())]
        if explainer is not None:
            endpoints.append(("explain", explainer.serve,
                              functions.raw_signature()))
        endpoints += list(embedder.endpoints())
        write_archive(tmp_dir, [model, *functions.resources()], endpoints)

        metadata = _metadata(functions, name, version, golden, expected,
                             golden_serialized, atol)
        metadata.update(extra_metadata or {})
        if explainer is not None:
            metadata["explain"] = dict(
                explainer.metadata(),
                golden={k: encode_tensor(v)
                        for k, v in explain_expected.items()})
        if embed_expected:
            metadata["embed"] = embedder.metadata(embed_expected,
                                                  encode_tensor)
        atomic.atomic_write_text(os.path.join(tmp_dir, METADATA_FILE),
                                 json.dumps(metadata, indent=1))
        size = len(next(iter(golden.values())))
        warm = [{k: v[:1] for k, v in golden.items()}]
        if size > 1:
            limit = int((batching or {}).get("max_batch_size", 64))
            warm.append({k: v[:limit] for k, v in golden.items()})
        write_warmup_requests(tmp_dir, name, warm)
        if verify:
            started = time.perf_counter()
            report = verify_export(tmp_dir, timeout=verify_timeout)
            report["seconds"] = round(time.perf_counter() - started, 3)
            if not report["ok"]:
                raise ExportError(
                    f"export of {name!r} failed verification; nothing was "
                    "published:\n" + json.dumps(report, indent=2))
            report["path"] = os.path.abspath(final_dir)
            atomic.atomic_write_text(os.path.join(tmp_dir, VERIFY_FILE),
                                     json.dumps(report, indent=1))
        if before_publish is not None:
            parity = before_publish(tmp_dir, os.path.abspath(final_dir))
            if parity is not None:
                atomic.atomic_write_text(os.path.join(tmp_dir, PARITY_FILE),
                                         json.dumps(parity, indent=1))
        write_serving_config(model_dir, name, base_path=serving_base_path,
                             num_versions=num_versions,
                             inputs=metadata["inputs"], **(batching or {}))
    return final_dir


def _metadata(functions, name, version, golden, expected, golden_serialized,
              atol):
    from keras_mm.data.base_preprocessor import serialize_preprocessor

    inputs = {}
    for key, spec in functions.raw_signature().items():
        pre = functions.owner(key)
        info = {"dtype": spec.dtype.name, "shape": spec.shape.as_list(),
                "modality": pre.modality, "preprocessor": pre.name}
        if spec.dtype == tf.string:
            info["max_bytes"] = raw_input_limit(pre, functions.max_bytes)
        if pre.modality == "audio":
            info["sample_rate"] = int(pre.get_config().get("sample_rate"))
        if pre.modality in ("video", "sensor"):
            info["source"] = getattr(pre, "source", None)
        if pre.modality == "sensor":
            info["channels"] = int(pre.channels)
        inputs[key] = info
    outputs = {k: {"dtype": tf.as_dtype(v.dtype).name,
                   "shape": [None] + list(v.shape[1:])}
               for k, v in expected.items()}
    try:
        preprocessors = {n: serialize_preprocessor(p)
                         for n, p in functions.preprocessors.items()}
    except (TypeError, ValueError):
        preprocessors = None
    return {
        "format": FORMAT,
        "name": name,
        "version": int(version),
        "inputs": inputs,
        "outputs": outputs,
        "model_inputs": {k: {"dtype": v.dtype.name,
                             "shape": v.shape.as_list()}
                         for k, v in functions.tensor_signature().items()},
        "heads": {h: k for h, (k, _) in functions.heads.items()},
        "class_names": functions.class_names,
        "presence_order": functions.presence_order,
        "id_bounds": functions.id_bounds(),
        "example_features": {key: {"column": c, "kind": k}
                             for key, (c, _, k) in
                             functions.column_kinds.items()},
        "preprocessors": preprocessors,
        "atol": atol,
        "golden": {
            "num_examples": len(next(iter(golden.values()))),
            "inputs": {k: encode_tensor(v) for k, v in golden.items()},
            "examples": [base64.b64encode(s).decode("ascii")
                         for s in golden_serialized],
            "outputs": {k: encode_tensor(v) for k, v in expected.items()},
        },
        "versions": {"tensorflow": tf.__version__,
                     "keras": keras.__version__,
                     "keras_mm": __import__("keras_mm").__version__},
    }
