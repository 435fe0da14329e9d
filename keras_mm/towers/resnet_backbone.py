import math

import keras

from keras_mm.layers.utils import (ceil_div, check_choice, check_fraction,
                                   check_positive_int, clone_initializer)
from keras_mm.registry import IMAGE_ENCODERS
from keras_mm.towers.image_encoder import ImageEncoder

_STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
NORMALIZATIONS = ("batch", "group", "layer")
# Batch-norm momentum of the towers. Keras' 0.99 averages the statistics of
# ~100 steps and leaves 0.99**steps of the initial ones: a run of a few
# hundred steps evaluates with statistics its weights no longer match
# (issue 12). 0.9 follows the weights within ~10 steps.
NORM_MOMENTUM = 0.9
GROUPS = 8


def make_norm(normalization, momentum, channels, dtype, name):
    """The normalization layer of a conv block.

    `"batch"`: `BatchNormalization(momentum=momentum)`; `"group"`:
    `GroupNormalization` with `gcd(channels, GROUPS)` groups; `"layer"`:
    one group (normalizes each example over height, width and channels).
    The last two keep no running statistics, so training and inference
    compute the same function.
    """
    if normalization == "batch":
        return keras.layers.BatchNormalization(momentum=momentum,
                                               dtype=dtype, name=name)
    groups = math.gcd(int(channels), GROUPS) if normalization == "group" \
        else 1
    return keras.layers.GroupNormalization(groups=groups, dtype=dtype,
                                           name=name)


@keras.saving.register_keras_serializable(package="keras_mm")
@IMAGE_ENCODERS.register("resnet")
class ResNetBackbone(ImageEncoder):
    """ResNet-18 / ResNet-34 feature extractor (basic residual blocks).

    The ImageNet layout of He et al. (2016): a 7x7 stride-2 convolution and
    a 3x3 stride-2 max pool, then four stages of basic blocks (two 3x3
    convolutions with batch norm and a residual connection) whose widths
    are `base_filters * (1, 2, 4, 8)`; stages 2-4 halve the resolution.
    All convolutions use `"same"` padding, so the output is
    `ceil(H / 32) x ceil(W / 32)` for any input size. No classifier.
    `ImageTower(encoder="resnet")`'s encoder (`IMAGE_ENCODERS["resnet"]`).

    Args:
        depth: `18` (blocks 2-2-2-2) or `34` (blocks 3-4-6-3).
        base_filters: width of the first stage (64 in the paper).
        kernel_initializer: initializer of every convolution kernel.
        normalization: `"batch"`, `"group"` or `"layer"` (`make_norm`).
        norm_momentum: batch-norm momentum (`NORM_MOMENTUM`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, height, width, channels]`.
        training: Python bool; batch norm uses batch statistics when True.

    Returns:
        The last stage's feature map `[batch, ceil(H/32), ceil(W/32),
        8 * base_filters]`.

    Example:

    >>> x = keras.random.normal((2, 64, 64, 3))
    >>> tuple(ResNetBackbone(depth=18, base_filters=8)(x).shape)
    (2, 2, 2, 64)
    """

    # Pre-registry ImageTower weights held this layer as `resnet`.
    legacy_path = "resnet"

    def __init__(self, depth=18, base_filters=64,
                 kernel_initializer="he_normal", normalization="batch",
                 norm_momentum=NORM_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        self.depth = check_choice("ResNetBackbone", "depth", depth,
                                  tuple(_STAGE_BLOCKS))
        self.base_filters = check_positive_int("ResNetBackbone",
                                               "base_filters", base_filters)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.normalization = check_choice("ResNetBackbone", "normalization",
                                          normalization, NORMALIZATIONS)
        self.norm_momentum = check_fraction("ResNetBackbone",
                                            "norm_momentum", norm_momentum)

    def _conv(self, filters, kernel_size, strides, name):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same",
            use_bias=False,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy, name=name)

    def _norm(self, channels, name):
        return make_norm(self.normalization, self.norm_momentum, channels,
                         self.dtype_policy, name)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if shape[-1] is None:
            raise ValueError(
                "ResNetBackbone needs a known channel count; got input "
                f"shape {shape}")
        self.stem_conv = self._conv(self.base_filters, 7, 2, "stem_conv")
        self.stem_norm = self._norm(self.base_filters, "stem_norm")
        self.stem_pool = keras.layers.MaxPooling2D(
            3, strides=2, padding="same", dtype=self.dtype_policy,
            name="stem_pool")
        self.stem_conv.build(shape)
        shape = self.stem_conv.compute_output_shape(shape)
        self.stem_norm.build(shape)
        shape = self.stem_pool.compute_output_shape(shape)
        # Flat lists, one entry per block (Identity where no projection).
        self.convs1, self.norms1, self.convs2, self.norms2 = [], [], [], []
        self.shortcut_convs, self.shortcut_norms = [], []
        for stage, blocks in enumerate(_STAGE_BLOCKS[self.depth]):
            filters = self.base_filters * 2 ** stage
            for block in range(blocks):
                strides = 2 if (stage > 0 and block == 0) else 1
                prefix = f"stage{stage + 1}_block{block + 1}"
                conv1 = self._conv(filters, 3, strides, f"{prefix}_conv1")
                norm1 = self._norm(filters, f"{prefix}_norm1")
                conv2 = self._conv(filters, 3, 1, f"{prefix}_conv2")
                norm2 = self._norm(filters, f"{prefix}_norm2")
                conv1.build(shape)
                out_shape = conv1.compute_output_shape(shape)
                norm1.build(out_shape)
                conv2.build(out_shape)
                norm2.build(out_shape)
                if strides != 1 or shape[-1] != filters:
                    sc_conv = self._conv(filters, 1, strides,
                                         f"{prefix}_shortcut_conv")
                    sc_norm = self._norm(filters,
                                             f"{prefix}_shortcut_norm")
                    sc_conv.build(shape)
                    sc_norm.build(out_shape)
                else:
                    sc_conv = keras.layers.Identity(
                        dtype=self.dtype_policy,
                        name=f"{prefix}_shortcut_conv")
                    sc_norm = keras.layers.Identity(
                        dtype=self.dtype_policy,
                        name=f"{prefix}_shortcut_norm")
                self.convs1.append(conv1)
                self.norms1.append(norm1)
                self.convs2.append(conv2)
                self.norms2.append(norm2)
                self.shortcut_convs.append(sc_conv)
                self.shortcut_norms.append(sc_norm)
                shape = out_shape
        self.built = True

    def call(self, inputs, training=None):
        x = self.stem_conv(inputs)
        x = keras.activations.relu(self.stem_norm(x, training=training))
        x = self.stem_pool(x)
        for i in range(len(self.convs1)):
            h = self.convs1[i](x)
            h = keras.activations.relu(self.norms1[i](h, training=training))
            h = self.norms2[i](self.convs2[i](h), training=training)
            shortcut = self.shortcut_norms[i](self.shortcut_convs[i](x),
                                              training=training)
            x = keras.activations.relu(h + shortcut)
        return x

    def spatial(self, input_shape):
        return ceil_div(input_shape[1], 32), ceil_div(input_shape[2], 32)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.spatial(input_shape),
                8 * self.base_filters)

    def get_config(self):
        config = super().get_config()
        config.update({
            "depth": self.depth,
            "base_filters": self.base_filters,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "normalization": self.normalization,
            "norm_momentum": self.norm_momentum,
        })
        return config
