"""The robustness report: corruptions against NumPy references, and the
report of a tiny trained run against an independent computation."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_mm.evaluation import corruptions

from test_training import assert_png, tiny_recipe


def _audio(seed=0):
    from keras_mm.data import AudioPreprocessor

    pre = AudioPreprocessor("audio", sample_rate=8000, duration=1.0)
    rng = np.random.default_rng(seed)
    wave = np.zeros((3, 8000), np.float32)
    wave[0] = 0.3 * np.sin(np.arange(8000) * 0.05)
    wave[1, :5000] = rng.normal(0, 0.1, 5000)       # padded after 5000
    wave[2, :3000] = 0.5 * np.sign(np.sin(np.arange(3000) * 0.01))
    return pre, {"audio": tf.constant(wave),
                 "audio_present": tf.constant([1.0, 1.0, 1.0])}


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_audio_snr_matches_the_level(level):
    pre, parsed = _audio()
    clean = parsed["audio"].numpy()
    noisy = corruptions.corrupt_parsed(pre, parsed, level, 5, seed=3)
    noisy = noisy["audio"].numpy()
    want = corruptions.severity("audio", level, 5)["snr_db"]
    for row, span in zip(range(3), (8000, 5000, 3000)):
        signal = clean[row, :span].astype(np.float64)
        noise = noisy[row, :span].astype(np.float64) - signal
        snr = 10 * np.log10(np.mean(signal ** 2) / np.mean(noise ** 2))
        assert abs(snr - want) < 0.1, (row, snr, want)
        # padding stays silent
        np.testing.assert_array_equal(noisy[row, span:], 0.0)
    assert [corruptions.severity("audio", k, 5)["snr_db"]
            for k in range(1, 6)] == [20.0, 13.75, 7.5, 1.25, -5.0]


def test_level_zero_is_bitwise_clean_and_seeds_matter():
    pre, parsed = _audio()
    same = corruptions.corrupt_parsed(pre, parsed, 0, 5, seed=1)
    assert same["audio"] is parsed["audio"]
    a = corruptions.corrupt_parsed(pre, parsed, 2, 5, seed=1)["audio"]
    b = corruptions.corrupt_parsed(pre, parsed, 2, 5, seed=1)["audio"]
    c = corruptions.corrupt_parsed(pre, parsed, 2, 5, seed=2)["audio"]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - c.numpy()).max() > 1e-3
    # independent of the batch: the second example alone gets its draw
    alone = corruptions.corrupt_parsed(
        pre, {k: v[1:2] for k, v in parsed.items()}, 2, 5, seed=1)["audio"]
    np.testing.assert_array_equal(alone.numpy()[0], a.numpy()[1])


def test_image_pixel_noise_std_and_absent_untouched():
    from keras_mm.data import ImagePreprocessor

    pre = ImagePreprocessor("image", size=(64, 64), channels=3)
    images = np.full((4, 64, 64, 3), 128.0, np.float32)
    images[3] = 0.0
    parsed = {"image": tf.constant(images),
              "image_present": tf.constant([1.0, 1.0, 1.0, 0.0])}
    noisy = corruptions.corrupt_parsed(pre, parsed, 1, 5, seed=0)
    diff = noisy["image"].numpy()[:3] - 128.0
    want = 0.1 * 255.0
    assert abs(diff.std() - want) / want < 0.02
    assert abs(diff.mean()) < 0.5
    np.testing.assert_array_equal(noisy["image"].numpy()[3], 0.0)
    assert noisy["image"].numpy().min() >= 0.0


def test_text_replacement_rate_keeps_padding_and_reserved():
    from keras_mm.data import TextPreprocessor

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(50)]
    pre = TextPreprocessor("text", max_len=64, vocab=vocab)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, len(vocab), size=(400, 64)).astype(np.int32)
    ids[:, 48:] = 0                               # padding
    ids[:, 0] = 2                                 # [CLS]
    parsed = {"text": tf.constant(ids),
              "text_present": tf.ones([400], tf.float32)}
    out = corruptions.corrupt_parsed(pre, parsed, 3, 5, seed=0)["text"]
    out = out.numpy()
    np.testing.assert_array_equal(out[:, 48:], 0)
    np.testing.assert_array_equal(out[:, 0], 2)
    changed = out[:, 1:48] != ids[:, 1:48]
    assert set(np.unique(out[:, 1:48][changed])) == {1}      # [UNK]
    assert abs(changed.mean() - 0.3) < 0.01


def test_sensor_and_tabular_corruptions():
    from keras_mm.data import SensorPreprocessor

    pre = SensorPreprocessor("s", channels=2, length=200,
                             mean=[0.0, 0.0], std=[1.0, 4.0])
    # Draws are seeded by each example's clean values: distinct examples.
    x = np.random.default_rng(0).normal(size=(50, 200, 2)).astype("float32")
    parsed = {"s": tf.constant(x), "s_present": tf.ones([50])}
    out = corruptions.corrupt_parsed(pre, parsed, 5, 5, seed=0)["s"].numpy()
    dropped = np.isnan(out).all(axis=-1)
    assert abs(dropped.mean() - 0.5) < 0.02
    noise = (out - x)[~dropped]
    np.testing.assert_allclose(noise.std(axis=0), [1.0, 4.0], rtol=0.03)


def test_tabular_noise_and_missing_cells():
    from keras_mm.data import TabularPreprocessor

    pre = TabularPreprocessor("tab", numeric=["a"], categorical=["c"])
    pre.mean, pre.variance = [0.0], [9.0]
    rng = np.random.default_rng(1)
    num = rng.normal(size=(2000, 1)).astype("float32")
    cat = np.array([[f"v{i}"] for i in range(2000)])
    parsed = {"tab_numeric": tf.constant(num),
              "tab_categorical": tf.constant(cat),
              "tab_present": tf.ones([2000])}
    out = corruptions.corrupt_parsed(pre, parsed, 5, 5, seed=0)
    assert abs((out["tab_numeric"].numpy() - num).std() - 3.0) < 0.15
    blank = out["tab_categorical"].numpy() == b""
    assert abs(blank.mean() - 0.5) < 0.04


# The two tests below train a tiny run (about 1.5 min of CPU in all).
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from keras_mm.training import train

    root = tmp_path_factory.mktemp("robust")
    recipe = tiny_recipe(root / "demo", name="robust", epochs=2)
    recipe["training"]["runs_dir"] = os.fspath(root / "runs")
    result = train(recipe, export=False, verbose=0)
    return result.run_dir


@pytest.mark.slow
def test_report_matches_an_independent_computation(tiny_run):
    from keras_mm.builder import model_spec
    from keras_mm.evaluation import robustness_report
    from keras_mm.training import evaluate, load_run, run_data
    from keras_mm.training.finished_run import model_input_names

    report = robustness_report(tiny_run, levels=2, seed=0)
    with open(os.path.join(tiny_run, "robustness.json")) as f:
        saved = json.load(f)
    entry = saved["heads"]["label"]
    assert set(entry) >= {"full", "subsets", "removed", "noise", "metric"}
    assert set(entry["subsets"]) == {"none", "text", "sensor",
                                     "text+sensor"}
    assert set(entry["noise"]) == {"text", "sensor"}
    assert len(entry["noise"]["text"]["metric"]) == 3
    for path in report["plots"]:
        assert os.path.basename(path).startswith("robustness_")
        assert_png(path)
    assert len(report["plots"]) == 2

    metrics = evaluate(tiny_run)
    assert entry["full"] == pytest.approx(
        metrics["test"]["heads"]["label"]["accuracy"], abs=1e-6)

    # Independent: predict with the presence columns zeroed by hand.
    recipe, model, pres = load_run(tiny_run)
    pipe = run_data.make_pipeline(recipe, "test", pres, model_spec(model),
                                  input_names=model_input_names(model))
    feats, labels = [], []
    for x, y in pipe.dataset(64):
        feats.append({k: v.numpy() for k, v in x.items()})
        labels.append(y["label"].numpy())
    x = {k: np.concatenate([f[k] for f in feats]) for k in feats[0]}
    y = np.concatenate(labels).reshape(-1)
    order = list(model.get_layer("fusion").modalities)
    for name, bits in (("text+sensor", (1, 1)), ("text", None),
                       ("sensor", None), ("none", (0, 0))):
        keep = np.array([1.0 if m in name.split("+") else 0.0
                         for m in order], np.float32)
        xs = dict(x, presence=x["presence"] * keep[None, :])
        p = model.predict(xs, verbose=0)["label"]
        acc = float(np.mean(p.argmax(-1) == y))
        assert entry["subsets"][name] == pytest.approx(acc, abs=1e-9), name
    assert entry["removed"]["text"] == entry["subsets"]["sensor"]
    assert entry["removed"]["sensor"] == entry["subsets"]["text"]
    curve = entry["noise"]["sensor"]["metric"]
    assert curve[0] == entry["full"]
    assert entry["noise"]["sensor"]["relative_robustness"] == \
        pytest.approx((curve[0] + 2 * curve[1] + curve[2]) / 4)


@pytest.mark.slow
def test_cli_prints_the_table_once(tiny_run, capsys):
    from keras_mm.cli.main import main

    assert main(["evaluate", tiny_run, "--robustness", "--levels", "1"]) \
        in (0, None)
    out = capsys.readouterr().out
    assert out.count("head label: accuracy") == 1
    assert "robustness.json" in out
