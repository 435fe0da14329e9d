"""The serving functions of an export: raw inputs -> predictions.

`ServingFunctions` wires the *same* preprocessor objects used by the
training pipeline in front of the Keras model:

- `serve_raw` (`serving_default`): raw request values (image bytes, text,
  WAV bytes, encoded frames or GIF bytes, float series, table cells),
  preprocessed in-graph by each preprocessor's `__call__`
  (`transform(map_fn(parse, raw))`);
- `serve_tensors`: already preprocessed model inputs, checked in-graph
  (shape, ids in `[0, vocabulary size)`, finite values, 0/1 presence with
  one present modality per example: `keras_mm.serving.input_checks`);
- `serve_examples`: serialized `tf.train.Example`s with the training
  TFRecords' feature names (`keras_mm.data.tfrecords.feature_spec`); a
  value that is not an Example is refused by batch index, never quoted.

All three refuse an empty batch with "empty batch: send at least one
example".

Each returns, per head: `<head>_probabilities`, `<head>_class_id` and
`<head>_class_name` (classification), `<head>_probability` and
`<head>_class_id` (binary), `<head>_scores` (multilabel) or
`<head>_value` (regression and heads keras_mm does not know).

Missing modalities: a preprocessor reports an empty raw value (empty
bytes / text, no frames, an all-NaN series or row) in `<name>_present`.
A model with a `presence` input gets those columns (in the fusion layer's
`modalities` order); a model without one rejects the request with
INVALID_ARGUMENT naming the input.
"""

import tensorflow as tf

from keras_mm.data import record_values
from keras_mm.data.input_columns import modality_kinds
from keras_mm.data import tfrecords
from keras_mm.errors import ExportError
from keras_mm.serving import input_checks

DEFAULT_MAX_BYTES = {"image": 20 << 20, "text": 1 << 20, "video": 20 << 20,
                     "sensor": 20 << 20, "tabular": 1 << 16}
# Longest audio request accepted by default: this many times the training
# duration, and at least this many seconds (16-bit stereo at the rate).
AUDIO_DURATION_FACTOR = 10
AUDIO_MIN_SECONDS = 30

_HEAD_KINDS = {"ClassificationHead": "classification",
               "BinaryHead": "binary",
               "MultilabelHead": "multilabel",
               "RegressionHead": "regression"}


def _head_kind(layer):
    for klass in type(layer).__mro__:
        if klass.__name__ in _HEAD_KINDS:
            return _HEAD_KINDS[klass.__name__]
    return None


def _layer_or_none(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def find_heads(model):
    """Maps each model output name to `(kind, head layer or None)`.

    `keras_mm.build_model` names each head layer after its head (the model
    output key); a `<name>_head` layer is accepted too. Outputs made by
    other layers get kind `"value"` (returned as `<name>_value`).
    """
    heads = {}
    for name in model.output_names:
        layer = None
        for candidate in (name, f"{name}_head"):
            layer = _layer_or_none(model, candidate)
            if layer is not None:
                break
        kind = _head_kind(layer) if layer is not None else None
        heads[name] = (kind or "value", layer)
    return heads


def _op_name(key):
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in key)


def _input_name(tensor):
    return tensor.name.split(":")[0]


def raw_input_limit(preprocessor, overrides=None):
    """Largest accepted raw value in bytes, for string inputs.

    Args:
        preprocessor: the preprocessor owning the input.
        overrides: optional `{preprocessor name or modality: bytes}`.
    """
    overrides = overrides or {}
    for key in (preprocessor.name, preprocessor.modality):
        if key in overrides:
            return int(overrides[key])
    if preprocessor.modality == "audio":
        config = preprocessor.get_config()
        rate = int(config.get("sample_rate", 16000))
        seconds = max(AUDIO_DURATION_FACTOR * float(config.get("duration",
                                                               1.0)),
                      AUDIO_MIN_SECONDS)
        return int(seconds * rate * 2 * 2) + 4096
    return DEFAULT_MAX_BYTES.get(preprocessor.modality, 20 << 20)


class ServingFunctions:
    """Builds the `tf.function` bodies of an export.

    Args:
        model: the trained model from `keras_mm.build_model` (any Keras
            model whose inputs are produced by the preprocessors works).
        preprocessors: `{model input name: preprocessor}` (or a list), the
            same objects, with the same fitted state, as the training
            pipeline used.
        columns: `{input name: column}` (for a tabular input
            `{raw key: column}`) of the training TFRecords, as given to
            `keras_mm.data.Pipeline` (default: the input name / raw key).
        column_kinds: `{column: kind}` the columns are stored with (the
            `columns` of the shards' `features.json`; default: `file` for
            image/audio/GIF/CSV/.npy bytes, `files` for frames, `string`
            for text and categories, `float` for numbers, `floats` for
            in-memory series).
        max_bytes: `{preprocessor name or modality: bytes}` overriding the
            largest accepted raw value (see `raw_input_limit`).
    """

    def __init__(self, model, preprocessors, columns=None, column_kinds=None,
                 max_bytes=None):
        self.model = model
        if isinstance(preprocessors, (list, tuple)):
            preprocessors = {p.name: p for p in preprocessors}
        self.preprocessors = dict(preprocessors)
        if not self.preprocessors:
            raise ExportError("give at least one preprocessor")
        for key, pre in self.preprocessors.items():
            if getattr(pre, "name", key) != key:
                raise ExportError(
                    f"preprocessors[{key!r}] is named {pre.name!r}: key each "
                    "preprocessor by its name (the model input name)")
        self.max_bytes = dict(max_bytes or {})
        self.heads = find_heads(model)
        self.model_input_names = [_input_name(t) for t in model.inputs]
        self._check_inputs_covered()
        self.presence_order = None
        if "presence" in self.model_input_names:
            self.presence_order = self._find_presence_order()
        self.class_names = {}
        for head, (kind, layer) in self.heads.items():
            if kind == "classification":
                names = getattr(layer, "class_names", None) or [
                    str(i) for i in range(layer.num_classes)]
                self.class_names[head] = [str(n) for n in names]
        self._owners = {}
        for pre in self.preprocessors.values():
            for key in pre.raw_signature():
                if key in self._owners:
                    raise ExportError(
                        f"raw input {key!r} is read by both "
                        f"{self._owners[key].name!r} and {pre.name!r}; "
                        "rename a column so each raw input has one owner")
                self._owners[key] = pre
        self.columns = self._example_columns(columns or {})
        self.column_kinds = self._example_kinds(column_kinds or {})

    # -- checks --------------------------------------------------------------

    def _find_presence_order(self):
        fusion = _layer_or_none(self.model, "fusion")
        order = list(getattr(fusion, "modalities", None) or [])
        if not order:
            spec = getattr(self.model, "spec", None)
            order = list((spec or {}).get("inputs") or [])
        if not order:
            raise ExportError(
                "the model has a `presence` input but no `fusion` layer with "
                "`modalities` saying its column order; build it with "
                "keras_mm.build_model")
        unknown = [m for m in order if m not in self.preprocessors]
        if unknown:
            raise ExportError(
                f"presence columns {unknown} have no preprocessor; pass "
                f"preprocessors for {order}")
        return order

    def _check_inputs_covered(self):
        produced = {}
        for pre in self.preprocessors.values():
            for key, spec in pre.output_signature().items():
                produced[key] = (pre, spec)
        for tensor in self.model.inputs:
            name = _input_name(tensor)
            if name == "presence" and name not in produced:
                continue      # stacked from the `<name>_present` columns
            if name not in produced:
                raise ExportError(
                    f"model input {name!r} has no preprocessor: pass "
                    "preprocessors={input name: preprocessor} covering every "
                    f"model input (the preprocessors give {sorted(produced)})")
            pre, spec = produced[name]
            want = list(tensor.shape)[1:]
            have = spec.shape.as_list()[1:]
            if len(want) != len(have) or any(
                    w is not None and h is not None and w != h
                    for w, h in zip(want, have)):
                raise ExportError(
                    f"model input {name!r} has shape {[None] + want} but "
                    f"{type(pre).__name__}({pre.name!r}) gives "
                    f"{[None] + have}; make the preprocessor's settings match "
                    "the spec's input shape")
            dtype = tf.as_dtype(tensor.dtype)
            if dtype.is_bool != spec.dtype.is_bool or (
                    dtype.is_integer != spec.dtype.is_integer):
                raise ExportError(
                    f"model input {name!r} is {dtype.name} but "
                    f"{type(pre).__name__}({pre.name!r}) gives "
                    f"{spec.dtype.name}")

    def _example_columns(self, columns):
        unknown = sorted(set(columns) - set(self.preprocessors))
        if unknown:
            raise ExportError(f"columns names {unknown}, which are not "
                              f"preprocessors ({sorted(self.preprocessors)})")
        mapping = {}
        for name, pre in self.preprocessors.items():
            keys = list(pre.raw_signature())
            given = columns.get(name)
            if isinstance(given, str):
                if len(keys) != 1:
                    raise ExportError(
                        f"columns[{name!r}]={given!r}: this preprocessor "
                        f"reads {keys}; give a dict {{raw key: column}}")
                given = {keys[0]: given}
            given = dict(given or {})
            for key in keys:
                default = name if len(keys) == 1 else key
                mapping[key] = given.get(key, default)
        return mapping

    def _example_kinds(self, stored):
        kinds = {}
        for pre in self.preprocessors.values():
            for key, wanted in modality_kinds(pre, arrays=True).items():
                column = self.columns[key]
                kind = stored.get(column)
                if kind is None:
                    kind = "string" if wanted == "key" else wanted
                allowed = {"file": ("file",), "files": ("files",),
                           "string": ("string",), "floats": ("floats",),
                           "key": ("string", "int", "float"),
                           "float": ("float", "int", "string")}[wanted]
                if kind not in allowed:
                    raise ExportError(
                        f"column {column!r} is stored as {kind!r} but input "
                        f"{key!r} reads it as {wanted!r} (allowed: "
                        f"{', '.join(allowed)})")
                kinds[key] = (column, wanted, kind)
        return kinds

    # -- signatures -----------------------------------------------------------

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
        return {_input_name(t): tf.TensorSpec(
            t.shape, t.dtype, name=_input_name(t)) for t in self.model.inputs}

    def example_signature(self):
        return tf.TensorSpec([None], tf.string, name="examples")

    def example_feature_spec(self):
        """The `tf.io.parse_example` spec of `serve_examples`."""
        return tfrecords.feature_spec(
            {column: kind for column, _, kind in self.column_kinds.values()})

    def owner(self, key):
        """The preprocessor that reads raw input `key`."""
        return self._owners[key]

    # -- graph code -----------------------------------------------------------

    def check_request(self, raw, keys=None):
        """Request-level checks (batch, sizes) as control dependencies, of
        the raw inputs `keys` (default: every raw input)."""
        specs = self.raw_signature()
        keys = list(specs) if keys is None else list(keys)
        # EnsureShape runs at request time (a signature does not check the
        # rank of what it is fed); its error names the input.
        raw = {k: tf.ensure_shape(raw[k], specs[k].shape,
                                  name=f"check_shape_{_op_name(k)}")
               for k in keys}
        batch = tf.shape(raw[keys[0]])[0]
        checks = [input_checks.check_batch(raw[keys[0]], keys[0])]
        for key in keys:
            value = raw[key]
            checks.append(tf.debugging.assert_equal(
                tf.shape(value)[0], batch,
                message=f"input `{key}`: its batch size differs from that "
                        f"of input `{keys[0]}`; send one value per example "
                        "for every input"))
            if value.dtype == tf.string:
                limit = raw_input_limit(self.owner(key), self.max_bytes)
                longest = tf.reduce_max(tf.concat(
                    [tf.reshape(tf.strings.length(value), [-1]), [0]], 0))
                checks.append(tf.debugging.assert_less_equal(
                    longest, limit,
                    message=f"input `{key}`: a value is longer than the "
                            f"{limit} bytes this export accepts"))
        with tf.control_dependencies(checks):
            return {k: tf.identity(raw[k]) for k in keys}

    def preprocess(self, raw):
        """Raw request dict -> model input dict (in-graph)."""
        raw = self.check_request(raw)
        features = {}
        for pre in self.preprocessors.values():
            features.update(pre(raw, training=False))
        return self.model_inputs(features)

    def model_inputs(self, features):
        """Preprocessor outputs -> the model's inputs (adds `presence`, or
        rejects absent modalities when the model has no presence input)."""
        features = dict(features)
        present = {name: features.get(f"{name}_present")
                   for name in self.preprocessors}
        checks = []
        if self.presence_order is not None:
            columns = []
            for name in self.presence_order:
                column = present.get(name)
                if column is None:
                    column = tf.ones_like(next(
                        v for v in present.values() if v is not None))
                columns.append(tf.cast(column, tf.float32))
            presence = tf.stack(columns, axis=1)
            checks.append(tf.debugging.assert_positive(
                tf.reduce_max(presence, axis=1),
                message="an example has every input empty: send at least "
                        "one of " + ", ".join(
                            f"`{k}`" for k in self.raw_signature())))
            features["presence"] = presence
        else:
            for name, column in present.items():
                if column is None:
                    continue
                keys = ", ".join(f"`{k}`" for k in
                                 self.preprocessors[name].raw_signature())
                checks.append(tf.debugging.assert_equal(
                    tf.reduce_min(tf.concat(
                        [tf.cast(column, tf.float32), [1.0]], 0)), 1.0,
                    message=f"input {keys} is empty in an example, and this "
                            "model was trained without a presence mask: "
                            "send a value for every input"))
        with tf.control_dependencies(checks):
            return {k: tf.identity(features[k])
                    for k in self.model_input_names}

    def postprocess(self, outputs):
        """Model outputs -> the signature's named outputs."""
        if not isinstance(outputs, dict):
            outputs = dict(zip(self.model.output_names,
                               tf.nest.flatten(outputs)))
        result = {}
        for head, (kind, _) in self.heads.items():
            value = tf.cast(outputs[head], tf.float32)
            if kind == "classification":
                class_id = tf.argmax(value, axis=-1, output_type=tf.int64)
                names = tf.constant(self.class_names[head])
                result[f"{head}_probabilities"] = value
                result[f"{head}_class_id"] = class_id
                result[f"{head}_class_name"] = tf.gather(names, class_id)
            elif kind == "binary":
                probability = tf.reshape(value, [-1])
                result[f"{head}_probability"] = probability
                result[f"{head}_class_id"] = tf.cast(probability >= 0.5,
                                                     tf.int64)
            elif kind == "multilabel":
                result[f"{head}_scores"] = value
            else:
                result[f"{head}_value"] = value
        return result

    def predict_model_inputs(self, inputs):
        return self.postprocess(self.model(inputs, training=False))

    def _shared(self, name, function, signature):
        # One traced function, called by every signature that needs it:
        # traced inline, each signature held its own copy of the model
        # graph (and serve_examples a second copy of the preprocessing),
        # which made saved_model.pb larger than a small model's weights.
        shared = self.__dict__.get(name)
        if shared is None:
            shared = tf.function(function, input_signature=[signature],
                                 autograph=False)
            self.__dict__[name] = shared
        return shared

    def predict_shared(self, inputs):
        """`predict_model_inputs` as one traced function (the signatures'
        shared model call)."""
        return self._shared("_predict_fn", self.predict_model_inputs,
                            self.tensor_signature())(inputs)

    def serve_raw(self, raw):
        return self._shared("_serve_raw_fn", self._serve_raw,
                            self.raw_signature())(raw)

    def _serve_raw(self, raw):
        return self.predict_shared(self.preprocess(raw))

    def id_bounds(self):
        """`{model input: vocabulary size or per-column cardinalities}` of
        the integer id inputs (the tower's, else the preprocessor's)."""
        bounds = {}
        for pre in self.preprocessors.values():
            tower = _layer_or_none(self.model, f"{pre.name}_tower")
            if pre.modality == "text":
                size = getattr(tower, "vocab_size", None) or getattr(
                    pre, "vocab_size", None) or getattr(
                    pre, "vocabulary_size", None)
                if size is not None:
                    bounds[pre.name] = int(size)
            elif pre.modality == "tabular" and pre.categorical:
                sizes = getattr(tower, "cardinalities", None) or \
                    pre.cardinalities
                bounds[f"{pre.name}_categorical"] = [int(c) for c in sizes]
        return {k: v for k, v in bounds.items()
                if k in self.model_input_names}

    def check_tensors(self, inputs):
        """`serve_tensors`' checks (shape, id range, finiteness, presence)
        as control dependencies of its inputs."""
        checks = input_checks.check_model_inputs(
            inputs, self.tensor_signature(), self.id_bounds(),
            self.presence_order)
        with tf.control_dependencies(checks):
            return {k: tf.identity(v) for k, v in inputs.items()}

    def serve_tensors(self, inputs):
        return self.predict_shared(self.check_tensors(inputs))

    def examples_to_raw(self, serialized):
        """Serialized `tf.train.Example`s -> the raw request dict.

        Refuses an empty batch and values that are not serialized Examples
        first, with messages that never quote the request's bytes."""
        with tf.control_dependencies(
                input_checks.check_examples(serialized)):
            serialized = tf.identity(serialized)
        parsed = tf.io.parse_example(serialized, self.example_feature_spec())
        specs = self.raw_signature()
        raw = {}
        for key, (column, wanted, kind) in self.column_kinds.items():
            value = parsed[column]
            if isinstance(value, tf.SparseTensor):
                default = "" if value.dtype == tf.string else float("nan")
                value = tf.sparse.to_dense(value, default_value=default)
            # THE record-value converter, as in the training pipeline.
            if wanted == "key":
                value = record_values.key_strings(value, kind, column)
            elif wanted == "float":
                value = record_values.float_values(value, kind, column)
            elif wanted == "floats":
                channels = specs[key].shape[-1]
                check = tf.debugging.Assert(
                    tf.equal(tf.shape(value)[1] % channels, 0),
                    [f"feature `{column}`: its float list has a length "
                     f"that is not a multiple of the {channels} channels "
                     f"of input `{key}`; store each series row by row"])
                with tf.control_dependencies([check]):
                    value = tf.reshape(value,
                                       [tf.shape(value)[0], -1, channels])
            raw[key] = value
        return raw

    def serve_examples(self, serialized):
        return self.serve_raw(self.examples_to_raw(serialized))

    def serialize_examples(self, raw_batch):
        """Raw batch (NumPy arrays) -> serialized Examples, as the TFRecord
        conversion writes them (for golden requests and tests)."""
        import numpy as np

        kinds = {column: kind for column, _, kind in
                 self.column_kinds.values()}
        size = len(next(iter(raw_batch.values())))
        serialized = []
        for i in range(size):
            values = {}
            for key, (column, wanted, kind) in self.column_kinds.items():
                value = raw_batch[key][i]
                if kind == "files":
                    value = [bytes(v) for v in value if len(v)]
                elif kind == "floats":
                    array = np.asarray(value, np.float32)
                    keep = ~np.all(np.isnan(array), axis=-1)
                    last = int(np.nonzero(keep)[0][-1]) + 1 if keep.any() \
                        else 0
                    value = array[:last].reshape(-1).tolist()
                elif kind in ("string", "file"):
                    value = bytes(value) if not isinstance(value, str) \
                        else value
                    if kind == "file" and not value:
                        value = None
                elif kind in ("float", "int"):
                    value = float(value) if kind == "float" else int(value)
                values[column] = value
            serialized.append(tfrecords.encode_example(
                values, kinds).SerializeToString())
        return serialized

    def resources(self):
        """Lookup tables and other resources the exporter must track."""
        tracked = []
        for pre in self.preprocessors.values():
            tracked.extend(pre.resources())
        return tracked
