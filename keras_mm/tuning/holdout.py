"""The validation split a search selects on, when the recipe has none.

A search must not select on the test split. When `data.splits` has no
`val`, `holdout_splits` holds out `tune.val_fraction` of the train
manifest's rows (seeded, stratified by the first classification head's
label) and writes `train` and `val` manifests into the search's folder.
Their file cells are made absolute against the train manifest's folder, so
they read the same files; a path outside that folder is refused unless
`data.allow_paths_outside` (as the pipeline refuses it).
"""

import csv
import hashlib
import io
import json
import os

import tensorflow as tf

from keras_mm.errors import ConfigError, DataError

FILE_MODALITIES = ("image", "audio", "video", "sensor")


def _label_column(recipe):
    from keras_mm.training.run_data import head_labels

    return next((spec["column"] for spec in head_labels(recipe).values()
                 if spec["type"] in ("classification", "binary",
                                     "multilabel")), None)


def _file_columns(recipe):
    columns = []
    for name, entry in recipe["inputs"].items():
        if entry.get("modality") in FILE_MODALITIES:
            source = entry.get("source") or name
            columns += source if isinstance(source, list) else [source]
    return [c for c in columns if c]


def _val_rows(rows, label, fraction, seed):
    """Row indices held out: `stratified_split` per label value (a label
    with more values than half the rows, a regression target, is one
    group)."""
    from keras_mm.datasets.ts_dataset import stratified_split

    labels = [str(row.get(label)) for row in rows] if label else []
    if len(set(labels)) > max(2, len(rows) // 2) or not labels:
        labels = [None] * len(rows)
    return set(stratified_split(labels, fraction, seed)[1])


def _absolute_cell(value, manifest, column, row, allow_outside):
    from keras_mm.data.manifest import PATH_SEPARATOR, join_path, \
        path_outside

    if isinstance(value, list):
        return [_absolute_cell(v, manifest, column, row, allow_outside)
                for v in value]
    if not isinstance(value, str) or not value:
        return value
    out = []
    for part in value.split(PATH_SEPARATOR):
        if not allow_outside and path_outside(manifest.root, part):
            raise DataError(
                f"column {column!r}: {part!r} lies outside the manifest's "
                "folder; set data.allow_paths_outside: true if that is "
                "meant", file=manifest.path, row=row + 1,
                reason="path_outside")
        out.append(join_path(manifest.root, part))
    return PATH_SEPARATOR.join(out)


def _serialize(rows, columns, jsonl, delimiter):
    if jsonl:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n"
                       for r in rows)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, delimiter=delimiter,
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def holdout_splits(recipe, fraction, seed, folder):
    """`data.splits` with a held-out `val` (see the module docs).

    Args:
        recipe: the normalized recipe (absolute paths; its data built).
        fraction: share of the train rows held out.
        seed: the shuffle's seed.
        folder: where `train.<ext>` and `val.<ext>` go.

    Returns:
        `(splits, note)`: the new `{split: path}` and a line saying what
        was held out (None when the recipe has a val split already).
    """
    from keras_mm.data.manifest import Manifest
    from keras_mm.serving.atomic import atomic_write_text

    data = recipe["data"]
    splits = dict(data["splits"])
    if "val" in splits:
        return splits, None
    train = splits["train"]
    if data["format"] != "manifest" or isinstance(train, list):
        raise ConfigError(
            "data.splits.val", "a search selects on a val split, and this "
            "recipe has none; it can hold one out of a single train "
            "manifest only (this train split is "
            f"{'TFRecords' if data['format'] != 'manifest' else 'a list'}"
            "): add data.splits.val")
    manifest = Manifest.read(train)
    label = _label_column(recipe)
    if label and manifest.columns and label not in manifest.columns:
        label = None
    held = _val_rows(manifest.rows, label, fraction, seed)
    if not held or len(held) == len(manifest.rows):
        raise DataError(
            f"{len(manifest.rows)} rows are too few to hold out "
            f"{fraction:.0%} for validation; add data.splits.val",
            file=train)
    file_columns = _file_columns(recipe)
    allow = data.get("allow_paths_outside", False)
    parts = {"train": [], "val": []}
    for i, row in enumerate(manifest.rows):
        row = dict(row)
        for column in file_columns:
            if column in row:
                row[column] = _absolute_cell(row[column], manifest, column,
                                             i, allow)
        parts["val" if i in held else "train"].append(row)
    lower = train.lower()
    jsonl = lower.endswith((".jsonl", ".ndjson", ".json"))
    ext = ".jsonl" if jsonl else (".tsv" if lower.endswith(".tsv")
                                  else ".csv")
    columns = manifest.columns or sorted({k for r in manifest.rows
                                          for k in r})
    os.makedirs(folder, exist_ok=True)
    for split, rows in parts.items():
        path = os.path.join(folder, f"{split}{ext}")
        splits[split] = path
        atomic_write_text(path, _serialize(rows, columns, jsonl,
                                           "\t" if ext == ".tsv" else ","))
    note = (f"held out {len(parts['val'])} of {len(manifest.rows)} train "
            f"rows for validation ({fraction:.0%}, seed {seed}"
            f"{', stratified by ' + repr(label) if label else ''}): "
            f"{splits['val']}")
    return splits, note


def manifest_digest(path):
    """sha256 of a manifest file's bytes (a search's fingerprint)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
