"""Shared checks for keras_mm layers.

`run_layer_checks` gives a layer its standard battery in one call:

1. `get_config` / `from_config` round trip (and Keras serialization);
2. eager call with the expected output shape, equal to
   `compute_output_shape`;
3. symbolic call inside a functional model (batch dimension `None`);
4. every trainable weight gets a non-zero gradient;
5. `.keras` save, then `keras.saving.load_model` *without* custom_objects,
   gives the same outputs (atol 1e-6);
6. a few `fit` steps lower the loss on a learnable toy target, compiled with
   XLA (`jit_compile=True`) unless `xla=False`;
7. the `mixed_bfloat16` policy: the layer runs and its output is finite.
"""

import numpy as np
import keras
from keras import ops
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_mm_tests")
class ReduceToVector(keras.layers.Layer):
    """Test helper: averages all axes between batch and features."""

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        while len(x.shape) > 2:
            x = ops.mean(x, axis=1)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def _to_tensor(x):
    return tf.convert_to_tensor(x)


def _spec_input(x, name):
    x = np.asarray(x)
    dtype = {"b": "bool", "i": "int32", "u": "int32"}.get(x.dtype.kind,
                                                         "float32")
    if x.dtype.kind == "U" or x.dtype.kind == "O":
        dtype = "string"
    return keras.Input(shape=x.shape[1:], dtype=dtype, name=name)


def _is_array(x):
    return isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "shape")


def _make_symbolic(inputs, call_kwargs):
    """Builds keras.Input placeholders mirroring the concrete arguments."""
    flat, names = [], []

    def make(path, x):
        name = "_".join(str(p) for p in path) or "x"
        inp = _spec_input(x, name)
        flat.append(inp)
        names.append(name)
        return inp

    if isinstance(inputs, dict):
        leaves = [make(path, x)
                  for path, x in keras.tree.flatten_with_path(inputs)]
        sym_inputs = keras.tree.pack_sequence_as(inputs, leaves)
    else:
        sym_inputs = make(("x",), inputs)
    sym_kwargs = {}
    for key, value in (call_kwargs or {}).items():
        if _is_array(value):
            sym_kwargs[key] = make((key,), value)
        else:
            sym_kwargs[key] = value
    return sym_inputs, sym_kwargs, flat


def _flat_values(inputs, call_kwargs):
    values = list(keras.tree.flatten(inputs)) if isinstance(inputs, dict) \
        else [inputs]
    for value in (call_kwargs or {}).values():
        if _is_array(value):
            values.append(value)
    return [np.asarray(v) for v in values]


def _wrap(layer, inputs, call_kwargs):
    sym_inputs, sym_kwargs, flat = _make_symbolic(inputs, call_kwargs)
    out = layer(sym_inputs, **sym_kwargs)
    return keras.Model(flat, out), out


def _first(out):
    return keras.tree.flatten(out)[0]


def run_layer_checks(layer_cls, init_kwargs, inputs, *, tmp_path,
                     call_kwargs=None, expected_output_shape=None,
                     xla=True, mixed_precision=True, fit=True,
                     grad_exempt=(), save_atol=1e-6):
    """Runs the standard battery of layer checks (see module docstring).

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        inputs: concrete inputs (array or dict of arrays), batch first.
        tmp_path: pytest `tmp_path` for the `.keras` file.
        call_kwargs: extra call arguments; arrays among them (e.g. a presence
            mask) become model inputs too.
        expected_output_shape: full output shape for the concrete batch.
        xla: compile the fit step with `jit_compile=True`.
        mixed_precision: also run under `mixed_bfloat16`.
        fit: run the fit check.
        grad_exempt: substrings of weight paths allowed a zero gradient.

    Returns:
        The eager output of a fresh layer (for further assertions).
    """
    call_kwargs = call_kwargs or {}
    keras.utils.set_random_seed(0)

    # 1. config round trip
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert type(revived) is layer_cls

    # 2. eager call
    eager_out = layer(inputs, **call_kwargs)
    out0 = _first(eager_out)
    if expected_output_shape is not None:
        assert tuple(out0.shape) == tuple(expected_output_shape), (
            f"eager output shape {tuple(out0.shape)} != "
            f"{tuple(expected_output_shape)}")
    assert np.all(np.isfinite(ops.convert_to_numpy(
        ops.cast(out0, "float32"))))

    # 3. symbolic call (fresh layer, so the symbolic path builds it)
    keras.utils.set_random_seed(0)
    layer = layer_cls(**init_kwargs)
    model, sym_out = _wrap(layer, inputs, call_kwargs)
    sym0 = _first(sym_out)
    if expected_output_shape is not None:
        assert tuple(sym0.shape)[1:] == tuple(expected_output_shape)[1:]
        shape_arg = keras.tree.map_structure(
            lambda x: tuple(np.asarray(x).shape), inputs)
        computed = layer.compute_output_shape(shape_arg)
        computed0 = keras.tree.flatten(computed)[0] \
            if isinstance(computed, (list, dict)) else computed
        if isinstance(computed0, int) or computed0 is None:
            computed0 = computed
        assert tuple(computed0)[1:] == tuple(expected_output_shape)[1:], (
            f"compute_output_shape {computed0} != {expected_output_shape}")
    values = _flat_values(inputs, call_kwargs)
    ref = _first(model(values, training=False))

    # 4. every trainable weight gets a non-zero gradient
    weights = model.trainable_weights
    assert weights, "layer has no trainable weights"
    probe = np.random.RandomState(1).uniform(
        0.5, 1.5, size=tuple(ref.shape)).astype("float32")
    with tf.GradientTape() as tape:
        out = _first(model(values, training=False))
        loss = tf.reduce_sum(tf.cast(out, "float32") ** 2 * probe)
    grads = tape.gradient(loss, weights)
    dead = [w.path for w, g in zip(weights, grads)
            if (g is None or not np.any(ops.convert_to_numpy(g) != 0))
            and not any(s in w.path for s in grad_exempt)]
    assert not dead, f"weights without gradient: {dead}"

    # 5. .keras save / load without custom_objects
    path = str(tmp_path / f"{layer_cls.__name__}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(keras.tree.flatten(model(values, training=False)),
                    keras.tree.flatten(loaded(values, training=False))):
        np.testing.assert_allclose(
            ops.convert_to_numpy(a), ops.convert_to_numpy(b),
            atol=save_atol, rtol=0)

    # 6. fit lowers the loss on a learnable toy target (XLA-compiled)
    if fit:
        vec = ReduceToVector()(sym0)
        pred = keras.layers.Dense(1, name="toy_head")(vec)
        toy = keras.Model(model.inputs, pred)
        rng = np.random.RandomState(2)
        n = values[0].shape[0]
        y = rng.normal(size=(n, 1)).astype("float32")
        toy.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                    jit_compile=xla)
        before = toy.evaluate(values, y, verbose=0)
        toy.fit(values, y, epochs=5, batch_size=n, verbose=0, shuffle=False)
        after = toy.evaluate(values, y, verbose=0)
        assert after < before, f"loss did not fall: {before} -> {after}"

    # 7. mixed precision
    if mixed_precision:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            mp_layer = layer_cls(**init_kwargs)
            mp_out = _first(mp_layer(inputs, **call_kwargs))
            assert np.all(np.isfinite(ops.convert_to_numpy(
                ops.cast(mp_out, "float32"))))
        finally:
            keras.config.set_dtype_policy(previous)
    return eager_out
