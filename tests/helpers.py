"""Shared checks for keras_mm layers.

`run_layer_checks` gives a layer its standard battery in one call:

1. `get_config` / `from_config` round trip (and Keras serialization);
2. eager call with the expected output shape, equal to
   `compute_output_shape`;
3. symbolic call inside a functional model (batch dimension `None`);
4. every trainable weight gets a non-zero gradient;
5. `.keras` save, then `keras.saving.load_model` *without* custom_objects,
   gives the same outputs (atol 1e-6);
6. a few `fit` steps lower the loss on a learnable toy target (or on the
   caller's own target and loss, e.g. a head's `default_loss()`), compiled
   with XLA (`jit_compile=True`) unless `xla=False`;
7. mixed precision, as keras-hub's `TestCase.run_precision_test` does it:
   under a float32 *global* policy the layer is built with
   `dtype=<policy>` (`mixed_bfloat16`, `mixed_float16`); every sub-layer
   (`layer._flatten_layers()`) must then have the policy's compute and
   variable dtype, every float weight the variable dtype, and the outputs
   the compute dtype and finite values. A sub-layer created without
   `dtype=self.dtype_policy` falls back to the global float32 policy and
   fails here (setting the global policy instead would hide it).

`check_precision` (step 7) is usable on its own; the attention
probabilities of `keras.layers.MultiHeadAttention` sub-layers during a real
call come from `keras_mm.layers.utils.record_attention_scores`.
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


PRECISION_POLICIES = ("mixed_bfloat16", "mixed_float16")


def run_layer_checks(layer_cls, init_kwargs, inputs, *, tmp_path,
                     call_kwargs=None, expected_output_shape=None,
                     xla=True, mixed_precision=True, fit=True,
                     grad_exempt=(), save_atol=1e-6, fit_target=None,
                     fit_loss=None, fit_metrics=None, float32_sublayers=(),
                     output_dtype=None):
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
        mixed_precision: `True` checks `PRECISION_POLICIES`; a tuple of
            policy names checks those; `False` skips step 7.
        fit: run the fit check.
        grad_exempt: substrings of weight paths allowed a zero gradient.
        fit_target: with `fit_loss`, the target of the fit check; the
            layer's own output is then fitted (no toy head), e.g. a head with
            its `default_loss()` on real labels.
        fit_loss: the loss of the fit check (default: a toy Dense head and
            mean squared error on a random target).
        fit_metrics: metrics compiled into the fit check; each must appear
            in `evaluate(..., return_dict=True)`.
        float32_sublayers: names of sub-layers that compute in float32 *by
            design* whatever the policy (a head's output `Dense` and
            activation, see `BaseHead`). Step 7 asserts that they are
            float32 (compute and variable dtype) instead of exempting them
            from the check; every other sub-layer must follow the policy.
        output_dtype: the expected dtype of the float outputs in step 7
            (default: the policy's compute dtype; `"float32"` for heads).

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

    # 6. fit lowers the loss on a learnable target (XLA-compiled)
    if fit:
        assert (fit_target is None) == (fit_loss is None), (
            "pass fit_target and fit_loss together")
        n = values[0].shape[0]
        if fit_loss is None:
            vec = ReduceToVector()(sym0)
            pred = keras.layers.Dense(1, name="toy_head")(vec)
            toy = keras.Model(model.inputs, pred)
            y = np.random.RandomState(2).normal(size=(n, 1)).astype(
                "float32")
            loss = "mse"
        else:
            toy, y, loss = model, fit_target, fit_loss
        toy.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss,
                    metrics=fit_metrics, jit_compile=xla)
        assert toy.jit_compile == bool(xla)
        before = toy.evaluate(values, y, verbose=0, return_dict=True)
        toy.fit(values, y, epochs=5, batch_size=n, verbose=0, shuffle=False)
        after = toy.evaluate(values, y, verbose=0, return_dict=True)
        assert after["loss"] < before["loss"], (
            f"loss did not fall: {before['loss']} -> {after['loss']}")
        for metric in fit_metrics or ():
            metric_name = metric if isinstance(metric, str) else metric.name
            assert metric_name in after, (
                f"metric {metric_name!r} missing from {sorted(after)}")

    # 7. mixed precision: dtype=policy under a float32 global policy
    if mixed_precision:
        policies = PRECISION_POLICIES if mixed_precision is True \
            else tuple(mixed_precision)
        check_precision(layer_cls, init_kwargs, inputs,
                        call_kwargs=call_kwargs, policies=policies,
                        float32_sublayers=float32_sublayers,
                        output_dtype=output_dtype)
    return eager_out


def _is_float(dtype):
    return keras.backend.standardize_dtype(dtype) in (
        "float16", "bfloat16", "float32", "float64")


def check_precision(layer_cls, init_kwargs, inputs, *, call_kwargs=None,
                    policies=PRECISION_POLICIES, float32_sublayers=(),
                    output_dtype=None):
    """keras-hub's `run_precision_test` for one layer class.

    For each policy the layer is built with `dtype=policy` while the global
    policy stays float32, and called eagerly on `inputs`. Asserts:

    - every sub-layer in `layer._flatten_layers()` (the layer itself
      included; `InputLayer`s skipped) has the policy's compute and variable
      dtype, except the `float32_sublayers` (by name), which must be float32;
    - every float weight has the policy's variable dtype (float32 for the
      `float32_sublayers`' weights);
    - every float output has `output_dtype` (default: the policy's compute
      dtype) and finite values.

    Returns the outputs per policy name.
    """
    call_kwargs = call_kwargs or {}
    global_policy = keras.config.dtype_policy().name
    assert global_policy == "float32", (
        f"check_precision needs a float32 global policy, not {global_policy}"
        " (a global mixed policy would hide sub-layers built without "
        "dtype=self.dtype_policy)")
    exempt = set(float32_sublayers)
    results = {}
    for name in policies:
        policy = keras.DTypePolicy(name)
        layer = layer_cls(**{**init_kwargs, "dtype": policy})
        out = layer(inputs, **call_kwargs)
        results[name] = out
        want_out = output_dtype or policy.compute_dtype
        for tensor in keras.tree.flatten(out):
            dtype = keras.backend.standardize_dtype(tensor.dtype)
            if not _is_float(dtype):
                continue
            assert dtype == want_out, (
                f"{name}: {layer_cls.__name__} output dtype {dtype}, "
                f"expected {want_out}")
            assert np.all(np.isfinite(ops.convert_to_numpy(
                ops.cast(tensor, "float32")))), f"{name}: non-finite output"
        wrong, seen = [], set()
        float32_weights = set()
        for sub in layer._flatten_layers(include_self=True, recursive=True):
            if isinstance(sub, keras.layers.InputLayer):
                continue
            if sub.name in exempt:
                seen.add(sub.name)
                want = ("float32", "float32")
                float32_weights.update(id(w) for w in sub.weights)
            else:
                want = (policy.compute_dtype, policy.variable_dtype)
            got = (sub.compute_dtype, sub.variable_dtype)
            if got != want:
                wrong.append(f"{getattr(sub, 'path', None) or sub.name} "
                             f"({type(sub).__name__}): compute/variable "
                             f"dtype {got}, expected {want}")
        assert not wrong, (
            f"{name}: sub-layers with the wrong dtype (one built without "
            "dtype=self.dtype_policy falls back to the float32 global "
            "policy): " + "; ".join(wrong))
        missing = exempt - seen
        assert not missing, (
            f"float32_sublayers {sorted(missing)} are not sub-layers of "
            f"{layer_cls.__name__}")
        for weight in layer.weights:
            if not _is_float(weight.dtype):
                continue
            want = "float32" if id(weight) in float32_weights \
                else policy.variable_dtype
            assert keras.backend.standardize_dtype(weight.dtype) == want, (
                f"{name}: weight {weight.path} has dtype {weight.dtype}, "
                f"expected {want}")
    return results


