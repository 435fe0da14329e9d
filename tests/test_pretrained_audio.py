"""keras-hub audio presets: AudioPresetPreprocessor and AudioPresetTower.

The preset is a tiny random-weight Whisper one written by keras-hub's own
`save_to_preset` (tests/tiny_presets_audio.py); nothing is downloaded. WAV
files are written by Python's `wave` module (tests/media_files.py).
Most tests use 1-s windows (100 feature frames, 50 encoder positions);
the converter-equality and train == serve tests use the real 30-s window
(3000 x 80 features) on a few clips.
"""

import io
import json
import shutil
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf

from fresh_export import serve_in_fresh_process
import tiny_presets_audio
from helpers import run_layer_checks
from media_files import wav_bytes
from keras_mm.data.base_preprocessor import (deserialize_preprocessor,
                                             serialize_preprocessor)
from keras_mm.pretrained.audio_preset_preprocessor import (
    AudioPresetPreprocessor)
from keras_mm.pretrained.audio_preset_tower import AudioPresetTower
from keras_mm.registry import PREPROCESSORS, PRETRAINED_TOWERS

RATE = tiny_presets_audio.SAMPLE_RATE
MELS = tiny_presets_audio.NUM_MELS


@pytest.fixture(scope="session")
def preset(tmp_path_factory):
    return tiny_presets_audio.whisper_preset(
        tmp_path_factory.mktemp("presets") / "whisper")


@pytest.fixture(scope="session")
def preset2(tmp_path_factory):
    """Two encoder blocks, for trainable_blocks."""
    return tiny_presets_audio.whisper_preset(
        tmp_path_factory.mktemp("presets") / "whisper2", seed=1,
        num_layers=2)


def keras_hub():
    import keras_hub as module
    return module


def clip(seconds, seed=0, channels=1, rate=RATE):
    """WAV bytes (Python's `wave`) of a random tone-plus-noise clip."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    tone = 6000 * np.sin(2 * np.pi * (200 + 50 * seed) * t)
    samples = tone[:, None] + rng.normal(0, 1500, (n, channels))
    return wav_bytes(np.clip(samples, -32768, 32767).astype(np.int16),
                     rate=rate)


def python_decode(raw, length):
    """Mono float32 `[length]` of WAV bytes via Python's `wave` (int16 /
    32768, channels averaged, cut / zero-padded at the end)."""
    out = np.zeros(length, np.float32)
    if not raw:
        return out
    with wave.open(io.BytesIO(raw)) as w:
        channels = w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    mono = (pcm.reshape(-1, channels).astype(np.float32)
            * np.float32(1 / 32768)).mean(axis=1)[:length]
    out[:len(mono)] = mono
    return out


def close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol,
                               rtol=0)


def features(seed=0, n=2, frames=100):
    return np.random.default_rng(seed).uniform(
        -1, 1, (n, frames, MELS)).astype("float32")


def encoder_output(backbone, x, decoder_ids=None):
    """keras-hub's own `encoder_sequence_output` of the full backbone."""
    ids = np.zeros((len(x), 1), "int32") if decoder_ids is None else \
        decoder_ids
    out = backbone({"encoder_features": tf.constant(x),
                    "decoder_token_ids": tf.constant(ids),
                    "decoder_padding_mask": tf.ones_like(tf.constant(ids))})
    return np.asarray(out["encoder_sequence_output"])


# -- preprocessor -------------------------------------------------------------

def test_registered_and_config_round_trip_without_the_preset(preset,
                                                             tmp_path):
    assert PREPROCESSORS.get("audio_preset") is AudioPresetPreprocessor
    assert PRETRAINED_TOWERS.get("audio_preset") is AudioPresetTower
    copy = shutil.copytree(preset, tmp_path / "whisper")
    pre = AudioPresetPreprocessor("speech", preset=str(copy), duration=1)
    assert (pre.modality, pre.registered_name) == ("audio", "audio_preset")
    assert pre.batched_parse
    config = pre.get_config()
    json.dumps(config)
    assert config["sample_rate"] == RATE and config["duration"] == 1
    assert AudioPresetPreprocessor.from_config(config).get_config() == config
    raws = tf.constant([clip(0.7), b""])
    want = pre(raws)
    shutil.rmtree(copy)
    data = serialize_preprocessor(pre)
    assert data["type"] == "audio_preset"
    revived = deserialize_preprocessor(json.loads(json.dumps(data)))
    got = revived(raws)
    np.testing.assert_array_equal(got["speech"], want["speech"])
    assert pre.output_shape() == (100, MELS)
    assert tuple(want["speech"].shape) == (2, 100, MELS)
    np.testing.assert_array_equal(want["speech_present"], [1, 0])
    assert not np.any(want["speech"].numpy()[1])       # absent: all zeros
    assert pre.resources()[0].built
    # Under a global mixed policy the features stay float32, the same.
    keras.config.set_dtype_policy("mixed_bfloat16")
    mixed = AudioPresetPreprocessor.from_config(config)(raws)["speech"]
    assert mixed.dtype == tf.float32
    np.testing.assert_array_equal(mixed, want["speech"])


def test_features_equal_keras_hubs_converter_on_the_decoded_samples(preset):
    """30-s window (the converter's own): a short mono clip, a stereo
    clip longer than the window (cut at 30 s) and an empty value."""
    pre = AudioPresetPreprocessor("speech", preset=preset)
    assert pre.output_shape() == (3000, MELS)
    raws = [clip(2.5, seed=1), clip(31, seed=2, channels=2), b""]
    parsed = pre.parse_batch(tf.constant(raws))
    samples = np.stack([python_decode(r, 30 * RATE) for r in raws])
    # The decode is the keras_mm WAV decode: bitwise Python's `wave`.
    np.testing.assert_array_equal(parsed["speech"].numpy(), samples)
    out = pre.transform(parsed)
    converter = keras_hub().layers.AudioConverter.from_preset(preset)
    assert type(converter).__name__ == "WhisperAudioConverter"
    # keras-hub's converter on the decoded samples (its eager path).
    want = np.asarray(converter(samples[:2]))
    assert want.shape == (2, 3000, MELS)
    close(out["speech"][:2], want)
    # And on the raw (unpadded) short clip: keras-hub pads it itself.
    close(out["speech"][0], np.asarray(converter(samples[0][:40000])))
    assert not np.any(out["speech"].numpy()[2])
    # A shorter window equals the converter with that max_audio_length.
    short = AudioPresetPreprocessor("speech", preset=preset, duration=2)
    got = short(tf.constant(raws[:2]))["speech"]
    two = keras_hub().layers.WhisperAudioConverter(max_audio_length=2)
    close(got, np.asarray(two(samples[:2, :2 * RATE])))
    assert tuple(got.shape) == (2, 200, MELS)


def test_a_wav_at_another_rate_is_refused_naming_both_rates(preset):
    pre = AudioPresetPreprocessor("speech", preset=preset, duration=1)
    wrong = clip(0.5, rate=8000)
    for run in (lambda: pre(tf.constant([wrong])),
                lambda: pre.parse(tf.constant(wrong)),
                lambda: next(iter(tf.data.Dataset.from_tensor_slices(
                    [clip(0.5), wrong]).batch(2).map(
                        lambda b: pre.transform(pre.parse_batch(b)))))):
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            run()
        text = str(error.value)
        assert "8000" in text and "16000" in text and "sample rate" in text
    # Argument errors name the class, the argument and the value.
    with pytest.raises(ValueError, match=r"sample_rate=8000 Hz differs .*"
                                         r"16000 Hz"):
        AudioPresetPreprocessor("speech", preset=preset, sample_rate=8000)
    with pytest.raises(ValueError, match=r"duration=31 s is longer than the "
                                         r"converter's window of 30 s"):
        AudioPresetPreprocessor("speech", preset=preset, duration=31)
    with pytest.raises(ValueError, match=r"duration=0\.5 must be a positive "
                                         r"integer"):
        AudioPresetPreprocessor("speech", preset=preset, duration=0.5)
    with pytest.raises(ValueError, match="crop='end' is not one of"):
        AudioPresetPreprocessor("speech", preset=preset, crop="end")
    with pytest.raises(ValueError, match="give preset="):
        AudioPresetPreprocessor("speech")
    with pytest.raises(ValueError, match="AudioPresetPreprocessor.*no such "
                                         "folder"):
        AudioPresetPreprocessor("speech", preset="/nonexistent/whisper")


@pytest.mark.slow  # a fresh process / a full run: CI's slow set
def test_train_equals_serve_in_tf_data_tf_function_and_fresh_savedmodel(
        preset, tmp_path):
    """30-s window: tf.data == tf.function == a SavedModel reloaded in a
    process that imports only tensorflow and tensorflow_text."""
    pre = AudioPresetPreprocessor("speech", preset=preset)
    keras.utils.set_random_seed(3)
    inputs = keras.Input(pre.output_shape(), name="speech")
    tower = AudioPresetTower(preset=preset, dim=8)
    model = keras.Model(inputs, keras.layers.Dense(2)(tower(inputs)))
    # Canonical mono clips (the batched decode), a stereo one (the
    # per-example decode), one longer than the window, and an empty value.
    raws = [clip(1.5, seed=3), clip(4, seed=4, channels=2),
            clip(30.5, seed=5), b""]
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(raws)).batch(
        2).map(lambda b: pre.transform(pre.parse_batch(b)))
    train = {k: np.concatenate([b[k].numpy() for b in dataset])
             for k in ("speech", "speech_present")}
    np.testing.assert_array_equal(train["speech_present"], [1, 1, 1, 0])
    # parse (one example) == parse_batch, bitwise.
    for i in range(len(raws)):
        one = pre.parse(tf.constant(raws[i]))["speech"].numpy()
        batch = pre.parse_batch(tf.constant(raws[i:i + 1]))["speech"]
        np.testing.assert_array_equal(one, batch.numpy()[0])
    # Eager transform == the tf.data one (the same TF ops; the STFT /
    # matmul kernels may round differently by one ulp in a tf.data map).
    eager = pre(tf.constant(raws[:2]))["speech"].numpy()
    close(eager, train["speech"][:2], atol=1e-6)

    def serve(raw):
        out = pre(raw)
        return {"features": out["speech"], "present": out["speech_present"],
                "pred": model(out["speech"], training=False)}

    signature = [tf.TensorSpec([None], tf.string)]
    served_fn = tf.function(serve, input_signature=signature)
    served = served_fn(tf.constant(raws))
    # The serving graph holds the converter's STFT and no py_function.
    graph = served_fn.get_concrete_function().graph.as_graph_def()
    ops = {n.op for n in graph.node} | {
        n.op for f in graph.library.function for n in f.node_def}
    assert "RFFT" in ops and not [op for op in ops if "PyFunc" in op], ops
    close(served["features"], train["speech"], atol=1e-6)
    np.testing.assert_array_equal(served["present"], train["speech_present"])
    in_process = model.predict(train["speech"], verbose=0)
    close(served["pred"], in_process)

    fresh = serve_in_fresh_process(model, pre.resources(), serve, raws,
                                   tmp_path, ".wav")
    close(fresh["features"], train["speech"])
    np.testing.assert_array_equal(fresh["present"], train["speech_present"])
    close(fresh["pred"], in_process)


# -- tower: equality with keras-hub -------------------------------------------

def test_tower_equals_the_keras_hub_backbone_encoder(preset):
    backbone = keras_hub().models.Backbone.from_preset(preset)
    x = features(1, n=3)
    want = encoder_output(backbone, x)
    assert want.shape == (3, 50, tiny_presets_audio.HIDDEN)
    # The backbone's encoder output does not depend on the decoder ids.
    other = encoder_output(backbone, x, np.full((3, 5), 7, "int32"))
    np.testing.assert_array_equal(other, want)
    sequence = AudioPresetTower(preset=preset, output="sequence")
    close(sequence(x), want)
    close(AudioPresetTower(preset=preset)(x), want.mean(axis=1))
    close(AudioPresetTower(preset=preset, pooling="max")(x),
          want.max(axis=1))
    # The full 30-s window: 3000 frames -> 1500 positions.
    long = features(2, n=1, frames=3000)
    got = sequence(long)
    assert tuple(got.shape) == (1, 1500, tiny_presets_audio.HIDDEN)
    close(got, encoder_output(backbone, long))
    # An odd number of frames: ceil(frames / 2) positions.
    odd = features(3, n=2, frames=37)
    close(sequence(odd), encoder_output(backbone, odd))
    assert sequence.compute_output_shape((None, 37, MELS)) == \
        (None, 19, tiny_presets_audio.HIDDEN)


def test_tower_holds_the_encoder_only(preset):
    tower = AudioPresetTower(preset=preset, dim=4, name="speech_tower")
    tower.build((None, 100, MELS))
    paths = [w.path for w in tower.weights]
    assert not [p for p in paths if "decoder" in p], paths
    assert all(p.startswith("speech_tower/") for p in paths), paths
    backbone = keras_hub().models.Backbone.from_preset(preset)
    encoder = sum(w.numpy().size for w in backbone.weights
                  if "decoder" not in w.path)
    assert tower.count_params() == encoder + tower.projection.count_params()
    assert tower.count_params() < backbone.count_params()


def test_tower_from_a_backbone_instance_or_config(preset):
    backbone = keras_hub().models.Backbone.from_preset(preset)
    x = features(4)
    from_instance = AudioPresetTower(backbone=backbone, output="sequence")
    close(from_instance(x), encoder_output(backbone, x))
    config = from_instance.get_config()
    json.dumps(config)
    assert config["preset"] is None
    assert config["backbone"]["registered_name"] == \
        "keras_hub>WhisperBackbone"
    rebuilt = AudioPresetTower.from_config(config)
    assert rebuilt.get_config() == config
    assert [w.shape for w in rebuilt.weights] == \
        [w.shape for w in from_instance.weights]


def test_sequence_mask_in_a_functional_model(preset):
    tower = AudioPresetTower(preset=preset, output="sequence", dim=4)
    x = features(5, frames=41)
    mask = tower.compute_mask(tf.constant(x))
    assert mask.dtype == tf.bool and tuple(mask.shape) == (2, 21)
    assert bool(tf.reduce_all(mask))
    assert AudioPresetTower(preset=preset).compute_mask(x) is None
    inputs = keras.Input((100, MELS))
    out = tower(inputs)
    assert tuple(out.shape) == (None, 50, 4)
    pooled = keras.layers.GlobalAveragePooling1D()(out)   # takes the mask
    model = keras.Model(inputs, pooled)
    assert tuple(model(features(6)).shape) == (2, 4)


def test_tower_errors(preset):
    with pytest.raises(ValueError, match="give preset="):
        AudioPresetTower()
    with pytest.raises(ValueError, match="output='feature_map' is not one"):
        AudioPresetTower(preset=preset, output="feature_map")
    with pytest.raises(ValueError, match="pooling='cls' is not one"):
        AudioPresetTower(preset=preset, pooling="cls")
    with pytest.raises(ValueError, match="trainable_blocks=2 but .* has 1 "
                                         "encoder blocks"):
        AudioPresetTower(preset=preset, trainable_blocks=2)
    with pytest.raises(ValueError, match="choose one"):
        AudioPresetTower(preset=preset, trainable_blocks=0, lora_rank=2)
    with pytest.raises(ValueError, match="lora_rank=0 must be a positive"):
        AudioPresetTower(preset=preset, lora_rank=0)
    with pytest.raises(ValueError, match="not a keras_hub>WhisperBackbone"):
        AudioPresetTower(backbone={"registered_name": "keras_hub>"
                                   "BertBackbone", "config": {}})
    with pytest.raises(ValueError, match="must be a keras-hub "
                                         "WhisperBackbone"):
        AudioPresetTower(backbone="whisper")
    tower = AudioPresetTower(preset=preset)
    with pytest.raises(ValueError, match=r"log-mel features \[batch, frames,"
                                         r" 80\].*got shape"):
        tower(features(0)[..., :40])
    with pytest.raises(ValueError, match="3002 feature frames exceed the "
                                         "3000"):
        tower.compute_output_shape((None, 3002, MELS))
    with pytest.raises(ValueError, match="does not take a mask"):
        tower(features(0), mask=tf.ones((2, 100), tf.bool))


def test_builder_spec_with_an_audio_preset_input(preset):
    import keras_mm

    spec = {"inputs": {"speech": {
                "modality": "audio", "preset": preset, "shape": [100, MELS],
                "tower": {"dim": 8, "trainable_blocks": 0}}},
            "heads": {"label": {"type": "classification", "num_classes": 3}}}
    model = keras_mm.build_model(spec)
    tower = model.get_layer("speech_tower")
    assert isinstance(tower, AudioPresetTower)
    assert tower.trainable_blocks == 0 and tower.dim == 8
    # Every variable under the tower's name (learning-rate multipliers).
    assert all(w.path.startswith("speech_tower/") for w in tower.weights)
    out = model({"speech": features(10)})["label"]
    assert tuple(out.shape) == (2, 3)


# -- fine-tuning --------------------------------------------------------------

def train(tower, steps=1, seed=0):
    """`steps` Adam steps of tower -> Dense(1) on 1-s features; which of
    the tower's weights moved (by path), and whether the head moved."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((100, MELS))
    x = tower(inputs)
    if len(x.shape) == 3:
        x = keras.ops.mean(x, axis=1)
    head = keras.layers.Dense(1, name="head")
    model = keras.Model(inputs, head(x))
    # Eager `fit` (the same train step, without tracing the encoder).
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  run_eagerly=True)
    x = features(seed, n=4)
    y = np.random.default_rng(seed).normal(size=(4, 1)).astype("float32")
    before = [np.array(w) for w in tower.weights]
    head_before = [np.array(w) for w in head.weights]
    model.fit(x, y, batch_size=4, epochs=steps, verbose=0)
    moved_head = any(not np.array_equal(a, np.array(b))
                     for a, b in zip(head_before, head.weights))
    moved = {w.path: not np.array_equal(a, np.array(w))
             for w, a in zip(tower.weights, before)}
    return moved, moved_head


POSITIONS = "encoder_position_embedding/"


def test_full_training_moves_everything_but_the_position_table(preset):
    tower = AudioPresetTower(preset=preset, dim=4)
    moved, moved_head = train(tower)
    assert moved_head
    for path, did in moved.items():
        assert did == (POSITIONS not in path), path
    # A freeze / unfreeze cycle keeps the position table frozen.
    count = len(tower.trainable_weights)
    tower.trainable = False
    assert tower.trainable_weights == []
    tower.trainable = True
    assert len(tower.trainable_weights) == count
    assert not [w for w in tower.trainable_weights if POSITIONS in w.path]


def test_frozen_tower_is_bitwise_unchanged_by_training(preset):
    tower = AudioPresetTower(preset=preset, dim=4, trainable=False)
    moved, moved_head = train(tower)
    assert moved_head
    assert tower.trainable_weights == []
    assert not any(moved.values()), [p for p, m in moved.items() if m]


def test_trainable_blocks_moves_only_the_last_blocks(preset2):
    tower = AudioPresetTower(preset=preset2, trainable_blocks=1, dim=4)
    moved, _ = train(tower)
    frozen = ("encoder_token_embedding_conv_layer_", POSITIONS,
              "transformer_encoder_layer_0/")
    trained = ("transformer_encoder_layer_1/", "encoder_layer_norm/",
               "/projection/")
    for path, did in moved.items():
        in_frozen = any(s in path for s in frozen)
        assert in_frozen != any(s in path for s in trained), path
        assert did != in_frozen, (path, did)
    ids = [id(w) for w in tower.trainable_weights]
    tower.trainable = False
    assert tower.trainable_weights == []
    tower.trainable = True
    assert [id(w) for w in tower.trainable_weights] == ids
    # 0: only the final norm and the projection.
    zero = AudioPresetTower(preset=preset2, trainable_blocks=0, dim=4)
    zero.build((None, 100, MELS))
    assert {w.path.split("/")[-2] for w in zero.trainable_weights} == \
        {"encoder_layer_norm", "projection"}


def test_lora_trains_only_the_adapters(preset):
    tower = AudioPresetTower(preset=preset, lora_rank=2, dim=4)
    tower.build((None, 100, MELS))
    trainable = [w.path for w in tower.trainable_weights]
    assert all("lora_kernel" in p or "/projection/" in p for p in trainable)
    # query and value of the one encoder block, a and b each.
    assert sum("lora_kernel" in p for p in trainable) == 4
    lora = sum(int(np.prod(w.shape)) for w in tower.trainable_weights
               if "lora" in w.path)
    assert sum(int(np.prod(w.shape)) for w in tower.trainable_weights) == \
        lora + tower.projection.count_params()
    assert lora < tower.count_params() / 10
    moved, _ = train(tower, steps=2)
    for path, did in moved.items():
        assert did == ("lora_kernel" in path or "/projection/" in path), path
    ids = [id(w) for w in tower.trainable_weights]
    tower.trainable = False
    tower.trainable = True
    assert [id(w) for w in tower.trainable_weights] == ids


# -- saving -------------------------------------------------------------------

def test_keras_file_reloads_without_the_preset_folder(preset2, tmp_path):
    copy = shutil.copytree(preset2, tmp_path / "whisper")
    inputs = keras.Input((100, MELS))
    tower = AudioPresetTower(preset=str(copy), output="sequence", dim=8,
                             trainable_blocks=1, name="speech_tower")
    model = keras.Model(inputs, tower(inputs))
    x = features(7)
    want = model.predict(x, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    shutil.rmtree(copy)
    loaded = keras.saving.load_model(path)
    close(loaded.predict(x, verbose=0), want, atol=1e-6)
    reloaded = loaded.get_layer("speech_tower")
    assert [w.trainable for w in reloaded.weights] == \
        [w.trainable for w in tower.weights]
    assert 0 < len(reloaded.trainable_weights) < len(reloaded.weights)
    assert reloaded.get_config()["backbone"] == \
        tower.get_config()["backbone"]


def test_layer_checks_sequence(preset, tmp_path):
    # Config round trip, eager / symbolic shapes, a gradient to every
    # trainable weight, .keras reload, mixed_bfloat16 sub-layers; the
    # traced fit step is in the slow variant below.
    run_layer_checks(
        AudioPresetTower, {"preset": preset, "output": "sequence", "dim": 8},
        features(8, n=4), tmp_path=tmp_path,
        expected_output_shape=(4, 50, 8), fit=False,
        mixed_precision=("mixed_bfloat16",))


@pytest.mark.slow
def test_layer_checks_with_an_xla_fit_step(preset, tmp_path):
    run_layer_checks(
        AudioPresetTower, {"preset": preset, "dim": 8},
        features(9, n=4), tmp_path=tmp_path, expected_output_shape=(4, 8),
        fit_target=np.zeros((4, 8), "float32"), fit_loss="mse", xla=True,
        mixed_precision=("mixed_bfloat16", "mixed_float16"))
