"""Bad-input policy and report.

The input pipeline checks every example *before* it builds the `tf.data`
graph (see `keras_mm.data.pipeline`). Each problem found is one entry of a
`BadInputReport`; the per-run policy decides what happens to the example:

- `"error"`: stop with a `keras_mm.errors.DataError` naming the file, row,
  column and reason (the report is logged and written first);
- `"skip"`: drop the example and count it;
- `"missing"`: keep the example with that modality's raw value replaced by
  an empty one, so the preprocessor marks it absent (`<name>_present` = 0).
  Only modality problems can be marked missing: an example whose *label* is
  bad is skipped (and counted) under `"missing"`, since it cannot be
  trained or scored without its label.

Reasons: `missing_file`, `decode_error` (undecodable image bytes, truncated
or non-PCM WAV, unreadable sensor file...), `sample_rate` (audio at another
rate), `empty` (empty text / empty cell), `all_nan` (a sensor series with no
value), `unknown_label` (a label outside the known classes),
`missing_label` and `path_outside` (a file path resolving, symlinks
followed, outside the manifest's folder while `allow_paths_outside` is
off: the file is never read). `truncated` (a series longer than its
preprocessor's `length`) is reported, never skipped or blanked: the
preprocessor's own `truncate` policy (`warn | error | allow`) applies.
"""

import collections
import json
import logging
import os
import re

import tensorflow as tf

from keras_mm.errors import DataError
from keras_mm.layers.utils import check_choice

logger = logging.getLogger("keras_mm.data")

POLICIES = ("error", "skip", "missing")
REASONS = ("missing_file", "decode_error", "sample_rate", "empty", "all_nan",
           "unknown_label", "missing_label", "path_outside", "truncated")
#: Reasons that concern a label rather than a modality.
LABEL_REASONS = ("unknown_label", "missing_label")

_WHAT = {
    "missing_file": "fix the path or remove the row",
    "decode_error": "replace the file or remove the row",
    "sample_rate": "resample the file or change the preprocessor's "
                   "sample_rate",
    "empty": "fill the value, or use bad_input='missing' to train with the "
             "modality absent",
    "all_nan": "fix the file, or use bad_input='missing' to train with the "
               "modality absent",
    "unknown_label": "fix the label or add the class to the head's "
                     "class_names",
    "missing_label": "fill the label or remove the row",
    "path_outside": "move the file into the manifest's folder, or, for a "
                    "trusted manifest, allow it (recipe key "
                    "data.allow_paths_outside: true; Pipeline("
                    "allow_paths_outside=True))",
    "truncated": "raise the input's preprocess.length to cover the longest "
                 "series (keras-mm init infers it from the training split), "
                 "or set preprocess.truncate: warn (keep the first length "
                 "steps, counted in the report) or allow",
}


def check_policy(policy):
    """Returns `policy` or raises a ValueError naming the allowed values."""
    return check_choice("bad_input", "policy", policy, POLICIES)


def clean_tf_message(message):
    """A TF error message without `{{function_node ...}}` noise."""
    message = re.sub(r"\{\{[^}]*\}\}", "", str(message))
    message = re.sub(r"\s*\[Op:[^\]]*\]( name: \S*)?", "", message)
    if "Summarized data:" in message:
        # tf.debugging.Assert: the data holds the explanation.
        data = message.split("Summarized data:", 1)[1].strip().splitlines()
        data = [re.sub(r"^b'(.*)'$", r"\1", d.strip()) for d in data]
        return " ".join(d for d in data if d)
    message = message.strip().splitlines()
    return message[0].strip() if message else ""


class BadInputReport:
    """Counts and examples of bad inputs found in one pass over the data.

    Args:
        source: the manifest or TFRecord pattern checked.
        policy: `"error"`, `"skip"` or `"missing"`.
        max_rows: how many offending entries are kept in `rows`.

    Attributes:
        total: examples checked.
        counts: `{input or head name: {reason: count}}`.
        rows: the first `max_rows` entries, each a dict with `row` (1-based
            row of the manifest, or record of the TFRecord file), `file`,
            `column`, `input`, `reason`, `detail` and `action`
            (`"error"`, `"skipped"` or `"marked_missing"`).
        skipped: examples dropped; `marked_missing`: modality values
            replaced by empty ones.

    Example:

    >>> report = BadInputReport("train.csv", policy="skip")
    >>> report.add(input="image", reason="missing_file", row=3,
    ...            column="image_path", file="train.csv", action="skipped")
    >>> report.counts
    {'image': {'missing_file': 1}}
    """

    def __init__(self, source=None, policy="error", max_rows=10):
        self.source = None if source is None else str(source)
        self.policy = check_policy(policy)
        self.max_rows = int(max_rows)
        self.total = 0
        self.skipped = 0
        self.marked_missing = 0
        self.counts = {}
        self.rows = []
        self.num_problems = 0

    def add(self, *, input, reason, row, column=None, file=None, detail="",
            action=None, **extra):
        """Records one problem (one input of one example)."""
        if reason not in REASONS:
            raise ValueError(f"BadInputReport.add: reason={reason!r} is not "
                             f"one of {', '.join(REASONS)}")
        per_input = self.counts.setdefault(input, {})
        per_input[reason] = per_input.get(reason, 0) + 1
        self.num_problems += 1
        if action == "marked_missing":
            self.marked_missing += 1
        if len(self.rows) < self.max_rows:
            entry = {"row": row, "file": file, "column": column,
                     "input": input, "reason": reason, "detail": detail,
                     "action": action}
            entry.update(extra)
            self.rows.append(entry)

    @property
    def clean(self):
        """True when no problem was found."""
        return self.num_problems == 0

    def count(self, input=None, reason=None):
        """Problems of `input` (all inputs if None) with `reason`."""
        n = 0
        for name, reasons in self.counts.items():
            if input is not None and name != input:
                continue
            for r, c in reasons.items():
                if reason is None or r == reason:
                    n += c
        return n

    def to_dict(self):
        return {
            "source": self.source,
            "policy": self.policy,
            "total": self.total,
            "kept": self.total - self.skipped,
            "skipped": self.skipped,
            "marked_missing": self.marked_missing,
            "problems": self.num_problems,
            "counts": self.counts,
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, data):
        report = cls(data.get("source"), data.get("policy", "error"),
                     max_rows=max(len(data.get("rows", [])), 1))
        report.total = data.get("total", 0)
        report.skipped = data.get("skipped", 0)
        report.marked_missing = data.get("marked_missing", 0)
        report.num_problems = data.get("problems", 0)
        report.counts = {k: dict(v) for k, v in data.get("counts", {}).items()}
        report.rows = [dict(r) for r in data.get("rows", [])]
        return report

    def summary(self):
        """A few lines for the log."""
        head = (f"bad input in {self.source}: {self.num_problems} problem(s) "
                f"in {self.total} example(s), policy {self.policy!r}: "
                f"{self.skipped} skipped, {self.marked_missing} value(s) "
                "marked missing")
        if self.clean:
            return (f"bad input in {self.source}: none in {self.total} "
                    "example(s)")
        lines = [head]
        for name, reasons in sorted(self.counts.items()):
            parts = ", ".join(f"{r}: {c}" for r, c in sorted(reasons.items()))
            lines.append(f"  {name}: {parts}")
        for entry in self.rows:
            lines.append("  " + describe(entry))
        if self.num_problems > len(self.rows):
            lines.append(f"  ... and {self.num_problems - len(self.rows)} "
                         "more (see the counts)")
        return "\n".join(lines)

    def log(self, log=None):
        """Logs the summary (a warning when there are problems), once per
        process: the same report again (the scoreboard's single-modality
        runs read the same splits) is logged at DEBUG."""
        log = log or logger
        summary = self.summary()
        if summary in _LOGGED:
            log.debug(summary)
        elif self.clean:
            log.info(summary)
        else:
            log.warning(summary)
        _LOGGED.add(summary)

    def write_json(self, path):
        """Writes `to_dict()` as JSON to `path` (any `tf.io.gfile` path)."""
        path = os.fspath(path)
        folder = os.path.dirname(path)
        if folder and not tf.io.gfile.exists(folder):
            tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps(self.to_dict(), indent=2, default=str))
        return path

    @classmethod
    def read_json(cls, path):
        with tf.io.gfile.GFile(os.fspath(path), "r") as f:
            return cls.from_dict(json.loads(f.read()))

    def __repr__(self):
        return (f"BadInputReport(source={self.source!r}, "
                f"policy={self.policy!r}, total={self.total}, "
                f"problems={self.num_problems}, counts={self.counts})")


# The summaries already logged by this process (`BadInputReport.log`).
_LOGGED = set()


def describe(entry):
    """One line naming where an entry is and what is wrong."""
    where = []
    if entry.get("file"):
        where.append(str(entry["file"]))
    if entry.get("row") is not None:
        where.append(f"row {entry['row']}")
    if entry.get("manifest_row") is not None:
        where.append(f"manifest row {entry['manifest_row']}")
    if entry.get("column"):
        where.append(f"column {entry['column']!r}")
    text = f"{', '.join(where)}: {entry['reason']}"
    if entry.get("detail"):
        text += f" ({entry['detail']})"
    if entry.get("action"):
        text += f" [{entry['action']}]"
    return text


def to_error(entry):
    """The DataError for one report entry."""
    detail = f": {entry['detail']}" if entry.get("detail") else ""
    message = (f"{entry['reason']}{detail}; {_WHAT[entry['reason']]} (or "
               "set bad_input='skip' / 'missing')")
    if entry.get("manifest_row") is not None:
        message += f" [manifest row {entry['manifest_row']}]"
    return DataError(message, file=entry.get("file"), row=entry.get("row"),
                     column=entry.get("column"), reason=entry["reason"])


Problem = collections.namedtuple("Problem", "index input column reason detail")
