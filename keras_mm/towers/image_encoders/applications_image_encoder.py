"""`ApplicationsImageEncoder`: a `keras.applications` backbone as
`ImageTower(encoder="applications")`'s encoder."""

import os

import keras

from keras_mm.layers.utils import ceil_div, check_choice, check_fraction
from keras_mm.registry import IMAGE_ENCODERS
from keras_mm.towers.image_encoder import ImageEncoder
from keras_mm.towers.imagenet_weights import (IMAGENET_WEIGHTS,
                                              imagenet_weights_file, one_line)
from keras_mm.towers.resnet_backbone import NORM_MOMENTUM

BACKBONES = tuple(IMAGENET_WEIGHTS)
# Channels of each backbone's last feature map (include_top=False).
FEATURE_CHANNELS = {"resnet50": 2048, "mobilenet_v3_small": 576,
                    "efficientnet_b0": 1280}


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
@IMAGE_ENCODERS.register("applications")
class ApplicationsImageEncoder(ImageEncoder):
    """The `keras.applications` model named by `backbone`, without its
    classifier: `"resnet50"`, `"mobilenet_v3_small"` (built without its
    internal rescaling) or `"efficientnet_b0"` (which keeps its built-in
    rescaling/normalization and so expects pixel values in [0, 255]). The
    feature map is `ceil(H / 32)` on a side. The images need a fixed size of
    at least 32x32 and 3 channels.

    `weights` is None (random), `"imagenet"` or the path of a local weights
    file of the application model with `include_top=False` (a
    `..._notop.h5` file or `app.save_weights("x.weights.h5")`).
    `"imagenet"` reads Keras's cache folder first (`$KERAS_HOME/models`,
    default `~/.keras/models`; the file names are in `IMAGENET_WEIGHTS`), so
    a file dropped there loads offline; otherwise Keras downloads it, and
    without a network the error is one line naming the file, its URL and
    the folder to put it in. The ImageNet weights expect the application's
    own input scaling: `[-1, 1]` for `mobilenet_v3_small`, `[0, 255]` for
    `efficientnet_b0`, and for `resnet50` caffe-style BGR pixels minus the
    ImageNet mean (`keras.applications.resnet50.preprocess_input`). The file
    is read when the encoder is first built; one restored from a saved model
    (`restoring`) does not need it.

    Args:
        backbone: `"resnet50"`, `"mobilenet_v3_small"` or
            `"efficientnet_b0"`.
        weights: None, `"imagenet"` or a local weights file path (kept as
            the attribute `weights_file`: `weights` is a Layer property).
        norm_momentum: momentum given to the backbone's batch norms
            (`NORM_MOMENTUM`; Keras builds them with 0.99).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, height, width, 3]`.
        training: Python bool (batch norm).

    Masking: none (images have no padding).

    Example:

    >>> encoder = ApplicationsImageEncoder("mobilenet_v3_small")
    >>> tuple(encoder(keras.random.uniform((2, 32, 32, 3))).shape)
    (2, 1, 1, 576)
    """

    def __init__(self, backbone="mobilenet_v3_small", weights=None,
                 norm_momentum=NORM_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.backbone = check_choice(name, "backbone", backbone, BACKBONES)
        if weights is not None:
            if not isinstance(weights, (str, os.PathLike)) or \
                    not os.fspath(weights):
                raise ValueError(
                    f"{name}: weights={weights!r} must be None, 'imagenet' "
                    "(keras.applications' ImageNet weights: downloaded by "
                    "Keras, or read from its cache folder offline) or the "
                    "path of a local weights file")
            weights = os.fspath(weights)
        self.weights_file = weights
        self.norm_momentum = check_fraction(name, "norm_momentum",
                                            norm_momentum)

    def build(self, input_shape):
        shape = tuple(input_shape)
        name = type(self).__name__
        weights = self.weights_file
        imagenet = weights == "imagenet"
        if self.restoring:
            weights = None
        elif weights is not None and not imagenet and \
                not os.path.exists(weights):
            raise ValueError(
                f"{name}: weights={weights!r}: no such file; give the path "
                f"of a local {self.backbone} weights file "
                "(include_top=False), 'imagenet' or weights=None")
        if shape[1] is None or shape[2] is None:
            raise ValueError(
                f"{name}(backbone={self.backbone!r}) needs a fixed image "
                f"size; got shape {shape}")
        if min(shape[1], shape[2]) < 32 or shape[3] != 3:
            if imagenet:
                raise ValueError(
                    f"{name}(backbone={self.backbone!r}, weights="
                    "'imagenet'): the ImageNet weights take RGB images (3 "
                    "channels) of at least 32x32; got images of shape "
                    f"{tuple(shape[1:])}: set the image preprocessor to "
                    "channels: 3 and a size of at least 32x32 (the weights "
                    "were trained at 224x224)")
            raise ValueError(
                f"{name}(backbone={self.backbone!r}) needs images of at "
                f"least 32x32 with 3 channels; got shape {shape}")
        imagenet_path = None
        if weights == "imagenet":
            # Looked up (or downloaded) before the model is built; loaded
            # below as keras.applications loads it (its h5 format).
            imagenet_path = imagenet_weights_file(self.backbone, name)
            weights = None
        # keras.applications take no dtype argument: build them under this
        # layer's policy so that mixed precision reaches their layers.
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
                    f"{name}: cannot load the ImageNet weights file "
                    f"{imagenet_path} into {self.backbone}: "
                    f"{one_line(error)}; delete it (Keras downloads it "
                    "again where there is a network) or replace it with "
                    "the right file") from None
        for layer in self.application._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = self.norm_momentum
        self.built = True

    def call(self, inputs, training=None):
        return self.application(inputs, training=training)

    def spatial(self, input_shape):
        return ceil_div(input_shape[1], 32), ceil_div(input_shape[2], 32)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.spatial(input_shape),
                FEATURE_CHANNELS[self.backbone])

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": self.backbone,
            "weights": self.weights_file,
            "norm_momentum": self.norm_momentum,
        })
        return config
