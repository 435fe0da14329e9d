"""`FramesVideoEncoder`: `VideoTower(encoder="frames")`'s shared per-frame
CNN."""

import keras
from keras import ops

from keras_mm.layers.utils import (ceil_div, check_choice, check_fraction,
                                   check_positive_int, check_widths,
                                   clone_initializer)
from keras_mm.registry import VIDEO_ENCODERS
from keras_mm.towers.image_tower import ImageTower
from keras_mm.towers.resnet_backbone import NORM_MOMENTUM, NORMALIZATIONS
from keras_mm.towers.video_encoder import VideoEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@VIDEO_ENCODERS.register("frames")
class FramesVideoEncoder(VideoEncoder):
    """A shared per-frame 2-D CNN (an `ImageTower` with `encoder="cnn"`,
    `filters`, `kernel_size`, `output="feature_map"`) applied to every
    frame: `T' = T`, `H' = ceil(H / 2**len(filters))`. (In training, its
    batch norm counts padded frames as black frames.)

    Args:
        filters: channels per conv block (at least one).
        kernel_size: convolution size.
        dim: output width.
        kernel_initializer: initializer of the conv kernels.
        normalization: `"batch"`, `"group"` or `"layer"` (see
            `ImageTower`).
        norm_momentum: batch-norm momentum (see `ImageTower`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, frames, height, width, channels]`.
        mask: unused (padded frames are zeroed by the tower).
        training: Python bool (batch norm).

    Example:

    >>> encoder = FramesVideoEncoder(filters=(4,), dim=6)
    >>> tuple(encoder(keras.random.uniform((2, 3, 16, 16, 3))).shape)
    (2, 3, 8, 8, 6)
    """

    def __init__(self, filters=(32, 64), kernel_size=3, dim=64,
                 kernel_initializer="he_normal", normalization="batch",
                 norm_momentum=NORM_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.filters = check_widths(name, "filters", filters,
                                    "conv block width", "(32, 64)")
        self.kernel_size = check_positive_int(name, "kernel_size",
                                              kernel_size)
        self.dim = check_positive_int(name, "dim", dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.normalization = check_choice(name, "normalization",
                                          normalization, NORMALIZATIONS)
        self.norm_momentum = check_fraction(name, "norm_momentum",
                                            norm_momentum)

    def build(self, input_shape):
        self.frame_encoder = ImageTower(
            encoder="cnn", output="feature_map", dim=self.dim,
            filters=self.filters, kernel_size=self.kernel_size,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            normalization=self.normalization,
            norm_momentum=self.norm_momentum,
            dtype=self.dtype_policy, name="frame_encoder")
        self.frame_encoder.build((None,) + tuple(input_shape)[2:])
        self.built = True

    def call(self, inputs, mask=None, training=None):
        shape = ops.shape(inputs)
        frames = ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))
        fmap = self.frame_encoder(frames, training=training)
        return ops.reshape(fmap, (shape[0], shape[1]) + tuple(fmap.shape[1:]))

    def grid(self, input_shape):
        _, frames, height, width, _ = input_shape
        space = 2 ** len(self.filters)
        return frames, ceil_div(height, space), ceil_div(width, space)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "dim": self.dim,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "normalization": self.normalization,
            "norm_momentum": self.norm_momentum,
        })
        return config
