import math
import os
import socket
import urllib.parse
import urllib.request
import warnings

import keras
from keras import ops

from keras_mm.layers.position_embedding import PositionEmbedding
from keras_mm.layers.transformer_encoder import TransformerEncoder
from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int, check_positive_ints,
                                   clone_initializer)
from keras_mm.registry import TOWERS
from keras_mm.towers.resnet_backbone import (NORM_MOMENTUM, NORMALIZATIONS,
                                             ResNetBackbone, make_norm)

ENCODERS = ("cnn", "resnet", "vit", "applications")
OUTPUTS = ("vector", "sequence", "feature_map")
BACKBONES = (None, "resnet50", "mobilenet_v3_small", "efficientnet_b0")
# Encoders whose feature map is the input downsampled 32x.
_STRIDE_32 = ("resnet", "applications")


# keras.applications' ImageNet weights without the classifier
# (include_top=False), as Keras 3.15 names, serves and hashes them (md5).
IMAGENET_WEIGHTS = {
    "resnet50": (
        "keras.applications.ResNet50",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/"
        "resnet/",
        "4d473c1dd8becc155b73f8504c6f6626"),
    "mobilenet_v3_small": (
        "keras.applications.MobileNetV3Small",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/"
        "mobilenet_v3/",
        "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "efficientnet_b0": (
        "keras.applications.EfficientNetB0",
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/",
        "50bc09e76180e00e4465e1a485ddc09d"),
}


def keras_cache_folder():
    """The folder where Keras keeps downloaded application weights:
    `$KERAS_HOME/models` (read now, so a later `KERAS_HOME` counts), else
    `~/.keras/models`; `/tmp/.keras/models` where that is not writable (as
    `keras.utils.get_file` does)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        home = os.path.join(base, ".keras")
    home = os.path.expanduser(home)
    if os.path.isdir(home) and not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "models")


def _one_line(error):
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _reachable(url, timeout=5.0):
    """None when the host of `url` (or the proxy urllib would use for it)
    accepts a connection, else the reason."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (
        443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy = urllib.parse.urlsplit(proxy if "://" in proxy
                                      else "http://" + proxy)
        host, port = proxy.hostname, proxy.port or 80
        what = f"the proxy {host}:{port}"
    else:
        what = host
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"no connection to {what}: {type(error).__name__}: " \
            f"{_one_line(error)}"
    return None


def imagenet_weights_file(backbone):
    """The local path of `backbone`'s ImageNet weights (include_top=False).

    The Keras cache folder (`keras_cache_folder()`) is looked at first: a
    file there under Keras's name is used as it is, without the network.
    Otherwise Keras downloads it (`keras.utils.get_file`, hash-checked)
    into that folder. Where the host (or the proxy urllib would use)
    cannot be reached, checked with a 5-second connection before Keras
    tries, or the download fails, a one-line `ValueError` names the file,
    its URL and the folder to put it in.
    """
    application, fname, base, file_hash = IMAGENET_WEIGHTS[backbone]
    folder = keras_cache_folder()
    path = os.path.join(folder, fname)
    if os.path.isfile(path):
        return path
    origin = base + fname

    def offline(reason):
        return ValueError(
            f"ImageTower: weights='imagenet' for backbone={backbone!r} "
            f"needs the file {fname} (the ImageNet weights of {application}"
            f"(include_top=False)), which is not in the Keras cache folder "
            f"{folder} and cannot be downloaded here ({reason}); download "
            f"{origin} where there is a network (or run {application}("
            "include_top=False, weights='imagenet') there) and copy it into "
            f"{folder}/ ($KERAS_HOME/models, default ~/.keras/models), or "
            "give weights= the path of a local weights file")

    reason = _reachable(origin)
    if reason is not None:
        raise offline(reason)
    try:
        os.makedirs(folder, exist_ok=True)
        return keras.utils.get_file(fname, origin, cache_subdir="models",
                                    cache_dir=os.path.dirname(folder),
                                    file_hash=file_hash)
    except Exception as error:  # urllib / hash errors
        raise offline(f"the download failed: {_one_line(error)}") from None


def _application(backbone, input_shape, weights):
    """Builds a keras.applications backbone without its classifier."""
    apps = keras.applications
    if backbone == "resnet50":
        return apps.ResNet50(include_top=False, weights=weights,
                             input_shape=input_shape)
    if backbone == "mobilenet_v3_small":
        return apps.MobileNetV3Small(include_top=False, weights=weights,
                                     input_shape=input_shape,
                                     include_preprocessing=False)
    return apps.EfficientNetB0(include_top=False, weights=weights,
                               input_shape=input_shape)


@keras.saving.register_keras_serializable(package="keras_mm")
@TOWERS.register("image")
class ImageTower(keras.layers.Layer):
    """Image tower: encodes float images `[batch, height, width, channels]`.

    Encoders:

    - `"cnn"`: a small conv stack, one block per entry of `filters`
      (3x3 convolution, normalization, ReLU, 2x2 max pool).
      `filters=(6, 16)` on 28x28 digits is LeNet-sized.
    - `"resnet"`: a ResNet-18/34 built here (`depth`, `base_filters`; see
      `ResNetBackbone`).
    - `"applications"`: the `keras.applications` model named by
      `backbone`, without its classifier: `"resnet50"`,
      `"mobilenet_v3_small"` (built without its internal rescaling) or
      `"efficientnet_b0"` (which keeps its built-in rescaling/normalization
      and so expects pixel values in [0, 255]). These need images of at
      least 32x32 and 3 channels. Their `weights` are `None` (random),
      `"imagenet"` or the path of a local weights file of the application
      model with `include_top=False` (e.g. a `..._notop.h5` file or
      `app.save_weights("x.weights.h5")`). `"imagenet"` reads Keras's
      cache folder first (`$KERAS_HOME/models`, default
      `~/.keras/models`; the file names are in `IMAGENET_WEIGHTS`), so a
      file dropped there loads offline; otherwise Keras downloads it, and
      without a network the error is one line naming the file, its URL and
      the folder to put it in. The ImageNet weights expect the
      application's own input scaling: `[-1, 1]` for
      `mobilenet_v3_small` (built here without its rescaling layer),
      `[0, 255]` for `efficientnet_b0`, and for `resnet50` caffe-style
      BGR pixels minus the ImageNet mean (`keras.applications.resnet50.
      preprocess_input`; an RGB input with that mean subtracted is close
      but not the same). The file is read when the tower is first built;
      a tower restored from a `.keras` file does not need it. (`encoder="resnet"` with a
      `backbone` is the deprecated spelling of this encoder: it still
      works, warns with a `DeprecationWarning`, and `get_config()` stores
      `encoder="applications"`.)
    - `"vit"`: a vision transformer: non-overlapping `patch_size` patches
      embedded by a strided convolution, a learned [CLS] token, learned
      position embeddings and `num_layers` pre-norm transformer layers.

    The encoder's feature map is projected to `dim` channels by a dense
    layer, then:

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
        dropout: dropout rate on the output (and inside the transformer).
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
        self.encoder = check_choice(name, "encoder", encoder, ENCODERS)
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.dim = check_positive_int(name, "dim", dim)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.filters = check_positive_ints(name, "filters", filters)
        if not self.filters:
            raise ValueError(f"{name}: filters must list at least one "
                             "conv block width, e.g. filters=(32, 64, 128)")
        self.kernel_size = check_positive_int(name, "kernel_size",
                                              kernel_size)
        self.depth = check_choice(name, "depth", depth, (18, 34))
        self.base_filters = check_positive_int(name, "base_filters",
                                               base_filters)
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
        if weights is not None:
            if backbone is None:
                raise ValueError(
                    f"{name}: weights={weights!r} needs a keras.applications "
                    "backbone (encoder='applications' with backbone="
                    "'resnet50', 'mobilenet_v3_small' or 'efficientnet_b0'); "
                    "use weights=None otherwise")
            if not isinstance(weights, (str, os.PathLike)) or \
                    not os.fspath(weights):
                raise ValueError(
                    f"{name}: weights={weights!r} must be None, 'imagenet' "
                    "(keras.applications' ImageNet weights: downloaded by "
                    "Keras, or read from its cache folder offline) or the "
                    "path of a local weights file")
            weights = os.fspath(weights)
        # `weights` and `output` are Keras Layer properties, so these two
        # arguments are stored as `weights_file` and `output_mode`.
        self.weights_file = weights
        self.patch_size = check_positive_int(name, "patch_size", patch_size)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            name, "intermediate_dim", intermediate_dim, allow_none=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.normalization = check_choice(name, "normalization",
                                          normalization, NORMALIZATIONS)
        self.norm_momentum = check_fraction(name, "norm_momentum",
                                            norm_momentum)
        self._restoring = False

    # -- building -----------------------------------------------------------

    def build_from_config(self, config):
        # Called when restoring a saved model: the saved variables replace
        # the initial ones, so the weights file is not read (or needed).
        self._restoring = True
        try:
            super().build_from_config(config)
        finally:
            self._restoring = False

    def _spatial(self, input_shape):
        _, height, width, _ = input_shape
        if self.encoder == "cnn":
            def down(s):
                return None if s is None else math.ceil(
                    s / 2 ** len(self.filters))
        elif self.encoder in _STRIDE_32:
            def down(s):
                return None if s is None else math.ceil(s / 32)
        else:
            def down(s):
                return None if s is None else s // self.patch_size
        return down(height), down(width)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4 or shape[-1] is None:
            raise ValueError(
                "ImageTower takes float images [batch, height, width, "
                f"channels] with known channels; got shape {shape}")
        policy = self.dtype_policy
        if self.encoder == "cnn":
            self.convs, self.norms, self.pools = [], [], []
            for i, f in enumerate(self.filters):
                conv = keras.layers.Conv2D(
                    f, self.kernel_size, padding="same", use_bias=False,
                    kernel_initializer=clone_initializer(
                        self.kernel_initializer),
                    dtype=policy, name=f"conv{i}")
                norm = make_norm(self.normalization, self.norm_momentum, f,
                                 policy, f"norm{i}")
                pool = keras.layers.MaxPooling2D(2, padding="same",
                                                 dtype=policy,
                                                 name=f"pool{i}")
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
                norm.build(shape)
                shape = pool.compute_output_shape(shape)
                self.convs.append(conv)
                self.norms.append(norm)
                self.pools.append(pool)
        elif self.encoder == "resnet":
            self.resnet = ResNetBackbone(
                depth=self.depth, base_filters=self.base_filters,
                kernel_initializer=clone_initializer(
                    self.kernel_initializer),
                normalization=self.normalization,
                norm_momentum=self.norm_momentum,
                dtype=policy, name="resnet")
            self.resnet.build(shape)
            shape = self.resnet.compute_output_shape(shape)
        elif self.encoder == "applications":
            self._build_application(shape)
            shape = tuple(self.application.output.shape)
        else:
            height, width = shape[1], shape[2]
            if height is None or width is None:
                raise ValueError(
                    "ImageTower(encoder='vit') needs a fixed image size for "
                    f"its position embeddings; got shape {shape}")
            if height < self.patch_size or width < self.patch_size:
                raise ValueError(
                    f"ImageTower: patch_size={self.patch_size} is larger "
                    f"than the {height}x{width} images; lower patch_size")
            self.patch_embedding = keras.layers.Conv2D(
                self.dim, self.patch_size, strides=self.patch_size,
                padding="valid", kernel_initializer="glorot_uniform",
                dtype=policy, name="patch_embedding")
            self.patch_embedding.build(shape)
            grid = self._spatial(shape)
            tokens = grid[0] * grid[1]
            self.cls_token = self.add_weight(
                name="cls_token", shape=(1, 1, self.dim),
                initializer=keras.initializers.TruncatedNormal(stddev=0.02))
            self.position_embedding = PositionEmbedding(
                tokens + 1, dtype=policy, name="position_embedding")
            self.position_embedding.build((None, tokens + 1, self.dim))
            self.transformer = TransformerEncoder(
                num_layers=self.num_layers, num_heads=self.num_heads,
                intermediate_dim=self.intermediate_dim,
                dropout=self.dropout, dtype=policy, name="transformer")
            self.transformer.build((None, tokens + 1, self.dim))
        if self.encoder != "vit":
            self.projection = keras.layers.Dense(
                self.dim, kernel_initializer="glorot_uniform", dtype=policy,
                name="projection")
            self.projection.build(shape)
        self.output_dropout = keras.layers.Dropout(self.dropout,
                                                   dtype=policy)
        self.built = True

    def _build_application(self, shape):
        weights = self.weights_file
        imagenet = weights == "imagenet"
        if self._restoring:
            weights = None
        elif weights is not None and not imagenet and \
                not os.path.exists(weights):
            raise ValueError(
                f"ImageTower: weights={weights!r}: no such file; give the "
                f"path of a local {self.backbone} weights file "
                "(include_top=False), 'imagenet' or weights=None")
        if shape[1] is None or shape[2] is None:
            raise ValueError(
                f"ImageTower(backbone={self.backbone!r}) needs a fixed "
                f"image size; got shape {shape}")
        if min(shape[1], shape[2]) < 32 or shape[3] != 3:
            if imagenet:
                raise ValueError(
                    f"ImageTower(backbone={self.backbone!r}, weights="
                    "'imagenet'): the ImageNet weights take RGB images (3 "
                    "channels) of at least 32x32; got images of shape "
                    f"{tuple(shape[1:])}: set the image preprocessor to "
                    "channels: 3 and a size of at least 32x32 (the weights "
                    "were trained at 224x224)")
            raise ValueError(
                f"ImageTower(backbone={self.backbone!r}) needs images of at "
                f"least 32x32 with 3 channels; got shape {shape}")
        imagenet_path = None
        if weights == "imagenet":
            # Looked up (or downloaded) before the model is built; loaded
            # below as keras.applications loads it (its h5 format).
            imagenet_path = imagenet_weights_file(self.backbone)
            weights = None
        # keras.applications take no dtype argument: build them under this
        # tower's policy so that mixed precision reaches their layers.
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.dtype_policy)
        try:
            self.application = _application(self.backbone, shape[1:],
                                             weights)
        finally:
            keras.config.set_dtype_policy(previous)
        if imagenet_path:
            try:
                self.application.load_weights(imagenet_path)
            except Exception as error:  # h5py / shape mismatch errors
                raise ValueError(
                    f"ImageTower: cannot load the ImageNet weights file "
                    f"{imagenet_path} into {self.backbone}: "
                    f"{_one_line(error)}; delete it (Keras downloads it "
                    "again where there is a network) or replace it with "
                    "the right file") from None
        for layer in self.application._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = self.norm_momentum

    # -- calling ------------------------------------------------------------

    def _feature_map(self, inputs, training):
        if self.encoder == "cnn":
            x = inputs
            for conv, norm, pool in zip(self.convs, self.norms, self.pools):
                x = keras.activations.relu(norm(conv(x), training=training))
                x = pool(x)
            return self.projection(x)
        if self.encoder == "resnet":
            return self.projection(self.resnet(inputs, training=training))
        if self.encoder == "applications":
            x = self.application(inputs, training=training)
            return self.projection(x)
        return self.patch_embedding(inputs)

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(
                "ImageTower does not take a mask (images have no padding); "
                "mark a missing image with the fusion presence mask instead")
        x = self._feature_map(inputs, training)
        if self.encoder == "vit":
            batch = ops.shape(x)[0]
            grid_h, grid_w = x.shape[1], x.shape[2]
            tokens = ops.reshape(x, (batch, grid_h * grid_w, self.dim))
            cls = ops.cast(self.cls_token, tokens.dtype)
            cls = ops.broadcast_to(cls, (batch, 1, self.dim))
            tokens = ops.concatenate([cls, tokens], axis=1)
            tokens = self.position_embedding(tokens)
            tokens = self.output_dropout(tokens, training=training)
            tokens = self.transformer(tokens, training=training)
            if self.output_mode == "vector":
                return tokens[:, 0]
            patches = tokens[:, 1:]
            if self.output_mode == "sequence":
                return patches
            return ops.reshape(patches, (batch, grid_h, grid_w, self.dim))
        x = self.output_dropout(x, training=training)
        if self.output_mode == "feature_map":
            return x
        if self.output_mode == "vector":
            return ops.mean(x, axis=(1, 2))
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], -1, self.dim))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        if self.output_mode == "vector":
            return (batch, self.dim)
        height, width = self._spatial(input_shape)
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
            "filters": list(self.filters),
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
