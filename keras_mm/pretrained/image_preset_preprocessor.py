"""Image preprocessor following a keras-hub preset's image converter."""

import copy

import tensorflow as tf

from keras_mm.data.image_preprocessor import (DEFAULT_MAX_PIXELS,
                                              ImagePreprocessor)
from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import (check_bool, check_choice,
                                   check_positive_int)
from keras_mm.pretrained.preset_loading import from_preset, keras_hub
from keras_mm.registry import PREPROCESSORS

#: The resize methods of keras-hub's ImageConverter (Keras `Resizing` on the
#: TensorFlow backend), all of which `tf.image.resize` implements.
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos3", "lanczos5",
                  "area")
#: The converter settings this preprocessor applies (`converter=`).
CONVERTER_KEYS = ("image_size", "scale", "offset", "interpolation",
                  "antialias", "crop_to_aspect_ratio", "pad_to_aspect_ratio")


def converter_settings(converter):
    """The `CONVERTER_KEYS` of a keras-hub `ImageConverter`, JSON-ready."""

    def numbers(value):
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        return float(value)

    size = converter.image_size
    return {
        "image_size": None if size is None else [int(s) for s in size],
        "scale": numbers(converter.scale),
        "offset": numbers(converter.offset),
        "interpolation": str(converter.interpolation),
        "antialias": bool(converter.antialias),
        "crop_to_aspect_ratio": bool(converter.crop_to_aspect_ratio),
        "pad_to_aspect_ratio": bool(converter.pad_to_aspect_ratio),
    }


def read_converter(owner, preset):
    """The `converter_settings` of the image converter of `preset` (read
    with keras-hub's `ImageConverter.from_preset`, one-line offline
    errors naming `owner`)."""
    layer = from_preset(keras_hub().layers.ImageConverter.from_preset,
                        preset, "image converter", owner)
    return converter_settings(layer)


def effective_settings(converter, image_size=None,
                       crop_to_aspect_ratio=None):
    """The converter settings with the `image_size` /
    `crop_to_aspect_ratio` overrides applied (None keeps the converter's)."""
    settings = dict(converter)
    if image_size is not None:
        settings["image_size"] = list(image_size)
    if crop_to_aspect_ratio is not None:
        settings["crop_to_aspect_ratio"] = crop_to_aspect_ratio
        if crop_to_aspect_ratio:
            settings["pad_to_aspect_ratio"] = False
    return settings


def check_settings(owner, settings, source):
    """Refuses settings without an image size, or with both a crop and a
    pad to the aspect ratio (`source` names where they came from)."""
    if settings["image_size"] is None:
        raise ValueError(
            f"{owner}: the image converter of {source} has no "
            "image_size (it keeps the input size); give image_size=("
            "height, width)")
    if settings["crop_to_aspect_ratio"] and settings["pad_to_aspect_ratio"]:
        raise ValueError(
            f"{owner}: crop_to_aspect_ratio=True and the converter's "
            "pad_to_aspect_ratio=True: choose one")


def converter_resize(image, size, settings):
    """The converter's crop / pad and resize of uint8 `[..., H, W, C]`
    (one image, or frames of one size, e.g. a clip `[T, H, W, C]`: the
    same box for every frame) to float32 `[..., *size, C]`.

    The crop / pad geometry is computed in integers; see
    `ImagePresetPreprocessor` (step 1).
    """
    target_h, target_w = size
    outer = image.shape.rank - 3       # leading axes (0 for one image)
    shape = tf.shape(image, out_type=tf.int64)
    height, width = shape[outer], shape[outer + 1]
    zero = tf.constant(0, tf.int64)
    if settings["crop_to_aspect_ratio"]:
        crop_h = tf.clip_by_value(width * target_h // target_w, 1, height)
        crop_w = tf.clip_by_value(height * target_w // target_h, 1, width)
        top = (height - crop_h) // 2
        left = (width - crop_w) // 2
        minus_one = tf.constant(-1, tf.int64)
        image = tf.slice(image, tf.stack([zero] * outer + [top, left, zero]),
                         tf.stack([minus_one] * outer +
                                  [crop_h, crop_w, minus_one]))
    elif settings["pad_to_aspect_ratio"]:
        pad_h = tf.maximum(height, width * target_h // target_w)
        pad_w = tf.maximum(width, height * target_w // target_h)
        # keras pads both sides by the same amount.
        top = (pad_h - height) // 2
        left = (pad_w - width) // 2
        image = tf.pad(image, tf.reshape(
            tf.stack([zero, zero] * outer + [top, top, left, left, zero,
                                             zero]), [outer + 3, 2]))
    resized = tf.image.resize(image, (target_h, target_w),
                              method=settings["interpolation"],
                              antialias=settings["antialias"])
    return tf.cast(resized, tf.float32)


def rescale(images, settings):
    """`images * scale + offset` (the converter's, per channel or global;
    either may be None), in float32."""
    images = tf.cast(images, tf.float32)
    if settings["scale"] is not None:
        images = images * tf.constant(settings["scale"], tf.float32)
    if settings["offset"] is not None:
        images = images + tf.constant(settings["offset"], tf.float32)
    return images


def _size(owner, argument, value):
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(
            value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{owner}: {argument}={value!r} must be (height, "
                         "width) with positive integers")
    return [check_positive_int(owner, f"{argument}[{i}]", v)
            for i, v in enumerate(value)]


def _per_channel(owner, argument, value, channels):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(value) not in (1, channels):
            raise ValueError(f"{owner}: converter {argument}={value!r} must "
                             f"be a number or one per channel ({channels})")
        return [float(v) for v in value]
    return float(value)


@PREPROCESSORS.register("image_preset")
class ImagePresetPreprocessor(ImagePreprocessor):
    """Encoded image bytes -> float32 images as a keras-hub preset wants.

    Decoding is `ImagePreprocessor`'s (the same bounded decode: PNG, JPEG
    with the accurate integer DCT, GIF first frame, BMP; the header is read
    first and an image of more than `max_pixels` pixels is refused before
    any pixel is decoded; the serving export's `max_bytes` bounds the
    encoded size). The rest follows the preset's image converter
    (`keras_hub.layers.ImageConverter.from_preset(preset)`), the converter's
    steps in its order:

    1. `parse`: one resize only, the converter's: a centred crop to the
       target aspect ratio (`crop_to_aspect_ratio`, keras-hub's default),
       or symmetric zero padding to it (`pad_to_aspect_ratio`), or a
       stretch, then `tf.image.resize` to the converter's `image_size` with
       its `interpolation` and `antialias`. The keras_mm `ImagePreprocessor`
       resize (bilinear, aspect-preserving padding) is not used. The crop /
       pad geometry is computed in integers (keras computes it in float32:
       the same boxes while width x target height stays below 2**24, e.g.
       any image under 74,000 pixels wide for a 224 target), and the
       resize reads the decoded uint8 pixels (no full-size float copy).
    2. `transform`: `x * scale + offset` (per channel or global; keras-hub
       stores a preset's mean / std this way), in float32.

    The values equal `converter(tf.cast(decoded, "float32"))`, keras-hub's
    converter on the decoded pixels as floats. (Given uint8 pixels, the
    converter rounds its resized image back to uint8 before scaling; this
    preprocessor keeps the resize's float values.) The graph is core
    TensorFlow only: the converter itself is not in it, so `tf.data` and
    the exported SavedModel run the same ops and `resources()` is empty.
    (keras-hub's converter does run inside a `tf.data` map, and inside an
    `ExportArchive` reloaded by a TensorFlow-only process, bitwise; it is
    left out so that the resize reads uint8 pixels and the serving graph
    holds no keras-hub code.)

    Empty bytes give an all-zero image and `<name>_present = 0`.
    No training augmentation.

    Args:
        name: model input name.
        preset: a keras-hub preset name, `kaggle://` / `hf://` handle or
            local preset folder with an image converter. Read once, in the
            constructor; `get_config()` records the converter's settings
            (`converter`), so that a saved pipeline rebuilds without it.
        image_size: None (the converter's) or `(height, width)`
            overriding it (a ResNet preset takes any size; ViT / CLIP /
            SigLIP backbones need their own).
        crop_to_aspect_ratio: None (the converter's) or a bool overriding
            it (False stretches, unless the converter pads).
        converter: None (read from `preset`) or the settings dict
            (`CONVERTER_KEYS`: image_size, scale, offset, interpolation,
            antialias, crop_to_aspect_ratio, pad_to_aspect_ratio), as
            `get_config()` records it.
        channels: 3 (RGB; grey images repeated, alpha dropped) or 1.
        max_pixels: the largest height x width decoded (from the header).

    Outputs: `<name>` float32 `[B, H, W, channels]`, `<name>_present`
    float32 `[B]`.

    Example:

    >>> pre = ImagePresetPreprocessor(
    ...     "photo", preset="/models/vit_base_patch16_224")  # doctest: +SKIP
    >>> pre(tf.constant([jpeg_bytes]))["photo"].shape      # doctest: +SKIP
    TensorShape([1, 224, 224, 3])
    """

    modality = "image"
    registered_name = "image_preset"

    def __init__(self, name, preset=None, image_size=None,
                 crop_to_aspect_ratio=None, converter=None, channels=3,
                 max_pixels=DEFAULT_MAX_PIXELS):
        Preprocessor.__init__(self, name)
        owner = f"ImagePresetPreprocessor({name!r})"
        max_pixels = check_positive_int(owner, "max_pixels", max_pixels)
        channels = check_choice(owner, "channels", channels, (1, 3))
        self.preset = preset
        self.image_size = _size(owner, "image_size", image_size)
        if crop_to_aspect_ratio is not None:
            crop_to_aspect_ratio = check_bool(owner, "crop_to_aspect_ratio",
                                              crop_to_aspect_ratio)
        self.crop_to_aspect_ratio = crop_to_aspect_ratio
        if converter is None:
            if preset is None:
                raise ValueError(
                    f"{owner}: give preset= (a keras-hub preset name or "
                    "local preset folder with an image converter) or "
                    "converter= (its settings); got neither")
            converter = read_converter(owner, preset)
        self.converter = self._check_converter(owner, converter, channels)
        settings = self.settings()
        check_settings(owner, settings, self._source())
        super().__init__(name, size=settings["image_size"],
                         channels=channels, scale=1.0,
                         max_pixels=max_pixels)

    def _source(self):
        return f"preset {self.preset!r}" if self.preset is not None \
            else "converter="

    @staticmethod
    def _check_converter(owner, converter, channels):
        if not isinstance(converter, dict):
            raise ValueError(f"{owner}: converter={converter!r} must be a "
                             f"dict with keys {list(CONVERTER_KEYS)}")
        unknown = sorted(set(converter) - set(CONVERTER_KEYS))
        if unknown:
            raise ValueError(f"{owner}: converter has unknown keys {unknown};"
                             f" allowed: {list(CONVERTER_KEYS)}")
        out = {
            "image_size": _size(owner, "converter image_size",
                                converter.get("image_size")),
            "scale": _per_channel(owner, "scale", converter.get("scale"),
                                  channels),
            "offset": _per_channel(owner, "offset", converter.get("offset"),
                                   channels),
            "interpolation": check_choice(
                owner, "converter interpolation",
                converter.get("interpolation", "bilinear"), INTERPOLATIONS),
            "antialias": check_bool(owner, "converter antialias",
                                    converter.get("antialias", False)),
            "crop_to_aspect_ratio": check_bool(
                owner, "converter crop_to_aspect_ratio",
                converter.get("crop_to_aspect_ratio", True)),
            "pad_to_aspect_ratio": check_bool(
                owner, "converter pad_to_aspect_ratio",
                converter.get("pad_to_aspect_ratio", False)),
        }
        if out["crop_to_aspect_ratio"] and out["pad_to_aspect_ratio"]:
            raise ValueError(f"{owner}: converter crop_to_aspect_ratio and "
                             "pad_to_aspect_ratio are both True")
        return out

    def settings(self):
        """The converter settings in effect (the overrides applied)."""
        return effective_settings(self.converter, self.image_size,
                                  self.crop_to_aspect_ratio)

    def get_config(self):
        config = Preprocessor.get_config(self)
        config.update(preset=self.preset, image_size=self.image_size,
                      crop_to_aspect_ratio=self.crop_to_aspect_ratio,
                      converter=copy.deepcopy(self.converter),
                      channels=self.channels, max_pixels=self.max_pixels)
        return config

    def __repr__(self):
        return (f"ImagePresetPreprocessor(name={self.name!r}, "
                f"preset={self.preset!r}, size={tuple(self.size)})")

    # -- graph code ----------------------------------------------------------

    def _resize(self, image):
        """The converter's crop / pad and resize of one uint8 image."""
        return converter_resize(image, self.size, self.settings())

    def transform(self, parsed, training=False, seed=None):
        del training, seed  # no augmentation
        images = rescale(parsed[self.name], self.settings())
        present = tf.cast(parsed[self._key("_present")], tf.float32)
        images = images * present[:, None, None, None]
        return {self.name: images, self._key("_present"): present}

    def resources(self):
        """None: the graph holds no tables (the converter is not in it)."""
        return []
