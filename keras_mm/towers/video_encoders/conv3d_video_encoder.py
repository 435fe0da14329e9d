"""`Conv3DVideoEncoder`: `VideoTower(encoder="conv3d")`'s C3D-style stack."""

import keras
from keras import ops

from keras_mm.layers.utils import (ceil_div, check_positive_int,
                                   check_widths, clone_initializer)
from keras_mm.registry import VIDEO_ENCODERS
from keras_mm.towers.video_encoder import VideoEncoder


def pool_mask(mask):
    """Halves a boolean [B, T] mask: a step is valid if any frame is."""
    m = ops.cast(mask, "float32")[:, :, None]
    m = ops.max_pool(m, 2, strides=2, padding="same")
    return ops.cast(m[:, :, 0], "bool")


@keras.saving.register_keras_serializable(package="keras_mm")
@VIDEO_ENCODERS.register("conv3d")
class Conv3DVideoEncoder(VideoEncoder):
    """A C3D-style stack, one block per entry of `filters` (3-D convolution,
    ReLU, max pool; the first pool is 1x2x2 and the later ones 2x2x2, so
    `T' = ceil(T / 2**(len(filters) - 1))` and `H' = ceil(H /
    2**len(filters))`), then a dense projection to `dim`. Padded frames are
    re-zeroed after each convolution, so they act as zero padding; a pooled
    step is valid when any of its frames is.

    Args:
        filters: channels per conv block (at least one).
        kernel_size: convolution size (per axis).
        dim: output width.
        kernel_initializer: initializer of the conv kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, frames, height, width, channels]`.
        mask: optional bool `[batch, frames]`, False for padded frames.
        training: unused.

    Example:

    >>> encoder = Conv3DVideoEncoder(filters=(4, 8), dim=6)
    >>> tuple(encoder(keras.random.uniform((2, 4, 16, 16, 3))).shape)
    (2, 2, 4, 4, 6)
    """

    def __init__(self, filters=(32, 64), kernel_size=3, dim=64,
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.filters = check_widths(name, "filters", filters,
                                    "conv block width", "(32, 64)")
        self.kernel_size = check_positive_int(name, "kernel_size",
                                              kernel_size)
        self.dim = check_positive_int(name, "dim", dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = tuple(input_shape)
        policy = self.dtype_policy
        self.convs, self.pools = [], []
        for i, f in enumerate(self.filters):
            conv = keras.layers.Conv3D(
                f, self.kernel_size, padding="same",
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=policy, name=f"conv{i}")
            pool = keras.layers.MaxPooling3D(
                (1, 2, 2) if i == 0 else (2, 2, 2), padding="same",
                dtype=policy, name=f"pool{i}")
            conv.build(shape)
            shape = pool.compute_output_shape(conv.compute_output_shape(shape))
            self.convs.append(conv)
            self.pools.append(pool)
        self.projection = keras.layers.Dense(self.dim, dtype=policy,
                                             name="projection")
        self.projection.build(shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        x = inputs
        for i, (conv, pool) in enumerate(zip(self.convs, self.pools)):
            x = keras.activations.relu(conv(x))
            if mask is not None:
                # Re-zero padded steps so that they act as zero padding.
                x = x * ops.cast(mask, x.dtype)[:, :, None, None, None]
            x = pool(x)
            if i > 0 and mask is not None:
                mask = pool_mask(mask)
        return self.projection(x)

    def step_mask(self, mask):
        if mask is None:
            return None
        mask = ops.cast(mask, "bool")
        for _ in range(len(self.filters) - 1):
            mask = pool_mask(mask)
        return mask

    def grid(self, input_shape):
        _, frames, height, width, _ = input_shape
        space = 2 ** len(self.filters)
        return (ceil_div(frames, 2 ** (len(self.filters) - 1)),
                ceil_div(height, space), ceil_div(width, space))

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "dim": self.dim,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
