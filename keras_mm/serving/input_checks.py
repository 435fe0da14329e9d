"""In-graph request checks of the serving signatures (safe text only).

Every message here is static text written by keras_mm plus integer data
(shapes, indices, id ranges): never the bytes of a request, so TF's error
formatting always yields a readable `InvalidArgumentError` in any client.

- `check_batch`: the request holds at least one example (the message
  starts with "empty batch", the same in all three signatures);
- `check_model_inputs`: `serve_tensors`' preprocessed inputs: shape, dtype
  range (ids in `[0, vocabulary size)`), finiteness, presence;
- `check_examples`: `serve_examples`' serialized `tf.train.Example`s can be
  parsed (a garbage value would otherwise make `parse_example` put its raw
  bytes into the error message).
"""

import tensorflow as tf

EMPTY_BATCH = "empty batch: send at least one example"
# A feature name no record has: parsing it checks a serialized Example's
# structure (the part whose errors would quote the bytes) and nothing else.
_PROBE_KEY = "\x00keras_mm_probe"


def _shape_text(shape):
    dims = ["batch"] + ["any" if d is None else str(d) for d in shape[1:]]
    return "[" + ", ".join(dims) + "]"


def check_batch(value, name):
    """Asserts that `value` (batch-first) holds at least one example."""
    del name
    return tf.debugging.assert_positive(tf.shape(value)[0],
                                        message=EMPTY_BATCH)


def check_shape(value, shape, name):
    """Asserts `value` has `shape` (`None` = any); names input `name`."""
    rank = len(shape)
    actual = tf.shape(value, out_type=tf.int64)
    known = tf.constant([-1 if d is None else int(d) for d in shape],
                        tf.int64)
    padded = tf.concat([actual, tf.fill([rank], tf.constant(-1, tf.int64))],
                       0)[:rank]
    ok = tf.logical_and(
        tf.equal(tf.size(actual), rank),
        tf.reduce_all(tf.logical_or(tf.equal(padded, known),
                                    tf.equal(known, -1))))
    return tf.debugging.Assert(ok, [
        f"input `{name}`: expected shape {_shape_text(shape)}, got",
        actual, "; send tensors of the shape of the model input (as the "
                "preprocessors give them)"], summarize=16)


def check_model_inputs(inputs, specs, id_bounds=None, presence=None):
    """The checks of `serve_tensors`, as a list of assert ops.

    Args:
        inputs: `{model input name: tensor}`.
        specs: `{model input name: tf.TensorSpec}` of the model's inputs.
        id_bounds: `{input: vocabulary size (int) or per-column sizes
            (list)}` of integer id inputs: ids must lie in `[0, size)`.
        presence: the fusion's modality order where the model has a
            `presence` input (each example needs one present modality).
    """
    id_bounds = id_bounds or {}
    names = list(specs)
    checks = [check_batch(inputs[names[0]], names[0])]
    batch = tf.shape(inputs[names[0]])[0]
    for name in names:
        value = inputs[name]
        spec = specs[name]
        checks.append(check_shape(value, spec.shape.as_list(), name))
        checks.append(tf.debugging.Assert(
            tf.equal(tf.shape(value)[0], batch),
            [f"input `{name}`: its batch size differs from that of input "
             f"`{names[0]}`; send one value per example for every input"]))
        dtype = tf.as_dtype(spec.dtype)
        if dtype.is_floating:
            checks.append(tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(value)),
                [f"input `{name}`: holds NaN or infinite values; "
                 "preprocessed inputs must be finite (send a missing "
                 "modality as presence 0, or use serving_default with raw "
                 "values)"]))
        if name == "presence" and presence is not None:
            binary = tf.reduce_all(tf.logical_or(tf.equal(value, 0.0),
                                                 tf.equal(value, 1.0)))
            checks.append(tf.debugging.Assert(binary, [
                f"input `presence`: values must be 0 (absent) or 1 "
                f"(present), one column per modality in the order "
                f"{', '.join(presence)}"]))
            rows = tf.reduce_max(value, axis=1)
            absent = tf.where(tf.logical_not(rows > 0))[:, 0]
            checks.append(tf.debugging.Assert(
                tf.equal(tf.size(absent), 0),
                ["input `presence`: every modality is absent (all 0) in "
                 "the examples at these batch indices:", absent,
                 f"; mark at least one of {', '.join(presence)} present"],
                summarize=16))
        if name in id_bounds and dtype.is_integer:
            bound = id_bounds[name]
            size = tf.constant(bound, dtype)
            what = (f"its vocabulary size {bound}" if isinstance(bound, int)
                    else f"the column cardinalities {list(bound)}")
            low = tf.reduce_min(tf.concat([tf.reshape(value, [-1]),
                                           tf.zeros([1], dtype)], 0))
            checks.append(tf.debugging.Assert(
                tf.logical_and(tf.greater_equal(low, 0),
                               tf.reduce_all(tf.less(value, size))),
                [f"input `{name}`: ids must lie in [0, {what}); got ids "
                 "from", low, "to", tf.reduce_max(tf.concat(
                     [tf.reshape(value, [-1]), tf.zeros([1], dtype)], 0)),
                 "; send the ids the preprocessor gives (0 = padding or "
                 "OOV)"], summarize=16))
    return checks


def check_examples(serialized, name="examples"):
    """Assert ops: batch not empty, each value a parseable Example."""
    checks = [check_batch(serialized, name)]
    count = tf.shape(serialized, out_type=tf.int64)[0]
    probe = {_PROBE_KEY: tf.io.VarLenFeature(tf.int64)}

    def parse(i):
        parsed = tf.io.parse_single_example(tf.gather(serialized, i), probe)
        return i, tf.size(parsed[_PROBE_KEY].values, out_type=tf.int64)

    def add(state, element):
        seen, total = state
        i, size = element
        return (seen + tf.one_hot(i, tf.cast(count, tf.int32),
                                  dtype=tf.int64), total + size)

    parsed = tf.data.Dataset.range(count).map(parse).ignore_errors()
    seen, total = parsed.reduce(
        (tf.zeros([count], tf.int64), tf.constant(0, tf.int64)), add)
    bad = tf.where(tf.equal(seen, 0))[:, 0]
    checks.append(tf.debugging.Assert(
        tf.logical_and(tf.equal(tf.size(bad), 0), total >= 0),
        [f"input `{name}`: the values at these batch indices are not "
         "serialized tf.train.Example protos:", bad,
         "; send tf.train.Example(...).SerializeToString() values, as "
         "the training TFRecords hold them"], summarize=16))
    return checks
