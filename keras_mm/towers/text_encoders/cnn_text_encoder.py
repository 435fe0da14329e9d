"""`CNNTextEncoder`: `TextTower(encoder="cnn")`'s parallel convolutions."""

import keras
from keras import ops

from keras_mm.layers.utils import (check_positive_int, check_widths,
                                   clone_initializer)
from keras_mm.registry import TEXT_ENCODERS
from keras_mm.towers.text_encoder import TextEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@TEXT_ENCODERS.register("cnn")
class CNNTextEncoder(TextEncoder):
    """Kim (2014)'s text CNN: one same-padded `Conv1D` (ReLU, `filters`
    channels) per entry of `kernel_sizes`, concatenated, with padded steps
    zeroed. The tower max-pools it over the real tokens (`pooling="max"`).
    With the padded embeddings zeroed, the same padding of the convolutions
    sees zeros on both sides of the real tokens.

    Args:
        kernel_sizes: convolution widths (at least one).
        filters: channels per width; None: `dim`.
        dim: the tower's width (the default of `filters`).
        kernel_initializer: initializer of the conv kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, tokens, embedding_dim]`.
        mask: bool `[batch, tokens]`; the output is zero where False.
        training: unused.

    Example:

    >>> encoder = CNNTextEncoder(kernel_sizes=(2, 3), filters=4)
    >>> tuple(encoder(keras.ops.ones((2, 5, 8))).shape)
    (2, 5, 8)
    """

    pooling = "max"

    def __init__(self, kernel_sizes=(2, 3, 4), filters=None, dim=64,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.kernel_sizes = check_widths(name, "kernel_sizes", kernel_sizes,
                                         "convolution width", "(2, 3, 4)")
        self.filters = check_positive_int(name, "filters", filters,
                                          allow_none=True)
        self.dim = check_positive_int(name, "dim", dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.convs = []
        for k in self.kernel_sizes:
            conv = keras.layers.Conv1D(
                self.filters or self.dim, k, padding="same",
                activation="relu",
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"conv{k}")
            conv.build(tuple(input_shape))
            self.convs.append(conv)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        x = ops.concatenate([conv(inputs) for conv in self.convs], axis=-1)
        if mask is not None:
            # ReLU features are >= 0, so zeroing padded steps leaves the max
            # over the real tokens unchanged (and gives 0 for empty rows).
            x = x * ops.cast(mask, x.dtype)[:, :, None]
        return x

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:2],
                (self.filters or self.dim) * len(self.kernel_sizes))

    def get_config(self):
        config = super().get_config()
        config.update({
            "kernel_sizes": list(self.kernel_sizes),
            "filters": self.filters,
            "dim": self.dim,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
