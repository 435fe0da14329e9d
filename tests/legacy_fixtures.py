"""Checks on the `.keras` files in `tests/fixtures/` that keras_mm wrote
before the per-modality encoder registries (`make_legacy_*.py` there)."""

import io
import os
import zipfile

import h5py
import keras
import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def weight_paths(path):
    """Every group and dataset path in a `.keras` file's weights."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    names = []
    with h5py.File(io.BytesIO(data), "r") as h5:
        h5.visit(names.append)
    return names


def check_legacy_fixture(name, input_keys, old_paths, new_paths, tmp_path):
    """Loads `fixtures/<name>.keras` (old layout: `old_paths` present, no
    `*_encoder` group) with today's code: the predictions equal the saved
    ones (atol 1e-5), a fresh model's do not, and the model saved again
    has `new_paths` (and not the old ones) and predicts the same."""
    path = os.path.join(FIXTURES, f"{name}.keras")
    names = weight_paths(path)
    assert set(old_paths) <= set(names)
    assert not any("_encoder/" in n for n in names
                   if "frame_encoder" not in n)
    expected = np.load(os.path.join(FIXTURES, f"{name}.npz"))
    inputs = [expected[key] for key in input_keys]
    model = keras.saving.load_model(path)
    np.testing.assert_allclose(model.predict(inputs, verbose=0),
                               expected["output"], atol=1e-5)
    fresh = keras.Model.from_config(model.get_config())
    assert np.abs(fresh.predict(inputs, verbose=0)
                  - expected["output"]).max() > 1e-2
    again = tmp_path / f"{name}.keras"
    model.save(again)
    names = weight_paths(again)
    assert set(new_paths) <= set(names)
    assert not set(old_paths) & set(names)
    np.testing.assert_allclose(
        keras.saving.load_model(again).predict(inputs, verbose=0),
        expected["output"], atol=1e-5)
