"""Attribution: `explain_run` / `keras-mm explain`, modality Shapley values,
integrated gradients, token occlusion, fusion internals.

One tiny trained run (text + sensor, gated fusion with a presence mask,
`test_training.tiny_recipe`) is shared by the module; the symmetry and
completeness checks build their models directly.
"""

import json
import os

import numpy as np
import pytest

from test_training import assert_png, tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from keras_mm.training import train

    root = tmp_path_factory.mktemp("explain")
    recipe = tiny_recipe(root / "demo", name="explain", epochs=1,
                         sizes=(24, 8, 12))
    recipe["evaluation"]["splits"] = ["test"]
    recipe["fusion"]["type"] = "gated"     # it has gates to report
    # The same weights in every process (xdist worker or not): the
    # completeness bounds below are then checked on one fixed model.
    recipe["training"]["deterministic"] = True
    path = write_recipe(root / "explain.yaml", recipe)
    result = train(path, export=False, verify=False,
                   runs_dir=root / "runs", verbose=0)
    return result.run_dir


@pytest.fixture(scope="module")
def report(trained_run):
    from keras_mm.evaluation import explain_run

    return explain_run(trained_run, examples=3, split="test", steps=32)


@pytest.fixture(scope="module")
def split_batch(trained_run):
    """The run's model and its whole test split as one feature batch."""
    return _test_batch(trained_run)


def _test_batch(run_dir):
    from keras_mm.builder import model_spec
    from keras_mm.training import load_run, run_data
    from keras_mm.training.finished_run import model_input_names

    recipe, model, pre = load_run(run_dir)
    spec = model_spec(model)
    pipe = run_data.make_pipeline(recipe, "test", pre, spec,
                                  input_names=model_input_names(model))
    batches = [f for f, _ in run_data.eval_dataset(pipe, 64)]
    features = {k: np.concatenate([np.asarray(b[k]) for b in batches])
                for k in batches[0]}
    return model, features, pre


@pytest.mark.slow
def test_efficiency_and_full_empty_match_direct_forward_passes(
        split_batch, report):
    model, features, _ = split_batch
    assert report["num_examples"] == len(features["presence"]) == 12
    assert report["modalities"] == ["text", "sensor"]
    probs_all = np.asarray(model(features, training=False)["label"])
    none = dict(features, presence=np.zeros_like(features["presence"]))
    probs_none = np.asarray(model(none, training=False)["label"])
    names = ["warm_low", "warm_high", "cool_low", "cool_high"]
    assert len(report["examples"]) == 3
    for i, ex in enumerate(report["examples"]):
        cls = int(probs_all[i].argmax())
        assert ex["predicted"] == names[cls]
        # The explained score: the all-present class's probability.
        assert ex["full"] == pytest.approx(float(probs_all[i, cls]),
                                           abs=1e-5)
        assert ex["empty"] == pytest.approx(float(probs_none[i, cls]),
                                            abs=1e-5)
        total = sum(ex["shapley"].values())
        assert total == pytest.approx(ex["full"] - ex["empty"], abs=1e-4)
        assert ex["key"] == i and ex["label"] in names
        # With two players: phi_text = (v(T) - v() + v(TS) - v(S)) / 2.
        only_text = dict(features, presence=np.tile([[1.0, 0.0]],
                                                    (len(probs_all), 1)))
        only_sensor = dict(features, presence=np.tile([[0.0, 1.0]],
                                                      (len(probs_all), 1)))
        v_t = float(np.asarray(model(only_text, training=False)["label"])
                    [i, cls])
        v_s = float(np.asarray(model(only_sensor, training=False)["label"])
                    [i, cls])
        expected = 0.5 * (v_t - ex["empty"] + ex["full"] - v_s)
        assert ex["shapley"]["text"] == pytest.approx(expected, abs=1e-5)
    assert report["efficiency_max_gap"] < 1e-4
    # per_class: the mean over the examples of each true class.
    counts = report["per_class_counts"]
    assert sum(counts.values()) == 12 and report["per_class_by"] == "label"


@pytest.mark.slow
def test_attribution_json_and_panels(trained_run, report):
    with open(os.path.join(trained_run, "attribution.json")) as f:
        saved = json.load(f)
    for key in ("head", "modalities", "examples", "per_class"):
        assert key in saved
    assert saved["head"] == "label"
    for ex in saved["examples"]:
        for key in ("key", "label", "predicted", "full", "empty", "shapley",
                    "fusion", "within"):
            assert key in ex
        assert sorted(ex["shapley"]) == ["sensor", "text"]
        text, sensor = ex["within"]["text"], ex["within"]["sensor"]
        assert text["method"] == "occlusion"
        assert len(text["scores"]) == len(text["tokens"]) == 8
        assert sensor["method"] == "integrated_gradients"
        assert np.asarray(sensor["per_time_step"]).shape == (40,)
        assert np.asarray(sensor["per_channel"]).shape == (3,)
        # Completeness within the sensor (text held fixed), as recorded at
        # 32 steps (a loose bound: ReLU kinks; see the tests below).
        assert sensor["sum"] == pytest.approx(
            sensor["score_minus_baseline"], abs=0.1 * abs(
                sensor["score_minus_baseline"]) + 5e-3)
        # The gated fusion's gates: per modality, summing to 1 (both
        # modalities present in the demo set).
        assert ex["presence"] == [1.0, 1.0]
        assert np.sum(ex["fusion"]["weights"]) == pytest.approx(1.0,
                                                                abs=1e-5)
        assert np.asarray(ex["fusion"]["gates"]).shape[0] == 2
    assert saved["fusion_type"] == "GatedFusion"
    assert sorted(saved["per_class"]["warm_low"]) == ["sensor", "text"]
    assert len(report["plots"]) == 4
    for path in report["plots"]:
        assert_png(path)
    assert os.path.basename(report["plots"][-1]) == \
        "attribution_per_class.png"
    arrays = np.load(os.path.join(trained_run, "attribution_arrays.npz"))
    assert arrays["label/0/sensor"].shape == (40, 3)


@pytest.mark.slow
def test_token_occlusion_matches_direct_padding(split_batch, report):
    model, features, _ = split_batch
    ex = report["examples"][1]
    cls = ["warm_low", "warm_high", "cool_low", "cool_high"].index(
        ex["predicted"])
    one = {k: v[1:2] for k, v in features.items()}
    base = float(np.asarray(model(one, training=False)["label"])[0, cls])
    for t in (0, 3):
        occluded = dict(one, text=one["text"].copy())
        occluded["text"][0, t] = 0
        score = float(np.asarray(model(occluded, training=False)["label"])
                      [0, cls])
        assert ex["within"]["text"]["scores"][t] == pytest.approx(
            base - score, abs=1e-5)


def _quadratic_model(weights):
    import keras

    x = keras.Input((len(weights),), name="x")
    z = keras.Input((1,), name="z")
    w = keras.ops.convert_to_tensor(np.asarray(weights, "float32"))
    y = keras.layers.Lambda(lambda t: keras.ops.sum(
        t[0] * t[0] * w, axis=1, keepdims=True) + 3.0 * t[1])([x, z])
    return keras.Model({"x": x, "z": z}, {"y": y})


def test_integrated_gradients_exact_on_a_quadratic():
    """f = sum_i w_i x_i**2 + 3 z: the gradient is linear along the path,
    so the trapezoid rule is exact and IG_i = w_i x_i**2 (baseline 0)."""
    from keras_mm.evaluation import integrated_gradients

    weights = np.array([1.0, -2.0, 0.5], "float32")
    model = _quadratic_model(weights)
    x = np.random.RandomState(0).normal(size=(5, 3)).astype("float32")
    z = np.ones((5, 1), "float32")
    attr, f_x, f_0 = integrated_gradients(
        model, {"x": x, "z": z}, lambda out, rows: out["y"][:, 0],
        names=["x"], steps=4, max_rows=7, return_scores=True)
    np.testing.assert_allclose(attr["x"], weights * x * x, atol=1e-5)
    np.testing.assert_allclose(attr["x"].sum(axis=1), f_x - f_0, atol=1e-5)
    np.testing.assert_allclose(f_0, 3.0, atol=1e-6)   # z held fixed


def test_integrated_gradients_completeness_on_a_smooth_network():
    """A tanh / softmax network (no kinks): the trapezoid error falls as
    1 / steps**2; at 64 steps the gap is under 1e-3 of f(x) - f(0)."""
    import keras

    from keras_mm.evaluation import integrated_gradients

    keras.utils.set_random_seed(0)
    x = keras.Input((12,), name="x")
    hidden = keras.layers.Dense(16, activation="tanh")(x)
    probs = keras.layers.Dense(3, activation="softmax")(hidden)
    model = keras.Model({"x": x}, {"p": probs})
    values = np.random.RandomState(1).normal(size=(6, 12)).astype(
        "float32") * 2

    def target(out, rows):
        return out["p"][:, 1]

    gaps = {}
    for steps in (8, 64):
        attr, f_x, f_0 = integrated_gradients(
            model, {"x": values}, target, steps=steps, return_scores=True)
        gaps[steps] = np.abs(attr["x"].sum(axis=1) - (f_x - f_0))
    delta = np.abs(f_x - f_0)
    assert np.all(gaps[64] <= 1e-3 * delta + 1e-5), (gaps, delta)
    assert gaps[64].sum() < gaps[8].sum() / 10, gaps


@pytest.mark.slow
def test_integrated_gradients_completeness_on_the_trained_model(
        split_batch):
    """Completeness for a nonlinear model (GRU): the gap falls with the
    number of steps and is within 5% of f(x) - f(baseline) (+ 2e-3) at
    64."""
    import tensorflow as tf

    from keras_mm.evaluation import integrated_gradients

    model, features, _ = split_batch
    batch = {k: v[:4] for k, v in features.items()}

    # A fixed class per example keeps the score smooth along the path.
    classes = np.asarray(model(batch, training=False)["label"]).argmax(1)

    def target(out, rows):
        return tf.gather(out["label"], classes[rows], axis=1, batch_dims=1)

    gaps = []
    for steps in (4, 64):
        attr, f_x, f_0 = integrated_gradients(
            model, batch, target, names=["sensor"], steps=steps,
            return_scores=True)
        total = attr["sensor"].reshape(4, -1).sum(axis=1)
        gaps.append(np.abs(total - (f_x - f_0)))
    # Stated tolerance: 5% of |f(x) - f(baseline)| + 1e-3 at 64 steps (the
    # ReLU kinks make the trapezoid error fall as 1 / steps, not 1/steps**2).
    assert np.all(gaps[1] <= 0.05 * np.abs(f_x - f_0) + 2e-3), gaps
    assert gaps[1].sum() < gaps[0].sum() / 2, gaps


def test_symmetry_two_identical_towers_get_equal_shapley_values():
    from keras_mm.builder import build_model
    from keras_mm.evaluation.explain import _fusion_internals, _fusion_probe
    from keras_mm.evaluation.presence_subsets import (subset_masks,
                                                      subset_outputs)
    from keras_mm.evaluation.shapley import head_scores, shapley_values

    tower = {"encoder": "gru", "dim": 4}
    spec = {"name": "sym", "inputs": {
        "a": {"modality": "sensor", "shape": [6, 2], "tower": tower},
        "b": {"modality": "sensor", "shape": [6, 2], "tower": tower}},
        "fusion": {"type": "weighted", "presence_mask": True},
        "heads": {"y": {"type": "classification", "num_classes": 3}}}
    model = build_model(spec)
    model.get_layer("b_tower").set_weights(
        model.get_layer("a_tower").get_weights())
    fusion = model.get_layer("fusion")
    by_path = {w.path: w for w in fusion.weights}
    for part in ("kernel", "bias"):
        by_path[f"fusion/b_projection/{part}"].assign(
            by_path[f"fusion/a_projection/{part}"])
    rng = np.random.RandomState(3)
    series = rng.normal(size=(5, 6, 2)).astype("float32")
    mask = np.ones((5, 6), bool)
    features = {"a": series, "b": series.copy(), "a_mask": mask,
                "b_mask": mask, "presence": np.ones((5, 2), "float32")}
    masks = subset_masks(2)
    outputs = subset_outputs(model, features, masks)["y"]
    phi = shapley_values(head_scores("classification", outputs), masks)
    np.testing.assert_allclose(phi[:, 0], phi[:, 1], atol=1e-6)
    assert np.all(np.abs(phi[:, 0]) > 0) or np.all(phi == 0)
    # Different values for b break the tie (the test can tell).
    other = dict(features, b=rng.normal(size=(5, 6, 2)).astype("float32"))
    phi2 = shapley_values(head_scores(
        "classification", subset_outputs(model, other, masks)["y"]), masks)
    assert np.max(np.abs(phi2[:, 0] - phi2[:, 1])) > 1e-4
    # The fusion layer's own weights are equal too (equal logits).
    layer, probe = _fusion_probe(model)
    internals = _fusion_internals(layer, probe, features)
    np.testing.assert_allclose(internals["weights"], 0.5, atol=1e-6)


@pytest.mark.slow
def test_cli_explain(trained_run, capsys):
    from keras_mm.cli.main import main

    assert main(["explain", trained_run, "--examples", "1", "--steps",
                 "8"]) in (0, None)
    out = capsys.readouterr().out
    assert "head label (classification" in out
    assert "#0: label" in out and "shapley text=" in out
    assert "attribution written to" in out
    assert "attribution_example_0.png" in out
    with open(os.path.join(trained_run, "attribution.json")) as f:
        saved = json.load(f)
    assert len(saved["examples"]) == 1
    assert main(["explain", trained_run, "--head", "nope"]) == 1
    assert "--head 'nope'" in capsys.readouterr().err


def test_cli_help_lists_explain(capsys):
    from keras_mm.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "explain" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    out = capsys.readouterr().out
    assert "--examples" in out and "--head" in out and "--split" in out
