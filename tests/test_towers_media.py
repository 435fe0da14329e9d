"""Image, audio and video towers: the layer battery, masking, front end."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from helpers import run_layer_checks
from keras_mm.ops import audio_features
from keras_mm.registry import TOWERS
from keras_mm.towers.audio_tower import AudioTower
from keras_mm.towers.image_tower import ImageTower
from keras_mm.towers.resnet_backbone import ResNetBackbone
from keras_mm.towers.video_tower import VideoTower

RNG = np.random.RandomState(0)
IMAGES = RNG.uniform(size=(4, 16, 16, 3)).astype("float32")
IMAGES32 = RNG.uniform(size=(4, 32, 32, 3)).astype("float32")
# A 440-1200 Hz tone per clip plus noise: 2000 samples at 8 kHz.
_t = np.arange(2000) / 8000.0
WAVES = np.stack([np.sin(2 * np.pi * f * _t) for f in (440, 660, 900, 1200)])
WAVES = (WAVES + 0.05 * RNG.normal(size=WAVES.shape)).astype("float32")
SPECTROGRAMS = RNG.normal(size=(4, 10, 12)).astype("float32")
CLIPS = RNG.uniform(size=(4, 4, 16, 16, 3)).astype("float32")
FRAME_MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0],
                       [1, 0, 0, 0]], dtype=bool)

# Full battery (XLA fit included) on "vector"; the other output modes run
# every check except the fit step, which only differs in the final reshape.
OUTPUT_FIT = {"vector": True, "sequence": False, "feature_map": False}

IMAGE_ENCODERS = {
    "cnn": {"encoder": "cnn", "filters": (8, 16)},
    "resnet": {"encoder": "resnet", "depth": 18, "base_filters": 8},
    "vit": {"encoder": "vit", "patch_size": 4, "num_heads": 2,
            "num_layers": 1},
}


def image_shape(encoder, output):
    grid = {"cnn": 4, "resnet": 1, "vit": 4}[encoder]
    return {"vector": (4, 8), "sequence": (4, grid * grid, 8),
            "feature_map": (4, grid, grid, 8)}[output]


@pytest.mark.parametrize("output", ["vector", "sequence", "feature_map"])
@pytest.mark.parametrize("encoder", list(IMAGE_ENCODERS))
def test_image_tower(encoder, output, tmp_path):
    kwargs = dict(IMAGE_ENCODERS[encoder], dim=8, output=output)
    run_layer_checks(ImageTower, kwargs, IMAGES, tmp_path=tmp_path,
                     expected_output_shape=image_shape(encoder, output),
                     fit=OUTPUT_FIT[output])
    assert ImageTower(**kwargs).compute_mask(IMAGES) is None


def test_resnet_backbone_layout():
    layer18 = ResNetBackbone(depth=18, base_filters=4)
    layer34 = ResNetBackbone(depth=34, base_filters=4)
    assert layer18(IMAGES32).shape == (4, 1, 1, 32)
    assert layer34(IMAGES32).shape == (4, 1, 1, 32)
    assert len(layer18.convs1) == 8 and len(layer34.convs1) == 16
    # 2 convs per block + stem + 3 projection shortcuts.
    kernels = [w for w in layer34.weights if w.path.endswith("kernel")]
    assert len(kernels) == 2 * 16 + 1 + 3


@pytest.mark.parametrize("encoder,normalization,fit",
                         [("cnn", "group", False), ("resnet", "layer", False)])
def test_image_tower_without_running_statistics(encoder, normalization, fit,
                                                tmp_path):
    kwargs = dict(IMAGE_ENCODERS[encoder], dim=8,
                  normalization=normalization)
    run_layer_checks(ImageTower, kwargs, IMAGES, tmp_path=tmp_path,
                     expected_output_shape=image_shape(encoder, "vector"),
                     fit=fit)
    tower = ImageTower(**kwargs)
    # No running statistics: training and inference are one function.
    np.testing.assert_allclose(tower(IMAGES, training=True),
                               tower(IMAGES, training=False), atol=1e-6)
    assert not tower.non_trainable_weights
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in tower._flatten_layers())


def _batch_norms(layer):
    return [sub for sub in layer._flatten_layers()
            if isinstance(sub, keras.layers.BatchNormalization)]


def test_image_tower_norm_momentum():
    from keras_mm.towers.resnet_backbone import NORM_MOMENTUM
    assert NORM_MOMENTUM == 0.9
    for kwargs in (dict(IMAGE_ENCODERS["cnn"]),
                   dict(IMAGE_ENCODERS["resnet"])):
        default = ImageTower(**kwargs)
        default(IMAGES)
        assert {bn.momentum for bn in _batch_norms(default)} == {0.9}
        tower = ImageTower(norm_momentum=0.5, **kwargs)
        tower(IMAGES)
        assert len(_batch_norms(tower)) == (2 if kwargs["encoder"] == "cnn"
                                            else 20)
        assert {bn.momentum for bn in _batch_norms(tower)} == {0.5}
        config = tower.get_config()
        assert (config["normalization"], config["norm_momentum"]) == \
            ("batch", 0.5)
        assert ImageTower.from_config(config).norm_momentum == 0.5
    # A config saved before these arguments existed loads with the defaults
    # and the same weights.
    old = ImageTower(filters=(4,), dim=8)
    old(IMAGES)
    config = old.get_config()
    del config["normalization"], config["norm_momentum"]
    restored = ImageTower.from_config(config)
    restored(IMAGES)
    restored.set_weights(old.get_weights())
    np.testing.assert_allclose(restored(IMAGES), old(IMAGES), atol=1e-6)
    assert restored.norm_momentum == 0.9
    # The video tower's frames CNN gets the same arguments.
    video = VideoTower(encoder="frames", filters=(4,), dim=8,
                       norm_momentum=0.5)
    video(CLIPS)
    assert {bn.momentum for bn in _batch_norms(video)} == {0.5}
    config = video.get_config()
    assert VideoTower.from_config(config).norm_momentum == 0.5
    assert VideoTower(encoder="frames").norm_momentum == 0.9


# MobileNetV3Small squeeze-excite convs see zero gradients from a random
# initialisation (their hard-sigmoid gates saturate), so they are exempt.
# The fit check is skipped: five steps of a BatchNorm net with momentum
# 0.999 cannot lower an inference-mode loss. An XLA train step of every
# application backbone was checked by hand (slow: ~1 min each on 2 cores).
@pytest.mark.slow
def test_image_tower_mobilenet_v3_small(tmp_path):
    run_layer_checks(
        ImageTower, {"encoder": "applications",
                     "backbone": "mobilenet_v3_small",
                     "dim": 8, "output": "feature_map"},
        IMAGES32, tmp_path=tmp_path, expected_output_shape=(4, 1, 1, 8),
        fit=False, grad_exempt=("squeeze_excite",))


@pytest.mark.slow
def test_image_tower_local_weights_file(tmp_path):
    source = ImageTower(encoder="applications", backbone="mobilenet_v3_small",
                        dim=8)
    source(IMAGES32)
    path = tmp_path / "mnv3_notop.weights.h5"
    source.image_encoder.application.save_weights(str(path))

    tower = ImageTower(encoder="applications", backbone="mobilenet_v3_small",
                       dim=8, weights=str(path))
    tower(IMAGES32)
    assert tower.get_config()["weights"] == str(path)
    a = source.image_encoder.application.get_weights()
    b = tower.image_encoder.application.get_weights()
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    fresh = ImageTower(encoder="applications", backbone="mobilenet_v3_small",
                       dim=8)
    fresh(IMAGES32)
    assert not all(np.array_equal(x, y) for x, y in
                   zip(a, fresh.image_encoder.application.get_weights()))

    # A saved model no longer needs the weights file.
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, tower(inputs))
    saved = tmp_path / "model.keras"
    model.save(saved)
    path.unlink()
    loaded = keras.saving.load_model(saved)
    np.testing.assert_allclose(loaded(IMAGES32), model(IMAGES32), atol=1e-6)

    with pytest.raises(ValueError, match="weights=.*no such file"):
        ImageTower(encoder="applications", backbone="mobilenet_v3_small",
                   weights=str(path))(IMAGES32)


# -- audio ------------------------------------------------------------------

AUDIO_SMALL = {"dim": 8, "filters": (8, 16), "num_mel_bins": 16,
               "num_heads": 2, "num_layers": 1}
# Each encoder x output once; the three front ends spread over them, with
# the XLA fit on the vector outputs.
AUDIO_CASES = [
    ("cnn", "vector", "log_mel", "layer"), ("cnn", "sequence", None, None),
    ("crnn", "vector", "mfcc", "layer"),
    ("crnn", "sequence", "log_mel", "batch"),
    ("transformer", "vector", None, "layer"),
    ("transformer", "sequence", "mfcc", "layer"),
]


def audio_shape(encoder, output, frontend):
    frames = 10 if frontend is None else 14  # 1 + (2000 - 256) // 128
    tokens = -(-frames // 4) if encoder == "cnn" else frames
    return (4, 8) if output == "vector" else (4, tokens, 8)


@pytest.mark.parametrize("encoder,output,frontend,feature_norm",
                         AUDIO_CASES)
def test_audio_tower(encoder, output, frontend, feature_norm, tmp_path):
    kwargs = dict(AUDIO_SMALL, encoder=encoder, output=output,
                  frontend=frontend, feature_norm=feature_norm)
    inputs = SPECTROGRAMS if frontend is None else WAVES
    run_layer_checks(AudioTower, kwargs, inputs, tmp_path=tmp_path,
                     expected_output_shape=audio_shape(encoder, output,
                                                       frontend),
                     fit=OUTPUT_FIT[output])
    assert AudioTower(**kwargs).compute_mask(inputs) is None


@pytest.mark.parametrize("frontend", ["log_mel", "mfcc"])
def test_audio_front_end_is_audio_features(frontend):
    kwargs = {"sample_rate": 8000, "frame_length": 200, "frame_step": 80,
              "num_mel_bins": 20, "num_mfcc": 10, "upper_edge_hertz": 3000.0}
    tower = AudioTower(encoder="transformer", frontend=frontend, dim=8,
                       num_heads=2, num_layers=1, **kwargs)
    expected = audio_features.log_mel_spectrogram(
        WAVES, sample_rate=8000, frame_length=200, frame_step=80,
        num_mel_bins=20, upper_edge_hertz=3000.0)
    if frontend == "mfcc":
        expected = audio_features.mfcc(expected, num_mfcc=10)
    features = tower.compute_features(WAVES)
    np.testing.assert_array_equal(np.asarray(features), np.asarray(expected))
    assert features.shape == (4, 1 + (2000 - 200) // 80,
                              10 if frontend == "mfcc" else 20)

    # The call path: same weights on precomputed features, same output.
    out = tower(WAVES)
    spectrogram_tower = AudioTower(encoder="transformer", frontend=None,
                                   dim=8, num_heads=2, num_layers=1)
    spectrogram_tower(np.asarray(expected))
    spectrogram_tower.set_weights(tower.get_weights())
    np.testing.assert_allclose(spectrogram_tower(np.asarray(expected)), out,
                               atol=1e-6)


def test_audio_front_end_stays_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    tower = AudioTower(encoder="cnn", **AUDIO_SMALL)
    out = tower(WAVES)
    assert out.dtype == "bfloat16"
    features = tower.compute_features(WAVES)
    assert features.dtype == "float32"
    np.testing.assert_array_equal(
        np.asarray(features),
        np.asarray(audio_features.log_mel_spectrogram(WAVES,
                                                      num_mel_bins=16)))


# -- video ------------------------------------------------------------------

VIDEO_SMALL = {"dim": 8, "filters": (8, 16), "num_heads": 2,
               "num_layers": 1, "tcn_dilations": (1, 2)}
# Each encoder x output and each temporal stage; the XLA fit once per
# encoder (TemporalConvNet and TransformerEncoder have their own fit checks
# in test_layers.py).
VIDEO_CASES = [
    ("conv3d", "mean", "vector", True), ("conv3d", "tcn", "sequence", False),
    ("conv3d", "transformer", "feature_map", False),
    ("frames", "gru", "vector", True),
    ("frames", "transformer", "sequence", False),
    ("frames", "tcn", "feature_map", False),
    ("frames", "mean", "sequence", False),
]


def video_shape(encoder, output):
    steps = 2 if encoder == "conv3d" else 4
    return {"vector": (4, 8), "sequence": (4, steps, 8),
            "feature_map": (4, steps, 4, 4, 8)}[output]


# TF 2.21 has no float16 CPU kernel for MaxPool3D (GPU has one, and
# mixed_float16 is the GPU policy, see keras_mm.training.strategy): on a
# CPU-only machine the conv3d encoder checks mixed_bfloat16 only.
CONV3D_POLICIES = ("mixed_bfloat16", "mixed_float16") \
    if tf.config.list_physical_devices("GPU") else ("mixed_bfloat16",)


@pytest.mark.parametrize("encoder,temporal,output,fit", VIDEO_CASES)
def test_video_tower(encoder, temporal, output, fit, tmp_path):
    kwargs = dict(VIDEO_SMALL, encoder=encoder, temporal=temporal,
                  output=output)
    run_layer_checks(VideoTower, kwargs, CLIPS, tmp_path=tmp_path,
                     call_kwargs={"mask": FRAME_MASK},
                     expected_output_shape=video_shape(encoder, output),
                     fit=fit, mixed_precision=CONV3D_POLICIES
                     if encoder == "conv3d" else True)


@pytest.mark.parametrize("encoder", ["conv3d", "frames"])
def test_video_padded_frames_do_not_change_output(encoder):
    changed = CLIPS.copy()
    changed[~FRAME_MASK] = RNG.uniform(5.0, 9.0, size=changed[~FRAME_MASK]
                                       .shape)
    # Every temporal stage on "vector"; all outputs with one stage.
    cases = [("mean", "vector"), ("tcn", "vector"), ("gru", "vector"),
             ("transformer", "vector"), ("gru", "sequence"),
             ("transformer", "feature_map")]
    for temporal, output in cases:
        tower = VideoTower(encoder=encoder, temporal=temporal,
                           output=output, **VIDEO_SMALL)
        a = np.asarray(tower(CLIPS, mask=FRAME_MASK))
        b = np.asarray(tower(changed, mask=FRAME_MASK))
        np.testing.assert_allclose(a, b, atol=1e-6,
                                   err_msg=f"{temporal}, {output}")
        # The same comparison fails when the mask is not passed.
        c = np.asarray(tower(changed))
        assert not np.allclose(np.asarray(tower(CLIPS)), c, atol=1e-3)


def test_video_mask_reaches_sequence_output():
    tower = VideoTower(encoder="frames", temporal="gru", output="sequence",
                       **VIDEO_SMALL)
    out = np.asarray(tower(CLIPS, mask=FRAME_MASK))
    assert np.all(out[~FRAME_MASK] == 0)
    np.testing.assert_array_equal(tower.compute_mask(CLIPS, FRAME_MASK),
                                  FRAME_MASK)
    conv = VideoTower(encoder="conv3d", output="sequence", **VIDEO_SMALL)
    np.testing.assert_array_equal(
        conv.compute_mask(CLIPS, FRAME_MASK),
        [[True, True], [True, True], [True, False], [True, False]])
    assert VideoTower(output="vector", **VIDEO_SMALL).compute_mask(
        CLIPS, FRAME_MASK) is None

    # Symbolic: the mask flows to the next layer of a functional model.
    clips = keras.Input((4, 16, 16, 3))
    mask = keras.Input((4,), dtype="bool")
    seq = tower(clips, mask=mask)
    np.testing.assert_array_equal(
        keras.Model([clips, mask], seq._keras_mask)([CLIPS, FRAME_MASK]),
        FRAME_MASK)


def test_video_single_valid_frame_equals_that_frame_alone():
    tower = VideoTower(encoder="frames", temporal="transformer",
                       output="vector", **VIDEO_SMALL)
    first_only = np.array([[True, False, False, False]] * 4)
    padded = np.asarray(tower(CLIPS, mask=first_only))
    alone = np.asarray(tower(CLIPS[:, :1]))
    np.testing.assert_allclose(padded, alone, atol=1e-5)


# -- registry and bad arguments ----------------------------------------------

def test_registered_towers():
    assert TOWERS.get("image") is ImageTower
    assert TOWERS.get("audio") is AudioTower
    assert TOWERS.get("video") is VideoTower
    assert ImageTower.input_dtype == "float32"
    assert AudioTower.input_dtype == "float32"
    assert VideoTower.input_dtype == "float32"


BAD_ARGUMENTS = [
    (ImageTower, {"encoder": "mlp"}, "encoder='mlp' is not one of "
     "'applications', 'cnn', 'resnet', 'vit'"),
    (ImageTower, {"output": "tokens"}, "output='tokens' is not one of "
     "'vector', 'sequence', 'feature_map'"),
    (ImageTower, {"encoder": "resnet", "depth": 50}, "depth=50 is not one "
     "of 18, 34"),
    (ImageTower, {"normalization": "instance"}, "normalization='instance' "
     "is not one of 'batch', 'group', 'layer'"),
    (ImageTower, {"norm_momentum": 1.0}, "norm_momentum=1.0 must be a "
     "number in [0, 1)"),
    (ResNetBackbone, {"normalization": "none"}, "normalization='none' is "
     "not one of"),
    (ImageTower, {"encoder": "applications", "backbone": "vgg16"},
     "backbone='vgg16' is not one of None, 'resnet50'"),
    (ImageTower, {"encoder": "cnn", "backbone": "resnet50"},
     "needs encoder='applications'"),
    (ImageTower, {"encoder": "resnet", "weights": "w.h5"},
     "weights='w.h5' needs a keras.applications backbone"),
    (ImageTower, {"encoder": "applications", "backbone": "resnet50",
                  "weights": ""}, "must be None, 'imagenet'"),
    (ImageTower, {"filters": ()}, "filters must list"),
    (AudioTower, {"encoder": "lstm"}, "encoder='lstm' is not one of 'cnn', "
     "'crnn', 'transformer'"),
    (AudioTower, {"output": "feature_map"}, "output='feature_map' is not "
     "one of 'vector', 'sequence'"),
    (AudioTower, {"frontend": "stft"}, "frontend='stft' is not one of "
     "'log_mel', 'mfcc', None"),
    (AudioTower, {"feature_norm": "global"}, "feature_norm='global' is not "
     "one of 'layer', 'batch', None"),
    (AudioTower, {"sample_rate": 8000, "upper_edge_hertz": 6000.0},
     "upper_edge_hertz <= sample_rate / 2"),
    (VideoTower, {"encoder": "conv2d"}, "encoder='conv2d' is not one of "
     "'conv3d', 'frames'"),
    (VideoTower, {"temporal": "lstm"}, "temporal='lstm' is not one of "
     "'mean', 'tcn', 'gru', 'transformer'"),
    (VideoTower, {"output": "map"}, "output='map' is not one of"),
]


def test_bad_arguments():
    for cls, kwargs, pattern in BAD_ARGUMENTS:
        with pytest.raises(ValueError) as info:
            cls(**kwargs)
        assert pattern in str(info.value), (cls.__name__, kwargs, info.value)


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="32x32 with 3 channels"):
        ImageTower(encoder="applications",
                   backbone="mobilenet_v3_small")(IMAGES)
    with pytest.raises(ValueError, match="patch_size=32 is larger"):
        ImageTower(encoder="vit", patch_size=32)(IMAGES)
    with pytest.raises(ValueError, match="does not take a mask"):
        ImageTower(filters=(4,))(IMAGES, mask=np.ones((4, 16, 16), bool))
    with pytest.raises(ValueError, match="takes a waveform .batch, samples"):
        AudioTower(frontend="log_mel")(SPECTROGRAMS)
    with pytest.raises(ValueError, match="takes a spectrogram"):
        AudioTower(frontend=None)(WAVES)
    with pytest.raises(ValueError, match="shorter than frame_length=256"):
        AudioTower(frontend="log_mel")(WAVES[:, :100])
    with pytest.raises(ValueError, match="needs a fixed clip length"):
        AudioTower(encoder="transformer")(keras.Input((None,)))
    with pytest.raises(ValueError, match="needs a fixed number of frames"):
        VideoTower(temporal="transformer", **{
            k: v for k, v in VIDEO_SMALL.items()})(
                keras.Input((None, 16, 16, 3)))
    with pytest.raises(ValueError, match="takes float clips"):
        VideoTower()(IMAGES)
