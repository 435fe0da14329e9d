"""Issue 12's first try: the three-digits set and the batch-norm lag."""

import csv
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_mm.datasets import _io
from keras_mm.datasets.three_digits import (COLUMNS, build_three_digits,
                                            render_photo, three_digits_recipe)


def _build(shared, out, **kwargs):
    return build_three_digits(shared / "mnist", shared / "fsdd", out,
                              **kwargs)


def _rows(out, split):
    with open(os.path.join(out, f"{split}.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _digest(folder):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def three_sets(tmp_path_factory):
    """Clean (twice, same seed), clean with seed 1 and degraded; limit 12."""
    from conftest import SHARED_DATA
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent; set "
                    "KERAS_MM_SHARED_DATA to its path to run this test")
    base = tmp_path_factory.mktemp("three_digits")
    return {key: _build(SHARED_DATA, base / key, limit=12, **kw)
            for key, kw in [("a", {}), ("b", {}), ("seed1", {"seed": 1}),
                            ("degraded", {"variant": "degraded"})]}


def test_three_digits_is_deterministic_and_seeded(three_sets):
    assert _digest(three_sets["a"]) == _digest(three_sets["b"])
    assert _digest(three_sets["a"]) != _digest(three_sets["seed1"])


def test_three_digits_columns_shapes_and_labels_agree(three_sets):
    out = three_sets["a"]
    info = json.load(open(os.path.join(out, "three_digits.json")))
    assert info["sizes"] == {"train": 12, "val": 12, "test": 12}
    seen = set()
    for split in ("train", "val", "test"):
        rows = _rows(out, split)
        assert list(rows[0]) == list(COLUMNS) and len(rows) == 12
        for row in rows:
            label = int(row["label"])
            mnist = Image.open(os.path.join(out, row["mnist"]))
            photo = Image.open(os.path.join(out, row["photo"]))
            assert (mnist.format, mnist.mode, mnist.size) == \
                ("PNG", "L", (28, 28))
            assert (photo.format, photo.mode, photo.size) == \
                ("JPEG", "RGB", (32, 32))
            # The spoken digit is the same class: FSDD names the digit.
            assert os.path.basename(row["audio"]).split("_")[0] == \
                row["audio_digit"] == str(label)
            take = int(row["take"])
            assert (take <= 4) == (split == "test")
            seen.add(row["mnist_index"])
    assert len(seen) == 36       # no MNIST image in two splits


def test_three_digits_mnist_pixels_and_photo_digit(three_sets, shared_data):
    from keras_mm.datasets.idx import load_mnist
    images, labels = load_mnist(shared_data / "mnist")
    row = _rows(three_sets["a"], "train")[3]
    idx = int(row["mnist_index"])
    assert int(labels[idx]) == int(row["label"])
    pixels = np.asarray(Image.open(os.path.join(three_sets["a"],
                                                row["mnist"])))
    np.testing.assert_array_equal(pixels, images[idx])
    # The photo generator draws the label: different digits differ, the
    # same digit and seed give the same pixels.
    a = render_photo(3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, render_photo(3, np.random.default_rng(7)))
    assert np.abs(a.astype(int) - render_photo(
        8, np.random.default_rng(7)).astype(int)).mean() > 1.0


def test_three_digits_degraded_differs_where_it_should(three_sets):
    clean, degraded = three_sets["a"], three_sets["degraded"]
    for c, d in zip(_rows(clean, "test"), _rows(degraded, "test")):
        assert (c["label"], c["mnist_index"]) == (d["label"], d["mnist_index"])
        mc = np.asarray(Image.open(os.path.join(clean, c["mnist"])), float)
        md = np.asarray(Image.open(os.path.join(degraded, d["mnist"])), float)
        assert np.abs(mc - md).mean() > 20       # blurred + noised
        with open(os.path.join(clean, c["photo"]), "rb") as f1, \
                open(os.path.join(degraded, d["photo"]), "rb") as f2:
            assert f1.read() == f2.read()          # photos stay clean
        # The audio is a new 1 s WAV at -3 dB SNR of the same recording.
        assert not os.path.isabs(d["audio"])
        noisy, rate = _io.read_wav(os.path.join(degraded, d["audio"]))
        orig, _ = _io.read_wav(c["audio"])
        assert rate == 8000 and len(noisy) == 8000
        x = np.zeros(8000)                       # the zero-padded 1 s clip
        head = _io.from_pcm16(orig[:8000])
        x[:len(head)] = head
        y = _io.from_pcm16(noisy)
        scale = np.dot(x, y) / np.dot(x, x)      # undo a rescale
        snr = 10 * np.log10(np.sum((scale * x) ** 2) /
                            np.sum((y - scale * x) ** 2))
        assert -3.5 < snr < -2.5


def test_three_digits_bad_arguments(shared_data, tmp_path):
    with pytest.raises(ValueError, match="variant='noisy' is not one of"):
        _build(shared_data, tmp_path / "x", variant="noisy")
    with pytest.raises(ValueError, match="limit=0 must be a positive"):
        _build(shared_data, tmp_path / "x", limit=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        _build(shared_data, tmp_path / "full", limit=1)
    with pytest.raises(ValueError, match=r"inputs: \['video'\] are not"):
        three_digits_recipe(tmp_path, inputs=("video",))


def _first_try_unimodal(data_dir, runs_dir, names):
    """Issue 12's first try: the README-style three-input recipe with the
    tower defaults, 8 epochs, batch 64, Adam at the trainer's default
    learning rate, constant; the single-input models `compare_unimodal`
    trains (`run_folder.unimodal_recipe`), trained through `train`."""
    from keras_mm.training import train

    recipe = three_digits_recipe(data_dir, name="first_try")
    recipe["training"].update({"optimizer": {"type": "adam"},
                               "schedule": None, "backup": False,
                               "tensorboard": False,
                               "runs_dir": os.fspath(runs_dir)})
    from keras_mm.training import run_folder
    recipe = run_folder.load_recipe(recipe, ())
    results = {}
    for name in names:
        sub = run_folder.unimodal_recipe(recipe, name)
        results[name] = train(sub, export=False, verbose=0, callbacks=[])
    return results


@pytest.mark.slow
def test_first_try_image_models_agree_in_both_modes(shared_data, tmp_path):
    """Must-show of issue 12 (~8 min on 2 cores): on 3,000 training
    examples, the MNIST-only and photo-only models' test accuracy in
    inference mode is within 3 points of their batch-norm training-mode
    accuracy (before the fix: 29.2% vs 39.9% and 15.2% vs 18.5%, with
    validation accuracy 11-31% while training accuracy rose to 79%)."""
    from keras_mm.builder import model_spec
    from keras_mm.training import run_data
    from keras_mm.training.finished_run import load_run
    from keras_mm.training.mode_check import mode_check

    data = _build(shared_data, tmp_path / "data", limit=3000)
    results = _first_try_unimodal(data, tmp_path / "runs",
                                  ("mnist", "photo"))
    for name, result in results.items():
        recipe, model, pre = load_run(result.run_dir)
        spec = model_spec(model)
        test = run_data.eval_dataset(run_data.make_pipeline(
            recipe, "test", pre, spec), 64)
        report = mode_check(model, test, spec, batch_size=64, warn=False,
                            max_batches=1000)
        head = report["heads"]["label"]
        assert report["examples"] == 2000
        assert abs(head["inference"] - head["training_mode"]) <= 0.03, \
            (name, head)
        # Learned (chance is 0.1); photo-only learns slowly in 8 epochs at
        # the constant 1e-3 (49-50% measured), which issue 12 leaves open.
        assert head["inference"] > 0.3, (name, head)
        notes = json.load(open(os.path.join(result.run_dir,
                                            "run.json")))["notes"]
        assert any(n.startswith("mode check on") for n in notes), notes
