"""Video preprocessor: encoded frames or a GIF -> `[B, T, H, W, C]` + mask."""

import tensorflow as tf

from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.data.image_preprocessor import DEFAULT_MAX_PIXELS
from keras_mm.data.image_preprocessor import _per_channel
from keras_mm.data.image_preprocessor import _to_channels
from keras_mm.data.image_preprocessor import decode_image_uint8
from keras_mm.data.image_preprocessor import resize_image
from keras_mm.data.image_preprocessor import select_channels
from keras_mm.layers.utils import check_choice
from keras_mm.layers.utils import check_positive_int

#: `VideoPreprocessor.max_clip_pixels`: frames x height x width of a GIF.
DEFAULT_MAX_CLIP_PIXELS = 2 ** 27
from keras_mm.ops import image_header
from keras_mm.registry import PREPROCESSORS


def sample_frame_indices(num_available, num_frames):
    """Uniform frame indices and validity mask.

    With `n >= T` available frames, index `i` is `floor((i + 0.5) * n / T)`
    (the centres of T equal segments); with fewer, all `n` frames are taken
    and the remaining `T - n` slots are padding (`mask` False).

    Returns:
        `(indices int32 [T], mask bool [T])`; padded slots have index `n`.
    """
    n = tf.cast(num_available, tf.int32)
    i = tf.range(num_frames, dtype=tf.int32)
    spread = ((2 * i + 1) * n) // (2 * num_frames)
    mask = i < n
    indices = tf.where(n >= num_frames, spread, tf.where(mask, i, n))
    return indices, tf.logical_or(mask, n >= num_frames)


@PREPROCESSORS.register("video")
class VideoPreprocessor(Preprocessor):
    """Frames (JPEG/PNG bytes) or an animated GIF -> float32 clip + mask.

    `source="frames"`: the raw value is a `[T_raw]` string vector of encoded
    frames (a `tf.train.Example` bytes list; empty strings are padding and
    are dropped). `source="gif"`: a scalar string of GIF bytes. `parse`
    samples `num_frames` frames uniformly (`sample_frame_indices`); a clip
    with fewer frames keeps all of them and is padded with zero frames,
    marked False in `<name>_mask`. Frames are decoded, resized and then, in
    `transform`, normalized like `ImagePreprocessor` (`x * scale`, then
    `(x - mean) / std`); padded frames stay zero. A clip with no frames gives
    `<name>_present = 0`.

    Each frame's (or the GIF's canvas) size is read from its header before
    decoding; above `max_pixels` the clip is refused with an
    `InvalidArgumentError` naming the input, the format, the dimensions
    and the limit. Frames are decoded to uint8 and resized before any
    float conversion; only the sampled GIF frames are converted.

    Serving signature: `[B, T_raw]` strings for frames (pad with empty
    strings), `[B]` for GIF.

    Args:
        name: model input name.
        num_frames: T, frames per clip.
        size: `(height, width)` of each frame.
        channels: 1, 3 or 4.
        source: `"frames"` or `"gif"`.
        preserve_aspect, antialias, scale, mean, std: as in
            `ImagePreprocessor`.
        max_pixels: the largest height x width of one frame (default 40
            megapixels).
        max_clip_pixels: `source="gif"`: the largest frames x height x
            width of a whole GIF (default 2**27, about 400 MB decoded).
            `tf.io.decode_gif` decodes every frame, so the frames are
            counted from the GIF's blocks first
            (`image_header.gif_frame_count`) and a longer animation is
            refused before decoding.

    Outputs: `<name>` float32 `[B, T, H, W, C]`, `<name>_mask` bool `[B, T]`
    (False = padded frame), `<name>_present` float32 `[B]`.

    Example:

    >>> pre = VideoPreprocessor("clip", num_frames=8, size=(32, 32))
    >>> out = pre(tf.constant([[jpeg1, jpeg2, jpeg3, b""]]))
    >>> out["clip_mask"].numpy()
    array([[ True,  True,  True, False, False, False, False, False]])
    """

    modality = "video"

    def __init__(self, name, num_frames=8, size=(64, 64), channels=3,
                 source="frames", preserve_aspect=False, antialias=False,
                 scale=1.0 / 255.0, mean=None, std=None,
                 max_pixels=DEFAULT_MAX_PIXELS,
                 max_clip_pixels=DEFAULT_MAX_CLIP_PIXELS):
        super().__init__(name)
        owner = f"VideoPreprocessor({name!r})"
        self.max_pixels = check_positive_int(owner, "max_pixels", max_pixels)
        self.max_clip_pixels = check_positive_int(owner, "max_clip_pixels",
                                                  max_clip_pixels)
        self.num_frames = int(num_frames)
        if self.num_frames < 1:
            raise ValueError(f"{owner}: num_frames={num_frames} must be >= 1")
        if len(size) != 2 or any(int(s) < 1 for s in size):
            raise ValueError(f"{owner}: size={size!r} must be (height, "
                             "width) with positive integers")
        self.size = (int(size[0]), int(size[1]))
        self.channels = check_choice(owner, "channels", int(channels),
                                     (1, 3, 4))
        self.source = check_choice(owner, "source", source,
                                   ("frames", "gif"))
        self.preserve_aspect = bool(preserve_aspect)
        self.antialias = bool(antialias)
        self.scale = float(scale)
        self.mean = _per_channel(owner, "mean", mean, self.channels)
        self.std = _per_channel(owner, "std", std, self.channels)
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError(f"{owner}: std={std!r} must be non-zero")

    def get_config(self):
        config = super().get_config()
        config.update(num_frames=self.num_frames, size=list(self.size),
                      channels=self.channels, source=self.source,
                      preserve_aspect=self.preserve_aspect,
                      antialias=self.antialias, scale=self.scale,
                      mean=self.mean, std=self.std,
                      max_pixels=self.max_pixels,
                      max_clip_pixels=self.max_clip_pixels)
        return config

    @property
    def _frame_shape(self):
        return [*self.size, self.channels]

    def raw_signature(self):
        shape = [None, None] if self.source == "frames" else [None]
        return {self.name: tf.TensorSpec(shape, tf.string)}

    def parsed_signature(self):
        return {
            self.name: tf.TensorSpec([self.num_frames, *self._frame_shape],
                                     tf.float32),
            self._key("_mask"): tf.TensorSpec([self.num_frames], tf.bool),
            self._key("_present"): tf.TensorSpec([], tf.float32),
        }

    def output_signature(self):
        return {
            self.name: tf.TensorSpec(
                [None, self.num_frames, *self._frame_shape], tf.float32),
            self._key("_mask"): tf.TensorSpec([None, self.num_frames],
                                              tf.bool),
            self._key("_present"): tf.TensorSpec([None], tf.float32),
        }

    def _decode_frame(self, contents):
        shape = self._frame_shape

        def decode():
            image = decode_image_uint8(contents, self.max_pixels,
                                       f"input `{self.name}` (a frame)")
            image = select_channels(image, self.channels)
            image = resize_image(image, self.size, self.preserve_aspect,
                                 self.antialias)
            image = _to_channels(tf.cast(image, tf.float32), self.channels)
            return tf.ensure_shape(image, shape)

        return tf.cond(tf.strings.length(contents) > 0, decode,
                       lambda: tf.zeros(shape, tf.float32))

    def _parse_frames(self, raw):
        raw = tf.reshape(tf.convert_to_tensor(raw, tf.string), [-1])
        frames = tf.boolean_mask(raw, tf.strings.length(raw) > 0)
        n = tf.size(frames)
        indices, mask = sample_frame_indices(n, self.num_frames)
        selected = tf.gather(tf.concat([frames, [""]], 0), indices)
        clip = tf.map_fn(self._decode_frame, selected,
                         fn_output_signature=tf.TensorSpec(
                             self._frame_shape, tf.float32))
        return clip, mask, n > 0

    def _parse_gif(self, raw):
        raw = tf.reshape(tf.convert_to_tensor(raw, tf.string), [])
        present = tf.strings.length(raw) > 0
        clip_shape = [self.num_frames, *self._frame_shape]

        def decode():
            what = f"input `{self.name}` (GIF clip)"
            checks, (_, height, width) = image_header.check_image_size(
                raw, self.max_pixels, what)
            count = image_header.gif_frame_count(raw)
            checks.append(tf.debugging.Assert(
                count * height * width <= self.max_clip_pixels,
                [f"{what}: the GIF has", count, "frames of", height, "x",
                 width, "pixels, more than max_clip_pixels="
                 f"{self.max_clip_pixels} decoded pixels in all; shorten "
                 "or shrink the clip, or raise max_clip_pixels of the "
                 "preprocessor"], summarize=3))
            with tf.control_dependencies(checks):
                frames = tf.io.decode_gif(tf.identity(raw))   # uint8
            n = tf.shape(frames)[0]
            indices, mask = sample_frame_indices(n, self.num_frames)
            clip = tf.gather(frames, tf.minimum(indices, n - 1))
            clip = select_channels(clip, self.channels)
            clip = resize_image(clip, self.size, self.preserve_aspect,
                                self.antialias)
            clip = _to_channels(tf.cast(clip, tf.float32), self.channels)
            clip = clip * tf.cast(mask, tf.float32)[:, None, None, None]
            return tf.ensure_shape(clip, clip_shape), mask

        def empty():
            return (tf.zeros(clip_shape, tf.float32),
                    tf.zeros([self.num_frames], tf.bool))

        clip, mask = tf.cond(present, decode, empty)
        return clip, mask, present

    def parse(self, raw, training=False, seed=None):
        del training, seed
        raw = self.select_raw(raw)
        if self.source == "frames":
            clip, mask, present = self._parse_frames(raw)
        else:
            clip, mask, present = self._parse_gif(raw)
        return {self.name: clip, self._key("_mask"): mask,
                self._key("_present"): tf.cast(present, tf.float32)}

    def transform(self, parsed, training=False, seed=None):
        del training, seed
        clip = tf.cast(parsed[self.name], tf.float32) * self.scale
        mask = tf.cast(parsed[self._key("_mask")], tf.bool)
        present = tf.cast(parsed[self._key("_present")], tf.float32)
        if self.mean is not None:
            clip = clip - tf.constant(self.mean, tf.float32)
        if self.std is not None:
            clip = clip * tf.constant([1.0 / s for s in self.std],
                                      tf.float32)
        clip = clip * tf.cast(mask, tf.float32)[:, :, None, None, None]
        return {self.name: clip, self._key("_mask"): mask,
                self._key("_present"): present}
