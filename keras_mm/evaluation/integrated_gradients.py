"""Integrated gradients (Sundararajan et al., 2017) on a model's inputs.

The attribution of input feature i of example x along the straight path
from a baseline x' (default: zeros, the blank input keras_mm feeds for an
absent modality) is

    IG_i(x) = (x_i - x'_i) * integral_0^1 df(x' + a (x - x')) / dx_i da,

approximated by the trapezoid rule on `steps + 1` evenly spaced points
`a = 0, 1/steps, ..., 1`. Completeness: the attributions of the
attributed inputs sum to `f(x) - f(x')` (the other inputs held fixed),
up to the quadrature error, which falls as `1 / steps**2` for a smooth
`f` (exact when the gradient is linear along the path) and as `1 / steps`
across ReLU kinks: at 64 steps the gap is within 5% of `f(x) - f(x')`
(+ 1e-3) on keras_mm's tiny test models (tests/test_explain.py).
`integrated_gradients(..., return_scores=True)` returns both ends so a
caller can check the gap; `explain_run` records it per example. All path
points of a batch run in batched forward passes (`max_rows` rows each).

- `integrated_gradients(model, inputs, target_fn, baseline=None, steps=32,
  names=None)`: `{input name: attributions}` shaped like the inputs;
- `token_occlusion(model, inputs, target_fn, name, pad_id=0)`: per-token
  scores of an int id input, `f(x) - f(x with token t set to padding)`
  (ids are not differentiable).
"""

import numpy as np

DEFAULT_STEPS = 32


def _float_inputs(inputs):
    return [k for k, v in inputs.items()
            if np.asarray(v).dtype.kind == "f" and k != "presence"]


def _trapezoid_weights(steps):
    weights = np.full(steps + 1, 1.0 / steps)
    weights[0] = weights[-1] = 0.5 / steps
    return weights


def integrated_gradients(model, inputs, target_fn, baseline=None,
                         steps=DEFAULT_STEPS, names=None, max_rows=2048,
                         return_scores=False):
    """Integrated gradients of a score of `model` w.r.t. some inputs.

    Args:
        model: a Keras model taking a dict of inputs.
        inputs: one batch, `{input name: array [batch, ...]}` (every model
            input).
        target_fn: `(outputs, rows) -> [n]` float tensor, the score of each
            of the `n` rows of a forward pass; `outputs` is what the model
            returns for those rows, `rows[i]` (int array) the example of
            `inputs` row i interpolates (e.g. to pick that example's
            predicted class). Must be differentiable (TensorFlow ops).
        baseline: `{name: array}` for the attributed inputs (default:
            zeros, the blank input of an absent modality).
        steps: number of trapezoid intervals (`steps + 1` gradient points).
        names: the inputs to attribute (default: every float input except
            `presence`); they move together along the path, the other
            inputs stay as given.
        max_rows: rows per forward/backward pass.
        return_scores: also return `f(inputs)` and `f(baseline)`.

    Returns:
        `{name: np.ndarray}` shaped like `inputs[name]` (float32); with
        `return_scores`, `(attributions, f_x [batch], f_baseline [batch])`.

    Example:

    >>> ig, fx, f0 = integrated_gradients(               # doctest: +SKIP
    ...     model, batch, lambda out, rows: out["label"][:, 0],
    ...     names=["image"], return_scores=True)
    >>> gap = sum(a.reshape(len(fx), -1).sum(1) for a in ig.values()) \\
    ...     - (fx - f0)                                  # doctest: +SKIP
    """
    import tensorflow as tf

    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps={steps}: integrated gradients needs at "
                         "least 1 interval (32 to 64 is usual)")
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    names = list(names) if names is not None else _float_inputs(inputs)
    for name in names:
        if name not in inputs:
            raise ValueError(f"integrated_gradients: {name!r} is not one of "
                             f"the inputs ({', '.join(sorted(inputs))})")
        if inputs[name].dtype.kind != "f":
            raise ValueError(
                f"integrated_gradients: input {name!r} has dtype "
                f"{inputs[name].dtype}; only float inputs have gradients "
                "(attribute int token ids with token_occlusion)")
    baseline = dict(baseline or {})
    base = {n: np.asarray(baseline[n], "float32") if n in baseline
            else np.zeros_like(inputs[n], "float32") for n in names}
    for n in names:
        if base[n].shape != inputs[n].shape:
            raise ValueError(f"baseline[{n!r}] has shape {base[n].shape}; "
                             f"the input has {inputs[n].shape}")
    batch = len(next(iter(inputs.values())))
    alphas = np.linspace(0.0, 1.0, steps + 1).astype("float32")
    weights = _trapezoid_weights(steps).astype("float32")
    # Row r of the flattened path = (alpha index r // batch, example r %
    # batch): every example at one alpha, then the next alpha.
    total = len(alphas) * batch
    sums = {n: np.zeros(inputs[n].shape, "float64") for n in names}
    f_ends = np.zeros((2, batch), "float64")
    per_pass = max(batch, int(max_rows) // batch * batch)
    for start in range(0, total, per_pass):
        rows = np.arange(start, min(total, start + per_pass))
        a_idx, examples = rows // batch, rows % batch
        alpha = alphas[a_idx]
        feed = {}
        for key, value in inputs.items():
            if key in names:
                shape = (-1,) + (1,) * (value.ndim - 1)
                feed[key] = tf.constant(
                    base[key][examples] + alpha.reshape(shape) *
                    (value[examples].astype("float32") -
                     base[key][examples]))
            else:
                feed[key] = tf.constant(value[examples])
        watched = [feed[n] for n in names]
        with tf.GradientTape() as tape:
            tape.watch(watched)
            outputs = model(feed, training=False)
            score = tf.cast(target_fn(outputs, examples), "float32")
            total_score = tf.reduce_sum(score)
        grads = tape.gradient(total_score, watched)
        score = np.asarray(score, "float64")
        for n, grad in zip(names, grads):
            if grad is None:
                raise ValueError(
                    f"integrated_gradients: the score does not depend on "
                    f"input {n!r} (no gradient path); attribute another "
                    "input")
            grad = np.asarray(grad, "float64")
            shape = (-1,) + (1,) * (grad.ndim - 1)
            np.add.at(sums[n], examples,
                      grad * weights[a_idx].reshape(shape))
        first, last = a_idx == 0, a_idx == steps
        f_ends[0, examples[first]] = score[first]
        f_ends[1, examples[last]] = score[last]
    attributions = {n: ((inputs[n].astype("float64") - base[n]) *
                        sums[n]).astype("float32") for n in names}
    if return_scores:
        return attributions, f_ends[1], f_ends[0]
    return attributions


def token_occlusion(model, inputs, target_fn, name, pad_id=0,
                    max_rows=2048):
    """Per-token occlusion scores of an int id input.

    Score of token t of example b: `f(x) - f(x with ids[b, t] = pad_id)`,
    the other inputs as given; padded positions score 0.

    Args:
        model, inputs, target_fn, max_rows: as for `integrated_gradients`.
        name: the id input (`[batch, length]` ints).
        pad_id: the padding id (0 in keras_mm's text preprocessing).

    Returns:
        np.ndarray float32 `[batch, length]`.

    Example:

    >>> scores = token_occlusion(model, batch,          # doctest: +SKIP
    ...     lambda out, rows: out["label"][:, 0], "text")
    """
    inputs = {k: np.asarray(v) for k, v in inputs.items()}
    ids = inputs[name]
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"token_occlusion: input {name!r} has shape "
                         f"{ids.shape} and dtype {ids.dtype}; expected int "
                         "ids [batch, length]")
    batch, length = ids.shape
    # Variant 0 = the input as given, variant t + 1 = token t occluded.
    variants = length + 1
    total = variants * batch
    scores = np.zeros(total, "float64")
    per_pass = max(batch, int(max_rows) // batch * batch)
    for start in range(0, total, per_pass):
        rows = np.arange(start, min(total, start + per_pass))
        variant, examples = rows // batch, rows % batch
        feed = {k: v[examples] for k, v in inputs.items()}
        occluded = feed[name].copy()
        hit = variant > 0
        occluded[hit, variant[hit] - 1] = pad_id
        feed[name] = occluded
        outputs = model(feed, training=False)
        scores[rows] = np.asarray(target_fn(outputs, examples), "float64")
    scores = scores.reshape(variants, batch)
    result = (scores[0][None, :] - scores[1:]).T
    return np.where(ids == pad_id, 0.0, result).astype("float32")
