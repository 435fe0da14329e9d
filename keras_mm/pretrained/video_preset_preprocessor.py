"""Video preprocessor whose frames follow a keras-hub preset's image
converter (for `VideoPresetTower`)."""

import copy

import tensorflow as tf

from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.data.image_preprocessor import (DEFAULT_MAX_PIXELS,
                                              _to_channels,
                                              decode_image_uint8,
                                              select_channels)
from keras_mm.data.video_preprocessor import (DEFAULT_MAX_CLIP_PIXELS,
                                              VideoPreprocessor,
                                              sample_frame_indices)
from keras_mm.layers.utils import (check_bool, check_choice,
                                   check_positive_int)
from keras_mm.ops import image_header
from keras_mm.pretrained.image_preset_preprocessor import (
    ImagePresetPreprocessor, _size, check_settings, converter_resize,
    effective_settings, read_converter, rescale)
from keras_mm.registry import PREPROCESSORS


@PREPROCESSORS.register("video_preset")
class VideoPresetPreprocessor(VideoPreprocessor):
    """Frames or an animated GIF -> float32 clips as a keras-hub image
    preset wants each frame.

    The raw inputs, the frame sampling and the bounded decode are
    `VideoPreprocessor`'s: `source="frames"` takes a `[T_raw]` string
    vector of encoded frames (empty strings are padding, dropped),
    `source="gif"` one GIF's bytes; `num_frames` frames are sampled
    uniformly (`sample_frame_indices`), a shorter clip keeps all its frames
    and is padded with zero frames marked False in `<name>_mask`. Each
    frame's header (a GIF's canvas) is read before decoding and a frame of
    more than `max_pixels` pixels is refused; a GIF's frames are counted
    from its blocks first and one of more than `max_clip_pixels` decoded
    pixels in all is refused before `tf.io.decode_gif` runs.

    Each frame then goes through the preset's image converter exactly as
    `ImagePresetPreprocessor` does (its helpers, the same ops): in `parse`
    the converter's one resize from the decoded uint8 pixels (a centred
    crop to the target aspect ratio, or symmetric padding to it, or a
    stretch, then `tf.image.resize` with the converter's `interpolation`
    and `antialias`), in `transform` `x * scale + offset`. A frame's values
    equal `ImagePresetPreprocessor`'s on that frame alone (bitwise); the
    frames of one GIF share its canvas, so one crop box serves them all.
    Padded frames are all zeros after `transform` (not `offset`), and a clip
    without frames gives `<name>_present = 0` and an all-False mask.

    The graph is core TensorFlow only (no keras-hub code, no tables):
    `resources()` is empty, and `tf.data` and the exported SavedModel run
    the same ops. No training augmentation.

    Serving signature: `[B, T_raw]` strings for frames (pad with empty
    strings), `[B]` for GIF.

    Args:
        name: model input name.
        preset: a keras-hub preset name, `kaggle://` / `hf://` handle or
            local preset folder with an image converter (the same preset as
            the `VideoPresetTower`). Read once, in the constructor;
            `get_config()` records the converter's settings (`converter`),
            so that a saved pipeline rebuilds without it.
        num_frames: T, frames per clip (as `VideoPreprocessor`).
        source: `"frames"` or `"gif"`.
        image_size: None (the converter's) or `(height, width)` overriding
            it (a ResNet preset takes any size; ViT / CLIP / SigLIP need
            their own).
        crop_to_aspect_ratio: None (the converter's) or a bool overriding
            it.
        converter: None (read from `preset`) or the settings dict, as
            `get_config()` records it (see `ImagePresetPreprocessor`).
        channels: 3 (RGB; grey frames repeated, alpha dropped) or 1.
        max_pixels: the largest height x width of one frame.
        max_clip_pixels: `source="gif"`: the largest frames x height x
            width of a whole GIF.

    Outputs: `<name>` float32 `[B, T, H, W, channels]`, `<name>_mask` bool
    `[B, T]` (False = padded frame), `<name>_present` float32 `[B]`.

    Example:

    >>> pre = VideoPresetPreprocessor(
    ...     "clip", preset="/models/vit_base_patch16_224", num_frames=8,
    ...     source="gif")                                 # doctest: +SKIP
    >>> out = pre(tf.constant([gif_bytes]))              # doctest: +SKIP
    >>> out["clip"].shape, out["clip_mask"].shape        # doctest: +SKIP
    (TensorShape([1, 8, 224, 224, 3]), TensorShape([1, 8]))
    """

    modality = "video"
    registered_name = "video_preset"

    def __init__(self, name, preset=None, num_frames=8, source="frames",
                 image_size=None, crop_to_aspect_ratio=None, converter=None,
                 channels=3, max_pixels=DEFAULT_MAX_PIXELS,
                 max_clip_pixels=DEFAULT_MAX_CLIP_PIXELS):
        Preprocessor.__init__(self, name)
        owner = f"VideoPresetPreprocessor({name!r})"
        channels = check_choice(owner, "channels", channels, (1, 3))
        num_frames = check_positive_int(owner, "num_frames", num_frames)
        source = check_choice(owner, "source", source, ("frames", "gif"))
        max_pixels = check_positive_int(owner, "max_pixels", max_pixels)
        max_clip_pixels = check_positive_int(owner, "max_clip_pixels",
                                             max_clip_pixels)
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
        self.converter = ImagePresetPreprocessor._check_converter(
            owner, converter, channels)
        source_name = f"preset {preset!r}" if preset is not None else \
            "converter="
        settings = self.settings()
        check_settings(owner, settings, source_name)
        # The converter does the scaling: VideoPreprocessor's own scale,
        # mean and std stay neutral (scale 1, none).
        super().__init__(name, num_frames=num_frames,
                         size=settings["image_size"], channels=channels,
                         source=source, scale=1.0, max_pixels=max_pixels,
                         max_clip_pixels=max_clip_pixels)

    def settings(self):
        """The converter settings in effect (the overrides applied)."""
        return effective_settings(self.converter, self.image_size,
                                  self.crop_to_aspect_ratio)

    def get_config(self):
        config = Preprocessor.get_config(self)
        config.update(preset=self.preset, num_frames=self.num_frames,
                      source=self.source, image_size=self.image_size,
                      crop_to_aspect_ratio=self.crop_to_aspect_ratio,
                      converter=copy.deepcopy(self.converter),
                      channels=self.channels, max_pixels=self.max_pixels,
                      max_clip_pixels=self.max_clip_pixels)
        return config

    def __repr__(self):
        return (f"VideoPresetPreprocessor(name={self.name!r}, "
                f"preset={self.preset!r}, num_frames={self.num_frames}, "
                f"size={tuple(self.size)})")

    # -- graph code ----------------------------------------------------------

    def _resize_frames(self, frames):
        """uint8 `[..., H, W, c]` -> float32 `[..., *size, channels]`: the
        converter's crop / pad and resize, then the channel conversion."""
        resized = converter_resize(frames, self.size, self.settings())
        return _to_channels(resized, self.channels)

    def _decode_frame(self, contents):
        shape = self._frame_shape

        def decode():
            image = decode_image_uint8(contents, self.max_pixels,
                                       f"input `{self.name}` (a frame)")
            image = select_channels(image, self.channels)
            return tf.ensure_shape(self._resize_frames(image), shape)

        return tf.cond(tf.strings.length(contents) > 0, decode,
                       lambda: tf.zeros(shape, tf.float32))

    def _parse_gif(self, raw):
        # VideoPreprocessor's bounded GIF decode, the converter's resize.
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
            clip = self._resize_frames(select_channels(clip, self.channels))
            clip = clip * tf.cast(mask, tf.float32)[:, None, None, None]
            return tf.ensure_shape(clip, clip_shape), mask

        def empty():
            return (tf.zeros(clip_shape, tf.float32),
                    tf.zeros([self.num_frames], tf.bool))

        clip, mask = tf.cond(present, decode, empty)
        return clip, mask, present

    def transform(self, parsed, training=False, seed=None):
        del training, seed  # no augmentation
        clip = rescale(parsed[self.name], self.settings())
        mask = tf.cast(parsed[self._key("_mask")], tf.bool)
        present = tf.cast(parsed[self._key("_present")], tf.float32)
        clip = clip * tf.cast(mask, tf.float32)[:, :, None, None, None]
        return {self.name: clip, self._key("_mask"): mask,
                self._key("_present"): present}

    def resources(self):
        """None: the graph holds no tables (the converter is not in it)."""
        return []


__all__ = ["VideoPresetPreprocessor"]
