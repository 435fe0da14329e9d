"""TF-Hub / SavedModel towers and preprocessor (issue 14, TF-Hub part).

Every module is a tiny TF-Hub-format SavedModel written here
(`tiny_hub_modules`); nothing is downloaded. Run alone with
`python -m pytest -n 0 -q tests/test_pretrained_hub.py`.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiny_hub_modules as tiny
from helpers import run_layer_checks
from keras_mm.data.base_preprocessor import (deserialize_preprocessor,
                                             serialize_preprocessor)
from keras_mm.pretrained import hub_loading
from keras_mm.pretrained.hub_image_tower import HubImageTower
from keras_mm.pretrained.hub_text_preprocessor import HubTextPreprocessor
from keras_mm.pretrained.hub_text_tower import HubTextTower
from keras_mm.registry import PREPROCESSORS, PRETRAINED_TOWERS

TEXTS = ["The cat sat on the mat.", "", "A big red dog runs!",
         "zebra", "   ", "Dogs sat"]
PRESENT = np.array([1, 0, 1, 1, 0, 1], np.float32)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """The tiny modules, written once (read only: towers load them into
    memory, so training never changes the folders)."""
    root = tmp_path_factory.mktemp("hub_modules")
    return types.SimpleNamespace(
        pre=tiny.write_text_preprocessor(str(root / "pre"), seq_length=16),
        pre_fixed=tiny.write_text_preprocessor(
            str(root / "pre_fixed"), seq_length=8, pack=False),
        enc=tiny.write_text_encoder(str(root / "enc"), hidden=16),
        img=tiny.write_image_feature_vector(str(root / "img"), dim=12),
        img_fixed=tiny.write_image_feature_vector(
            str(root / "img_fixed"), dim=12, size=(8, 8)))


@pytest.fixture(scope="session")
def batch(hub):
    """The preprocessor's outputs on TEXTS (max_len 12), as NumPy."""
    pre = HubTextPreprocessor("review", hub.pre, max_len=12)
    return {k: v.numpy() for k, v in pre(tf.constant(TEXTS)).items()}


def _direct(module_dir, ids, mask, training=False):
    """The encoder SavedModel called directly, TF-Hub's way."""
    module = tf.saved_model.load(module_dir)
    return module({"input_word_ids": tf.constant(ids, tf.int32),
                   "input_mask": tf.constant(mask, tf.int32),
                   "input_type_ids": tf.zeros_like(ids, tf.int32)},
                  training=training)


def _images(n=4, size=8, seed=0):
    return np.random.default_rng(seed).uniform(
        0, 1, (n, size, size, 3)).astype("float32")


# -- preprocessor ------------------------------------------------------------


def test_preprocessor_ids_mask_presence(hub, batch):
    words = {0: ["the", "cat", "sat", "on", "the", "mat", "."],
             2: ["a", "big", "red", "dog", "run", "##s", "!"],
             3: ["[UNK]"], 5: ["dog", "##s", "sat"]}
    for row, pieces in words.items():
        np.testing.assert_array_equal(batch["review"][row],
                                      tiny.expected_ids(pieces, 12))
    for row in (1, 4):          # "" and whitespace only: absent
        assert not batch["review"][row].any()
        assert not batch["review_mask"][row].any()
    np.testing.assert_array_equal(batch["review_present"], PRESENT)
    present = PRESENT.astype(bool)
    np.testing.assert_array_equal(batch["review_mask"][present],
                                  batch["review"][present] != 0)
    assert batch["review"].dtype == np.int32
    assert batch["review_mask"].dtype == bool
    assert batch["review_present"].dtype == np.float32

    # max_len goes to bert_pack_inputs: truncation keeps [CLS] ... [SEP].
    short = HubTextPreprocessor("review", hub.pre, max_len=5)
    ids = short(tf.constant(TEXTS[:1]))["review"].numpy()
    np.testing.assert_array_equal(ids[0], tiny.expected_ids(
        ["the", "cat", "sat", "on", "the", "mat", "."], 5))
    # None: the module's own default length.
    assert HubTextPreprocessor("review", hub.pre).max_len == 16


def test_preprocessor_parse_signatures_config(hub, batch):
    pre = HubTextPreprocessor("review", hub.pre, max_len=12)
    assert pre.batched_parse and pre.modality == "text"
    assert PREPROCESSORS.get("text_hub") is HubTextPreprocessor
    for i, text in enumerate(TEXTS):       # parse == parse_batch, bitwise
        one = pre.parse(tf.constant(text))
        for key, value in one.items():
            np.testing.assert_array_equal(value.numpy(), batch[key][i])
    for key, spec in pre.output_signature().items():
        assert spec.dtype == tf.as_dtype(batch[key].dtype)
        assert spec.shape.is_compatible_with(batch[key].shape)
    assert pre.output_shape() == (12,)
    assert pre.raw_signature() == {
        "review": tf.TensorSpec([None], tf.string)}

    config = pre.get_config()
    assert json.loads(json.dumps(config)) == config == {
        "name": "review", "handle": hub.pre, "max_len": 12}
    assert HubTextPreprocessor.from_config(config).get_config() == config
    data = serialize_preprocessor(pre)
    assert data["type"] == "text_hub"
    revived = deserialize_preprocessor(json.loads(json.dumps(data)))
    assert type(revived) is HubTextPreprocessor
    assert revived.get_config() == config
    # the resource the exporter tracks is the module with its vocab asset
    (module,) = pre.resources()
    assert module.vocab_file.asset_path.numpy().decode().endswith(
        "vocab.txt")


def test_preprocessor_fixed_length_module(hub):
    pre = HubTextPreprocessor("t", hub.pre_fixed)
    assert pre.max_len == 8
    out = pre(tf.constant(TEXTS))
    direct = tf.saved_model.load(hub.pre_fixed)(tf.constant(TEXTS))
    keep = PRESENT.astype(bool)
    np.testing.assert_array_equal(out["t"].numpy()[keep],
                                  direct["input_word_ids"].numpy()[keep])
    assert HubTextPreprocessor("t", hub.pre_fixed, max_len=8).max_len == 8
    with pytest.raises(ValueError, match=r"HubTextPreprocessor\('t'\): "
                       r"max_len=12 .*no bert_pack_inputs.*gives 8 tokens; "
                       r"set max_len to 8 or None"):
        HubTextPreprocessor("t", hub.pre_fixed, max_len=12)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_len": 0}, r"max_len=0 must be a positive integer"),
    ({"max_len": 2}, r"max_len=2 leaves no room"),
    ({"handle": "/no/such/module"}, r"handle '/no/such/module': no such "
     "folder"),
    ({"handle": ""}, r"handle='' must be a TF-Hub URL"),
])
def test_preprocessor_argument_errors(hub, kwargs, match):
    kwargs = {"handle": hub.pre, **kwargs}
    with pytest.raises(ValueError, match=r"HubTextPreprocessor\('t'\): "
                       + match):
        HubTextPreprocessor("t", **kwargs)


def test_preprocessor_refuses_the_encoder(hub, tmp_path):
    with pytest.raises(ValueError, match="cannot be called on a string "
                       "batch .*encoder rather than the preprocessing"):
        HubTextPreprocessor("t", hub.enc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no saved_model.pb"):
        HubTextPreprocessor("t", str(tmp_path / "empty"))


# -- text tower --------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["pooled", "cls", "mean"])
def test_text_tower_vector_equals_module(hub, batch, pooling):
    ids, mask = batch["review"], batch["review_mask"]
    direct = _direct(hub.enc, ids, mask)
    tower = HubTextTower(hub.enc, pooling=pooling)
    out = tower(ids, mask=mask).numpy()
    sequence = direct["sequence_output"].numpy()
    weights = mask[..., None].astype("float32")
    expected = {"pooled": direct["pooled_output"].numpy(),
                "cls": sequence[:, 0],
                "mean": (sequence * weights).sum(1) / np.maximum(
                    weights.sum(1), 1.0)}[pooling]
    assert out.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    # without a mask, ids != 0 (the same mask for these rows)
    np.testing.assert_allclose(tower(ids).numpy(), out, atol=1e-6, rtol=0)
    assert PRETRAINED_TOWERS.get("text_hub") is HubTextTower
    assert HubTextTower.input_dtype == "int32"


def test_text_tower_sequence_and_projection(hub, batch):
    ids, mask = batch["review"], batch["review_mask"]
    direct = _direct(hub.enc, ids, mask)
    tower = HubTextTower(hub.enc, output="sequence")
    out = tower(ids, mask=mask).numpy()
    np.testing.assert_allclose(
        out, direct["sequence_output"].numpy() * mask[..., None],
        atol=1e-5, rtol=0)
    np.testing.assert_array_equal(tower.compute_mask(ids, mask).numpy(),
                                  mask)
    assert tower.compute_output_shape((None, 12)) == (None, 12, 16)

    projected = HubTextTower(hub.enc, output="sequence", dim=6)
    out = projected(ids, mask=mask).numpy()
    assert out.shape == (len(TEXTS), 12, 6)
    assert not out[~mask].any() and np.abs(out[mask]).min() > 0
    vector = HubTextTower(hub.enc, dim=6)
    np.testing.assert_allclose(
        vector(ids, mask=mask).numpy(),
        vector.projection(direct["pooled_output"]).numpy(), atol=1e-5)
    # an input without its mask argument in a functional model
    sym = keras.Input((12,), dtype="int32")
    assert HubTextTower(hub.enc, dim=6)(sym).shape == (None, 6)


def test_text_tower_layer_checks(hub, batch, tmp_path):
    """The standard battery; its fit step without XLA here (compiling the
    restored functions takes tens of seconds: the slow test below)."""
    present = PRESENT.astype(bool)
    run_layer_checks(
        HubTextTower, {"handle": hub.enc, "dim": 8},
        batch["review"][present], tmp_path=tmp_path,
        call_kwargs={"mask": batch["review_mask"][present]},
        expected_output_shape=(int(present.sum()), 8), xla=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "image"])
def test_towers_fit_under_xla(hub, batch, tmp_path, kind):
    """The fit check compiled with jit_compile=True (the restored module
    functions lower to XLA); 30-50 s for the text tower and 15-25 s for
    the image one on 2 shared cores."""
    if kind == "text":
        present = PRESENT.astype(bool)
        run_layer_checks(
            HubTextTower, {"handle": hub.enc, "pooling": "mean", "dim": 8},
            batch["review"][present], tmp_path=tmp_path,
            call_kwargs={"mask": batch["review_mask"][present]},
            expected_output_shape=(int(present.sum()), 8), xla=True,
            mixed_precision=False, grad_exempt=("pooler",))
    else:
        run_layer_checks(HubImageTower, {"handle": hub.img, "dim": 4},
                         _images(), tmp_path=tmp_path,
                         expected_output_shape=(4, 4), xla=True,
                         mixed_precision=False)


def _one_step(tower, inputs, mask=None):
    """One SGD step of tower + Dense head; (module weights before, after,
    head kernel before, after)."""
    if mask is not None:
        x = keras.Input(inputs.shape[1:], dtype="int32", name="ids")
        m = keras.Input(mask.shape[1:], dtype="bool", name="mask")
        head = keras.layers.Dense(1, name="head")
        model = keras.Model([x, m], head(tower(x, mask=m)))
        data = [inputs, mask]
    else:
        x = keras.Input(inputs.shape[1:], name="images")
        head = keras.layers.Dense(1, name="head")
        model = keras.Model(x, head(tower(x)))
        data = inputs
    model.compile(keras.optimizers.SGD(0.5), "mse")
    module = [v.numpy().copy() for v in tower._fn.variables()]
    kernel = head.kernel.numpy().copy()
    target = np.random.default_rng(3).normal(
        size=(len(inputs), 1)).astype("float32")
    model.train_on_batch(data, target)
    return (module, [v.numpy() for v in tower._fn.variables()], kernel,
            head.kernel.numpy())


def test_text_tower_trainable_and_frozen(hub, batch):
    present = PRESENT.astype(bool)
    ids, mask = batch["review"][present], batch["review_mask"][present]

    tower = HubTextTower(hub.enc)
    assert len(tower.trainable_weights) == 13  # all the module's variables
    before, after, k0, k1 = _one_step(tower, ids, mask)
    moved = [not np.array_equal(b, a) for b, a in zip(before, after)]
    assert len(moved) == 13 and all(moved), moved
    assert not np.array_equal(k0, k1)

    frozen = HubTextTower(hub.enc, trainable=False)
    assert frozen.trainable_weights == [] and len(frozen.weights) == 13
    before, after, k0, k1 = _one_step(frozen, ids, mask)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)     # bitwise unchanged
    assert not np.array_equal(k0, k1)           # the head still trains

    # unfrozen later (the second phase of a two-phase schedule): it trains
    frozen.trainable = True
    assert len(frozen.trainable_weights) == 13
    before, after, _, _ = _one_step(frozen, ids, mask)
    assert all(not np.array_equal(b, a) for b, a in zip(before, after))


def test_text_tower_training_mode_reaches_the_module(hub, batch):
    """training=True reaches the module (its dropout) only when trainable,
    as with hub.KerasLayer; the tiny encoder's "dropout" scales the even
    features by 0.8 and the odd ones by 1.2."""
    ids, mask = batch["review"], batch["review_mask"]
    tower = HubTextTower(hub.enc, pooling="cls")
    train = tower(ids, mask=mask, training=True).numpy()
    infer = tower(ids, mask=mask, training=False).numpy()
    np.testing.assert_allclose(train[:, 0::2], 0.8 * infer[:, 0::2],
                               atol=1e-6)
    np.testing.assert_allclose(train[:, 1::2], 1.2 * infer[:, 1::2],
                               atol=1e-6)
    assert np.abs(infer).min() > 1e-3
    frozen = HubTextTower(hub.enc, pooling="cls", trainable=False)
    np.testing.assert_array_equal(
        frozen(ids, mask=mask, training=True).numpy(), infer)


def test_text_tower_keras_file_keeps_the_fine_tuned_weights(hub, batch,
                                                            tmp_path):
    """`.keras` holds the handle and the fine-tuned weights: loading needs
    the module at its handle, and restores the trained values."""
    handle = str(tmp_path / "enc")
    shutil.copytree(hub.enc, handle)
    present = PRESENT.astype(bool)
    ids, mask = batch["review"][present], batch["review_mask"][present]
    tower = HubTextTower(handle, pooling="mean", dim=4)
    x = keras.Input((12,), dtype="int32", name="ids")
    m = keras.Input((12,), dtype="bool", name="mask")
    model = keras.Model([x, m], tower(x, mask=m))
    model.compile(keras.optimizers.SGD(0.5), "mse")
    model.train_on_batch([ids, mask], np.ones((len(ids), 4), "float32"))
    path = str(tmp_path / "model.keras")
    model.save(path)

    loaded = keras.saving.load_model(path)     # safe mode: no flag needed
    np.testing.assert_allclose(loaded.predict([ids, mask], verbose=0),
                               model.predict([ids, mask], verbose=0),
                               atol=1e-6, rtol=0)
    trained = [v.numpy() for v in tower.module_weights]
    (revived,) = [layer for layer in loaded.layers
                  if isinstance(layer, HubTextTower)]
    reloaded = [v.numpy() for v in revived.module_weights]
    original = [v.numpy() for v in HubTextTower(handle).module_weights]
    for a, b in zip(trained, reloaded):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, o) for a, o in zip(reloaded, original))

    shutil.rmtree(handle)
    with pytest.raises(Exception, match=r"HubTextTower: handle .*enc': no "
                       r"such folder"):
        keras.saving.load_model(path)


# -- train == serve ----------------------------------------------------------

_FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    loaded = tf.saved_model.load(sys.argv[1])
    texts = json.load(open(sys.argv[2]))
    out = loaded.signatures["serving_default"](tf.constant(texts))
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
    assert not [m for m in sys.modules if m.startswith("keras_mm")]
""")


@pytest.mark.slow  # a fresh process / a full run: CI's slow set
def test_train_equals_serve_through_a_fresh_process(hub, tmp_path):
    """tf.data == tf.function serving == the exported SavedModel (module
    folders deleted) reloaded in a process that imports only tensorflow and
    tensorflow_text: ids bitwise, predictions within 1e-5."""
    pre_dir, enc_dir = str(tmp_path / "pre"), str(tmp_path / "enc")
    shutil.copytree(hub.pre, pre_dir)
    shutil.copytree(hub.enc, enc_dir)
    pre = HubTextPreprocessor("review", pre_dir, max_len=12)
    ids_in = keras.Input((12,), dtype="int32", name="review")
    mask_in = keras.Input((12,), dtype="bool", name="review_mask")
    tower = HubTextTower(enc_dir, pooling="mean", dim=4)
    head = keras.layers.Dense(2, name="label")(tower(ids_in, mask=mask_in))
    model = keras.Model({"review": ids_in, "review_mask": mask_in}, head)

    data = tf.data.Dataset.from_tensor_slices(TEXTS).batch(4).map(
        lambda b: pre.transform(pre.parse_batch(b)))
    parts = list(data.as_numpy_iterator())
    train = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    train_pred = model.predict(
        {"review": train["review"], "review_mask": train["review_mask"]},
        verbose=0)

    def serve(texts):
        features = pre(texts)
        return {"ids": features["review"], "mask": features["review_mask"],
                "present": features["review_present"],
                "prediction": model({"review": features["review"],
                                     "review_mask": features["review_mask"]},
                                    training=False)}

    signature = [tf.TensorSpec([None], tf.string)]
    served = tf.function(serve, input_signature=signature)(
        tf.constant(TEXTS))
    np.testing.assert_array_equal(served["ids"].numpy(), train["review"])
    np.testing.assert_array_equal(served["mask"].numpy(),
                                  train["review_mask"])
    np.testing.assert_allclose(served["prediction"].numpy(), train_pred,
                               atol=1e-5, rtol=0)

    export = str(tmp_path / "export")
    archive = keras.export.ExportArchive()
    archive.track(model)
    for resource in pre.resources():
        archive.track(resource)
    archive.add_endpoint("serving_default", serve, input_signature=signature)
    archive.write_out(export, verbose=False)
    assert os.listdir(os.path.join(export, "assets")) == ["vocab.txt"]
    shutil.rmtree(pre_dir)          # the export stands alone
    shutil.rmtree(enc_dir)

    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(TEXTS))
    result = str(tmp_path / "served.npz")
    run = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, export, str(texts_file),
         result], cwd=str(tmp_path), capture_output=True, text=True,
        timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                          "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    fresh = np.load(result)
    np.testing.assert_array_equal(fresh["ids"], train["review"])
    np.testing.assert_array_equal(fresh["mask"], train["review_mask"])
    np.testing.assert_array_equal(fresh["present"], PRESENT)
    np.testing.assert_allclose(fresh["prediction"], train_pred, atol=1e-5,
                               rtol=0)


# -- image tower -------------------------------------------------------------


def test_image_tower_equals_module(hub):
    images = _images()
    direct = tf.saved_model.load(hub.img)(images, training=False).numpy()
    tower = HubImageTower(hub.img)
    out = tower(images).numpy()
    assert out.shape == (4, 12)
    np.testing.assert_allclose(out, direct, atol=1e-5, rtol=0)
    assert tower.compute_output_shape((None, 8, 8, 3)) == (None, 12)
    assert PRETRAINED_TOWERS.get("image_hub") is HubImageTower
    assert HubImageTower.input_dtype == "float32"
    frozen = HubImageTower(hub.img, trainable=False)   # no training mode
    np.testing.assert_array_equal(frozen(images, training=True).numpy(),
                                  out)
    train = tower(images, training=True).numpy()
    np.testing.assert_allclose(train[:, 0::2], 0.8 * out[:, 0::2],
                               atol=1e-6)
    np.testing.assert_allclose(train[:, 1::2], 1.2 * out[:, 1::2],
                               atol=1e-6)


def test_image_tower_layer_checks(hub, tmp_path):
    run_layer_checks(HubImageTower, {"handle": hub.img, "dim": 4},
                     _images(), tmp_path=tmp_path,
                     expected_output_shape=(4, 4), xla=False)


def test_image_tower_trainable_and_frozen(hub):
    images = _images()
    before, after, k0, k1 = _one_step(HubImageTower(hub.img), images)
    assert len(after) == 3
    assert all(not np.array_equal(b, a) for b, a in zip(before, after))
    before, after, k0, k1 = _one_step(
        HubImageTower(hub.img, trainable=False), images)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)
    assert not np.array_equal(k0, k1)


def test_image_tower_input_checks(hub):
    with pytest.raises(ValueError, match=r"HubImageTower: images of \(16, "
                       r"16\) but the module .* takes \(8, 8\); set the "
                       r"image preprocessor's size to \(8, 8\)"):
        HubImageTower(hub.img_fixed)(_images(size=16))
    assert HubImageTower(hub.img_fixed)(_images()).shape == (4, 12)
    with pytest.raises(ValueError, match=r"HubImageTower: inputs of shape "
                       r".*RGB images"):
        HubImageTower(hub.img)(np.zeros((2, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="HubImageTower: handle .* is not "
                       "a TF-Hub image feature-vector module"):
        HubImageTower(hub.enc)


# -- argument errors ---------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"pooling": "max"}, r"pooling='max' is not one of 'pooled', 'cls', "
     "'mean'"),
    ({"output": "feature_map"}, r"output='feature_map' is not one of "
     "'vector', 'sequence'"),
    ({"dim": 0}, r"dim=0 must be a positive integer"),
    ({"dropout": 1.0}, r"dropout=1.0 must be a number in \[0, 1\)"),
    ({"trainable_blocks": 2}, r"trainable_blocks=2 is not supported: a "
     "TF-Hub SavedModel has no block structure"),
    ({"lora_rank": 4}, r"lora_rank=4 is not supported"),
])
def test_text_tower_argument_errors(hub, kwargs, match):
    with pytest.raises(ValueError, match=r"HubTextTower: " + match):
        HubTextTower(hub.enc, **kwargs)


def test_towers_refuse_the_wrong_module(hub):
    with pytest.raises(ValueError, match=r"HubTextTower: handle .* is not "
                       r"a TF-Hub text encoder: it returns \['input_mask', "
                       r"'input_type_ids', 'input_word_ids'\].*preprocessing"
                       r" model"):
        HubTextTower(hub.pre)
    with pytest.raises(ValueError, match=r"HubImageTower: output='sequence'"
                       r" is not one of 'vector'"):
        HubImageTower(hub.img, output="sequence")
    with pytest.raises(ValueError, match=r"HubImageTower: lora_rank=8 is "
                       "not supported"):
        HubImageTower(hub.img, lora_rank=8)


# -- handles -----------------------------------------------------------------


def _offline():
    try:
        socket.getaddrinfo("tfhub.dev", 443)
    except OSError:
        return True
    return False


@pytest.mark.parametrize("cls, handle", [
    (HubTextTower, "https://tfhub.dev/keras-mm-tests/no-such-encoder/1"),
    (lambda h: HubTextPreprocessor("t", h),
     "https://www.kaggle.com/models/keras-mm-tests/no-such/TensorFlow2/"
     "preprocess/1"),
])
def test_url_without_network_is_one_fast_line(cls, handle, tmp_path,
                                              monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    had_pkg_resources = "pkg_resources" in sys.modules
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        cls(handle)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message and info.value.__cause__ is None
    assert repr(handle) in message
    if _offline():
        assert "needs a download and there is no network here" in message
    else:                       # the bogus handle gives a 404 online
        assert "cannot download" in message
    assert f"{handle}?tf-hub-format=compressed" in message
    assert "tar -xzf" in message and "TFHUB_CACHE_DIR" in message
    assert hub_loading.cache_folder(handle) in message
    # tensorflow_hub's import-time stand-in for pkg_resources is gone again
    assert ("pkg_resources" in sys.modules) == had_pkg_resources


def test_url_found_in_the_tfhub_cache_needs_no_network(hub, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    handle = "https://tfhub.dev/keras-mm-tests/tiny-encoder/1"
    folder = hub_loading.cache_folder(handle)
    assert folder.startswith(str(tmp_path / "cache"))
    shutil.copytree(hub.enc, folder)
    tower = HubTextTower(handle)
    assert tower.get_config()["handle"] == handle
    assert hub_loading.resolve(handle, "test") == folder
    ids = np.array([[2, 4, 6, 3, 0]], np.int32)
    np.testing.assert_allclose(
        tower(ids).numpy(),
        _direct(hub.enc, ids, ids != 0)["pooled_output"].numpy(),
        atol=1e-6)


def test_archive_handle_is_refused_with_untar_hint(tmp_path):
    archive = tmp_path / "bert.tar.gz"
    archive.write_bytes(b"not really")
    with pytest.raises(ValueError, match=r"is an archive; untar it"):
        HubTextTower(str(archive))


# -- variable paths (per-tower learning-rate multipliers) ----------------------

def test_every_variable_path_is_under_the_tower_name(hub, batch, tmp_path):
    from keras_mm.training.fine_tuning import check_multiplier_paths

    images = _images()
    x = keras.Input((8, 8, 3), name="photo")
    image = HubImageTower(hub.img, dim=4, name="photo_tower")
    ids = keras.Input((12,), dtype="int32", name="review")
    mask = keras.Input((12,), dtype="bool", name="review_mask")
    text = HubTextTower(hub.enc, pooling="mean", dim=4, name="review_tower")
    model = keras.Model([x, ids, mask], [image(x), text(ids, mask=mask)])
    paths = [v.path for v in model.variables]
    assert len(paths) == 3 + 2 + 13 + 2
    outside = [p for p in paths if not p.startswith(
        ("photo_tower/", "review_tower/"))]
    assert outside == []
    for tower in (image, text):
        assert all(w.path.startswith(tower.name + "/")
                   for w in tower.weights), tower.name
    check_multiplier_paths(model, {"learning_rate_multipliers":
                                   {"photo": 0.1, "review": 0.5}})
    data = [images, batch["review"], batch["review_mask"]]
    want = [np.asarray(y) for y in model(data, training=False)]
    path = str(tmp_path / "paths.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for got, expected in zip(loaded(data, training=False), want):
        np.testing.assert_array_equal(got, expected)
    assert all(v.path.startswith(("photo_tower/", "review_tower/"))
               for v in loaded.variables)
