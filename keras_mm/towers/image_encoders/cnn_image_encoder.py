"""`CNNImageEncoder`: `ImageTower(encoder="cnn")`'s conv stack."""

import keras

from keras_mm.layers.utils import (ceil_div, check_choice, check_fraction,
                                   check_positive_int, check_widths,
                                   clone_initializer)
from keras_mm.registry import IMAGE_ENCODERS
from keras_mm.towers.image_encoder import ImageEncoder
from keras_mm.towers.resnet_backbone import (NORM_MOMENTUM, NORMALIZATIONS,
                                             make_norm)


@keras.saving.register_keras_serializable(package="keras_mm")
@IMAGE_ENCODERS.register("cnn")
class CNNImageEncoder(ImageEncoder):
    """A small conv stack: one block per entry of `filters` (3x3
    convolution without bias, normalization, ReLU, 2x2 max pool with
    `"same"` padding), so the feature map is `ceil(H / 2**len(filters))`
    on a side with `filters[-1]` channels. `filters=(6, 16)` on 28x28
    digits is LeNet-sized.

    Args:
        filters: channels per conv block (at least one block).
        kernel_size: convolution size.
        kernel_initializer: initializer of the convolution kernels.
        normalization: `"batch"`, `"group"` or `"layer"` (see
            `make_norm`).
        norm_momentum: batch-norm momentum (`NORM_MOMENTUM`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, height, width, channels]`.
        training: Python bool (batch norm).

    Masking: none (images have no padding).

    Example:

    >>> encoder = CNNImageEncoder(filters=(4, 8))
    >>> tuple(encoder(keras.random.uniform((2, 28, 28, 1))).shape)
    (2, 7, 7, 8)
    """

    def __init__(self, filters=(32, 64, 128), kernel_size=3,
                 kernel_initializer="he_normal", normalization="batch",
                 norm_momentum=NORM_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.filters = check_widths(name, "filters", filters,
                                    "conv block width", "(32, 64, 128)")
        self.kernel_size = check_positive_int(name, "kernel_size",
                                              kernel_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.normalization = check_choice(name, "normalization",
                                          normalization, NORMALIZATIONS)
        self.norm_momentum = check_fraction(name, "norm_momentum",
                                            norm_momentum)

    def build(self, input_shape):
        shape = tuple(input_shape)
        policy = self.dtype_policy
        self.convs, self.norms, self.pools = [], [], []
        for i, f in enumerate(self.filters):
            conv = keras.layers.Conv2D(
                f, self.kernel_size, padding="same", use_bias=False,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=policy, name=f"conv{i}")
            norm = make_norm(self.normalization, self.norm_momentum, f,
                             policy, f"norm{i}")
            pool = keras.layers.MaxPooling2D(2, padding="same", dtype=policy,
                                             name=f"pool{i}")
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
            shape = pool.compute_output_shape(shape)
            self.convs.append(conv)
            self.norms.append(norm)
            self.pools.append(pool)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for conv, norm, pool in zip(self.convs, self.norms, self.pools):
            x = pool(keras.activations.relu(norm(conv(x), training=training)))
        return x

    def spatial(self, input_shape):
        factor = 2 ** len(self.filters)
        return (ceil_div(input_shape[1], factor),
                ceil_div(input_shape[2], factor))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.spatial(input_shape), self.filters[-1])

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "normalization": self.normalization,
            "norm_momentum": self.norm_momentum,
        })
        return config
