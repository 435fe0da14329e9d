"""Retrieval metrics of a run's contrastive heads on an evaluation split.

One pass of the model over the split collects each contrastive head's
L2-normalised embeddings (`[n, modalities, dim]`) and, where the head has a
`source`, the class keys; `keras_mm.evaluation.retrieval.retrieval_report`
then scores every pair of the head in both directions. `metrics.json` keeps
the whole report under `heads.<head>.retrieval`; the headline figures
(`<a>_to_<b>_r@1`, `..._median_rank`, and with classes `..._class_r@1` and
`..._zero_shot_accuracy`) sit beside it, so the scoreboard shows them.
"""

import keras
import numpy as np

from keras_mm.builder.alignment import aligns_towers
from keras_mm.evaluation.retrieval import retrieval_report

HEADLINE = ("r@1", "median_rank", "class_r@1", "zero_shot_accuracy")


def contrastive_heads(spec):
    """`{head: head spec}` of the spec's contrastive heads."""
    return {name: head for name, head in spec["heads"].items()
            if aligns_towers(head)}


def _pairs(model, head):
    layer = model.get_layer(head)
    return list(layer.modalities), [tuple(p) for p in layer.pairs]


def retrieval_metrics(model, dataset, spec, ks=(1, 5, 10)):
    """`{head: {"retrieval": {"<a>_to_<b>": metrics}, headline...}}` for
    each contrastive head of `spec`, over `dataset` (batches of
    `(features, labels)`; a head's labels are its class keys when it has
    a `source`)."""
    heads = contrastive_heads(spec)
    if not heads:
        return {}
    embeddings = {h: [] for h in heads}
    classes = {h: [] for h in heads if heads[h].get("source") is not None}
    for features, labels in dataset:
        outputs = model(features, training=False)
        for head in heads:
            embeddings[head].append(np.asarray(
                keras.ops.convert_to_numpy(outputs[head]), np.float32))
            if head in classes:
                classes[head].append(np.asarray(labels[head]).reshape(-1))
    results = {}
    for head in heads:
        if not embeddings[head]:
            continue
        modalities, pairs = _pairs(model, head)
        vectors = np.concatenate(embeddings[head])
        keys = np.concatenate(classes[head]) if head in classes else None
        report = {}
        for a, b in pairs:
            report.update(retrieval_report(
                vectors[:, modalities.index(a)],
                vectors[:, modalities.index(b)], keys, names=(a, b), ks=ks))
        entry = {"retrieval": report}
        for direction, values in report.items():
            for name in HEADLINE:
                if name in values:
                    entry[f"{direction}_{name}"] = values[name]
        results[head] = entry
    return results
