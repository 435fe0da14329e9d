"""Audio preprocessor: WAV bytes -> fixed-length mono waveform or features."""

import tensorflow as tf

from keras_mm.data.audio_augmentation import AudioAugmentation
from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import check_choice
from keras_mm.ops import audio_features
from keras_mm.registry import PREPROCESSORS


# The parts of a WAV file that `wav_layout` reads: RIFF chunks are walked
# up to the `data` chunk (what follows it, e.g. a trailing pad byte or a
# LIST chunk, is ignored, as Python's `wave` does), at most this many.
MAX_WAV_CHUNKS = 64
_FORMAT_PCM = 1
_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM, the sub-format GUID of WAVE_FORMAT_EXTENSIBLE
# PCM files, as stored (little-endian fields).
_PCM_SUBFORMAT = (b"\x01\x00\x00\x00\x00\x00\x10\x00"
                  b"\x80\x00\x00\xaa\x00\x38\x9b\x71")


def _uint_at(contents, length, pos, size):
    """Little-endian unsigned `size`-byte integer at `pos` (int64); bytes
    past the end read as 0, so that it never fails."""
    pos = tf.clip_by_value(tf.cast(pos, tf.int64), 0, length)
    raw = tf.io.decode_raw(tf.strings.substr(contents, pos, size), tf.uint8,
                           fixed_length=size)
    weights = tf.constant([256 ** i for i in range(size)], tf.int64)
    return tf.reduce_sum(tf.cast(raw, tf.int64) * weights)


def _bytes_equal(contents, length, pos, expected):
    pos = tf.clip_by_value(tf.cast(pos, tf.int64), 0, length)
    return tf.equal(tf.strings.substr(contents, pos, len(expected)),
                    expected)


def checked_in_order(checks, tensors):
    """`tensors` once each `(ok, message...)` of `checks` has held, in
    order: the first failing check raises `InvalidArgumentError` with its
    message (`tf.debugging.Assert` data). Give only safe text and numbers
    (never bytes of the input), so that the error prints from any client.
    """
    for ok, *message in checks:
        with tf.control_dependencies(tensors):
            assertion = tf.debugging.Assert(ok, message)
        with tf.control_dependencies([assertion]):
            tensors = [tf.identity(t) for t in tensors]
    return tensors


def wav_layout(contents, sample_rate, name="audio"):
    """Reads and checks the header of ONE WAV file, in-graph.

    Accepts 16-bit PCM WAV files (format tag 1, or WAVE_FORMAT_EXTENSIBLE
    with the PCM sub-format), any number of channels, whatever chunks come
    between `fmt ` and `data` (up to `MAX_WAV_CHUNKS`) and anything after
    the data chunk. Refuses, with an `InvalidArgumentError` whose message
    names the input `name`, the format and the reason (and never holds
    bytes of the file): a file that is not RIFF/WAVE, a truncated header
    or data chunk, other sample formats, and a sample rate other than
    `sample_rate` (the message names both rates).

    Returns:
        `(data_start, frames, channels)` int64 scalars: the byte offset of
        the samples, the number of sample frames and of channels.
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    length = tf.cast(tf.strings.length(contents), tf.int64)
    owner = f"input {name}: the WAV file"
    fix = (f"; send 16-bit PCM WAV bytes (RIFF/WAVE) at {int(sample_rate)} "
           "Hz")
    is_riff = ((length >= 12) & _bytes_equal(contents, length, 0, b"RIFF")
               & _bytes_equal(contents, length, 8, b"WAVE"))

    def body(i, pos, fmt_pos, fmt_size, data_pos, data_size):
        size = _uint_at(contents, length, pos + 4, 4)
        is_fmt = _bytes_equal(contents, length, pos, b"fmt ") & (fmt_pos < 0)
        is_data = _bytes_equal(contents, length, pos, b"data")
        return (i + 1, pos + 8 + size + size % 2,
                tf.where(is_fmt, pos + 8, fmt_pos),
                tf.where(is_fmt, size, fmt_size),
                tf.where(is_data, pos + 8, data_pos),
                tf.where(is_data, size, data_size))

    minus_one = tf.constant(-1, tf.int64)
    _, _, fmt_pos, fmt_size, data_pos, data_size = tf.while_loop(
        lambda i, pos, fmt_pos, fmt_size, data_pos, data_size: (
            is_riff & (i < MAX_WAV_CHUNKS) & (data_pos < 0)
            & (pos + 8 <= length)),
        body, (tf.constant(0), tf.constant(12, tf.int64), minus_one,
               minus_one, minus_one, minus_one))
    tag = _uint_at(contents, length, fmt_pos, 2)
    channels = _uint_at(contents, length, fmt_pos + 2, 2)
    rate = _uint_at(contents, length, fmt_pos + 4, 4)
    block_align = _uint_at(contents, length, fmt_pos + 12, 2)
    bits = _uint_at(contents, length, fmt_pos + 14, 2)
    extensible_pcm = ((tag == _FORMAT_EXTENSIBLE) & (fmt_size >= 40)
                      & _bytes_equal(contents, length, fmt_pos + 24,
                                     _PCM_SUBFORMAT))
    has_fmt = (fmt_pos >= 0) & ((data_pos < 0) | (fmt_pos < data_pos))
    checks = [
        (is_riff, f"{owner} does not start with a RIFF/WAVE header (not a "
                  f"WAV file){fix}"),
        (has_fmt, f"{owner} has no fmt chunk before its data chunk "
                  f"(within its first {MAX_WAV_CHUNKS} chunks){fix}"),
        ((fmt_size >= 16) & (fmt_pos + fmt_size <= length),
         f"{owner} is too short: its fmt chunk is truncated{fix}"),
        ((tag == _FORMAT_PCM) | extensible_pcm,
         f"{owner} is not PCM (format tag", tag, "): only 16-bit PCM is "
         f"read{fix}"),
        (bits == 16, f"{owner} has", bits, "bits per sample: only 16-bit "
                     f"PCM is read{fix}"),
        ((channels >= 1) & (block_align == 2 * channels),
         f"{owner} has an inconsistent fmt chunk (channels", channels,
         ", block align", block_align, f"){fix}"),
        (data_pos >= 0, f"{owner} has no data chunk (within its first "
                        f"{MAX_WAV_CHUNKS} chunks){fix}"),
        (data_pos + data_size <= length,
         f"{owner} is too short: its data chunk declares", data_size,
         "bytes, the file holds", tf.maximum(length - data_pos, 0),
         f"(truncated file?){fix}"),
        (data_size % tf.maximum(block_align, 1) == 0,
         f"{owner} ends in a partial sample frame: its data chunk holds",
         data_size, "bytes, not a multiple of", block_align,
         f"(truncated file?){fix}"),
        (tf.equal(rate, int(sample_rate)),
         "WAV sample rate", rate, "Hz differs from the configured "
         f"sample_rate {int(sample_rate)} Hz ({owner}): resample the file "
         "or change sample_rate"),
    ]
    data_pos, frames, channels = checked_in_order(
        checks, [data_pos, data_size // tf.maximum(block_align, 1),
                 channels])
    return data_pos, frames, channels


def read_wav_frames(contents, data_start, frames, channels, offset, count):
    """Mono float32 `[count']` of sample frames `offset:offset + count`
    (`count' <= count`: as many of the `frames` as there are) of a WAV file
    checked by `wav_layout`: `int16 / 32768` as `tf.audio.decode_wav`,
    averaged over the channels. Only that window is decoded."""
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    frame_bytes = 2 * channels
    offset = tf.cast(offset, tf.int64)
    count = tf.clip_by_value(tf.cast(frames, tf.int64) - offset, 0,
                             tf.cast(count, tf.int64))
    start = data_start + offset * frame_bytes
    size = count * frame_bytes
    pcm = tf.io.decode_raw(tf.strings.substr(contents, start, size),
                           tf.int16, little_endian=True)
    pcm = tf.reshape(pcm, tf.stack([-1, tf.cast(channels, tf.int32)]))
    samples = tf.cast(pcm, tf.float32) * (1.0 / 32768.0)
    return tf.reduce_mean(samples, axis=-1)


def decode_wav_mono(contents, sample_rate, name="audio"):
    """Decodes 16-bit PCM WAV bytes to a mono float32 `[N]` waveform.

    Samples are `int16 / 32768` (as `tf.audio.decode_wav`); several channels
    are averaged. The file is read by `wav_layout`: plain and
    WAVE_FORMAT_EXTENSIBLE PCM, extra chunks, trailing bytes after the data
    chunk. The file's sample rate must equal `sample_rate`: a different rate
    is rejected, not resampled, with an `InvalidArgumentError` whose message
    names both rates (the pipeline adds the file name). Non-PCM,
    non-16-bit, truncated or non-WAV bytes raise `InvalidArgumentError`
    too, naming the input `name` and the reason.
    """
    data_start, frames, channels = wav_layout(contents, sample_rate, name)
    return read_wav_frames(contents, data_start, frames, channels, 0,
                           frames)


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

    `parse` reads 16-bit PCM WAV in-graph (`wav_layout`: plain or
    WAVE_FORMAT_EXTENSIBLE PCM, any chunks before the data chunk, anything
    after it; samples are `int16 / 32768`, as `tf.audio.decode_wav`),
    decodes only the window it keeps, averages the channels to mono,
    checks the sample rate and crops/pads to `duration` seconds: a random
    window when `training` (and `random_crop`), else the `crop` one
    (`"center"` or `"start"`); short clips are padded with zeros at the
    end. `parse_batch` (the pipeline's
    and the serving function's path) decodes a batch of canonical WAV files
    (16-bit PCM mono, 44-byte header) at once, with the same values.
    `transform` computes `features`
    batched (the STFT after batching is much faster than per example) with
    `keras_mm.ops.audio_features`, the one implementation shared with the
    audio tower's front end: use `features="log_mel"` here OR
    `frontend="log_mel"` in the tower, never both.

    Sample rate policy: a file with another rate is REJECTED, not resampled:
    `tf.errors.InvalidArgumentError` naming both rates. Non-PCM (8/24/32-bit,
    float), truncated and non-WAV bytes also raise `InvalidArgumentError`,
    whose message names the input, the format and the reason and holds no
    byte of the file (it prints from any client); the pipeline's
    validation pass catches it and names the file. Empty bytes and a WAV
    file without samples give zeros and `<name>_present = 0` (absent).

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
        time_shift, gain_db, noise_snr: waveform augmentation in training
            (`keras_mm.data.audio_augmentation.AudioAugmentation`): shift
            by up to `time_shift` x the window (a clip shorter than the
            window is placed anywhere in it), gain uniform in
            `[-gain_db, gain_db]` dB, white noise at an SNR uniform in
            `noise_snr = [low, high]` dB. 0 / None: off. All off by
            default: in `benchmarks/audio_heldout_speaker.py` (FSDD, a
            held-out speaker, ~10 epochs; see BENCHMARKS.md) no setting
            raised held-out-speaker accuracy (shift + gain within noise,
            noise and masks lower); try them for longer runs or noisier
            data.
        time_masks, time_mask_width, freq_masks, freq_mask_width:
            SpecAugment masks on the features in training (log_mel / mfcc
            only): that many bands of up to that many frames / bins, set to
            the frame's mean over the bins.

    Augmentation happens only in `transform(..., training=True)`, after the
    deterministic part (`parse`: decode, crop/pad), as stateless functions
    of the batch seed; evaluation and serving (`training=False`) are
    untouched by it.

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
                 log_offset=1e-6, num_mfcc=13, time_shift=0.0, gain_db=0.0,
                 noise_snr=None, time_masks=0, time_mask_width=0,
                 freq_masks=0, freq_mask_width=0):
        super().__init__(name)
        owner = f"AudioPreprocessor({name!r})"
        self.augmentation = AudioAugmentation(
            time_shift=time_shift, gain_db=gain_db, noise_snr=noise_snr,
            time_masks=time_masks, time_mask_width=time_mask_width,
            freq_masks=freq_masks, freq_mask_width=freq_mask_width,
            owner=owner)
        for key, value in self.augmentation.get_config().items():
            setattr(self, key, value)
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
        if self.features == "waveform" and self.augmentation.changes_features:
            raise ValueError(
                f"{owner}: time_masks/freq_masks mask features, but "
                "features='waveform' (the tower's front end computes them, "
                "out of the preprocessor's reach); set features='log_mel' "
                "or 'mfcc' (and the tower's frontend: null), or "
                "time_masks=0 and freq_masks=0")
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
                      log_offset=self.log_offset, num_mfcc=self.num_mfcc,
                      **self.augmentation.get_config())
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

        def decode():
            data_start, frames, channels = wav_layout(
                raw, self.sample_rate, self.name)
            frames = tf.cast(frames, tf.int32)
            # Only the cropped window is decoded.
            offset = crop_offset(frames, self.num_samples, self.crop,
                                 training, self.random_crop, seed)
            mono = read_wav_frames(raw, data_start, frames, channels,
                                   offset, self.num_samples)
            wave = tf.pad(mono, [[0, self.num_samples - tf.size(mono)]])
            return tf.ensure_shape(wave, [self.num_samples]), frames > 0

        # Empty bytes and a WAV file without samples: absent.
        wave, present = tf.cond(
            tf.strings.length(raw) > 0, decode,
            lambda: (tf.zeros([self.num_samples], tf.float32),
                     tf.constant(False)))
        return {self.name: wave,
                self._key("_present"): tf.cast(present, tf.float32)}

    def parse_batch(self, raw_batch, training=False, seeds=None):
        """`parse` for a whole batch, equal to it bitwise.

        When every WAV file of the batch is canonical (`canonical_wav`:
        16-bit PCM mono at `sample_rate`, the usual 44-byte header), the
        batch is decoded at once (`decode_wav_batch`: `tf.io.decode_raw` on
        the cropped data chunks), several times cheaper than `parse`
        per file. Any other batch goes through `parse`
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
                    self._key("_present"): tf.cast(samples > 0, tf.float32)}

        canonical = canonical_wav(raw, self.sample_rate) | empty
        return tf.cond(tf.reduce_all(canonical), batched,
                       lambda: super(AudioPreprocessor, self).parse_batch(
                           raw, training, seeds))

    def transform(self, parsed, training=False, seed=None):
        """Features of the parsed waveforms; with `training`, augmented.

        `training=True` runs `augment_waveform` (shift, gain, noise) on the
        parsed window, then the features, then `augment_features` (masks);
        `training=False` (evaluation, serving) is `compute_features` of
        the parsed window, untouched. `seed`: the batch's int `[2]` seed
        (stateless draws); None draws from the global generator.
        """
        wave = tf.cast(parsed[self.name], tf.float32)
        present = tf.cast(parsed[self._key("_present")], tf.float32)
        if training:
            wave = self.augment_waveform(wave, seed)
        out = self.compute_features(wave, present)
        if training:
            out = self.augment_features(out, seed)
        return {self.name: out, self._key("_present"): present}

    def augment_waveform(self, wave, seed=None):
        """The seeded waveform augmentations (time shift, gain, noise) of a
        parsed `[B, samples]` batch (`AudioAugmentation`)."""
        return self.augmentation.augment_waveform(wave, seed)

    def augment_features(self, features, seed=None):
        """The seeded time / frequency masks of `compute_features`'s output
        (identity for `features="waveform"`)."""
        if self.features == "waveform":
            return features
        return self.augmentation.augment_features(features, seed)

    def compute_features(self, wave, present):
        """The deterministic features of `[B, samples]` waveforms; an
        absent clip (`present` 0) gives zeros, not log(offset)."""
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
        return out * tf.reshape(present, [-1] + [1] * (len(out.shape) - 1))
