"""Exceptions raised by keras_mm.

Every error message says *where* the problem is (a file, a manifest row, a key
path) and *what to change*.
"""


class KerasMMError(Exception):
    """Base class of every keras_mm error."""


class ConfigError(KerasMMError, ValueError):
    """A spec, recipe or layer argument is invalid.

    Args:
        key_path: dotted path of the offending key, e.g. `"fusion.type"`.
        message: what is wrong and what to change.
        source: optional file the spec came from (e.g. a recipe path).
    """

    def __init__(self, key_path, message, source=None):
        self.key_path = key_path
        self.source = source
        self.detail = message
        prefix = f"{source}: " if source else ""
        where = f"{key_path}: " if key_path else ""
        super().__init__(f"{prefix}{where}{message}")

    def with_source(self, source):
        """Returns a copy of this error that names `source` (a file)."""
        return ConfigError(self.key_path, self.detail, source=source)


def not_one_of(key_path, value, allowed, source=None):
    """Builds the standard "'x' is not one of a, b, c" ConfigError."""
    allowed = ", ".join(str(a) for a in allowed)
    return ConfigError(
        key_path, f"{value!r} is not one of {allowed}", source=source
    )


class DataError(KerasMMError, ValueError):
    """A data record is bad: names the file, row, column and reason."""

    def __init__(self, message, *, file=None, row=None, column=None,
                 reason=None):
        self.file = file
        self.row = row
        self.column = column
        self.reason = reason
        parts = []
        if file is not None:
            parts.append(str(file))
        if row is not None:
            parts.append(f"row {row}")
        if column is not None:
            parts.append(f"column {column!r}")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ExportError(KerasMMError, RuntimeError):
    """Export or verification of a SavedModel failed."""
