"""Which manifest / TFRecord columns a model input reads, and as what.

`modality_kinds(pre)` gives a preprocessor's `{raw key: wanted kind}`
(`file`, `files`, `string`, `key` (label / category cells), `float`);
`InputColumns` maps its raw keys to columns and picks its raw value(s) out
of a decoded row.
"""

import tensorflow as tf


def modality_kinds(pre, arrays=False):
    """`{raw_key: kind}` a preprocessor reads from a manifest column.

    `arrays=True` (serving's `serve_examples`): a sensor preprocessor with
    `source="array"` reads a float list (`floats`); a manifest cannot hold
    one, so without it that preprocessor is refused.
    """
    modality = getattr(pre, "modality", None)
    keys = pre.raw_keys()
    if modality in ("image", "audio"):
        return {keys[0]: "file"}
    if modality == "video":
        return {keys[0]: "files" if pre.source == "frames" else "file"}
    if modality == "sensor":
        if pre.source == "array" and arrays:
            return {keys[0]: "floats"}
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


class InputColumns:
    """The column(s) one model input reads: `{raw key: column}` and
    `{raw key: wanted kind}`; `raw(row)` picks its raw value(s)."""

    def __init__(self, name, pre, columns):
        if getattr(pre, "name", name) != name:
            raise ValueError(
                f"preprocessors[{name!r}] is named {pre.name!r}: the key "
                "must be the preprocessor's name (the model input name)")
        self.name = name
        self.pre = pre
        self.modality = getattr(pre, "modality", None)
        kinds = modality_kinds(pre)
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
