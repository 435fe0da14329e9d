"""THE converter of record values.

Record values become raw inputs through ONE batched converter (any shape,
core TF ops, so it runs in tf.data, eagerly and in a serving signature):

- `key_strings(values, kind, column)`: label / category cells -> the strings
  they are matched by (class names, vocabularies);
- `float_values(values, kind, column)`: numeric cells -> float32.

`kind` is how the value is stored (a TFRecord feature kind, or the type of a
manifest column: `"string"`, `"int"` or `"float"`). The training pipeline
(TFRecords), `ServingFunctions.examples_to_raw` (`serve_examples`) and the
manifest pipeline (`manifest_keys` / `manifest_floats`, which run the same
functions eagerly on a whole column, typed as the TFRecord conversion stores
it) all call them.

Defined values, as a category / label -> as a number:

- NaN, `""` (empty or blank): `""` (missing) -> NaN (missing);
- +inf / -inf: `"inf"` / `"-inf"` -> +inf / -inf (the tabular
  preprocessor imputes every non-finite number, like NaN);
- integral floats (3.0): `"3"`; other floats (2.5): `"2.500000"` (`%.6f`
  of the float32, as class names are formatted);
- floats of magnitude 2**24 or more (1e20): REFUSED as categories (float32
  does not hold such integers exactly: store the column as int or string)
  -> the float32 value as numbers;
- ints (any int64): their decimal digits -> the nearest float32;
- strings (`" 2.5"`): stripped, `"2.5"` -> stripped and parsed, 2.5; a
  string that is not a decimal number (or inf / nan) is REFUSED as a number.

A refused value raises an error naming the column: `DataError` with the
manifest row, or, in a graph, an InvalidArgumentError (the pipeline's
bad-input check reports it as the record's `decode_error`).
"""

import math

import numpy as np
import tensorflow as tf

from keras_mm.errors import DataError

EXACT_FLOAT_INTS = 2.0 ** 24   # float32 holds every integer below this
# A decimal number (after stripping), as `tf.strings.to_number` reads it.
NUMBER_PATTERN = r"(?i)[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)"
_MANIFEST_KIND = {"int": "int", "float": "float"}   # anything else: string


# ---------------------------------------------------------------- converter
def _bad_key_floats(values):
    values = tf.cast(values, tf.float32)
    return tf.math.is_finite(values) & (tf.abs(values) >= EXACT_FLOAT_INTS)


def _bad_numbers(values):
    stripped = tf.strings.strip(values)
    return (tf.strings.length(stripped) > 0) & tf.logical_not(
        tf.strings.regex_full_match(stripped, NUMBER_PATTERN))


def _key_text(values, kind):
    if kind == "string":
        return tf.strings.strip(values)
    if kind == "int":
        return tf.strings.as_string(tf.cast(values, tf.int64))
    if kind == "float":
        values = tf.cast(values, tf.float32)
        values = tf.where(tf.equal(values, 0.0), tf.zeros_like(values),
                          values)                               # -0 -> 0
        whole = tf.math.is_finite(values) & tf.equal(values,
                                                     tf.round(values))
        text = tf.where(whole, tf.strings.as_string(values, precision=0),
                        tf.strings.as_string(values, precision=6))
        text = tf.where(tf.math.is_inf(values),
                        tf.where(values > 0, "inf", "-inf"), text)
        return tf.where(tf.math.is_nan(values), tf.constant(""), text)
    raise ValueError(f"cannot use a {kind!r} column as labels/categories")


def _number_values(values, kind):
    if kind == "float":
        return tf.cast(values, tf.float32)
    if kind == "int":
        return tf.cast(values, tf.float32)
    if kind == "string":
        stripped = tf.strings.strip(values)
        empty = tf.equal(stripped, "")
        good = tf.strings.regex_full_match(stripped, NUMBER_PATTERN)
        number = tf.strings.to_number(
            tf.where(empty | tf.logical_not(good), "nan", stripped),
            tf.float32)
        return tf.where(empty, tf.constant(math.nan), number)
    raise ValueError(f"cannot use a {kind!r} column as numbers")


def _checked(bad, values, message):
    flat = tf.reshape(bad, [-1])
    return tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(flat)),
        [message[0], tf.boolean_mask(tf.reshape(values, [-1]), flat),
         message[1]], summarize=5)


def _key_refusal(column):
    return (f"column {column!r}: the category / label cell(s)",
            "are floats of 2**24 or more, which float32 does not hold "
            f"exactly; store column {column!r} as int or string")


def _number_refusal(column):
    return (f"column {column!r}: the cell(s)",
            "are not decimal numbers; fix them or leave them empty")


def key_strings(values, kind, column):
    """Label / category cells (any shape) -> `tf.string` of the same shape.

    The one conversion used by the pipeline, `serve_examples` and manifests
    (see the module docstring for the defined values). `kind`: the stored
    kind, `"string"`, `"int"` or `"float"`; `column` names the column in
    the error raised for a refused value.
    """
    if kind == "float":
        check = _checked(_bad_key_floats(values), values,
                         _key_refusal(column))
        with tf.control_dependencies([check]):
            return _key_text(tf.identity(values), kind)
    return _key_text(values, kind)


def float_values(values, kind, column):
    """Numeric cells (any shape) -> float32 of the same shape (see the
    module docstring); a string that is not a number is refused."""
    if kind == "string":
        check = _checked(_bad_numbers(values), values,
                         _number_refusal(column))
        with tf.control_dependencies([check]):
            return _number_values(tf.identity(values), kind)
    return _number_values(values, kind)


def key_string(value, where="value"):
    """ONE Python value (a class name, a cell) -> its key string, by the
    same TF conversion. Lists join with `|`; None gives `""`."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "|".join(key_string(v, where) for v in value)
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        kind, tensor = "float", tf.constant(value, tf.float32)
        if bool(_bad_key_floats(tensor)):
            raise ValueError(f"{where}: {value!r} is a float of 2**24 or "
                             "more, which float32 does not hold exactly; "
                             "give it as an int or a string")
    else:
        kind, tensor = "string", tf.constant(str(value))
    return _key_text(tensor, kind).numpy().decode()


def _typed_column(manifest, column):
    """A manifest column as the TFRecord conversion stores it: (kind,
    tensor), or (None, cells) for cells holding lists."""
    cells = manifest.column(column)
    if any(isinstance(v, list) for v in cells):
        return None, cells
    kind = _MANIFEST_KIND.get(manifest.column_types.get(column), "string")
    dtype = {"int": tf.int64, "float": tf.float32}.get(kind, tf.string)
    if kind == "string":
        cells = ["" if v is None else str(v) for v in cells]
    return kind, tf.constant(cells, dtype, shape=[len(cells)])


def _refuse_rows(manifest, column, bad, cells, reason):
    rows = np.flatnonzero(bad.numpy())
    if len(rows):
        raise DataError(
            f"{cells[rows[0]]!r} {reason}", file=manifest.name(),
            row=int(rows[0]) + 1, column=column, reason="bad_value")


def manifest_keys(manifest, column):
    """The key strings of a manifest column (`key_strings`, eagerly, on the
    column typed as in its TFRecords); a refused cell raises a DataError
    naming its row."""
    kind, values = _typed_column(manifest, column)
    if kind is None:      # JSON lists (multilabel cells): `a|b`
        return [key_string(v, f"column {column!r}") for v in values]
    if kind == "float":
        _refuse_rows(manifest, column, _bad_key_floats(values),
                     manifest.column(column),
                     "is a float of 2**24 or more, which float32 does not "
                     "hold exactly: store the column as int or string "
                     "(column_types)")
    return [v.decode() for v in key_strings(values, kind,
                                            column).numpy().tolist()]


def manifest_floats(manifest, column):
    """The float32 values of a manifest column (`float_values`, eagerly)."""
    kind, values = _typed_column(manifest, column)
    if kind is None:
        raise DataError("a cell holds a list where a number is read",
                        file=manifest.name(), column=column,
                        reason="bad_value")
    if kind == "string":
        _refuse_rows(manifest, column, _bad_numbers(values),
                     manifest.column(column),
                     "is not a number; fix the cell or leave it empty")
    return float_values(values, kind, column).numpy().tolist()
