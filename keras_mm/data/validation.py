"""The bad-input check of a `Pipeline`: find the problems, apply the policy.

`validate(pipe)` decodes every example once in a parallel tf.data pass
(`ignore_errors`), diagnoses the failures eagerly (`_diagnose`), checks the
labels, then applies the pipeline's policy (`error | skip | missing`): it
sets `pipe.report` (a `BadInputReport`) and `pipe._decisions` (the keys to
skip, and per column the keys whose cells are blanked). Results are cached
per process, keyed by a fingerprint of the data (manifest content, file
sizes and times, shard stats) and of the pipeline's configuration, so a
second `Pipeline` over the same data does not decode it again.
`explain_error` turns a tf error met later into a `DataError` naming the
row and column where it can.
"""

import hashlib
import json
import logging
import re

import numpy as np
import tensorflow as tf

from keras_mm.data.bad_input import _WHAT
from keras_mm.data.bad_input import LABEL_REASONS
from keras_mm.data.bad_input import BadInputReport
from keras_mm.data.bad_input import Problem
from keras_mm.data.bad_input import clean_tf_message
from keras_mm.data.bad_input import to_error
from keras_mm.data.sources import AUTOTUNE
from keras_mm.errors import DataError

logger = logging.getLogger("keras_mm.data")

# Validation results, keyed by a fingerprint of the data and the config.
_VALIDATION_CACHE = {}


def fingerprint(pipe):
    """A hash of the pipeline's data and configuration."""
    h = hashlib.sha256()
    config = {
        "inputs": [[i.name, type(i.pre).__name__, i.columns,
                    i.pre.get_config()] for i in pipe.inputs],
        "labels": [[lab.head, lab.config()] for lab in pipe.labels],
        "wanted": pipe.wanted,
    }
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    pipe.source.fingerprint(h)
    return h.hexdigest()


def validate(pipe, force=False):
    """Runs the check (once per data + configuration, unless `force`) and
    applies `pipe.policy`; returns the report."""
    if not pipe.validate_data:
        pipe.report = BadInputReport(pipe.source_name, pipe.policy,
                                     pipe.max_report_rows)
        pipe.report.total = pipe.num_examples()
        pipe._decisions = {"skip": [], "blank": {}}
        return pipe.report
    key = fingerprint(pipe)
    found = None if force else _VALIDATION_CACHE.get(key)
    if found is None:
        found = _find_problems(pipe)
        _VALIDATION_CACHE[key] = found
    _apply_policy(pipe, found)
    return pipe.report


def carry_over(old_key, pipe):
    """Keeps the check result found under `old_key` for `pipe`'s current
    fingerprint (its preprocessors were adapted since: `parse` unchanged)."""
    found = _VALIDATION_CACHE.get(old_key)
    if found is not None:
        _VALIDATION_CACHE[fingerprint(pipe)] = found


def _parse_inputs(pipe, raw):
    return {inp.name: inp.pre.parse(inp.raw(raw), training=False)
            for inp in pipe.inputs}


def _check_outputs(pipe, raw):
    """Per input: (present, raw value empty) for the validation pass."""
    parsed = _parse_inputs(pipe, raw)
    out = {}
    for inp in pipe.inputs:
        present = tf.cast(parsed[inp.name][inp.name + "_present"],
                          tf.float32)
        if len(inp.kinds) == 1:
            value = raw[next(iter(inp.columns.values()))]
            if value.dtype == tf.string:
                empty = tf.reduce_all(tf.strings.length(value) == 0)
            else:
                empty = tf.reduce_all(tf.math.is_nan(
                    tf.cast(value, tf.float32)))
        else:
            empty = tf.constant(False)
        # A checksum of every parsed tensor: without it tf.data prunes
        # the decoding ops whose outputs are not used, and a bad value
        # would pass the check.
        checksum = tf.add_n([
            tf.reduce_sum(tf.cast(tf.strings.length(t), tf.float32))
            if t.dtype == tf.string else
            tf.reduce_sum(tf.cast(t, tf.float32))
            for t in tf.nest.flatten(parsed[inp.name])])
        # The raw series' steps, where the preprocessor can cut it (-1: n/a).
        steps = (tf.cast(inp.pre.raw_steps(inp.raw(raw)), tf.float32)
                 if hasattr(inp.pre, "raw_steps") else tf.constant(-1.0))
        out[inp.name] = tf.stack([present, tf.cast(empty, tf.float32),
                                  checksum, steps])
    return out


def _find_problems(pipe):
    """All problems: `{key: [Problem...]}` plus bookkeeping."""
    problems = {}
    where = {}
    if pipe.manifest is not None:
        cells, labels = pipe.source.cells()
        keys = list(range(len(pipe.manifest)))
        where = {i: pipe.source.where(i) for i in keys}
        ds = pipe.source.dataset(keys, cells, labels).map(
            pipe.source.load, num_parallel_calls=AUTOTUNE,
            deterministic=False)
        ds = ds.map(lambda k, raw, lab: (k, _check_outputs(pipe, raw),
                                         tf.constant(0, tf.int64),
                                         tf.constant("")),
                    num_parallel_calls=AUTOTUNE, deterministic=False)
        label_values = {h: dict(enumerate(v)) for h, v in labels.items()}
    else:
        files_ds, _ = pipe.source.files_dataset()
        ds = pipe.source.records(files_ds, AUTOTUNE, False).map(
            pipe.source.decode, num_parallel_calls=AUTOTUNE,
            deterministic=False)
        ds = ds.map(lambda k, raw, lab, extra: (
            k, _check_outputs(pipe, raw), extra["row"], extra["missing"],
            lab), num_parallel_calls=AUTOTUNE, deterministic=False)
        keys = None
        label_values = {lab.head: {} for lab in pipe.labels}
    ds = ds.ignore_errors().batch(256).prefetch(2)
    seen = set()
    flags = {}
    for batch in ds.as_numpy_iterator():
        batch_keys = batch[0]
        for j, key in enumerate(batch_keys.tolist()):
            seen.add(key)
            flags[key] = {name: v[j] for name, v in batch[1].items()}
            if pipe.files is not None:
                rec_row = int(batch[2][j])
                where[key] = pipe.source.where(key)
                if rec_row:
                    where[key]["manifest_row"] = rec_row
                missing = batch[3][j].decode()
                if missing:
                    where[key]["missing_files"] = missing.split("|")
                for lab in pipe.labels:
                    v = batch[4][lab.head][j]
                    label_values[lab.head][key] = (
                        v.decode() if isinstance(v, bytes) else
                        [float(x) for x in np.reshape(v, [-1])])
    if keys is None:
        total = pipe.num_examples()
        keys = sorted(seen)
        if total is None or total != len(seen):
            keys = sorted(seen | set(pipe.source.all_keys()))
    outside = _outside_problems(pipe)
    failed = [k for k in keys if k not in seen]
    for key in failed:
        problems[key] = list(outside.get(key, []))
        problems[key].extend(_diagnose(pipe, key, where, label_values,
                                       _inputs_of(outside.get(key))))
    for key in keys:
        if key in seen:
            problems.setdefault(key, []).extend(outside.get(key, []))
            problems[key].extend(
                _absent_problems(pipe, key, flags[key], where.get(key),
                                 _inputs_of(outside.get(key))))
        for lab in pipe.labels:
            values = label_values[lab.head]
            if key not in values:
                continue      # the record did not decode; reported
            bad = lab.check(values[key])
            if bad:
                problems.setdefault(key, []).append(
                    Problem(key, lab.head, ", ".join(lab.columns), *bad))
    problems = {k: v for k, v in problems.items() if v}
    truncated = {}
    for key in sorted(flags):
        for inp in pipe.inputs:
            steps = int(flags[key][inp.name][3])
            if hasattr(inp.pre, "raw_steps") and steps > inp.pre.length:
                truncated.setdefault(key, []).append(
                    (inp.name, inp.column_names(), steps))
    return {"problems": problems, "where": where, "total": len(keys),
            "truncated": truncated}


def _outside_problems(pipe):
    """`{key: [Problem]}` of the file paths refused because they resolve
    outside the manifest's folder (their cells were blanked, unread)."""
    out = {}
    if pipe.manifest is None:
        return out
    root = pipe.manifest.root
    for (key, column), real in sorted(pipe.source.outside().items()):
        for name in pipe.readers(column):
            out.setdefault(key, []).append(Problem(
                key, name, column, "path_outside",
                f"the path resolves to {real}, outside the manifest's "
                f"folder {root}, and allow_paths_outside is off (recipe "
                "key data.allow_paths_outside: false); the file was not "
                "read"))
    return out


def _inputs_of(items):
    return {p.input for p in items or ()}


def _absent_problems(pipe, key, flags, where, skip=()):
    out = []
    for inp in pipe.inputs:
        if inp.name in skip:
            continue
        present, empty = flags[inp.name][:2]
        problem = _absent_problem(pipe, key, inp, present, empty, where)
        if problem is not None:
            out.append(problem)
    return out


def _absent_problem(pipe, key, inp, present, empty, where):
    missing_cols = set((where or {}).get("missing_files", []))
    if set(inp.columns.values()) & missing_cols:
        return Problem(
            key, inp.name, inp.column_names(), "missing_file",
            "the file was missing when the TFRecords were written")
    if present == 0:
        reason = "all_nan" if (inp.modality == "sensor"
                               and not empty) else "empty"
        detail = ("no finite value in the series"
                  if reason == "all_nan" else "the value is empty")
        return Problem(key, inp.name, inp.column_names(), reason,
                       detail)
    return None


def _diagnose(pipe, key, where, label_values, skip=()):
    """Eager look at one example that failed in the graph (`skip`: inputs
    already reported)."""
    out = []
    if pipe.manifest is not None:
        raw, file_problems = pipe.source.eager_raw(key, pipe.readers)
        out.extend(file_problems)
    else:
        where[key] = pipe.source.where(key)
        try:
            raw, labels, extra = pipe.source.eager_record(key)
        except (tf.errors.OpError, StopIteration, ValueError) as e:
            return [Problem(
                key, "<record>", None, "decode_error",
                "the record could not be read: " +
                clean_tf_message(getattr(e, "message", e)))]
        if int(extra["row"]):
            where[key]["manifest_row"] = int(extra["row"])
        missing = extra["missing"].numpy().decode()
        if missing:
            where[key]["missing_files"] = missing.split("|")
        for lab in pipe.labels:
            v = labels[lab.head].numpy()
            label_values[lab.head][key] = (
                v.decode() if isinstance(v, bytes) else
                [float(x) for x in np.reshape(v, [-1])])
    bad_inputs = {p.input for p in out} | set(skip)
    for inp in pipe.inputs:
        if inp.name in bad_inputs:
            continue
        try:
            parsed = inp.pre.parse(inp.raw(raw), training=False)
            present = float(parsed[inp.name + "_present"])
        except (tf.errors.OpError, ValueError, TypeError) as e:
            out.append(Problem(
                key, inp.name, inp.column_names(), _classify(e),
                clean_tf_message(getattr(e, "message", e))))
            continue
        empty = _is_empty(raw[next(iter(inp.columns.values()))]) \
            if len(inp.kinds) == 1 else False
        problem = _absent_problem(pipe, key, inp, present, empty,
                                  where.get(key))
        if problem is not None:
            out.append(problem)
    if not out and not skip:
        out.append(Problem(
            key, "<example>", None, "decode_error",
            "the example failed in the tf.data graph but decodes "
            "eagerly; check the preprocessors' graph code"))
    return out


def _apply_policy(pipe, found):
    problems, where = found["problems"], found["where"]
    report = BadInputReport(pipe.source_name, pipe.policy,
                            pipe.max_report_rows)
    report.total = found["total"]
    skip, blank = [], {}
    first = None
    for key in sorted(problems):
        items = problems[key]
        has_label = any(p.reason in LABEL_REASONS for p in items)
        if pipe.policy == "error":
            action = "error"
        elif pipe.policy == "skip" or has_label:
            action = "skipped"
        else:
            action = "marked_missing"
        if action == "skipped":
            skip.append(key)
            report.skipped += 1
        for p in items:
            entry_action = action
            if action == "marked_missing" and p.reason in LABEL_REASONS:
                entry_action = "skipped"
            if entry_action == "marked_missing" and p.reason in (
                    "missing_file", "decode_error", "sample_rate",
                    "path_outside"):
                for inp in pipe.inputs:
                    if inp.name == p.input:
                        for c in inp.columns.values():
                            blank.setdefault(c, set()).add(key)
            info = dict(where.get(key, {}))
            info.pop("missing_files", None)
            report.add(input=p.input, reason=p.reason,
                       column=p.column, detail=p.detail,
                       action=entry_action, **info)
            if first is None:
                first = dict(info, input=p.input, reason=p.reason,
                             column=p.column, detail=p.detail)
    cut = _report_truncations(pipe, found, report, set(skip))
    pipe.report = report
    pipe._decisions = {"skip": sorted(skip),
                       "blank": {c: sorted(k) for c, k in blank.items()}}
    report.log(logger)
    if pipe.report_path:
        report.write_json(pipe.report_path)
    if first is not None and pipe.policy == "error":
        raise to_error(first)
    if cut is not None:
        raise DataError(f"{cut['detail']}; preprocess.truncate is 'error': "
                        f"{_WHAT['truncated']}", file=cut.get("file"),
                        row=cut.get("row"), column=cut["column"],
                        reason="truncated")
    for inp in pipe.inputs:
        n = report.count(inp.name, "decode_error") + \
            report.count(inp.name, "sample_rate")
        if report.total >= 2 and n == report.total:
            raise DataError(
                f"every example of input {inp.name!r} fails to decode "
                f"({report.rows[0]['detail'] if report.rows else ''}); "
                "the preprocessor's configuration does not match the "
                f"data in column(s) {inp.column_names()}",
                file=pipe.source_name, column=inp.column_names(),
                reason="decode_error")
    if report.total and report.skipped == report.total:
        raise DataError("every example has bad input and was skipped; "
                        "see the report above", file=pipe.source_name)


def _report_truncations(pipe, found, report, skipped):
    """Adds the series longer than their preprocessor's `length` to the
    report (`truncate: warn | error`); returns the first entry under
    `truncate: error`, or None."""
    first = None
    policies = {inp.name: inp.pre for inp in pipe.inputs}
    for key, items in sorted(found.get("truncated", {}).items()):
        if key in skipped:
            continue
        for name, column, steps in items:
            pre = policies[name]
            if pre.truncate == "allow":
                continue
            info = dict(found["where"].get(key, {}))
            info.pop("missing_files", None)
            detail = (f"{steps} steps, longer than length={pre.length}: "
                      f"{steps - pre.length} step(s) cut (a {pre.crop!r} "
                      "window in evaluation and serving)")
            action = "error" if pre.truncate == "error" else "truncated"
            report.add(input=name, reason="truncated", column=column,
                       detail=detail, action=action, steps=steps, **info)
            if first is None and action == "error":
                first = dict(info, column=column, detail=detail)
    return first


def explain_error(pipe, error):
    """A DataError for a tf error raised while reading this pipeline."""
    message = clean_tf_message(getattr(error, "message", error))
    full = str(getattr(error, "message", error))
    row = column = None
    file = pipe.source_name
    if pipe.manifest is not None:
        row, column = _file_row(pipe, full)
    reason = "missing_file" if isinstance(
        error, tf.errors.NotFoundError) else "decode_error"
    match = re.search(r"label of head \\?'([^'\\]+)\\?':\] "
                      r"\[([^\]]*)\]", full)
    if match and column is None:
        reason = "unknown_label"
        head, value = match.group(1), match.group(2)
        for lab in pipe.labels:
            if lab.head != head:
                continue
            column = ", ".join(lab.columns)
            if pipe.manifest is not None:
                _, labels = pipe.source.cells()
                row = next((i + 1 for i, v in enumerate(labels[head])
                            if v == value), None)
    return DataError(
        f"the input pipeline failed after the bad-input check: "
        f"{message}. A file may have changed or been removed since the "
        "check (run it again: Pipeline.validate(force=True)), or the "
        "check was turned off (validate=False)", file=file, row=row,
        column=column, reason=reason)


def _file_row(pipe, text):
    """`(row, column)` of the first manifest file path found in `text`."""
    cells, _ = pipe.source.cells()
    for col, kind in pipe.wanted.items():
        if kind not in ("file", "files"):
            continue
        for i, cell in enumerate(cells[col]):
            paths = cell if isinstance(cell, list) else [cell]
            if any(p and p in text for p in paths):
                return i + 1, col
    return None, None


def _classify(error):
    message = str(getattr(error, "message", error)).lower()
    if isinstance(error, tf.errors.NotFoundError):
        return "missing_file"
    if "sample rate" in message or "sample_rate" in message:
        return "sample_rate"
    return "decode_error"


def _is_empty(value):
    value = np.asarray(value)
    if value.dtype.kind in ("S", "O", "U"):
        return all(len(v) == 0 for v in value.reshape([-1]))
    return bool(np.all(np.isnan(value.astype(np.float64))))
