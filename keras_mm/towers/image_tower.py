import warnings

import keras
from keras import ops

import keras_mm.towers.image_encoders  # noqa: F401  (fills IMAGE_ENCODERS)
from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int, config_value, plain)
from keras_mm.registry import IMAGE_ENCODERS, TOWERS
from keras_mm.towers.image_encoders.applications_image_encoder import \
    BACKBONES as APPLICATION_BACKBONES
from keras_mm.towers.encoder_arguments import make_encoder
from keras_mm.towers.imagenet_weights import IMAGENET_WEIGHTS  # noqa: F401
from keras_mm.towers.legacy_weights import remap_legacy_encoder
from keras_mm.towers.resnet_backbone import NORM_MOMENTUM

OUTPUTS = ("vector", "sequence", "feature_map")
BACKBONES = (None,) + APPLICATION_BACKBONES


@keras.saving.register_keras_serializable(package="keras_mm")
@TOWERS.register("image")
class ImageTower(keras.layers.Layer):
    """Image tower: encodes float images `[batch, height, width, channels]`.

    Encoders (`keras_mm.registry.IMAGE_ENCODERS`; one class each, which the
    tower builds with the arguments below that its `__init__` names):

    - `"cnn"` (`CNNImageEncoder`): a small conv stack, one block per entry
      of `filters` (3x3 convolution, normalization, ReLU, 2x2 max pool).
      `filters=(6, 16)` on 28x28 digits is LeNet-sized.
    - `"resnet"` (`ResNetBackbone`): a ResNet-18/34 built here (`depth`,
      `base_filters`).
    - `"applications"` (`ApplicationsImageEncoder`): the
      `keras.applications` model named by `backbone`, without its
      classifier: `"resnet50"`, `"mobilenet_v3_small"` (built without its
      internal rescaling) or `"efficientnet_b0"` (which keeps its built-in
      rescaling/normalization and so expects pixel values in [0, 255]).
      These need images of at least 32x32 and 3 channels. Their `weights`
      are `None` (random), `"imagenet"` or the path of a local weights file
      of the application model with `include_top=False`. `"imagenet"`
      reads Keras's cache folder first (`$KERAS_HOME/models`, default
      `~/.keras/models`; the file names are in `IMAGENET_WEIGHTS`), so a
      file dropped there loads offline; otherwise Keras downloads it, and
      without a network the error is one line naming the file, its URL and
      the folder to put it in. The weights expect the application's own
      input scaling (see `ApplicationsImageEncoder`). The file is read when
      the tower is first built; a tower restored from a `.keras` file does
      not need it. (`encoder="resnet"` with a `backbone` is the deprecated
      spelling of this encoder: it still works, warns with a
      `DeprecationWarning`, and `get_config()` stores
      `encoder="applications"`.)
    - `"vit"` (`ViTImageEncoder`): a vision transformer: non-overlapping
      `patch_size` patches embedded by a strided convolution, a learned
      [CLS] token, learned position embeddings and `num_layers` pre-norm
      transformer layers.

    A new architecture is an `ImageEncoder` subclass registered in
    `IMAGE_ENCODERS`; `ImageTower(encoder=its_name)` then builds it.

    The encoder's feature map is projected to `dim` channels by a dense
    layer (`vit` already works at `dim`), dropout is applied, then:

    - `output="feature_map"`: `[batch, H', W', dim]`;
    - `output="sequence"`: the spatial positions (patch tokens for `vit`)
      as tokens, `[batch, H' * W', dim]`; every token is valid, so
      `compute_mask` returns None;
    - `output="vector"`: `[batch, dim]`, the mean over positions (the
      [CLS] token for `vit`).

    `H', W'` are `ceil(H / 2**len(filters))` for `cnn`, `ceil(H / 32)` for
    `resnet` and `applications`, and `H // patch_size` for `vit`.

    Args:
        encoder: `"cnn"`, `"resnet"`, `"vit"` or `"applications"`.
        output: `"vector"`, `"sequence"` or `"feature_map"` (kept as the
            attribute `output_mode`: `output` is a Keras Layer property).
        dim: output width.
        dropout: dropout rate on the output (and on the tokens and inside
            the transformer of `vit`).
        filters: `cnn` channels per conv block. The default three blocks
            see a whole 28x28 digit before the mean over positions (two
            blocks, the old default, reached 76% instead of 96% on 3,000
            MNIST digits in 8 epochs: issue 12).
        kernel_size: `cnn` convolution size.
        depth: `resnet` depth: `18` or `34`.
        base_filters: width of the first ResNet-18/34 stage.
        backbone: the `keras.applications` model of
            `encoder="applications"`: `"resnet50"`, `"mobilenet_v3_small"`
            or `"efficientnet_b0"`; None for the other encoders.
        weights: None, `"imagenet"` or a local weights file path (only
            with `backbone`; kept as the attribute `weights_file`).
        patch_size: `vit` patch size in pixels.
        num_layers, num_heads, intermediate_dim: `vit` transformer sizes.
        kernel_initializer: initializer of the `cnn` and `resnet`
            convolution kernels.
        normalization: the `cnn` and `resnet` blocks' normalization:
            `"batch"` (batch norm), `"group"` (group norm, 8 groups or
            fewer) or `"layer"` (one group).
        norm_momentum: momentum of the batch-norm moving statistics
            (`cnn`, `resnet`, and the batch norms of an `applications`
            backbone). The default 0.9 (Keras: 0.99) lets the statistics
            follow the weights in a run of a few hundred steps; with 0.99
            such a run evaluates and exports with stale statistics.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, height, width, channels]`, already
            normalized by the preprocessor.
        training: Python bool (batch norm and dropout).
        mask: not supported (images have no padding); must be None.

    Masking: none; `compute_mask` returns None (mark a missing image with
    the fusion presence mask).

    Weights saved before the encoder registry (the encoder's sublayers
    directly under the tower) still load: see `legacy_weights`.

    Example:

    >>> images = keras.random.uniform((2, 28, 28, 1))
    >>> tuple(ImageTower(encoder="cnn", filters=(6, 16), dim=32)(images).shape)
    (2, 32)
    >>> tower = ImageTower(encoder="vit", patch_size=7, dim=16, num_heads=2,
    ...                    num_layers=1, output="sequence")
    >>> tuple(tower(images).shape)  # (28 / 7) ** 2 = 16 patch tokens
    (2, 16, 16)
    >>> resnet = ImageTower(encoder="resnet", depth=18, base_filters=8,
    ...                     dim=16, output="feature_map")
    >>> tuple(resnet(keras.random.uniform((2, 64, 64, 3))).shape)
    (2, 2, 2, 16)

    A `keras.applications` backbone with random weights (a local
    `weights="..._notop.weights.h5"` file loads pretrained ones):

    >>> app = ImageTower(encoder="applications",
    ...                  backbone="mobilenet_v3_small", dim=8)
    >>> tuple(app(keras.random.uniform((2, 32, 32, 3))).shape)
    (2, 8)
    >>> app.get_config()["encoder"], app.get_config()["backbone"]
    ('applications', 'mobilenet_v3_small')
    """

    input_dtype = "float32"

    def __init__(self, encoder="cnn", output="vector", dim=64, dropout=0.0,
                 filters=(32, 64, 128), kernel_size=3, depth=18,
                 base_filters=64,
                 backbone=None, weights=None, patch_size=4, num_layers=2,
                 num_heads=4, intermediate_dim=None,
                 kernel_initializer="he_normal", normalization="batch",
                 norm_momentum=NORM_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        name = "ImageTower"
        if encoder == "resnet" and backbone is not None:
            # The old spelling of a keras.applications backbone.
            warnings.warn(
                f"{name}(encoder='resnet', backbone={backbone!r}) is "
                "deprecated; write encoder='applications', "
                f"backbone={backbone!r} (encoder='resnet' is the "
                "ResNet-18/34 built here, sized by depth=)",
                DeprecationWarning, stacklevel=2)
            encoder = "applications"
        self.encoder = check_choice(name, "encoder", encoder,
                                    tuple(IMAGE_ENCODERS.names()))
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.dim = check_positive_int(name, "dim", dim)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.backbone = check_choice(name, "backbone", backbone, BACKBONES)
        if backbone is not None and self.encoder != "applications":
            raise ValueError(
                f"{name}: backbone={backbone!r} needs "
                f"encoder='applications'; got encoder={encoder!r}")
        if backbone is None and self.encoder == "applications":
            choices = ", ".join(repr(b) for b in BACKBONES[1:])
            raise ValueError(
                f"{name}: encoder='applications' needs backbone= one of "
                f"{choices} (the keras.applications model); got "
                "backbone=None")
        if weights is not None and backbone is None:
            raise ValueError(
                f"{name}: weights={weights!r} needs a keras.applications "
                "backbone (encoder='applications' with backbone="
                "'resnet50', 'mobilenet_v3_small' or 'efficientnet_b0'); "
                "use weights=None otherwise")
        self.filters = plain(filters)
        self.kernel_size = plain(kernel_size)
        self.depth = plain(depth)
        self.base_filters = plain(base_filters)
        self.patch_size = plain(patch_size)
        self.num_layers = plain(num_layers)
        self.num_heads = plain(num_heads)
        self.intermediate_dim = plain(intermediate_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.normalization = plain(normalization)
        self.norm_momentum = plain(norm_momentum)
        # The encoder checks the arguments it takes (the others are kept
        # for get_config only).
        arguments = {
            "filters": self.filters, "kernel_size": kernel_size,
            "depth": depth, "base_filters": base_filters,
            "backbone": backbone, "weights": weights,
            "patch_size": patch_size, "num_layers": num_layers,
            "num_heads": num_heads, "intermediate_dim": intermediate_dim,
            "kernel_initializer": self.kernel_initializer,
            "normalization": normalization, "norm_momentum": norm_momentum,
            "dim": dim, "dropout": dropout}
        self.image_encoder = make_encoder(
            IMAGE_ENCODERS, self.encoder, arguments,
            dtype=self.dtype_policy, name="image_encoder")
        # `weights` and `output` are Keras Layer properties, so these two
        # arguments are stored as `weights_file` and `output_mode`.
        self.weights_file = getattr(self.image_encoder, "weights_file",
                                    weights)

    # -- building -----------------------------------------------------------

    def build_from_config(self, config):
        # Called when restoring a saved model: the saved variables replace
        # the initial ones, so no weights file is read (or needed).
        self.image_encoder.restoring = True
        try:
            super().build_from_config(config)
        finally:
            self.image_encoder.restoring = False

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4 or shape[-1] is None:
            raise ValueError(
                "ImageTower takes float images [batch, height, width, "
                f"channels] with known channels; got shape {shape}")
        self.image_encoder.build(shape)
        if not self.image_encoder.projected:
            self.projection = keras.layers.Dense(
                self.dim, kernel_initializer="glorot_uniform",
                dtype=self.dtype_policy, name="projection")
            self.projection.build(
                self.image_encoder.compute_output_shape(shape))
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy)
        self.built = True

    def load_own_variables(self, store):
        # A file saved before the encoder registry: its encoder sublayers
        # (and, for `vit`, the tower's own variables) are the encoder's.
        if remap_legacy_encoder(store, "image_encoder",
                                self.image_encoder.legacy_path,
                                shares_variables=True):
            return
        super().load_own_variables(store)

    # -- calling ------------------------------------------------------------

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(
                "ImageTower does not take a mask (images have no padding); "
                "mark a missing image with the fusion presence mask instead")
        encoder = self.image_encoder
        x = encoder(inputs, training=training)
        if not encoder.projected:
            x = self.projection(x)
        x = self.output_dropout(x, training=training)
        if self.output_mode == "vector":
            return encoder.pool(x)
        x = encoder.grid(x)
        if self.output_mode == "feature_map":
            return x
        return ops.reshape(x, (ops.shape(x)[0], -1, self.dim))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        if self.output_mode == "vector":
            return (batch, self.dim)
        height, width = self.image_encoder.spatial(input_shape)
        if self.output_mode == "feature_map":
            return (batch, height, width, self.dim)
        tokens = None if height is None or width is None else height * width
        return (batch, tokens, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": self.encoder,
            "output": self.output_mode,
            "dim": self.dim,
            "dropout": self.dropout,
            "filters": config_value(self.filters),
            "kernel_size": self.kernel_size,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "backbone": self.backbone,
            "weights": self.weights_file,
            "patch_size": self.patch_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "normalization": self.normalization,
            "norm_momentum": self.norm_momentum,
        })
        return config
