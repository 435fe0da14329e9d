"""`keras_mm.export`: versioned, verified, atomic SavedModels for TF Serving.

Layout written under `base_dir` (default `saved_models/`):

```
saved_models/<name>/
  models.config  batching_parameters.txt  monitoring.config
  <version>/                  # integer, the next free one by default
    saved_model.pb  variables/
    assets.extra/tf_serving_warmup_requests
    assets.extra/keras_mm.json   # inputs, golden requests and outputs
```

Everything is first written to a hidden `.tmp-<version>-<pid>` folder
beside the target (TF Serving only loads integer-named folders), verified
in a fresh interpreter, then renamed. A killed export leaves no visible
version; the next export removes its leftovers.
"""

import base64
import json
import os
import shutil

import numpy as np
import tensorflow as tf
import keras

from keras_mm.errors import ExportError
from keras_mm.serving.atomic import remove_stale_temp_dirs, temp_dir_for
from keras_mm.serving.serving_config import write_serving_config
from keras_mm.serving.serving_functions import (ServingFunctions,
                                                raw_input_limit)
from keras_mm.serving.verify import verify as verify_export
from keras_mm.serving.warmup import write_warmup_requests

METADATA_FILE = os.path.join("assets.extra", "keras_mm.json")


def next_version(model_dir):
    """The next free integer version in `model_dir` (1 when empty)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def encode_tensor(value):
    """A JSON record of a tensor (strings as base64), for keras_mm.json."""
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    if array.dtype.kind in "OSU":
        flat = [v if isinstance(v, bytes) else str(v).encode("utf-8")
                for v in array.reshape(-1).tolist()]
        return {"dtype": "string", "shape": list(array.shape),
                "b64": [base64.b64encode(v).decode("ascii") for v in flat]}
    dtype = {"f": "float32", "i": "int32", "u": "int32",
             "b": "bool"}[array.dtype.kind]
    if array.dtype.kind == "i" and array.dtype.itemsize == 8:
        dtype = "int64"
    return {"dtype": dtype, "shape": list(array.shape),
            "values": array.astype(dtype).reshape(-1).tolist()}


def _to_batch(values, spec):
    if spec.dtype == tf.string:
        return tf.constant(np.array(values, dtype=object), dtype=tf.string)
    return tf.constant(np.asarray(values, dtype=spec.dtype.name))


def training_path_outputs(functions, raw_batch):
    """Keras model outputs on inputs preprocessed as the pipeline does.

    Per example `parse`, then batch, then `transform(training=False)`:
    the tf.data code path, run eagerly - not the serving graph.
    """
    features = {}
    for name, pre in functions.preprocessors.items():
        raw = functions._raw_for(name, pre, raw_batch)
        size = int(tf.shape(tf.nest.flatten(raw)[0])[0])
        parsed = [pre.parse(tf.nest.map_structure(lambda t: t[i], raw))
                  for i in range(size)]
        stacked = tf.nest.map_structure(lambda *xs: tf.stack(xs), *parsed)
        features.update(pre.transform(stacked, training=False))
    inputs = functions._model_inputs(features)
    return functions.predict_model_inputs(inputs)


def export(model, preprocessors, name, *, golden_examples,
           base_dir="saved_models", version=None, example_features=None,
           verify=True, serving_base_path=None, verify_timeout=600,
           atol=1e-5):
    """Exports `model` with its preprocessing as a TF Serving SavedModel.

    Args:
        model: a model built by `keras_mm.build_model` (trained).
        preprocessors: `{model input name: preprocessor}`, the objects the
            training pipeline used (fitted).
        name: the served model name (`saved_models/<name>/`).
        golden_examples: a batch of raw request values
            (`{raw input key: list}`, e.g. bytes of real examples); stored
            with the export, with the Keras model's outputs on them, for the
            verifier and for TF Serving warm-up.
        base_dir: folder holding the models.
        version: integer version; default the next free one.
        example_features: `{key: tf.io feature}` of the training TFRecords
            (enables the `serve_examples` signature).
        verify: run `keras_mm.serving.verify` before publishing.
        serving_base_path: base_path written to `models.config`.
        verify_timeout: seconds allowed to the verifier.
        atol: tolerance of the golden comparison.

    Returns:
        The path of the published version folder.
    """
    if not str(name) or os.sep in str(name) or str(name).startswith("."):
        raise ExportError(
            f"export name {name!r} must be a plain folder name such as "
            "'demo'")
    model_dir = os.path.join(os.fspath(base_dir), str(name))
    remove_stale_temp_dirs(model_dir)
    version = int(version) if version is not None \
        else next_version(model_dir)
    final_dir = os.path.join(model_dir, str(version))
    if os.path.exists(final_dir):
        raise ExportError(
            f"{final_dir} already exists; versions are immutable - omit "
            "`version` to take the next free one")

    functions = ServingFunctions(model, preprocessors, example_features)
    raw_spec = functions.raw_signature()
    missing = sorted(set(raw_spec) - set(golden_examples))
    if missing:
        raise ExportError(
            f"golden_examples lacks inputs {missing}; give a batch of raw "
            f"values for every serving input ({sorted(raw_spec)})")
    golden = {k: _to_batch(golden_examples[k], spec)
              for k, spec in raw_spec.items()}
    expected = training_path_outputs(functions, golden)

    tmp_dir = temp_dir_for(model_dir, str(version))
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for resource in functions.resources():
            archive.track(resource)
        archive.add_endpoint("serving_default", functions.serve_raw,
                             input_signature=[raw_spec])
        archive.add_endpoint("serve_tensors", functions.serve_tensors,
                             input_signature=[functions.tensor_signature()])
        if example_features is not None:
            archive.add_endpoint(
                "serve_examples", functions.serve_examples,
                input_signature=[tf.TensorSpec([None], tf.string,
                                               name="examples")])
        archive.write_out(tmp_dir, verbose=False)

        metadata = _metadata(functions, name, version, golden, expected,
                             atol)
        meta_path = os.path.join(tmp_dir, METADATA_FILE)
        os.makedirs(os.path.dirname(meta_path), exist_ok=True)
        with open(meta_path, "w") as f:
            json.dump(metadata, f, indent=1)
        write_warmup_requests(
            tmp_dir, str(name),
            [{k: v.numpy() for k, v in golden.items()}])
        if verify:
            report = verify_export(tmp_dir, timeout=verify_timeout)
            if not report["ok"]:
                raise ExportError(
                    f"export of {name!r} failed verification; nothing was "
                    "published:\n" + json.dumps(report, indent=2))
        write_serving_config(model_dir, str(name),
                             base_path=serving_base_path)
        os.rename(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return final_dir


def _metadata(functions, name, version, golden, expected, atol):
    inputs = {}
    for key, spec in functions.raw_signature().items():
        pre = functions._owner(key)
        config = pre.get_config()
        info = {"dtype": spec.dtype.name, "shape": spec.shape.as_list(),
                "modality": pre.modality}
        if spec.dtype == tf.string:
            info["max_bytes"] = raw_input_limit(pre)
        if pre.modality == "audio":
            info["sample_rate"] = int(config.get("sample_rate", 16000))
        inputs[key] = info
    return {
        "format": 1,
        "name": str(name),
        "version": int(version),
        "inputs": inputs,
        "heads": {h: k for h, (k, _) in functions.heads.items()},
        "class_names": functions.class_names,
        "presence_order": functions.presence_order,
        "atol": atol,
        "golden": {
            "num_examples": int(tf.shape(next(iter(golden.values())))[0]),
            "inputs": {k: encode_tensor(v) for k, v in golden.items()},
            "outputs": {k: encode_tensor(v) for k, v in expected.items()},
        },
        "keras_mm_version": __import__("keras_mm").__version__,
    }
