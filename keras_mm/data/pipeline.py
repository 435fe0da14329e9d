"""The tf.data input pipeline: manifest or TFRecords -> model-ready batches.

    source (CSV / JSONL manifest, or TFRecord shards)
      -> bad-input check (once, before the graph is built; see bad_input.py)
      -> shuffle the rows / records (seeded; cheap: nothing is decoded yet)
      -> batch (`drop_remainder` for static shapes)
      -> one parallel map per batch: read the files and `parse` each
         example (`tf.map_fn`; preprocessors that decode whole batches get
         the raw batch, `parse_batch`), then `transform` the batch
         (`training` flag) -> presence mask
      -> tf.data service (optional) -> prefetch

This is the serving function's composition, `transform(parse_batch(raw))`.
Looping over the examples of a batch inside the graph costs far less per
example than one tf.data function call per example, and the expensive
feature maps (the STFT of log-mel, image augmentation) run batched. With
`cache`, parsed examples are cached (the batches are split again), then
shuffled, batched and transformed.

A dataset yields `(features, labels)`: `features` keyed like the inputs of
`keras_mm.build_model` (`<name>`, `<name>_mask`, `<name>_numeric`,
`<name>_categorical`, and `presence` `[B, M]` when `presence_mask=True`),
`labels` keyed by head name. Manifests and the TFRecord shards converted from
them (`keras_mm.data.tfrecords`) give bitwise-equal batches.
"""

import hashlib
import json
import logging
import math
import os
import re

import numpy as np
import tensorflow as tf

from keras_mm.data import bad_input as bad_input_lib
from keras_mm.data import tfrecords
from keras_mm.data.manifest import Manifest
from keras_mm.errors import DataError

logger = logging.getLogger("keras_mm.data")

AUTOTUNE = tf.data.AUTOTUNE
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".txt")
LABEL_TYPES = ("classification", "binary", "multilabel", "regression")
_KEY_SHIFT = 2 ** 32   # TFRecord example key = file index * 2**32 + record

# Validation results, keyed by a fingerprint of the data and the config.
_VALIDATION_CACHE = {}


# ----------------------------------------------------------------- helpers
def key_string(value):
    """A label / category cell as the string it is matched by.

    Integers and integer-valued floats give `"3"`; NaN and None give `""`;
    lists join with `|`; strings are stripped. The graph does the same for
    TFRecord values (`_key_string_graph`).
    """
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(key_string(v) for v in value)
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
        return f"{np.float32(value):.6f}"
    return str(value).strip()


def _key_string_graph(value, kind):
    if kind == "string":
        return tf.strings.strip(value)
    if kind == "int":
        return tf.strings.as_string(value)
    if kind == "float":
        whole = tf.equal(value, tf.round(value))
        text = tf.cond(
            whole,
            lambda: tf.strings.as_string(tf.cast(value, tf.int64)),
            lambda: tf.strings.as_string(value))
        return tf.where(tf.math.is_nan(value), tf.constant(""), text)
    raise ValueError(f"cannot use a {kind!r} column as labels/categories")


def _to_float_graph(value, kind):
    if kind == "float":
        return value
    if kind == "int":
        return tf.cast(value, tf.float32)
    if kind == "string":
        empty = tf.equal(tf.strings.strip(value), "")
        number = tf.strings.to_number(tf.where(empty, "0", value),
                                      tf.float32)
        return tf.where(empty, tf.constant(math.nan), number)
    raise ValueError(f"cannot use a {kind!r} column as numbers")


def _empty_of(kind):
    if kind in ("file", "string"):
        return tf.constant("")
    if kind == "files":
        return tf.zeros([0], tf.string)
    if kind == "float":
        return tf.constant(math.nan, tf.float32)
    if kind == "floats":
        return tf.zeros([0], tf.float32)
    return tf.constant(0, tf.int64)


def _in_sorted(key, sorted_keys):
    """Whether scalar int64 `key` is in the sorted constant `sorted_keys`."""
    n = sorted_keys.shape[0]
    i = tf.searchsorted(sorted_keys, tf.reshape(key, [1]))[0]
    i = tf.minimum(i, n - 1)
    return tf.equal(tf.gather(sorted_keys, i), key)


def _with_draws(ds, seed):
    """`ds` zipped with one random int64 per element, new on each iteration
    and reproducible from `seed` (tf.data's own seeded stream)."""
    return tf.data.Dataset.zip((ds, tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True)))


def _input_seed(seed, index):
    """Input `index`'s own stateless seed, derived from `seed` (or None)."""
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(seed, index)


def _read_file_or_empty(path):
    return tf.cond(tf.strings.length(path) > 0,
                   lambda: tf.io.read_file(path), lambda: tf.constant(""))


class _Label:
    """One head's label: column(s), type and classes."""

    def __init__(self, head, spec):
        if isinstance(spec, str):
            raise ValueError(
                f"labels[{head!r}]={spec!r}: give a dict such as "
                "{'column': ..., 'type': 'classification', 'class_names': "
                "[...]} (a builder spec's heads entry works)")
        spec = dict(spec)
        self.head = head
        self.type = spec.get("type", "classification")
        if self.type not in LABEL_TYPES:
            raise ValueError(f"labels[{head!r}]: type={self.type!r} is not "
                             f"one of {', '.join(LABEL_TYPES)}")
        column = spec.get("column", head)
        self.columns = list(column) if isinstance(column, (list, tuple)) \
            else [column]
        self.separator = spec.get("separator", "|")
        self.classes = None
        if self.type == "classification":
            names = spec.get("class_names") or spec.get("classes")
            if names is None:
                if spec.get("num_classes") is None:
                    raise ValueError(
                        f"labels[{head!r}]: give class_names (the label "
                        "values, in id order) or num_classes (labels 0..N-1)")
                names = [str(i) for i in range(int(spec["num_classes"]))]
            self.classes = [key_string(c) for c in names]
        elif self.type == "binary":
            names = spec.get("class_names") or spec.get("classes") or \
                ["0", "1"]
            if len(names) != 2:
                raise ValueError(f"labels[{head!r}]: a binary head takes two "
                                 f"class_names (negative, positive); got "
                                 f"{names}")
            self.classes = [key_string(c) for c in names]
        elif self.type == "multilabel":
            names = spec.get("label_names") or spec.get("class_names")
            if names is None:
                if spec.get("num_labels") is None:
                    raise ValueError(f"labels[{head!r}]: give label_names or "
                                     "num_labels")
                names = [str(i) for i in range(int(spec["num_labels"]))]
            self.classes = [key_string(c) for c in names]
        else:
            self.units = int(spec.get("units", len(self.columns)))
            if self.units != len(self.columns):
                raise ValueError(
                    f"labels[{head!r}]: units={self.units} needs that many "
                    f"columns; got column={column!r}")
        if len(self.columns) != 1 and self.type != "regression":
            raise ValueError(f"labels[{head!r}]: a {self.type} label reads "
                             "one column")

    @property
    def wanted_kind(self):
        return "float" if self.type == "regression" else "key"

    def config(self):
        return {"type": self.type, "columns": self.columns,
                "classes": self.classes, "separator": self.separator}

    def python_value(self, manifest):
        """Per-row raw label values from a manifest (strings or floats)."""
        if self.type == "regression":
            cols = [manifest.column(c, "float") for c in self.columns]
            return [list(v) for v in zip(*cols)]
        return [key_string(v) for v in manifest.column(self.columns[0])]

    def check(self, value):
        """(reason, detail) for a bad raw label value, else None."""
        if self.type == "regression":
            if any(math.isnan(v) for v in value):
                return "missing_label", "the label is empty / NaN"
            return None
        if self.type == "multilabel":
            parts = [p.strip() for p in value.split(self.separator)
                     if p.strip()]
            unknown = [p for p in parts if p not in self.classes]
            if unknown:
                return ("unknown_label", f"{', '.join(map(repr, unknown))} "
                        f"not in {self.classes}")
            return None
        if value == "":
            return "missing_label", "the label is empty"
        if value not in self.classes:
            shown = self.classes if len(self.classes) <= 20 else \
                self.classes[:20] + ["..."]
            return "unknown_label", f"{value!r} is not one of {shown}"
        return None

    def raw_spec(self):
        """`tf.TensorSpec` of ONE raw label value (what `encode` takes)."""
        if self.type == "regression":
            return tf.TensorSpec([self.units], tf.float32)
        return tf.TensorSpec([], tf.string)

    def encode(self, values):
        """In-graph: a batch of raw values (strings `[B]`, or floats
        `[B, units]`) -> label tensors: int32 class ids `[B]`, float32
        `[B, 1]` (binary), `[B, classes]` (multilabel) or `[B, units]`."""
        if self.type == "regression":
            return tf.reshape(tf.cast(values, tf.float32), [-1, self.units])
        if self.type == "multilabel":
            return tf.map_fn(self._encode_multilabel, values,
                             fn_output_signature=tf.TensorSpec(
                                 [len(self.classes)], tf.float32))
        classes = tf.constant(self.classes)
        match = tf.equal(values[:, None], classes[None, :])
        known = tf.reduce_any(match, axis=1)
        check = tf.debugging.Assert(
            tf.reduce_all(known),
            [f"label of head {self.head!r}:",
             tf.boolean_mask(values, tf.logical_not(known)),
             "is not one of", classes])
        with tf.control_dependencies([check]):
            ids = tf.argmax(tf.cast(match, tf.int32), axis=1,
                            output_type=tf.int32)
        if self.type == "binary":
            return tf.cast(ids, tf.float32)[:, None]
        return ids

    def _encode_multilabel(self, value):
        classes = tf.constant(self.classes)
        parts = tf.strings.strip(tf.strings.split(value, self.separator))
        parts = tf.boolean_mask(parts, tf.strings.length(parts) > 0)
        match = tf.equal(parts[:, None], classes[None, :])
        check = tf.debugging.Assert(
            tf.reduce_all(tf.reduce_any(match, axis=1)),
            [f"label of head {self.head!r}:", value,
             "holds a name outside", classes])
        with tf.control_dependencies([check]):
            return tf.cast(tf.reduce_any(match, axis=0), tf.float32)


def _modality_kinds(pre):
    """`{raw_key: kind}` a preprocessor reads from a manifest column."""
    modality = getattr(pre, "modality", None)
    keys = pre.raw_keys()
    if modality in ("image", "audio"):
        return {keys[0]: "file"}
    if modality == "video":
        return {keys[0]: "files" if pre.source == "frames" else "file"}
    if modality == "sensor":
        if pre.source == "array":
            raise ValueError(
                f"SensorPreprocessor({pre.name!r}): source='array' takes "
                "in-memory arrays; a manifest or TFRecord column holds "
                "files: use source='csv' or 'npy'")
        return {keys[0]: "file"}
    if modality == "text":
        return {keys[0]: "string"}
    if modality == "tabular":
        kinds = {c: "float" for c in pre.numeric}
        kinds.update({c: "key" for c in pre.categorical})
        return kinds
    kinds = {}
    for key, spec in pre.raw_signature().items():
        kinds[key] = "string" if spec.dtype == tf.string else "float"
    return kinds


class _Input:
    def __init__(self, name, pre, columns):
        if getattr(pre, "name", name) != name:
            raise ValueError(
                f"preprocessors[{name!r}] is named {pre.name!r}: the key "
                "must be the preprocessor's name (the model input name)")
        self.name = name
        self.pre = pre
        self.modality = getattr(pre, "modality", None)
        kinds = _modality_kinds(pre)
        if columns is None:
            columns = {}
        elif isinstance(columns, str):
            if len(kinds) != 1:
                raise ValueError(
                    f"columns[{name!r}]={columns!r}: this preprocessor reads "
                    f"{list(kinds)}; give a dict {{raw key: column}}")
            columns = {next(iter(kinds)): columns}
        self.columns = {k: columns.get(k, k if len(kinds) > 1 else name)
                        for k in kinds}
        self.kinds = kinds   # raw key -> wanted kind

    def column_names(self):
        return ", ".join(self.columns.values())

    def raw(self, row):
        values = {k: row[c] for k, c in self.columns.items()}
        if len(values) == 1:
            return next(iter(values.values()))
        return values


class Pipeline:
    """Builds tf.data datasets from a manifest or TFRecord shards.

    Args:
        source: a `Manifest`, a `.csv`/`.tsv`/`.jsonl` manifest path, or
            TFRecord shards (a file, folder, glob or list; any
            `tf.io.gfile` path, `gs://` included) written by
            `convert_manifest_to_tfrecords` (their `features.json` says the
            column kinds; otherwise pass `column_kinds`).
        preprocessors: `{model input name: preprocessor}`, in model input
            order (also the column order of `presence`).
        columns: `{input name: column}` (default: the column named like the
            input); for a tabular preprocessor `{raw key: column}`, default
            its column names.
        labels: `{head name: spec}`, spec a dict with `type`
            (`classification` (default), `binary`, `multilabel`,
            `regression`), `column` (default the head name), `class_names`
            or `num_classes` (label values, in id order), `label_names` for
            multilabel (cells `a|b`), `units` for regression (a list of
            columns). A builder spec's `heads` dict works as it is.
            Classification labels are int32 `[B]`, binary float32 `[B, 1]`,
            multilabel float32 `[B, L]` (multi-hot), regression float32
            `[B, units]`. None: the dataset yields features only.
        bad_input: `"error"`, `"skip"` or `"missing"` (see
            `keras_mm.data.bad_input`).
        report_path: where the bad-input report JSON is written (each time
            the check runs); None: only logged.
        max_report_rows: offending rows kept in the report.
        presence_mask: add `features["presence"]` float32 `[B, M]`, column
            j = `presence_order[j]` (default the preprocessors' order).
        input_names: keep only these feature keys (e.g. the model's input
            names); by default every output except `<name>_present`.
        keep_present: also keep the `<name>_present` keys.
        validate: run the bad-input check (strongly advised). Without it a
            bad example stops the pass with a tf error; `iterate` turns it
            into a DataError naming what it can.
        column_types: `{column: type}` for the manifest (see `Manifest`).
        column_kinds: `{column: kind}` of TFRecords without `features.json`.

    Bad input: the check runs once per `Pipeline` (and again whenever the
    manifest, its files or the preprocessor configs change), before any
    dataset is built; it decodes every example once in a parallel tf.data
    pass and diagnoses the failures eagerly. Skipped and marked examples are
    the same in every pass; the report is logged at the check and again at
    the end of each pass of `iterate()`. Files changed after the check make
    the pass fail: `iterate()` raises a DataError naming the row when it
    can.

    Example:

    >>> pre = {"image": ImagePreprocessor("image", size=(28, 28), channels=1),
    ...        "audio": AudioPreprocessor("audio", sample_rate=8000)}
    >>> pipe = Pipeline("train.csv", pre, columns={"image": "png"},
    ...                 labels={"digit": {"num_classes": 10}},
    ...                 bad_input="skip", report_path="bad_input.json")
    >>> ds = pipe.dataset(batch_size=32, shuffle=True, seed=0,
    ...                   training=True)                 # doctest: +SKIP
    >>> model.fit(ds, epochs=3)                           # doctest: +SKIP
    """

    def __init__(self, source, preprocessors, columns=None, labels=None, *,
                 bad_input="error", report_path=None, max_report_rows=10,
                 presence_mask=False, presence_order=None, input_names=None,
                 keep_present=False, validate=True, column_types=None,
                 column_kinds=None):
        self.policy = bad_input_lib.check_policy(bad_input)
        self.report_path = None if report_path is None else \
            os.fspath(report_path)
        self.max_report_rows = int(max_report_rows)
        self.presence_mask = bool(presence_mask)
        self.input_names = None if input_names is None else list(input_names)
        self.keep_present = bool(keep_present)
        self.validate_data = bool(validate)
        if not preprocessors:
            raise ValueError("Pipeline: give at least one preprocessor")
        columns = dict(columns or {})
        unknown = sorted(set(columns) - set(preprocessors))
        if unknown:
            raise ValueError(f"Pipeline: columns names {unknown}, which are "
                             f"not preprocessors ({list(preprocessors)})")
        self.inputs = [_Input(n, p, columns.get(n))
                       for n, p in preprocessors.items()]
        self.preprocessors = dict(preprocessors)
        self.presence_order = list(presence_order or preprocessors)
        missing = [n for n in self.presence_order if n not in preprocessors]
        if missing:
            raise ValueError(f"Pipeline: presence_order names {missing}, "
                             "which are not preprocessors")
        self.labels = [_Label(h, s) for h, s in (labels or {}).items()]

        # Column -> wanted kind.
        wanted = {}
        for inp in self.inputs:
            for key, kind in inp.kinds.items():
                self._want(wanted, inp.columns[key], kind, f"input "
                           f"{inp.name!r}")
        for label in self.labels:
            for c in label.columns:
                self._want(wanted, c, label.wanted_kind,
                           f"head {label.head!r}")
        self.wanted = wanted

        self.manifest = None
        self.files = None
        if isinstance(source, Manifest):
            self.manifest = source
        elif isinstance(source, (str, os.PathLike)) and os.fspath(
                source).lower().endswith(MANIFEST_SUFFIXES):
            self.manifest = Manifest.read(source, column_types=column_types)
        else:
            self.files = tfrecords.list_shards(source)
            info = tfrecords.read_info(self.files)
            self.info = info
            stored = dict(column_kinds or (info or {}).get("columns") or {})
            if not stored:
                raise DataError(
                    "no features.json next to the TFRecord files: pass "
                    "column_kinds={column: kind} (kinds: "
                    f"{', '.join(tfrecords.KINDS)})", file=self.files[0])
            self.stored = tfrecords.check_kinds(stored, "column_kinds")
            self.compression = (info or {}).get("compression") or ""
            self._check_stored()
        if self.manifest is not None:
            for column in wanted:
                self.manifest._check_column(column)
        self.source_name = self.manifest.name() if self.manifest is not None \
            else (self.files[0] if len(self.files) == 1 else
                  f"{os.path.dirname(self.files[0])} ({len(self.files)} "
                  "TFRecord files)")
        self.report = None
        self._decisions = None

    @staticmethod
    def _want(wanted, column, kind, who):
        old = wanted.get(column)
        if old is not None and old != kind:
            raise ValueError(f"Pipeline: column {column!r} is read as "
                             f"{old!r} and as {kind!r} ({who})")
        wanted[column] = kind

    def _check_stored(self):
        for column, kind in self.wanted.items():
            if column not in self.stored:
                raise DataError(
                    f"the TFRecords have no column {column!r}; they hold "
                    f"{', '.join(self.stored)}", file=self.files[0],
                    column=column, reason="missing_column")
            stored = self.stored[column]
            ok = {"file": ("file",), "files": ("files",),
                  "string": ("string",), "key": ("string", "int", "float"),
                  "float": ("float", "int", "string")}[kind]
            if stored not in ok:
                raise DataError(
                    f"column {column!r} is stored as {stored!r} but is read "
                    f"as {kind!r} (stored kinds allowed: {', '.join(ok)})",
                    file=self.files[0], column=column)

    # ------------------------------------------------------------- elements
    def _manifest_cells(self):
        m = self.manifest
        cells = {}
        for column, kind in self.wanted.items():
            if kind == "file":
                cells[column] = m.paths(column, as_list=False)
            elif kind == "files":
                cells[column] = m.paths(column, as_list=True)
            elif kind == "string":
                cells[column] = m.column(column, "string")
            elif kind == "key":
                cells[column] = [key_string(v) for v in m.column(column)]
            elif kind == "float":
                cells[column] = m.column(column, "float")
        labels = {lab.head: lab.python_value(m) for lab in self.labels}
        return cells, labels

    def _manifest_dataset(self, indices, cells, labels):
        data = {"_key": np.asarray(indices, np.int64).reshape([-1])}
        for column, kind in self.wanted.items():
            values = [cells[column][i] for i in indices]
            if kind == "files":
                data["c/" + column] = tf.ragged.constant(
                    values, dtype=tf.string, ragged_rank=1) if values else \
                    tf.ragged.constant([], dtype=tf.string, ragged_rank=1)
            elif kind == "float":
                data["c/" + column] = np.asarray(values, np.float32)
            else:
                data["c/" + column] = tf.constant(values, tf.string) if \
                    values else tf.zeros([0], tf.string)
        for lab in self.labels:
            values = [labels[lab.head][i] for i in indices]
            if lab.type == "regression":
                data["l/" + lab.head] = np.asarray(
                    values, np.float32).reshape([-1, lab.units])
            else:
                data["l/" + lab.head] = tf.constant(values, tf.string) if \
                    values else tf.zeros([0], tf.string)
        return tf.data.Dataset.from_tensor_slices(data)

    def _load_manifest_element(self, element, filled=()):
        """Reads the files of one manifest element. `filled`: file columns
        known to have a path in every row (read without a test)."""
        raw = {}
        for column, kind in self.wanted.items():
            value = element["c/" + column]
            if kind == "file" and column in filled:
                value = tf.io.read_file(value)
            elif kind == "file":
                value = _read_file_or_empty(value)
            elif kind == "files":
                value = tf.map_fn(tf.io.read_file, value,
                                  fn_output_signature=tf.string)
            raw[column] = value
        labels = {lab.head: element["l/" + lab.head] for lab in self.labels}
        return element["_key"], raw, labels

    def _tfrecord_files_dataset(self, input_context=None):
        ids = np.arange(len(self.files), dtype=np.int64)
        ds = tf.data.Dataset.from_tensor_slices((ids, self.files))
        shard_records = False
        if input_context is not None and \
                input_context.num_input_pipelines > 1:
            if len(self.files) >= input_context.num_input_pipelines:
                ds = ds.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
            else:
                shard_records = True
        return ds, shard_records

    def _records(self, files_ds, cycle_length, deterministic):
        compression = self.compression

        def read(file_id, path):
            records = tf.data.TFRecordDataset(path, compression)
            return records.enumerate().map(
                lambda i, s: (file_id * _KEY_SHIFT + i, s))

        return files_ds.interleave(
            read, cycle_length=cycle_length, block_length=1,
            num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    def _decode_record(self, key, serialized):
        parsed = tfrecords.decode_example(serialized, self.stored)
        raw = {}
        for column, kind in self.wanted.items():
            value, stored = parsed[column], self.stored[column]
            if kind == "key":
                value = _key_string_graph(value, stored)
            elif kind == "float":
                value = _to_float_graph(value, stored)
            raw[column] = value
        labels = {}
        for lab in self.labels:
            if lab.type == "regression":
                labels[lab.head] = tf.stack([raw[c] for c in lab.columns])
            else:
                labels[lab.head] = raw[lab.columns[0]]
        extra = {"row": parsed[tfrecords.ROW_KEY],
                 "missing": tf.strings.reduce_join(
                     parsed[tfrecords.MISSING_KEY], separator="|")}
        return key, raw, labels, extra

    def _parse_inputs(self, raw, training, seed=None):
        return {inp.name: inp.pre.parse(inp.raw(raw), training=training,
                                        seed=_input_seed(seed, i))
                for i, inp in enumerate(self.inputs)}

    # ----------------------------------------------------------- validation
    def _fingerprint(self):
        h = hashlib.sha256()
        config = {
            "inputs": [[i.name, type(i.pre).__name__, i.columns,
                        i.pre.get_config()] for i in self.inputs],
            "labels": [[lab.head, lab.config()] for lab in self.labels],
            "wanted": self.wanted,
        }
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        if self.manifest is not None:
            h.update(self.manifest.content_hash().encode())
            for column, kind in self.wanted.items():
                if kind not in ("file", "files"):
                    continue
                for cell in self.manifest.paths(column, kind == "files"):
                    for path in (cell if isinstance(cell, list) else [cell]):
                        h.update(path.encode())
                        if path and "://" not in path:
                            try:
                                st = os.stat(path)
                                h.update(f"{st.st_size}:{st.st_mtime_ns}"
                                         .encode())
                            except OSError:
                                h.update(b"missing")
        else:
            for path in self.files:
                st = tf.io.gfile.stat(path)
                h.update(f"{path}:{st.length}:{st.mtime_nsec}".encode())
        return h.hexdigest()

    def validate(self, force=False):
        """Runs the bad-input check (once) and applies the policy.

        Returns the `BadInputReport`; raises `DataError` under
        `bad_input="error"` when something is wrong (after logging the
        report and writing its JSON file).
        """
        if self._decisions is not None and not force:
            return self.report
        if not self.validate_data:
            self.report = bad_input_lib.BadInputReport(
                self.source_name, self.policy, self.max_report_rows)
            self.report.total = self.num_examples()
            self._decisions = {"skip": [], "blank": {}}
            return self.report
        fingerprint = self._fingerprint()
        found = None if force else _VALIDATION_CACHE.get(fingerprint)
        if found is None:
            found = self._find_problems()
            _VALIDATION_CACHE[fingerprint] = found
        self._apply_policy(found)
        return self.report

    def num_examples(self):
        if self.manifest is not None:
            return len(self.manifest)
        info = getattr(self, "info", None)
        if info and info.get("num_examples") is not None and \
                len(self.files) == info.get("num_shards"):
            return int(info["num_examples"])
        return None

    def _check_outputs(self, raw):
        """Per input: (present, raw value empty) for the validation pass."""
        parsed = self._parse_inputs(raw, training=False)
        out = {}
        for inp in self.inputs:
            present = tf.cast(parsed[inp.name][inp.name + "_present"],
                              tf.float32)
            if len(inp.kinds) == 1:
                value = raw[next(iter(inp.columns.values()))]
                if value.dtype == tf.string:
                    empty = tf.reduce_all(tf.strings.length(value) == 0)
                else:
                    empty = tf.reduce_all(tf.math.is_nan(
                        tf.cast(value, tf.float32)))
            else:
                empty = tf.constant(False)
            # A checksum of every parsed tensor: without it tf.data prunes
            # the decoding ops whose outputs are not used, and a bad value
            # would pass the check.
            checksum = tf.add_n([
                tf.reduce_sum(tf.cast(tf.strings.length(t), tf.float32))
                if t.dtype == tf.string else
                tf.reduce_sum(tf.cast(t, tf.float32))
                for t in tf.nest.flatten(parsed[inp.name])])
            out[inp.name] = tf.stack([present, tf.cast(empty, tf.float32),
                                      checksum])
        return out

    def _find_problems(self):
        """All problems: `{key: [Problem...]}` plus bookkeeping."""
        problems = {}
        where = {}
        if self.manifest is not None:
            cells, labels = self._manifest_cells()
            n = len(self.manifest)
            keys = list(range(n))
            for i in keys:
                where[i] = {"file": self.manifest.name(), "row": i + 1}
                line = self.manifest.line(i)
                if line is not None:
                    where[i]["line"] = line
            ds = self._manifest_dataset(keys, cells, labels).map(
                self._load_manifest_element, num_parallel_calls=AUTOTUNE,
                deterministic=False)
            ds = ds.map(lambda k, raw, lab: (k, self._check_outputs(raw),
                                             tf.constant(0, tf.int64),
                                             tf.constant("")),
                        num_parallel_calls=AUTOTUNE, deterministic=False)
            label_values = {h: dict(enumerate(v)) for h, v in labels.items()}
        else:
            files_ds, _ = self._tfrecord_files_dataset()
            ds = self._records(files_ds, AUTOTUNE, False).map(
                self._decode_record, num_parallel_calls=AUTOTUNE,
                deterministic=False)
            ds = ds.map(lambda k, raw, lab, extra: (
                k, self._check_outputs(raw), extra["row"], extra["missing"],
                lab), num_parallel_calls=AUTOTUNE, deterministic=False)
            keys = None
            label_values = {lab.head: {} for lab in self.labels}
        ds = ds.ignore_errors().batch(256).prefetch(2)
        seen = set()
        flags = {}
        for batch in ds.as_numpy_iterator():
            batch_keys = batch[0]
            for j, key in enumerate(batch_keys.tolist()):
                seen.add(key)
                flags[key] = {name: v[j] for name, v in batch[1].items()}
                if self.files is not None:
                    rec_row = int(batch[2][j])
                    fid, rec = divmod(key, _KEY_SHIFT)
                    where[key] = {"file": self.files[fid], "row": rec + 1}
                    if rec_row:
                        where[key]["manifest_row"] = rec_row
                    missing = batch[3][j].decode()
                    if missing:
                        where[key]["missing_files"] = missing.split("|")
                    for lab in self.labels:
                        v = batch[4][lab.head][j]
                        label_values[lab.head][key] = (
                            v.decode() if isinstance(v, bytes) else
                            [float(x) for x in np.reshape(v, [-1])])
        if keys is None:
            total = self.num_examples()
            keys = sorted(seen)
            if total is None or total != len(seen):
                keys = sorted(seen | set(self._all_record_keys()))
        failed = [k for k in keys if k not in seen]
        for key in failed:
            problems[key] = self._diagnose(key, where, label_values)
        for key in keys:
            if key in seen:
                problems.setdefault(key, []).extend(
                    self._absent_problems(key, flags[key], where.get(key)))
            for lab in self.labels:
                values = label_values[lab.head]
                if key not in values:
                    continue      # the record did not decode; reported
                bad = lab.check(values[key])
                if bad:
                    problems.setdefault(key, []).append(
                        bad_input_lib.Problem(key, lab.head,
                                              ", ".join(lab.columns), *bad))
        problems = {k: v for k, v in problems.items() if v}
        return {"problems": problems, "where": where, "total": len(keys)}

    def _all_record_keys(self):
        files_ds, _ = self._tfrecord_files_dataset()
        ds = self._records(files_ds, AUTOTUNE, False).map(lambda k, s: k)
        return [int(k) for k in ds.as_numpy_iterator()]

    def _absent_problems(self, key, flags, where):
        out = []
        for inp in self.inputs:
            present, empty = flags[inp.name][:2]
            problem = self._absent_problem(key, inp, present, empty, where)
            if problem is not None:
                out.append(problem)
        return out

    def _absent_problem(self, key, inp, present, empty, where):
        missing_cols = set((where or {}).get("missing_files", []))
        if set(inp.columns.values()) & missing_cols:
            return bad_input_lib.Problem(
                key, inp.name, inp.column_names(), "missing_file",
                "the file was missing when the TFRecords were written")
        if present == 0:
            reason = "all_nan" if (inp.modality == "sensor"
                                   and not empty) else "empty"
            detail = ("no finite value in the series"
                      if reason == "all_nan" else "the value is empty")
            return bad_input_lib.Problem(key, inp.name, inp.column_names(),
                                         reason, detail)
        return None

    def _diagnose(self, key, where, label_values):
        """Eager look at one example that failed in the graph."""
        out = []
        if self.manifest is not None:
            raw, file_problems = self._eager_manifest_raw(key)
            out.extend(file_problems)
        else:
            fid, rec = divmod(key, _KEY_SHIFT)
            where[key] = {"file": self.files[fid], "row": rec + 1}
            try:
                raw, labels, extra = self._eager_record(key)
            except (tf.errors.OpError, StopIteration, ValueError) as e:
                return [bad_input_lib.Problem(
                    key, "<record>", None, "decode_error",
                    "the record could not be read: " +
                    bad_input_lib.clean_tf_message(
                        getattr(e, "message", e)))]
            if int(extra["row"]):
                where[key]["manifest_row"] = int(extra["row"])
            missing = extra["missing"].numpy().decode()
            if missing:
                where[key]["missing_files"] = missing.split("|")
            for lab in self.labels:
                v = labels[lab.head].numpy()
                label_values[lab.head][key] = (
                    v.decode() if isinstance(v, bytes) else
                    [float(x) for x in np.reshape(v, [-1])])
        bad_inputs = {p.input for p in out}
        for inp in self.inputs:
            if inp.name in bad_inputs:
                continue
            try:
                parsed = inp.pre.parse(inp.raw(raw), training=False)
                present = float(parsed[inp.name + "_present"])
            except (tf.errors.OpError, ValueError, TypeError) as e:
                out.append(bad_input_lib.Problem(
                    key, inp.name, inp.column_names(), _classify(e),
                    bad_input_lib.clean_tf_message(
                        getattr(e, "message", e))))
                continue
            empty = _is_empty(raw[next(iter(inp.columns.values()))]) \
                if len(inp.kinds) == 1 else False
            problem = self._absent_problem(key, inp, present, empty,
                                           where.get(key))
            if problem is not None:
                out.append(problem)
        if not out:
            out.append(bad_input_lib.Problem(
                key, "<example>", None, "decode_error",
                "the example failed in the tf.data graph but decodes "
                "eagerly; check the preprocessors' graph code"))
        return out

    # ------------------------------------------------------------ raw access
    def raw_dataset(self):
        """`(key, raw, labels)` per example, in source order, unchecked.

        Files are read, nothing is parsed and the bad-input check is not
        applied: for `adapt` and inspection. `raw` is keyed by column.
        """
        if self.manifest is not None:
            cells, labels = self._cells_cache()
            ds = self._manifest_dataset(list(range(len(self.manifest))),
                                        cells, labels)
            return ds.map(self._load_manifest_element,
                          num_parallel_calls=AUTOTUNE)
        files, _ = self._tfrecord_files_dataset()
        return self._records(files, 1, True).map(
            lambda key, serialized: self._decode_record(key,
                                                        serialized)[:3])

    def skipped_keys(self):
        """Keys (manifest row indices) the bad-input check skips."""
        self.validate()
        return set(self._decisions["skip"])

    def raw_example(self, key):
        """`(raw, problems)` of ONE example, read eagerly.

        `raw` is keyed by column; `problems` lists the manifest files that
        could not be read (their cells are then empty). For TFRecords the
        key is `file index * 2**40 + record index`, and a missing record
        raises `StopIteration`.
        """
        if self.manifest is not None:
            return self._eager_manifest_raw(key)
        raw, _, _ = self._eager_record(key)
        return raw, []

    def _eager_manifest_raw(self, index):
        cells, _ = self._cells_cache()
        raw, problems = {}, []
        for column, kind in self.wanted.items():
            value = cells[column][index]
            if kind in ("file", "files"):
                paths = value if kind == "files" else [value]
                contents = []
                for path in paths:
                    if not path:
                        contents.append(b"")
                        continue
                    try:
                        contents.append(tfrecords.read_bytes(path))
                    except (tf.errors.NotFoundError, FileNotFoundError,
                            OSError):
                        for inp in self.inputs:
                            if column in inp.columns.values():
                                problems.append(bad_input_lib.Problem(
                                    index, inp.name, column, "missing_file",
                                    f"{path} does not exist"))
                        contents = None
                        break
                if contents is None:
                    value = _empty_of(kind)
                elif kind == "file":
                    value = tf.constant(contents[0])
                else:
                    value = tf.constant(contents, tf.string) if contents \
                        else tf.zeros([0], tf.string)
            elif kind == "float":
                value = tf.constant(value, tf.float32)
            else:
                value = tf.constant(value, tf.string)
            raw[column] = value
        return raw, problems

    def _cells_cache(self):
        if getattr(self, "_cells", None) is None:
            self._cells = self._manifest_cells()
        return self._cells

    def _eager_record(self, key):
        fid, rec = divmod(key, _KEY_SHIFT)
        ds = tf.data.TFRecordDataset(self.files[fid], self.compression)
        serialized = next(iter(ds.skip(rec).take(1)))
        _, raw, labels, extra = self._decode_record(
            tf.constant(key, tf.int64), serialized)
        return raw, labels, extra

    def _apply_policy(self, found):
        problems, where = found["problems"], found["where"]
        report = bad_input_lib.BadInputReport(
            self.source_name, self.policy, self.max_report_rows)
        report.total = found["total"]
        skip, blank = [], {}
        first = None
        for key in sorted(problems):
            items = problems[key]
            has_label = any(p.reason in bad_input_lib.LABEL_REASONS
                            for p in items)
            if self.policy == "error":
                action = "error"
            elif self.policy == "skip" or has_label:
                action = "skipped"
            else:
                action = "marked_missing"
            if action == "skipped":
                skip.append(key)
                report.skipped += 1
            for p in items:
                entry_action = action
                if action == "marked_missing" and \
                        p.reason in bad_input_lib.LABEL_REASONS:
                    entry_action = "skipped"
                if entry_action == "marked_missing" and p.reason in (
                        "missing_file", "decode_error", "sample_rate"):
                    for inp in self.inputs:
                        if inp.name == p.input:
                            for c in inp.columns.values():
                                blank.setdefault(c, set()).add(key)
                info = dict(where.get(key, {}))
                info.pop("missing_files", None)
                report.add(input=p.input, reason=p.reason,
                           column=p.column, detail=p.detail,
                           action=entry_action, **info)
                if first is None:
                    first = dict(info, input=p.input, reason=p.reason,
                                 column=p.column, detail=p.detail)
        self.report = report
        self._decisions = {"skip": sorted(skip),
                           "blank": {c: sorted(k) for c, k in blank.items()}}
        report.log(logger)
        if self.report_path:
            report.write_json(self.report_path)
        if first is not None and self.policy == "error":
            raise bad_input_lib.to_error(first)
        for inp in self.inputs:
            n = report.count(inp.name, "decode_error") + \
                report.count(inp.name, "sample_rate")
            if report.total >= 2 and n == report.total:
                raise DataError(
                    f"every example of input {inp.name!r} fails to decode "
                    f"({report.rows[0]['detail'] if report.rows else ''}); "
                    "the preprocessor's configuration does not match the "
                    f"data in column(s) {inp.column_names()}",
                    file=self.source_name, column=inp.column_names(),
                    reason="decode_error")
        if report.total and report.skipped == report.total:
            raise DataError("every example has bad input and was skipped; "
                            "see the report above", file=self.source_name)

    # -------------------------------------------------------------- datasets
    def dataset(self, batch_size=32, *, training=False, shuffle=False,
                seed=None, cache=None, deterministic=True,
                drop_remainder=False, prefetch=True, cycle_length=None,
                service=None, service_mode="parallel_epochs",
                service_job_name=None, input_context=None):
        """A `tf.data.Dataset` of `(features, labels)` batches.

        Args:
            batch_size: examples per batch (per replica under
                `distribute`).
            training: passed to `parse` / `transform` (random crops and
                augmentation only when True).
            shuffle: False, True (buffer of the whole set, at most 10000) or
                a buffer size; the rows (or TFRecord records) are shuffled
                before they are read, or the parsed examples after the
                cache.
            seed: the shuffle's seed (same seed + `deterministic` = same
                order in every run) and, with `training`, that of the random
                draws: each example's crops are stateless functions of
                (seed, pass, example), whatever the batch size, threads or
                replicas; batch augmentations of (seed, pass, batch). Each
                pass over the dataset draws anew.
            cache: None, `"memory"` or a file path prefix (cached after
                parsing, before shuffling; random crops of `parse` are then
                frozen at their first-epoch values).
            deterministic: keep the element order of the parallel
                map/interleave (False is faster, order may vary).
            drop_remainder: drop a last partial batch so the batch dimension
                is static (TPU / XLA).
            prefetch: prefetch batches (AUTOTUNE).
            cycle_length: TFRecord files read at once (default AUTOTUNE;
                1 reads them one after the other, in row order).
            service: tf.data service dispatcher address
                (`"grpc://host:port"`): the batches are produced by its
                workers.
            service_mode: `"parallel_epochs"` or `"distributed_epoch"`.
            service_job_name: shares one job between several consumers.
            input_context: a `tf.distribute.InputContext` (set by
                `distribute`): reads only this input pipeline's shard.
        """
        self.validate()
        skip = self._decisions["skip"]
        blank = self._decisions["blank"]
        options = tf.data.Options()
        options.deterministic = bool(deterministic)
        if self.manifest is not None:
            cells, labels = self._cells_cache()
            skipped = set(skip)
            indices = [i for i in range(len(self.manifest))
                       if i not in skipped]
            if blank:
                cells = {c: list(v) for c, v in cells.items()}
                for column, keys in blank.items():
                    kind = self.wanted[column]
                    for k in keys:
                        cells[column][k] = [] if kind == "files" else (
                            math.nan if kind == "float" else "")
            ds = self._manifest_dataset(indices, cells, labels)
            if input_context is not None and \
                    input_context.num_input_pipelines > 1:
                ds = ds.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
            filled = {column for column, kind in self.wanted.items()
                      if kind == "file" and
                      all(cells[column][i] for i in indices)}

            def load(element):
                return self._load_manifest_element(element, filled)
        else:
            files_ds, shard_records = self._tfrecord_files_dataset(
                input_context)
            ds = self._records(files_ds, cycle_length or AUTOTUNE,
                               deterministic)
            if shard_records:
                ds = ds.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
            if skip:
                skip_keys = tf.constant(skip, tf.int64)
                ds = ds.filter(lambda k, s: tf.logical_not(
                    _in_sorted(k, skip_keys)))
            blank_keys = {c: tf.constant(k, tf.int64)
                          for c, k in blank.items()}

            def load(element):
                key, raw, labels, _ = self._decode_record(*element)
                raw = dict(raw)
                for column, keys in blank_keys.items():
                    empty = _empty_of(
                        {"key": "string"}.get(self.wanted[column],
                                              self.wanted[column]))
                    raw[column] = tf.cond(_in_sorted(key, keys),
                                          lambda e=empty: e,
                                          lambda c=column: raw[c])
                return key, raw, labels

        signature = self._loop_signature(training)

        def parse_one(item):
            # In training each element comes with a random int64 (see
            # below): the example's random draws are stateless functions of
            # (that number, its key), whatever the thread timing, batching
            # or number of replicas.
            element, draw = item if training else (item, None)
            key, raw, labels = load(element)
            seed = None if draw is None else tf.stack(
                [draw, tf.cast(key, tf.int64)])
            features = {}
            for i, inp in enumerate(self.inputs):
                input_seed = _input_seed(seed, i)
                if inp.pre.batched_parse:   # parsed after the loop
                    features[inp.name] = {"raw": inp.raw(raw)}
                    if input_seed is not None:
                        features[inp.name]["seed"] = input_seed
                else:
                    features[inp.name] = inp.pre.parse(
                        inp.raw(raw), training=training, seed=input_seed)
            if not self.labels:
                return features
            return features, labels   # encoded after the loop, batched

        def parse_batch(*items):
            # ONE element at a time, inside the graph: a while loop costs far
            # less per example than a tf.data function call per example.
            # Preprocessors that decode whole batches get the raw batch.
            item = items[0] if len(items) == 1 else items
            parsed = tf.map_fn(parse_one, item,
                               fn_output_signature=signature)
            parsed = parsed if isinstance(parsed, tuple) else (parsed,)
            features = dict(parsed[0])
            for inp in self.inputs:
                if inp.pre.batched_parse:
                    loop = features[inp.name]
                    features[inp.name] = inp.pre.parse_batch(
                        loop["raw"], training=training,
                        seeds=loop.get("seed"))
            if not self.labels:
                return (features,)
            return features, {lab.head: lab.encode(parsed[1][lab.head])
                              for lab in self.labels}

        def batch_seed(draws):
            # The batch's augmentation draws (transform): from its elements'.
            return tf.stack([draws[0], tf.reduce_sum(draws)])

        if training:
            ds = _with_draws(ds, seed)
        batch_size = int(batch_size)
        if cache is None:
            ds = self._shuffle(ds, shuffle, seed)
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            ds = ds.map(
                lambda *e: self._transform(
                    parse_batch(*e), training,
                    batch_seed(e[-1]) if training else None),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        else:
            ds = ds.batch(batch_size).map(
                parse_batch, num_parallel_calls=AUTOTUNE,
                deterministic=deterministic).unbatch()
            if cache == "memory":
                ds = ds.cache()
            else:
                path = os.fspath(cache)
                if input_context is not None and \
                        input_context.num_input_pipelines > 1:
                    path = f"{path}-{input_context.input_pipeline_id}"
                ds = ds.cache(path)
            ds = self._shuffle(ds, shuffle, seed)
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            if training:
                ds = _with_draws(ds, seed).map(
                    lambda x, draw: self._transform(
                        x, training, tf.stack([draw, tf.zeros_like(draw)])),
                    num_parallel_calls=AUTOTUNE, deterministic=deterministic)
            else:
                ds = ds.map(lambda *x: self._transform(x, training),
                            num_parallel_calls=AUTOTUNE,
                            deterministic=deterministic)
        if service is not None:
            ds = ds.apply(tf.data.experimental.service.distribute(
                processing_mode=service_mode, service=service,
                job_name=service_job_name))
        if prefetch:
            ds = ds.prefetch(AUTOTUNE)
        return ds.with_options(options)

    def _shuffle(self, ds, shuffle, seed):
        if not shuffle:
            return ds
        if shuffle is True:
            n = self.num_examples()
            buffer = min(n if n else 10000, 10000)
        else:
            buffer = int(shuffle)
        return ds.shuffle(max(buffer, 1), seed=seed,
                          reshuffle_each_iteration=True)

    def _loop_signature(self, training):
        """What the per-example loop (`tf.map_fn`) gives for ONE example:
        `parse`'s outputs, or the raw value (and, in training, the seed) of
        inputs whose preprocessor parses whole batches; the raw labels."""
        features = {}
        for inp in self.inputs:
            if inp.pre.batched_parse:
                features[inp.name] = {"raw": inp.pre.example_signature()}
                if training:
                    features[inp.name]["seed"] = tf.TensorSpec([2], tf.int32)
            else:
                features[inp.name] = inp.pre.parsed_signature()
        if not self.labels:
            return features
        return features, {lab.head: lab.raw_spec() for lab in self.labels}

    def _transform(self, batch, training, seed=None):
        parsed = batch[0]
        features = {}
        for i, inp in enumerate(self.inputs):
            features.update(inp.pre.transform(parsed[inp.name],
                                              training=training,
                                              seed=_input_seed(seed, i)))
        if self.presence_mask:
            features["presence"] = tf.stack(
                [tf.cast(features[n + "_present"], tf.float32)
                 for n in self.presence_order], axis=1)
        if self.input_names is not None:
            unknown = [n for n in self.input_names if n not in features]
            if unknown:
                raise ValueError(
                    f"Pipeline: input_names {unknown} are not produced; the "
                    f"preprocessors give {sorted(features)}")
            features = {n: features[n] for n in self.input_names}
        elif not self.keep_present:
            names = {inp.name + "_present" for inp in self.inputs}
            features = {k: v for k, v in features.items() if k not in names}
        if len(batch) == 1:
            return features
        return features, batch[1]

    def distribute(self, strategy, global_batch_size, **options):
        """A distributed dataset: one input pipeline per worker, sharded.

        Uses `strategy.distribute_datasets_from_function`; each input
        pipeline reads its shard (`InputContext.input_pipeline_id`: TFRecord
        files, else examples) and batches `global_batch_size /
        num_replicas_in_sync` examples per replica. `options` are those of
        `dataset`.
        """
        self.validate()

        def dataset_fn(context):
            per_replica = context.get_per_replica_batch_size(
                global_batch_size)
            return self.dataset(per_replica, input_context=context,
                                **options)

        return strategy.distribute_datasets_from_function(dataset_fn)

    # -------------------------------------------------------------- iterate
    def iterate(self, **options):
        """Iterates one pass of `dataset(**options)` in Python.

        A tf error during the pass (e.g. a file removed after the bad-input
        check) is raised as a `DataError` naming the row and column when the
        message allows. The bad-input report is logged at the end of the
        pass.
        """
        ds = self.dataset(**options)      # checks now, not at first next()
        return self._iterate(ds)

    def _iterate(self, ds):
        it = iter(ds)
        count = 0
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except tf.errors.OpError as e:
                raise self.explain_error(e) from e
            count += 1
            yield batch
        logger.info("end of pass over %s: %d batch(es)", self.source_name,
                    count)
        if self.report is not None:
            self.report.log(logger)

    def explain_error(self, error):
        """A DataError for a tf error raised while reading this pipeline."""
        message = bad_input_lib.clean_tf_message(
            getattr(error, "message", error))
        full = str(getattr(error, "message", error))
        row = column = None
        file = self.source_name
        if self.manifest is not None:
            cells, _ = self._cells_cache()
            for col, kind in self.wanted.items():
                if kind not in ("file", "files"):
                    continue
                for i, cell in enumerate(cells[col]):
                    paths = cell if isinstance(cell, list) else [cell]
                    if any(p and p in full for p in paths):
                        row, column = i + 1, col
                        break
                if row is not None:
                    break
        reason = "missing_file" if isinstance(
            error, tf.errors.NotFoundError) else "decode_error"
        match = re.search(r"label of head \\?'([^'\\]+)\\?':\] "
                          r"\[([^\]]*)\]", full)
        if match and column is None:
            reason = "unknown_label"
            head, value = match.group(1), match.group(2)
            for lab in self.labels:
                if lab.head != head:
                    continue
                column = ", ".join(lab.columns)
                if self.manifest is not None:
                    _, labels = self._cells_cache()
                    row = next((i + 1 for i, v in enumerate(labels[head])
                                if v == value), None)
        return DataError(
            f"the input pipeline failed after the bad-input check: "
            f"{message}. A file may have changed or been removed since the "
            "check (run it again: Pipeline.validate(force=True)), or the "
            "check was turned off (validate=False)", file=file, row=row,
            column=column, reason=reason)


def _classify(error):
    message = str(getattr(error, "message", error)).lower()
    if isinstance(error, tf.errors.NotFoundError):
        return "missing_file"
    if "sample rate" in message or "sample_rate" in message:
        return "sample_rate"
    return "decode_error"


def _is_empty(value):
    value = np.asarray(value)
    if value.dtype.kind in ("S", "O", "U"):
        return all(len(v) == 0 for v in value.reshape([-1]))
    return bool(np.all(np.isnan(value.astype(np.float64))))


_PIPELINE_ARGS = ("columns", "labels", "bad_input", "report_path",
                  "max_report_rows", "presence_mask", "presence_order",
                  "input_names", "keep_present", "validate", "column_types",
                  "column_kinds")


def _split(kwargs):
    pipe = {k: kwargs.pop(k) for k in list(kwargs) if k in _PIPELINE_ARGS}
    return pipe, kwargs


def make_dataset(source, preprocessors, batch_size=32, **kwargs):
    """`Pipeline(source, preprocessors, ...).dataset(batch_size, ...)`.

    Keyword arguments go to `Pipeline` (columns, labels, bad_input,
    report_path, presence_mask, ...) or to `Pipeline.dataset` (training,
    shuffle, seed, cache, deterministic, drop_remainder, service, ...).

    Example:

    >>> ds = make_dataset("train.csv", {"image": image_pre}, batch_size=32,
    ...                   labels={"digit": {"num_classes": 10}},
    ...                   shuffle=True, seed=0)          # doctest: +SKIP
    """
    pipe, options = _split(dict(kwargs))
    return Pipeline(source, preprocessors, **pipe).dataset(batch_size,
                                                           **options)


def make_distributed(strategy, source, preprocessors, global_batch_size,
                     **kwargs):
    """A distributed dataset for `strategy` (see `Pipeline.distribute`)."""
    pipe, options = _split(dict(kwargs))
    return Pipeline(source, preprocessors, **pipe).distribute(
        strategy, global_batch_size, **options)
