"""Exact modality Shapley values (`keras_mm.evaluation.shapley`) and the
served `explain` signature (`keras_mm.export(..., explain=True)`).

The math is checked against the axioms and hand-computed games; the
signature is exported from a real three-modality model (sensor series +
text + table, concat fusion with a presence mask, classification / binary /
regression heads), loaded in a fresh TF-only process, and compared with
the in-process computation: `ServingFunctions.preprocess` on the same raw
batch, then `presence_subsets.subset_outputs` and NumPy `shapley_values`.
No TensorFlow or model is mocked.
"""

import itertools
import json
import math
import os
import pickle
import shutil
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import keras_mm
from fresh_export import run_fresh_script
from keras_mm.data import SensorPreprocessor
from keras_mm.data import TabularPreprocessor
from keras_mm.data import TextPreprocessor
from keras_mm.errors import ExportError
from keras_mm.evaluation.presence_subsets import subset_masks, subset_outputs
from keras_mm.evaluation.shapley import (head_scores, shapley_values,
                                         shapley_weights)
from keras_mm.recipes.schema import ExportSection
from keras_mm.serving import export, verify
from keras_mm.serving.client import batch_inputs
from keras_mm.serving.serving_functions import ServingFunctions

TEXTS = ["a red cat sat", "the blue dog ran", "a cat and a dog", "red dog"]
HEADS = {"label": "classification", "flag": "binary", "size": "regression"}


# -- the math -----------------------------------------------------------------

def brute_force_shapley(value, num):
    """phi_j from the permutation definition: the mean over all orderings
    of j's marginal contribution (independent of the weight formula)."""
    phi = np.zeros(num)
    orders = list(itertools.permutations(range(num)))
    for order in orders:
        present = frozenset()
        for j in order:
            phi[j] += value(present | {j}) - value(present)
            present = present | {j}
    return phi / len(orders)


def game_scores(value, masks):
    """`[S, 1]` scores of a game `value(frozenset)` for the masks rows."""
    return np.array([[value(frozenset(np.nonzero(m)[0].tolist()))]
                     for m in masks])


def test_two_player_game_by_hand():
    # v(none)=1, v({0})=4, v({1})=2, v({0,1})=9:
    # phi_0 = ((4-1) + (9-2)) / 2 = 5, phi_1 = ((2-1) + (9-4)) / 2 = 3.
    masks = subset_masks(2)
    values = {(): 1, (0,): 4, (1,): 2, (0, 1): 9}
    scores = game_scores(lambda s: values[tuple(sorted(s))], masks)
    np.testing.assert_allclose(shapley_values(scores, masks), [[5.0, 3.0]])


def test_three_player_game_by_hand():
    # Majority game: worth 1 when at least two players are present. By
    # symmetry and efficiency each gets 1/3. "Glove" game: player 0 holds a
    # left glove, 1 and 2 right ones; a pair is worth 1: phi = 2/3, 1/6, 1/6.
    masks = subset_masks(3)
    majority = game_scores(lambda s: float(len(s) >= 2), masks)
    np.testing.assert_allclose(shapley_values(majority, masks),
                               [[1 / 3, 1 / 3, 1 / 3]], atol=1e-12)
    glove = game_scores(lambda s: float(0 in s and bool(s & {1, 2})), masks)
    np.testing.assert_allclose(shapley_values(glove, masks),
                               [[2 / 3, 1 / 6, 1 / 6]], atol=1e-12)


def test_weights_match_the_formula_and_the_permutation_definition():
    rng = np.random.default_rng(0)
    for num in range(1, 7):
        masks = subset_masks(num)
        table = rng.normal(size=2 ** num)
        codes = {frozenset(np.nonzero(m)[0].tolist()): i
                 for i, m in enumerate(masks)}

        def value(s):
            return table[codes[frozenset(s)]]

        got = shapley_values(game_scores(value, masks), masks)[0]
        np.testing.assert_allclose(got, brute_force_shapley(value, num),
                                   atol=1e-12, err_msg=f"M={num}")
        weights = shapley_weights(masks)
        size = masks.sum(axis=1).astype(int)
        for s, j in [(len(masks) - 1, 0), (0, num - 1)]:
            k = size[s]
            want = (math.factorial(k - 1) * math.factorial(num - k)
                    if masks[s, j] else
                    -math.factorial(k) * math.factorial(num - k - 1)
                    ) / math.factorial(num)
            assert weights[s, j] == pytest.approx(want)


def test_efficiency_symmetry_dummy_additivity_on_random_games():
    rng = np.random.default_rng(1)
    for num in range(1, 7):
        masks = subset_masks(num)
        scores = rng.normal(size=(2 ** num, 5))
        phi = shapley_values(scores, masks)
        assert phi.shape == (5, num)
        # Efficiency: the values sum to v(all) - v(none).
        np.testing.assert_allclose(phi.sum(axis=1), scores[-1] - scores[0],
                                   atol=1e-6)
        # Additivity: phi(v + w) = phi(v) + phi(w); and linear scaling.
        other = rng.normal(size=scores.shape)
        np.testing.assert_allclose(
            shapley_values(scores + 3 * other, masks),
            phi + 3 * shapley_values(other, masks), atol=1e-9)
    masks = subset_masks(4)
    base = rng.normal(size=(16, 3))
    # Dummy: v does not depend on player 2 -> phi_2 = 0.
    dummy = base[(np.arange(16) & ~4)]
    np.testing.assert_allclose(shapley_values(dummy, masks)[:, 2], 0.0,
                               atol=1e-12)
    # Symmetry: v invariant under swapping players 0 and 1 -> equal values.
    codes = np.arange(16)
    swapped = (codes & ~3) | ((codes & 1) << 1) | ((codes & 2) >> 1)
    symmetric = base + base[swapped]
    phi = shapley_values(symmetric, masks)
    np.testing.assert_allclose(phi[:, 0], phi[:, 1], atol=1e-12)


def test_mask_row_order_is_free_and_bad_masks_are_named():
    rng = np.random.default_rng(2)
    masks = subset_masks(3)
    scores = rng.normal(size=(8, 4))
    perm = rng.permutation(8)
    np.testing.assert_allclose(shapley_values(scores[perm], masks[perm]),
                               shapley_values(scores, masks), atol=1e-12)
    with pytest.raises(ValueError, match="all 8 subsets"):
        shapley_weights(masks[[0, 1, 2, 3, 4, 5, 6, 6]])
    with pytest.raises(ValueError, match="only 0 and 1"):
        shapley_weights(masks * 2)
    with pytest.raises(ValueError, match="one row per masks row"):
        shapley_values(scores[:7], masks)


def test_tensor_and_tf_function_give_the_numpy_values():
    rng = np.random.default_rng(3)
    masks = subset_masks(3)
    scores = rng.normal(size=(8, 6)).astype("float32")
    want = shapley_values(scores, masks)
    traced = tf.function(lambda s: shapley_values(s, masks),
                         input_signature=[tf.TensorSpec([8, None])])
    got = traced(tf.constant(scores))
    assert got.dtype == tf.float32 and got.shape == (6, 3)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    for kind, units in (("classification", 4), ("binary", 1),
                        ("regression", 1)):
        outputs = rng.random(size=(8, 6, units)).astype("float32")
        np.testing.assert_allclose(
            head_scores(kind, tf.constant(outputs)).numpy(),
            head_scores(kind, outputs), atol=0)
    probs = rng.random(size=(8, 6, 4))
    predicted = probs[-1].argmax(-1)
    np.testing.assert_array_equal(
        head_scores("classification", probs),
        probs[:, np.arange(6), predicted])
    with pytest.raises(ValueError, match="multilabel"):
        head_scores("multilabel", probs)


# -- the served signature -----------------------------------------------------

def explain_model(presence_mask=True):
    rng = np.random.default_rng(0)
    pre = {"imu": SensorPreprocessor("imu", channels=3, length=10,
                                     random_crop=False),
           "text": TextPreprocessor("text", max_len=6, max_vocab_size=40,
                                    learn_params={"lower_thresh": 1}),
           "tab": TabularPreprocessor("tab", numeric=["age", "height"])}
    pre["imu"].adapt([rng.normal(size=(12, 3)).astype("float32")
                      for _ in range(4)])
    pre["text"].adapt(TEXTS * 2)
    pre["tab"].adapt([{"age": 30.0, "height": 1.7},
                      {"age": 50.0, "height": 1.6}])
    spec = {
        "name": "ex",
        "inputs": {
            "imu": {"modality": "sensor", "shape": [10, 3], "mask": True,
                    "tower": {"encoder": "gru", "dim": 8}},
            "text": {"modality": "text", "shape": [6],
                     "vocab_size": pre["text"].vocab_size,
                     "tower": {"encoder": "bag", "dim": 8,
                               "embedding_dim": 8}},
            "tab": {"modality": "tabular", "numeric": 2,
                    "tower": {"dim": 8}}},
        "fusion": {"type": "concat", "presence_mask": presence_mask},
        "heads": {"label": {"type": "classification", "num_classes": 3},
                  "flag": {"type": "binary"},
                  "size": {"type": "regression"}}}
    return keras_mm.build_model(spec), pre


def request_rows(rng, n):
    rows = [{"imu": rng.normal(size=(6 + 3 * i, 3)).astype("float32"),
             "text": TEXTS[i % len(TEXTS)],
             "age": 20.0 + 9 * i, "height": 1.5 + 0.1 * i}
            for i in range(n)]
    rows[1]["imu"] = np.full((5, 3), np.nan, "float32")   # series absent
    rows[2]["age"] = rows[2]["height"] = None         # table absent
    return rows


FRESH_SCRIPT = textwrap.dedent("""
    import json, pickle, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    with open(sys.argv[3], "rb") as f:
        raw = {k: tf.constant(v) for k, v in pickle.load(f).items()}
    out = {}
    for tag, path in (("plain", sys.argv[1]), ("explained", sys.argv[2])):
        loaded = tf.saved_model.load(path)
        out[tag + "_signatures"] = sorted(loaded.signatures)
        for name in ("serving_default", "explain"):
            if name in loaded.signatures:
                result = loaded.signatures[name](**raw)
                out[f"{tag}/{name}"] = {k: v.numpy()
                                        for k, v in result.items()}
    with open(sys.argv[4], "wb") as f:
        pickle.dump(out, f)
    print("MODULES " + json.dumps(sorted(
        m for m in sys.modules if m.split(".")[0] in
        ("keras", "keras_hub", "keras_mm", "tf_keras"))))
""")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Both exports (with and without `explain`, verify=False: the
    verifier runs in its own test), called in one fresh TF-only process
    on a batch with an absent series and an absent table."""
    tmp = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(5)
    model, pre = explain_model()
    golden = request_rows(rng, 3)
    plain = export(model, pre, "plain", golden_examples=golden,
                   base_dir=tmp, verify=False)
    explained = export(model, pre, "explained", golden_examples=golden,
                       base_dir=tmp, verify=False, explain=True)
    functions = ServingFunctions(model, pre)
    rows = request_rows(rng, 5)
    raw = batch_inputs(rows, functions.raw_signature())
    with open(tmp / "raw.pkl", "wb") as f:
        pickle.dump(raw, f)
    run_fresh_script(FRESH_SCRIPT, plain, explained, tmp / "raw.pkl",
                     tmp / "out.pkl")
    with open(tmp / "out.pkl", "rb") as f:
        out = pickle.load(f)
    # The in-process computation on the same preprocessed batch.
    inputs = functions.preprocess({k: tf.constant(v)
                                   for k, v in raw.items()})
    inputs = {k: v.numpy() for k, v in inputs.items()}
    per_subset = subset_outputs(model, inputs)
    masks = subset_masks(3)
    want = {}
    for head, kind in HEADS.items():
        scores = head_scores(kind, per_subset[head])
        want[f"{head}_shapley"] = shapley_values(scores, masks)
        want[f"{head}_full"] = scores[-1]
        want[f"{head}_empty"] = scores[0]
    return {"out": out, "want": want, "inputs": inputs, "plain": plain,
            "explained": explained, "model": model, "pre": pre}


@pytest.mark.slow
def test_fresh_process_explain_equals_in_process_shapley(served):
    out = served["out"]
    assert out["explained_signatures"] == ["explain", "serve_examples",
                                         "serve_tensors", "serving_default"]
    got = out["explained/explain"]
    for key, value in served["want"].items():
        assert got[key].dtype == np.float32, key
        np.testing.assert_allclose(got[key], value, atol=1e-5, rtol=0,
                                   err_msg=key)
    assert got["label_shapley"].shape == (5, 3)
    # Efficiency on the served values.
    for head in HEADS:
        np.testing.assert_allclose(
            got[f"{head}_shapley"].sum(axis=1),
            got[f"{head}_full"] - got[f"{head}_empty"], atol=1e-5)
    # An input absent from the request has no say: series of example 1,
    # table of example 2 (presence order imu, text, tab).
    presence = served["inputs"]["presence"]
    np.testing.assert_array_equal(presence[1], [0, 1, 1])
    np.testing.assert_array_equal(presence[2], [1, 1, 0])
    for head in HEADS:
        # (float32 sums of +-w * v(S) cancel to rounding, not bitwise)
        assert abs(got[f"{head}_shapley"][1, 0]) < 1e-6
        assert abs(got[f"{head}_shapley"][2, 2]) < 1e-6
        assert np.abs(got[f"{head}_shapley"][[0, 3, 4]]).max() > 1e-4


@pytest.mark.slow
def test_serving_default_is_unchanged_by_the_flag(served):
    out = served["out"]
    assert out["plain_signatures"] == ["serve_examples", "serve_tensors",
                                       "serving_default"]
    plain = out["plain/serving_default"]
    explained = out["explained/serving_default"]
    assert sorted(plain) == sorted(explained)
    for key in plain:
        np.testing.assert_array_equal(plain[key], explained[key],
                                      err_msg=key)
    # The explain signature's predictions are serving_default's.
    got = out["explained/explain"]
    for key, value in plain.items():
        if value.dtype.kind in "fc":
            np.testing.assert_allclose(got[key], value, atol=1e-6,
                                       err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.slow
def test_metadata_names_the_column_order(served):
    with open(os.path.join(served["explained"], "assets.extra",
                           "keras_mm.json")) as f:
        info = json.load(f)["explain"]
    assert info["presence_order"] == ["imu", "text", "tab"]
    assert info["heads"] == HEADS
    assert sorted(info["golden"]) == sorted(served["want"])
    with open(os.path.join(served["plain"], "assets.extra",
                           "keras_mm.json")) as f:
        assert "explain" not in json.load(f)


@pytest.mark.slow
def test_verifier_replays_the_explain_golden_values(served, tmp_path):
    # A copy whose stored Shapley values are off by 0.01 in one cell: the
    # verifier (a fresh process) flags exactly that output, and every other
    # check of the export passes.
    copy = str(tmp_path / "1")
    shutil.copytree(served["explained"], copy)
    meta_path = os.path.join(copy, "assets.extra", "keras_mm.json")
    with open(meta_path) as f:
        metadata = json.load(f)
    metadata["explain"]["golden"]["label_shapley"]["values"][0] += 0.01
    with open(meta_path, "w") as f:
        json.dump(metadata, f)
    report = verify(copy, timeout=300)
    assert not report["ok"]
    problems = report["checks"]["explain"]["problems"]
    assert len(problems) == 1 and "'label_shapley'" in problems[0], problems
    failing = sorted(k for k, c in report["checks"].items() if not c["ok"])
    assert failing == ["explain"], report["checks"]


def test_a_model_without_presence_input_is_refused(tmp_path):
    model, pre = explain_model(presence_mask=False)
    rows = request_rows(np.random.default_rng(6), 3)[:1]
    with pytest.raises(ExportError, match=r"fusion\.presence_mask"):
        export(model, pre, "nopresence", golden_examples=rows,
               base_dir=tmp_path, explain=True)
    assert not os.path.exists(tmp_path / "nopresence" / "1")


def test_recipe_key_defaults_to_false():
    assert ExportSection().explain is False
    assert ExportSection(explain=True).explain is True
