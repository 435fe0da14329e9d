"""Video from a pretrained keras-hub image backbone applied per frame:
VideoPresetPreprocessor and VideoPresetTower.

Every preset is a tiny random-weight one written by keras-hub's own
`save_to_preset` (tests/tiny_presets_image.py: 32x32 images, width 16);
nothing is downloaded. GIF clips are written by Pillow. Run alone with
`python -m pytest -n 0 -q tests/test_pretrained_video.py`.
"""

import io
import json
import shutil

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
from keras_mm.pretrained.image_preset_preprocessor import (
    ImagePresetPreprocessor)
from keras_mm.pretrained.image_preset_tower import ImagePresetTower
from keras_mm.pretrained.video_preset_preprocessor import (
    VideoPresetPreprocessor)
from keras_mm.pretrained.video_preset_tower import VideoPresetTower
from keras_mm.registry import PREPROCESSORS, PRETRAINED_TOWERS

T = 6                   # frames per clip in the tower tests
TEMPORALS = ("mean", "gru", "tcn", "transformer")


@pytest.fixture(scope="session")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_presets")
    return {"vit": tiny_presets_image.vit_preset(str(root / "vit")),
            "resnet": tiny_presets_image.resnet_preset(str(root / "resnet"))}


def keras_hub():
    import keras_hub as module
    return module


def gif_bytes(num_frames, height, width, seed=0):
    """An animated GIF of random frames, written by Pillow."""
    rng = np.random.default_rng(seed)
    frames = [Image.fromarray(rng.integers(0, 256, (height, width, 3),
                                           dtype=np.uint8))
              for _ in range(num_frames)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True,
                   append_images=frames[1:], duration=40, loop=0)
    return buffer.getvalue()


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def clips(n=2, frames=T, seed=0):
    """Converted clips: values as a [-1, 1] converter gives them."""
    return np.random.default_rng(seed).uniform(
        -1, 1, (n, frames, 32, 32, 3)).astype("float32")


def close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol,
                               rtol=0)


# -- preprocessor --------------------------------------------------------------

def test_registered_config_round_trip_and_signatures(presets, tmp_path):
    assert PREPROCESSORS.get("video_preset") is VideoPresetPreprocessor
    assert PRETRAINED_TOWERS.get("video_preset") is VideoPresetTower
    copy = shutil.copytree(presets["resnet"], tmp_path / "resnet")
    pre = VideoPresetPreprocessor("clip", preset=str(copy), num_frames=4,
                                  source="gif", image_size=(24, 40))
    assert pre.modality == "video" and pre.registered_name == "video_preset"
    assert pre.output_shape() == (4, 24, 40, 3)
    signature = pre.output_signature()
    assert signature["clip"].shape.as_list() == [None, 4, 24, 40, 3]
    assert signature["clip_mask"].dtype == tf.bool
    assert signature["clip_present"].shape.as_list() == [None]
    assert pre.resources() == []
    config = pre.get_config()
    json.dumps(config)
    raws = tf.constant([gif_bytes(3, 30, 50), b""])
    want = pre(raws)
    shutil.rmtree(copy)            # the config holds the converter's values
    data = serialize_preprocessor(pre)
    assert data["type"] == "video_preset" and data["modality"] == "video"
    clone = deserialize_preprocessor(json.loads(json.dumps(data)))
    assert type(clone) is VideoPresetPreprocessor
    assert clone.get_config() == config
    got = clone(raws)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_gif_frames_equal_the_image_preset_preprocessor_on_each_frame(
        presets):
    """Each sampled GIF frame: bitwise ImagePresetPreprocessor's values on
    that frame alone (the converter's crop, resize, scale and offset);
    padded frames are zeros (not the offset), the mask marks them."""
    image = ImagePresetPreprocessor("photo", preset=presets["resnet"])
    pre = VideoPresetPreprocessor("clip", preset=presets["resnet"],
                                  num_frames=4, source="gif")
    short, long = gif_bytes(3, 40, 50, seed=1), gif_bytes(9, 70, 20, seed=2)
    out = pre(tf.constant([short, long, b""]))
    pixels, mask = out["clip"].numpy(), out["clip_mask"].numpy()
    np.testing.assert_array_equal(out["clip_present"], [1, 1, 0])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 1, 1],
                                         [0, 0, 0, 0]])
    # 9 frames sampled to 4: the centres of 4 equal segments.
    for row, raw, picks in ((0, short, [0, 1, 2]), (1, long, [1, 3, 5, 7])):
        decoded = tf.io.decode_gif(raw).numpy()
        frames = [png_bytes(decoded[i]) for i in picks]
        want = image(tf.constant(frames))["photo"].numpy()
        np.testing.assert_array_equal(pixels[row, :len(picks)], want)
    assert not pixels[0, 3].any() and not pixels[2].any()
    assert pixels[0, :3].min() < -1.0        # the converter's mean / std


@pytest.mark.parametrize("settings", [
    {"crop_to_aspect_ratio": False, "pad_to_aspect_ratio": True,
     "antialias": True},
    {"crop_to_aspect_ratio": False, "interpolation": "nearest"},
    {"interpolation": "bicubic", "image_size": [24, 40]}])
def test_gif_converter_options_equal_the_image_preset_preprocessor(
        settings):
    converter = {"image_size": [32, 32], "scale": [0.01, 0.02, 0.03],
                 "offset": -0.5, **settings}
    image = ImagePresetPreprocessor("photo", converter=converter)
    pre = VideoPresetPreprocessor("clip", converter=converter, num_frames=2,
                                  source="gif")
    raw = gif_bytes(2, 30, 70, seed=6)
    pixels = pre(tf.constant([raw]))["clip"].numpy()[0]
    assert pixels.shape == (2, *converter["image_size"], 3)
    decoded = tf.io.decode_gif(raw).numpy()
    want = image(tf.constant([png_bytes(f) for f in decoded]))["photo"]
    np.testing.assert_array_equal(pixels, want.numpy())


def test_encoded_frames_source_equals_the_image_preset_preprocessor(
        presets):
    image = ImagePresetPreprocessor("photo", preset=presets["vit"])
    pre = VideoPresetPreprocessor("clip", preset=presets["vit"],
                                  num_frames=3)
    rng = np.random.default_rng(5)
    frames = [png_bytes(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for h, w in ((40, 50), (17, 90))]
    out = pre(tf.constant([[frames[0], b"", frames[1]], [b"", b"", b""]]))
    want = image(tf.constant(frames))["photo"].numpy()
    np.testing.assert_array_equal(out["clip"].numpy()[0, :2], want)
    np.testing.assert_array_equal(out["clip_mask"], [[1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out["clip_present"], [1, 0])
    assert not out["clip"].numpy()[0, 2].any()
    assert not out["clip"].numpy()[1].any()


def test_bounded_decode_refuses_a_gif_over_max_clip_pixels(presets):
    pre = VideoPresetPreprocessor("clip", preset=presets["vit"],
                                  source="gif", max_clip_pixels=5000)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="(?s)the GIF has.*9.*frames.*max_clip_pixels"):
        pre(tf.constant([gif_bytes(9, 30, 20)]))


def test_preprocessor_argument_errors(presets):
    with pytest.raises(ValueError, match=r"VideoPresetPreprocessor\('clip'"
                       r"\): give preset= .* or converter="):
        VideoPresetPreprocessor("clip")
    with pytest.raises(ValueError, match=r"VideoPresetPreprocessor\('clip'"
                       r"\): channels=4"):
        VideoPresetPreprocessor("clip", preset=presets["vit"], channels=4)
    with pytest.raises(ValueError, match=r"VideoPresetPreprocessor\('clip'"
                       r"\).*no such folder"):
        VideoPresetPreprocessor("clip", preset="/nonexistent/preset")
    with pytest.raises(ValueError, match=r"VideoPresetPreprocessor\('clip'"
                       r"\): source='mp4'"):
        VideoPresetPreprocessor("clip", preset=presets["vit"],
                                source="mp4")
    with pytest.raises(ValueError, match=r"VideoPresetPreprocessor\('clip'"
                       r"\): num_frames=0"):
        VideoPresetPreprocessor("clip", preset=presets["vit"], num_frames=0)


@pytest.mark.slow  # a fresh process / a full run: CI's slow set
def test_train_equals_serve_in_tf_data_tf_function_and_fresh_savedmodel(
        presets, tmp_path):
    frames = 4
    pre = VideoPresetPreprocessor("clip", preset=presets["vit"],
                                  num_frames=frames, source="gif")
    keras.utils.set_random_seed(3)
    clip = keras.Input((frames, 32, 32, 3), name="clip")
    mask = keras.Input((frames,), dtype="bool", name="clip_mask")
    tower = VideoPresetTower(preset=presets["vit"], temporal="gru", dim=8,
                             name="clip_tower")
    model = keras.Model([clip, mask],
                        keras.layers.Dense(2)(tower(clip, mask=mask)))
    raws = [gif_bytes(2, 40, 50, seed=1), gif_bytes(6, 32, 32, seed=2), b"",
            gif_bytes(4, 17, 60, seed=3), gif_bytes(1, 20, 20, seed=4)]
    keys = ("clip", "clip_mask", "clip_present")
    # Training path: batched rows, one map of transform(parse_batch(.)).
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(raws)).batch(
        3).map(lambda b: pre.transform(pre.parse_batch(b)))
    train = {k: np.concatenate([b[k].numpy() for b in dataset])
             for k in keys}
    np.testing.assert_array_equal(train["clip_present"], [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(train["clip_mask"].sum(axis=1),
                                  [2, 4, 0, 4, 1])

    def serve(raw):
        out = pre(raw)
        return {"pixels": out["clip"], "mask": out["clip_mask"],
                "present": out["clip_present"],
                "pred": model([out["clip"], out["clip_mask"]],
                              training=False)}

    signature = [tf.TensorSpec([None], tf.string)]
    served = tf.function(serve, input_signature=signature)(
        tf.constant(raws))
    close(served["pixels"], train["clip"], atol=1e-6)
    np.testing.assert_array_equal(served["mask"], train["clip_mask"])
    np.testing.assert_array_equal(served["present"], train["clip_present"])
    in_process = np.asarray(model([train["clip"], train["clip_mask"]],
                                  training=False))
    close(served["pred"], in_process)

    fresh = serve_in_fresh_process(model, pre.resources(), serve, raws,
                                   tmp_path, ".gif")
    close(fresh["pixels"], train["clip"], atol=1e-6)
    np.testing.assert_array_equal(fresh["mask"], train["clip_mask"])
    np.testing.assert_array_equal(fresh["present"], train["clip_present"])
    close(fresh["pred"], in_process)


# -- tower ---------------------------------------------------------------------

def test_per_frame_features_equal_the_image_tower_and_keras_hub(presets):
    x = clips()
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], bool)
    tower = VideoPresetTower(preset=presets["vit"], output="sequence")
    image = ImagePresetTower(preset=presets["vit"])
    backbone = keras_hub().models.Backbone.from_preset(presets["vit"])
    out = np.asarray(tower(x, mask=mask))
    assert out.shape == (2, T, 16)
    for t in range(T):
        want = np.asarray(image(x[:, t]))
        # The keras-hub backbone called directly: its class token.
        close(want, np.asarray(backbone(x[:, t]))[:, 0])
        close(out[0, t], want[0])
        if t < 3:
            close(out[1, t], want[1])
    assert not out[1, 3:].any()                     # padded frames: zeros
    np.testing.assert_array_equal(tower.compute_mask(x, mask), mask)
    assert np.asarray(tower.compute_mask(x, None)).all()
    # "vector" with temporal="mean": the mean of the valid frames' vectors.
    vector = VideoPresetTower(preset=presets["vit"])(x, mask=mask)
    close(vector[0], out[0].mean(axis=0))
    close(vector[1], out[1, :3].mean(axis=0))
    assert VideoPresetTower(preset=presets["vit"]).compute_mask(
        x, mask) is None


@pytest.mark.parametrize("temporal", TEMPORALS)
def test_clip_padded_with_masked_frames_equals_it_unpadded(presets,
                                                           temporal):
    keras.utils.set_random_seed(7)
    padded = clips(n=2, seed=1)                  # T frames of noise
    valid = 4
    mask = np.zeros((2, T), bool)
    mask[:, :valid] = True
    vector = VideoPresetTower(preset=presets["vit"], temporal=temporal,
                              dim=8)
    sequence = VideoPresetTower(preset=presets["vit"], temporal=temporal,
                                dim=8, output="sequence")
    for tower in (vector, sequence):
        tower.build((None, T, 32, 32, 3))
    sequence.set_weights(vector.get_weights())
    got = np.asarray(vector(padded, mask=mask))
    want = np.asarray(vector(padded[:, :valid]))           # no padding
    close(got, want)
    steps = np.asarray(sequence(padded, mask=mask))
    close(steps[:, :valid], sequence(padded[:, :valid]))
    assert not steps[:, valid:].any()
    # The padded frames' content does not matter; the valid ones' does.
    other = padded.copy()
    other[:, valid:] = 0.0
    close(vector(other, mask=mask), got, atol=1e-6)
    other[:, 0] = 0.0
    assert np.abs(np.asarray(vector(other, mask=mask)) - got).max() > 1e-4


def fit_steps(tower, seed=0, steps=1):
    """`steps` eager Adam steps of tower -> Dense(1) on masked clips; which
    of the tower's weights moved (by path), and whether the head moved."""
    keras.utils.set_random_seed(seed)
    clip = keras.Input((T, 32, 32, 3))
    mask = keras.Input((T,), dtype="bool")
    head = keras.layers.Dense(1, name="head")
    model = keras.Model([clip, mask], head(tower(clip, mask=mask)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  run_eagerly=True)
    x = clips(4, seed=seed)
    m = np.arange(T)[None, :] < np.array([[6], [4], [5], [2]])
    y = np.random.default_rng(seed).normal(size=(4, 1)).astype("float32")
    before = [np.array(w) for w in tower.weights]
    head_before = [np.array(w) for w in head.weights]
    model.fit([x, m], y, batch_size=4, epochs=steps, verbose=0)
    moved = {w.path: not np.array_equal(a, np.array(w))
             for w, a in zip(tower.weights, before)}
    moved_head = any(not np.array_equal(a, np.array(w))
                     for w, a in zip(head.weights, head_before))
    return moved, moved_head


def test_frozen_backbone_is_bitwise_unchanged_while_the_temporal_moves(
        presets):
    # A frozen frame encoder (ResNet: its batch norms in inference mode).
    tower = VideoPresetTower(preset=presets["resnet"], temporal="gru",
                             dim=8, name="clip_tower")
    tower.frame_encoder.trainable = False
    moved, moved_head = fit_steps(tower)
    assert moved_head
    backbone = [p for p in moved if "/frame_encoder/" in p]
    temporal = [p for p in moved if "/gru/" in p]
    assert len(backbone) > 20 and temporal
    assert not [p for p in backbone if moved[p]]         # moving stats too
    assert all(moved[p] for p in temporal)
    assert {id(w) for w in tower.trainable_weights} == \
        {id(w) for w in tower.temporal_layer.weights}
    # trainable_blocks=0 (ViT): embeddings and blocks frozen; the final
    # norm, the dim projection and the TCN train.
    tower = VideoPresetTower(preset=presets["vit"], temporal="tcn", dim=8,
                             trainable_blocks=0)
    moved, _ = fit_steps(tower, seed=1)
    for path, did in moved.items():
        trains = "/tcn/" in path or "/projection/" in path or \
            "vit_encoder/ln/" in path
        assert did == trains, (path, did)
    # trainable=False: the whole tower, bitwise; the head still trains.
    tower = VideoPresetTower(preset=presets["vit"], temporal="gru", dim=8,
                             trainable=False)
    moved, moved_head = fit_steps(tower)
    assert moved_head and tower.trainable_weights == []
    assert not any(moved.values())


def test_lora_trains_only_the_adapters_and_the_temporal_stage(presets):
    tower = VideoPresetTower(preset=presets["vit"], temporal="transformer",
                             dim=8, num_heads=2, lora_rank=2)
    moved, _ = fit_steps(tower, steps=2)   # LoRA's b starts at zero
    backbone = [p for p in moved if "/frame_encoder/" in p and
                "/frame_encoder/projection/" not in p]
    lora = [p for p in backbone if "lora_kernel" in p]
    assert len(lora) >= 8
    for path in backbone:
        assert moved[path] == (path in lora), path
    assert all(moved[p] for p in moved if "/transformer/" in p and
               "kernel" in p)
    trainable = sum(int(np.prod(w.shape)) for w in tower.trainable_weights)
    assert trainable < tower.count_params() / 3


def test_builder_spec_with_a_video_preset_input(presets):
    import keras_mm
    from keras_mm.training.fine_tuning import check_multiplier_paths

    spec = {"inputs": {"clip": {
                "modality": "video", "preset": presets["vit"],
                "shape": [T, 32, 32, 3],   # the frame mask input by default
                "tower": {"temporal": "gru", "dim": 8,
                          "trainable_blocks": 1}}},
            "heads": {"label": {"type": "classification", "num_classes": 3}}}
    model = keras_mm.build_model(spec)
    assert sorted(model.input) == ["clip", "clip_mask"]
    assert model.input["clip_mask"].dtype == "bool"
    tower = model.get_layer("clip_tower")
    assert isinstance(tower, VideoPresetTower)
    assert tower.trainable_blocks == 1 and tower.temporal == "gru"
    assert all(w.path.startswith("clip_tower/") for w in tower.weights)
    check_multiplier_paths(model, {"learning_rate_multipliers":
                                   {"clip": 0.1}})
    mask = np.arange(T)[None, :] < np.array([[6], [3]])
    out = model({"clip": clips(), "clip_mask": mask})["label"]
    assert tuple(out.shape) == (2, 3)


def test_keras_file_reloads_without_the_preset_folder(presets, tmp_path):
    copy = shutil.copytree(presets["vit"], tmp_path / "vit")
    clip = keras.Input((T, 32, 32, 3))
    mask = keras.Input((T,), dtype="bool")
    tower = VideoPresetTower(preset=str(copy), temporal="transformer",
                             num_heads=2, dim=8, trainable_blocks=1,
                             output="sequence", name="clip_tower")
    model = keras.Model([clip, mask], tower(clip, mask=mask))
    x = clips(seed=4)
    m = np.arange(T)[None, :] < np.array([[6], [2]])
    want = np.asarray(model([x, m], training=False))
    path = str(tmp_path / "model.keras")
    model.save(path)
    shutil.rmtree(copy)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded([x, m], training=False), want)
    reloaded = loaded.get_layer("clip_tower")
    assert reloaded.get_config() == tower.get_config()
    assert [w.trainable for w in reloaded.weights] == \
        [w.trainable for w in tower.weights]
    assert all(w.path.startswith("clip_tower/") for w in loaded.weights)


def test_tower_argument_errors(presets):
    vit = presets["vit"]
    with pytest.raises(ValueError, match="VideoPresetTower: temporal='lstm'"):
        VideoPresetTower(preset=vit, temporal="lstm")
    with pytest.raises(ValueError, match="VideoPresetTower: output="
                       "'feature_map'"):
        VideoPresetTower(preset=vit, output="feature_map")
    with pytest.raises(ValueError, match="VideoPresetTower: give preset="):
        VideoPresetTower()
    with pytest.raises(ValueError, match="VideoPresetTower: .*"
                       "trainable_blocks=3 but the ViTBackbone"):
        VideoPresetTower(preset=vit, trainable_blocks=3)
    with pytest.raises(ValueError, match="VideoPresetTower: .*lora_rank=2 "
                       "needs a backbone with attention layers"):
        VideoPresetTower(preset=presets["resnet"], lora_rank=2)
    with pytest.raises(ValueError, match="width 16, which num_heads=3"):
        VideoPresetTower(preset=vit, temporal="transformer",
                         num_heads=3)(clips())
    with pytest.raises(ValueError, match="VideoPresetTower takes float "
                       "clips"):
        VideoPresetTower(preset=vit)(clips()[:, 0])
    with pytest.raises(ValueError, match=r"takes images of shape "
                       r"\(32, 32, 3\); got \(16, 16, 3\)"):
        VideoPresetTower(preset=vit)(clips()[:, :, :16, :16])


def test_layer_checks_gru_sequence(presets, tmp_path):
    # Config round trip, eager / symbolic shapes, a gradient to every
    # trainable weight, .keras reload (no fit / precision: the image
    # tower's own checks cover the backbone).
    mask = np.arange(T)[None, :] < np.array([[6], [3]])
    run_layer_checks(
        VideoPresetTower, {"preset": presets["vit"], "temporal": "gru",
                           "output": "sequence", "dim": 8},
        clips(), tmp_path=tmp_path, call_kwargs={"mask": mask},
        expected_output_shape=(2, T, 8), fit=False, mixed_precision=False)


@pytest.mark.slow
@pytest.mark.parametrize("family,temporal", [("vit", "transformer"),
                                             ("resnet", "tcn")])
def test_layer_checks_with_an_xla_fit_step(presets, tmp_path, family,
                                           temporal):
    mask = np.arange(T)[None, :] < np.array([[6], [3]])
    run_layer_checks(
        VideoPresetTower, {"preset": presets[family], "temporal": temporal,
                           "num_heads": 2, "dim": 8},
        clips(), tmp_path=tmp_path, call_kwargs={"mask": mask},
        expected_output_shape=(2, 8), fit_target=np.zeros((2, 8), "float32"),
        fit_loss="mse", xla=True, fit=family != "resnet",
        mixed_precision=("mixed_bfloat16", "mixed_float16"))
