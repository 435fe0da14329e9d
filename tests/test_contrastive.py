"""CLIP's and SigLIP's losses (keras_mm.contrastive) against NumPy.

- the loss of each layer equals a NumPy transcription of the paper's
  formula, at non-default scales and biases;
- the learnable temperature and bias get the gradient of that formula
  (central finite differences of the NumPy loss), and CLIP's clipped
  scale gets none above `max_scale`;
- `model.fit` trains two towers through `add_loss` alone (no compile loss),
  the layer round-trips through `.keras`;
- under `MirroredStrategy` on 2 logical CPUs the negatives are the global
  batch: one SGD step of `model.fit` gives the one-device weights, and a
  per-replica-only loss (the regression this catches) does not.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mm.contrastive import ClipLoss, SigLipLoss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_clip(a, b, log_scale, max_scale=100.0):
    scale = math.exp(min(log_scale, math.log(max_scale)))
    logits = scale * _unit(a) @ _unit(b).T

    def ce(m):
        m = m - m.max(axis=1, keepdims=True)
        logp = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(logp))
    return (ce(logits) + ce(logits.T)) / 2


def numpy_siglip(a, b, log_scale, bias):
    logits = math.exp(log_scale) * _unit(a) @ _unit(b).T + bias
    z = 2 * np.eye(len(a)) - 1
    return -np.sum(np.log(1 / (1 + np.exp(-z * logits)))) / len(a)


def _pairs(n=6, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, dim))
    b = a + 0.8 * rng.normal(size=(n, dim))      # paired, not identical
    return a, b


def _layer_loss(layer, a, b):
    with tf.GradientTape() as tape:
        layer([tf.constant(a, "float32"), tf.constant(b, "float32")])
        loss = layer.losses[-1]
    return float(loss), tape.gradient(loss, layer.trainable_weights)


@pytest.mark.parametrize("log_scale", [0.3, math.log(1 / 0.07), 5.0])
def test_clip_loss_and_gradient_match_numpy(log_scale):
    a, b = _pairs()
    layer = ClipLoss()
    layer.build([a.shape, b.shape])
    layer.log_scale.assign(log_scale)
    loss, (grad,) = _layer_loss(layer, a, b)
    assert loss == pytest.approx(numpy_clip(a, b, log_scale), abs=1e-5)
    h = 1e-4
    numeric = (numpy_clip(a, b, log_scale + h)
               - numpy_clip(a, b, log_scale - h)) / (2 * h)
    if log_scale + h < math.log(100):
        assert abs(float(grad)) > 1e-3
        assert float(grad) == pytest.approx(numeric, rel=1e-2, abs=1e-4)
    else:       # clipped at max_scale: no gradient, as in CLIP
        assert numeric == 0.0 and float(grad) == 0.0


@pytest.mark.parametrize("log_scale, bias", [(math.log(10), -10.0),
                                             (1.0, 0.5)])
def test_siglip_loss_and_gradients_match_numpy(log_scale, bias):
    a, b = _pairs(n=5)
    layer = SigLipLoss()
    layer.build([a.shape, b.shape])
    layer.log_scale.assign(log_scale)
    layer.logit_bias_weight.assign(bias)
    loss, grads = _layer_loss(layer, a, b)
    assert loss == pytest.approx(numpy_siglip(a, b, log_scale, bias),
                                 rel=1e-5)
    h = 1e-4
    numeric = [
        (numpy_siglip(a, b, log_scale + h, bias)
         - numpy_siglip(a, b, log_scale - h, bias)) / (2 * h),
        (numpy_siglip(a, b, log_scale, bias + h)
         - numpy_siglip(a, b, log_scale, bias - h)) / (2 * h)]
    names = [w.name for w in layer.trainable_weights]
    assert names == ["log_scale", "bias"]
    for got, want in zip(grads, numeric):
        assert abs(float(got)) > 1e-3
        assert float(got) == pytest.approx(want, rel=1e-2, abs=1e-4)


def test_pair_logits_and_width_check():
    a, b = _pairs(n=4)
    layer = SigLipLoss(scale=3.0, bias=-1.0)
    out = np.asarray(layer([a.astype("float32"), b.astype("float32")]))
    want = 3.0 * np.sum(_unit(a) * _unit(b), axis=-1) - 1.0
    np.testing.assert_allclose(out, want, rtol=1e-5)
    with pytest.raises(ValueError, match="widths 5 and 3"):
        ClipLoss()([a.astype("float32"), b[:, :3].astype("float32")])


def _dual_encoder(layer_cls, seed=0, dim=8):
    keras.utils.set_random_seed(seed)
    a = keras.Input((5,), name="a")
    b = keras.Input((7,), name="b")
    za = keras.layers.Dense(dim, name="tower_a")(a)
    zb = keras.layers.Dense(dim, name="tower_b")(b)
    score = layer_cls(name="align")([za, zb])
    return keras.Model({"a": a, "b": b}, {"align": score})


def _paired_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    a = latent @ rng.normal(size=(4, 5)) + 0.1 * rng.normal(size=(n, 5))
    b = latent @ rng.normal(size=(4, 7)) + 0.1 * rng.normal(size=(n, 7))
    return {"a": a.astype("float32"), "b": b.astype("float32")}


@pytest.mark.parametrize("layer_cls", [ClipLoss, SigLipLoss])
def test_fit_trains_through_add_loss_and_round_trips(layer_cls, tmp_path):
    model = _dual_encoder(layer_cls)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = _paired_data()
    before = model.evaluate(data, batch_size=16, verbose=0)
    history = model.fit(data, batch_size=16, epochs=15, verbose=0,
                        shuffle=False)
    after = model.evaluate(data, batch_size=16, verbose=0)
    assert after < 0.7 * before, (before, after, history.history["loss"])
    path = str(tmp_path / "dual.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        np.asarray(loaded(data)["align"]), np.asarray(model(data)["align"]),
        rtol=1e-5, atol=1e-6)
    assert loaded.get_layer("align").get_config() == \
        model.get_layer("align").get_config()


MIRRORED = textwrap.dedent("""
    import contextlib, json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_contrastive import _dual_encoder, _paired_data
    from keras_mm import contrastive
    from keras_mm.contrastive import ClipLoss, SigLipLoss

    def one_step(layer_cls, strategy=None):
        with strategy.scope() if strategy else contextlib.nullcontext():
            model = _dual_encoder(layer_cls, seed=1)
            model.compile(optimizer=keras.optimizers.SGD(0.5))
        model.fit(_paired_data(n=16), batch_size=16, epochs=1, verbose=0,
                  shuffle=False)
        return [np.asarray(w) for w in model.get_weights()]

    out = {}
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    for cls in (ClipLoss, SigLipLoss):
        one = one_step(cls)
        two = one_step(cls, mirrored)
        out[cls.__name__] = max(float(np.max(np.abs(x - y)))
                                for x, y in zip(one, two))
    # The regression: negatives from the per-replica batch only.
    contrastive.contrastive_loss.gather_replicas = lambda x: (x, 0)
    one = one_step(ClipLoss)
    two = one_step(ClipLoss, mirrored)
    out["local_only"] = max(float(np.max(np.abs(x - y)))
                            for x, y in zip(one, two))
    print("RESULT " + json.dumps(out), flush=True)
""")


@pytest.mark.slow
def test_mirrored_negatives_come_from_the_global_batch(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, str(script), "", os.path.join(REPO, "tests")],
        env=env, capture_output=True, text=True, timeout=300)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = json.loads(lines[0][len("RESULT "):])
    print(result)
    assert result["ClipLoss"] < 1e-5 and result["SigLipLoss"] < 1e-5, result
    assert result["local_only"] > 1e-3, result


@pytest.mark.parametrize("layer_cls", [ClipLoss, SigLipLoss])
def test_mixed_precision_keeps_the_loss_in_float32(layer_cls):
    """bfloat16 embeddings (a mixed-precision tower): the scale, bias,
    logits and loss stay float32 (bfloat16 logits at scale 14-100 would
    round the loss), and the loss equals the float32 one on the same
    (rounded) embeddings."""
    a, b = _pairs(n=6)
    a16 = tf.cast(tf.constant(a, "float32"), "bfloat16")
    b16 = tf.cast(tf.constant(b, "float32"), "bfloat16")
    mixed = layer_cls(dtype="mixed_bfloat16")
    out = mixed([a16, b16])
    assert out.dtype == tf.float32 and mixed.losses[-1].dtype == tf.float32
    assert all(w.dtype == "float32" for w in mixed.weights)
    plain = layer_cls()
    plain([tf.cast(a16, "float32"), tf.cast(b16, "float32")])
    assert float(mixed.losses[-1]) == pytest.approx(
        float(plain.losses[-1]), rel=1e-6)
