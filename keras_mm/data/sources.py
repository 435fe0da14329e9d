"""Where examples come from: manifests and TFRecord shards.

`ManifestSource` and `TFRecordSource` turn a source into datasets of
`(key, raw, labels)` elements (files read, values converted by
`keras_mm.data.record_values`, nothing parsed).
"""

import math
import os

import numpy as np
import tensorflow as tf

from keras_mm.data import tfrecords
from keras_mm.data.record_values import float_values
from keras_mm.data.record_values import key_strings
from keras_mm.data.record_values import manifest_floats
from keras_mm.data.record_values import manifest_keys
from keras_mm.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".txt")
KEY_SHIFT = 2 ** 32   # TFRecord example key = file index * 2**32 + record


# ------------------------------------------------------------------ helpers
def read_file_or_empty(path):
    return tf.cond(tf.strings.length(path) > 0,
                   lambda: tf.io.read_file(path), lambda: tf.constant(""))


def empty_of(kind):
    """The empty raw value of a wanted kind (a blanked cell)."""
    if kind in ("file", "string", "key"):
        return tf.constant("")
    if kind == "files":
        return tf.zeros([0], tf.string)
    if kind == "float":
        return tf.constant(math.nan, tf.float32)
    if kind == "floats":
        return tf.zeros([0], tf.float32)
    return tf.constant(0, tf.int64)


def in_sorted(key, sorted_keys):
    """Whether scalar int64 `key` is in the sorted constant `sorted_keys`."""
    n = sorted_keys.shape[0]
    i = tf.searchsorted(sorted_keys, tf.reshape(key, [1]))[0]
    i = tf.minimum(i, n - 1)
    return tf.equal(tf.gather(sorted_keys, i), key)


def shard(ds, input_context):
    """`ds` sharded between the input pipelines of `input_context`."""
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines,
                      input_context.input_pipeline_id)
    return ds


def _label_values(labels, raw):
    out = {}
    for lab in labels:
        if lab.type == "regression":
            out[lab.head] = tf.stack([raw[c] for c in lab.columns])
        else:
            out[lab.head] = raw[lab.columns[0]]
    return out


# ----------------------------------------------------------------- manifest
class ManifestSource:
    """A `Manifest`'s examples: converted cells, then `(key, raw, labels)`
    elements. `wanted`: `{column: wanted kind}`; `labels`: `HeadLabel`s."""

    def __init__(self, manifest, wanted, labels, allow_paths_outside=True):
        self.manifest = manifest
        self.wanted = wanted
        self.labels = labels
        self.allow_paths_outside = bool(allow_paths_outside)
        self._cells = None
        self._outside = None
        for column in wanted:
            manifest._check_column(column)
        manifest.check_rows()

    def name(self):
        return self.manifest.name()

    def num_examples(self):
        return len(self.manifest)

    def cells(self):
        """`(cells, labels)`: per column the converted cells (paths, key
        strings, floats), per head the raw label values; computed once."""
        if self._cells is None:
            m = self.manifest
            cells = {}
            for column, kind in self.wanted.items():
                if kind in ("file", "files"):
                    cells[column] = m.paths(column, as_list=kind == "files")
                elif kind == "string":
                    cells[column] = m.column(column, "string")
                elif kind == "key":
                    cells[column] = manifest_keys(m, column)
                else:
                    cells[column] = manifest_floats(m, column)
            labels = {lab.head: lab.manifest_values(cells)
                      for lab in self.labels}
            # Paths outside the manifest's folder are never read: their
            # cells are blanked here, and `outside()` reports them.
            for (index, column) in self.outside():
                cells[column][index] = [] if self.wanted[column] == \
                    "files" else ""
            self._cells = cells, labels
        return self._cells

    def outside(self):
        """`{(row index, column): resolved path}` of the file cells outside
        the manifest's folder when refused (`allow_paths_outside=False`)."""
        if self._outside is None:
            self._outside = {} if self.allow_paths_outside else \
                self.manifest.outside_cells(self.wanted)
        return self._outside

    def where(self, index):
        info = {"file": self.manifest.name(), "row": index + 1}
        line = self.manifest.line(index)
        if line is not None:
            info["line"] = line
        return info

    def dataset(self, indices, cells=None, labels=None):
        """`from_tensor_slices` of the cells of the rows at `indices`."""
        if cells is None:
            cells, labels = self.cells()
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

    def load(self, element, filled=()):
        """Reads the files of one element -> `(key, raw, labels)`.
        `filled`: file columns with a path in every row (read untested)."""
        raw = {}
        for column, kind in self.wanted.items():
            value = element["c/" + column]
            if kind == "file" and column in filled:
                value = tf.io.read_file(value)
            elif kind == "file":
                value = read_file_or_empty(value)
            elif kind == "files":
                value = tf.map_fn(tf.io.read_file, value,
                                  fn_output_signature=tf.string)
            raw[column] = value
        labels = {lab.head: element["l/" + lab.head] for lab in self.labels}
        return element["_key"], raw, labels

    def raw_dataset(self):
        return self.dataset(list(range(len(self.manifest)))).map(
            self.load, num_parallel_calls=AUTOTUNE)

    def elements(self, decisions, input_context=None, cycle_length=None,
                 deterministic=True):
        """The elements of this input pipeline's shard, rows skipped by
        the bad-input policy left out, and `load(element) -> (key, raw,
        labels)` (cells blanked by the policy read as empty)."""
        del cycle_length, deterministic
        cells, labels = self.cells()
        skipped = set(decisions["skip"])
        indices = [i for i in range(len(self.manifest)) if i not in skipped]
        if decisions["blank"]:
            cells = {c: list(v) for c, v in cells.items()}
            for column, keys in decisions["blank"].items():
                kind = self.wanted[column]
                for k in keys:
                    cells[column][k] = [] if kind == "files" else (
                        math.nan if kind == "float" else "")
        ds = shard(self.dataset(indices, cells, labels), input_context)
        filled = {column for column, kind in self.wanted.items()
                  if kind == "file" and all(cells[column][i] for i in indices)}
        return ds, lambda element: self.load(element, filled)

    def eager_raw(self, index, readers):
        """`(raw, problems)` of one row, read eagerly; `readers(column)`
        gives the inputs reading a column (for missing-file problems)."""
        from keras_mm.data.bad_input import Problem

        cells, _ = self.cells()
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
                        problems.extend(Problem(
                            index, name, column, "missing_file",
                            f"{path} does not exist")
                            for name in readers(column))
                        contents = None
                        break
                if contents is None:
                    value = empty_of(kind)
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

    def fingerprint(self, h):
        h.update(self.manifest.content_hash().encode())
        h.update(f"outside:{self.allow_paths_outside}".encode())
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


# ---------------------------------------------------------------- TFRecords
_ALLOWED_STORED = {"file": ("file",), "files": ("files",),
                   "string": ("string",), "key": ("string", "int", "float"),
                   "float": ("float", "int", "string")}


class TFRecordSource:
    """TFRecord shards: records keyed `file index * 2**32 + record`,
    decoded and converted -> `(key, raw, labels)`. `column_kinds`:
    `{column: stored kind}` (default: the shards' `features.json`)."""

    def __init__(self, files, wanted, labels, column_kinds=None):
        self.files = files
        self.wanted = wanted
        self.labels = labels
        self.info = tfrecords.read_info(files)
        stored = dict(column_kinds or (self.info or {}).get("columns") or {})
        if not stored:
            raise DataError(
                "no features.json next to the TFRecord files: pass "
                "column_kinds={column: kind} (kinds: "
                f"{', '.join(tfrecords.KINDS)})", file=files[0])
        self.stored = tfrecords.check_kinds(stored, "column_kinds")
        self.compression = (self.info or {}).get("compression") or ""
        for column, kind in wanted.items():
            if column not in self.stored:
                raise DataError(
                    f"the TFRecords have no column {column!r}; they hold "
                    f"{', '.join(self.stored)}", file=files[0],
                    column=column, reason="missing_column")
            ok = _ALLOWED_STORED[kind]
            if self.stored[column] not in ok:
                raise DataError(
                    f"column {column!r} is stored as "
                    f"{self.stored[column]!r} but is read as {kind!r} "
                    f"(stored kinds allowed: {', '.join(ok)})",
                    file=files[0], column=column)

    def name(self):
        if len(self.files) == 1:
            return self.files[0]
        return (f"{os.path.dirname(self.files[0])} ({len(self.files)} "
                "TFRecord files)")

    def num_examples(self):
        info = self.info
        if info and info.get("num_examples") is not None and \
                len(self.files) == info.get("num_shards"):
            return int(info["num_examples"])
        return None

    def where(self, key):
        fid, rec = divmod(key, KEY_SHIFT)
        return {"file": self.files[fid], "row": rec + 1}

    def files_dataset(self, input_context=None):
        """`(file id, path)` per shard, and whether the records (not the
        files) must be sharded between the input pipelines."""
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

    def records(self, files_ds, cycle_length=AUTOTUNE, deterministic=False):
        """`(key, serialized)` of the records of `files_ds`."""
        compression = self.compression

        def read(file_id, path):
            records = tf.data.TFRecordDataset(path, compression)
            return records.enumerate().map(
                lambda i, s: (file_id * KEY_SHIFT + i, s))

        return files_ds.interleave(
            read, cycle_length=cycle_length, block_length=1,
            num_parallel_calls=AUTOTUNE, deterministic=deterministic)

    def decode(self, key, serialized):
        """One record -> `(key, raw, labels, extra)`; the values go through
        THE converter (`key_strings`, `float_values`)."""
        parsed = tfrecords.decode_example(serialized, self.stored)
        raw = {}
        for column, kind in self.wanted.items():
            value, stored = parsed[column], self.stored[column]
            if kind == "key":
                value = key_strings(value, stored, column)
            elif kind == "float":
                value = float_values(value, stored, column)
            raw[column] = value
        extra = {"row": parsed[tfrecords.ROW_KEY],
                 "missing": tf.strings.reduce_join(
                     parsed[tfrecords.MISSING_KEY], separator="|")}
        return key, raw, _label_values(self.labels, raw), extra

    def elements(self, decisions, input_context=None, cycle_length=None,
                 deterministic=True):
        """`(key, serialized)` of this input pipeline's shard, records
        skipped by the policy left out, and `load(element) -> (key, raw,
        labels)` (cells blanked by the policy read as empty)."""
        files_ds, shard_records = self.files_dataset(input_context)
        ds = self.records(files_ds, cycle_length or AUTOTUNE, deterministic)
        if shard_records:
            ds = shard(ds, input_context)
        if decisions["skip"]:
            skip_keys = tf.constant(decisions["skip"], tf.int64)
            ds = ds.filter(lambda k, s: tf.logical_not(
                in_sorted(k, skip_keys)))
        blank_keys = {c: tf.constant(k, tf.int64)
                      for c, k in decisions["blank"].items()}

        def load(element):
            key, raw, labels, _ = self.decode(*element)
            raw = dict(raw)
            for column, keys in blank_keys.items():
                empty = empty_of(self.wanted[column])
                raw[column] = tf.cond(in_sorted(key, keys),
                                      lambda e=empty: e,
                                      lambda c=column: raw[c])
            return key, raw, labels

        return ds, load

    def raw_dataset(self):
        files, _ = self.files_dataset()
        return self.records(files, 1, True).map(
            lambda key, serialized: self.decode(key, serialized)[:3])

    def all_keys(self):
        files_ds, _ = self.files_dataset()
        ds = self.records(files_ds).map(lambda k, s: k)
        return [int(k) for k in ds.as_numpy_iterator()]

    def eager_record(self, key):
        """`(raw, labels, extra)` of one record, read eagerly."""
        fid, rec = divmod(key, KEY_SHIFT)
        ds = tf.data.TFRecordDataset(self.files[fid], self.compression)
        serialized = next(iter(ds.skip(rec).take(1)))
        _, raw, labels, extra = self.decode(tf.constant(key, tf.int64),
                                            serialized)
        return raw, labels, extra

    def fingerprint(self, h):
        for path in self.files:
            st = tf.io.gfile.stat(path)
            h.update(f"{path}:{st.length}:{st.mtime_nsec}".encode())
