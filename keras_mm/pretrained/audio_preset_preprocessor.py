"""Audio preprocessor following a keras-hub preset's audio converter."""

import copy

import tensorflow as tf

from keras_mm.data.audio_preprocessor import AudioPreprocessor
from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import check_choice, check_positive_int
from keras_mm.pretrained.preset_loading import from_preset, keras_hub
from keras_mm.registry import PREPROCESSORS

#: The keras-hub audio converters this preprocessor supports (registered
#: names): log-mel spectrogram ones, `[batch, frames, mel bins]`.
CONVERTERS = ("keras_hub>WhisperAudioConverter",)


def _serialized(converter):
    """`converter` (a layer or its serialized dict) as a serialized dict,
    float32 (the features are float32 whatever the global policy)."""
    import keras

    if not isinstance(converter, dict):
        converter = keras.saving.serialize_keras_object(converter)
    converter = copy.deepcopy(converter)
    converter.setdefault("config", {})["dtype"] = "float32"
    return converter


@PREPROCESSORS.register("audio_preset")
class AudioPresetPreprocessor(AudioPreprocessor):
    """WAV bytes -> the log-mel features of a keras-hub preset's converter.

    Decoding is `AudioPreprocessor`'s, unchanged (the same bounded in-graph
    WAV reader: 16-bit PCM, plain or WAVE_FORMAT_EXTENSIBLE, any chunks
    before the data chunk; several channels averaged to mono; only the kept
    window is decoded; `parse_batch` decodes a batch of canonical files at
    once, bitwise equal to `parse`). The window is the converter's:
    `duration` seconds (default: the converter's `max_audio_length`, 30 s
    for Whisper), cut from the start (`crop="start"`, as keras-hub's
    converter trims) and zero-padded at the end.

    Resampling is NOT done: the WAV file's rate must be the converter's
    `sampling_rate` (16 kHz for Whisper); another rate is a bad record, an
    `InvalidArgumentError` whose message names both rates (the pipeline's
    validation pass reports it as `sample_rate`, naming the file).

    `transform` runs the preset's converter itself
    (`keras_hub.layers.WhisperAudioConverter`: reflect-padded STFT,
    Slaney mel filters, log10, dynamic range clamp at max - 8, `(x + 4) /
    4`) on the batch of windows, on its TensorFlow path (core
    `tf.signal` / `tf.math` ops, no `py_function`, no resource), so that
    `tf.data` and the exported serving function run the same ops (equal
    to a float32 rounding: 1e-7 measured). An eager call goes through a
    `tf.function` of it too (keras-hub's own eager path is NumPy and
    differs from its TensorFlow one by ~5e-7).
    `resources()` returns the converter (built) for the exporter to track.

    Window length: Whisper's encoder has a position table of
    `max_encoder_sequence_length // 2` = 1500 rows (30 s) for the real
    presets. keras-hub's `PositionEmbedding` slices the table to the input
    length, so a shorter `duration` (whole seconds: the converter's
    `max_audio_length` is an int) runs through the encoder: 100 feature
    frames (50 encoder positions) a second. The pretrained Whisper weights
    saw only 30-s windows (OpenAI's encoder asserts that length), so a
    shorter window changes what the encoder computes for the same clip;
    use it for speed or for a model fine-tuned that way. A longer window
    than the converter's is refused (it would overrun the position table).

    Empty bytes and a WAV file without samples give all-zero features and
    `<name>_present = 0` (absent). No training augmentation.

    Args:
        name: model input name.
        preset: a keras-hub preset name, `kaggle://` / `hf://` handle or
            local preset folder with an audio converter (read once, in the
            constructor; `get_config()` records the converter's config, so
            that a saved pipeline rebuilds without the preset).
        duration: None (the converter's `max_audio_length`) or whole
            seconds, at most the converter's.
        sample_rate: None, or the converter's `sampling_rate` (another
            value is refused: keras_mm does not resample). Recorded by
            `get_config()` for the exporter's limits.
        crop: `"start"` (the converter's cut, default) or `"center"` for
            clips longer than the window.
        converter: None (read from `preset`) or the converter's serialized
            config (`keras.saving.serialize_keras_object`), as
            `get_config()` records it.

    Outputs: `<name>` float32 `[B, frames, mel_bins]` (frames = samples //
    the converter's `stride`: 3000 x 80 for a 30-s Whisper window),
    `<name>_present` float32 `[B]`.

    Example:

    >>> pre = AudioPresetPreprocessor(
    ...     "speech", preset="/models/whisper_tiny_en")  # doctest: +SKIP
    >>> pre(tf.constant([wav_bytes]))["speech"].shape    # doctest: +SKIP
    TensorShape([1, 3000, 80])
    """

    modality = "audio"
    registered_name = "audio_preset"

    def __init__(self, name, preset=None, duration=None, sample_rate=None,
                 crop="start", converter=None):
        Preprocessor.__init__(self, name)
        owner = f"AudioPresetPreprocessor({name!r})"
        self.preset = preset
        if converter is None:
            if preset is None:
                raise ValueError(
                    f"{owner}: give preset= (a keras-hub preset name or "
                    "local preset folder with an audio converter) or "
                    "converter= (its serialized config); got neither")
            layer = from_preset(
                keras_hub().layers.AudioConverter.from_preset, preset,
                "audio converter", owner)
            converter = _serialized(layer)
        if not isinstance(converter, dict) or \
                converter.get("registered_name") not in CONVERTERS:
            kind = converter.get("registered_name") if isinstance(
                converter, dict) else type(converter).__name__
            raise ValueError(
                f"{owner}: the audio converter of {self._source()} is "
                f"{kind!r}; supported: {list(CONVERTERS)} (log-mel "
                "features for a Whisper-style encoder)")
        self.converter = _serialized(converter)
        settings = self.converter["config"]
        window = int(settings.get("max_audio_length", 30))
        rate = int(settings.get("sampling_rate", 16000))
        if duration is not None:
            duration = check_positive_int(owner, "duration", duration)
            if duration > window:
                raise ValueError(
                    f"{owner}: duration={duration} s is longer than the "
                    f"converter's window of {window} s ({self._source()}); "
                    "the encoder's position table covers that window only: "
                    f"use 1..{window}, or None for {window}")
        if sample_rate is not None:
            sample_rate = check_positive_int(owner, "sample_rate",
                                             sample_rate)
            if sample_rate != rate:
                raise ValueError(
                    f"{owner}: sample_rate={sample_rate} Hz differs from the "
                    f"converter's sampling_rate {rate} Hz ({self._source()}); "
                    "keras_mm does not resample: resample the WAV files to "
                    f"{rate} Hz and leave sample_rate unset (or {rate})")
        self.window_seconds = duration if duration is not None else window
        crop = check_choice(owner, "crop", crop, ("start", "center"))
        AudioPreprocessor.__init__(
            self, name, sample_rate=rate, duration=self.window_seconds,
            crop=crop, random_crop=False, features="waveform")
        # The converter's own window is `window_seconds`, so that it pads /
        # cuts nothing (parse already gives exactly `num_samples`).
        layer_config = copy.deepcopy(self.converter)
        layer_config["config"]["max_audio_length"] = self.window_seconds
        import keras
        self.audio_converter = keras.saving.deserialize_keras_object(
            layer_config)
        self.num_mel_bins = int(self.audio_converter.num_mels)
        self._eager_features = None

    def _source(self):
        return f"preset {self.preset!r}" if self.preset is not None \
            else "converter="

    @property
    def num_frames(self):
        """Feature frames of one window (the converter's STFT frames, its
        last one dropped, as keras-hub does)."""
        fft = int(self.audio_converter.num_fft_bins)
        stride = int(self.audio_converter.stride)
        padded = self.num_samples + 2 * (fft // 2)
        return (padded - fft) // stride

    def get_config(self):
        config = Preprocessor.get_config(self)
        config.update(preset=self.preset, duration=self.window_seconds,
                      sample_rate=self.sample_rate, crop=self.crop,
                      converter=copy.deepcopy(self.converter))
        return config

    def __repr__(self):
        return (f"AudioPresetPreprocessor(name={self.name!r}, "
                f"preset={self.preset!r}, duration={self.window_seconds}, "
                f"sample_rate={self.sample_rate})")

    def output_signature(self):
        return {self.name: tf.TensorSpec(
                    [None, self.num_frames, self.num_mel_bins], tf.float32),
                self._key("_present"): tf.TensorSpec([None], tf.float32)}

    # -- graph code ----------------------------------------------------------
    #
    # `AudioPreprocessor`'s graph code and the converter's hold no
    # tensor-dependent Python control flow (explicit tf.cond / while_loop),
    # so AutoGraph is kept out of it: converting the WAV reader and Keras's
    # layer call cost several seconds per trace in a tf.data map.

    @tf.autograph.experimental.do_not_convert
    def parse(self, raw, training=False, seed=None):
        return AudioPreprocessor.parse(self, raw, training=training,
                                       seed=seed)

    @tf.autograph.experimental.do_not_convert
    def parse_batch(self, raw_batch, training=False, seeds=None):
        return AudioPreprocessor.parse_batch(self, raw_batch,
                                             training=training, seeds=seeds)

    @tf.autograph.experimental.do_not_convert
    def converter_features(self, wave):
        """The converter's log-mel features of float32 `[B, samples]`
        windows (its TensorFlow path, also when called eagerly)."""
        wave = tf.convert_to_tensor(wave, tf.float32)
        if tf.executing_eagerly():
            if self._eager_features is None:
                self._eager_features = tf.function(
                    self.audio_converter, reduce_retracing=True)
            out = self._eager_features(wave)
        else:
            out = self.audio_converter(wave)
        out = tf.convert_to_tensor(out)
        return tf.ensure_shape(tf.cast(out, tf.float32),
                               [None, self.num_frames, self.num_mel_bins])

    def compute_features(self, wave, present):
        """The features of `[B, samples]` windows; an absent clip (`present`
        0) gives zeros."""
        out = self.converter_features(wave)
        return out * tf.reshape(tf.cast(present, tf.float32), [-1, 1, 1])

    @tf.autograph.experimental.do_not_convert
    def transform(self, parsed, training=False, seed=None):
        """The converter's features of the parsed windows (no augmentation:
        `training` and `seed` change nothing)."""
        del training, seed
        wave = tf.cast(parsed[self.name], tf.float32)
        present = tf.cast(parsed[self._key("_present")], tf.float32)
        return {self.name: self.compute_features(wave, present),
                self._key("_present"): present}

    def resources(self):
        """The keras-hub converter layer (built; it holds no variables),
        for `ExportArchive.track`."""
        return [self.audio_converter]
