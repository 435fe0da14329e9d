"""Audio preprocessor: WAV bytes -> fixed-length mono waveform or features."""

import tensorflow as tf

from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import check_choice
from keras_mm.ops import audio_features
from keras_mm.registry import PREPROCESSORS


def decode_wav_mono(contents, sample_rate):
    """Decodes 16-bit PCM WAV bytes to a mono float32 `[N]` waveform.

    Samples are `int16 / 32768` (tf.audio.decode_wav); several channels are
    averaged. The file's sample rate must equal `sample_rate`: a different
    rate is rejected, not resampled, with an `InvalidArgumentError` whose
    message names both rates (the pipeline adds the file name). Non-PCM,
    non-16-bit or truncated files raise `InvalidArgumentError` too (from
    `tf.audio.decode_wav`: "Can only read 16-bit WAV files", "Data too
    short...").
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    audio, rate = tf.audio.decode_wav(contents)
    check = tf.debugging.Assert(
        tf.equal(rate, sample_rate),
        ["WAV sample rate", rate, "Hz differs from the configured "
         "sample_rate", tf.constant(sample_rate, tf.int32),
         "Hz: resample the file or change sample_rate"])
    with tf.control_dependencies([check]):
        mono = tf.reduce_mean(audio, axis=-1)
    return mono


def crop_offset(n, length, mode, training, random_crop, seed=None):
    """Start of the `length` window cropped out of `n` samples (int32).

    `n` may be a vector (one offset per example) unless the crop is random.
    """
    excess = tf.maximum(n - length, 0)
    if training and random_crop and seed is not None:
        return tf.random.stateless_uniform(
            [], seed=seed, minval=0, maxval=excess + 1, dtype=tf.int32)
    if training and random_crop:
        return tf.random.uniform([], 0, excess + 1, dtype=tf.int32)
    if mode == "center":
        return excess // 2
    return tf.zeros_like(excess)


# The 44-byte header of a canonical PCM WAV file (what Python's `wave`,
# SoundFile and most recorders write) as 11 little-endian int32 words; None
# marks the words that depend on the file.
_WAV_HEADER_BYTES = 44
_WAV_WORDS = (b"RIFF", None, b"WAVE", b"fmt ", 16, None, None, None, None,
              b"data", None)


def _word(value):
    if isinstance(value, bytes):
        return int.from_bytes(value, "little", signed=True)
    return value


def canonical_wav(contents, sample_rate):
    """bool `[B]`: which WAV byte strings `decode_wav_batch` can decode.

    True for 16-bit PCM mono files at `sample_rate` whose header is the
    canonical 44 bytes (RIFF, `fmt ` of 16 bytes, then the `data` chunk,
    which ends the file, an even number of bytes long).
    """
    length = tf.strings.length(contents)
    words = tf.io.decode_raw(
        tf.strings.substr(contents, 0, _WAV_HEADER_BYTES), tf.int32,
        little_endian=True, fixed_length=_WAV_HEADER_BYTES)
    expected = list(_WAV_WORDS)
    expected[5] = 1 | (1 << 16)            # PCM, 1 channel
    expected[6] = int(sample_rate)
    expected[7] = 2 * int(sample_rate)     # bytes per second
    expected[8] = 2 | (16 << 16)           # bytes per frame, bits per sample
    ok = [tf.equal(words[:, i], _word(v))
          for i, v in enumerate(expected) if v is not None]
    data_bytes = words[:, 10]
    ok.append(tf.equal(data_bytes, length - _WAV_HEADER_BYTES))
    ok.append(tf.equal(data_bytes % 2, 0))
    return tf.reduce_all(tf.stack(ok, axis=1), axis=1)


def wav_sample_counts(contents):
    """int32 `[B]`: samples in each canonical WAV file (0 for empty bytes)."""
    length = tf.strings.length(contents)
    return tf.where(length > 0, (length - _WAV_HEADER_BYTES) // 2, 0)


def decode_wav_batch(contents, samples, length, offsets):
    """Canonical WAV files (see `canonical_wav`) -> float32 `[B, length]`.

    `samples`: `wav_sample_counts(contents)`. Example i's samples
    `offsets[i]:offsets[i] + length`, zero-padded at the end; `int16 / 32768`
    as `tf.audio.decode_wav`, so the values are equal bitwise. Empty strings
    (and clips without samples) give zeros.
    """
    start = tf.where(samples > 0, _WAV_HEADER_BYTES + 2 * offsets, 0)
    count = 2 * tf.minimum(length, samples - offsets)
    pcm = tf.io.decode_raw(tf.strings.substr(contents, start, count),
                           tf.int16, little_endian=True,
                           fixed_length=2 * length)
    return tf.cast(pcm, tf.float32) * (1.0 / 32768.0)


def crop_or_pad(signal, length, mode, training, random_crop, pad_value=0.0,
                seed=None):
    """Crops or pads `[N, ...]` along axis 0 to `length`.

    Crops a random window when `training and random_crop` (a stateless draw
    from `seed`, an int `[2]` tensor, when given), otherwise the `mode` one
    (`"start"` or `"center"`); pads at the end with `pad_value`.
    """
    offset = crop_offset(tf.shape(signal)[0], length, mode, training,
                         random_crop, seed)
    window = signal[offset:offset + length]
    pad = length - tf.shape(window)[0]
    paddings = tf.concat([[[0, pad]],
                          tf.zeros([tf.rank(signal) - 1, 2], tf.int32)], 0)
    window = tf.pad(window, paddings, constant_values=pad_value)
    return window


@PREPROCESSORS.register("audio")
class AudioPreprocessor(Preprocessor):
    """WAV bytes -> waveform `[B, N]` or log-mel / MFCC `[B, frames, bins]`.

    `parse` decodes 16-bit PCM WAV with `tf.audio.decode_wav` (samples are
    `int16 / 32768`), averages the channels to mono, checks the sample rate
    and crops/pads to `duration` seconds: a random window when `training`
    (and `random_crop`), else the `crop` one (`"center"` or `"start"`); short
    clips are padded with zeros at the end. `parse_batch` (the pipeline's
    and the serving function's path) decodes a batch of canonical WAV files
    (16-bit PCM mono, 44-byte header) at once, with the same values.
    `transform` computes `features`
    batched (the STFT after batching is much faster than per example) with
    `keras_mm.ops.audio_features`, the one implementation shared with the
    audio tower's front end: use `features="log_mel"` here OR
    `frontend="log_mel"` in the tower, never both.

    Sample rate policy: a file with another rate is REJECTED, not resampled:
    `tf.errors.InvalidArgumentError` naming both rates. Non-PCM (8/24/32-bit,
    float) and truncated WAV files also raise `InvalidArgumentError`; the
    pipeline's validation pass catches it and names the file. Empty bytes
    give zeros and `<name>_present = 0`.

    Args:
        name: model input name.
        sample_rate: required sample rate in Hz.
        duration: output length in seconds (`round(duration * sample_rate)`
            samples).
        crop: `"center"` or `"start"` (evaluation / serving crop).
        random_crop: random window in training.
        features: `"waveform"`, `"log_mel"` or `"mfcc"`.
        frame_length, frame_step, fft_length, num_mel_bins,
            lower_edge_hertz, upper_edge_hertz, log_offset: log-mel
            parameters (see `keras_mm.ops.audio_features`).
        num_mfcc: MFCCs kept with `features="mfcc"`.

    Outputs: `<name>` float32 `[B, samples]` or `[B, frames, bins]`,
    `<name>_present` float32 `[B]`.

    Example:

    >>> pre = AudioPreprocessor("audio", sample_rate=8000, duration=1.0,
    ...                         features="log_mel")
    >>> pre(tf.constant([wav_bytes]))["audio"].shape
    TensorShape([1, 61, 40])
    """

    modality = "audio"
    batched_parse = True

    def __init__(self, name, sample_rate=16000, duration=1.0, crop="center",
                 random_crop=True, features="waveform", frame_length=256,
                 frame_step=128, fft_length=None, num_mel_bins=40,
                 lower_edge_hertz=20.0, upper_edge_hertz=None,
                 log_offset=1e-6, num_mfcc=13):
        super().__init__(name)
        owner = f"AudioPreprocessor({name!r})"
        self.sample_rate = int(sample_rate)
        self.duration = float(duration)
        self.crop = check_choice(owner, "crop", crop, ("center", "start"))
        self.random_crop = bool(random_crop)
        self.features = check_choice(owner, "features", features,
                                     ("waveform", "log_mel", "mfcc"))
        self.frame_length = int(frame_length)
        self.frame_step = int(frame_step)
        self.fft_length = None if fft_length is None else int(fft_length)
        self.num_mel_bins = int(num_mel_bins)
        self.lower_edge_hertz = float(lower_edge_hertz)
        self.upper_edge_hertz = (None if upper_edge_hertz is None
                                 else float(upper_edge_hertz))
        self.log_offset = float(log_offset)
        self.num_mfcc = int(num_mfcc)
        self.num_samples = int(round(self.duration * self.sample_rate))
        if self.num_samples < 1:
            raise ValueError(f"{owner}: duration={duration} s at "
                             f"{sample_rate} Hz gives no samples")
        if self.features != "waveform" and self.num_frames < 1:
            raise ValueError(
                f"{owner}: {self.num_samples} samples are fewer than "
                f"frame_length={frame_length}; raise duration or lower "
                "frame_length")
        if self.features == "mfcc" and self.num_mfcc > self.num_mel_bins:
            raise ValueError(f"{owner}: num_mfcc={num_mfcc} must be <= "
                             f"num_mel_bins={num_mel_bins}")

    @property
    def num_frames(self):
        return audio_features.frame_count(self.num_samples, self.frame_length,
                                          self.frame_step)

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate, duration=self.duration,
                      crop=self.crop, random_crop=self.random_crop,
                      features=self.features, frame_length=self.frame_length,
                      frame_step=self.frame_step, fft_length=self.fft_length,
                      num_mel_bins=self.num_mel_bins,
                      lower_edge_hertz=self.lower_edge_hertz,
                      upper_edge_hertz=self.upper_edge_hertz,
                      log_offset=self.log_offset, num_mfcc=self.num_mfcc)
        return config

    def raw_signature(self):
        return {self.name: tf.TensorSpec([None], tf.string)}

    def parsed_signature(self):
        return {self.name: tf.TensorSpec([self.num_samples], tf.float32),
                self._key("_present"): tf.TensorSpec([], tf.float32)}

    def output_signature(self):
        if self.features == "waveform":
            shape = [None, self.num_samples]
        else:
            bins = (self.num_mel_bins if self.features == "log_mel"
                    else self.num_mfcc)
            shape = [None, self.num_frames, bins]
        return {self.name: tf.TensorSpec(shape, tf.float32),
                self._key("_present"): tf.TensorSpec([None], tf.float32)}

    def parse(self, raw, training=False, seed=None):
        raw = tf.reshape(tf.convert_to_tensor(self.select_raw(raw),
                                              tf.string), [])
        present = tf.strings.length(raw) > 0

        def decode():
            mono = decode_wav_mono(raw, self.sample_rate)
            wave = crop_or_pad(mono, self.num_samples, self.crop, training,
                               self.random_crop, seed=seed)
            return tf.ensure_shape(wave, [self.num_samples])

        wave = tf.cond(present, decode,
                       lambda: tf.zeros([self.num_samples], tf.float32))
        return {self.name: wave,
                self._key("_present"): tf.cast(present, tf.float32)}

    def parse_batch(self, raw_batch, training=False, seeds=None):
        """`parse` for a whole batch, equal to it bitwise.

        When every WAV file of the batch is canonical (`canonical_wav`:
        16-bit PCM mono at `sample_rate`, the usual 44-byte header), the
        batch is decoded at once (`decode_wav_batch`: `tf.io.decode_raw` on
        the cropped data chunks), several times cheaper than one
        `tf.audio.decode_wav` per file. Any other batch goes through `parse`
        per example: other header layouts, several channels, and every
        error (rate, format, truncation) come from there.
        """
        raw = tf.reshape(tf.convert_to_tensor(self.select_raw(raw_batch),
                                              tf.string), [-1])
        if training and self.random_crop and seeds is None:
            return super().parse_batch(raw, training, seeds)
        empty = tf.equal(tf.strings.length(raw), 0)

        def batched():
            samples = wav_sample_counts(raw)
            if training and self.random_crop:
                offsets = tf.map_fn(
                    lambda item: crop_offset(item[0], self.num_samples,
                                             self.crop, True, True, item[1]),
                    (samples, seeds), fn_output_signature=tf.int32)
            else:
                offsets = crop_offset(samples, self.num_samples, self.crop,
                                      training, self.random_crop)
            wave = decode_wav_batch(raw, samples, self.num_samples, offsets)
            return {self.name: wave,
                    self._key("_present"): 1.0 - tf.cast(empty, tf.float32)}

        canonical = canonical_wav(raw, self.sample_rate) | empty
        return tf.cond(tf.reduce_all(canonical), batched,
                       lambda: super(AudioPreprocessor, self).parse_batch(
                           raw, training, seeds))

    def transform(self, parsed, training=False, seed=None):
        del training, seed
        wave = tf.cast(parsed[self.name], tf.float32)
        present = tf.cast(parsed[self._key("_present")], tf.float32)
        if self.features == "waveform":
            out = wave
        else:
            out = audio_features.log_mel_spectrogram(
                wave, sample_rate=self.sample_rate,
                frame_length=self.frame_length, frame_step=self.frame_step,
                fft_length=self.fft_length, num_mel_bins=self.num_mel_bins,
                lower_edge_hertz=self.lower_edge_hertz,
                upper_edge_hertz=self.upper_edge_hertz,
                log_offset=self.log_offset)
            if self.features == "mfcc":
                out = audio_features.mfcc(out, num_mfcc=self.num_mfcc)
        # An absent clip gives zeros, not log(offset).
        out = out * tf.reshape(present, [-1] + [1] * (len(out.shape) - 1))
        return {self.name: out, self._key("_present"): present}
