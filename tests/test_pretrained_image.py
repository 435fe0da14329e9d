"""keras-hub image presets: ImagePresetPreprocessor and ImagePresetTower.

Every preset here is a tiny random-weight one written by keras-hub's own
`save_to_preset` (tests/tiny_presets_image.py); nothing is downloaded.
"""

import io
import json
import shutil
import struct
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fresh_export import serve_in_fresh_process
import tiny_presets_image
from helpers import run_layer_checks
from keras_mm.data.base_preprocessor import (deserialize_preprocessor,
                                             serialize_preprocessor)
from keras_mm.data.image_preprocessor import decode_image_uint8
from keras_mm.pretrained.image_preset_preprocessor import (
    ImagePresetPreprocessor)
from keras_mm.pretrained.image_preset_tower import ImagePresetTower
from keras_mm.registry import PREPROCESSORS, PRETRAINED_TOWERS

FAMILIES = ("vit", "resnet", "clip", "siglip")
RNG = np.random.default_rng(14)
# Sizes that exercise the converter's centre crop both ways.
SIZES = [(40, 50), (32, 32), (70, 20), (17, 90), (9, 9)]


@pytest.fixture(scope="session")
def presets(tmp_path_factory):
    return tiny_presets_image.write_all(tmp_path_factory.mktemp("presets"))


def keras_hub():
    import keras_hub as module
    return module


def encode(array, fmt, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def raw_images():
    """PNG (RGB and grey) and JPEG bytes of several sizes, and one empty."""
    raws = []
    for i, (h, w) in enumerate(SIZES):
        pixels = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
        raws.append(encode(pixels, "PNG"))
        raws.append(encode(pixels, "JPEG", quality=90 - i))
    raws.append(encode(RNG.integers(0, 256, (21, 30), dtype=np.uint8),
                       "PNG"))
    raws.append(b"")
    return raws


def images(seed=0, n=4):
    return np.random.default_rng(seed).uniform(
        -1, 1, (n, 32, 32, 3)).astype("float32")


def close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol,
                               rtol=0)


# -- preprocessor --------------------------------------------------------------

def test_registered_and_config_round_trip_without_the_preset(presets,
                                                             tmp_path):
    assert PREPROCESSORS.get("image_preset") is ImagePresetPreprocessor
    assert PRETRAINED_TOWERS.get("image_preset") is ImagePresetTower
    copy = shutil.copytree(presets["clip"], tmp_path / "clip")
    pre = ImagePresetPreprocessor("photo", preset=str(copy))
    config = pre.get_config()
    json.dumps(config)
    assert config["converter"]["interpolation"] == "bicubic"
    assert pre.output_shape() == (32, 32, 3)
    assert pre.output_signature()["photo"].shape.as_list() == [None, 32, 32,
                                                               3]
    raws = tf.constant(raw_images())
    want = pre(raws)
    shutil.rmtree(copy)            # the config holds the converter's values
    data = serialize_preprocessor(pre)
    assert data["type"] == "image_preset" and data["modality"] == "image"
    clone = deserialize_preprocessor(json.loads(json.dumps(data)))
    assert type(clone) is ImagePresetPreprocessor
    assert clone.get_config() == config
    got = clone(raws)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert pre.resources() == []


@pytest.mark.parametrize("family", FAMILIES)
def test_values_equal_keras_hubs_converter_on_the_decoded_pixels(presets,
                                                                 family):
    pre = ImagePresetPreprocessor("photo", preset=presets[family])
    converter = keras_hub().layers.ImageConverter.from_preset(
        presets[family])
    raws = raw_images()
    out = pre(tf.constant(raws))
    pixels, present = out["photo"].numpy(), out["photo_present"].numpy()
    np.testing.assert_array_equal(present, [1.0] * (len(raws) - 1) + [0.0])
    assert not pixels[-1].any()                 # absent: all zeros
    for i, raw in enumerate(raws[:-1]):
        decoded = decode_image_uint8(tf.constant(raw)).numpy()
        if decoded.shape[-1] == 1:
            decoded = np.repeat(decoded, 3, axis=-1)
        want = np.asarray(converter(decoded.astype("float32")))
        # The same ops on the same values: bitwise equal.
        np.testing.assert_array_equal(pixels[i], want, err_msg=str(i))


@pytest.mark.parametrize("settings", [
    {"interpolation": "nearest", "crop_to_aspect_ratio": False},
    {"interpolation": "bilinear", "antialias": True,
     "crop_to_aspect_ratio": False, "pad_to_aspect_ratio": True},
    {"interpolation": "lanczos3", "image_size": [24, 40]},
])
def test_converter_options_equal_keras_hub(settings):
    full = {"image_size": [32, 32], "scale": [0.01, 0.02, 0.03],
            "offset": -0.5, **settings}
    pre = ImagePresetPreprocessor("photo", converter=full)
    converter = keras_hub().layers.ImageConverter(**full)
    raws = raw_images()[:-1]
    pixels = pre(tf.constant(raws))["photo"].numpy()
    assert pixels.shape[1:3] == tuple(full["image_size"])
    for i, raw in enumerate(raws):
        decoded = decode_image_uint8(tf.constant(raw)).numpy()
        if decoded.shape[-1] == 1:
            decoded = np.repeat(decoded, 3, axis=-1)
        want = np.asarray(converter(decoded.astype("float32")))
        np.testing.assert_allclose(pixels[i], want, atol=1e-6, rtol=0,
                                   err_msg=str(i))


def test_overrides_and_argument_errors(presets):
    pre = ImagePresetPreprocessor("photo", preset=presets["resnet"],
                                  image_size=(48, 40),
                                  crop_to_aspect_ratio=False)
    assert pre.output_shape() == (48, 40, 3)
    assert pre.settings()["crop_to_aspect_ratio"] is False
    assert pre.converter["image_size"] == [32, 32]   # the preset's, kept
    with pytest.raises(ValueError, match="preset= .* or converter="):
        ImagePresetPreprocessor("photo")
    with pytest.raises(ValueError, match="no such folder"):
        ImagePresetPreprocessor("photo", preset="/nonexistent/preset")
    with pytest.raises(ValueError, match="image_size"):
        ImagePresetPreprocessor("photo", converter={"scale": 1.0})
    with pytest.raises(ValueError, match="interpolation='cubic'"):
        ImagePresetPreprocessor("photo", converter={
            "image_size": [8, 8], "interpolation": "cubic"})
    with pytest.raises(ValueError, match=r"channels=2"):
        ImagePresetPreprocessor("photo", preset=presets["vit"], channels=2)


def png_header(height, width):
    """A PNG of only its signature, IHDR and IEND chunks (no pixels)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_bounded_decode_refuses_a_20000_square_png_header(presets):
    pre = ImagePresetPreprocessor("photo", preset=presets["vit"])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="(?s)PNG image is.*20000.*20000.*max_pixels=40000000"):
        pre(tf.constant([png_header(20000, 20000)]))


@pytest.mark.slow  # a fresh process / a full run: CI's slow set
def test_train_equals_serve_in_tf_data_tf_function_and_fresh_savedmodel(
        presets, tmp_path):
    pre = ImagePresetPreprocessor("photo", preset=presets["clip"])
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3), name="photo")
    tower = ImagePresetTower(preset=presets["clip"], dim=8)
    model = keras.Model(inputs, keras.layers.Dense(2)(tower(inputs)))
    raws = raw_images()
    # Training path: batched rows, one map of transform(parse_batch(.)).
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(raws)).batch(
        5).map(lambda b: pre.transform(pre.parse_batch(b)))
    train = {k: np.concatenate([b[k].numpy() for b in dataset])
             for k in ("photo", "photo_present")}
    # Per-example parse == parse_batch (bitwise).
    for i in (0, 3, len(raws) - 1):
        one = pre.parse(tf.constant(raws[i]))["photo"].numpy()
        batch = pre.parse_batch(tf.constant(raws[i:i + 1]))["photo"]
        np.testing.assert_array_equal(one, batch.numpy()[0])

    def serve(raw):
        out = pre(raw)
        return {"pixels": out["photo"], "present": out["photo_present"],
                "pred": model(out["photo"], training=False)}

    signature = [tf.TensorSpec([None], tf.string)]
    served = tf.function(serve, input_signature=signature)(
        tf.constant(raws))
    np.testing.assert_allclose(served["pixels"], train["photo"], atol=1e-6,
                               rtol=0)
    np.testing.assert_array_equal(served["present"], train["photo_present"])
    in_process = np.asarray(model(train["photo"], training=False))
    close(served["pred"], in_process)

    fresh = serve_in_fresh_process(model, pre.resources(), serve, raws,
                                   tmp_path, ".img")
    np.testing.assert_allclose(fresh["pixels"], train["photo"], atol=1e-6,
                               rtol=0)
    np.testing.assert_array_equal(fresh["present"], train["photo_present"])
    close(fresh["pred"], in_process)


# -- tower: equality with keras-hub ---------------------------------------------

def vision_tokens(encoder, x):
    """SigLIP's tokens after the final layer norm, from keras-hub's graph."""
    sub = keras.Model(encoder.input, encoder.post_layer_norm.output)
    return sub({"images": x})


@pytest.mark.parametrize("family", FAMILIES)
def test_tower_equals_the_keras_hub_backbone_called_directly(presets,
                                                             family):
    x = images()
    backbone = keras_hub().models.Backbone.from_preset(presets[family])

    def tower(**kwargs):
        # The default from the preset folder; the variants from the same
        # (already loaded) keras-hub backbone, which is quicker.
        source = {"backbone": backbone} if kwargs else \
            {"preset": presets[family]}
        return np.asarray(ImagePresetTower(**source, **kwargs)(x))

    if family == "vit":
        tokens = np.asarray(backbone(x))
        close(tower(), tokens[:, 0])
        close(tower(pooling="mean"), tokens[:, 1:].mean(axis=1))
        close(tower(output="sequence"), tokens[:, 1:])
        close(tower(output="feature_map"),
              tokens[:, 1:].reshape(4, 4, 4, 16))
    elif family == "resnet":
        fmap = np.asarray(backbone(x))
        assert fmap.shape == (4, 4, 4, 16)
        close(tower(), fmap.mean(axis=(1, 2)))
        close(tower(pooling="max"), fmap.max(axis=(1, 2)))
        close(tower(output="feature_map"), fmap)
        close(tower(output="sequence"), fmap.reshape(4, 16, 16))
    elif family == "clip":
        # The CLIP image embedding: get_vision_embeddings.
        close(tower(), backbone.get_vision_embeddings(x))
        tokens = np.asarray(backbone.vision_encoder({"images": x}))
        close(tower(pooling="cls"), tokens[:, 0])
        close(tower(output="sequence"), tokens[:, 1:])
    else:
        close(tower(), backbone.get_vision_embeddings(x))
        tokens = np.asarray(vision_tokens(backbone.vision_encoder, x))
        close(tower(pooling="mean"), tokens.mean(axis=1))
        close(tower(output="feature_map"), tokens.reshape(4, 4, 4, 16))


def test_tower_from_a_backbone_instance_or_config(presets):
    x = images(1)
    clip = keras_hub().models.Backbone.from_preset(presets["clip"])
    tower = ImagePresetTower(backbone=clip)
    close(tower(x), clip.get_vision_embeddings(x))
    # Only the vision half is kept.
    assert not [w for w in tower.weights if "text" in w.path]
    assert tower.count_params() == (clip.vision_encoder.count_params()
                                    + clip.vision_projection.count_params())
    # A config dict: the same architecture, random weights.
    vit = keras_hub().models.Backbone.from_preset(presets["vit"])
    config = keras.saving.serialize_keras_object(vit)
    fresh = ImagePresetTower(backbone=config)
    fresh.build((None, 32, 32, 3))
    assert fresh.count_params() == vit.count_params()
    assert fresh.get_config()["backbone"] == config
    assert fresh.get_config()["preset"] is None


def test_sequence_mask_and_builder_shape(presets):
    inputs = keras.Input((32, 32, 3))
    out = ImagePresetTower(preset=presets["vit"], output="sequence",
                           dim=8)(inputs)
    assert tuple(out.shape) == (None, 16, 8)
    tower = ImagePresetTower(preset=presets["resnet"], output="sequence")
    y = tower(images())
    mask = tower.compute_mask(images(), None)
    assert mask.dtype == tf.bool and tuple(mask.shape) == (4, 16)
    assert np.asarray(mask).all()
    assert tuple(y.shape) == (4, 16, 16)
    assert ImagePresetTower(preset=presets["vit"]).compute_mask(
        images(), None) is None


def test_tower_errors(presets):
    with pytest.raises(ValueError, match="preset= .* or backbone="):
        ImagePresetTower()
    with pytest.raises(ValueError, match="no such folder"):
        ImagePresetTower(preset="/nonexistent/preset")
    with pytest.raises(ValueError, match=r"lora_rank=2 needs a backbone "
                       "with attention layers"):
        ImagePresetTower(preset=presets["resnet"], lora_rank=2)
    with pytest.raises(ValueError, match="trainable_blocks=3 but the "
                       "ViTBackbone .* has 2 transformer blocks"):
        ImagePresetTower(preset=presets["vit"], trainable_blocks=3)
    with pytest.raises(ValueError, match="choose one"):
        ImagePresetTower(preset=presets["vit"], trainable_blocks=1,
                         lora_rank=2)
    with pytest.raises(ValueError, match=r"pooling='avg' is not one of "
                       "'cls', 'mean'"):
        ImagePresetTower(preset=presets["vit"], pooling="avg")
    with pytest.raises(ValueError, match=r"takes images of shape "
                       r"\(32, 32, 3\); got \(64, 64, 3\)"):
        ImagePresetTower(preset=presets["vit"])(np.zeros((1, 64, 64, 3)))
    text = keras_hub().models.BertBackbone(
        vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=8)
    with pytest.raises(ValueError, match="BertBackbone, not an image "
                       "backbone"):
        ImagePresetTower(backbone=text)


# -- fine-tuning -----------------------------------------------------------------

def train(tower, steps=1, seed=0):
    """`steps` Adam steps of tower -> Dense(1); the tower's weights before
    and after (by index), and the head's."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    features = tower(inputs)
    while len(features.shape) > 2:
        features = keras.ops.mean(features, axis=1)
    head = keras.layers.Dense(1, name="head")
    model = keras.Model(inputs, head(features))
    # Eager `fit` (the same train step, without tracing the backbone).
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  run_eagerly=True)
    x = images(seed, n=8)
    y = np.random.default_rng(seed).normal(size=(8, 1)).astype("float32")
    before = [np.array(w) for w in tower.weights]
    head_before = [np.array(w) for w in head.weights]
    model.fit(x, y, batch_size=8, epochs=steps, verbose=0)
    after = [np.array(w) for w in tower.weights]
    moved_head = any(not np.array_equal(a, np.array(b))
                     for a, b in zip(head_before, head.weights))
    moved = {w.path: not np.array_equal(a, b)
             for w, a, b in zip(tower.weights, before, after)}
    return moved, moved_head


@pytest.mark.parametrize("family", ("resnet", "siglip"))
def test_frozen_tower_is_bitwise_unchanged_by_training(presets, family):
    tower = ImagePresetTower(preset=presets[family], dim=4, trainable=False)
    moved, moved_head = train(tower)
    assert moved_head
    assert tower.trainable_weights == []
    assert not any(moved.values()), [p for p, m in moved.items() if m]
    if family == "resnet":   # batch norms ran in inference mode
        assert any("moving_mean" in p for p in moved)


# Substrings of the weight paths of the frozen part (embeddings and the
# first block / stage) and of the trained part (the last block and the
# final norm / pooler / projection) with trainable_blocks=1.
BLOCKS = {
    "vit": (("vit_patching_and_embedding", "transformer_block_1/"),
            ("transformer_block_2/", "vit_encoder/ln/")),
    "resnet": (("conv1_", "stack0_"), ("stack1_",)),
    "clip": (("_embedding/", "pre_layer_norm", "encoder_block_0/"),
             ("encoder_block_1/", "encoder_layer_norm/",
              "vision_projection")),
    "siglip": (("_embedding/", "encoder_block_0/"),
               ("encoder_block_1/", "post_layer_norm", "_head/")),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_blocks_moves_only_the_last_blocks(presets, family):
    tower = ImagePresetTower(preset=presets[family], trainable_blocks=1,
                             dim=4)
    moved, _ = train(tower)
    frozen, trained = BLOCKS[family]
    float_paths = [w.path for w in tower.weights
                   if "float" in str(w.dtype)]
    for path in float_paths:
        in_frozen = any(s in path for s in frozen)
        in_trained = any(s in path for s in trained) or "projection" in path
        assert in_frozen != in_trained, path      # a partition
        if in_frozen:
            assert not moved[path], f"frozen {path} moved"
        elif "moving_" not in path:
            assert moved[path], f"trainable {path} did not move"
    if family == "resnet":
        # The trained stage's batch norms ran in training mode.
        assert moved[f"{tower.name}/stack1_block0_1_bn/moving_mean"]
    # Unfreezing after a frozen phase re-applies trainable_blocks.
    ids = [id(w) for w in tower.trainable_weights]
    tower.trainable = False
    assert tower.trainable_weights == []
    tower.trainable = True
    assert [id(w) for w in tower.trainable_weights] == ids


@pytest.mark.parametrize("family", ("vit", "clip", "siglip"))
def test_lora_trains_only_the_adapters(presets, family):
    tower = ImagePresetTower(preset=presets[family], lora_rank=2, dim=4)
    tower.build((None, 32, 32, 3))
    trainable = [w.path for w in tower.trainable_weights]
    assert all("lora_kernel" in p or "projection/" in p for p in trainable)
    assert sum("lora_kernel_a" in p for p in trainable) >= 4
    # The parameter count shows it: adapters + the dim projection.
    lora = sum(int(np.prod(w.shape)) for w in tower.trainable_weights
               if "lora" in w.path)
    assert sum(int(np.prod(w.shape)) for w in tower.trainable_weights) == \
        lora + tower.projection.count_params()
    assert lora < tower.count_params() / 10
    moved, _ = train(tower, steps=2)
    for path, did in moved.items():
        if "lora_kernel" in path or "/projection/" in path:
            assert did, f"{path} did not move"
        else:
            assert not did, f"{path} moved"
    ids = [id(w) for w in tower.trainable_weights]
    tower.trainable = False
    tower.trainable = True
    assert [id(w) for w in tower.trainable_weights] == ids


# -- saving ----------------------------------------------------------------------

def test_keras_file_reloads_without_the_preset_folder(presets, tmp_path):
    copy = shutil.copytree(presets["siglip"], tmp_path / "siglip")
    inputs = keras.Input((32, 32, 3))
    tower = ImagePresetTower(preset=str(copy), output="sequence", dim=8,
                             trainable_blocks=1, name="photo_tower")
    model = keras.Model(inputs, tower(inputs))
    x = images(2)
    want = np.asarray(model(x, training=False))
    path = str(tmp_path / "model.keras")
    model.save(path)
    shutil.rmtree(copy)
    loaded = keras.saving.load_model(path)
    close(loaded(x, training=False), want, atol=1e-6)
    reloaded = loaded.get_layer("photo_tower")
    # trainable_blocks=1 again: the same weights trainable.
    assert [w.trainable for w in reloaded.weights] == \
        [w.trainable for w in tower.weights]
    assert 0 < len(reloaded.trainable_weights) < len(reloaded.weights)
    assert reloaded.get_config()["backbone"] == \
        tower.get_config()["backbone"]


def test_lora_tower_reloads_with_the_adapters_merged(presets, tmp_path):
    tower = ImagePresetTower(preset=presets["vit"], lora_rank=2, dim=4,
                             name="photo_tower")
    train(tower, steps=2)                  # non-zero adapters
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, tower(inputs))
    x = images(3)
    want = np.asarray(model(x, training=False))
    path = str(tmp_path / "lora.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    close(loaded(x, training=False), want, atol=1e-5)
    reloaded = loaded.get_layer("photo_tower")
    assert reloaded.get_config()["lora_rank"] == 2
    assert [w.trainable for w in reloaded.weights] == \
        [w.trainable for w in tower.weights]


LAYER_CHECK_KWARGS = {"output": "sequence", "dim": 8}


def test_layer_checks_vit_sequence(presets, tmp_path):
    # Config round trip, eager / symbolic shapes, a gradient to every
    # trainable weight, .keras reload; the traced (XLA) fit step and the
    # mixed-precision sub-layer checks are in the slow variant below.
    run_layer_checks(
        ImagePresetTower, {"preset": presets["vit"], **LAYER_CHECK_KWARGS},
        images(4), tmp_path=tmp_path, expected_output_shape=(4, 16, 8),
        fit=False, mixed_precision=False)


@pytest.mark.slow
@pytest.mark.parametrize("family,output", [
    ("vit", "sequence"), ("resnet", "feature_map"), ("clip", "vector"),
    ("siglip", "feature_map")])
def test_layer_checks_with_an_xla_fit_step(presets, tmp_path, family,
                                           output):
    shape = {"vector": (4, 8), "sequence": (4, 16, 8),
             "feature_map": (4, 4, 4, 8)}[output]
    run_layer_checks(
        ImagePresetTower, {"preset": presets[family], "output": output,
                           "dim": 8},
        images(4), tmp_path=tmp_path, expected_output_shape=shape,
        fit_target=np.zeros(shape, "float32"), fit_loss="mse", xla=True,
        # ResNet: 5 steps of batch-4 batch norm at Adam 1e-2 leave moving
        # statistics that do not lower the inference-mode loss.
        fit=family != "resnet",
        mixed_precision=("mixed_bfloat16", "mixed_float16"))


# -- variable paths (per-tower learning-rate multipliers) -------------------------

@pytest.mark.parametrize("family,kwargs", [
    ("vit", {"lora_rank": 2}), ("resnet", {"trainable_blocks": 1}),
    ("clip", {}), ("siglip", {"output": "sequence"})])
def test_every_variable_path_is_under_the_tower_name(presets, tmp_path,
                                                     family, kwargs):
    from keras_mm.training.fine_tuning import check_multiplier_paths

    inputs = keras.Input((32, 32, 3), name="photo")
    tower = ImagePresetTower(preset=presets[family], dim=4,
                             name="photo_tower", **kwargs)
    model = keras.Model(inputs, tower(inputs))
    paths = [v.path for v in model.variables]
    assert len(paths) > 20
    assert [p for p in paths if not p.startswith("photo_tower/")] == []
    check_multiplier_paths(model, {"learning_rate_multipliers":
                                   {"photo": 0.1}})        # no error
    x = images(5)
    want = np.asarray(model(x, training=False))
    path = str(tmp_path / "paths.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded(x, training=False), want)
    assert all(v.path.startswith("photo_tower/") for v in loaded.variables)


def test_builder_model_passes_the_multiplier_path_check(presets):
    import keras_mm
    from keras_mm.training.fine_tuning import check_multiplier_paths

    spec = {"inputs": {"photo": {"modality": "image",
                                 "preset": presets["resnet"],
                                 "shape": [32, 32, 3],
                                 "tower": {"dim": 4}}},
            "heads": {"label": {"type": "classification",
                                "num_classes": 2}}}
    model = keras_mm.build_model(spec)
    tower = model.get_layer("photo_tower")
    assert tower.weights and all(w.path.startswith("photo_tower/")
                                 for w in tower.weights)
    check_multiplier_paths(model, {"learning_rate_multipliers":
                                   {"photo": 0.1}})
