"""Retrieval metrics (keras_mm.evaluation.retrieval) on hand-made
embeddings whose ranks are known by construction."""

import numpy as np
import pytest

from keras_mm.evaluation.retrieval import (retrieval_metrics,
                                           retrieval_report,
                                           zero_shot_accuracy)


def _noisy_pairs(n=40, dim=6, noise=0.9, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, dim))
    return a, a + noise * rng.normal(size=(n, dim))


def _brute_ranks(q, g):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    sim = q @ g.T
    return np.array([1 + sum(sim[i, j] >= sim[i, i]
                             for j in range(len(g)) if j != i)
                     for i in range(len(q))])


def test_recall_and_median_rank_equal_brute_force_ranks():
    q, g = _noisy_pairs()
    ranks = _brute_ranks(q, g)
    assert 0.2 < np.mean(ranks == 1) < 0.9      # a spread of ranks
    for chunk in (1, 7, 1024):                     # chunking changes nothing
        m = retrieval_metrics(q, g, chunk=chunk)
        for k in (1, 5, 10):
            assert m[f"r@{k}"] == pytest.approx(np.mean(ranks <= k))
        assert m["median_rank"] == float(np.median(ranks))
        assert m["n"] == 40


def test_a_hand_counted_rank():
    # Query [1, 0]: cosines 0.6 (its pair), 0.8, 1.0, -1 -> rank 3;
    # [0, 1]: 0.6 (pair) under 0.8 -> 2; [-1, 0]: its pair at -1, last -> 4;
    # [0, -1]: its pair at 0 ties with [1, 0] -> 2 (ties pessimistic).
    q = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])
    g = np.array([[0.6, 0.8], [0.8, 0.6], [1, 0], [-1, 0]])
    m = retrieval_metrics(q, g, ks=(1, 2, 3))
    assert [int(r) for r in _brute_ranks(q, g)] == [3, 2, 4, 2]
    assert (m["r@1"], m["r@2"], m["r@3"]) == (0.0, 0.5, 0.75)
    assert m["median_rank"] == 2.5


def test_ties_rank_pessimistically_and_scale_does_not_matter():
    constant = np.ones((6, 3))
    m = retrieval_metrics(constant, constant)
    assert m["r@1"] == 0.0 and m["median_rank"] == 6.0
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 4))
    assert retrieval_metrics(a, 7.0 * a)["r@1"] == 1.0


def test_class_level_hits_and_zero_shot():
    # Two classes on two axes; item 3's gallery side points at class 0.
    labels = np.array([0, 0, 1, 1])
    q = np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1]])
    g = np.array([[1, 0.2], [1, -0.2], [0.2, 1], [1, 0.0]])
    m = retrieval_metrics(q, g, labels, ks=(1, 2))
    # top-1 class per query: q0->g0 (0) hit, q1->g1 (0) hit, q2->g2 (1) hit,
    # q3 -> g2 (1) hit; instance: q3's pair g3 is not first.
    assert m["class_r@1"] == 1.0
    assert m["r@1"] == 0.75
    back = retrieval_metrics(g, q, labels, ks=(1,))
    # g3 = [1, 0] retrieves q0/q1 (class 0): a class miss.
    assert back["class_r@1"] == 0.75
    # Prototypes from the gallery: class 1's is the mean of g2, g3.
    assert zero_shot_accuracy(q, g, labels) == 1.0
    assert zero_shot_accuracy(np.array([[1.0, 0.0]]), g[:3], [1],
                              prototype_labels=[0, 0, 1]) == 0.0


def test_report_both_directions_and_bad_shapes():
    q, g = _noisy_pairs(seed=1)
    report = retrieval_report(q, g, names=("image", "audio"))
    assert set(report) == {"image_to_audio", "audio_to_image"}
    assert report["image_to_audio"] == retrieval_metrics(q, g)
    assert report["audio_to_image"] == retrieval_metrics(g, q)
    assert report["image_to_audio"] != report["audio_to_image"]
    with pytest.raises(ValueError, match="pairs of one shape"):
        retrieval_metrics(q, g[:3])
    with pytest.raises(ValueError, match="3 labels for 40 pairs"):
        retrieval_metrics(q, g, labels=[0, 1, 0])
