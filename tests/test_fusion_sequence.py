"""Sequence / feature-map fusion layers: joint transformer, cross attention,
FiLM."""

import numpy as np
import keras
import pytest

from helpers import run_layer_checks

from keras_mm.fusion.cross_attention_fusion import CrossAttentionFusion
from keras_mm.fusion.film_fusion import FiLMFusion
from keras_mm.fusion.joint_transformer_fusion import JointTransformerFusion
from keras_mm.layers.utils import record_attention_scores
from keras_mm.registry import FUSIONS

RNG = np.random.RandomState(0)
SEQ = {
    "a": RNG.normal(size=(4, 5, 8)).astype("float32"),
    "b": RNG.normal(size=(4, 3, 6)).astype("float32"),
    "c": RNG.normal(size=(4, 10)).astype("float32"),
}
MAPS = {
    "img": RNG.normal(size=(4, 3, 3, 6)).astype("float32"),
    "t": RNG.normal(size=(4, 5)).astype("float32"),
    "u": RNG.normal(size=(4, 3, 4)).astype("float32"),
}
VIDEO = {
    "vid": RNG.normal(size=(4, 3, 2, 2, 6)).astype("float32"),
    "t": RNG.normal(size=(4, 5)).astype("float32"),
}
# Two modalities (a sequence and a vector) keep the XLA compiles of the
# cross-attention checks short (M * (M - 1) crossmodal stacks).
PAIR = {"a": SEQ["a"], "c": SEQ["c"]}
# Row r lacks modality r % 3 (row 3 has all three).
PRESENCE = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0], [1, 1, 1]], "float32")
SEQ_MASK = {"a": np.array([[1, 1, 1, 0, 0]] * 4, bool),
            "b": np.array([[1, 1, 0]] * 4, bool)}
# A different valid length per row (right padding), for the equivalence
# tests: row r of the padded batch must equal the layer on row r cut to its
# valid tokens.
LENGTHS = {"a": [5, 3, 1, 4], "b": [1, 3, 2, 2]}
RAGGED_MASK = {k: np.arange(SEQ[k].shape[1])[None, :]
               < np.array(n)[:, None] for k, n in LENGTHS.items()}

JOINT = {"units": 8, "num_layers": 1, "num_heads": 2, "dropout": 0.0,
         "use_positions": True}
CROSS = {"units": 8, "num_layers": 1, "num_heads": 2, "dropout": 0.0,
         "intermediate_dim": 8}
# A non-zero generator so conditioning matters from the start in the
# masking tests (the default zero init starts at the identity).
FILM = {"target": "img", "units": 8,
        "generator_initializer": {"class_name": "RandomNormal",
                                  "config": {"stddev": 0.5, "seed": 1}}}

CASES = [
    (JointTransformerFusion, JOINT, SEQ),
    (CrossAttentionFusion, CROSS, SEQ),
    (FiLMFusion, FILM, MAPS),
]
CASE_IDS = ["joint_transformer", "cross_attention", "film"]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(
        keras.ops.cast(x, "float32")))


# -- standard battery ---------------------------------------------------------

@pytest.mark.parametrize("with_presence", [False, True],
                         ids=["no_presence", "presence"])
@pytest.mark.parametrize("cls,kwargs,inputs", CASES, ids=CASE_IDS)
def test_layer_checks(cls, kwargs, inputs, with_presence, tmp_path):
    call_kwargs = {"presence": PRESENCE} if with_presence else {}
    # FiLM's learned default map only stands in for an absent target: it
    # gets a gradient from the rows that lack the target (with presence).
    exempt = () if with_presence else ("default_map",)
    # The XLA-compiled fit (the slow part) runs once per layer, in
    # test_masks_as_model_inputs, with presence and token masks as inputs.
    run_layer_checks(cls, kwargs, inputs, tmp_path=tmp_path,
                     call_kwargs=call_kwargs, expected_output_shape=(4, 8),
                     fit=False, grad_exempt=exempt)


def test_joint_transformer_mean_pooling(tmp_path):
    run_layer_checks(JointTransformerFusion,
                     dict(JOINT, pooling="mean", use_positions=False),
                     SEQ, tmp_path=tmp_path, expected_output_shape=(4, 8),
                     fit=False)


def test_film_zero_init_video_feature_map(tmp_path):
    # default zero-initialised generator: every weight still gets a gradient
    out = run_layer_checks(
        FiLMFusion, {"target": "vid", "return_feature_map": True},
        VIDEO, tmp_path=tmp_path, expected_output_shape=(4, 3, 2, 2, 6),
        fit=False, grad_exempt=("default_map",))  # no absent target
    # starts as the identity on the feature map
    np.testing.assert_allclose(_np(out), VIDEO["vid"], atol=1e-6)


def test_registered():
    assert FUSIONS.get("joint_transformer") is JointTransformerFusion
    assert FUSIONS.get("cross_attention") is CrossAttentionFusion
    assert FUSIONS.get("film") is FiLMFusion
    assert JointTransformerFusion.input_kind == "sequence"
    assert CrossAttentionFusion.input_kind == "sequence"
    assert FiLMFusion.input_kind == "feature_map"


# -- masks as model inputs: symbolic path, save/load and XLA ------------------

def _mask_model(layer, inputs, mask, presence):
    sym = {k: keras.Input(v.shape[1:], name=k) for k, v in inputs.items()}
    sym_mask = {k: keras.Input(v.shape[1:], dtype="bool", name=f"{k}_mask")
                for k, v in mask.items()}
    sym_presence = keras.Input(presence.shape[1:], name="presence")
    out = layer(sym, presence=sym_presence, mask=sym_mask)
    model = keras.Model([sym, sym_mask, sym_presence], out)
    return model, [inputs, mask, presence]


@pytest.mark.parametrize("cls,kwargs,inputs,mask", [
    (JointTransformerFusion, JOINT, SEQ, SEQ_MASK),
    (CrossAttentionFusion, CROSS, PAIR, {"a": SEQ_MASK["a"]}),
    (FiLMFusion, dict(FILM, target="vid"), VIDEO,
     {"vid": np.array([[1, 1, 0]] * 4, bool)}),
], ids=CASE_IDS)
def test_masks_as_model_inputs(cls, kwargs, inputs, mask, tmp_path):
    keras.utils.set_random_seed(0)
    layer = cls(**kwargs)
    presence = PRESENCE[:, :len(inputs)]
    model, values = _mask_model(layer, inputs, mask, presence)
    eager = layer(values[0], presence=values[2], mask=values[1])
    ref = model(values)
    np.testing.assert_allclose(_np(ref), _np(eager), atol=1e-6)
    path = str(tmp_path / "masked.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(values)), _np(ref), atol=1e-6)
    # XLA-compiled training with masks and presence lowers the loss
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  jit_compile=True)
    y = np.random.RandomState(2).normal(size=ref.shape).astype("float32")
    history = model.fit(values, y, epochs=5, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


# -- an absent modality contributes nothing ------------------------------------

def _perturbed(inputs, name):
    changed = dict(inputs)
    noise = np.random.RandomState(7).normal(size=inputs[name].shape)
    changed[name] = (inputs[name] + 3.0 * noise).astype("float32")
    return changed


ABSENT_CASES = [
    (JointTransformerFusion, JOINT, SEQ, name) for name in ("a", "b", "c")
] + [
    (CrossAttentionFusion, CROSS, SEQ, name) for name in ("a", "b", "c")
] + [
    (FiLMFusion, FILM, MAPS, name) for name in ("img", "t", "u")
]


@pytest.mark.parametrize(
    "cls,kwargs,inputs,name", ABSENT_CASES,
    ids=[f"{c.__name__}-{n}" for c, _, _, n in ABSENT_CASES])
def test_absent_modality_contributes_nothing(cls, kwargs, inputs, name):
    keras.utils.set_random_seed(0)
    layer = cls(**kwargs)
    layer(inputs)  # build; fixes the modality order (sorted names)
    k = layer.modalities.index(name)
    presence = np.ones((4, len(inputs)), "float32")
    presence[[0, 2], k] = 0.0  # rows 0 and 2 lack `name`
    changed = _perturbed(inputs, name)

    base = _np(layer(inputs, presence=presence))
    moved = _np(layer(changed, presence=presence))
    assert np.all(np.isfinite(base)) and np.all(np.isfinite(moved))
    np.testing.assert_allclose(moved[[0, 2]], base[[0, 2]], atol=1e-5)
    # present rows do see the change
    assert np.abs(moved[[1, 3]] - base[[1, 3]]).max() > 1e-3

    # the same change DOES move the absent rows when the mask is not passed
    base_nomask = _np(layer(inputs))
    moved_nomask = _np(layer(changed))
    assert np.abs(moved_nomask[[0, 2]] - base_nomask[[0, 2]]).max() > 1e-3


def test_absent_modality_under_mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    for cls, kwargs in [(JointTransformerFusion, JOINT),
                        (CrossAttentionFusion, CROSS)]:
        layer = cls(**kwargs)
        changed = _perturbed(SEQ, "b")
        base = _np(layer(SEQ, presence=PRESENCE, mask=SEQ_MASK))
        moved = _np(layer(changed, presence=PRESENCE, mask=SEQ_MASK))
        assert np.all(np.isfinite(base))
        np.testing.assert_allclose(moved[1], base[1], atol=1e-6)  # no b
        assert np.abs(moved[3] - base[3]).max() > 1e-3


# -- padded tokens do not matter ----------------------------------------------

@pytest.mark.parametrize("cls,kwargs", [(JointTransformerFusion, JOINT),
                                        (CrossAttentionFusion, CROSS)],
                         ids=CASE_IDS[:2])
def test_padded_tokens_are_ignored(cls, kwargs):
    keras.utils.set_random_seed(0)
    layer = cls(**kwargs)
    padded = dict(SEQ)
    padded["a"] = SEQ["a"].copy()
    padded["a"][:, 3:] += 50.0  # only padded positions of "a" change
    padded["b"] = SEQ["b"].copy()
    padded["b"][:, 2:] -= 50.0
    base = _np(layer(SEQ, mask=SEQ_MASK))
    np.testing.assert_allclose(_np(layer(padded, mask=SEQ_MASK)), base,
                               atol=1e-5)
    # without the token mask the same change moves the output
    assert np.abs(_np(layer(padded)) - _np(layer(SEQ))).max() > 1e-3
    # a change to a real token moves it even with the mask
    real = dict(SEQ)
    real["a"] = SEQ["a"].copy()
    real["a"][:, 0] += 5.0
    assert np.abs(_np(layer(real, mask=SEQ_MASK)) - base).max() > 1e-3


def _garbage_in_padding(inputs, mask):
    """`inputs` with large values at every padded position of `mask`."""
    out = dict(inputs)
    for k, m in mask.items():
        x = inputs[k].copy()
        x[~m] = 50.0 + np.random.RandomState(3).normal(size=x[~m].shape)
        out[k] = x.astype("float32")
    return out


EQUIVALENCE_CASES = [
    (JointTransformerFusion, JOINT),
    (JointTransformerFusion, dict(JOINT, pooling="mean")),
    (CrossAttentionFusion, CROSS),
]
EQUIVALENCE_IDS = ["joint_transformer", "joint_transformer_mean",
                   "cross_attention"]


@pytest.mark.parametrize("cls,kwargs", EQUIVALENCE_CASES,
                         ids=EQUIVALENCE_IDS)
def test_padded_input_equals_the_truncated_sequence(cls, kwargs):
    """Row r of a masked, padded batch == the same layer (same weights) on
    row r cut to its valid tokens. Zeroing padded tokens before the
    projection is not enough: their projections (bias, type and position
    embeddings) are real keys unless the attention mask hides them."""
    keras.utils.set_random_seed(0)
    layer = cls(**kwargs)
    padded = _np(layer(_garbage_in_padding(SEQ, RAGGED_MASK),
                       mask=RAGGED_MASK))
    for r in range(4):
        cut = {"a": SEQ["a"][r:r + 1, :LENGTHS["a"][r]],
               "b": SEQ["b"][r:r + 1, :LENGTHS["b"][r]],
               "c": SEQ["c"][r:r + 1]}
        np.testing.assert_allclose(padded[r], _np(layer(cut))[0], atol=1e-5,
                                   err_msg=f"row {r}")
    # not vacuous: the truncation does change the output of the layer
    assert np.abs(padded - _np(layer(SEQ))).max() > 1e-3


def _joint_without(layer, drop, kwargs):
    """A JointTransformerFusion over the other modalities, with `layer`'s
    weights for every shared part (projections, positions, type rows of
    the kept modalities, [CLS] token, encoder)."""
    keep = [m for m in layer.modalities if m != drop]
    sub_inputs = {m: SEQ[m] for m in keep}
    other = JointTransformerFusion(**kwargs)
    other(sub_inputs)
    idx = [layer.modalities.index(m) for m in keep]
    for j, i in enumerate(idx):
        other.projections[j].set_weights(layer.projections[i].get_weights())
        if layer.use_positions:
            other.position_embeddings[j].set_weights(
                layer.position_embeddings[i].get_weights())
    other.type_embeddings.assign(_np(layer.type_embeddings)[idx])
    other.cls_token.assign(layer.cls_token)
    other.encoder.set_weights(layer.encoder.get_weights())
    return other, sub_inputs


@pytest.mark.parametrize("pooling", ["cls", "mean", "modality"])
@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_joint_transformer_absent_equals_the_layer_without_it(name,
                                                              pooling):
    kwargs = dict(JOINT, pooling=pooling)
    keras.utils.set_random_seed(0)
    layer = JointTransformerFusion(**kwargs)
    layer(SEQ)
    k = layer.modalities.index(name)
    presence = np.ones((4, 3), "float32")
    presence[[0, 2], k] = 0.0  # rows 0 and 2 lack `name`
    out = _np(layer(SEQ, presence=presence))
    other, sub_inputs = _joint_without(layer, name, kwargs)
    without = _np(other(sub_inputs))
    np.testing.assert_allclose(out[[0, 2]], without[[0, 2]], atol=1e-5)
    # not vacuous: where `name` is present it changes the output
    assert np.abs(out[[1, 3]] - without[[1, 3]]).max() > 1e-3


def test_joint_transformer_first_modality_with_no_tokens():
    """A first modality with 0 tokens (its mask has no column for the
    [CLS] key to copy) equals the layer without it."""
    kwargs = dict(JOINT, use_positions=False)  # no 0-length positions
    keras.utils.set_random_seed(0)
    layer = JointTransformerFusion(**kwargs)
    inputs = dict(SEQ, a=SEQ["a"][:, :0])
    out = _np(layer(inputs))
    other, sub_inputs = _joint_without(layer, "a", kwargs)
    np.testing.assert_allclose(out, _np(other(sub_inputs)), atol=1e-5)


def _cross_target_only(layer, inputs, t, s):
    """The (source s -> target t) stream of a CrossAttentionFusion with
    one layer per pair when the source contributes nothing: the target's
    own residual path, z + MLP(LN(z)), final norm, mean over its tokens."""
    k = layer._pairs().index((t, s))
    x = inputs[layer.modalities[t]]
    x = x[:, None, :] if x.ndim == 2 else x
    z = layer.projections[t](x)
    z = z + layer.fc2s[k](layer.fc1s[k](layer.mlp_norms[k](z)))
    return _np(layer.final_norms[k](z)).mean(axis=1)


@pytest.mark.parametrize("absent", ["a", "c"])
def test_cross_attention_absent_equals_the_layer_without_it(absent):
    """With two modalities, one absent: the present one's block is its own
    residual path (no attention update at all), the absent one's block is
    zero and its flag is 0, through the layer's own output projection."""
    keras.utils.set_random_seed(0)
    layer = CrossAttentionFusion(**CROSS)
    layer(PAIR)
    j = layer.modalities.index(absent)
    present = 1 - j
    presence = np.ones((4, 2), "float32")
    presence[:, j] = 0.0
    out = _np(layer(PAIR, presence=presence))
    blocks = [None, None]
    blocks[present] = _cross_target_only(layer, PAIR, present, j)
    blocks[j] = np.zeros((4, CROSS["units"]), "float32")
    flags = presence
    expected = _np(layer.output_projection(
        np.concatenate(blocks + [flags], axis=-1)))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # not vacuous: with both present the attention update does matter
    assert np.abs(_np(layer(PAIR)) - expected).max() > 1e-3


def test_cross_attention_absent_equals_the_source_without_tokens():
    """An absent modality == the same layer called with that modality as a
    sequence of zero tokens (the layer has weights per modality pair, so
    this is how it is called "without" it)."""
    keras.utils.set_random_seed(0)
    layer = CrossAttentionFusion(**CROSS)
    layer(SEQ)
    presence = np.ones((4, 3), "float32")
    presence[:, layer.modalities.index("b")] = 0.0
    out = _np(layer(SEQ, presence=presence, mask=RAGGED_MASK))
    no_b = dict(SEQ, b=SEQ["b"][:, :0])
    np.testing.assert_allclose(
        out, _np(layer(no_b, mask={"a": RAGGED_MASK["a"]})), atol=1e-5)
    assert np.abs(out - _np(layer(SEQ, mask=RAGGED_MASK))).max() > 1e-3


def _assert_zero_on_invalid_keys(scores, key_valid, what, query_valid=None):
    """`scores` [B, H, Q, K]: exactly 0 on invalid keys; over the valid
    keys a distribution with every weight > 0, for each valid query
    (`query_valid` [B, Q], default all)."""
    scores = _np(scores)
    invalid = np.broadcast_to(~key_valid[:, None, None, :], scores.shape)
    assert np.count_nonzero(invalid) and np.count_nonzero(~invalid)
    blocked = np.where(invalid, scores, 0.0)
    assert np.all(blocked == 0.0), (
        f"{what}: attention on padded/absent keys, max "
        f"{np.abs(blocked).max()}")
    if query_valid is None:
        query_valid = np.ones((scores.shape[0], scores.shape[2]), bool)
    rows = np.broadcast_to(query_valid[:, None, :], scores.shape[:3])
    np.testing.assert_allclose(scores.sum(-1)[rows], 1.0, atol=1e-5)
    assert np.all(np.where(invalid, 1.0, scores)[rows] > 0.0)


def test_cross_attention_scores_on_padded_and_absent_keys_are_zero():
    layer = CrossAttentionFusion(**CROSS)
    layer(SEQ)
    garbage = _garbage_in_padding(SEQ, RAGGED_MASK)
    with record_attention_scores(layer.attns) as recorded:
        layer(garbage, presence=PRESENCE, mask=RAGGED_MASK)
    for k, (t, s) in enumerate(layer._pairs()):
        name = layer.modalities[s]
        tokens = SEQ[name].shape[1] if SEQ[name].ndim == 3 else 1
        valid = RAGGED_MASK.get(name, np.ones((4, tokens), bool))
        valid = valid & (PRESENCE[:, [s]] > 0)
        key_valid = np.concatenate([np.ones((4, 1), bool), valid], axis=1)
        (scores,) = recorded[k]
        assert scores.shape[-1] == tokens + 1  # the null key first
        _assert_zero_on_invalid_keys(scores, key_valid,
                                     f"{name} -> {layer.modalities[t]}")


def test_joint_transformer_scores_on_padded_and_absent_keys_are_zero():
    layer = JointTransformerFusion(**dict(JOINT, num_layers=2))
    layer(SEQ)
    garbage = _garbage_in_padding(SEQ, RAGGED_MASK)
    with record_attention_scores(layer.encoder.attns) as recorded:
        layer(garbage, presence=PRESENCE, mask=RAGGED_MASK)
    valids = [np.ones((4, 1), bool)]  # [CLS]
    for j, name in enumerate(layer.modalities):
        tokens = SEQ[name].shape[1] if SEQ[name].ndim == 3 else 1
        valid = RAGGED_MASK.get(name, np.ones((4, tokens), bool))
        valids.append(valid & (PRESENCE[:, [j]] > 0))
    key_valid = np.concatenate(valids, axis=1)
    assert len(recorded) == 2
    for i, (scores,) in enumerate(recorded):
        assert scores.shape[-1] == key_valid.shape[1]
        _assert_zero_on_invalid_keys(scores, key_valid, f"layer {i}",
                                     query_valid=key_valid)


def test_film_padded_frames_are_ignored():
    layer = FiLMFusion(**dict(FILM, target="vid"))
    frame_mask = {"vid": np.array([[1, 1, 0]] * 4, bool)}
    changed = dict(VIDEO)
    changed["vid"] = VIDEO["vid"].copy()
    changed["vid"][:, 2] += 10.0
    base = _np(layer(VIDEO, mask=frame_mask))
    np.testing.assert_allclose(_np(layer(changed, mask=frame_mask)), base,
                               atol=1e-5)
    assert np.abs(_np(layer(changed)) - _np(layer(VIDEO))).max() > 1e-3


# -- edge cases ---------------------------------------------------------------

def test_cross_attention_all_sources_absent_is_finite_and_target_only():
    layer = CrossAttentionFusion(**CROSS)
    presence = np.array([[1, 0, 0]] * 4, "float32")  # only "a" present
    base = _np(layer(SEQ, presence=presence, mask=SEQ_MASK))
    assert np.all(np.isfinite(base))
    other = dict(SEQ, b=SEQ["b"] * 9 + 1, c=SEQ["c"] - 4)
    np.testing.assert_allclose(
        _np(layer(other, presence=presence, mask=SEQ_MASK)), base, atol=1e-5)
    # a modality with all tokens padded counts as absent too
    empty = dict(SEQ_MASK, b=np.zeros((4, 3), bool))
    out = _np(layer(SEQ, mask=empty))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(
        _np(layer(dict(SEQ, b=SEQ["b"] + 7), mask=empty)), out, atol=1e-5)


def test_joint_transformer_all_absent_is_finite():
    layer = JointTransformerFusion(**JOINT)
    out = _np(layer(SEQ, presence=np.zeros((4, 3), "float32")))
    assert np.all(np.isfinite(out))
    # nothing present: every row is the same (the [CLS] token alone)
    np.testing.assert_allclose(out, np.repeat(out[:1], 4, axis=0), atol=1e-5)


def test_film_identity_when_conditioning_absent():
    layer = FiLMFusion(**dict(FILM, return_feature_map=True))
    layer(MAPS)
    no_cond = np.zeros((4, 3), "float32")
    no_cond[:, layer.modalities.index("img")] = 1.0
    np.testing.assert_allclose(_np(layer(MAPS, presence=no_cond)),
                               MAPS["img"], atol=1e-6)
    # with the conditioning present the (non-zero) generator modulates
    assert np.abs(_np(layer(MAPS)) - MAPS["img"]).max() > 1e-3


def test_film_gamma_beta_follow_the_generator():
    layer = FiLMFusion(target="img", return_feature_map=True)
    inputs = {"img": MAPS["img"], "t": MAPS["t"]}
    layer(inputs)
    gen = layer.generators[0]
    kernel = RNG.normal(size=gen.kernel.shape).astype("float32")
    bias = RNG.normal(size=gen.bias.shape).astype("float32")
    gen.kernel.assign(kernel)
    gen.bias.assign(bias)
    shift = MAPS["t"] @ kernel + bias
    gamma, beta = 1 + shift[:, :6], shift[:, 6:]
    expected = MAPS["img"] * gamma[:, None, None] + beta[:, None, None]
    np.testing.assert_allclose(_np(layer(inputs)), expected, atol=1e-4)


@pytest.mark.parametrize("make,match", [
    (lambda: JointTransformerFusion(units=10, num_heads=4), "num_heads"),
    (lambda: JointTransformerFusion(pooling="max"), "pooling"),
    (lambda: CrossAttentionFusion(units=6, num_heads=4), "num_heads"),
    (lambda: FiLMFusion(target=""), "target"),
    (lambda: FiLMFusion(target=3), "target"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least two"):
        CrossAttentionFusion(units=8, num_heads=2)({"a": SEQ["a"]})
    with pytest.raises(ValueError, match="'nope' is not one of"):
        FiLMFusion(target="nope")(MAPS)
    with pytest.raises(ValueError, match="feature map"):
        FiLMFusion(target="t")(MAPS)
    with pytest.raises(ValueError, match="conditioning"):
        FiLMFusion(target="img")({"img": MAPS["img"]})
    with pytest.raises(ValueError, match="target=None and no input is a "
                                         "feature map"):
        FiLMFusion()({"t": MAPS["t"], "u": MAPS["u"]})
    with pytest.raises(ValueError, match="tokens"):
        JointTransformerFusion(units=8, num_heads=2)(
            {"a": MAPS["img"], "c": SEQ["c"]})
    with pytest.raises(ValueError, match="use_positions"):
        layer = JointTransformerFusion(units=8, num_heads=2,
                                       use_positions=True)
        layer.build({"a": (None, None, 8), "c": (None, 10)})
