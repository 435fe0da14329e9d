"""The inference-vs-training-mode guard (`keras_mm.training.mode_check`)."""

import logging
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mm.builder import build_model, compile_model
from keras_mm.training.mode_check import (ACCURACY_GAP, batch_norm_layers,
                                          batch_norm_training_mode,
                                          mode_check, recalibrate_batch_norm)


def _spec(norm_momentum=0.9, dropout=0.0, sensor=False):
    spec = {
        "inputs": {"image": {"modality": "image", "shape": [8, 8, 1],
                             "tower": {"encoder": "cnn", "filters": [4],
                                       "dim": 8, "dropout": dropout,
                                       "norm_momentum": norm_momentum}}},
        "heads": {"label": {"type": "classification", "num_classes": 2}},
    }
    if sensor:
        spec["inputs"]["sensor"] = {"modality": "sensor", "shape": [5, 2],
                                    "tower": {"encoder": "gru", "dim": 4}}
        spec["fusion"] = {"type": "concat"}
    return spec


def _data(n=256, seed=0):
    """Two classes: flat noisy images, or the same with vertical stripes;
    pixel values around 4 (far from batch norm's initial statistics 0 /
    1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = 4.0 + rng.normal(0, 0.3, (n, 8, 8, 1))
    x[y == 1, :, ::2] += 2.0
    return x.astype("float32"), y.astype("int32")


def _trained(norm_momentum, steps=40):
    keras.utils.set_random_seed(0)
    spec = _spec(norm_momentum)
    model = build_model(spec)
    compile_model(model, spec, optimizer=keras.optimizers.Adam(0.01),
                  jit_compile=False)
    x, y = _data()
    model.fit({"image": x}, {"label": y}, batch_size=32,
              epochs=steps * 32 // len(x), verbose=0, shuffle=False)
    return model, spec


def _val(batch=32):
    x, y = _data(128, seed=1)
    return tf.data.Dataset.from_tensor_slices(
        ({"image": x}, {"label": y})).batch(batch)


def test_training_mode_block_equals_batch_statistics_and_restores():
    """Inside the block, an inference-mode call of a model whose tower has
    dropout equals a training-mode call of the same weights without
    dropout; the moving statistics are left as they were."""
    keras.utils.set_random_seed(1)
    with_dropout = build_model(_spec(dropout=0.5))
    no_dropout = build_model(_spec(dropout=0.0))
    no_dropout.set_weights(with_dropout.get_weights())
    x, _ = _data(16)
    before = [w.copy() for w in with_dropout.get_weights()]
    inference = with_dropout({"image": x}, training=False)["label"]
    with batch_norm_training_mode(with_dropout) as layers:
        assert [layer.name for layer in layers] == ["norm0"]
        inside = with_dropout({"image": x}, training=False)["label"]
        again = with_dropout({"image": x}, training=False)["label"]
    reference = no_dropout({"image": x}, training=True)["label"]
    np.testing.assert_allclose(inside, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(inside, again)       # dropout stays off
    assert np.abs(np.asarray(inside) - np.asarray(inference)).max() > 1e-3
    for a, b in zip(before, with_dropout.get_weights()):
        np.testing.assert_array_equal(a, b)
    after = with_dropout({"image": x}, training=False)["label"]
    np.testing.assert_array_equal(after, inference)


def test_batch_norm_layers_name_the_towers():
    model = build_model(_spec(sensor=True))
    found = batch_norm_layers(model)
    assert list(found) == ["image_tower"]
    assert [layer.name for layer in found["image_tower"]] == ["norm0"]


def test_stale_statistics_warn_naming_the_tower(caplog):
    model, spec = _trained(norm_momentum=0.999)
    with pytest.warns(RuntimeWarning, match=r"image_tower do not match"), \
            caplog.at_level(logging.WARNING, "keras_mm.training"):
        report = mode_check(model, _val(), spec, batch_size=32, name="run")
    assert report["disagree"] == ["label"]
    head = report["heads"]["label"]
    assert abs(head["training_mode"] - head["inference"]) > ACCURACY_GAP
    assert report["batch_norm"] == {"image_tower": ["norm0"]}
    assert report["examples"] == 64
    assert report["message"].startswith("run: the trained model disagrees")
    logged = [r.getMessage() for r in caplog.records
              if "disagrees" in r.getMessage()]
    assert logged == [report["message"]]                 # logged once

    # Recalibrating on the training data (two batches of 128) sets each
    # moving mean to the mean over the data, and the modes agree again.
    x, y = _data()
    train_ds = tf.data.Dataset.from_tensor_slices(
        ({"image": x}, {"label": y})).batch(128)
    assert recalibrate_batch_norm(model, train_ds) == 2
    tower = model.get_layer("image_tower")
    norm = tower.image_encoder.norms[0]
    conv_out = np.asarray(tower.image_encoder.convs[0](x))
    np.testing.assert_allclose(norm.moving_mean, conv_out.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-4)
    assert norm.momentum == 0.999
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        again = mode_check(model, _val(), spec, batch_size=32)
    assert again["disagree"] == [], again["heads"]


def test_calibrated_statistics_do_not_warn():
    model, spec = _trained(norm_momentum=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        report = mode_check(model, _val(), spec, batch_size=32)
    head = report["heads"]["label"]
    assert head["inference"] > 0.9 and report["disagree"] == []
    assert report["message"] is None


def test_model_without_batch_norm_is_not_checked():
    spec = {"inputs": {"sensor": {"modality": "sensor", "shape": [5, 2],
                                  "tower": {"encoder": "gru", "dim": 4}}},
            "heads": {"label": {"type": "classification",
                                "num_classes": 2}}}
    model = build_model(spec)
    ds = tf.data.Dataset.from_tensor_slices(
        ({"sensor": np.zeros((4, 5, 2), "float32")},
         {"label": np.zeros(4, "int32")})).batch(4)
    assert mode_check(model, ds, spec) is None
