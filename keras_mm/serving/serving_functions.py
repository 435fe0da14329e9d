"""The serving functions of an export: raw inputs -> predictions.

`ServingFunctions` wires the *same* preprocessor objects used by the
training pipeline in front of the Keras model:

- `serve_raw` (`serving_default`): raw request values (image bytes, text,
  WAV bytes, encoded frames, float arrays), preprocessed in-graph;
- `serve_tensors`: already preprocessed model inputs;
- `serve_examples`: serialized `tf.train.Example`s with the training
  TFRecords' feature names.

Each returns, per head: `<head>_probabilities`, `<head>_class_id` and
`<head>_class_name` (classification), `<head>_probability` (binary),
`<head>_scores` (multilabel) or `<head>_value` (regression).
"""

import tensorflow as tf

from keras_mm.errors import ExportError

DEFAULT_MAX_BYTES = {"image": 20 << 20, "text": 1 << 20,
                     "video": 20 << 20}


def _head_kind(layer):
    name = type(layer).__name__
    return {"ClassificationHead": "classification",
            "BinaryHead": "binary",
            "MultilabelHead": "multilabel",
            "RegressionHead": "regression"}.get(name)


def find_heads(model):
    """Maps each model output name to `(kind, head layer)`."""
    heads = {}
    output_names = list(model.output_names)
    for name in output_names:
        layer = None
        for candidate in (name, f"{name}_head"):
            try:
                layer = model.get_layer(candidate)
                break
            except ValueError:
                continue
        kind = _head_kind(layer) if layer is not None else None
        heads[name] = (kind or "regression", layer)
    return heads


def raw_input_limit(preprocessor):
    """Largest accepted raw value in bytes, for string inputs."""
    config = preprocessor.get_config()
    if config.get("max_bytes"):
        return int(config["max_bytes"])
    if preprocessor.modality == "audio":
        rate = int(config.get("sample_rate", 16000))
        seconds = float(config.get("duration", 1.0))
        # 16-bit stereo at 4x the configured duration, plus headers.
        return int(4 * seconds * rate * 2 * 2) + 4096
    return DEFAULT_MAX_BYTES.get(preprocessor.modality, 20 << 20)


class ServingFunctions:
    """Builds the `tf.function`s of an export.

    Args:
        model: the trained functional model from `keras_mm.build_model`.
        preprocessors: dict `{model input name: preprocessor}`, the same
            objects (and fitted state) the training pipeline used.
        example_features: optional dict `{raw input key: tf.io feature}` of
            the training TFRecords; enables `serve_examples`.
    """

    def __init__(self, model, preprocessors, example_features=None):
        self.model = model
        self.preprocessors = dict(preprocessors)
        self.example_features = example_features
        self.heads = find_heads(model)
        self.model_input_names = [t.name.split(":")[0]
                                  for t in model.inputs]
        self.presence_order = None
        if "presence" in self.model_input_names:
            fusion = model.get_layer("fusion")
            self.presence_order = list(fusion.modalities)
        self.class_names = {}
        for head, (kind, layer) in self.heads.items():
            if kind == "classification":
                names = getattr(layer, "class_names", None) or [
                    str(i) for i in range(layer.num_classes)]
                self.class_names[head] = [str(n) for n in names]
        self._check_inputs_covered()

    def _check_inputs_covered(self):
        produced = set()
        for name, pre in self.preprocessors.items():
            produced.update(pre.output_keys()
                            if hasattr(pre, "output_keys") else [name])
        if self.presence_order is not None:
            produced.add("presence")
        missing = [n for n in self.model_input_names if n not in produced]
        if missing:
            raise ExportError(
                f"model inputs {missing} have no preprocessor; pass "
                "preprocessors={input name: preprocessor} for every model "
                f"input (got {sorted(self.preprocessors)})")

    # -- signatures ---------------------------------------------------------

    def raw_signature(self):
        """`{key: tf.TensorSpec}` of `serving_default`'s inputs."""
        spec = {}
        for pre in self.preprocessors.values():
            for key, tensor_spec in pre.raw_signature().items():
                spec[key] = tf.TensorSpec(tensor_spec.shape,
                                          tensor_spec.dtype, name=key)
        return spec

    def tensor_signature(self):
        """`{model input name: tf.TensorSpec}` of `serve_tensors`."""
        return {t.name.split(":")[0]: tf.TensorSpec(
            t.shape, t.dtype, name=t.name.split(":")[0])
            for t in self.model.inputs}

    # -- graph code ---------------------------------------------------------

    def _raw_for(self, name, pre, raw):
        keys = list(pre.raw_signature())
        if keys == [name]:
            return raw[name]
        return {k: raw[k] for k in keys}

    def preprocess(self, raw):
        """Raw request dict -> model input dict (in-graph)."""
        first = next(iter(raw.values()))
        batch = tf.shape(first)[0]
        checks = [tf.debugging.assert_positive(
            batch, message="empty batch: send at least one example")]
        for key, value in raw.items():
            if value.dtype == tf.string:
                pre = self._owner(key)
                limit = raw_input_limit(pre)
                longest = tf.reduce_max(
                    tf.concat([tf.reshape(tf.strings.length(value), [-1]),
                               [0]], 0))
                checks.append(tf.debugging.assert_less_equal(
                    longest, limit,
                    message=f"input {key!r}: a value is longer than "
                            f"{limit} bytes; send smaller inputs"))
            other = tf.shape(value)[0]
            checks.append(tf.debugging.assert_equal(
                other, batch,
                message=f"input {key!r}: batch size differs from the "
                        "other inputs"))
        with tf.control_dependencies(checks):
            raw = {k: tf.identity(v) for k, v in raw.items()}
        features = {}
        for name, pre in self.preprocessors.items():
            features.update(pre(self._raw_for(name, pre, raw),
                                training=False))
        return self._model_inputs(features)

    def _owner(self, key):
        for pre in self.preprocessors.values():
            if key in pre.raw_signature():
                return pre
        raise KeyError(key)

    def _model_inputs(self, features):
        present = {name: features.get(f"{name}_present")
                   for name in self.preprocessors}
        if self.presence_order is not None:
            columns = []
            for name in self.presence_order:
                column = present.get(name)
                if column is None:
                    column = tf.ones_like(
                        next(v for v in present.values() if v is not None))
                columns.append(tf.cast(column, tf.float32))
            features["presence"] = tf.stack(columns, axis=1)
        else:
            checks = []
            for name, column in present.items():
                if column is None:
                    continue
                checks.append(tf.debugging.assert_equal(
                    tf.reduce_min(tf.cast(column, tf.float32)), 1.0,
                    message=f"input {name!r} is empty or missing in the "
                            "request, and this model was trained without "
                            "presence masks: send a value for every input"))
            with tf.control_dependencies(checks):
                features = {k: tf.identity(v) for k, v in features.items()}
        return {k: features[k] for k in self.model_input_names}

    def postprocess(self, outputs):
        """Model outputs -> the signature's named outputs."""
        if not isinstance(outputs, dict):
            outputs = dict(zip(self.model.output_names,
                               tf.nest.flatten(outputs)))
        result = {}
        for head, (kind, _) in self.heads.items():
            value = tf.cast(outputs[head], tf.float32)
            if kind == "classification":
                class_id = tf.argmax(value, axis=-1, output_type=tf.int32)
                names = tf.constant(self.class_names[head])
                result[f"{head}_probabilities"] = value
                result[f"{head}_class_id"] = class_id
                result[f"{head}_class_name"] = tf.gather(names, class_id)
            elif kind == "binary":
                result[f"{head}_probability"] = value
            elif kind == "multilabel":
                result[f"{head}_scores"] = value
            else:
                result[f"{head}_value"] = value
        return result

    def predict_model_inputs(self, inputs):
        return self.postprocess(self.model(inputs, training=False))

    def serve_raw(self, raw):
        return self.predict_model_inputs(self.preprocess(raw))

    def serve_tensors(self, inputs):
        return self.predict_model_inputs(inputs)

    def serve_examples(self, serialized):
        parsed = tf.io.parse_example(serialized, self.example_features)
        raw = {}
        for key, spec in self.raw_signature().items():
            value = parsed[key]
            if isinstance(value, tf.SparseTensor):
                value = tf.sparse.to_dense(value)
            raw[key] = tf.reshape(value, [-1] + list(spec.shape[1:])) \
                if spec.shape.rank and None not in spec.shape[1:] \
                else value
        return self.serve_raw(raw)

    def resources(self):
        """Lookup tables and other resources the exporter must track."""
        tracked = []
        for pre in self.preprocessors.values():
            if hasattr(pre, "resources"):
                tracked.extend(pre.resources())
        return tracked
