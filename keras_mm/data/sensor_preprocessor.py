"""Sensor preprocessor: `[T, C]` series -> fixed length, normalized, masked."""

import numpy as np
import tensorflow as tf

from keras_mm.data import sensor_files
from keras_mm.data.audio_preprocessor import crop_or_pad
from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import check_choice
from keras_mm.registry import PREPROCESSORS

TRUNCATE_POLICIES = ("warn", "error", "allow")


@PREPROCESSORS.register("sensor")
class SensorPreprocessor(Preprocessor):
    """Multichannel series `[T, C]` -> float32 `[B, length, C]` + step mask.

    The raw value is a float `[T, C]` array (`source="array"`), or the bytes
    of a CSV / `.npy` file (`source="csv"` / `"npy"`), parsed in-graph by
    `keras_mm.data.sensor_files`. `parse` crops or pads to `length` steps: a
    random window when `training` (and `random_crop`), else the `crop` one
    (`"start"` or `"center"`); short series are padded at the end with
    missing (NaN) steps. `transform` normalizes each channel with the mean
    and standard deviation fitted by `adapt` on the training split (NaN
    ignored), then fills NaN with 0 (the channel mean) and reports the steps
    in `<name>_mask`: False where any channel is NaN at that step (missing
    values and padding). A series with no finite value (empty or all NaN)
    counts as a missing modality: `<name>_present = 0`, all zeros. Inf
    values are treated like NaN, and so is a finite value that overflows to
    inf when normalized (e.g. 3e38 with a std below 1): its step is masked,
    and a window left without a valid step gives `<name>_present = 0`.

    Series longer than `length`: `parse` keeps `length` steps (a random
    window in training with `random_crop`, else the `crop` window). The
    pipeline's bad-input check counts them (`raw_steps`: the steps up to the
    last one with a finite value) under the `truncate` policy: `"warn"`
    (default) keeps the example and reports each one (reason `truncated`,
    the file, row, column and step count) in the bad-input report, logged as
    a warning and written to the run folder; `"error"` stops with a
    `DataError` naming the first such row; `"allow"` does not report. The
    serving signature crops the same way and does not report: the training
    report says how often that happens on the training data, and `length`
    (`keras-mm init` infers it from the training split) should cover the
    longest series.
    CSV bytes may start with a UTF-8 byte order mark; a non-empty CSV
    without a data row (a header or a line of text alone) is refused, as
    are non-numeric fields: `tf.errors.InvalidArgumentError` naming the
    input, the line and the reason (never bytes of the file).

    Serving signature: `source="array"` takes float `[B, T, C]` (pad shorter
    series with NaN: those steps are reported missing); `"csv"` / `"npy"`
    take the file bytes `[B]`.

    Args:
        name: model input name.
        channels: C, the number of channels.
        length: output steps.
        source: `"array"`, `"csv"` or `"npy"`.
        crop: `"start"` or `"center"` (evaluation / serving crop).
        random_crop: random window in training.
        normalize: apply the per-channel normalization (needs `adapt`, or
            `mean` and `std`).
        truncate: `"warn"`, `"error"` or `"allow"`: what the bad-input
            check does with a series longer than `length` (see above).
        mean, std: per-channel statistics (set by `adapt`).
        csv_header, csv_delimiter: see `sensor_files.decode_csv_bytes`.

    Outputs: `<name>` float32 `[B, length, C]`, `<name>_mask` bool
    `[B, length]`, `<name>_present` float32 `[B]`.

    Example:

    >>> pre = SensorPreprocessor("imu", channels=6, length=100)
    >>> pre.adapt(train_series)          # iterable of [T, 6] arrays
    >>> out = pre(tf.constant(batch))    # float [B, T, 6]
    >>> out["imu"].shape, out["imu_mask"].shape
    (TensorShape([B, 100, 6]), TensorShape([B, 100]))
    """

    modality = "sensor"

    def __init__(self, name, channels, length=128, source="array",
                 crop="start", random_crop=True, normalize=True, mean=None,
                 std=None, csv_header="auto", csv_delimiter=",",
                 truncate="warn"):
        super().__init__(name)
        owner = f"SensorPreprocessor({name!r})"
        self.channels = int(channels)
        self.length = int(length)
        if self.channels < 1 or self.length < 1:
            raise ValueError(f"{owner}: channels={channels} and "
                             f"length={length} must be >= 1")
        self.source = check_choice(owner, "source", source,
                                   ("array", "csv", "npy"))
        self.crop = check_choice(owner, "crop", crop, ("start", "center"))
        self.random_crop = bool(random_crop)
        self.truncate = check_choice(owner, "truncate", truncate,
                                     TRUNCATE_POLICIES)
        self.normalize = bool(normalize)
        self.csv_header = csv_header
        self.csv_delimiter = csv_delimiter
        self.mean = None if mean is None else [float(v) for v in mean]
        self.std = None if std is None else [float(v) for v in std]
        for arg, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and len(value) != self.channels:
                raise ValueError(f"{owner}: {arg} has {len(value)} values; "
                                 f"expected one per channel ({channels})")

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, length=self.length,
                      source=self.source, crop=self.crop,
                      random_crop=self.random_crop, normalize=self.normalize,
                      mean=self.mean, std=self.std,
                      csv_header=self.csv_header,
                      csv_delimiter=self.csv_delimiter,
                      truncate=self.truncate)
        return config

    @property
    def is_adapted(self):
        return not self.normalize or (self.mean is not None
                                      and self.std is not None)

    def raw_signature(self):
        if self.source == "array":
            return {self.name: tf.TensorSpec([None, None, self.channels],
                                             tf.float32)}
        return {self.name: tf.TensorSpec([None], tf.string)}

    def parsed_signature(self):
        return {
            self.name: tf.TensorSpec([self.length, self.channels],
                                     tf.float32),
            self._key("_present"): tf.TensorSpec([], tf.float32),
        }

    def output_signature(self):
        return {
            self.name: tf.TensorSpec([None, self.length, self.channels],
                                     tf.float32),
            self._key("_mask"): tf.TensorSpec([None, self.length], tf.bool),
            self._key("_present"): tf.TensorSpec([None], tf.float32),
        }

    def decode(self, raw):
        """ONE raw value -> float32 `[T, C]` (decoding CSV / .npy bytes)."""
        if self.source == "csv":
            series = sensor_files.decode_csv_bytes(
                raw, self.channels, header=self.csv_header,
                delimiter=self.csv_delimiter, name=self.name)
        elif self.source == "npy":
            # Empty bytes = absent modality: an empty series, not an error.
            series = tf.cond(
                tf.equal(tf.strings.length(raw), 0),
                lambda: tf.zeros([0, self.channels], tf.float32),
                lambda: sensor_files.decode_npy_bytes(raw, self.name))
        else:
            series = tf.cast(raw, tf.float32)
        series = tf.reshape(series, [-1, tf.shape(series)[-1]])
        check = tf.debugging.assert_equal(
            tf.shape(series)[1], self.channels,
            message=f"SensorPreprocessor({self.name!r}): input "
                    f"{self.name!r}: the series must have "
                    f"channels={self.channels} columns")
        with tf.control_dependencies([check]):
            series = tf.identity(series)
        return tf.ensure_shape(series, [None, self.channels])

    def raw_steps(self, raw):
        """ONE raw example -> int32 scalar: its steps up to the last one
        holding a finite value (trailing NaN padding does not count). More
        than `length` means `parse` cuts the series."""
        series = self.decode(self.select_raw(raw))
        has_value = tf.reduce_any(tf.math.is_finite(series), axis=-1)
        steps = tf.where(has_value)[:, 0] + 1
        return tf.cast(tf.reduce_max(tf.concat(
            [steps, tf.zeros([1], steps.dtype)], 0)), tf.int32)

    def adapt(self, dataset):
        """Per-channel mean / std over all finite training values."""
        # Sums of (x - shift), shift = the first finite values seen: keeps
        # the one-pass variance accurate when |mean| >> std.
        shift = None
        total = np.zeros(self.channels)
        total_sq = np.zeros(self.channels)
        count = np.zeros(self.channels)
        for series in self.examples(dataset).map(self.decode) \
                .as_numpy_iterator():
            series = series.astype(np.float64)
            finite = np.isfinite(series)
            if shift is None and finite.any():
                shift = np.where(finite.any(0),
                                 np.nanmean(np.where(finite, series, np.nan),
                                            axis=0), 0.0)
            centred = np.where(finite, series - (shift if shift is not None
                                                 else 0.0), 0.0)
            total += centred.sum(axis=0)
            total_sq += (centred ** 2).sum(axis=0)
            count += finite.sum(axis=0)
        safe = np.maximum(count, 1)
        offset = total / safe
        mean = np.where(count > 0, offset + (shift if shift is not None
                                             else 0.0), 0.0)
        var = np.maximum(total_sq / safe - offset ** 2, 0.0)
        std = np.sqrt(var)
        std = np.where((count > 0) & (std > 1e-12), std, 1.0)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        return self

    def parse(self, raw, training=False, seed=None):
        series = self.decode(self.select_raw(raw))
        present = tf.reduce_any(tf.math.is_finite(series))
        window = crop_or_pad(series, self.length, self.crop, training,
                             self.random_crop, pad_value=float("nan"),
                             seed=seed)
        window = tf.ensure_shape(window, [self.length, self.channels])
        return {self.name: window,
                self._key("_present"): tf.cast(present, tf.float32)}

    def transform(self, parsed, training=False, seed=None):
        del training, seed
        series = tf.cast(parsed[self.name], tf.float32)
        present = tf.cast(parsed[self._key("_present")], tf.float32)
        finite = tf.math.is_finite(series)
        mask = tf.reduce_all(finite, axis=-1)
        if self.normalize:
            if self.mean is None or self.std is None:
                raise self._not_adapted("mean / std")
            series = ((series - tf.constant(self.mean, tf.float32))
                      * tf.constant([1.0 / s for s in self.std], tf.float32))
            # A finite value can overflow to +-inf here (3e38 with a small
            # std): treated like NaN, its step is masked as missing.
            finite = tf.logical_and(finite, tf.math.is_finite(series))
            mask = tf.reduce_all(finite, axis=-1)
        series = tf.where(finite, series, tf.zeros_like(series))
        # No valid step left in the window: the modality is absent.
        present = present * tf.cast(tf.reduce_any(mask, axis=-1),
                                    tf.float32)
        series = series * present[:, None, None]
        mask = tf.logical_and(mask, present[:, None] > 0)
        return {self.name: series, self._key("_mask"): mask,
                self._key("_present"): present}
