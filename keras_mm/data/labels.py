"""Head labels: which column(s) a head reads, and their encoding.

`HeadLabel` checks a label spec, says which kind its columns are read as
(key strings, or floats for regression), finds bad label values for the
bad-input report (`check`) and encodes a batch of raw values in-graph
(`encode`): int32 class ids, binary float32 `[B, 1]`, multi-hot
`[B, labels]` or regression floats `[B, units]`.
"""

import math

import tensorflow as tf

from keras_mm.data.record_values import key_string

LABEL_TYPES = ("classification", "binary", "multilabel", "regression", "key")


class HeadLabel:
    """One head's label: column(s), type and classes, and its encoding.

    Args:
        head: the head name (the key of the dataset's labels dict).
        spec: a dict with `type` (`classification` (default), `binary`,
            `multilabel`, `regression`, `key`: the raw key strings, e.g.
            a contrastive head's classes for class-level retrieval),
            `column` (default the head name), `class_names` or
            `num_classes`, `label_names` or `num_labels` (multilabel, cells
            `a|b`), `units` (regression: that many columns). A builder
            spec's `heads` entry works as it is.

    Class names go through `keras_mm.data.record_values.key_string`, the cells
    through the same converter, so `3`, `3.0` and `"3"` all match class
    `"3"`.

    Example:

    >>> HeadLabel("digit", {"num_classes": 3}).classes
    ['0', '1', '2']
    """

    def __init__(self, head, spec):
        if isinstance(spec, str):
            raise ValueError(
                f"labels[{head!r}]={spec!r}: give a dict such as "
                "{'column': ..., 'type': 'classification', 'class_names': "
                "[...]} (a builder spec's heads entry works)")
        spec = dict(spec)
        self.head = head
        self.type = spec.get("type", "classification")
        if self.type not in LABEL_TYPES:
            raise ValueError(f"labels[{head!r}]: type={self.type!r} is not "
                             f"one of {', '.join(LABEL_TYPES)}")
        column = spec.get("column", head)
        self.columns = list(column) if isinstance(column, (list, tuple)) \
            else [column]
        self.separator = spec.get("separator", "|")
        self.classes = None
        if self.type == "classification":
            names = spec.get("class_names") or spec.get("classes")
            if names is None:
                if spec.get("num_classes") is None:
                    raise ValueError(
                        f"labels[{head!r}]: give class_names (the label "
                        "values, in id order) or num_classes (labels 0..N-1)")
                names = [str(i) for i in range(int(spec["num_classes"]))]
            self.classes = [key_string(c, f"labels[{head!r}]")
                            for c in names]
        elif self.type == "binary":
            names = spec.get("class_names") or spec.get("classes") or \
                ["0", "1"]
            if len(names) != 2:
                raise ValueError(f"labels[{head!r}]: a binary head takes two "
                                 f"class_names (negative, positive); got "
                                 f"{names}")
            self.classes = [key_string(c, f"labels[{head!r}]")
                            for c in names]
        elif self.type == "multilabel":
            names = spec.get("label_names") or spec.get("class_names")
            if names is None:
                if spec.get("num_labels") is None:
                    raise ValueError(f"labels[{head!r}]: give label_names or "
                                     "num_labels")
                names = [str(i) for i in range(int(spec["num_labels"]))]
            self.classes = [key_string(c, f"labels[{head!r}]")
                            for c in names]
        elif self.type == "key":
            pass   # the raw key strings (a contrastive head's class labels)
        else:
            self.units = int(spec.get("units", len(self.columns)))
            if self.units != len(self.columns):
                raise ValueError(
                    f"labels[{head!r}]: units={self.units} needs that many "
                    f"columns; got column={column!r}")
        if len(self.columns) != 1 and self.type != "regression":
            raise ValueError(f"labels[{head!r}]: a {self.type} label reads "
                             "one column")

    @property
    def wanted_kind(self):
        return "float" if self.type == "regression" else "key"

    def config(self):
        return {"type": self.type, "columns": self.columns,
                "classes": self.classes, "separator": self.separator}

    def manifest_values(self, cells):
        """Per-row raw label values from a manifest's converted `cells`
        (`{column: values}`): key strings, or lists of floats."""
        if self.type == "regression":
            return [list(v) for v in zip(*[cells[c] for c in self.columns])]
        return list(cells[self.columns[0]])

    def check(self, value):
        """(reason, detail) for a bad raw label value, else None."""
        if self.type == "regression":
            if any(math.isnan(v) for v in value):
                return "missing_label", "the label is empty / NaN"
            return None
        if self.type == "multilabel":
            parts = [p.strip() for p in value.split(self.separator)
                     if p.strip()]
            unknown = [p for p in parts if p not in self.classes]
            if unknown:
                return ("unknown_label", f"{', '.join(map(repr, unknown))} "
                        f"not in {self.classes}")
            return None
        if value == "":
            return "missing_label", "the label is empty"
        if self.type == "key":
            return None
        if value not in self.classes:
            shown = self.classes if len(self.classes) <= 20 else \
                self.classes[:20] + ["..."]
            return "unknown_label", f"{value!r} is not one of {shown}"
        return None

    def raw_spec(self):
        """`tf.TensorSpec` of ONE raw label value (what `encode` takes)."""
        if self.type == "regression":
            return tf.TensorSpec([self.units], tf.float32)
        return tf.TensorSpec([], tf.string)

    def encode(self, values):
        """In-graph: a batch of raw values (strings `[B]`, or floats
        `[B, units]`) -> label tensors: int32 class ids `[B]`, float32
        `[B, 1]` (binary), `[B, classes]` (multilabel), `[B, units]`
        (regression) or the key strings `[B]` (key)."""
        if self.type == "regression":
            return tf.reshape(tf.cast(values, tf.float32), [-1, self.units])
        if self.type == "key":
            return values
        if self.type == "multilabel":
            return tf.map_fn(self._encode_multilabel, values,
                             fn_output_signature=tf.TensorSpec(
                                 [len(self.classes)], tf.float32))
        classes = tf.constant(self.classes)
        match = tf.equal(values[:, None], classes[None, :])
        known = tf.reduce_any(match, axis=1)
        check = tf.debugging.Assert(
            tf.reduce_all(known),
            [f"label of head {self.head!r}:",
             tf.boolean_mask(values, tf.logical_not(known)),
             "is not one of", classes])
        with tf.control_dependencies([check]):
            ids = tf.argmax(tf.cast(match, tf.int32), axis=1,
                            output_type=tf.int32)
        if self.type == "binary":
            return tf.cast(ids, tf.float32)[:, None]
        return ids

    def _encode_multilabel(self, value):
        classes = tf.constant(self.classes)
        parts = tf.strings.strip(tf.strings.split(value, self.separator))
        parts = tf.boolean_mask(parts, tf.strings.length(parts) > 0)
        match = tf.equal(parts[:, None], classes[None, :])
        check = tf.debugging.Assert(
            tf.reduce_all(tf.reduce_any(match, axis=1)),
            [f"label of head {self.head!r}:", value,
             "holds a name outside", classes])
        with tf.control_dependencies([check]):
            return tf.cast(tf.reduce_any(match, axis=0), tf.float32)
