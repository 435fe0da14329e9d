"""`CRNNAudioEncoder`: `AudioTower(encoder="crnn")`'s conv stack and
bidirectional GRU."""

import keras

from keras_mm.layers.utils import check_positive_int
from keras_mm.registry import AUDIO_ENCODERS
from keras_mm.towers.audio_encoders.cnn_audio_encoder import CNNAudioEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@AUDIO_ENCODERS.register("crnn")
class CRNNAudioEncoder(CNNAudioEncoder):
    """A convolutional recurrent network: `CNNAudioEncoder`'s blocks with
    1x2 pools (frequency only, so every frame stays a step), then a
    bidirectional GRU of `rnn_units` per direction: `[batch, frames,
    2 * rnn_units]`.

    Args:
        filters, kernel_size, kernel_initializer: the conv blocks (see
            `CNNAudioEncoder`).
        rnn_units: GRU units per direction; None: `dim`.
        dim: the tower's width (the default of `rnn_units`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, frames, bins]`.
        training: Python bool (passed to the GRU).

    Masking: none (clips are cropped or padded to a fixed length).

    Example:

    >>> encoder = CRNNAudioEncoder(filters=(4,), rnn_units=6)
    >>> tuple(encoder(keras.random.uniform((2, 61, 40))).shape)
    (2, 61, 12)
    """

    pool_size = (1, 2)

    def __init__(self, filters=(32, 64), kernel_size=3, rnn_units=None,
                 dim=64, kernel_initializer="he_normal", **kwargs):
        super().__init__(filters=filters, kernel_size=kernel_size,
                         kernel_initializer=kernel_initializer, **kwargs)
        name = type(self).__name__
        self.rnn_units = check_positive_int(name, "rnn_units", rnn_units,
                                            allow_none=True)
        self.dim = check_positive_int(name, "dim", dim)

    @property
    def units(self):
        return self.rnn_units or self.dim

    def build(self, input_shape):
        super().build(input_shape)
        self.rnn = keras.layers.Bidirectional(
            keras.layers.GRU(self.units, return_sequences=True,
                             dtype=self.dtype_policy),
            dtype=self.dtype_policy, name="bigru")
        self.rnn.build(self._conv_shape(input_shape))

    def call(self, inputs, training=None):
        return self.rnn(super().call(inputs), training=training)

    def compute_output_shape(self, input_shape):
        batch, steps, _ = self._conv_shape(input_shape)
        return (batch, steps, 2 * self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"rnn_units": self.rnn_units, "dim": self.dim})
        return config
