"""Vector fusion layers: concat, weighted, gated, attention, tensor,
low_rank."""

import numpy as np
import keras
import pytest

from helpers import run_layer_checks
from keras_mm.fusion.attention_fusion import AttentionFusion
from keras_mm.fusion.concat_fusion import ConcatFusion
from keras_mm.fusion.gated_fusion import GatedFusion
from keras_mm.fusion.low_rank_fusion import LowRankFusion
from keras_mm.fusion.tensor_fusion import TensorFusion
from keras_mm.fusion.weighted_fusion import WeightedFusion
from keras_mm.registry import FUSIONS

RNG = np.random.RandomState(0)
# Three modalities of different widths; sorted order: audio, image, text.
VEC = {
    "audio": RNG.normal(size=(4, 5)).astype("float32"),
    "image": RNG.normal(size=(4, 8)).astype("float32"),
    "text": RNG.normal(size=(4, 3)).astype("float32"),
}
NAMES = sorted(VEC)
# Row r lacks modality r % 3 (row 3 has all three).
PRESENCE = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0], [1, 1, 1]], "float32")

CASES = [
    (ConcatFusion, {"units": 8}),
    (WeightedFusion, {"units": 8}),
    # zero-initialised gate kernel: every weight must still get a gradient
    (GatedFusion, {"units": 8, "gate_initializer": "zeros"}),
    (AttentionFusion, {"units": 8, "num_heads": 2}),
    (TensorFusion, {"units": 8, "projection_dim": 2}),
    (LowRankFusion, {"units": 8, "rank": 2}),
]
CASE_IDS = ["concat", "weighted", "gated", "attention", "tensor", "low_rank"]
# Attention with a self-attention encoder over the modality tokens first.
ATTENTION_ENCODER = {"units": 8, "num_heads": 2, "num_layers": 1,
                     "intermediate_dim": 8}
# The masking tests use a random gate kernel: with the default zero gate
# kernel the gate logits are a constant, so a leak of an absent modality
# into the gate network could not show. The zero gate stays in CASES
# (gradient check).
GATED_RANDOM = {"units": 8, "gate_initializer": "glorot_uniform"}
VARIANTS = [(cls, GATED_RANDOM) if cls is GatedFusion else (cls, kwargs)
            for cls, kwargs in CASES] + [(AttentionFusion, ATTENTION_ENCODER)]
VARIANT_IDS = CASE_IDS + ["attention_encoder"]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(
        keras.ops.cast(x, "float32")))


def _perturbed(inputs, name):
    changed = dict(inputs)
    noise = np.random.RandomState(7).normal(size=inputs[name].shape)
    changed[name] = (inputs[name] + 3.0 * noise).astype("float32")
    return changed


# -- standard battery ---------------------------------------------------------

@pytest.mark.parametrize("with_presence", [False, True],
                         ids=["no_presence", "presence"])
@pytest.mark.parametrize("cls,kwargs", CASES, ids=CASE_IDS)
def test_layer_checks(cls, kwargs, with_presence, tmp_path):
    call_kwargs = {"presence": PRESENCE} if with_presence else {}
    # The XLA-compiled fit runs once per layer, with the presence mask as a
    # model input (the case the builder's presence_mask: true produces).
    run_layer_checks(cls, kwargs, VEC, tmp_path=tmp_path,
                     call_kwargs=call_kwargs, expected_output_shape=(4, 8),
                     fit=with_presence)


def test_registered():
    expected = {"concat": ConcatFusion, "weighted": WeightedFusion,
                "gated": GatedFusion, "attention": AttentionFusion,
                "tensor": TensorFusion, "low_rank": LowRankFusion}
    for name, cls in expected.items():
        assert FUSIONS.get(name) is cls
        assert cls.input_kind == "vector"


# -- an absent modality contributes nothing ------------------------------------

ABSENT_CASES = VARIANTS + [(ConcatFusion, {})]
ABSENT_IDS = VARIANT_IDS + ["concat_no_units"]


@pytest.mark.parametrize("cls,kwargs", ABSENT_CASES, ids=ABSENT_IDS)
def test_absent_modality_contributes_nothing(cls, kwargs):
    keras.utils.set_random_seed(0)
    layer = cls(**kwargs)
    base_nomask = _np(layer(VEC))
    for k, name in enumerate(NAMES):
        presence = np.ones((4, 3), "float32")
        presence[[0, 2], k] = 0.0  # rows 0 and 2 lack `name`
        changed = _perturbed(VEC, name)

        base = _np(layer(VEC, presence=presence))
        moved = _np(layer(changed, presence=presence))
        assert np.all(np.isfinite(base)) and np.all(np.isfinite(moved))
        np.testing.assert_allclose(moved[[0, 2]], base[[0, 2]], atol=1e-6,
                                   err_msg=f"absent {name!r} leaked")
        # present rows do see the change
        assert np.abs(moved[[1, 3]] - base[[1, 3]]).max() > 1e-3, name

        # the same change DOES move those rows when the mask is not passed
        moved_nomask = _np(layer(changed))
        assert np.abs(moved_nomask[[0, 2]] - base_nomask[[0, 2]]).max() \
            > 1e-3, name


@pytest.mark.parametrize("cls,kwargs", VARIANTS, ids=VARIANT_IDS)
def test_absent_modality_mixed_bfloat16_and_nan_input(cls, kwargs):
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = cls(**kwargs)
    base = _np(layer(VEC, presence=PRESENCE))
    assert np.all(np.isfinite(base))
    # row 1 lacks "image": even NaN there cannot leak (ops.where, not *0)
    changed = dict(VEC, image=VEC["image"].copy())
    changed["image"][1] = np.nan
    moved = _np(layer(changed, presence=PRESENCE))
    np.testing.assert_array_equal(moved, base)


@pytest.mark.parametrize("cls,kwargs", VARIANTS, ids=VARIANT_IDS)
def test_no_modality_present_is_finite_and_input_free(cls, kwargs):
    layer = cls(**kwargs)
    none = np.zeros((4, 3), "float32")
    out = _np(layer(VEC, presence=none))
    assert np.all(np.isfinite(out))
    other = {k: v * 5 + 1 for k, v in VEC.items()}
    np.testing.assert_allclose(_np(layer(other, presence=none)), out,
                               atol=1e-6)
    # every row is then the same constant
    np.testing.assert_allclose(out, np.repeat(out[:1], 4, axis=0), atol=1e-6)


def test_all_present_mask_equals_no_mask():
    for cls, kwargs in VARIANTS:
        layer = cls(**kwargs)
        np.testing.assert_allclose(
            _np(layer(VEC, presence=np.ones((4, 3), "float32"))),
            _np(layer(VEC)), atol=1e-6, err_msg=cls.__name__)


# -- concat --------------------------------------------------------------------

def test_concat_is_the_concatenation_plus_presence(tmp_path):
    layer = ConcatFusion()
    out = _np(layer(VEC, presence=PRESENCE))
    assert out.shape == (4, 5 + 8 + 3 + 3)
    zeroed = [np.where(PRESENCE[:, j:j + 1] > 0, VEC[m], 0.0)
              for j, m in enumerate(NAMES)]
    np.testing.assert_array_equal(
        out, np.concatenate(zeroed + [PRESENCE], axis=-1))
    # no presence argument: same static width, flag columns all 1
    out = _np(layer(VEC))
    np.testing.assert_array_equal(
        out, np.concatenate([VEC[m] for m in NAMES] + [np.ones((4, 3))], -1))
    assert layer.compute_output_shape(
        {m: v.shape for m, v in VEC.items()}) == (4, 19)

    plain = ConcatFusion(append_presence=False)
    assert _np(plain(VEC, presence=PRESENCE)).shape == (4, 16)

    # symbolic model with the presence input, config, save / load
    sym = {m: keras.Input(v.shape[1:], name=m) for m, v in VEC.items()}
    sym_p = keras.Input((3,), name="presence")
    model = keras.Model([sym, sym_p], ConcatFusion(name="f")(
        sym, presence=sym_p))
    assert model.output.shape == (None, 19)
    path = str(tmp_path / "concat.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(_np(loaded([VEC, PRESENCE])),
                                  _np(model([VEC, PRESENCE])))
    config = ConcatFusion(units=None, append_presence=False).get_config()
    assert ConcatFusion.from_config(config).get_config() == config


# -- weighted ------------------------------------------------------------------

def test_weighted_softmax_over_present_modalities():
    layer = WeightedFusion(units=8, return_weights=True)
    layer(VEC)
    logits = np.array([0.5, -1.0, 2.0], "float32")
    layer.modality_logits.assign(logits)
    fused, weights = layer(VEC, presence=PRESENCE)
    weights = _np(weights)
    assert weights.shape == (4, 3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(weights[PRESENCE == 0], 0.0)
    for r in range(4):
        on = PRESENCE[r] > 0
        e = np.exp(logits[on] - logits[on].max())
        np.testing.assert_allclose(weights[r, on], e / e.sum(), atol=1e-6)
    # fused = sum_m w_m * Dense_m(x_m)
    projected = [_np(p(VEC[m])) for p, m in zip(layer.projections, NAMES)]
    expected = sum(weights[:, j:j + 1] * projected[j] for j in range(3))
    np.testing.assert_allclose(_np(fused), expected, atol=1e-5)
    # the weights are learned: their logits get a gradient
    assert layer.modality_logits.trainable


# -- gated ---------------------------------------------------------------------

def test_gated_two_modalities_is_the_bimodal_gmu():
    pair = {"audio": VEC["audio"], "image": VEC["image"]}
    # the paper's GMU: no input normalization, a random gate kernel
    layer = GatedFusion(units=4, normalize=False,
                        gate_initializer="glorot_uniform")
    out = _np(layer(pair))
    h = [np.tanh(pair[m] @ _np(p.kernel) + _np(p.bias))
         for p, m in zip(layer.hidden_projections, ["audio", "image"])]
    a = (np.concatenate([pair["audio"], pair["image"]], -1)
         @ _np(layer.gate.kernel) + _np(layer.gate.bias)).reshape(4, 2, 4)
    z = 1.0 / (1.0 + np.exp(-(a[:, 0] - a[:, 1])))  # sigmoid(a1 - a2)
    np.testing.assert_allclose(out, z * h[0] + (1 - z) * h[1], atol=1e-5)
    # one modality absent: its gate is 0, the other's is 1
    presence = np.array([[1, 0]] * 4, "float32")
    np.testing.assert_allclose(_np(layer(pair, presence=presence)),
                               np.tanh(pair["audio"] @ _np(
                                   layer.hidden_projections[0].kernel)
                                   + _np(layer.hidden_projections[0].bias)),
                               atol=1e-5)


def test_gated_absent_is_the_gmu_of_the_present_modalities():
    """Random gate kernel: with "audio" absent the output equals a
    GatedFusion over image and text with the same hidden projections and the
    gate kernel's image/text rows and columns. A leak of the absent input
    into the gate network changes the present gates and fails this."""
    keras.utils.set_random_seed(0)
    layer = GatedFusion(units=4, gate_initializer="glorot_uniform")
    layer(VEC)
    pair_inputs = {"image": VEC["image"], "text": VEC["text"]}
    pair = GatedFusion(units=4, gate_initializer="glorot_uniform")
    pair(pair_inputs)
    pair.hidden_projections[0].set_weights(
        layer.hidden_projections[1].get_weights())
    pair.hidden_projections[1].set_weights(
        layer.hidden_projections[2].get_weights())
    for j in (0, 1):  # the input normalizations (default normalize=True)
        pair.input_norms[j].set_weights(
            layer.input_norms[j + 1].get_weights())
    # gate kernel rows: audio 5, image 8, text 3; columns: 4 per modality
    kernel, bias = layer.gate.get_weights()
    pair.gate.set_weights([kernel[5:, 4:], bias[4:]])
    no_audio = np.array([[0, 1, 1]] * 4, "float32")
    changed = _perturbed(VEC, "audio")
    expected = _np(pair(pair_inputs))
    np.testing.assert_allclose(_np(layer(changed, presence=no_audio)),
                               expected, atol=1e-5)
    # not vacuous: the present audio does change the output
    assert np.abs(_np(layer(VEC)) - expected).max() > 1e-3


# -- attention -----------------------------------------------------------------

def test_attention_weights_of_absent_modalities_are_zero(tmp_path):
    layer = AttentionFusion(units=8, num_heads=2, return_attention=True)
    fused, weights = layer(VEC, presence=PRESENCE)
    assert tuple(fused.shape) == (4, 8)
    weights = _np(weights)
    assert weights.shape == (4, 3)
    np.testing.assert_array_equal(weights[PRESENCE == 0], 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(weights[PRESENCE > 0] > 0)
    # no modality present: zero weights and output, no NaN
    fused, weights = layer(VEC, presence=np.zeros((4, 3), "float32"))
    np.testing.assert_array_equal(_np(weights), 0.0)
    np.testing.assert_array_equal(_np(fused), 0.0)

    # symbolic tuple output, save / load
    sym = {m: keras.Input(v.shape[1:], name=m) for m, v in VEC.items()}
    sym_p = keras.Input((3,), name="presence")
    out = AttentionFusion(units=8, num_heads=2, return_attention=True)(
        sym, presence=sym_p)
    assert out[0].shape == (None, 8) and out[1].shape == (None, 3)
    model = keras.Model([sym, sym_p], out)
    path = str(tmp_path / "attention.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(loaded([VEC, PRESENCE]), model([VEC, PRESENCE])):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-6)


def test_attention_encoder_layer_checks(tmp_path):
    # (no XLA fit here: compiling the encoder is slow; the pooling-only
    # layer runs the fit in test_layer_checks)
    run_layer_checks(AttentionFusion, ATTENTION_ENCODER, VEC,
                     tmp_path=tmp_path, call_kwargs={"presence": PRESENCE},
                     expected_output_shape=(4, 8), fit=False)


# -- tensor --------------------------------------------------------------------

def _tfn_reference(layer, inputs, presence):
    zs = []
    for j, (p, m) in enumerate(zip(layer.projections, NAMES)):
        z = inputs[m] @ _np(p.kernel) + _np(p.bias)
        zs.append(np.where(presence[:, j:j + 1] > 0, z, 0.0))
    rows = []
    for r in range(inputs[NAMES[0]].shape[0]):
        t = np.ones((1,))
        for z in zs:
            t = np.outer(t, np.concatenate([[1.0], z[r]])).ravel()
        rows.append(t)
    out = layer.output_layer
    return np.stack(rows) @ _np(out.kernel) + _np(out.bias), np.stack(rows)


def test_tensor_fusion_is_the_outer_product():
    layer = TensorFusion(units=8, projection_dim=2, normalize=False)
    out = _np(layer(VEC, presence=PRESENCE))
    expected, tensor = _tfn_reference(layer, VEC, PRESENCE)
    assert tensor.shape == (4, 27)  # (2 + 1) ** 3
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # [1; 0] is the identity factor: row 0 (no audio) holds exactly the
    # image x text tensor, in the slice where audio's index is 0.
    t0 = tensor[0].reshape(3, 3, 3)
    np.testing.assert_array_equal(t0[1:], 0.0)
    z_img = VEC["image"][0] @ _np(layer.projections[1].kernel) \
        + _np(layer.projections[1].bias)
    z_txt = VEC["text"][0] @ _np(layer.projections[2].kernel) \
        + _np(layer.projections[2].bias)
    np.testing.assert_allclose(
        t0[0], np.outer(np.r_[1.0, z_img], np.r_[1.0, z_txt]), atol=1e-5)


# -- low rank ------------------------------------------------------------------

def test_low_rank_fusion_matches_the_formula():
    layer = LowRankFusion(units=4, rank=3, normalize=False)
    out = _np(layer(VEC, presence=PRESENCE))
    product = np.ones((4, 12))
    for j, (f, m) in enumerate(zip(layer.factors, NAMES)):
        value = VEC[m] @ _np(f.kernel) + _np(f.bias)
        product *= np.where(PRESENCE[:, j:j + 1] > 0, value, 1.0)
    lam = _np(layer.rank_weights)  # [rank, 1]
    expected = (product.reshape(4, 3, 4) * lam).sum(1) + _np(layer.bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_low_rank_absent_is_the_lmf_of_the_present_modalities():
    layer = LowRankFusion(units=4, rank=2)
    layer(VEC)
    pair = LowRankFusion(units=4, rank=2)
    pair({"image": VEC["image"], "text": VEC["text"]})
    pair.factors[0].set_weights(layer.factors[1].get_weights())
    pair.factors[1].set_weights(layer.factors[2].get_weights())
    pair.rank_weights.assign(layer.rank_weights)
    no_audio = np.array([[0, 1, 1]] * 4, "float32")
    np.testing.assert_allclose(
        _np(layer(VEC, presence=no_audio)),
        _np(pair({"image": VEC["image"], "text": VEC["text"]})), atol=1e-5)


# -- arguments and inputs -------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda: ConcatFusion(units=0), "units"),
    (lambda: ConcatFusion(append_presence="yes"), "append_presence"),
    (lambda: WeightedFusion(units="8"), "units"),
    (lambda: GatedFusion(units=-2), "units"),
    (lambda: GatedFusion(units=True), "units"),
    (lambda: AttentionFusion(units=10, num_heads=4), "num_heads"),
    (lambda: AttentionFusion(num_heads=0), "num_heads"),
    (lambda: AttentionFusion(num_layers=-1), "num_layers"),
    (lambda: AttentionFusion(dropout=1.0), "dropout"),
    (lambda: TensorFusion(projection_dim=0), "projection_dim"),
    (lambda: TensorFusion(dropout=-0.1), "dropout"),
    (lambda: LowRankFusion(rank=0), "rank"),
    (lambda: LowRankFusion(units=2.5), "units"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_tensor_too_large_names_projection_dim():
    inputs = {f"m{i}": VEC["text"] for i in range(6)}
    with pytest.raises(ValueError, match="projection_dim.*low_rank"):
        TensorFusion(projection_dim=16)(inputs)


@pytest.mark.parametrize("cls,kwargs", CASES, ids=CASE_IDS)
def test_input_keys_must_match_modalities(cls, kwargs):
    layer = cls(modalities=["audio", "image"], **kwargs)
    with pytest.raises(ValueError, match="do not match modalities"):
        layer(VEC)  # 'text' is not a listed modality
    layer = cls(**kwargs)
    layer(VEC)
    with pytest.raises(ValueError, match="do not match modalities"):
        layer({"audio": VEC["audio"], "image": VEC["image"]})
    with pytest.raises(ValueError, match="do not match modalities"):
        layer(dict(VEC, extra=VEC["text"]))
    with pytest.raises(ValueError, match=r"presence has shape .*\[batch, 3\]"):
        layer(VEC, presence=PRESENCE[:, :2])
    with pytest.raises(ValueError, match="expected a vector"):
        cls(**kwargs)(dict(VEC, text=np.zeros((4, 2, 3), "float32")))
    with pytest.raises(TypeError, match="takes a dict"):
        cls(**kwargs)(VEC["audio"])


def test_presence_column_order_follows_modalities():
    # an explicit order (not sorted): column j is modalities[j]
    order = ["text", "audio", "image"]
    layer = WeightedFusion(units=4, modalities=order, return_weights=True)
    presence = np.array([[0, 1, 1]] * 4, "float32")  # no text
    _, weights = layer(VEC, presence=presence)
    np.testing.assert_array_equal(_np(weights)[:, 0], 0.0)
    changed = _perturbed(VEC, "text")
    np.testing.assert_allclose(_np(layer(changed, presence=presence)[0]),
                               _np(layer(VEC, presence=presence)[0]),
                               atol=1e-6)