"""Sensor series files: CSV and `.npy` decoded in-graph, `.ts` read in Python.

`decode_csv_bytes` and `decode_npy_bytes` take the file *contents* (a scalar
string tensor, e.g. from `tf.io.read_file`) and return float32 `[T, C]`
using core TF string ops only, so they run in `tf.data` and in a serving
function. `read_ts` (re-exported from `keras_mm.data.ts_format`, the one
`.ts` reader) reads the sktime / UEA `.ts` time-series archive format in
Python, for dataset builders (it is not graph code): per-example `[T, C]`
arrays, labels and class names.
"""

import re

import tensorflow as tf

from keras_mm.data.ts_format import TsData  # noqa: F401
from keras_mm.data.ts_format import read_ts  # noqa: F401

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
