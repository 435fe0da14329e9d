"""Exact Shapley values over a model's modalities.

The "players" are the M inputs of a model with a `presence` input; the
value of a coalition `S` is a score of the model's output with only `S`
present (`keras_mm.evaluation.presence_subsets.subset_outputs`). The
Shapley value of modality j is

    phi_j = sum over S not containing j of
            |S|! (M - |S| - 1)! / M! * (v(S + j) - v(S)).

It is linear in the scores, so with every subset's scores stacked as
`[S, batch]` (rows in the order of the `masks` rows) it is one matrix
product `phi = scores^T W` with a constant `[S, M]` weight matrix `W`
(`shapley_weights`): row `s`, column j holds `+(|s|-1)!(M-|s|)!/M!` when j
is in `s` and `-|s|!(M-|s|-1)!/M!` when it is not. The values sum to
`v(all) - v(none)` (efficiency).

- `shapley_weights(masks)`: the NumPy float64 `W`;
- `shapley_values(subset_scores, masks)`: `[batch, M]`; NumPy in, NumPy out;
  a TensorFlow tensor in (eager or inside a `tf.function` / a served
  signature), a TensorFlow tensor out, computed with `tf.linalg.matmul`;
- `head_scores(kind, outputs, full_outputs)`: the score a head's outputs
  are explained by (one definition, used by the offline explain and by the
  served `explain` signature).
"""

import math

import numpy as np

HEAD_KINDS = ("classification", "binary", "regression")


def shapley_weights(masks):
    """The `[S, M]` Shapley weight matrix for the subsets in `masks`.

    Args:
        masks: `[S, M]` 0/1 rows, every one of the `2**M` subsets exactly
            once, in any order (e.g. `subset_masks(M)`).

    Returns:
        np.ndarray float64 `[S, M]` with `phi = scores.T @ W`.

    Example:

    >>> from keras_mm.evaluation.presence_subsets import subset_masks
    >>> shapley_weights(subset_masks(2))
    array([[-0.5, -0.5],
           [ 0.5, -0.5],
           [-0.5,  0.5],
           [ 0.5,  0.5]])
    """
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[1] < 1:
        raise ValueError(f"masks has shape {masks.shape}; expected "
                         "[2**M, M] 0/1 rows (subset_masks(M))")
    num = masks.shape[1]
    if not np.isin(masks, (0, 1)).all():
        raise ValueError("masks must hold only 0 and 1 (1 = modality "
                         "present)")
    bits = masks.astype("int64")
    codes = bits @ (1 << np.arange(num))
    if len(masks) != 2 ** num or len(np.unique(codes)) != 2 ** num:
        raise ValueError(
            f"masks has {len(masks)} rows with {len(np.unique(codes))} "
            f"distinct subsets; exact Shapley values need all {2 ** num} "
            f"subsets of {num} modalities once each (subset_masks({num}))")
    fact = [math.factorial(k) for k in range(num + 1)]
    sizes = bits.sum(axis=1)
    inside = np.array([fact[s - 1] * fact[num - s] if s > 0 else 0
                       for s in sizes], dtype="float64") / fact[num]
    outside = np.array([fact[s] * fact[num - s - 1] if s < num else 0
                        for s in sizes], dtype="float64") / fact[num]
    return np.where(bits == 1, inside[:, None], -outside[:, None])


def shapley_values(subset_scores, masks):
    """Exact per-example Shapley values of the modalities.

    Args:
        subset_scores: `[S, batch]` (or `[S, batch, ...]`) scores, row `s` =
            the score with the subset `masks[s]` present. A NumPy array
            (or list) or a TensorFlow tensor, also a symbolic one inside a
            `tf.function`.
        masks: `[S, M]` 0/1 rows, all `2**M` subsets once each (a NumPy
            array: the weights are a constant of the computation).

    Returns:
        `[batch, ..., M]`: NumPy float64 for NumPy input; a tensor of the
        scores' dtype for tensor input.

    Example:

    >>> from keras_mm.evaluation.presence_subsets import subset_masks
    >>> # v(none)=0, v({0})=1, v({1})=2, v({0,1})=5
    >>> shapley_values([[0.], [1.], [2.], [5.]], subset_masks(2))
    array([[2., 3.]])
    """
    weights = shapley_weights(masks)
    if isinstance(subset_scores, (np.ndarray, list, tuple, float, int)):
        scores = np.asarray(subset_scores, dtype="float64")
        _check_rows(scores.shape, weights.shape)
        return np.tensordot(scores, weights, axes=[[0], [0]])
    import tensorflow as tf

    scores = tf.convert_to_tensor(subset_scores)
    _check_rows(tuple(scores.shape), weights.shape)
    w = tf.constant(weights, dtype=scores.dtype)
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])
    phi = tf.linalg.matmul(flat, w, transpose_a=True)
    return tf.reshape(phi, tf.concat(
        [tf.shape(scores)[1:], [weights.shape[1]]], axis=0))


def _check_rows(shape, weight_shape):
    if len(shape) < 2 or (shape[0] is not None
                          and shape[0] != weight_shape[0]):
        raise ValueError(
            f"subset_scores has shape {tuple(shape)}; expected "
            f"[{weight_shape[0]}, batch] (one row per masks row)")


def head_scores(kind, outputs, full_outputs=None):
    """The score of a head's outputs that the Shapley values explain.

    - `classification`: the probability of the class predicted with every
      modality present (argmax of `full_outputs`);
    - `binary`: the probability;
    - `regression`: the value (`[S, batch]` for one unit, `[S, batch,
      units]` otherwise).

    Args:
        kind: the head type (`classification`, `binary`, `regression`).
        outputs: `[S, batch, units]` the head's outputs per subset.
        full_outputs: `[batch, units]` with all present (only needed for
            `classification`; default: the last row of `outputs`).

    Returns:
        `[S, batch]` scores (NumPy for NumPy input, a tensor otherwise).

    Example:

    >>> probs = np.array([[[.5, .5]], [[.2, .8]]])   # 2 subsets, 1 example
    >>> head_scores("classification", probs, probs[-1])
    array([[0.5],
           [0.8]])
    """
    if kind not in HEAD_KINDS:
        raise ValueError(f"head type {kind!r} has no Shapley score; "
                         f"explained head types: {', '.join(HEAD_KINDS)}")
    if isinstance(outputs, (np.ndarray, list, tuple)):
        outputs = np.asarray(outputs)
        if kind == "classification":
            full = outputs[-1] if full_outputs is None else \
                np.asarray(full_outputs)
            cls = np.argmax(full, axis=-1)
            return np.take_along_axis(
                outputs, np.broadcast_to(cls[None, :, None],
                                         outputs.shape[:2] + (1,)),
                axis=-1)[..., 0]
        return outputs[..., 0] if outputs.shape[-1] == 1 else outputs
    import tensorflow as tf

    outputs = tf.convert_to_tensor(outputs)
    if kind == "classification":
        full = outputs[-1] if full_outputs is None else \
            tf.convert_to_tensor(full_outputs)
        cls = tf.argmax(full, axis=-1, output_type=tf.int32)
        onehot = tf.one_hot(cls, tf.shape(outputs)[-1], dtype=outputs.dtype)
        return tf.reduce_sum(outputs * onehot[None], axis=-1)
    if outputs.shape[-1] == 1:
        return outputs[..., 0]
    return outputs
