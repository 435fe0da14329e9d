"""Manifests: a table of examples in a CSV or JSONL file.

A manifest has one row per example. Its columns hold file paths (relative to
the manifest's folder, or absolute, or any `tf.io.gfile` URL such as
`gs://...`), text, numbers and labels. `Manifest.read` works for any path
`tf.io.gfile` can open.

Row numbers: row 1 is the first example (a CSV header is not counted, blank
JSONL lines are not counted); `Manifest.line(i)` gives the line in the file.
"""

import csv
import hashlib
import io
import json
import math
import os
import posixpath

import tensorflow as tf

from keras_mm.errors import DataError

#: Column types a manifest knows. `"path"`: one file path per cell;
#: `"paths"`: a list of paths per cell (a JSON list, or `|`-separated in CSV);
#: `"string"`: text; `"float"`: a number (empty cell = NaN); `"int"`: an
#: integer; `"list"`: a JSON list kept as it is.
COLUMN_TYPES = ("path", "paths", "string", "float", "int", "list")

PATH_SEPARATOR = "|"


def _has_scheme(path):
    return "://" in path


def join_path(root, path):
    """`path` made absolute against `root` (a folder, local or URL)."""
    if not path:
        return ""
    if os.path.isabs(path) or _has_scheme(path) or not root:
        return path
    if _has_scheme(root):
        return posixpath.join(root, path)
    return os.path.normpath(os.path.join(root, path))


def _real(path):
    if _has_scheme(path):
        return posixpath.normpath(path)
    return os.path.realpath(path)


def path_outside(root, path):
    """The resolved `path` when it lies outside the folder `root` (symlinks
    followed, `..` resolved), else None. `""` is never outside."""
    if not path:
        return None
    full = join_path(root, path)
    real, base = _real(full), _real(root).rstrip("/\\")
    if _has_scheme(real) != _has_scheme(base):
        return real
    sep = "/" if _has_scheme(base) else os.sep
    if real == base or real.startswith(base + sep):
        return None
    return real


def _parse_int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _parse_float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Manifest:
    """A table of examples read from a CSV or JSONL manifest.

    Args:
        rows: list of dicts `{column: value}` (CSV values are strings).
        path: the manifest file (used in messages and to resolve paths).
        root: folder that relative paths are resolved against
            (default: the folder of `path`, else the working directory).
        column_types: optional `{column: type}` overriding the inferred
            types; types are those of `COLUMN_TYPES`.
        lines: optional line number of each row in the file.
        columns: optional column names in order (a CSV header), so that
            a manifest without rows still knows its columns.

    Column typing: a column whose non-empty cells are all integers is
    `"int"` (empty cells make it `"float"`), all numbers `"float"`, JSON
    lists `"list"`, anything else `"string"`. A column becomes a path column
    when it is typed `"path"`/`"paths"` here or when `paths(column)` is asked
    for (the pipeline asks for the columns its file-based preprocessors
    read).

    Example:

    >>> m = Manifest.read("data/train.csv")        # doctest: +SKIP
    >>> m.paths("image")[:1]                        # doctest: +SKIP
    ['/abs/data/images/0.png']
    >>> m.column("caption")[:1]                     # doctest: +SKIP
    ['a cat']
    """

    def __init__(self, rows, path=None, root=None, column_types=None,
                 lines=None, columns=None):
        self.path = None if path is None else str(path)
        if root is None and self.path is not None:
            root = posixpath.dirname(self.path) if _has_scheme(self.path) \
                else os.path.dirname(os.path.abspath(self.path))
        self.root = str(root) if root is not None else os.getcwd()
        self.rows = [dict(r) for r in rows]
        self.lines = list(lines) if lines is not None else None
        columns = list(columns or [])
        for r in self.rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
        self.columns = columns
        self.column_types = {c: self._infer_type(c) for c in columns}
        for column, kind in (column_types or {}).items():
            if kind not in COLUMN_TYPES:
                raise ValueError(
                    f"Manifest: column_types[{column!r}]={kind!r} is not one "
                    f"of {', '.join(COLUMN_TYPES)}")
            self._check_column(column)
            self.column_types[column] = kind

    # ------------------------------------------------------------------ I/O
    @classmethod
    def read(cls, path, column_types=None, root=None, delimiter=None):
        """Reads a `.csv`/`.tsv` or `.jsonl`/`.ndjson` manifest.

        Args:
            path: the manifest file (any `tf.io.gfile` path).
            column_types: optional `{column: type}`, see the class docs.
            root: folder for relative paths (default: the manifest's folder).
            delimiter: CSV delimiter (default `,`, or tab for `.tsv`).
        """
        path = os.fspath(path)
        if not tf.io.gfile.exists(path):
            raise DataError(
                "manifest file not found; check the path",
                file=path, reason="missing_file")
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
        lower = path.lower()
        if lower.endswith((".jsonl", ".ndjson", ".json")):
            rows, lines = _read_jsonl(data, path)
            header = None
        elif lower.endswith((".csv", ".tsv", ".txt")):
            if delimiter is None:
                delimiter = "\t" if lower.endswith(".tsv") else ","
            rows, lines, header = _read_csv(data, path, delimiter)
        else:
            raise DataError(
                "unknown manifest format: use a .csv, .tsv or .jsonl file",
                file=path)
        manifest = cls(rows, path=path, root=root, column_types=column_types,
                       lines=lines, columns=header)
        manifest._content = data
        return manifest

    def content_hash(self):
        """sha256 of the manifest's content (file bytes, or the rows)."""
        data = getattr(self, "_content", None)
        if data is None:
            data = json.dumps(self.rows, sort_keys=True,
                              default=str).encode()
        h = hashlib.sha256(data)
        h.update(self.root.encode())
        return h.hexdigest()

    # ---------------------------------------------------------------- access
    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        return (f"Manifest({self.path!r}, rows={len(self)}, "
                f"columns={self.columns})")

    def name(self):
        """The manifest file, or `"<in-memory manifest>"`."""
        return self.path or "<in-memory manifest>"

    def line(self, index):
        """Line in the file of the row at 0-based `index` (or None)."""
        if self.lines is None:
            return None
        return self.lines[index]

    def _check_column(self, column):
        if column not in self.columns and not self.columns:
            raise DataError(
                f"no column {column!r}: the manifest has no rows (and no "
                "header); add examples to it",
                file=self.name(), column=column, reason="missing_column")
        if column not in self.columns:
            raise DataError(
                f"no column {column!r}; the manifest has columns "
                f"{', '.join(self.columns)}",
                file=self.name(), column=column, reason="missing_column")

    def _infer_type(self, column):
        values = [r.get(column) for r in self.rows]
        values = [v for v in values if v not in (None, "")]
        if not values:
            return "string"
        if all(isinstance(v, list) for v in values):
            return "list"
        if all(_is_number(v) for v in values):
            if all(isinstance(v, int) for v in values):
                has_empty = any(r.get(column) in (None, "") for r in self.rows)
                return "float" if has_empty else "int"
            return "float"
        if all(isinstance(v, str) for v in values):
            if all(_parse_int(v) is not None for v in values):
                has_empty = any(r.get(column) in (None, "") for r in self.rows)
                return "float" if has_empty else "int"
            if all(_parse_float(v) is not None for v in values):
                return "float"
        return "string"

    def raw(self, column):
        """The cells of `column` as stored (None where a row lacks it)."""
        self._check_column(column)
        return [r.get(column) for r in self.rows]

    def column(self, column, kind=None):
        """The cells of `column`, typed (`kind` overrides the column type).

        Paths are resolved against the manifest's folder; empty cells give
        `""` (strings, paths), NaN (floats) or `[]` (path lists).
        """
        kind = kind or self.column_types.get(column)
        if kind in ("path", "paths"):
            return self.paths(column, kind == "paths")
        values = self.raw(column)
        out = []
        for i, v in enumerate(values):
            try:
                out.append(_convert(v, kind))
            except ValueError as e:
                raise DataError(
                    f"{e}; fix the cell or set column_types[{column!r}]",
                    file=self.name(), row=i + 1, column=column,
                    reason="bad_value") from None
        return out

    def paths(self, column, as_list=None):
        """The cells of a path column made absolute (`""` stays `""`).

        `as_list=True` gives a list of paths per row (JSON lists, or cells
        split on `|`); by default a list is given where the column type is
        `"paths"` or `"list"`.
        """
        values = self.raw(column)
        if as_list is None:
            as_list = self.column_types.get(column) in ("paths", "list")
        out = []
        for i, v in enumerate(values):
            if as_list:
                if v in (None, ""):
                    items = []
                elif isinstance(v, list):
                    items = [str(p) for p in v]
                else:
                    items = [p for p in str(v).split(PATH_SEPARATOR) if p]
                out.append([join_path(self.root, p.strip()) for p in items])
            else:
                if isinstance(v, list):
                    raise DataError(
                        "expected one file path but the cell holds a list",
                        file=self.name(), row=i + 1, column=column,
                        reason="bad_value")
                v = "" if v is None else str(v).strip()
                out.append(join_path(self.root, v))
        return out

    def outside_paths(self, column, as_list=None):
        """`{0-based row: resolved path}` of the cells of a path column
        that resolve (symlinks followed) outside the manifest's folder
        (`root`); for a list cell, the first such path."""
        out = {}
        for i, cell in enumerate(self.paths(column, as_list)):
            for path in (cell if isinstance(cell, list) else [cell]):
                real = path_outside(self.root, path)
                if real is not None:
                    out[i] = real
                    break
        return out

    def outside_cells(self, kinds):
        """`outside_paths` of every `"file"` / `"files"` column of `kinds`
        (`{column: kind}`), as `{(row index, column): resolved path}`."""
        return {(i, column): real for column, kind in kinds.items()
                if kind in ("file", "files")
                for i, real in self.outside_paths(
                    column, kind == "files").items()}

    def check_rows(self):
        """Raises a DataError when the manifest has no rows."""
        if not self.rows:
            raise DataError(
                "the manifest has no rows (only a header, with columns "
                f"{', '.join(self.columns)}); add examples to it",
                file=self.name(), reason="no_rows")

    def subset(self, indices):
        """A manifest with the rows at `indices` (same path and root)."""
        m = Manifest([self.rows[i] for i in indices], path=self.path,
                     root=self.root, column_types=self.column_types,
                     lines=None if self.lines is None
                     else [self.lines[i] for i in indices],
                     columns=self.columns)
        return m


def _convert(value, kind):
    if kind in (None, "string"):
        if value is None:
            return ""
        return str(value)
    if kind == "float":
        if value in (None, ""):
            return math.nan
        f = _parse_float(value)
        if f is None:
            raise ValueError(f"{value!r} is not a number")
        return f
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        i = _parse_int(value)
        if i is None:
            raise ValueError(f"{value!r} is not an integer")
        return i
    if kind == "list":
        if value in (None, ""):
            return []
        if isinstance(value, list):
            return value
        return [p for p in str(value).split(PATH_SEPARATOR) if p]
    raise ValueError(f"unknown column type {kind!r}")


def _read_csv(data, path, delimiter):
    text = data.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("the manifest is empty (no header row)",
                        file=path) from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or "" in header:
        raise DataError(f"the header {header} has empty or repeated column "
                        "names", file=path)
    rows, lines = [], []
    for fields in reader:
        line = reader.line_num
        if not fields or all(f.strip() == "" for f in fields):
            continue
        if len(fields) != len(header):
            raise DataError(
                f"has {len(fields)} fields but the header has "
                f"{len(header)} ({', '.join(header)}) (line {line}); quote "
                "cells that hold the delimiter",
                file=path, row=len(rows) + 1, reason="bad_row")
        rows.append(dict(zip(header, fields)))
        lines.append(line)
    return rows, lines, header


def _read_jsonl(data, path):
    rows, lines = [], []
    for n, line in enumerate(data.decode("utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"line {n} is not valid JSON: {e.msg}",
                            file=path, row=len(rows) + 1,
                            reason="bad_row") from None
        if not isinstance(row, dict):
            raise DataError(f"line {n} is not a JSON object", file=path,
                            row=len(rows) + 1, reason="bad_row")
        rows.append(row)
        lines.append(n)
    return rows, lines
