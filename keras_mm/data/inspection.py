"""`inspect_source(path)`: a summary of a manifest or of TFRecord shards."""

import os

from keras_mm.data import tfrecords
from keras_mm.data.manifest import Manifest
from keras_mm.data.pipeline import MANIFEST_SUFFIXES


def _short(value, limit=80):
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def inspect_source(path, rows=3):
    """Describes a manifest (columns, types, rows) or TFRecords (files,
    features, record count, first records).

    Args:
        path: a `.csv`/`.tsv`/`.jsonl` manifest, or a TFRecord file, folder
            or glob.
        rows: how many example rows / records to include.
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
        }
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
