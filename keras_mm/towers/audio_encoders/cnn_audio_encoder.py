"""`CNNAudioEncoder`: `AudioTower(encoder="cnn")`'s conv stack over the
spectrogram."""

import keras
from keras import ops

from keras_mm.layers.utils import (ceil_div, check_positive_int,
                                   check_widths, clone_initializer)
from keras_mm.registry import AUDIO_ENCODERS
from keras_mm.towers.audio_encoder import AudioEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@AUDIO_ENCODERS.register("cnn")
class CNNAudioEncoder(AudioEncoder):
    """2-D convolutions over the spectrogram seen as a one-channel image:
    one block per entry of `filters` (convolution, ReLU, 2x2 max pool with
    `"same"` padding), then the frequency and channel axes are flattened,
    giving `[batch, ceil(frames / 2**len(filters)), channels]`.

    Args:
        filters: channels per conv block (at least one block).
        kernel_size: convolution size.
        kernel_initializer: initializer of the convolution kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, frames, bins]`.
        training: unused (no batch norm or dropout).

    Masking: none (clips are cropped or padded to a fixed length).

    Example:

    >>> encoder = CNNAudioEncoder(filters=(4, 8))
    >>> tuple(encoder(keras.random.uniform((2, 61, 40))).shape)
    (2, 16, 80)
    """

    # Max-pool size per block: (frames, frequency bins).
    pool_size = (2, 2)

    def __init__(self, filters=(32, 64), kernel_size=3,
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.filters = check_widths(name, "filters", filters,
                                    "conv block width", "(32, 64)")
        self.kernel_size = check_positive_int(name, "kernel_size",
                                              kernel_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _conv_shape(self, input_shape):
        """(batch, steps, width) after the conv blocks."""
        bins = ceil_div(input_shape[2], self.pool_size[1] ** len(self.filters))
        return (input_shape[0], self.steps(input_shape[1]),
                bins * self.filters[-1])

    def build(self, input_shape):
        grid = tuple(input_shape) + (1,)
        policy = self.dtype_policy
        self.convs, self.pools = [], []
        for i, f in enumerate(self.filters):
            conv = keras.layers.Conv2D(
                f, self.kernel_size, padding="same",
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=policy, name=f"conv{i}")
            pool = keras.layers.MaxPooling2D(self.pool_size, padding="same",
                                             dtype=policy, name=f"pool{i}")
            conv.build(grid)
            grid = pool.compute_output_shape(conv.compute_output_shape(grid))
            self.convs.append(conv)
            self.pools.append(pool)
        self.built = True

    def call(self, inputs, training=None):
        x = ops.expand_dims(inputs, -1)
        for conv, pool in zip(self.convs, self.pools):
            x = pool(keras.activations.relu(conv(x)))
        return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1],
                               x.shape[2] * x.shape[3]))

    def steps(self, frames):
        return ceil_div(frames, self.pool_size[0] ** len(self.filters))

    def compute_output_shape(self, input_shape):
        return self._conv_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
