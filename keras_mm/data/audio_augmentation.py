"""Seeded, stateless audio augmentation (training only).

`AudioAugmentation` holds the settings; the audio preprocessor applies it in
`transform(..., training=True)`, after the deterministic part (decode, crop
or pad in `parse`), in two separable steps:

1. `augment_waveform(wave, seed)` on the decoded `[B, N]` window: time
   shift (a short clip, padded at the end by `parse`, is placed anywhere in
   the window), gain, additive Gaussian noise at a drawn SNR;
2. the features (log-mel / MFCC) of the augmented waveform;
3. `augment_features(features, seed)`: SpecAugment-style time and
   frequency masks.

Every draw is a `tf.random.stateless_*` function of the batch `seed` (an
int `[2]` tensor, folded in once per kind of draw), so the same seed gives
the same batch bitwise and another seed (the pipeline's next pass) other
draws. `draw_waveform` / `draw_features` return the draws, and
`shift_waveform`, `apply_gain`, `add_noise`, `band_mask` apply given draws,
so that each step can be checked on its own.
"""

import tensorflow as tf

from keras_mm.layers.utils import (check_fraction, check_non_negative_float,
                                   check_non_negative_int)

# `stateless_fold_in` data of each kind of draw.
_SHIFT, _GAIN, _SNR, _NOISE = 0, 1, 2, 3
_TIME_WIDTH, _TIME_START, _FREQ_WIDTH, _FREQ_START = 4, 5, 6, 7


def _fold(seed, kind):
    return tf.random.experimental.stateless_fold_in(seed, kind)


def _uniform(shape, seed, kind, low=0.0, high=1.0):
    """Float32 uniform draws in [low, high): stateless when `seed` is set."""
    if seed is None:
        return tf.random.uniform(shape, low, high)
    return tf.random.stateless_uniform(shape, _fold(seed, kind), low, high)


def _uniform_int(shape, seed, kind, low, high):
    """Int32 draws in `[low, high]` (inclusive; `low`, `high` broadcast)."""
    u = _uniform(shape, seed, kind)
    low = tf.cast(low, tf.float32)
    span = tf.cast(high, tf.float32) - low + 1.0
    return tf.cast(tf.floor(low + u * span), tf.int32)


def content_length(wave):
    """int32 `[B]`: index of the last non-zero sample + 1 (0 if silent)."""
    nonzero = tf.cast(tf.not_equal(wave, 0.0), tf.int32)
    n = tf.shape(wave)[1]
    last = n - tf.cast(tf.argmax(tf.reverse(nonzero, [1]), axis=1), tf.int32)
    return tf.where(tf.reduce_any(nonzero > 0, axis=1), last, 0)


def shift_waveform(wave, shifts):
    """`out[b, t] = wave[b, t - shifts[b]]`, zero outside `[0, N)`."""
    n = tf.shape(wave)[1]
    source = tf.range(n)[None, :] - tf.cast(shifts, tf.int32)[:, None]
    inside = (source >= 0) & (source < n)
    moved = tf.gather(wave, tf.clip_by_value(source, 0, n - 1), batch_dims=1)
    return tf.where(inside, moved, tf.zeros_like(moved))


def apply_gain(wave, gain_db):
    """`wave * 10 ** (gain_db / 20)` per example (`gain_db` `[B]`)."""
    return wave * tf.pow(10.0, gain_db / 20.0)[:, None]


def content_span(wave):
    """bool `[B, N]`: True from each example's first to its last non-zero
    sample (the recorded clip; the zero padding around it is False)."""
    nonzero = tf.not_equal(wave, 0.0)
    seen = tf.cast(nonzero, tf.int32)
    after_first = tf.cumsum(seen, axis=1) > 0
    before_last = tf.cumsum(seen, axis=1, reverse=True) > 0
    return after_first & before_last


def add_noise(wave, snr_db, noise):
    """`wave + noise * sqrt(P / 10 ** (snr_db / 10))` on each example's
    recorded span (`content_span`; the zero padding stays silent, as in
    evaluation): `noise` standard normal `[B, N]`, P the mean power over
    the span (a silent example gets no noise)."""
    span = content_span(wave)
    inside = tf.cast(span, wave.dtype)
    count = tf.maximum(tf.reduce_sum(inside, axis=1), 1.0)
    power = tf.reduce_sum(tf.square(wave), axis=1) / count
    scale = tf.sqrt(power / tf.pow(10.0, snr_db / 10.0))
    return wave + noise * scale[:, None] * inside


def band_mask(size, starts, widths):
    """bool `[B, size]`: True inside any band `[starts, starts + widths)`
    (`starts`, `widths` int `[B, masks]`)."""
    index = tf.range(size)[None, None, :]
    inside = ((index >= starts[:, :, None])
              & (index < (starts + widths)[:, :, None]))
    return tf.reduce_any(inside, axis=1)


class AudioAugmentation:
    """Training-time audio augmentation: time shift, gain, noise, masks.

    Args:
        time_shift: 0 (off) or a fraction of the window: the clip's content
            (samples up to its last non-zero one) moves by a draw from
            `[-m, N - L + m]` samples, `m = round(time_shift * N)`, `L` the
            content length, zero-filled; so a clip shorter than the window
            lands anywhere in it, a full one moves by up to `m`.
        gain_db: 0 (off) or the largest gain in dB: each clip is scaled by
            `10 ** (g / 20)`, `g` uniform in `[-gain_db, gain_db]`.
        noise_snr: None (off) or `[low, high]` in dB: white Gaussian noise
            at an SNR uniform in that range, relative to the clip's mean
            power, over the recorded span only (from its first to its last
            non-zero sample): the zero padding stays digital silence, as in
            evaluation (noise there would be amplified by a per-frame
            feature normalization into features never seen in
            evaluation).
        time_masks, time_mask_width: SpecAugment time masks per example
            and their largest width in frames (width uniform in
            `[0, time_mask_width]`, start uniform where it fits).
        freq_masks, freq_mask_width: the same over the feature bins.
            A masked value is set to its frame's mean over the bins (0
            after the tower's per-frame normalization, as SpecAugment's
            zero after mean normalization; silent frames stay unchanged).

    Example:

    >>> aug = AudioAugmentation(time_shift=0.1, gain_db=6.0)
    >>> wave = tf.random.normal((2, 8000))
    >>> aug.augment_waveform(wave, tf.constant([1, 2])).shape
    TensorShape([2, 8000])
    """

    def __init__(self, time_shift=0.0, gain_db=0.0, noise_snr=None,
                 time_masks=0, time_mask_width=0, freq_masks=0,
                 freq_mask_width=0, owner="AudioAugmentation"):
        self.time_shift = check_fraction(owner, "time_shift", time_shift)
        self.gain_db = check_non_negative_float(owner, "gain_db", gain_db)
        if noise_snr is not None:
            if isinstance(noise_snr, (str, bytes)) or not isinstance(
                    noise_snr, (list, tuple)) or len(noise_snr) != 2:
                raise ValueError(
                    f"{owner}: noise_snr={noise_snr!r} must be None or "
                    "[low, high] in dB, e.g. [10, 30]")
            low, high = (float(v) for v in noise_snr)
            if not low <= high:
                raise ValueError(f"{owner}: noise_snr={list(noise_snr)} "
                                 "needs low <= high")
            noise_snr = [low, high]
        self.noise_snr = noise_snr
        self.time_masks = check_non_negative_int(owner, "time_masks",
                                                 time_masks)
        self.time_mask_width = check_non_negative_int(
            owner, "time_mask_width", time_mask_width)
        self.freq_masks = check_non_negative_int(owner, "freq_masks",
                                                 freq_masks)
        self.freq_mask_width = check_non_negative_int(
            owner, "freq_mask_width", freq_mask_width)

    def get_config(self):
        return {"time_shift": self.time_shift, "gain_db": self.gain_db,
                "noise_snr": self.noise_snr, "time_masks": self.time_masks,
                "time_mask_width": self.time_mask_width,
                "freq_masks": self.freq_masks,
                "freq_mask_width": self.freq_mask_width}

    @property
    def changes_waveform(self):
        return (self.time_shift > 0 or self.gain_db > 0
                or self.noise_snr is not None)

    @property
    def changes_features(self):
        return ((self.time_masks > 0 and self.time_mask_width > 0)
                or (self.freq_masks > 0 and self.freq_mask_width > 0))

    # -- waveform -------------------------------------------------------------

    def draw_waveform(self, wave, seed=None):
        """The waveform draws of a batch: `{"shift", "gain_db", "snr_db",
        "noise"}` (only the enabled ones)."""
        batch, n = tf.shape(wave)[0], tf.shape(wave)[1]
        draws = {}
        if self.time_shift > 0:
            margin = tf.cast(tf.round(self.time_shift
                                      * tf.cast(n, tf.float32)), tf.int32)
            room = n - content_length(wave)
            draws["shift"] = _uniform_int([batch], seed, _SHIFT, -margin,
                                          room + margin)
        if self.gain_db > 0:
            draws["gain_db"] = _uniform([batch], seed, _GAIN, -self.gain_db,
                                        self.gain_db)
        if self.noise_snr is not None:
            low, high = self.noise_snr
            draws["snr_db"] = (low + (high - low)
                               * _uniform([batch], seed, _SNR))
            draws["noise"] = (tf.random.normal([batch, n]) if seed is None
                              else tf.random.stateless_normal(
                                  [batch, n], _fold(seed, _NOISE)))
        return draws

    def apply_waveform(self, wave, draws):
        if "shift" in draws:
            wave = shift_waveform(wave, draws["shift"])
        if "gain_db" in draws:
            wave = apply_gain(wave, draws["gain_db"])
        if "snr_db" in draws:
            wave = add_noise(wave, draws["snr_db"], draws["noise"])
        return wave

    def augment_waveform(self, wave, seed=None):
        """Shift, gain and noise of a float32 `[B, N]` batch."""
        wave = tf.convert_to_tensor(wave, tf.float32)
        if not self.changes_waveform:
            return wave
        return self.apply_waveform(wave, self.draw_waveform(wave, seed))

    # -- features -------------------------------------------------------------

    def _bands(self, batch, size, count, width, seed, kinds):
        width = tf.minimum(width, size)
        widths = _uniform_int([batch, count], seed, kinds[0], 0, width)
        starts = _uniform_int([batch, count], seed, kinds[1], 0,
                              size - widths)
        return starts, widths

    def draw_features(self, features, seed=None):
        """`{"time": (starts, widths), "freq": (starts, widths)}` (int32
        `[B, masks]` each; only the enabled ones)."""
        shape = tf.shape(features)
        draws = {}
        if self.time_masks > 0 and self.time_mask_width > 0:
            draws["time"] = self._bands(shape[0], shape[1], self.time_masks,
                                        self.time_mask_width, seed,
                                        (_TIME_WIDTH, _TIME_START))
        if self.freq_masks > 0 and self.freq_mask_width > 0:
            draws["freq"] = self._bands(shape[0], shape[2], self.freq_masks,
                                        self.freq_mask_width, seed,
                                        (_FREQ_WIDTH, _FREQ_START))
        return draws

    def apply_features(self, features, draws):
        shape = tf.shape(features)
        masked = tf.zeros(tf.shape(features)[:1], tf.bool)[:, None, None]
        if "time" in draws:
            masked = masked | band_mask(shape[1], *draws["time"])[:, :, None]
        if "freq" in draws:
            masked = masked | band_mask(shape[2], *draws["freq"])[:, None, :]
        # Each masked value becomes its frame's mean over the bins: zero
        # after a per-frame normalization (AudioTower's feature_norm=
        # "layer"), and a silent frame stays as it is (a global fill value
        # would draw bands into silence that evaluation never shows).
        fill = tf.reduce_mean(features, axis=2, keepdims=True)
        return tf.where(masked, fill, features)

    def augment_features(self, features, seed=None):
        """Time / frequency masks of float32 `[B, frames, bins]` features."""
        features = tf.convert_to_tensor(features, tf.float32)
        if not self.changes_features:
            return features
        return self.apply_features(features,
                                   self.draw_features(features, seed))
