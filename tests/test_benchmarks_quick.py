"""The benchmark scripts' `--quick` modes, run for real so they cannot rot.

Each script runs in a subprocess (its own TensorFlow, as from the command
line) on the shared data, with a fresh cache folder; the test checks that it
exits 0, prints a markdown table, and ends with one JSON object holding the
keys the issue asks for, with accuracies that are fractions. A script given
a data folder that does not exist must say so and exit 0.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
TIMEOUT = 600  # seconds; a quick run takes well under 2 minutes when idle


def run_script(name, *args, timeout=TIMEOUT):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="tensorflow", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout)


def last_json(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
        f"stderr:\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{proc.stderr[-3000:]}"
    assert any(line.startswith("|---") for line in lines), \
        "no markdown table in the output:\n" + proc.stdout[-3000:]
    return json.loads(lines[-1])


def assert_fraction(value, what):
    assert isinstance(value, float) and 0.0 <= value <= 1.0, \
        f"{what} = {value!r} is not an accuracy fraction"


def quick(name, shared_data, tmp_path):
    return last_json(run_script(name, "--quick", "--data", str(shared_data),
                                "--cache", str(tmp_path / "cache")))


@pytest.mark.slow
def test_accuracy_av_mnist_quick(shared_data, tmp_path):
    result = quick("accuracy_av_mnist.py", shared_data, tmp_path)
    assert result["quick"] is True
    for variant in ("clean", "degraded"):
        block = result[variant]
        assert_fraction(block["image_only"], f"{variant}.image_only")
        assert_fraction(block["audio_only"], f"{variant}.audio_only")
        assert block["fusion"], f"{variant}: no fusion type was run"
        for fusion, acc in block["fusion"].items():
            assert_fraction(acc, f"{variant}.fusion.{fusion}")
    # Floors well above chance (0.1): the quick run learns (measured:
    # clean image 0.68, audio 0.57, concat 0.84, film 0.93; degraded concat
    # 0.53, film 0.64), so a model that stops learning fails here.
    clean = result["clean"]
    assert clean["image_only"] > 0.3 and clean["audio_only"] > 0.3, clean
    for fusion, acc in clean["fusion"].items():
        assert acc > 0.5, f"clean {fusion} fusion {acc:.3f} <= 0.5"
    degraded = result["degraded"]
    best = max(degraded["fusion"].values())
    assert best > 0.3, degraded
    assert result["degraded_best_fusion"] == pytest.approx(best)
    gain = best - max(degraded["image_only"], degraded["audio_only"])
    assert result["degraded_gain_over_best_unimodal"] == pytest.approx(
        gain, abs=1e-3)


@pytest.mark.slow
def test_accuracy_basicmotions_quick(shared_data, tmp_path):
    result = quick("accuracy_basicmotions.py", shared_data, tmp_path)
    assert_fraction(result["accelerometer_only"], "accelerometer_only")
    assert_fraction(result["gyroscope_only"], "gyroscope_only")
    assert len(result["fusion"]) >= 2, "the issue asks for >= 2 fusion types"
    for fusion, acc in result["fusion"].items():
        assert_fraction(acc, f"fusion.{fusion}")
    assert result["best_fusion"] == pytest.approx(
        max(result["fusion"].values()))
    # 4 classes (chance 0.25); measured: accelerometer 0.82, gyroscope 0.97,
    # concat 0.85, attention 0.78.
    for key in ("accelerometer_only", "gyroscope_only"):
        assert result[key] > 0.5, f"{key} = {result[key]}"
    for fusion, acc in result["fusion"].items():
        assert acc > 0.5, f"{fusion} fusion {acc:.3f} <= 0.5"


@pytest.mark.slow
def test_train_throughput_quick(shared_data, tmp_path):
    result = quick("train_throughput.py", shared_data, tmp_path)
    for key in ("toolkit_sps", "plain_keras_sps", "ratio", "xla_speedup"):
        value = result[key]
        assert isinstance(value, float) and math.isfinite(value) \
            and value > 0, f"{key} = {value!r}"
    # The ratio is the median of the interleaved repeats' paired ratios.
    ratios = result["ratios"]
    assert ratios and all(r > 0 and math.isfinite(r) for r in ratios)
    assert min(ratios) <= result["ratio"] <= max(ratios)


@pytest.mark.slow
def test_input_pipeline_quick(shared_data, tmp_path):
    result = quick("input_pipeline.py", shared_data, tmp_path)
    for key in ("pipeline_eps", "python_eps", "ratio", "train_eps",
                "headroom"):
        value = result[key]
        assert isinstance(value, float) and math.isfinite(value) \
            and value > 0, f"{key} = {value!r}"
    # The ratio is the median of the interleaved rounds' paired ratios.
    assert min(result["ratios"]) <= result["ratio"] <= max(result["ratios"])
    assert result["headroom"] == pytest.approx(
        result["pipeline_eps"] / result["train_eps"], rel=1e-3)


@pytest.mark.slow
def test_accuracy_three_modalities_quick(shared_data, tmp_path):
    result = quick("accuracy_three_modalities.py", shared_data, tmp_path)
    assert result["quick"] is True
    flags = []
    for variant in ("clean", "degraded"):
        block = result[variant]
        single = {k: block[k] for k in ("mnist_only", "audio_only",
                                        "photo_only")}
        for key, acc in single.items():
            assert_fraction(acc, f"{variant}.{key}")
        assert block["fusion"], f"{variant}: no fusion type was run"
        for fusion, acc in block["fusion"].items():
            assert_fraction(acc, f"{variant}.fusion.{fusion}")
        best = max(single, key=single.get)
        assert block["best_single_model"] == best
        assert block["best_single"] == pytest.approx(single[best])
        below = sorted(f for f, a in block["fusion"].items()
                       if a < single[best] - 0.01)
        assert block["below_best_single"] == below
        assert block["all_within_1_point"] is (not below)
        flags.append(not below)
    assert result["all_within_1_point"] is all(flags)
    # 10 classes (chance 0.1); the clean quick run learns (a fusion model
    # that stops learning fails here).
    assert max(result["clean"]["fusion"].values()) > 0.3, result["clean"]


@pytest.mark.slow
def test_audio_heldout_speaker_quick(shared_data, tmp_path):
    result = quick("audio_heldout_speaker.py", shared_data, tmp_path)
    assert result["quick"] is True and result["heldout_speakers"] == ["theo"]
    for encoder, settings in result["results"].items():
        assert sorted(settings) == ["off", "on"], encoder
        for setting, entry in settings.items():
            for key in ("heldout", "seen"):
                assert_fraction(entry[key], f"{encoder}.{setting}.{key}")
    best = result["best"]
    assert result["results"][best["encoder"]][best["augmentation"]][
        "heldout"] == max(e["heldout"] for s in result["results"].values()
                          for e in s.values())
    assert set(result["library_defaults"]) == {"encoder", "augmentation"}


@pytest.mark.slow
def test_robustness_av_mnist_quick(shared_data, tmp_path):
    # --limit 1024: half the quick default's training rows (the data set is
    # built in the fresh cache; the test split keeps its 2,000 rows); one
    # seed, 3 epochs, every model and curve.
    result = last_json(run_script(
        "robustness_av_mnist.py", "--quick", "--limit", "1024", "--data",
        str(shared_data), "--cache", str(tmp_path / "cache")))
    assert result["quick"] is True and result["seeds"] == [0]
    assert result["dropout"] == pytest.approx(0.3)
    fused = ("concat", "concat+dropout", "film", "film+dropout")
    acc = result["accuracy"]
    assert sorted(acc) == sorted(("image_only", "audio_only") + fused)
    for key in ("image_only", "audio_only"):
        assert sorted(acc[key]) == ["full"], acc[key]
        assert_fraction(acc[key]["full"], f"{key}.full")
    for key in fused:
        assert sorted(acc[key]) == ["full", "no_audio", "no_image"], key
        for field, value in acc[key].items():
            assert_fraction(value, f"{key}.{field}")
    # The targets' figures, from the rounded accuracies (4 digits: 0.01
    # point), in points.
    uni = {"image": acc["audio_only"]["full"],
           "audio": acc["image_only"]["full"]}   # what remains, by missing
    gaps = result["missing_gap_points_by_model"]
    assert sorted(gaps) == sorted(fused)
    for key in fused:
        expected = max(100 * (uni[m] - acc[key][f"no_{m}"])
                       for m in ("image", "audio"))
        assert gaps[key] == pytest.approx(expected, abs=0.02), key
    assert result["missing_gap_points"] == pytest.approx(
        max(gaps["concat+dropout"], gaps["film+dropout"]))
    drops = result["full_drop_points_by_fusion"]
    assert sorted(drops) == ["concat", "film"]
    for fusion, drop in drops.items():
        assert drop == pytest.approx(100 * (
            acc[fusion]["full"] - acc[f"{fusion}+dropout"]["full"]),
            abs=0.02), fusion
    assert result["full_drop_points"] == pytest.approx(max(drops.values()))
    # Noise curves: 6 levels (0 = clean) per modality for each fused model;
    # level 0 is the clean test split, so it repeats the full accuracy.
    curves = result["noise_curves"]
    assert sorted(curves) == sorted(fused)
    for key in fused:
        assert sorted(curves[key]) == ["audio", "image"], key
        image, audio = curves[key]["image"], curves[key]["audio"]
        assert image["levels"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4,
                                                 0.5])
        assert audio["levels"][0] is None
        assert audio["levels"][1:] == pytest.approx([20.0, 13.75, 7.5, 1.25,
                                                     -5.0])
        for m, curve in curves[key].items():
            assert len(curve["accuracy"]) == 6, (key, m)
            for value in curve["accuracy"]:
                assert_fraction(value, f"{key}.noise.{m}")
            assert curve["accuracy"][0] == pytest.approx(acc[key]["full"])
    # 10 classes (chance 0.1). Measured at 1,024 training rows: image_only
    # 0.50, film 0.43, concat 0.30, audio_only 0.10 (the audio tower does
    # not learn in 3 epochs of 1,024 rows; at the quick default's 2,048:
    # 0.60, 0.72, 0.63, 0.14); a run where nothing learns fails here.
    assert acc["image_only"]["full"] > 0.3, acc
    assert max(acc[key]["full"] for key in fused) > 0.3, acc


@pytest.mark.slow
def test_compression_quick(shared_data, tmp_path):
    # one fusion, 1,024 rows, 2 epochs: the int8 SavedModel and the four
    # LiteRT modes, each through keras_mm.compression.export_compressed,
    # and the two distilled students
    result = last_json(run_script(
        "compression.py", "--quick", "--fusions", "concat", "--data",
        str(shared_data), "--cache", str(tmp_path / "cache")))
    assert result["quick"] is True
    # the half-width and the audio-only students of the concat model, with
    # and without it
    students = result["fusions"]["concat"]["distill"]
    for student, key in (("half-width towers", "distill_gain_points"),
                         ("audio only", "audio_student_distill_gain_points")):
        distilled = students[student]
        assert result[key] == distilled["gain_points"]
        assert distilled["gain_points"] == pytest.approx(
            100 * (distilled["student"] - distilled["student_alone"]),
            abs=0.02)
        assert distilled["teacher"] == pytest.approx(
            result["fusions"]["concat"]["float_accuracy"], abs=1e-4)
    reports = result["fusions"]["concat"]["reports"]
    assert sorted(reports) == ["litert-dynamic", "litert-float16",
                               "litert-int8", "litert-none",
                               "savedmodel-int8"]
    # the wide-trunk model: its 4.5 M weights outweigh the graph
    wide = result["fusions"]["concat_wide"]["reports"]["savedmodel-int8"]
    assert result["wide_int8_size_ratio"] == wide["size_ratio"]
    assert wide["reference_weights_bytes"] > 4 * 4.4e6
    assert wide["size_ratio"] < reports["savedmodel-int8"]["size_ratio"]
    # the JSON line rounds every float to 4 decimals
    for name, report in reports.items():
        head = report["heads"]["digit"]
        assert report["size_ratio"] == pytest.approx(
            report["size_bytes"] / report["reference_size_bytes"], abs=1e-4)
        assert head["drop_points"] == pytest.approx(
            head["reference"] - head["compressed"], abs=2e-4)
        assert 0.0 <= head["top1_agreement"] <= 1.0, name
    assert reports["litert-none"]["size_ratio"] == 1.0
    assert reports["litert-none"]["heads"]["digit"]["top1_agreement"] == 1.0
    assert result["int8_size_ratio"] == reports["savedmodel-int8"][
        "size_ratio"]
    assert result["litert_int8_acc_drop_points"] == reports["litert-int8"][
        "heads"]["digit"]["drop_points"]
    # int8 weights: about a quarter of the float32 ones
    weights = reports["savedmodel-int8"]
    assert weights["weights_bytes"] < 0.35 * weights[
        "reference_weights_bytes"]
    assert reports["litert-int8"]["size_ratio"] < 0.35


@pytest.mark.slow
def test_tune_av_mnist_quick(shared_data, tmp_path):
    # 1,024 rows, 2 trials of 2 epochs: trial 0 is the shipped recipe's
    # values, the best is selected on the held-out val rows
    result = last_json(run_script(
        "tune_av_mnist.py", "--quick", "--data", str(shared_data),
        "--cache", str(tmp_path / "cache")))
    assert result["quick"] is True and result["trials"] == 2
    table = {row["trial"]: row for row in result["table"]}
    assert table["0"]["values"] == {
        "training.optimizer.learning_rate": 0.002, "fusion.type": "concat",
        "inputs.image.tower.dim": 64, "inputs.audio.tower.dim": 64}
    best = table[result["best_trial"]]
    assert result["best_val_accuracy"] == max(r["score"] for r in
                                              table.values())
    assert result["best_accuracy"] == best["splits"]["test"]
    assert result["default_accuracy"] == table["0"]["splits"]["test"]
    # the JSON line rounds every float to 4 decimals
    assert result["gap_points"] == pytest.approx(
        100 * (result["best_accuracy"] - result["default_accuracy"]),
        abs=0.02)


@pytest.mark.parametrize("name", ["accuracy_av_mnist.py",
                                  "accuracy_three_modalities.py",
                                  "robustness_av_mnist.py",
                                  "compression.py",
                                  "tune_av_mnist.py",
                                  "audio_heldout_speaker.py",
                                  "accuracy_basicmotions.py",
                                  "train_throughput.py",
                                  "input_pipeline.py"])
def test_absent_data_exits_zero_with_a_message(name, tmp_path):
    missing = tmp_path / "no_such_data"
    proc = run_script(name, "--quick", "--data", str(missing), "--cache",
                      str(tmp_path / "cache"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SKIPPED" in proc.stdout and str(missing) in proc.stdout
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_pretrained_towers_quick(tmp_path):
    """Needs no shared data: the BERT preset is written by the script."""
    result = last_json(run_script("pretrained_towers.py", "--quick",
                                  "--cache", str(tmp_path / "cache")))
    for key in ("train_ratio", "serve_ratio", "export_mb", "verify_s"):
        assert isinstance(result[key], float) and math.isfinite(
            result[key]) and result[key] > 0, (key, result)
    # The median of the paired rounds' ratios.
    ratios = result["train_ratios"]
    assert min(ratios) <= result["train_ratio"] <= max(ratios)
    assert result["serve_ratio"] == pytest.approx(
        result["savedmodel_p50_ms"] / result["keras_hub_predict_p50_ms"],
        rel=1e-3, abs=1e-4)          # the JSON rounds to 4 digits
