"""The audio and text encoder registries: each encoder passes the layer
battery, the towers build registered encoders (a user's own too), and
weights saved before the registries still load with the outputs they had
then."""

import numpy as np
import pytest
import keras
from keras import ops

from helpers import run_layer_checks
from legacy_fixtures import check_legacy_fixture
from keras_mm.registry import AUDIO_ENCODERS, TEXT_ENCODERS
from keras_mm.towers import AudioTower, TextTower
from keras_mm.towers.audio_encoder import AudioEncoder
from keras_mm.towers.audio_encoders import (CNNAudioEncoder,
                                            CRNNAudioEncoder,
                                            TransformerAudioEncoder)
from keras_mm.towers.text_encoder import TextEncoder
from keras_mm.towers.text_encoders import (BagTextEncoder, BiGRUTextEncoder,
                                           BiLSTMTextEncoder, CNNTextEncoder,
                                           TransformerTextEncoder)


RNG = np.random.RandomState(0)
SPECTROGRAMS = RNG.normal(size=(4, 12, 10)).astype("float32")
EMBEDDED = RNG.normal(size=(4, 6, 8)).astype("float32")
TOKEN_MASK = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5,
                       [1] * 3 + [0] * 3], bool)


@pytest.mark.parametrize("cls, kwargs, shape", [
    (CNNAudioEncoder, {"filters": (4, 8)}, (4, 3, 24)),
    (CRNNAudioEncoder, {"filters": (4,), "rnn_units": 3}, (4, 12, 6)),
    (TransformerAudioEncoder, {"dim": 8, "num_heads": 2, "num_layers": 1},
     (4, 12, 8)),
])
def test_audio_encoder_layer_checks(cls, kwargs, shape, tmp_path):
    run_layer_checks(cls, kwargs, SPECTROGRAMS, tmp_path=tmp_path,
                     expected_output_shape=shape)
    assert cls(**kwargs).steps(12) == shape[1]


@pytest.mark.parametrize("cls, kwargs, shape", [
    (CNNTextEncoder, {"kernel_sizes": (2, 3), "filters": 3}, (4, 6, 6)),
    (BiGRUTextEncoder, {"rnn_units": 3, "num_layers": 1}, (4, 6, 6)),
    (BiLSTMTextEncoder, {"rnn_units": 3, "num_layers": 1}, (4, 6, 6)),
    (TransformerTextEncoder, {"sequence_length": 6, "num_heads": 2,
                              "num_layers": 1}, (4, 6, 8)),
])
def test_text_encoder_layer_checks(cls, kwargs, shape, tmp_path):
    run_layer_checks(cls, kwargs, EMBEDDED, tmp_path=tmp_path,
                     call_kwargs={"mask": TOKEN_MASK},
                     expected_output_shape=shape)


def test_bag_text_encoder_is_the_identity():
    encoder = BagTextEncoder.from_config(BagTextEncoder().get_config())
    np.testing.assert_array_equal(encoder(EMBEDDED, mask=TOKEN_MASK),
                                  EMBEDDED)
    assert not encoder.weights


@pytest.mark.parametrize("cls, kwargs", [
    (CNNTextEncoder, {"kernel_sizes": (2, 3), "filters": 3}),
    (BiGRUTextEncoder, {"rnn_units": 3, "num_layers": 2}),
    (TransformerTextEncoder, {"sequence_length": 6, "num_heads": 2,
                              "num_layers": 1}),
])
def test_text_encoder_masked_padding_equals_truncation(cls, kwargs):
    """Row 1 has 4 real tokens: its features there equal those of the same
    4 tokens without the padding (garbage in the padded embeddings)."""
    encoder = cls(**kwargs)
    padded = EMBEDDED.copy()
    # The tower zeroes padded embeddings before a convolution sees them
    # (which then equals its own zero padding); the others ignore them.
    padded[1, 4:] = 0.0 if cls is CNNTextEncoder else 50.0
    out = np.asarray(encoder(padded, mask=TOKEN_MASK))
    alone = np.asarray(encoder(EMBEDDED[1:2, :4],
                               mask=np.ones((1, 4), bool)))
    np.testing.assert_allclose(out[1, :4], alone[0], atol=1e-5)


def test_registries_name_every_encoder():
    assert AUDIO_ENCODERS.names() == ["cnn", "crnn", "transformer"]
    assert TEXT_ENCODERS.names() == ["bag", "bigru", "bilstm", "cnn",
                                     "transformer"]
    with pytest.raises(ValueError, match="AudioTower: encoder='rnn' is not "
                       "one of 'cnn', 'crnn', 'transformer'"):
        AudioTower(encoder="rnn")
    with pytest.raises(ValueError, match="TextTower: encoder='gru' is not "
                       "one of 'bag', 'bigru'"):
        TextTower(20, 8, encoder="gru")


@keras.saving.register_keras_serializable(package="keras_mm_tests")
class FrameMLPEncoder(AudioEncoder):
    """A user's audio architecture: a per-frame dense layer, pooled 2x."""

    def __init__(self, num_layers=1, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = num_layers

    def build(self, input_shape):
        self.dense = keras.layers.Dense(7, activation="relu",
                                        dtype=self.dtype_policy, name="dense")
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = self.dense(inputs)
        return ops.average_pool(x, 2, 2, padding="valid")

    def steps(self, frames):
        return None if frames is None else frames // 2

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.steps(input_shape[1]), 7)

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers}


@keras.saving.register_keras_serializable(package="keras_mm_tests")
class RunningSumEncoder(TextEncoder):
    """A user's text architecture: the running sum of the embeddings."""

    def call(self, inputs, mask=None, training=None):
        return ops.cumsum(inputs, axis=1)


@pytest.fixture
def test_running_sum():
    """Registers `RunningSumEncoder` as `test_running_sum` (this test
    only)."""
    TEXT_ENCODERS.register("test_running_sum")(RunningSumEncoder)
    yield RunningSumEncoder
    TEXT_ENCODERS.unregister("test_running_sum")


@pytest.fixture
def test_frame_mlp():
    """Registers `FrameMLPEncoder` as `test_frame_mlp` for the test only."""
    AUDIO_ENCODERS.register("test_frame_mlp")(FrameMLPEncoder)
    yield FrameMLPEncoder
    AUDIO_ENCODERS.unregister("test_frame_mlp")


@pytest.mark.parametrize("output", ["vector", "sequence"])
def test_audio_tower_builds_a_registered_encoder(output, tmp_path,
                                                 test_frame_mlp):
    kwargs = {"encoder": "test_frame_mlp", "frontend": None, "dim": 5,
              "output": output, "num_layers": 3}
    shape = (4, 5) if output == "vector" else (4, 6, 5)
    run_layer_checks(AudioTower, kwargs, SPECTROGRAMS, tmp_path=tmp_path,
                     expected_output_shape=shape, fit=output == "vector")
    tower = AudioTower(**kwargs)
    assert tower.audio_encoder.num_layers == 3
    tower.build(SPECTROGRAMS.shape)
    features = tower.feature_normalization(SPECTROGRAMS)
    steps = tower.projection(tower.audio_encoder(features))
    expected = ops.mean(steps, axis=1) if output == "vector" else steps
    np.testing.assert_allclose(tower(SPECTROGRAMS), expected, atol=1e-6)


def test_text_tower_builds_a_registered_encoder(tmp_path, test_running_sum):
    ids = np.array([[3, 4, 5, 0], [7, 0, 0, 0]], "int32")
    kwargs = {"vocab_size": 10, "sequence_length": 4, "embedding_dim": 6,
              "encoder": "test_running_sum", "dim": 5}
    run_layer_checks(TextTower, kwargs, ids, tmp_path=tmp_path,
                     expected_output_shape=(2, 5))
    tower = TextTower(**kwargs)
    tower.build(ids.shape)
    embedded = np.asarray(tower.embedding(ids)) * (ids != 0)[:, :, None]
    tokens = np.asarray(tower.projection(np.cumsum(embedded, axis=1)))
    expected = [tokens[0, :3].mean(0), tokens[1, :1].mean(0)]
    np.testing.assert_allclose(tower(ids), expected, atol=1e-5)


def test_weights_saved_before_the_registries_load(tmp_path):
    """`legacy_sequence_towers.keras` was written by keras_mm at commit
    3927240 (`tests/fixtures/make_legacy_sequence_towers.py`): cnn, crnn
    and transformer audio towers and cnn, bigru and transformer text
    towers, after two training epochs."""
    check_legacy_fixture(
        "legacy_sequence_towers", ["wave", "ids"],
        old_paths=["layers/audio_tower/convs", "layers/audio_tower_1/rnn",
                   "layers/audio_tower_2/transformer",
                   "layers/text_tower/convs", "layers/text_tower_1/rnns",
                   "layers/text_tower_2/position_embedding"],
        new_paths=["layers/audio_tower/audio_encoder/convs",
                   "layers/audio_tower_1/audio_encoder/rnn",
                   "layers/text_tower_1/text_encoder/rnns"],
        tmp_path=tmp_path)
