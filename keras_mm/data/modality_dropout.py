"""Modality dropout: per example, mark some present modalities absent.

Training a multimodal model on examples where a modality is sometimes
missing teaches it to do without that modality (the served model may get
any input empty). `modality_keep_mask` is the pure draw; `Pipeline` applies
it to the `presence` column of training batches only (never in evaluation
or serving).

Each example's draws are stateless functions of its own seed (one per
example, from the pipeline's per-element random stream), so they do not
depend on the batch size, the threads or the number of replicas.
"""

import numbers

import tensorflow as tf

# Second word of an example's dropout seed `[draw, _SEED_TAG]`: example keys
# are non-negative, so this never equals the crop seeds `[draw, key]`.
_SEED_TAG = -1


def dropout_rates(modality_dropout, names, where="modality_dropout"):
    """The rates as a list in `names` order (floats in [0, 1)).

    Args:
        modality_dropout: one number for every input, or
            `{input name: rate}` (inputs not named get 0).
        names: the input names, in presence order.
        where: the key path used in error messages.

    Raises:
        ValueError: an unknown name, or a rate outside [0, 1).
    """
    if isinstance(modality_dropout, bool) or not isinstance(
            modality_dropout, (numbers.Real, dict)):
        raise ValueError(f"{where}: give one rate in [0, 1) or "
                         f"{{input name: rate}}, not {modality_dropout!r}")
    if isinstance(modality_dropout, dict):
        unknown = sorted(set(modality_dropout) - set(names))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: no input of that name; "
                             f"the inputs are {list(names)}")
        items = {n: modality_dropout.get(n, 0.0) for n in names}
        paths = {n: f"{where}.{n}" for n in names}
    else:
        items = {n: modality_dropout for n in names}
        paths = {n: where for n in names}
    rates = []
    for n in names:
        rate = items[n]
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) \
                or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"{paths[n]}: a dropout rate must be a number "
                             f"in [0, 1), got {rate!r}")
        rates.append(float(rate))
    return rates


def example_seeds(draws):
    """`[B, 2]` int64 dropout seeds from the examples' random int64s `[B]`."""
    draws = tf.cast(draws, tf.int64)
    return tf.stack([draws, tf.fill(tf.shape(draws),
                                    tf.constant(_SEED_TAG, tf.int64))],
                    axis=1)


@tf.function(reduce_retracing=True)
def _uniforms(seeds, num_modalities):
    return tf.map_fn(
        lambda s: tf.random.stateless_uniform([num_modalities], seed=s),
        seeds, fn_output_signature=tf.TensorSpec([num_modalities],
                                                 tf.float32))


def modality_uniforms(seeds, num_modalities):
    """`[B, M]` uniforms in [0, 1), row b a stateless function of
    `seeds[b]` only (one graph loop, also when called eagerly)."""
    return _uniforms(tf.convert_to_tensor(seeds), int(num_modalities))


def modality_keep_mask(presence, rates, seeds):
    """The keep mask `[B, M]` float32 of modality dropout.

    Modality j of example b is dropped when `u[b, j] < rates[j]`, `u` the
    example's uniforms (`modality_uniforms(seeds, M)`). If that would drop
    every modality present in the example (`presence > 0`), the present one
    with the largest `u - rate` is kept (deterministic). Multiply `presence`
    by the mask: absent modalities stay absent.

    Args:
        presence: `[B, M]` presence (1 present, 0 absent).
        rates: `[M]` dropout rates in presence order.
        seeds: `[B, 2]` integer stateless seeds, one per example (see
            `example_seeds`).

    Returns:
        float32 `[B, M]` of 0 and 1.

    Example:

    >>> keep = modality_keep_mask(tf.ones([4, 2]), [0.3, 0.3],
    ...                           example_seeds(tf.range(4)))
    >>> new_presence = tf.ones([4, 2]) * keep            # doctest: +SKIP
    """
    presence = tf.cast(presence, tf.float32)
    rates = tf.cast(tf.convert_to_tensor(rates), tf.float32)
    num = presence.shape[-1]
    if num is None:
        raise ValueError("modality_keep_mask: presence needs a static number "
                         "of modalities (last dimension)")
    u = modality_uniforms(seeds, num)
    present = presence > 0
    keep = u >= rates
    margin = tf.where(present, u - rates, -tf.ones_like(u) * 2.0)
    best = tf.one_hot(tf.argmax(margin, axis=1), num, on_value=True,
                      off_value=False)
    none_left = tf.logical_and(
        tf.reduce_any(present, axis=1),
        tf.logical_not(tf.reduce_any(tf.logical_and(keep, present), axis=1)))
    keep = tf.where(none_left[:, None], best, keep)
    return tf.cast(keep, tf.float32)
