"""Image preprocessor: encoded bytes -> resized, normalized float32 image."""

import tensorflow as tf

from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import check_choice
from keras_mm.layers.utils import check_positive_int
from keras_mm.ops import image_header
from keras_mm.registry import PREPROCESSORS

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)

#: Default largest height x width decoded (40 megapixels: a 160 MB RGBA
#: uint8 image at most).
DEFAULT_MAX_PIXELS = 40_000_000


def _rgb_or_rgba(image, channels):
    """`[..., H, W, c]` (c in 1..4, dynamic) -> RGB (grey repeated) or RGBA
    (alpha kept, or opaque: 255 in the image's dtype)."""
    c = tf.shape(image)[-1]
    rgb = tf.cond(c >= 3, lambda: image[..., :3],
                  lambda: tf.repeat(image[..., :1], 3, axis=-1))
    if channels == 3:
        return rgb
    alpha = tf.cond(tf.equal(c, 4) | tf.equal(c, 2),
                    lambda: image[..., -1:],
                    lambda: tf.fill(tf.concat([tf.shape(image)[:-1], [1]], 0),
                                    tf.constant(255, image.dtype)))
    return tf.concat([rgb, alpha], axis=-1)


def _to_channels(image, channels):
    """float `[..., H, W, c]`, c in 1..4 (dynamic) -> `channels` channels."""
    c = tf.shape(image)[-1]
    if channels == 1:
        gray = tf.cond(
            c >= 3,
            lambda: tf.reduce_sum(image[..., :3] * tf.constant(_LUMA),
                                  axis=-1, keepdims=True),
            lambda: image[..., :1])
        return gray
    return _rgb_or_rgba(image, channels)


def select_channels(image, channels):
    """uint8 `[..., H, W, c]` -> the channels to resize, without floats.

    For 3 or 4 output channels this is the exact conversion of
    `_to_channels` (grey repeated, alpha dropped or set to 255); for 1 it
    keeps the grey channel, or RGB, which `_to_channels` turns grey after
    the resize. Resizing this and then applying `_to_channels` equals the
    float-first order bitwise except RGB -> grey (float rounding).
    """
    c = tf.shape(image)[-1]
    if channels == 1:
        return tf.cond(c >= 3, lambda: image[..., :3],
                       lambda: image[..., :1])
    return _rgb_or_rgba(image, channels)


def decode_image_uint8(contents, max_pixels=DEFAULT_MAX_PIXELS,
                       what="image"):
    """Decodes PNG / JPEG / GIF (first frame) / BMP bytes in-graph to uint8.

    The size is read from the header first (`keras_mm.ops.image_header`):
    an image of more than `max_pixels` pixels is refused before any pixel
    is decoded, with an `InvalidArgumentError` naming `what`, the format,
    the dimensions and the limit (a decompression bomb costs a header
    read, not gigabytes). JPEG is decoded with the accurate integer DCT
    (libjpeg's default, which Pillow uses). An 8-bit BMP's pixels are
    mapped through its palette (RGB, or one grey channel when the palette
    is grey), as Pillow does.

    Args:
        contents: scalar string tensor of encoded bytes.
        max_pixels: the largest height x width accepted.
        what: how the error names the value, e.g. "input `image`".

    Returns:
        uint8 `[H, W, c]`, c in 1..4 (the file's own channels; 16-bit PNGs
        are scaled down to 8 bits).

    Raises:
        tf.errors.InvalidArgumentError (at run time) for undecodable bytes
        or an image above `max_pixels`.
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    checks, _ = image_header.check_image_size(contents, max_pixels, what)
    with tf.control_dependencies(checks):
        contents = tf.identity(contents)

    def jpeg():
        return tf.io.decode_jpeg(contents, channels=0,
                                 dct_method="INTEGER_ACCURATE")

    def other():
        return tf.io.decode_image(contents, channels=0,
                                  expand_animations=False, dtype=tf.uint8)

    image = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
    is_palette, colours = image_header.bmp_palette(contents)

    def from_palette():
        rgb = tf.gather(colours, tf.cast(image[..., 0], tf.int32))
        grey = tf.reduce_all(tf.equal(colours[:, 0], colours[:, 1])
                             & tf.equal(colours[:, 1], colours[:, 2]))
        return tf.cond(grey, lambda: rgb[..., :1], lambda: rgb)

    image = tf.cond(is_palette & tf.equal(tf.shape(image)[-1], 1),
                    from_palette, lambda: image)
    image.set_shape([None, None, None])
    return image


def decode_image_bytes(contents, channels=3, max_pixels=DEFAULT_MAX_PIXELS,
                       what="image"):
    """`decode_image_uint8` as float32 `[H, W, channels]` in [0, 255].

    Grayscale from colour uses Pillow's ITU-R 601-2 weights (not rounded).
    The preprocessors resize the uint8 image first (`decode_image_uint8`,
    `select_channels`, `resize_image`, then `_to_channels`), so no
    full-size float copy is made; this helper is for full-size use.
    """
    image = tf.cast(decode_image_uint8(contents, max_pixels, what),
                    tf.float32)
    image = _to_channels(image, channels)
    image.set_shape([None, None, channels])
    return image


def resize_image(image, size, preserve_aspect=False, antialias=False):
    """Bilinear resize of `[..., H, W, C]` to `size`, optionally padded.

    A uint8 image is resized without a full-size float copy (the resize
    ops read uint8 and give float32).

    `preserve_aspect=True` scales the image to fit inside `size` (the same
    geometry as `tf.image.resize_with_pad`) and pads with zeros, centred.
    The fitted size is computed in integers: `tf.image.resize_with_pad`
    floors a float ratio, which Grappler's rewrite of `x / c` into
    `x * (1 / c)` inside a `tf.function` can move by one pixel (or leave the
    image unresized), so serving would differ from tf.data.
    """
    height, width = size
    if not preserve_aspect:
        return tf.image.resize(image, (height, width), method="bilinear",
                               antialias=antialias)
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]
    height_limited = h * width >= w * height
    new_h = tf.where(height_limited, height, (h * width) // w)
    new_w = tf.where(height_limited, (w * height) // h, width)
    new_h = tf.clip_by_value(new_h, 1, height)
    new_w = tf.clip_by_value(new_w, 1, width)
    resized = tf.image.resize(image, tf.stack([new_h, new_w]),
                              method="bilinear", antialias=antialias)
    # Offsets as resize_with_pad: half the padding of the unfloored size.
    top = tf.where(height_limited, 0, (height * w - h * width) // (2 * w))
    left = tf.where(height_limited, (width * h - w * height) // (2 * h), 0)
    paddings = tf.stack([[top, height - new_h - top],
                         [left, width - new_w - left], [0, 0]])
    rank = len(image.shape)
    if rank == 4:
        paddings = tf.concat([[[0, 0]], paddings], 0)
    padded = tf.pad(resized, paddings)
    static = [None] * (rank - 3) + [height, width, image.shape[-1]]
    return tf.ensure_shape(padded, static)


@PREPROCESSORS.register("image")
class ImagePreprocessor(Preprocessor):
    """Encoded image bytes -> float32 `[B, H, W, C]`, normalized.

    `parse` decodes (PNG, JPEG, GIF first frame, BMP) to `channels` and
    resizes to `size` (bilinear; `preserve_aspect=True` keeps the aspect ratio
    and pads with zeros). `transform` multiplies by `scale`, applies the
    training-only augmentation (only when `training=True`: random crop, flip,
    brightness), then subtracts `mean` and divides by `std` per channel.
    Empty bytes give an all-zero image and `<name>_present = 0`; bytes that do
    not decode raise `tf.errors.InvalidArgumentError` (the pipeline's
    validation pass reports the file), and so does an image whose header
    states more than `max_pixels` pixels: it is refused before decoding
    (see `decode_image_uint8`). The image is decoded to uint8 and resized
    before any float conversion (channel conversion comes after the
    resize: bitwise the same as before for channel selection, within
    float rounding, about 1e-4 of 255, for RGB -> grey).

    Args:
        name: model input name.
        size: `(height, width)` of the output.
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA).
        preserve_aspect: fit inside `size` keeping the aspect ratio and pad
            with zeros (the geometry of `tf.image.resize_with_pad`, computed
            in integers so tf.function and tf.data agree; see `resize_image`).
        antialias: antialiased resize (better when shrinking a lot).
        scale: multiplies the pixel values (0..255); default 1/255.
        mean, std: optional per-channel (or scalar) values applied after
            `scale`: `(x * scale - mean) / std`.
        random_crop: `None` or a fraction in (0, 1]: in training, crop a
            random box of that fraction of height and width and resize it
            back to `size`.
        random_flip: in training, flip left-right with probability 0.5.
        random_brightness: in training, add a per-image delta drawn from
            `[-random_brightness, random_brightness]` (after `scale`).
        max_pixels: the largest height x width decoded (read from the
            header; default 40 megapixels).

    Outputs: `<name>` float32 `[B, H, W, C]`, `<name>_present` float32 `[B]`.

    Example:

    >>> pre = ImagePreprocessor("image", size=(28, 28), channels=1)
    >>> out = pre(tf.constant([png_bytes]))
    >>> out["image"].shape
    TensorShape([1, 28, 28, 1])
    """

    modality = "image"

    def __init__(self, name, size=(224, 224), channels=3,
                 preserve_aspect=False, antialias=False, scale=1.0 / 255.0,
                 mean=None, std=None, random_crop=None, random_flip=False,
                 random_brightness=0.0, max_pixels=DEFAULT_MAX_PIXELS):
        super().__init__(name)
        owner = f"ImagePreprocessor({name!r})"
        self.max_pixels = check_positive_int(owner, "max_pixels", max_pixels)
        if len(size) != 2 or any(int(s) < 1 for s in size):
            raise ValueError(f"{owner}: size={size!r} must be (height, "
                             "width) with positive integers")
        self.size = (int(size[0]), int(size[1]))
        self.channels = check_choice(owner, "channels", int(channels),
                                     (1, 3, 4))
        self.preserve_aspect = bool(preserve_aspect)
        self.antialias = bool(antialias)
        self.scale = float(scale)
        self.mean = _per_channel(owner, "mean", mean, self.channels)
        self.std = _per_channel(owner, "std", std, self.channels)
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError(f"{owner}: std={std!r} must be non-zero")
        if random_crop is not None:
            random_crop = float(random_crop)
            if not 0.0 < random_crop <= 1.0:
                raise ValueError(f"{owner}: random_crop={random_crop} must "
                                 "be None or a fraction in (0, 1]")
        self.random_crop = random_crop
        self.random_flip = bool(random_flip)
        self.random_brightness = float(random_brightness)

    def get_config(self):
        config = super().get_config()
        config.update(size=list(self.size), channels=self.channels,
                      preserve_aspect=self.preserve_aspect,
                      antialias=self.antialias, scale=self.scale,
                      mean=self.mean, std=self.std,
                      random_crop=self.random_crop,
                      random_flip=self.random_flip,
                      random_brightness=self.random_brightness,
                      max_pixels=self.max_pixels)
        return config

    def raw_signature(self):
        return {self.name: tf.TensorSpec([None], tf.string)}

    def parsed_signature(self):
        return {
            self.name: tf.TensorSpec([*self.size, self.channels], tf.float32),
            self._key("_present"): tf.TensorSpec([], tf.float32),
        }

    def output_signature(self):
        return {
            self.name: tf.TensorSpec([None, *self.size, self.channels],
                                     tf.float32),
            self._key("_present"): tf.TensorSpec([None], tf.float32),
        }

    def parse(self, raw, training=False, seed=None):
        del training, seed  # augmentation happens batched, in transform
        raw = tf.reshape(tf.convert_to_tensor(self.select_raw(raw),
                                              tf.string), [])
        present = tf.strings.length(raw) > 0
        shape = [*self.size, self.channels]

        def decode():
            image = decode_image_uint8(raw, self.max_pixels,
                                       f"input `{self.name}`")
            image = select_channels(image, self.channels)
            image = self._resize(image)
            image = _to_channels(tf.cast(image, tf.float32), self.channels)
            return tf.ensure_shape(image, shape)

        image = tf.cond(present, decode, lambda: tf.zeros(shape, tf.float32))
        return {self.name: image,
                self._key("_present"): tf.cast(present, tf.float32)}

    def _resize(self, image):
        """uint8 `[H, W, c]` (decoded, channels selected) -> float32
        `[*size, c]`. A hook: `ImagePresetPreprocessor` resizes the way its
        preset's image converter does."""
        return resize_image(image, self.size, self.preserve_aspect,
                            self.antialias)

    def transform(self, parsed, training=False, seed=None):
        images = tf.cast(parsed[self.name], tf.float32) * self.scale
        present = tf.cast(parsed[self._key("_present")], tf.float32)
        if training:
            images = self._augment(images, seed)
        if self.mean is not None:
            images = images - tf.constant(self.mean, tf.float32)
        if self.std is not None:
            # A constant reciprocal: `x / c` may be rewritten as `x * (1 / c)`
            # in one graph and not in another; this keeps paths bitwise equal.
            images = images * tf.constant([1.0 / s for s in self.std],
                                          tf.float32)
        images = images * present[:, None, None, None]
        return {self.name: images, self._key("_present"): present}

    def _augment(self, images, seed=None):
        batch = tf.shape(images)[0]

        def uniform(shape, low, high, i):
            if seed is None:
                return tf.random.uniform(shape, low, high)
            return tf.random.stateless_uniform(
                shape, tf.random.experimental.stateless_fold_in(seed, i),
                low, high)

        if self.random_crop is not None and self.random_crop < 1.0:
            f = self.random_crop
            offsets = uniform([batch, 2], 0.0, 1.0 - f, 0)
            boxes = tf.concat([offsets, offsets + f], axis=1)  # y1 x1 y2 x2
            images = tf.image.crop_and_resize(
                images, boxes, tf.range(batch), self.size, method="bilinear")
        if self.random_flip:
            flip = uniform([batch, 1, 1, 1], 0.0, 1.0, 1) < 0.5
            images = tf.where(flip, tf.reverse(images, axis=[2]), images)
        if self.random_brightness > 0:
            delta = uniform([batch, 1, 1, 1], -self.random_brightness,
                            self.random_brightness, 2)
            images = images + delta
        return images


def _per_channel(owner, argument, value, channels):
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)] * channels
    value = [float(v) for v in value]
    if len(value) == 1:
        value = value * channels
    if len(value) != channels:
        raise ValueError(f"{owner}: {argument}={value!r} must have one value "
                         f"per channel ({channels}) or be a scalar")
    return value
