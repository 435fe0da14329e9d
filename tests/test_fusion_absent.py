"""Every fusion type degrades gracefully when a modality is absent.

Each fusion type is trained (tiny towers -> fusion -> softmax) on a
synthetic set where EACH modality alone carries the label, with modality
dropout by hand (p = 0.3 per modality, never all absent). With one modality
absent on the whole test set the model must stay clearly above chance and
must not collapse to one prediction. Then FiLM's learned default map
(target absent == the default map as a present target), the missing
embedding of `ConcatFusion`, and `fusion_weights` of the layers that mix
the modalities with weights or attention.
"""

import functools

import numpy as np
import keras
import pytest
import tensorflow as tf
from keras import ops

from keras_mm.fusion import (AttentionFusion, ConcatFusion,
                             CrossAttentionFusion, FiLMFusion, GatedFusion,
                             JointTransformerFusion, LowRankFusion,
                             TensorFusion, WeightedFusion)

CLASSES = 4
CHANCE = 1.0 / CLASSES
N_TRAIN, N_TEST = 512, 400
DIM, TOKENS, MAP = 6, 3, (4, 4, 3)
DROP = 0.3

# name -> (class, constructor arguments)
FUSIONS = {
    "concat": (ConcatFusion, {"units": 16, "activation": "relu"}),
    "concat_missing": (ConcatFusion, {"units": 16, "activation": "relu",
                                      "missing_embedding": True}),
    "weighted": (WeightedFusion, {"units": 16}),
    "gated": (GatedFusion, {"units": 16}),
    "attention": (AttentionFusion, {"units": 16, "num_heads": 2}),
    "tensor": (TensorFusion, {"units": 16, "projection_dim": 4}),
    "low_rank": (LowRankFusion, {"units": 16, "rank": 2}),
    "cross_attention": (CrossAttentionFusion, {
        "units": 16, "num_heads": 2, "dropout": 0.0, "intermediate_dim": 16}),
    "joint_transformer": (JointTransformerFusion, {
        "units": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.0,
        "intermediate_dim": 16}),
    "film": (FiLMFusion, {"target": "img", "units": 16}),
    # without the conditioning skip the conditions reach the output only
    # through the modulated map: an absent target needs the default map
    "film_no_skip": (FiLMFusion, {"target": "img", "units": 16,
                                  "condition_output": False}),
}
CASES = [(name, m) for name in FUSIONS
         for m in (("img", "t") if name.startswith("film") else ("a", "b"))]


def _np(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32")))


def _shapes(cls):
    """Per-modality example shapes, from the layer's `input_kind`."""
    if cls.input_kind == "feature_map":
        return {"img": MAP, "t": (DIM,)}
    if cls.input_kind == "sequence":
        return {"a": (TOKENS, DIM), "b": (TOKENS, DIM)}
    return {"a": (DIM,), "b": (DIM,)}


def _data(cls, n, seed):
    """Class-dependent Gaussian inputs; each modality alone gives the label
    (its own class means, noise of unit scale)."""
    rng = np.random.RandomState(seed)
    means_rng = np.random.RandomState(123)  # same means for train and test
    y = rng.randint(CLASSES, size=n)
    x = {}
    for m, shape in sorted(_shapes(cls).items()):
        # a map's class shows in its channels (global pooling keeps it)
        mean_shape = (1, 1, shape[-1]) if len(shape) == 3 else shape
        means = means_rng.normal(scale=1.5, size=(CLASSES,) + mean_shape)
        x[m] = (means[y] + rng.normal(size=(n,) + shape)).astype("float32")
    return x, y


def _dropout_presence(n, names, seed):
    """Modality dropout by hand: each modality absent with p = DROP, an
    example that lost every modality gets one back at random."""
    rng = np.random.RandomState(seed)
    presence = (rng.uniform(size=(n, len(names))) > DROP).astype("float32")
    empty = presence.sum(axis=1) == 0
    presence[empty, rng.randint(len(names), size=empty.sum())] = 1.0
    return presence


def _model(cls, kwargs):
    shapes = _shapes(cls)
    names = sorted(shapes)
    inputs = {m: keras.Input(shape, name=m) for m, shape in shapes.items()}
    presence = keras.Input((len(names),), name="presence")
    towers = {m: keras.layers.Dense(8, activation="relu",
                                    name=f"{m}_tower")(x)
              for m, x in inputs.items()}
    fusion = cls(modalities=names, name="fusion", **kwargs)
    fused = fusion(towers, presence=presence)
    out = keras.layers.Dense(CLASSES, activation="softmax", name="head")(fused)
    return keras.Model({**inputs, "presence": presence}, out), names


def _fit(model, x, y, epochs=6, batch_size=128, seed=0):
    """Adam(1e-2) on the cross-entropy, shuffled mini-batches. A plain
    `tf.function` step (no autograph): it traces in about half the time of
    `Model.fit`, which dominates at this size."""
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step = tf.function(step, autograph=False)
    rng = np.random.RandomState(seed)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y) - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            loss = step({k: tf.constant(v[idx]) for k, v in x.items()},
                        tf.constant(y[idx]))
    return float(loss)


@functools.lru_cache(maxsize=None)
def _trained(name):
    cls, kwargs = FUSIONS[name]
    keras.utils.set_random_seed(0)
    model, names = _model(cls, kwargs)
    x, y = _data(cls, N_TRAIN, seed=1)
    x["presence"] = _dropout_presence(N_TRAIN, names, seed=2)
    loss = _fit(model, x, y)
    assert np.isfinite(loss), f"{name}: training loss {loss}"
    return model, names


@pytest.mark.parametrize("name,absent", CASES,
                         ids=[f"{n}-no_{m}" for n, m in CASES])
def test_absent_modality_above_chance_and_not_constant(name, absent):
    cls, _ = FUSIONS[name]
    model, names = _trained(name)
    x, y = _data(cls, N_TEST, seed=3)
    j = names.index(absent)
    # the absent input holds noise: it must not matter
    x[absent] = np.random.RandomState(4).normal(
        size=x[absent].shape).astype("float32")
    presence = np.ones((N_TEST, len(names)), "float32")
    presence[:, j] = 0.0
    x["presence"] = presence
    probs = _np(model(x, training=False))  # eager: no predict trace
    predicted = probs.argmax(axis=1)
    accuracy = float(np.mean(predicted == y))
    assert accuracy > 1.5 * CHANCE, (
        f"{name} without {absent!r}: accuracy {accuracy:.3f}, chance "
        f"{CHANCE}")
    assert len(np.unique(predicted)) > 1, (
        f"{name} without {absent!r}: one class for every example")
    assert probs.std(axis=0).max() > 1e-3, (
        f"{name} without {absent!r}: the same output for every example")


# -- FiLM's learned default map -----------------------------------------------

RNG = np.random.RandomState(0)
MAPS = {"img": RNG.normal(size=(4, 3, 3, 5)).astype("float32"),
        "t": RNG.normal(size=(4, 6)).astype("float32")}
VIDEO = {"vid": RNG.normal(size=(4, 3, 2, 2, 5)).astype("float32"),
         "t": MAPS["t"]}
RANDOM_GEN = {"class_name": "RandomNormal",
              "config": {"stddev": 0.5, "seed": 1}}


def _film(inputs, target, **kwargs):
    layer = FiLMFusion(target=target, generator_initializer=RANDOM_GEN,
                       **kwargs)
    layer(inputs)
    # a non-trivial default map (it starts at zeros)
    layer.default_map.assign(RNG.normal(
        size=layer.default_map.shape).astype("float32"))
    return layer


def _with_default(layer, inputs, target):
    fed = dict(inputs)
    fed[target] = np.broadcast_to(
        _np(layer.default_map)[None], inputs[target].shape).copy()
    return fed


def test_film_absent_target_equals_the_default_map_as_target():
    layer = _film(MAPS, "img", return_feature_map=True,
                  activation="relu")
    absent = np.array([[0, 1]] * 4, "float32")  # modalities: img, t
    out = _np(layer(MAPS, presence=absent))
    expected = _np(layer(_with_default(layer, MAPS, "img"),
                         presence=np.ones((4, 2), "float32")))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # the fallback follows the condition: rows differ
    assert np.abs(out - out[:1]).max() > 1e-2


def test_film_vector_output_absent_target_differs_only_by_its_flag():
    """Vector output: the target's presence flag is an input of the output
    projection (row C of its kernel), the rest is the default map's."""
    for condition_output in (True, False):
        layer = _film(MAPS, "img", units=7,
                      condition_output=condition_output)
        absent = np.array([[0, 1]] * 4, "float32")
        out = _np(layer(MAPS, presence=absent))
        present = _np(layer(_with_default(layer, MAPS, "img"),
                            presence=np.ones((4, 2), "float32")))
        flag_row = _np(layer.output_projection.kernel)[layer.channels]
        np.testing.assert_allclose(present - out, np.tile(flag_row, (4, 1)),
                                   atol=1e-5)
        assert out.std(axis=0).max() > 1e-3  # not one output for all rows


def test_film_absent_video_target_ignores_its_frame_mask():
    layer = _film(VIDEO, "vid", return_feature_map=True)
    assert layer.modalities == ["t", "vid"]
    presence = np.array([[1, 0], [1, 1], [1, 0], [1, 1]], "float32")
    frame_mask = {"vid": np.array([[1, 0, 0]] * 4, bool)}
    out = _np(layer(VIDEO, presence=presence, mask=frame_mask))
    expected = _np(layer(_with_default(layer, VIDEO, "vid")))
    np.testing.assert_allclose(out[[0, 2]], expected[[0, 2]], atol=1e-6)
    # present rows keep the frame mask (padded frames zeroed)
    assert np.all(out[[1, 3]][:, 1:] == 0)


def test_film_conditions_absent_is_identity():
    """Conditions absent -> identity modulation, on the target or (nothing
    present) on the default map."""
    layer = _film(MAPS, "img", return_feature_map=True)
    only_target = np.array([[1, 0]] * 4, "float32")
    np.testing.assert_allclose(_np(layer(MAPS, presence=only_target)),
                               MAPS["img"], atol=1e-6)
    nothing = np.zeros((4, 2), "float32")
    np.testing.assert_allclose(
        _np(layer(MAPS, presence=nothing)),
        np.broadcast_to(_np(layer.default_map)[None], MAPS["img"].shape),
        atol=1e-6)
    weights = layer.fusion_weights(MAPS, presence=only_target)
    np.testing.assert_allclose(_np(weights["gamma"]), 1.0)
    np.testing.assert_allclose(_np(weights["beta"]), 0.0)
    # with the condition present the same call is modulated
    weights = layer.fusion_weights(MAPS)
    assert np.abs(_np(weights["gamma"]) - 1).max() > 1e-2


def test_film_absent_target_zeros_option_and_old_configs():
    layer = FiLMFusion(target="img", return_feature_map=True,
                       absent_target="zeros")
    out = _np(layer(MAPS, presence=np.array([[0, 1]] * 4, "float32")))
    np.testing.assert_array_equal(out, 0.0)
    assert not any("default_map" in w.path for w in layer.weights)
    config = FiLMFusion(target="img").get_config()
    assert config["absent_target"] == "learned"
    del config["absent_target"]  # saved before the option existed
    assert FiLMFusion.from_config(config).absent_target == "zeros"
    with pytest.raises(ValueError, match="absent_target"):
        FiLMFusion(absent_target="mean")


def test_film_default_map_shape_and_unknown_sizes():
    layer = FiLMFusion(target="img")
    layer.build({"img": (None, 3, 3, 5), "t": (None, 6)})
    assert tuple(layer.default_map.shape) == (3, 3, 5)
    layer = FiLMFusion(target="img")
    layer.build({"img": (None, None, None, 5), "t": (None, 6)})
    assert tuple(layer.default_map.shape) == (1, 1, 5)  # broadcast vector
    out = layer(MAPS, presence=np.array([[0, 1]] * 4, "float32"))
    assert np.all(np.isfinite(_np(out)))


# -- ConcatFusion's missing embedding -----------------------------------------

VECS = {"a": RNG.normal(size=(4, 5)).astype("float32"),
        "b": RNG.normal(size=(4, 3)).astype("float32")}
PRESENCE = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], "float32")


def test_concat_missing_embedding_fills_the_absent_slot():
    layer = ConcatFusion(missing_embedding=True)
    layer(VECS)
    embedding = RNG.normal(size=(3,)).astype("float32")
    layer.missing_embeddings[1].assign(embedding)  # "b"
    out = _np(layer(VECS, presence=PRESENCE))
    np.testing.assert_allclose(out[1, 5:8], embedding)
    np.testing.assert_allclose(out[3, 5:8], VECS["b"][3])
    np.testing.assert_allclose(out[:, 8:], PRESENCE)
    # the absent input's values never reach the output (nor a NaN)
    changed = dict(VECS, b=np.full_like(VECS["b"], np.nan))
    np.testing.assert_allclose(_np(layer(changed, presence=PRESENCE))[1],
                               out[1])
    # default off: zeros, and the same config round trip
    assert ConcatFusion().missing_embedding is False
    restored = ConcatFusion.from_config(layer.get_config())
    assert restored.missing_embedding is True


# -- fusion_weights -----------------------------------------------------------

SOFTMAX_WEIGHTED = [
    (WeightedFusion, {"units": 4}),
    (GatedFusion, {"units": 4}),
    (AttentionFusion, {"units": 4, "num_heads": 2, "num_layers": 1,
                       "dropout": 0.0}),
]
PRESENCE3 = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0]], "float32")
VECS3 = dict(VECS, c=RNG.normal(size=(4, 2)).astype("float32"))


@pytest.mark.parametrize("cls,kwargs", SOFTMAX_WEIGHTED,
                         ids=[c.__name__ for c, _ in SOFTMAX_WEIGHTED])
def test_fusion_weights_sum_to_one_over_present_modalities(cls, kwargs):
    keras.utils.set_random_seed(0)
    layer = cls(**kwargs)
    weights = layer.fusion_weights(VECS3, presence=PRESENCE3)  # builds
    w = _np(weights["weights"])
    assert w.shape == (4, 3)
    np.testing.assert_allclose(w[:3].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(w[PRESENCE3 == 0], 0.0)
    assert np.all(w[PRESENCE3 == 1] > 0)


def test_weighted_fusion_weights_rebuild_the_output():
    """The weights are the call's: out == sum_m w_m * projection_m(x_m)."""
    layer = WeightedFusion(units=4,
                           logits_initializer=keras.initializers.RandomNormal(
                               stddev=1.0, seed=3))
    out = _np(layer(VECS3, presence=PRESENCE3))
    w = _np(layer.fusion_weights(VECS3, presence=PRESENCE3)["weights"])
    rebuilt = sum(w[:, j:j + 1] * _np(proj(VECS3[m]))
                  for j, (m, proj) in enumerate(zip(layer.modalities,
                                                    layer.projections)))
    np.testing.assert_allclose(out, rebuilt, atol=1e-5)
    both = WeightedFusion.from_config(
        dict(layer.get_config(), return_weights=True))
    both(VECS3)
    both.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(both(VECS3, presence=PRESENCE3)[1]), w)


def test_gated_fusion_gates_rebuild_the_output():
    layer = GatedFusion(units=4, gate_initializer=keras.initializers.
                        RandomNormal(stddev=1.0, seed=3))
    out = _np(layer(VECS3, presence=PRESENCE3))
    internals = layer.fusion_weights(VECS3, presence=PRESENCE3)
    gates = _np(internals["gates"])  # [B, M, units]
    assert gates.shape == (4, 3, 4)
    np.testing.assert_allclose(_np(internals["weights"]), gates.mean(-1),
                               atol=1e-6)
    hidden = np.stack(
        [_np(proj(norm(VECS3[m]))) for m, proj, norm in zip(
            layer.modalities, layer.hidden_projections, layer.input_norms)],
        axis=1)
    rebuilt = np.sum(np.where(PRESENCE3[:, :, None] > 0, gates * hidden, 0),
                     axis=1)
    np.testing.assert_allclose(out, rebuilt, atol=1e-5)


def test_attention_fusion_weights_match_return_attention():
    keras.utils.set_random_seed(0)
    layer = AttentionFusion(units=4, num_heads=2, return_attention=True)
    _, returned = layer(VECS3, presence=PRESENCE3)
    internals = layer.fusion_weights(VECS3, presence=PRESENCE3)
    np.testing.assert_allclose(_np(internals["weights"]), _np(returned),
                               atol=1e-6)
    scores = _np(internals["scores"])  # [B, heads, M]
    np.testing.assert_allclose(scores.mean(axis=1), _np(returned), atol=1e-6)


SEQS = {"a": RNG.normal(size=(4, 3, 6)).astype("float32"),
        "b": RNG.normal(size=(4, 2, 4)).astype("float32")}
PRESENCE2 = np.array([[1, 1], [1, 0], [0, 1], [1, 1]], "float32")


def test_cross_attention_fusion_weights():
    keras.utils.set_random_seed(0)
    layer = CrossAttentionFusion(units=4, num_heads=2, dropout=0.0)
    mask = {"a": np.array([[1, 1, 0]] * 4, bool)}
    out = _np(layer(SEQS, presence=PRESENCE2, mask=mask))
    internals = layer.fusion_weights(SEQS, presence=PRESENCE2, mask=mask)
    np.testing.assert_allclose(_np(layer(SEQS, presence=PRESENCE2,
                                         mask=mask)), out)  # no state
    b_to_a = _np(internals["b_to_a/layer0"])  # [B, heads, 3, 1 + 2]
    a_to_b = _np(internals["a_to_b/layer0"])  # [B, heads, 2, 1 + 3]
    assert b_to_a.shape == (4, 2, 3, 3) and a_to_b.shape == (4, 2, 2, 4)
    np.testing.assert_allclose(b_to_a.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a_to_b.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(b_to_a[1, :, :, 1:], 0.0)  # b absent
    np.testing.assert_allclose(b_to_a[1, :, :, 0], 1.0)  # all on the null
    np.testing.assert_array_equal(a_to_b[:, :, :, 3], 0.0)  # padded token


@pytest.mark.parametrize("pooling", ["modality", "mean", "cls"])
def test_joint_transformer_fusion_weights(pooling):
    keras.utils.set_random_seed(0)
    layer = JointTransformerFusion(units=4, num_layers=2, num_heads=2,
                                   dropout=0.0, pooling=pooling)
    mask = {"a": np.array([[1, 1, 0]] + [[1, 1, 1]] * 3, bool), "b": None}
    out = _np(layer(SEQS, presence=PRESENCE2, mask=mask))
    internals = layer.fusion_weights(SEQS, presence=PRESENCE2, mask=mask)
    # recording left the encoder as it was
    np.testing.assert_allclose(
        _np(layer(SEQS, presence=PRESENCE2, mask=mask)), out)
    assert sorted(internals) == ["attention/layer0", "attention/layer1",
                                 "weights"]
    attention = _np(internals["attention/layer1"])  # [B, heads, 6, 6]
    assert attention.shape == (4, 2, 6, 6)
    # the pooled queries, as the pooling weighs them: [CLS], a (3), b (2)
    valid = np.concatenate([np.ones((4, 1)), mask["a"] * PRESENCE2[:, :1],
                            np.repeat(PRESENCE2[:, 1:], 2, axis=1)], axis=1)
    if pooling == "cls":
        queries = np.eye(6)[[0] * 4]
    elif pooling == "mean":
        queries = valid / valid.sum(1, keepdims=True)
    else:
        a, b = valid[:, 1:4], valid[:, 4:]
        n_a, n_b = a.sum(1, keepdims=True), b.sum(1, keepdims=True)
        present = (n_a > 0) * 1 + (n_b > 0)     # one at least a row
        queries = np.concatenate([
            np.zeros((4, 1)), a / np.maximum(n_a, 1) / present,
            b / np.maximum(n_b, 1) / present], axis=1)
    np.testing.assert_allclose(queries.sum(1), 1.0)
    row = np.einsum("bq,bqk->bk", queries, attention.mean(1))
    w = _np(internals["weights"])  # [B, 1 + M]: [CLS], a, b
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        w, np.stack([row[:, 0], row[:, 1:4].sum(-1), row[:, 4:].sum(-1)],
                    axis=1), atol=1e-5)
    np.testing.assert_array_equal(w[1, 2], 0.0)  # b absent
    np.testing.assert_array_equal(w[2, 1], 0.0)  # a absent


@pytest.mark.parametrize("cls,kwargs", [
    (ConcatFusion, {}), (TensorFusion, {"units": 4}),
    (LowRankFusion, {"units": 4})], ids=["concat", "tensor", "low_rank"])
def test_fusion_weights_empty_without_internals(cls, kwargs):
    layer = cls(**kwargs)
    assert layer.fusion_weights(VECS, presence=PRESENCE2) == {}
    assert layer.built  # built on the way
