"""Sensor series files: CSV and `.npy` decoded in-graph, `.ts` read in Python.

`decode_csv_bytes` and `decode_npy_bytes` take the file *contents* (a scalar
string tensor, e.g. from `tf.io.read_file`) and return float32 `[T, C]`
using core TF string ops only, so they run in `tf.data` and in a serving
function. `read_ts` reads the sktime / UEA `.ts` time-series archive format
in Python, for dataset builders (it is not graph code).
"""

import collections
import math
import re

import numpy as np
import tensorflow as tf

from keras_mm.errors import DataError

# A number as tf.io.decode_csv / strtod reads it, or an empty field (NaN).
_NUMBER = (r"\s*([-+]?((\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
           r"|(?i:nan|inf|infinity)))?\s*")


def _numeric_row_pattern(delimiter):
    return f"{_NUMBER}({re.escape(delimiter)}{_NUMBER})*"


def decode_csv_bytes(contents, num_channels, header="auto", delimiter=",",
                     columns=None):
    """Parses CSV file contents into float32 `[T, C]`, in-graph.

    One row per time step, one column per channel. Empty lines are skipped;
    empty fields and `nan` are NaN (missing values).

    Args:
        contents: scalar string tensor, the whole file.
        num_channels: C, the number of channels returned.
        header: True (the first non-empty line is a header), False, or
            `"auto"`: the first line is a header when it is not all numbers.
        delimiter: one-character field delimiter.
        columns: optional list of C column indices to read (default: the
            file must have exactly C columns).

    Returns:
        float32 `[T, num_channels]`.

    Raises:
        tf.errors.InvalidArgumentError (at run time) when a row has the wrong
        number of fields or a field is not a number; the message names the
        record.
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    lines = tf.strings.split(contents, "\n")
    lines = tf.strings.regex_replace(lines, "\r$", "")
    lines = tf.boolean_mask(lines, tf.strings.strip(lines) != "")
    if header == "auto":
        first = tf.concat([lines[:1], ["0"]], 0)[0]
        is_header = tf.logical_not(tf.strings.regex_full_match(
            first, _numeric_row_pattern(delimiter)))
        lines = lines[tf.cast(is_header, tf.int32):]
    elif header:
        lines = lines[1:]
    nan = tf.constant(float("nan"), tf.float32)
    defaults = [[nan]] * int(num_channels)
    fields = tf.io.decode_csv(lines, record_defaults=defaults,
                              field_delim=delimiter,
                              select_cols=list(columns) if columns else None)
    series = tf.stack(fields, axis=-1)
    return tf.ensure_shape(series, [None, int(num_channels)])


# (descr, dtype, little_endian) understood by decode_npy_bytes.
_NPY_TYPES = []
for _code, _dtype in (("f2", tf.float16), ("f4", tf.float32),
                      ("f8", tf.float64), ("i2", tf.int16),
                      ("i4", tf.int32), ("i8", tf.int64), ("u2", tf.uint16)):
    _NPY_TYPES.append(("<" + _code, _dtype, True))
    _NPY_TYPES.append((">" + _code, _dtype, False))
for _code, _dtype in (("u1", tf.uint8), ("i1", tf.int8), ("b1", tf.bool)):
    _NPY_TYPES.append(("|" + _code, _dtype, True))
NPY_DTYPES = tuple(t[0] for t in _NPY_TYPES)


def _bytes_at(contents, pos, length, dtype):
    return tf.io.decode_raw(tf.strings.substr(contents, pos, length),
                            dtype)[0]


def decode_npy_bytes(contents):
    """Parses `.npy` file contents (numpy.save) into float32 `[T, C]`.

    Reads the NPY header (format versions 1-3) in-graph: the dtype (one of
    `NPY_DTYPES`: float16/32/64, int8/16/32/64, uint8/16, bool, either byte
    order), `fortran_order` and the shape. A 1-D array `[T]` becomes
    `[T, 1]`; other ranks are rejected. Values are cast to float32 (exact for
    float32 files; float64 values are rounded to float32).

    Raises:
        tf.errors.InvalidArgumentError (at run time) for a file that is not
        NPY, an unsupported dtype or rank, or truncated data.
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    is_npy = tf.logical_and(
        tf.strings.length(contents) >= 12,
        tf.equal(tf.strings.substr(contents, 0, 6), b"\x93NUMPY"))
    check_magic = tf.debugging.Assert(
        is_npy, ["not a .npy file: the contents do not start with the "
                 "\\x93NUMPY magic string"])
    with tf.control_dependencies([check_magic]):
        contents = tf.identity(contents)
    major = tf.cast(_bytes_at(contents, 6, 1, tf.uint8), tf.int32)
    header_len = tf.where(
        major == 1,
        tf.cast(_bytes_at(contents, 8, 2, tf.uint16), tf.int32),
        _bytes_at(contents, 8, 4, tf.int32))
    header_start = tf.where(major == 1, 10, 12)
    header = tf.strings.substr(contents, header_start, header_len)
    descr = tf.strings.regex_replace(
        header, r"(?s)^.*'descr':\s*'([^']*)'.*$", r"\1")
    shape_text = tf.strings.regex_replace(
        header, r"(?s)^.*'shape':\s*\(([^)]*)\).*$", r"\1")
    fortran = tf.strings.regex_full_match(
        header, r"(?s).*'fortran_order':\s*True.*")
    dims = tf.strings.strip(tf.strings.split(shape_text, ","))
    dims = tf.strings.to_number(tf.boolean_mask(dims, dims != ""), tf.int64)
    dims = tf.cast(dims, tf.int32)
    rank = tf.size(dims)

    matches = tf.stack([tf.equal(descr, d) for d in NPY_DTYPES])
    check = tf.debugging.Assert(
        tf.reduce_any(matches) & ((rank == 1) | (rank == 2)),
        [".npy dtype", descr, "and shape (", shape_text, ") are not "
         "supported: use a 1-D [T] or 2-D [T, C] array of one of",
         " ".join(NPY_DTYPES)])
    with tf.control_dependencies([check]):
        branch = tf.argmax(tf.cast(matches, tf.int32), output_type=tf.int32)
    data = tf.strings.substr(contents, header_start + header_len,
                             tf.strings.length(contents))

    def make_branch(dtype, little_endian):
        def fn():
            values = tf.io.decode_raw(data, dtype,
                                      little_endian=little_endian)
            return tf.cast(tf.reshape(values, [-1]), tf.float32)
        return fn

    values = tf.switch_case(
        branch, [make_branch(d, le) for _, d, le in _NPY_TYPES])
    steps = dims[0]
    channels = tf.where(rank == 2, dims[-1], 1)
    check_size = tf.debugging.Assert(
        tf.equal(tf.size(values), steps * channels),
        [".npy data holds", tf.size(values), "values but the header shape (",
         shape_text, ") needs", steps * channels, "(truncated file?)"])
    with tf.control_dependencies([check_size]):
        values = tf.identity(values)
    series = tf.cond(
        fortran,
        lambda: tf.transpose(tf.reshape(values, [channels, steps])),
        lambda: tf.reshape(values, [steps, channels]))
    return tf.ensure_shape(series, [None, None])


TsData = collections.namedtuple(
    "TsData", ["series", "labels", "class_labels", "metadata"])
TsData.__doc__ = """Contents of a `.ts` file (see `read_ts`).

Fields:
    series: float64 `[N, C, T]` array when all series have one length,
        else a list of N `[C, T_i]` arrays. Missing values (`?`) are NaN.
    labels: array of N label strings (None when the file has no labels).
    class_labels: the `@classLabel` list, or None.
    metadata: dict of the `@` header keys (lower case), values as text.
"""


def read_ts(path, channels_last=False):
    """Reads a `.ts` file of the sktime / UEA-UCR time-series archive.

    Supports the common form: `@`-header lines, `@data`, then one line per
    example with the C dimensions separated by `:` (comma-separated values,
    `?` = missing) and the class label last when `@classLabel true`. The
    `@timeStamps true` form is rejected with a DataError.

    Args:
        path: file path (any `tf.io.gfile` path).
        channels_last: return `[N, T, C]` / `[T_i, C]` (the sensor
            preprocessor's layout) instead of sktime's `[N, C, T]`.

    Returns:
        a `TsData`.

    Raises:
        DataError naming the file and line for malformed content.
    """
    metadata = {}
    rows, labels = [], []
    in_data = False
    with tf.io.gfile.GFile(path, "r") as f:
        lines = f.read().splitlines()
    for line_no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not in_data:
            if not text.startswith("@"):
                raise DataError(f"expected an @ header line or @data, got "
                                f"{text[:40]!r}", file=path, row=line_no,
                                reason="bad_header")
            key, _, value = text[1:].partition(" ")
            key = key.lower()
            if key == "data":
                in_data = True
                if metadata.get("timestamps", "false").lower() == "true":
                    raise DataError(
                        "@timeStamps true is not supported; convert the "
                        "file to the plain (no time stamps) form",
                        file=path, row=line_no, reason="unsupported")
                continue
            metadata[key] = value.strip()
            continue
        rows.append(_parse_ts_row(path, line_no, text, metadata, labels))
    if not in_data:
        raise DataError("no @data line", file=path, reason="bad_header")
    class_line = metadata.get("classlabel", "false").split()
    has_labels = bool(class_line) and class_line[0].lower() == "true"
    class_labels = class_line[1:] if has_labels else None
    lengths = {row.shape[1] for row in rows}
    if len(lengths) == 1:
        series = np.stack(rows) if rows else np.zeros((0, 0, 0))
        if channels_last:
            series = np.transpose(series, (0, 2, 1))
    else:
        series = [row.T if channels_last else row for row in rows]
    if has_labels:
        unknown = sorted(set(labels) - set(class_labels))
        if class_labels and unknown:
            raise DataError(f"labels {unknown} are not in @classLabel "
                            f"{class_labels}", file=path, reason="bad_label")
        labels = np.asarray(labels)
    else:
        labels = None
    return TsData(series, labels, class_labels, metadata)


def _parse_ts_row(path, line_no, text, metadata, labels):
    parts = text.split(":")
    class_line = metadata.get("classlabel", "false").split()
    has_labels = bool(class_line) and class_line[0].lower() == "true"
    if has_labels:
        labels.append(parts[-1].strip())
        parts = parts[:-1]
    dims = metadata.get("dimensions")
    if dims is not None and len(parts) != int(dims):
        raise DataError(f"{len(parts)} dimensions, but @dimensions is {dims}",
                        file=path, row=line_no, reason="bad_row")
    channels = []
    for part in parts:
        try:
            values = [math.nan if v.strip() == "?" else float(v)
                      for v in part.split(",")]
        except ValueError as e:
            raise DataError(f"not a number: {e}", file=path, row=line_no,
                            reason="bad_value") from None
        channels.append(values)
    length = max(len(c) for c in channels)
    array = np.full((len(channels), length), np.nan)
    for k, values in enumerate(channels):
        array[k, :len(values)] = values
    return array
