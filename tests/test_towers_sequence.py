"""Text, sensor and tabular towers: the layer battery, masking, arguments."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from helpers import run_layer_checks
from keras_mm.registry import TOWERS
from keras_mm.towers.sensor_tower import SensorTower
from keras_mm.towers.tabular_tower import TabularTower
from keras_mm.towers.text_tower import TextTower

RNG = np.random.RandomState(0)

# Token ids [4, 6], right-padded with 0; lengths 6, 4, 2, 1.
IDS = np.array([[3, 7, 1, 9, 4, 2],
                [5, 8, 2, 6, 0, 0],
                [11, 4, 0, 0, 0, 0],
                [7, 0, 0, 0, 0, 0]], dtype="int32")
IDS_MASK = IDS != 0
SERIES = RNG.normal(size=(4, 6, 3)).astype("float32")
# Missing steps anywhere: trailing padding and gaps in the middle.
STEP_MASK = np.array([[1, 1, 1, 1, 1, 1],
                      [1, 1, 0, 1, 1, 0],
                      [1, 1, 1, 0, 0, 0],
                      [0, 1, 0, 1, 0, 0]], dtype=bool)
NUMERIC = RNG.normal(3.0, 2.0, size=(4, 3)).astype("float32")
CATEGORICAL = np.array([[1, 0], [4, 2], [0, 1], [2, 3]], dtype="int32")

# Every case runs the battery; the XLA-compiled fit step (the slow part: an
# XLA compile on CPU) runs on the "vector" output of one encoder per family
# of ops not already fit-tested elsewhere: embedding + Conv1D + masked max
# (text cnn), masked bidirectional RNN + masked mean (text bigru), masked
# unidirectional RNN (sensor lstm), numeric normalization + embeddings
# (tabular); "bag" is a subset of these. TransformerEncoder and TemporalConvNet have their own XLA fit
# in test_layers.py; "sequence" differs from "vector" only in pooling.
FIT_CASES = {("text", "cnn"), ("text", "bigru"),
             ("sensor", "lstm"), ("tabular", "both")}


def fit_case(tower, case, output):
    return output == "vector" and (tower, case) in FIT_CASES

TEXT_ENCODERS = {
    "bag": {},
    "cnn": {"kernel_sizes": (2, 3), "filters": 8},
    "bigru": {"rnn_units": 8, "num_layers": 1},
    "bilstm": {"rnn_units": 8, "num_layers": 1},
    "transformer": {"num_layers": 1, "num_heads": 2},
}
SENSOR_ENCODERS = {
    "lstm": {},
    "gru": {},
    "tcn": {"tcn_dilations": (1, 2)},
    "transformer": {"num_heads": 2},
}


def text_kwargs(encoder, **extra):
    kwargs = dict(TEXT_ENCODERS[encoder], vocab_size=20, sequence_length=8,
                  embedding_dim=8, encoder=encoder, dim=8)
    kwargs.update(extra)
    return kwargs


def sensor_kwargs(encoder, **extra):
    kwargs = dict(SENSOR_ENCODERS[encoder], encoder=encoder, dim=8,
                  num_layers=1)
    kwargs.update(extra)
    return kwargs


def np_out(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


# -- registry ----------------------------------------------------------------

def test_towers_are_registered():
    assert TOWERS.get("text") is TextTower
    assert TOWERS.get("sensor") is SensorTower
    assert TOWERS.get("tabular") is TabularTower
    assert TextTower.input_dtype == "int32"
    assert SensorTower.input_dtype == "float32"
    assert TabularTower.input_dtype == "float32"


# -- text --------------------------------------------------------------------

@pytest.mark.parametrize("output", ["vector", "sequence"])
@pytest.mark.parametrize("encoder", list(TEXT_ENCODERS))
def test_text_tower(encoder, output, tmp_path):
    kwargs = text_kwargs(encoder, output=output)
    expected = (4, 8) if output == "vector" else (4, 6, 8)
    out = run_layer_checks(TextTower, kwargs, IDS, tmp_path=tmp_path,
                           expected_output_shape=expected,
                           fit=fit_case("text", encoder, output))
    tower = TextTower(**kwargs)
    mask = tower.compute_mask(IDS)
    if output == "vector":
        assert mask is None
    else:
        np.testing.assert_array_equal(np_out(mask), IDS_MASK)
        # padded tokens are zero in the sequence output
        assert np.all(np_out(out)[~IDS_MASK] == 0)


@pytest.mark.parametrize("encoder", list(TEXT_ENCODERS))
def test_text_tower_ignores_padding_length(encoder):
    """Extra trailing padding changes nothing; a real token does."""
    keras.utils.set_random_seed(1)
    vec = TextTower(**text_kwargs(encoder))
    seq = TextTower(**text_kwargs(encoder, output="sequence"))
    longer = np.pad(IDS, ((0, 0), (0, 2)))  # [4, 8], two more pads
    np.testing.assert_allclose(np_out(vec(IDS)), np_out(vec(longer)),
                               atol=1e-5)
    short_seq, long_seq = np_out(seq(IDS)), np_out(seq(longer))
    np.testing.assert_allclose(short_seq, long_seq[:, :6], atol=1e-5)
    assert np.all(long_seq[:, 6:] == 0)
    # Not vacuous: putting a real token in a padded slot changes row 3.
    filled = longer.copy()
    filled[3, 1] = 5
    changed = np_out(vec(filled))
    np.testing.assert_allclose(changed[:3], np_out(vec(longer))[:3],
                               atol=1e-5)
    assert not np.allclose(changed[3], np_out(vec(longer))[3], atol=1e-4)


@pytest.mark.parametrize("encoder", ["bag", "transformer", "bigru"])
def test_text_tower_call_mask_hides_tokens(encoder):
    """A call mask drops tokens exactly like replacing them by padding."""
    tower = TextTower(**text_kwargs(encoder))
    mask = IDS_MASK.copy()
    mask[0, 3:] = False
    dropped = IDS.copy()
    dropped[0, 3:] = 0
    np.testing.assert_allclose(np_out(tower(IDS, mask=mask)),
                               np_out(tower(dropped)), atol=1e-5)


def test_text_tower_all_padding_row_gives_zeros():
    ids = IDS.copy()
    ids[2] = 0
    for encoder in TEXT_ENCODERS:
        out = np_out(TextTower(**text_kwargs(encoder))(ids))
        assert np.all(np.isfinite(out))
        assert np.all(out[2] == 0), encoder


def test_text_tower_sequence_mask_reaches_next_layer():
    """In a functional model the token mask flows to mask-aware layers."""
    tower = TextTower(**text_kwargs("bag", output="sequence"))
    inp = keras.Input((6,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(tower(inp))
    model = keras.Model(inp, pooled)
    seq = np_out(tower(IDS))
    counts = IDS_MASK.sum(axis=1, keepdims=True)
    expected = seq.sum(axis=1) / counts
    np.testing.assert_allclose(np_out(model(IDS)), expected, atol=1e-5)


def test_text_tower_rejects_too_long_input():
    with pytest.raises(ValueError, match="sequence_length=4"):
        TextTower(vocab_size=20, sequence_length=4)(IDS)


# -- sensor ------------------------------------------------------------------

@pytest.mark.parametrize("output", ["vector", "sequence"])
@pytest.mark.parametrize("encoder", list(SENSOR_ENCODERS))
def test_sensor_tower(encoder, output, tmp_path):
    kwargs = sensor_kwargs(encoder, output=output)
    expected = (4, 8) if output == "vector" else (4, 6, 8)
    out = run_layer_checks(SensorTower, kwargs, SERIES, tmp_path=tmp_path,
                           call_kwargs={"mask": STEP_MASK},
                           expected_output_shape=expected,
                           fit=fit_case("sensor", encoder, output))
    tower = SensorTower(**kwargs)
    assert tower.compute_mask(SERIES) is None
    if output == "sequence":
        np.testing.assert_array_equal(
            np_out(tower.compute_mask(SERIES, STEP_MASK)), STEP_MASK)
        assert np.all(np_out(out)[~STEP_MASK] == 0)


@pytest.mark.parametrize("output", ["vector", "sequence"])
@pytest.mark.parametrize("encoder", list(SENSOR_ENCODERS))
def test_sensor_tower_ignores_missing_steps(encoder, output):
    """Values at masked steps (even NaN) never reach the output."""
    tower = SensorTower(**sensor_kwargs(encoder, output=output))
    other = SERIES.copy()
    other[~STEP_MASK] = 50.0
    nans = SERIES.copy()
    nans[~STEP_MASK] = np.nan
    ref = np_out(tower(SERIES, mask=STEP_MASK))
    np.testing.assert_allclose(np_out(tower(other, mask=STEP_MASK)), ref,
                               atol=1e-5)
    np.testing.assert_allclose(np_out(tower(nans, mask=STEP_MASK)), ref,
                               atol=1e-5)
    # The same change is visible without the mask: the test can fail.
    assert not np.allclose(np_out(tower(other)), np_out(tower(SERIES)),
                           atol=1e-4)


def test_sensor_tower_fully_missing_row_gives_zeros():
    mask = STEP_MASK.copy()
    mask[1] = False
    for encoder in SENSOR_ENCODERS:
        out = np_out(SensorTower(**sensor_kwargs(encoder))(SERIES, mask=mask))
        assert np.all(np.isfinite(out))
        assert np.all(out[1] == 0), encoder


def test_sensor_tcn_is_causal():
    tower = SensorTower(**sensor_kwargs("tcn", output="sequence"))
    other = SERIES.copy()
    other[:, 4:] += 3.0
    a, b = np_out(tower(SERIES)), np_out(tower(other))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-5)
    assert not np.allclose(a[:, 4:], b[:, 4:], atol=1e-4)


POOLINGS = ("mean", "last", "attention", "max")
# Per-row valid lengths of a right-padded batch (the rest is garbage).
LENGTHS = (6, 4, 2, 1)


def _nonzero_query(tower):
    """A non-zero attention query (it starts at zeros = a plain mean)."""
    if tower.pooling == "attention":
        tower.pool_query.assign(RNG.normal(size=tower.dim).astype("float32"))


@pytest.mark.parametrize("encoder, pooling", [
    (e, p) for e in ("gru", "tcn", "transformer") for p in POOLINGS]
    + [("lstm", "last")])
def test_sensor_pooling_padded_with_mask_equals_truncated(encoder, pooling):
    """Right-padded series + step mask == each series cut to its length."""
    tower = SensorTower(**sensor_kwargs(encoder, pooling=pooling))
    mask = np.arange(6)[None, :] < np.array(LENGTHS)[:, None]
    padded = np.where(mask[:, :, None], SERIES,
                      2.0 * SERIES[::-1] + 1.0).astype("float32")
    padded[3, 1:] = np.nan             # padding may be NaN
    tower.build(padded.shape)
    _nonzero_query(tower)
    out = np_out(tower(padded, mask=mask))
    for i, n in list(enumerate(LENGTHS))[1:]:
        alone = np_out(tower(SERIES[i:i + 1, :n]))
        np.testing.assert_allclose(out[i:i + 1], alone, atol=2e-5,
                                   err_msg=f"row {i}, {n} steps")
    # Without the mask the padding changes the vector: the test can fail.
    unmasked = np_out(tower(np.nan_to_num(padded, nan=0.5)))
    assert not np.allclose(unmasked[1:3], out[1:3], atol=1e-3)


def test_sensor_pooling_definitions():
    """Each pooling against its NumPy definition on the encoder's tokens."""
    mask = STEP_MASK.copy()                    # gaps in the middle too
    seq_tower = SensorTower(**sensor_kwargs("gru", output="sequence"))
    tokens = np_out(seq_tower(SERIES, mask=mask))          # zero where masked
    for pooling in POOLINGS:
        tower = SensorTower(**sensor_kwargs("gru", pooling=pooling))
        tower.build(SERIES.shape)
        tower.sensor_encoder.rnns[0].set_weights(
            seq_tower.sensor_encoder.rnns[0].get_weights())
        _nonzero_query(tower)
        got = np_out(tower(SERIES, mask=mask))
        for i in range(4):
            valid = tokens[i][mask[i]]
            if pooling == "mean":
                want = valid.mean(0)
            elif pooling == "last":
                want = valid[-1]                 # the last VALID step
            elif pooling == "max":
                want = valid.max(0)
            else:
                q = np_out(tower.pool_query)
                e = np.exp(valid @ q / np.sqrt(8) - (valid @ q).max()
                           / np.sqrt(8))
                want = (e / e.sum()) @ valid
            np.testing.assert_allclose(got[i], want, atol=2e-5,
                                       err_msg=f"{pooling}, row {i}")
    # Row 3's last valid step is 3, not the last step: "last" differs.
    assert not np.allclose(tokens[3, 5], tokens[3, 3])


def test_sensor_attention_pooling_layer_checks(tmp_path):
    """The one pooling with a weight: config, saving, gradients to it."""
    kwargs = sensor_kwargs("gru", pooling="attention")
    run_layer_checks(SensorTower, kwargs, SERIES, tmp_path=tmp_path,
                     call_kwargs={"mask": STEP_MASK},
                     expected_output_shape=(4, 8), fit=False)
    for pooling in POOLINGS:
        config = SensorTower(pooling=pooling).get_config()
        assert SensorTower.from_config(config).pooling == pooling
    assert SensorTower().pooling == "max"
    # A config saved before the option existed: mean-pooled, as it was.
    old = SensorTower().get_config()
    del old["pooling"]
    assert SensorTower.from_config(old).pooling == "mean"


def test_sensor_transformer_needs_fixed_length():
    tower = SensorTower(**sensor_kwargs("transformer"))
    with pytest.raises(ValueError, match="fixed number of steps"):
        tower.build((None, None, 3))


# -- tabular -----------------------------------------------------------------

TABULAR_CASES = {
    "numeric": ({"num_numeric": 3, "mean": [3.0, 3.0, 3.0],
                 "variance": [4.0, 4.0, 4.0]},
                {"numeric": NUMERIC}),
    "categorical": ({"cardinalities": (4, 3)},
                    {"categorical": CATEGORICAL}),
    "both": ({"num_numeric": 3, "cardinalities": (4, 3)},
             {"numeric": NUMERIC, "categorical": CATEGORICAL}),
}


@pytest.mark.parametrize("output", ["vector", "sequence"])
@pytest.mark.parametrize("case", list(TABULAR_CASES))
def test_tabular_tower(case, output, tmp_path):
    kwargs, inputs = TABULAR_CASES[case]
    kwargs = dict(kwargs, embedding_dim=4, hidden_units=(8,), dim=8,
                  output=output)
    tokens = kwargs.get("num_numeric", 0) + len(kwargs.get("cardinalities",
                                                           ()))
    expected = (4, 8) if output == "vector" else (4, tokens, 8)
    run_layer_checks(TabularTower, kwargs, inputs, tmp_path=tmp_path,
                     expected_output_shape=expected,
                     fit=fit_case("tabular", case, output))
    assert TabularTower(**kwargs).compute_mask(inputs) is None


def test_tabular_tower_normalizes_numerics():
    """Output = projection of (x - mean) / std, with stats from the args."""
    mean, variance = [1.0, -2.0, 10.0], [4.0, 0.25, 9.0]
    tower = TabularTower(num_numeric=3, hidden_units=(), dim=2, mean=mean,
                         variance=variance)
    out = np_out(tower({"numeric": NUMERIC}))
    normed = (NUMERIC - np.array(mean)) / np.sqrt(variance)
    kernel = np_out(tower.projection.kernel)
    bias = np_out(tower.projection.bias)
    np.testing.assert_allclose(out, normed @ kernel + bias, atol=1e-5)
    assert not tower.numeric_mean.trainable
    assert tower.get_config()["mean"] == mean


def test_tabular_tower_normalizes_in_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    tower = TabularTower(num_numeric=1, hidden_units=(), dim=1,
                         mean=[1000.0], variance=[1.0])
    x = np.array([[1000.5], [999.5]], dtype="float32")
    out = np_out(tower({"numeric": x}))
    kernel = np_out(tower.projection.kernel)[0, 0]
    # bfloat16 cannot tell 1000.5 from 1000; float32 normalization can.
    np.testing.assert_allclose(out[:, 0], [0.5 * kernel, -0.5 * kernel],
                               rtol=2e-2)


def test_tabular_adapt_array_and_dataset():
    data = RNG.normal(5.0, 3.0, size=(200, 3)).astype("float32")
    tower = TabularTower(num_numeric=3, cardinalities=(4,), dim=8)
    tower({"numeric": NUMERIC, "categorical": CATEGORICAL[:, :1]})  # built
    tower.adapt(data)
    np.testing.assert_allclose(np_out(tower.numeric_mean), data.mean(0),
                               rtol=1e-5)
    np.testing.assert_allclose(np_out(tower.numeric_variance), data.var(0),
                               rtol=1e-4)
    config = tower.get_config()
    np.testing.assert_allclose(config["mean"], data.mean(0), rtol=1e-5)
    # from_config carries the adapted statistics
    clone = TabularTower.from_config(config)
    clone.build({"numeric": (None, 3), "categorical": (None, 1)})
    np.testing.assert_allclose(np_out(clone.numeric_variance), data.var(0),
                               rtol=1e-4)
    # a dataset of dict batches (unbuilt tower) gives the same statistics
    ds = tf.data.Dataset.from_tensor_slices(
        {"numeric": data, "categorical": np.ones((200, 1), "int32")}
    ).batch(32)
    other = TabularTower(num_numeric=3, cardinalities=(4,), dim=8)
    other.adapt(ds)
    np.testing.assert_allclose(other.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(other.variance, data.var(0), rtol=1e-3)


def test_tabular_out_of_range_ids_are_oov():
    tower = TabularTower(cardinalities=(4, 3), dim=8)
    ids = CATEGORICAL.copy()
    ids[1, 0], ids[2, 1] = 99, -3
    oov = ids.copy()
    oov[1, 0], oov[2, 1] = 0, 0
    np.testing.assert_allclose(np_out(tower({"categorical": ids})),
                               np_out(tower({"categorical": oov})))


# -- bad arguments -----------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: TextTower(20, 8, encoder="rnn"), r"encoder='rnn'.*'bag'"),
    (lambda: TextTower(20, 8, output="feature_map"),
     r"output='feature_map'.*'vector', 'sequence'"),
    (lambda: TextTower(0, 8), "vocab_size=0"),
    (lambda: TextTower(20, 8, encoder="cnn", kernel_sizes=()),
     "CNNTextEncoder: kernel_sizes"),
    (lambda: TextTower(20, 8, encoder="bigru", use_cudnn="yes"),
     "BiGRUTextEncoder: use_cudnn"),
    (lambda: SensorTower(encoder="rnn"), r"encoder='rnn'.*'lstm'"),
    (lambda: SensorTower(output="feature_map"),
     r"output='feature_map'.*'vector', 'sequence'"),
    (lambda: SensorTower(dropout=1.5), "dropout"),
    (lambda: SensorTower(encoder="tcn", tcn_dilations=()),
     "TCNSensorEncoder: tcn_dilations"),
    (lambda: SensorTower(pooling="sum"),
     r"pooling='sum'.*'mean', 'last', 'attention', 'max'"),
    (lambda: TabularTower(), "no columns"),
    (lambda: TabularTower(num_numeric=2, output="grid"),
     r"output='grid'.*'vector', 'sequence'"),
    (lambda: TabularTower(num_numeric=2, mean=[0.0, 1.0]),
     "mean and variance together"),
    (lambda: TabularTower(num_numeric=2, mean=[0.0], variance=[1.0]),
     "mean has 1 entries but num_numeric=2"),
    (lambda: TabularTower(num_numeric=1, mean=[0.0], variance=[-1.0]),
     "negative"),
    (lambda: TabularTower(cardinalities=(3, 0)), "cardinalities=0"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("inputs, match", [
    ({"numeric": NUMERIC}, "input 'categorical' is missing"),
    ({"numeric": NUMERIC[:, :2], "categorical": CATEGORICAL},
     r"'numeric' has shape \(4, 2\); expected \[batch, 3\]"),
    ({"numeric": NUMERIC, "categorical": CATEGORICAL, "text": NUMERIC},
     "unknown input key"),
    (NUMERIC, "takes a dict"),
])
def test_tabular_bad_inputs(inputs, match):
    tower = TabularTower(num_numeric=3, cardinalities=(4, 3))
    with pytest.raises(ValueError, match=match):
        tower(inputs)


def test_tabular_adapt_bad_data():
    tower = TabularTower(num_numeric=3)
    with pytest.raises(ValueError, match=r"expected \[rows, 3\]"):
        tower.adapt(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="NaN"):
        tower.adapt(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="no numeric columns"):
        TabularTower(cardinalities=(3,)).adapt(np.zeros((10, 3)))


def test_sequence_inputs_get_their_step_mask_by_default():
    """`mask` defaults to true for sensor and video inputs; false opts out."""
    import keras_mm

    def spec(**extra):
        return {"inputs": {"imu": dict({"modality": "sensor",
                                        "shape": [6, 3],
                                        "tower": {"encoder": "gru",
                                                  "dim": 8}}, **extra)},
                "heads": {"y": {"type": "classification", "num_classes": 2}}}

    model = keras_mm.build_model(spec())
    assert sorted(t.name for t in model.inputs) == ["imu", "imu_mask"]
    mask = np.arange(6)[None, :] < np.array(LENGTHS)[:, None]
    padded = np.where(mask[:, :, None], SERIES, 7.0).astype("float32")
    out = np_out(model({"imu": padded, "imu_mask": mask})["y"])
    again = np_out(model({"imu": np.where(mask[:, :, None], SERIES, -3.0)
                          .astype("float32"), "imu_mask": mask})["y"])
    np.testing.assert_allclose(out, again, atol=1e-6)   # padding unseen
    off = keras_mm.build_model(spec(mask=False))
    assert [t.name for t in off.inputs] == ["imu"]
