"""`inspect_source(path)`: a summary of a manifest, of a folder of class
subfolders or of TFRecord shards, with what `keras-mm init` infers from a
manifest or a folder (`keras_mm.inference.infer_dataset`)."""

import os

from keras_mm.data import tfrecords
from keras_mm.data.manifest import Manifest
from keras_mm.data.pipeline import MANIFEST_SUFFIXES


def _short(value, limit=80):
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _inference(path, label, sample):
    """`infer_dataset`'s result, or `{"error": ...}` when it cannot infer
    (no label column, an unreadable file): the summary still shows."""
    from keras_mm.errors import DataError
    from keras_mm.inference import infer_dataset
    from keras_mm.inference.recipe_writer import summary_lines
    try:
        inference = infer_dataset(path, label=label, sample=sample)
    except DataError as e:
        return {"error": str(e)}
    inference["summary"] = summary_lines(inference)
    return inference


def _is_class_folder(path):
    return os.path.isdir(path) and any(
        not e.startswith(".") and os.path.isdir(os.path.join(path, e))
        for e in os.listdir(path))


def inspect_source(path, rows=3, label=None, sample=64):
    """Describes a manifest (columns, types, rows), a folder of class
    subfolders or TFRecords (files, features, record count, first
    records). For a manifest or a folder, `inference` is what `keras-mm
    init` would infer (column -> modality, sizes, lengths, label and head,
    and `summary`, its lines as init prints them); nothing is written.

    Args:
        path: a `.csv`/`.tsv`/`.jsonl` manifest, a folder of class
            subfolders, or a TFRecord file, folder or glob.
        rows: how many example rows / records to include.
        label: the label column for the inference (default: found by
            name).
        sample: files read per column for the inference.
    """
    path = os.fspath(path)
    if path.lower().endswith(MANIFEST_SUFFIXES):
        manifest = Manifest.read(path)
        return {
            "kind": "manifest",
            "path": path,
            "rows": len(manifest),
            "columns": dict(manifest.column_types),
            "examples": [{k: _short(v) for k, v in row.items()}
                         for row in manifest.rows[:rows]],
            "inference": _inference(path, label, sample),
        }
    if _is_class_folder(path):
        inference = _inference(path, label, sample)
        return {"kind": "folder", "path": path,
                "rows": inference.get("rows"), "inference": inference}
    import tensorflow as tf

    files = tfrecords.list_shards(path)
    info = tfrecords.read_info(files) or {}
    count = 0
    examples = []
    for record in tf.data.TFRecordDataset(
            files, compression_type=info.get("compression") or ""):
        if len(examples) < rows:
            example = tf.train.Example.FromString(record.numpy())
            summary = {}
            for key, feature in sorted(example.features.feature.items()):
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value)
                summary[key] = _short(values[0] if len(values) == 1
                                      else values)
            examples.append(summary)
        count += 1
    return {
        "kind": "tfrecord",
        "files": files,
        "records": count,
        "columns": info.get("columns"),
        "examples": examples,
    }
