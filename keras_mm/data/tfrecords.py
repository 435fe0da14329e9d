"""TFRecord shards of `tf.train.Example`: encoding, decoding, conversion.

Each manifest column is stored under its own name with a *kind*:

- `"file"`: one path -> the file's bytes (no value for an empty cell) ->
  decoded as a `tf.string` scalar (`""` when there is none);
- `"files"`: a list of paths -> the files' bytes, in order -> `tf.string`
  `[n]`;
- `"string"`: text -> UTF-8 bytes -> `tf.string` scalar;
- `"float"`: a number -> one float32 (NaN for an empty cell) -> `tf.float32`
  scalar;
- `"int"`: an integer -> one int64 -> `tf.int64` scalar;
- `"floats"`: a list of numbers -> float32 list -> `tf.float32` `[n]`.

Two bookkeeping features are added: `_row` (the 1-based manifest row) and
`_missing_files` (names of the file columns whose file did not exist at
conversion time, so the pipeline reports them as `missing_file` instead of
seeing an empty value). The folder also gets `features.json` describing the
columns; `keras_mm.data.pipeline` reads it, so TFRecord shards need no
extra arguments.

The decoded dict equals what the manifest-based pipeline builds from the
same row (the same bytes, the same float32 values), so both give bitwise
equal model inputs.
"""

import concurrent.futures
import json
import math
import os
import posixpath
import threading
import uuid

import tensorflow as tf
import tqdm

from keras_mm.data.manifest import Manifest
from keras_mm.errors import DataError

KINDS = ("file", "files", "string", "float", "int", "floats")
ROW_KEY = "_row"
MISSING_KEY = "_missing_files"
INFO_FILE = "features.json"
FORMAT = "keras_mm.tfrecords/1"
SHARD_SUFFIX = ".tfrecord"

_MANIFEST_KIND = {"path": "file", "paths": "files", "string": "string",
                  "float": "float", "int": "int"}


def _join(folder, name):
    if "://" in folder:
        return posixpath.join(folder, name)
    return os.path.join(folder, name)


def check_kinds(kinds, where="columns"):
    for column, kind in kinds.items():
        if kind not in KINDS:
            raise ValueError(f"{where}[{column!r}]={kind!r} is not one of "
                             f"{', '.join(KINDS)}")
    return dict(kinds)


def feature_spec(kinds):
    """`{column: kind}` -> the parsing spec of `tf.io.parse_single_example`."""
    check_kinds(kinds)
    spec = {ROW_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=0),
            MISSING_KEY: tf.io.VarLenFeature(tf.string)}
    for column, kind in kinds.items():
        if kind in ("file", "string"):
            spec[column] = tf.io.FixedLenFeature([], tf.string,
                                                 default_value="")
        elif kind == "files":
            spec[column] = tf.io.VarLenFeature(tf.string)
        elif kind == "float":
            spec[column] = tf.io.FixedLenFeature([], tf.float32,
                                                 default_value=math.nan)
        elif kind == "int":
            spec[column] = tf.io.FixedLenFeature([], tf.int64,
                                                 default_value=0)
        elif kind == "floats":
            spec[column] = tf.io.VarLenFeature(tf.float32)
    return spec


def decode_example(serialized, kinds):
    """Parses one serialized Example into `{column: tensor}` (in-graph).

    Also returns `_row` (int64) and `_missing_files` (`tf.string` `[n]`).
    """
    parsed = tf.io.parse_single_example(serialized, feature_spec(kinds))
    out = {}
    for key, value in parsed.items():
        if isinstance(value, tf.SparseTensor):
            value = tf.sparse.to_dense(value)
        out[key] = value
    return out


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def read_bytes(path):
    """The content of a file (any `tf.io.gfile` path)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def encode_example(values, kinds, row=None, missing_files=()):
    """`{column: value}` -> a `tf.train.Example`.

    `values` holds, per kind: `file` the file's bytes (or None / `b""` for
    no value), `files` a list of bytes, `string` a str, `float` a float,
    `int` an int, `floats` a list of floats.
    """
    check_kinds(kinds)
    feature = {}
    for column, kind in kinds.items():
        v = values.get(column)
        if kind == "file":
            # No value: the key is left out (a FixedLenFeature only takes
            # its default for an absent key, not for an empty list).
            if v not in (None, b""):
                feature[column] = _bytes([bytes(v)])
        elif kind == "files":
            feature[column] = _bytes([bytes(b) for b in (v or [])])
        elif kind == "string":
            v = "" if v is None else v
            feature[column] = _bytes(
                [v if isinstance(v, bytes) else str(v).encode("utf-8")])
        elif kind == "float":
            feature[column] = _floats([math.nan if v is None else float(v)])
        elif kind == "int":
            feature[column] = _ints([int(v)])
        elif kind == "floats":
            feature[column] = _floats([float(x) for x in (v or [])])
    if row is not None:
        feature[ROW_KEY] = _ints([int(row)])
    if missing_files:
        feature[MISSING_KEY] = _bytes([c.encode() for c in missing_files])
    return tf.train.Example(features=tf.train.Features(feature=feature))


def manifest_kinds(manifest, columns=None, file_columns=()):
    """The `{column: kind}` used to convert `manifest`.

    `columns` (a list of names or a `{column: kind}` dict) picks and types
    columns; `file_columns` names columns holding file paths. Other
    columns take their kind from the manifest's column type.
    """
    if columns is None:
        columns = list(manifest.columns)
    if not isinstance(columns, dict):
        columns = {c: None for c in columns}
    kinds = {}
    for column, kind in columns.items():
        manifest._check_column(column)
        if kind is None:
            if column in file_columns:
                kind = "files" if manifest.column_types[column] in (
                    "paths", "list") else "file"
            else:
                mtype = manifest.column_types[column]
                if mtype == "list":
                    raise ValueError(
                        f"column {column!r} holds lists: give its kind "
                        "('files' or 'floats') in columns=")
                kind = _MANIFEST_KIND[mtype]
        kinds[column] = kind
    for column in file_columns:
        if column not in kinds:
            raise ValueError(f"file_columns names {column!r}, which is not "
                             "among the converted columns")
    return check_kinds(kinds)


def shard_ranges(num_examples, num_shards):
    """Contiguous `(start, stop)` row ranges of each shard."""
    return [(k * num_examples // num_shards,
             (k + 1) * num_examples // num_shards)
            for k in range(num_shards)]


def shard_name(prefix, index, num_shards):
    return f"{prefix}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def _load_row(manifest, cells, index, kinds, on_missing_file):
    """Python values and missing file columns of one manifest row."""
    values, missing = {}, []
    for column, kind in kinds.items():
        if kind == "file":
            path = cells[column][index]
            if not path:
                values[column] = None
            elif tf.io.gfile.exists(path):
                values[column] = read_bytes(path)
            else:
                values[column] = None
                missing.append(_missing(manifest, index, column, path,
                                        on_missing_file))
        elif kind == "files":
            contents = []
            for path in cells[column][index]:
                if tf.io.gfile.exists(path):
                    contents.append(read_bytes(path))
                else:
                    missing.append(_missing(manifest, index, column, path,
                                            on_missing_file))
                    contents = []
                    break
            values[column] = contents
        else:
            values[column] = cells[column][index]
    return values, missing


def _refuse_outside(manifest, kinds):
    """Raises a DataError for the first file path outside the manifest's
    folder (checked for every row before any file is read)."""
    for column, kind in kinds.items():
        if kind not in ("file", "files"):
            continue
        outside = manifest.outside_paths(column, kind == "files")
        if outside:
            index = min(outside)
            more = f" ({len(outside)} such rows)" if len(outside) > 1 else ""
            raise DataError(
                f"the path resolves to {outside[index]}, outside the "
                f"manifest's folder {manifest.root}{more}; refused because "
                "allow_paths_outside is off (the default for convert). "
                "Move the files into the manifest's folder, or, for a "
                "trusted manifest, pass --allow-paths-outside "
                "(allow_paths_outside=True)", file=manifest.name(),
                row=index + 1, column=column, reason="path_outside")


def _missing(manifest, index, column, path, on_missing_file):
    if on_missing_file == "error":
        raise DataError(
            f"file {path} does not exist; fix the path, or convert with "
            "on_missing_file='record' to let the pipeline's bad_input policy "
            "handle it", file=manifest.name(), row=index + 1, column=column,
            reason="missing_file")
    return column


def convert_manifest_to_tfrecords(manifest, out_dir, num_shards, columns=None,
                                  file_columns=(), num_workers=None,
                                  overwrite=False, progress=True,
                                  prefix="data", compression=None,
                                  on_missing_file="record",
                                  allow_paths_outside=False):
    """Writes a manifest's rows as `num_shards` TFRecord shards.

    Parallel: shards are written by `num_workers` threads
    (`concurrent.futures`). Resumable: each shard is written to a temporary
    name and renamed when complete; shards already present are kept and
    skipped on a rerun (delete a shard to have it rewritten). The folder's
    `features.json` records the manifest's hash, and a rerun against another
    manifest or other columns raises unless `overwrite=True`. A `tqdm`
    progress bar counts examples.

    Args:
        manifest: a `Manifest` or the path of a CSV/JSONL manifest.
        out_dir: output folder (any `tf.io.gfile` path, `gs://` included).
        num_shards: number of shards (rows are split into contiguous runs,
            so shard order is row order).
        columns: columns to store (default all), a list or `{column: kind}`.
        file_columns: columns holding file paths (stored as file bytes).
        num_workers: writer threads (default `min(num_shards, cpu count)`).
        overwrite: rewrite every shard.
        progress: show a progress bar.
        prefix: shard file prefix: `{prefix}-00000-of-00004.tfrecord`.
        compression: None, `"GZIP"` or `"ZLIB"`.
        on_missing_file: `"record"` (store no bytes and list the column in
            `_missing_files`, reported by the pipeline as `missing_file`) or
            `"error"` (raise a `DataError` naming the row and column).
        allow_paths_outside: embed files whose paths resolve (symlinks
            followed) outside the manifest's folder. False (default): the
            conversion is refused before anything is written, naming the
            row, column and path - a manifest from an untrusted source
            could otherwise copy any readable file (`../../etc/passwd`)
            into the shards.

    Returns:
        dict with `shards` (all shard paths), `written`, `skipped`,
        `num_examples`, `missing_files` (rows x columns recorded missing in
        the shards written now) and `info` (the `features.json` content).

    Example:

    >>> convert_manifest_to_tfrecords("train.csv", "shards/", num_shards=4,
    ...                               file_columns=["image"])  # doctest: +SKIP
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    num_shards = int(num_shards)
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards}: give at least 1")
    if on_missing_file not in ("record", "error"):
        raise ValueError(f"on_missing_file={on_missing_file!r} is not one of "
                         "'record', 'error'")
    kinds = manifest_kinds(manifest, columns, tuple(file_columns))
    if not allow_paths_outside:
        _refuse_outside(manifest, kinds)
    out_dir = os.fspath(out_dir)
    tf.io.gfile.makedirs(out_dir)
    ranges = shard_ranges(len(manifest), num_shards)
    info = {
        "format": FORMAT,
        "columns": kinds,
        "num_shards": num_shards,
        "num_examples": len(manifest),
        "shard_sizes": [b - a for a, b in ranges],
        "prefix": prefix,
        "compression": compression,
        "manifest": manifest.name(),
        "manifest_hash": manifest.content_hash(),
    }
    info_path = _join(out_dir, INFO_FILE)
    if tf.io.gfile.exists(info_path) and not overwrite:
        with tf.io.gfile.GFile(info_path) as f:
            old = json.load(f)
        keys = ("columns", "num_shards", "prefix", "compression",
                "manifest_hash")
        changed = [k for k in keys if old.get(k) != info[k]]
        if changed:
            raise DataError(
                f"{out_dir} holds shards of another conversion (different "
                f"{', '.join(changed)}); pass overwrite=True or use another "
                "folder", file=info_path)
    _atomic_write(info_path, json.dumps(info, indent=2).encode())

    # Typed column values, computed once (paths resolved).
    cells = {}
    for column, kind in kinds.items():
        if kind in ("file", "files"):
            cells[column] = manifest.paths(column, kind == "files")
        elif kind == "floats":
            cells[column] = manifest.column(column, "list")
        else:
            cells[column] = manifest.column(column, kind)

    shards = [_join(out_dir, shard_name(prefix, k, num_shards))
              for k in range(num_shards)]
    for name in tf.io.gfile.listdir(out_dir):
        if name.startswith(prefix + "-") and ".tmp-" in name:
            tf.io.gfile.remove(_join(out_dir, name))   # a crashed run's
    todo = [k for k in range(num_shards)
            if overwrite or not tf.io.gfile.exists(shards[k])]
    skipped = [shards[k] for k in range(num_shards) if k not in todo]
    done = sum(ranges[k][1] - ranges[k][0] for k in range(num_shards)
               if k not in todo)
    bar = tqdm.tqdm(total=len(manifest), initial=done, unit="ex",
                    desc=f"TFRecords -> {out_dir}", disable=not progress)
    lock = threading.Lock()
    options = tf.io.TFRecordOptions(compression_type=compression or "")

    def write_shard(k):
        start, stop = ranges[k]
        tmp = f"{shards[k]}.tmp-{uuid.uuid4().hex[:8]}"
        missing = 0
        try:
            with tf.io.TFRecordWriter(tmp, options) as writer:
                for i in range(start, stop):
                    values, missing_cols = _load_row(manifest, cells, i, kinds,
                                                     on_missing_file)
                    missing += len(missing_cols)
                    example = encode_example(values, kinds, row=i + 1,
                                             missing_files=missing_cols)
                    writer.write(example.SerializeToString())
                    with lock:
                        bar.update(1)
            tf.io.gfile.rename(tmp, shards[k], overwrite=True)
        except BaseException:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
            raise
        return missing

    workers = num_workers or min(len(todo) or 1, os.cpu_count() or 1)
    missing_total = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            for n in pool.map(write_shard, todo):
                missing_total += n
    finally:
        bar.close()
    return {"shards": shards, "written": [shards[k] for k in todo],
            "skipped": skipped, "num_examples": len(manifest),
            "missing_files": missing_total, "info": info}


def _atomic_write(path, data):
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def list_shards(pattern):
    """Sorted TFRecord files of a file, folder, glob or list of them."""
    if isinstance(pattern, (list, tuple)):
        files = []
        for p in pattern:
            files.extend(list_shards(p))
        return files
    pattern = os.fspath(pattern)
    if tf.io.gfile.isdir(pattern):
        files = tf.io.gfile.glob(_join(pattern, "*" + SHARD_SUFFIX + "*"))
    else:
        files = tf.io.gfile.glob(pattern)
    files = sorted(f for f in files if ".tmp-" not in f
                   and not f.endswith(INFO_FILE))
    if not files:
        raise DataError(f"no TFRecord files match {pattern!r}; check the "
                        "path (a file, folder or glob)", file=pattern,
                        reason="missing_file")
    return files


def read_info(files):
    """The `features.json` next to the first shard (or None)."""
    folder = os.path.dirname(files[0]) if "://" not in files[0] \
        else posixpath.dirname(files[0])
    path = _join(folder, INFO_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        info = json.load(f)
    info["path"] = path
    return info
