"""Tabular preprocessor: numeric normalization + categorical vocabularies."""

import collections

import numpy as np
import tensorflow as tf

from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.registry import PREPROCESSORS


@PREPROCESSORS.register("tabular")
class TabularPreprocessor(Preprocessor):
    """A dict of table columns -> `<name>_numeric` and `<name>_categorical`.

    The raw value is a dict `{column: scalar}` (serving: `{column: [B]}`):
    numeric columns are floats (or numeric strings; empty string / NaN =
    missing), categorical columns are strings (integers are converted with
    `tf.strings.as_string`).

    Numeric: `adapt` fits each column's mean and variance on the training
    split (missing values ignored); `transform` fills missing values with the
    mean and, when `normalize`, standardizes: `(x - mean) / sqrt(variance)`
    (a missing value becomes 0). With `missing_indicators=True` one 0/1
    column per numeric column, 1 = missing, is appended (so `num_numeric` is
    twice the number of numeric columns).

    Categorical: `adapt` learns each column's vocabulary (most frequent
    first, ties by value; at most `max_tokens` values seen at least
    `min_frequency` times). Known values map to ids 1..V, everything else
    (unseen values, empty strings) to 0, the OOV bucket; the column's
    cardinality is V + 1 (`cardinalities`, the TabularTower argument).
    Lookups use `tf.lookup.StaticHashTable`s built from the vocabularies held
    in the config; an exporter must track them (`resources()`, e.g.
    `archive.track(table)` for each) so that they are saved with the model.
    Build the preprocessor outside any `tf.function`.

    `<name>_present` is 0 when every numeric value is missing and every
    categorical value is empty.

    Args:
        name: model input name.
        numeric: numeric column names.
        categorical: categorical column names.
        normalize: standardize numeric columns.
        missing_indicators: append missing-value indicator columns.
        mean, variance: per numeric column statistics (set by `adapt`).
        vocabularies: per categorical column list of known values (set by
            `adapt`).
        max_tokens: maximum known values per categorical column (None = all).
        min_frequency: minimum count for a value to be known.

    Outputs: `<name>_numeric` float32 `[B, num_numeric]` (when there are
    numeric columns), `<name>_categorical` int32 `[B, K]` (when there are
    categorical columns), `<name>_present` float32 `[B]`.

    Example:

    >>> pre = TabularPreprocessor("tab", numeric=["age"],
    ...                           categorical=["city"])
    >>> pre.adapt([{"age": 30.0, "city": "Oslo"}, {"age": 40.0, "city": ""}])
    >>> pre({"age": tf.constant([35.0]), "city": tf.constant(["Rome"])})
    {'tab_numeric': [[0.]], 'tab_categorical': [[0]], 'tab_present': [1.]}
    """

    modality = "tabular"

    def __init__(self, name, numeric=(), categorical=(), normalize=True,
                 missing_indicators=False, mean=None, variance=None,
                 vocabularies=None, max_tokens=None, min_frequency=1):
        super().__init__(name)
        owner = f"TabularPreprocessor({name!r})"
        self.numeric = [str(c) for c in numeric]
        self.categorical = [str(c) for c in categorical]
        columns = self.numeric + self.categorical
        if not columns:
            raise ValueError(f"{owner}: give at least one numeric or "
                             "categorical column")
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise ValueError(f"{owner}: columns {duplicates} are listed more "
                             "than once")
        self.normalize = bool(normalize)
        self.missing_indicators = bool(missing_indicators)
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.min_frequency = int(min_frequency)
        self.mean = None if mean is None else [float(v) for v in mean]
        self.variance = (None if variance is None
                         else [float(v) for v in variance])
        for arg, value in (("mean", self.mean), ("variance", self.variance)):
            if value is not None and len(value) != len(self.numeric):
                raise ValueError(
                    f"{owner}: {arg} has {len(value)} values; expected one "
                    f"per numeric column ({len(self.numeric)})")
        self.vocabularies = None
        self._tables = None
        if vocabularies is not None:
            self.set_vocabularies(vocabularies)

    # -- state ---------------------------------------------------------------

    def set_vocabularies(self, vocabularies):
        vocabularies = [[str(v) for v in vocab] for vocab in vocabularies]
        if len(vocabularies) != len(self.categorical):
            raise ValueError(
                f"TabularPreprocessor({self.name!r}): {len(vocabularies)} "
                "vocabularies; expected one per categorical column "
                f"({len(self.categorical)})")
        for column, vocab in zip(self.categorical, vocabularies):
            if "" in vocab or len(set(vocab)) != len(vocab):
                raise ValueError(
                    f"TabularPreprocessor({self.name!r}): the vocabulary of "
                    f"column {column!r} has duplicates or an empty string")
        self.vocabularies = vocabularies
        self._tables = [self._make_table(vocab) for vocab in vocabularies]

    @staticmethod
    def _make_table(vocab):
        keys = tf.constant(vocab, tf.string) if vocab else tf.zeros(
            [0], tf.string)
        values = tf.range(1, len(vocab) + 1, dtype=tf.int64)
        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, values), default_value=0)

    def resources(self):
        """Lookup tables (one per categorical column) to track on export."""
        return list(self._tables or [])

    @property
    def cardinalities(self):
        """Ids per categorical column, OOV included (TabularTower argument)."""
        if self.categorical and self.vocabularies is None:
            raise self._not_adapted("categorical vocabularies")
        return [len(v) + 1 for v in (self.vocabularies or [])]

    @property
    def num_numeric(self):
        """Width of `<name>_numeric`."""
        return len(self.numeric) * (2 if self.missing_indicators else 1)

    @property
    def is_adapted(self):
        numeric_ok = not self.numeric or (
            self.mean is not None
            and (not self.normalize or self.variance is not None))
        return numeric_ok and (not self.categorical
                               or self.vocabularies is not None)

    def get_config(self):
        config = super().get_config()
        config.update(numeric=list(self.numeric),
                      categorical=list(self.categorical),
                      normalize=self.normalize,
                      missing_indicators=self.missing_indicators,
                      mean=self.mean, variance=self.variance,
                      vocabularies=self.vocabularies,
                      max_tokens=self.max_tokens,
                      min_frequency=self.min_frequency)
        return config

    # -- signatures ----------------------------------------------------------

    def raw_signature(self):
        spec = {c: tf.TensorSpec([None], tf.float32) for c in self.numeric}
        spec.update({c: tf.TensorSpec([None], tf.string)
                     for c in self.categorical})
        return spec

    def select_raw(self, raw):
        # One column: the pipeline hands its bare value (InputColumns.raw).
        if not isinstance(raw, dict) and len(self.raw_keys()) != 1:
            raise TypeError(
                f"TabularPreprocessor({self.name!r}) takes a dict "
                f"{{column: value}} with keys {self.raw_keys()}; got "
                f"{type(raw).__name__}")
        return super().select_raw(raw)

    def example_signature(self):
        return {k: tf.TensorSpec([], s.dtype)
                for k, s in self.raw_signature().items()}

    def parsed_signature(self):
        spec = {}
        if self.numeric:
            spec[self._key("_numeric")] = tf.TensorSpec([len(self.numeric)],
                                                        tf.float32)
        if self.categorical:
            spec[self._key("_categorical")] = tf.TensorSpec(
                [len(self.categorical)], tf.string)
        spec[self._key("_present")] = tf.TensorSpec([], tf.float32)
        return spec

    def output_signature(self):
        spec = {}
        if self.numeric:
            spec[self._key("_numeric")] = tf.TensorSpec(
                [None, self.num_numeric], tf.float32)
        if self.categorical:
            spec[self._key("_categorical")] = tf.TensorSpec(
                [None, len(self.categorical)], tf.int32)
        spec[self._key("_present")] = tf.TensorSpec([None], tf.float32)
        return spec

    def output_shape(self):
        raise TypeError("TabularPreprocessor has no single `<name>` output; "
                        "use num_numeric and cardinalities")

    # -- graph code ----------------------------------------------------------

    def columns(self, raw):
        """ONE raw example -> (numeric float32 [F], categorical string [K])."""
        raw = self.select_raw(raw)
        if not isinstance(raw, dict):  # a single column
            raw = {self.raw_keys()[0]: raw}
        numeric = []
        for column in self.numeric:
            value = tf.convert_to_tensor(raw[column])
            if value.dtype == tf.string:
                value = tf.strings.strip(value)
                value = tf.strings.to_number(
                    tf.where(value == "", "nan", value), tf.float32)
            numeric.append(tf.reshape(tf.cast(value, tf.float32), []))
        categorical = []
        for column in self.categorical:
            value = tf.convert_to_tensor(raw[column])
            if value.dtype != tf.string:
                value = tf.strings.as_string(value)
            categorical.append(tf.reshape(value, []))
        numeric = (tf.stack(numeric) if numeric
                   else tf.zeros([0], tf.float32))
        categorical = (tf.stack(categorical) if categorical
                       else tf.zeros([0], tf.string))
        return numeric, categorical

    def adapt(self, dataset):
        """Fits numeric mean / variance and categorical vocabularies."""
        numeric_rows = []
        counters = [collections.Counter() for _ in self.categorical]
        parsed = self.examples(dataset).map(self.columns)
        for numeric, categorical in parsed.as_numpy_iterator():
            numeric_rows.append(numeric)
            for counter, value in zip(counters, categorical):
                value = value.decode("utf-8")
                if value:
                    counter[value] += 1
        if self.numeric:
            values = (np.stack(numeric_rows).astype(np.float64)
                      if numeric_rows else
                      np.zeros((0, len(self.numeric))))
            finite = np.isfinite(values)
            count = finite.sum(axis=0)
            safe = np.maximum(count, 1)
            filled = np.where(finite, values, 0.0)
            mean = np.where(count > 0, filled.sum(axis=0) / safe, 0.0)
            var = np.where(finite, (values - mean) ** 2, 0.0).sum(0) / safe
            var = np.where((count > 0) & (var > 0), var, 1.0)
            self.mean = [float(v) for v in mean]
            self.variance = [float(v) for v in var]
        if self.categorical:
            vocabularies = []
            for counter in counters:
                items = sorted(
                    (item for item in counter.items()
                     if item[1] >= self.min_frequency),
                    key=lambda item: (-item[1], item[0]))
                if self.max_tokens is not None:
                    items = items[:self.max_tokens]
                vocabularies.append([value for value, _ in items])
            self.set_vocabularies(vocabularies)
        return self

    def parse(self, raw, training=False, seed=None):
        del training, seed
        numeric, categorical = self.columns(raw)
        present = tf.logical_or(
            tf.reduce_any(tf.math.is_finite(numeric)),
            tf.reduce_any(tf.strings.length(categorical) > 0))
        out = {}
        if self.numeric:
            out[self._key("_numeric")] = numeric
        if self.categorical:
            out[self._key("_categorical")] = categorical
        out[self._key("_present")] = tf.cast(present, tf.float32)
        return out

    def transform(self, parsed, training=False, seed=None):
        del training, seed
        out = {}
        if self.numeric:
            if self.mean is None or (self.normalize
                                     and self.variance is None):
                raise self._not_adapted("numeric mean / variance")
            x = tf.cast(parsed[self._key("_numeric")], tf.float32)
            missing = tf.logical_not(tf.math.is_finite(x))
            mean = tf.constant(self.mean, tf.float32)
            x = tf.where(missing, mean + tf.zeros_like(x), x)
            if self.normalize:
                x = (x - mean) * tf.constant(
                    [1.0 / float(v) ** 0.5 for v in self.variance],
                    tf.float32)
            if self.missing_indicators:
                x = tf.concat([x, tf.cast(missing, tf.float32)], axis=-1)
            out[self._key("_numeric")] = x
        if self.categorical:
            if self._tables is None:
                raise self._not_adapted("categorical vocabularies")
            values = parsed[self._key("_categorical")]
            ids = [table.lookup(values[:, k])
                   for k, table in enumerate(self._tables)]
            out[self._key("_categorical")] = tf.cast(tf.stack(ids, axis=-1),
                                                     tf.int32)
        out[self._key("_present")] = tf.cast(parsed[self._key("_present")],
                                             tf.float32)
        return out
