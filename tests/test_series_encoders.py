"""The sensor and video encoder registries: each `SensorEncoder` and
`VideoEncoder` passes the layer battery (sensor encoders ignore missing
steps), `SensorTower` builds registered encoders, and weights saved before
the registry (sensor and video towers) still load with the outputs they
had then."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from helpers import run_layer_checks
from legacy_fixtures import check_legacy_fixture
from keras_mm.registry import SENSOR_ENCODERS
from keras_mm.towers import SensorTower
from keras_mm.towers.sensor_encoder import SensorEncoder
from keras_mm.towers.sensor_encoders import (GRUSensorEncoder,
                                             LSTMSensorEncoder,
                                             TCNSensorEncoder,
                                             TransformerSensorEncoder)
from keras_mm.towers.video_encoders import (Conv3DVideoEncoder,
                                            FramesVideoEncoder)


RNG = np.random.RandomState(0)
SERIES = RNG.normal(size=(4, 10, 3)).astype("float32")
STEP_MASK = np.arange(10)[None, :] < np.array([[10], [7], [3], [5]])

ENCODERS = [
    (GRUSensorEncoder, {"dim": 6}),
    (LSTMSensorEncoder, {"dim": 6, "num_layers": 2}),
    (TCNSensorEncoder, {"dim": 6, "tcn_dilations": (1, 2)}),
    (TransformerSensorEncoder, {"dim": 8, "num_heads": 2}),
]


@pytest.mark.parametrize("cls, kwargs", ENCODERS)
def test_sensor_encoder_layer_checks(cls, kwargs, tmp_path):
    run_layer_checks(cls, kwargs, SERIES, tmp_path=tmp_path,
                     call_kwargs={"mask": STEP_MASK},
                     expected_output_shape=(4, 10, kwargs["dim"]))


@pytest.mark.parametrize("cls, kwargs", ENCODERS[:3])
def test_right_padding_with_a_mask_equals_the_short_series(cls, kwargs):
    """Row 1 has 7 valid steps: with garbage after them and the mask, its
    tokens equal those of the 7-step series alone (the tower zeroes
    missing steps before the encoder, as done here)."""
    encoder = cls(**kwargs)
    padded = np.where(STEP_MASK[:, :, None], SERIES, 0.0).astype("float32")
    out = np.asarray(encoder(padded, mask=STEP_MASK))
    alone = np.asarray(encoder(SERIES[1:2, :7], mask=np.ones((1, 7), bool)))
    np.testing.assert_allclose(out[1, :7], alone[0], atol=1e-5)


class LastChannelsEncoder(SensorEncoder):
    """A user's architecture: a per-step dense layer of `dim` units."""

    def __init__(self, dim=64, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def build(self, input_shape):
        self.dense = keras.layers.Dense(self.dim, dtype=self.dtype_policy,
                                        name="dense")
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        return self.dense(inputs)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


keras.saving.register_keras_serializable(package="keras_mm_tests")(
    LastChannelsEncoder)


@pytest.fixture
def test_dense_steps():
    """Registers `LastChannelsEncoder` as `test_dense_steps` (this test
    only)."""
    SENSOR_ENCODERS.register("test_dense_steps")(LastChannelsEncoder)
    yield LastChannelsEncoder
    SENSOR_ENCODERS.unregister("test_dense_steps")


def test_sensor_tower_builds_a_registered_encoder(tmp_path,
                                                  test_dense_steps):
    kwargs = {"encoder": "test_dense_steps", "dim": 5, "pooling": "mean"}
    run_layer_checks(SensorTower, kwargs, SERIES, tmp_path=tmp_path,
                     call_kwargs={"mask": STEP_MASK},
                     expected_output_shape=(4, 5))
    tower = SensorTower(**kwargs)
    tower.build(SERIES.shape)
    tokens = np.asarray(tower.sensor_encoder.dense(SERIES))
    expected = [tokens[i, STEP_MASK[i]].mean(0) for i in range(4)]
    np.testing.assert_allclose(tower(SERIES, mask=STEP_MASK), expected,
                               atol=1e-5)


def test_registry_names_every_sensor_encoder():
    assert SENSOR_ENCODERS.names() == ["gru", "lstm", "tcn", "transformer"]
    with pytest.raises(ValueError, match="SensorTower: encoder='rnn' is not "
                       "one of 'gru', 'lstm', 'tcn', 'transformer'"):
        SensorTower(encoder="rnn")
    with pytest.raises(ValueError, match="TCNSensorEncoder: tcn_dilations "
                       "must list at least one"):
        SensorTower(encoder="tcn", tcn_dilations=())


def test_weights_saved_before_the_registry_load(tmp_path):
    """`legacy_series_towers.keras` was written with the sensor and video
    towers of commit 3927240 (`tests/fixtures/make_legacy_series_towers.
    py`): lstm, gru, tcn and transformer (attention pooling: a weight of
    the tower itself) sensor towers and a conv3d video tower, after two
    training epochs."""
    check_legacy_fixture(
        "legacy_series_towers", ["series", "video"],
        old_paths=["layers/sensor_tower/rnns", "layers/sensor_tower_2/tcn",
                   "layers/sensor_tower_3/transformer",
                   "layers/video_tower/convs"],
        new_paths=["layers/sensor_tower/sensor_encoder/rnns",
                   "layers/sensor_tower_3/vars",  # pool_query, the tower's
                   "layers/video_tower/video_encoder/convs"],
        tmp_path=tmp_path)


CLIPS = RNG.uniform(size=(2, 4, 16, 16, 3)).astype("float32")
FRAME_MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)


# TF 2.21 has no float16 CPU kernel for MaxPool3D (see test_towers_media).
CONV3D_POLICIES = ("mixed_bfloat16", "mixed_float16") \
    if tf.config.list_physical_devices("GPU") else ("mixed_bfloat16",)


@pytest.mark.parametrize("cls, kwargs, shape, policies", [
    (Conv3DVideoEncoder, {"filters": (4, 8), "dim": 6}, (2, 2, 4, 4, 6),
     CONV3D_POLICIES),
    (FramesVideoEncoder, {"filters": (4,), "dim": 6}, (2, 4, 8, 8, 6), True),
])
def test_video_encoder_layer_checks(cls, kwargs, shape, policies, tmp_path):
    run_layer_checks(cls, kwargs, CLIPS, tmp_path=tmp_path,
                     call_kwargs={"mask": FRAME_MASK},
                     expected_output_shape=shape, fit=False,
                     mixed_precision=policies)
    encoder = cls(**kwargs)
    assert encoder.grid(CLIPS.shape) == shape[1:4]
    step_mask = np.asarray(encoder.step_mask(FRAME_MASK))
    assert step_mask.shape == shape[:2]
    # A pooled step is valid when any of its frames is.
    assert step_mask[1].tolist() == ([True, False] if shape[1] == 2
                                     else [True, True, False, False])
