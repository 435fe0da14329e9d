"""Reader of the sktime / UEA-UCR `.ts` time-series archive format.

This is keras_mm's one `.ts` reader (the BasicMotions builder and the sensor
data code use it). The format:

```
# comment lines start with '#'
@problemName BasicMotions
@timeStamps false
@missing false
@univariate false
@dimensions 6
@equalLength true
@seriesLength 100
@classLabel true Standing Running Walking Badminton
@data
0.07,0.07,-0.90,...:0.39,0.39,...:...:Standing
```

After `@data`, each line is one example: its dimensions (channels) separated
by `:`, each a comma-separated series of values, and, when `@classLabel true`
(or `@targetLabel true`), the label last. `?` is a missing value (NaN).
Series of unequal length (`@equalLength false`) are padded with NaN to a
common length by `TsData.to_numpy`; `series_lengths` gives each example's
number of steps (the length distribution a recipe's `length` is chosen
from). With `@equalLength true`, every row must have the length of the
first (or `@seriesLength`). Timestamped files (`@timeStamps true`)
are rejected with a clear error (no archive data set used here has them).

Example:

>>> data = read_ts("BasicMotions_TRAIN.ts")          # doctest: +SKIP
>>> x = data.to_numpy()      # [40, 100, 6]   # doctest: +SKIP
>>> data.labels[:2], data.class_labels               # doctest: +SKIP
(['Standing', 'Standing'], ['Standing', 'Running', 'Walking', 'Badminton'])
"""

import dataclasses
import math
import os

import numpy as np

from keras_mm.errors import DataError

_BOOL_TAGS = ("timestamps", "missing", "univariate", "equallength")
_INT_TAGS = ("dimensions", "serieslength")


@dataclasses.dataclass
class TsData:
    """The content of a `.ts` file.

    Attributes:
        series: list of float64 arrays `[T_i, C]`, one per example (time
            first, channels last, as keras_mm sensor inputs are laid out).
        labels: list of class names (`@classLabel true`), of floats
            (`@targetLabel true`), or None.
        class_labels: the class names declared by `@classLabel`, or None.
        metadata: the header, e.g. `{"problemname": "BasicMotions",
            "dimensions": 6, "serieslength": 100, ...}` (tags lower-cased).
        path: the file read.
    """

    series: list
    labels: list
    class_labels: list
    metadata: dict
    path: str = None

    def __len__(self):
        return len(self.series)

    @property
    def num_channels(self):
        return self.series[0].shape[1] if self.series else 0

    def to_numpy(self, dtype=np.float32):
        """Stacks the examples into `[N, T, C]`, NaN-padding shorter series."""
        length = max((s.shape[0] for s in self.series), default=0)
        out = np.full((len(self.series), length, self.num_channels), np.nan,
                      dtype=dtype)
        for i, s in enumerate(self.series):
            out[i, :s.shape[0]] = s
        return out


def series_lengths(data):
    """Steps of each example of a `TsData` (or of a list of `[T, C]`
    arrays): `[T_1, T_2, ...]`, ints. Missing values inside a series do not
    shorten it; a dimension shorter than the others in the same example is
    NaN-padded to the longest one."""
    series = data.series if isinstance(data, TsData) else data
    return [int(np.shape(s)[0]) for s in series]


def _bool(value, tag, path, lineno):
    v = value.strip().lower()
    if v in ("true", "false"):
        return v == "true"
    raise DataError(f"line {lineno}: @{tag} must be true or false, got "
                    f"{value!r}", file=path, reason="bad_header")


def _int(value, tag, path, lineno):
    try:
        return int(value.strip())
    except ValueError:
        raise DataError(f"line {lineno}: @{tag} must be an integer, got "
                        f"{value!r}", file=path, reason="bad_header") from None


def _parse_header_line(line, meta, path, lineno):
    tag, _, value = line[1:].partition(" ")
    tag = tag.strip().lower()
    value = value.strip()
    if tag == "problemname":
        meta["problemname"] = value
    elif tag in _BOOL_TAGS:
        meta[tag] = _bool(value, tag, path, lineno)
    elif tag in _INT_TAGS:
        meta[tag] = _int(value, tag, path, lineno)
    elif tag == "classlabel":
        words = value.split()
        if not words:
            raise DataError(f"line {lineno}: @classLabel needs true or false",
                            file=path, reason="bad_header")
        meta["classlabel"] = _bool(words[0], tag, path, lineno)
        if meta["classlabel"] and len(words) < 2:
            raise DataError(f"line {lineno}: @classLabel true must list the "
                            "class names after it", file=path,
                            reason="bad_header")
        meta["class_labels"] = words[1:] if meta["classlabel"] else None
    elif tag == "targetlabel":
        meta["targetlabel"] = _bool(value, tag, path, lineno)
    else:
        raise DataError(
            f"line {lineno}: unknown header tag @{tag}; known tags are "
            "@problemName, @timeStamps, @missing, @univariate, @dimensions, "
            "@equalLength, @seriesLength, @classLabel, @targetLabel, @data",
            file=path, reason="bad_header")


def _parse_values(text, path, lineno, row, dim):
    values = []
    if not text.strip():
        return values
    for j, token in enumerate(text.split(",")):
        token = token.strip()
        if token == "?" or token.lower() == "nan":
            values.append(math.nan)
            continue
        try:
            values.append(float(token))
        except ValueError:
            raise DataError(
                f"line {lineno}: dimension {dim}, value {j + 1}: {token!r} "
                "is not a number (use '?' for a missing value)", file=path,
                row=row, reason="bad_value") from None
    return values


def parse_ts(text, path="<string>"):
    """Parses the text of a `.ts` file; see `read_ts`."""
    meta = {}
    series, labels = [], []
    in_data = False
    num_dims = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(
                    f"line {lineno}: expected a header tag (@...) or @data "
                    f"before the data, got {line[:40]!r}", file=path,
                    reason="bad_header")
            if line.lower() == "@data":
                in_data = True
                if meta.get("timestamps"):
                    raise DataError(
                        "@timeStamps true files are not supported; convert "
                        "the series to plain comma-separated values",
                        file=path, reason="unsupported")
                num_dims = meta.get("dimensions")
                if meta.get("univariate") and num_dims is None:
                    num_dims = 1
                continue
            _parse_header_line(line, meta, path, lineno)
            continue
        row = len(series) + 1
        parts = line.split(":")
        has_label = meta.get("classlabel") or meta.get("targetlabel")
        label = None
        if has_label:
            if len(parts) < 2:
                raise DataError(f"line {lineno}: the label is missing (the "
                                "last ':'-separated field)", file=path,
                                row=row, reason="bad_label")
            label = parts[-1].strip()
            parts = parts[:-1]
        if num_dims is None:
            num_dims = len(parts)
        if len(parts) != num_dims:
            raise DataError(
                f"line {lineno}: {len(parts)} dimension(s), expected "
                f"{num_dims} (@dimensions or the first data row)", file=path,
                row=row, reason="bad_shape")
        dims = [_parse_values(p, path, lineno, row, d + 1)
                for d, p in enumerate(parts)]
        length = max(len(d) for d in dims)
        if not all(dims):
            raise DataError(
                f"line {lineno}: dimension {[len(d) for d in dims].index(0) + 1}"
                " has no value", file=path, row=row, reason="bad_value")
        expected = meta.get("serieslength")
        if meta.get("equallength") and expected is None and series and \
                length != series[0].shape[0]:
            raise DataError(
                f"line {lineno}: {length} steps, but the first data row has "
                f"{series[0].shape[0]} and the header says @equalLength "
                "true (set @equalLength false for series of unequal "
                "length)", file=path, row=row, reason="bad_shape")
        if meta.get("equallength", True) and expected is not None and any(
                len(d) != expected for d in dims):
            raise DataError(
                f"line {lineno}: series lengths {[len(d) for d in dims]} do "
                f"not match @seriesLength {expected}", file=path, row=row,
                reason="bad_shape")
        arr = np.full((length, num_dims), np.nan)
        for d, values in enumerate(dims):
            arr[:len(values), d] = values
        series.append(arr)
        if meta.get("classlabel"):
            allowed = meta["class_labels"]
            if label not in allowed:
                raise DataError(
                    f"line {lineno}: label {label!r} is not one of the "
                    f"@classLabel names {', '.join(allowed)}", file=path,
                    row=row, reason="bad_label")
            labels.append(label)
        elif meta.get("targetlabel"):
            try:
                labels.append(float(label))
            except ValueError:
                raise DataError(f"line {lineno}: target {label!r} is not a "
                                "number", file=path, row=row,
                                reason="bad_label") from None
    if not in_data:
        raise DataError("no @data line: not a .ts file", file=path,
                        reason="bad_header")
    return TsData(series=series,
                  labels=labels if (meta.get("classlabel")
                                    or meta.get("targetlabel")) else None,
                  class_labels=meta.get("class_labels"), metadata=meta,
                  path=path)


def read_ts(path):
    """Reads a `.ts` file into a `TsData`.

    Args:
        path: the `.ts` file.

    Returns:
        `TsData` with per-example `[T, C]` float64 arrays, labels and header.

    Raises:
        DataError: naming the file, line and field of any malformed content.
    """
    path = os.fspath(path)
    try:
        with open(path, "r", encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError("file not found; check the path", file=path,
                        reason="missing_file") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise DataError(f"line {line}: not UTF-8 text (byte {e.start}); a "
                        ".ts file is plain text", file=path,
                        reason="bad_value") from None
    return parse_ts(text, path=path)
