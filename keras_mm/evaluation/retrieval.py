"""Retrieval metrics of paired embeddings (NumPy, in bounded memory).

Row i of `queries` and row i of `gallery` are one pair (an image and its
audio clip). For every query the gallery is ranked by cosine similarity;
the rank of its own pair gives Recall@k and the median rank. With labels,
a class-level hit is a retrieved item of the query's class, and zero-shot
accuracy classifies each query by the nearest class prototype (the mean
normalised gallery embedding of the class). The similarity matrix is
computed `chunk` queries at a time, so memory is `chunk x len(gallery)`.
"""

import numpy as np


def _unit(x):
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"retrieval: embeddings must be [n, dim], got "
                         f"shape {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _check(queries, gallery, labels, ks):
    if queries.shape != gallery.shape:
        raise ValueError(
            f"retrieval: queries {queries.shape} and gallery "
            f"{gallery.shape} must be pairs of one shape (row i of each is "
            "one pair)")
    if labels is not None and len(labels) != len(queries):
        raise ValueError(f"retrieval: {len(labels)} labels for "
                         f"{len(queries)} pairs")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"retrieval: ks must be positive, got {ks}")


def retrieval_metrics(queries, gallery, labels=None, ks=(1, 5, 10),
                      chunk=1024):
    """One direction: each query against the whole gallery.

    Ranks are pessimistic on ties (a gallery item as similar as the pair
    ranks before it), so constant embeddings score rank n, not 1.

    Returns a dict: `r@k` for each k (the fraction of queries whose pair
    is among the k most similar), `median_rank` (1 = first), `n`; with
    `labels`, also `class_r@k` (a retrieved item of the query's class among
    the top k, ties broken by gallery order) and `zero_shot_accuracy`.
    """
    q, g = _unit(queries), _unit(gallery)
    _check(q, g, labels, ks)
    n = len(q)
    ks = sorted({int(k) for k in ks})
    labels = None if labels is None else np.asarray(labels)
    ranks = np.empty(n, np.int64)
    class_hits = {k: 0 for k in ks}
    for start in range(0, n, chunk):
        sim = q[start:start + chunk] @ g.T
        rows = np.arange(len(sim))
        own = sim[rows, start + rows]
        ranks[start:start + len(sim)] = (sim >= own[:, None]).sum(axis=1)
        if labels is not None:
            order = np.argsort(-sim, axis=1, kind="stable")[:, :max(ks)]
            same = labels[order] == labels[start:start + len(sim), None]
            for k in ks:
                class_hits[k] += int(same[:, :k].any(axis=1).sum())
    out = {f"r@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["median_rank"] = float(np.median(ranks))
    out["n"] = n
    if labels is not None:
        out.update({f"class_r@{k}": class_hits[k] / n for k in ks})
        out["zero_shot_accuracy"] = zero_shot_accuracy(q, g, labels)
    return out


def zero_shot_accuracy(queries, gallery, labels, prototype_labels=None):
    """The fraction of queries whose nearest class prototype (cosine) is
    their own class; a prototype is the mean normalised gallery embedding
    of a class (`prototype_labels`, default `labels`: the gallery's)."""
    q, g = _unit(queries), _unit(gallery)
    labels = np.asarray(labels)
    gallery_labels = labels if prototype_labels is None else \
        np.asarray(prototype_labels)
    classes = np.unique(gallery_labels)
    prototypes = _unit(np.stack([g[gallery_labels == c].mean(axis=0)
                                 for c in classes]))
    predicted = classes[np.argmax(q @ prototypes.T, axis=1)]
    return float(np.mean(predicted == labels))


def retrieval_report(a, b, labels=None, names=("a", "b"), ks=(1, 5, 10),
                     chunk=1024):
    """Both directions: `{"<a>_to_<b>": ..., "<b>_to_<a>": ...}` of
    `retrieval_metrics`, for paired embeddings `a` and `b`."""
    first, second = names
    return {f"{first}_to_{second}": retrieval_metrics(a, b, labels, ks,
                                                      chunk),
            f"{second}_to_{first}": retrieval_metrics(b, a, labels, ks,
                                                      chunk)}
