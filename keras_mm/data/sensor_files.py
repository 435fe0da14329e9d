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

from keras_mm.data.audio_preprocessor import checked_in_order
from keras_mm.data.ts_format import TsData  # noqa: F401
from keras_mm.data.ts_format import read_ts  # noqa: F401

# A number as tf.io.decode_csv / strtod reads it (optionally in double
# quotes), or an empty field (NaN).
_NUMBER_BODY = (r"[-+]?((\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
                r"|(?i:nan|inf|infinity))")
_NUMBER = rf"(\s*({_NUMBER_BODY})?\s*|\"{_NUMBER_BODY}\")"
_UTF8_BOM = b"\xef\xbb\xbf"
_SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs",
               " ": "spaces", "|": "bars"}


def _numeric_row_pattern(delimiter):
    return f"{_NUMBER}({re.escape(delimiter)}{_NUMBER})*"


def decode_csv_bytes(contents, num_channels, header="auto", delimiter=",",
                     columns=None, name="sensor"):
    """Parses CSV file contents into float32 `[T, C]`, in-graph.

    One row per time step, one column per channel. A leading UTF-8 byte
    order mark (as Excel writes) is dropped. Empty lines are skipped; empty
    fields and `nan` are NaN (missing values). Empty contents give `[0, C]`
    (an absent series); contents with no data row (a header line alone, or
    one line of text) are refused.

    Args:
        contents: scalar string tensor, the whole file.
        num_channels: C, the number of channels returned.
        header: True (the first non-empty line is a header), False, or
            `"auto"`: the first line is a header when it is not all numbers.
        delimiter: one-character field delimiter.
        columns: optional list of C column indices to read (default: the
            file must have exactly C columns).
        name: the input named in error messages.

    Returns:
        float32 `[T, num_channels]`.

    Raises:
        tf.errors.InvalidArgumentError (at run time) when the file has no
        data row, a row has the wrong number of fields or a field is not a
        number; the message names the input and the line (and holds no
        byte of the file).
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    contents = tf.where(
        tf.equal(tf.strings.substr(contents, 0, 3), _UTF8_BOM),
        tf.strings.substr(contents, tf.minimum(3, tf.strings.length(
            contents)), tf.strings.length(contents)),
        contents)
    lines = tf.strings.split(contents, "\n")
    lines = tf.strings.regex_replace(lines, "\r$", "")
    kept = tf.strings.strip(lines) != ""
    line_numbers = tf.boolean_mask(tf.range(1, tf.size(lines) + 1), kept)
    lines = tf.boolean_mask(lines, kept)
    has_lines = tf.size(lines) > 0
    pattern = _numeric_row_pattern(delimiter)
    if header == "auto":
        first = tf.concat([lines[:1], ["0"]], 0)[0]
        skip = tf.cast(tf.logical_not(tf.strings.regex_full_match(
            first, pattern)), tf.int32)
    else:
        skip = 1 if header else 0
    lines, line_numbers = lines[skip:], line_numbers[skip:]
    channels = int(num_channels)
    need = (max(columns) + 1) if columns else channels
    fields = tf.strings.split(lines, delimiter).row_lengths()
    numeric = tf.strings.regex_full_match(lines, pattern)
    bad_number = tf.logical_not(numeric)
    bad_count = (fields < need) if columns else (fields != need)
    first_bad = tf.concat([tf.boolean_mask(line_numbers, bad_number), [0]],
                          0)[0]
    first_count = tf.concat([tf.boolean_mask(line_numbers, bad_count), [0]],
                            0)[0]
    count_at = tf.concat([tf.boolean_mask(fields, bad_count),
                          tf.zeros([1], tf.int64)], 0)[0]
    owner = f"input {name}: the CSV file"
    # No quotes or backslashes: tf.debugging.Assert would escape them.
    separator = _SEPARATORS.get(delimiter, f"the delimiter {delimiter}")
    fix = (f"; send rows of {channels} numbers separated by {separator} "
           "(empty bytes for an absent series)")
    checks = [
        (tf.logical_not(has_lines & (tf.size(lines) == 0)),
         f"{owner} has no data row (only a header line, or it is not a "
         f"numeric CSV){fix}"),
        (tf.logical_not(tf.reduce_any(bad_number)),
         f"{owner} has a field that is not a number on line", first_bad,
         fix),
        (tf.logical_not(tf.reduce_any(bad_count)),
         f"{owner} has", count_at, "fields on line", first_count,
         f"but {need} are expected" if not columns else
         f"but at least {need} are expected (columns={list(columns)})",
         fix),
    ]
    lines, = checked_in_order(checks, [lines])
    nan = tf.constant(float("nan"), tf.float32)
    defaults = [[nan]] * channels
    # A number beyond float32's range reads as +-inf (treated like NaN by
    # the sensor preprocessor).
    fields = tf.io.decode_csv(lines, record_defaults=defaults,
                              field_delim=delimiter,
                              select_cols=list(columns) if columns else None)
    series = tf.stack(fields, axis=-1)
    return tf.ensure_shape(series, [None, channels])


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
    """`dtype` value at byte `pos`; bytes past the end read as 0."""
    pos = tf.clip_by_value(pos, 0, tf.strings.length(contents))
    return tf.io.decode_raw(tf.strings.substr(contents, pos, length),
                            dtype, fixed_length=length)[0]


def _safe_text(text, pattern, fallback="?"):
    """`text` where it full-matches `pattern` (ASCII only), else
    `fallback`: input bytes put in an error message must be safe text."""
    return tf.where(tf.strings.regex_full_match(text, pattern), text,
                    fallback)


def decode_npy_bytes(contents, name="sensor"):
    """Parses `.npy` file contents (numpy.save) into float32 `[T, C]`.

    Reads the NPY header (format versions 1-3) in-graph: the dtype (one of
    `NPY_DTYPES`: float16/32/64, int8/16/32/64, uint8/16, bool, either byte
    order), `fortran_order` and the shape. A 1-D array `[T]` becomes
    `[T, 1]`; other ranks are rejected. Values are cast to float32 (exact for
    float32 files; float64 values are rounded to float32).

    Args:
        contents: scalar string tensor, the whole file.
        name: the input named in error messages.

    Raises:
        tf.errors.InvalidArgumentError (at run time) for a file that is not
        NPY, an unsupported dtype or rank, or truncated data; the message
        names the input and the reason (and holds no raw byte of the file).
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    owner = f"input {name}: the .npy file"
    length = tf.strings.length(contents)
    is_npy = tf.logical_and(
        length >= 12,
        tf.equal(tf.strings.substr(contents, 0, 6), b"\x93NUMPY"))
    major = tf.cast(_bytes_at(contents, 6, 1, tf.uint8), tf.int32)
    header_len = tf.where(
        major == 1,
        tf.cast(_bytes_at(contents, 8, 2, tf.uint16), tf.int32),
        _bytes_at(contents, 8, 4, tf.int32))
    header_start = tf.minimum(tf.where(major == 1, 10, 12), length)
    header_ok = (header_len >= 0) & (header_len <= length - header_start)
    header = tf.strings.substr(contents, header_start,
                               tf.maximum(header_len, 0))
    descr = tf.strings.regex_replace(
        header, r"(?s)^.*'descr':\s*'([^']*)'.*$", r"\1")
    shape_text = tf.strings.regex_replace(
        header, r"(?s)^.*'shape':\s*\(([^)]*)\).*$", r"\1")
    fortran = tf.strings.regex_full_match(
        header, r"(?s).*'fortran_order':\s*True.*")
    # Only a list of (at most 9-digit) integers goes to to_number.
    shape_ok = tf.strings.regex_full_match(
        shape_text, r"\s*(\d{1,9}\s*,\s*)*(\d{1,9}\s*,?)?\s*")
    dims = tf.strings.strip(tf.strings.split(
        tf.where(shape_ok, shape_text, ""), ","))
    dims = tf.strings.to_number(tf.boolean_mask(dims, dims != ""), tf.int64)
    rank = tf.size(dims)
    matches = tf.stack([tf.equal(descr, d) for d in NPY_DTYPES])
    itemsize = tf.constant([d.size for _, d, _ in _NPY_TYPES], tf.int64)
    branch = tf.argmax(tf.cast(matches, tf.int32), output_type=tf.int32)
    dims = tf.concat([dims, tf.ones([2], tf.int64)], 0)
    steps = dims[0]
    channels = tf.where(rank == 2, dims[1], 1)
    data_bytes = tf.cast(length - tf.minimum(header_start + header_len,
                                             length), tf.int64)
    needed = steps * channels * tf.gather(itemsize, branch)
    checks = [
        (is_npy, f"{owner} is not a .npy file: the contents do not start "
                 "with the NPY magic string (byte 0x93, NUMPY); send "
                 "numpy.save bytes"),
        (header_ok, f"{owner} is too short: its header is truncated"),
        (tf.reduce_any(matches) & shape_ok & ((rank == 1) | (rank == 2)),
         f"{owner}: dtype", _safe_text(descr, r"[<>|=][a-zA-Z]\d{0,2}"),
         "and shape (", _safe_text(shape_text, r"[\d ,]{0,40}"),
         ") are not supported: use a 1-D [T] or 2-D [T, C] array of one "
         "of", " ".join(NPY_DTYPES)),
        (tf.equal(data_bytes, needed),
         f"{owner}: its data holds", data_bytes, "bytes but the header "
         "shape (", _safe_text(shape_text, r"[\d ,]{0,40}"), ") needs",
         needed, "(truncated file?)"),
    ]
    branch, = checked_in_order(checks, [branch])
    data = tf.strings.substr(contents,
                             tf.minimum(header_start + header_len, length),
                             length)

    def make_branch(dtype, little_endian):
        def fn():
            values = tf.io.decode_raw(data, dtype,
                                      little_endian=little_endian)
            return tf.cast(tf.reshape(values, [-1]), tf.float32)
        return fn

    values = tf.switch_case(
        branch, [make_branch(d, le) for _, d, le in _NPY_TYPES])
    steps = tf.cast(steps, tf.int32)
    channels = tf.cast(channels, tf.int32)
    series = tf.cond(
        fortran,
        lambda: tf.transpose(tf.reshape(values, [channels, steps])),
        lambda: tf.reshape(values, [steps, channels]))
    return tf.ensure_shape(series, [None, None])
