"""`keras_mm.build_model` / `compile_model`: specs, training, saving, masks,
multi-task heads and error messages."""

import copy
import io

import numpy as np
import pytest
import keras

import keras_mm
from keras_mm.builder import (build_unimodal_spec, compile_model,
                              complete_spec, model_spec, normalize_spec)
from keras_mm.builder.spec import constructor_arguments, load_registries
from keras_mm.errors import ConfigError

TOWERS, FUSIONS, HEADS = load_registries()

# The nine fusion types of the modelling issue. Each must be registered: a
# missing registration fails (a ConfigError from the spec), never skips.
FUSION_TYPES = sorted(set(FUSIONS.names()) | {
    "attention", "concat", "cross_attention", "film", "gated",
    "joint_transformer", "low_rank", "tensor", "weighted"})
# XLA-compiled builder fits: one vector and one sequence fusion. Every fusion
# layer's own battery (tests/helpers.run_layer_checks) already XLA-fits it;
# here the other types are trained without XLA.
XLA_FUSION_TYPES = ("gated", "joint_transformer")

BATCH = 8


def tiny_image():
    return {"modality": "image", "shape": [8, 8, 1],
            "tower": {"encoder": "cnn", "dim": 8, "filters": [4]}}


def tiny_audio():
    return {"modality": "audio", "shape": [512],
            "tower": {"encoder": "cnn", "dim": 8, "filters": [4],
                      "sample_rate": 8000, "frame_length": 64,
                      "frame_step": 32, "num_mel_bins": 8}}


def tiny_text():
    tower = {"encoder": "bag", "dim": 8, "embedding_dim": 8}
    if "text" in TOWERS:
        arguments = constructor_arguments(TOWERS.get("text"))
        tower = {k: v for k, v in tower.items() if k in arguments}
    return {"modality": "text", "shape": [6], "vocab_size": 30,
            "tower": tower}


def tiny_video(mask=True):
    return {"modality": "video", "shape": [4, 8, 8, 1], "mask": mask,
            "tower": {"encoder": "frames", "temporal": "mean", "dim": 8,
                      "filters": [4]}}


def tiny_fusion(fusion_type, **extra):
    """Small settings for any fusion type (only the arguments it has)."""
    candidates = {"units": 8, "num_heads": 2, "num_layers": 1,
                  "intermediate_dim": 8, "rank": 2, "dropout": 0.0,
                  "hidden_units": 8, "projection_dim": 4}
    arguments = constructor_arguments(FUSIONS.get(fusion_type))
    fusion = {k: v for k, v in candidates.items() if k in arguments}
    if fusion_type == "film":
        fusion["target"] = "image"
    fusion.update(extra)
    return {"type": fusion_type, **fusion}


def three_modality_spec(fusion_type, presence_mask=False):
    return {
        "inputs": {"image": tiny_image(), "audio": tiny_audio(),
                   "text": tiny_text()},
        "fusion": tiny_fusion(fusion_type, presence_mask=presence_mask),
        "heads": {"label": {"type": "classification", "num_classes": 3}},
    }


def fake_inputs(model, seed=0, batch=BATCH):
    """Random inputs for every model input (text ids >= 1, masks True)."""
    rng = np.random.default_rng(seed)
    data = {}
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        shape = (batch,) + tuple(tensor.shape[1:])
        if tensor.dtype == "bool":
            data[name] = np.ones(shape, bool)
        elif "int" in str(tensor.dtype):
            data[name] = rng.integers(1, 10, shape).astype("int32")
        elif name == "presence":
            data[name] = np.ones(shape, "float32")
        else:
            data[name] = rng.normal(size=shape).astype("float32")
    return data


def fast_optimizer(learning_rate=0.01):
    """SGD with momentum: Keras' TF-backend Adam adds ~4x more graph ops to
    the train step (slow tracing on 2 cores); these tests are about the
    model, not the optimizer."""
    return keras.optimizers.SGD(learning_rate, momentum=0.9)


def input_names(model):
    return sorted(t.name.split(":")[0] for t in model.inputs)


# -- the issue's example spec -------------------------------------------------

ISSUE_SPEC = {
    "inputs": {
        "image": {"modality": "image", "shape": [28, 28, 1],
                  "tower": {"encoder": "cnn"}},
        "audio": {"modality": "audio", "shape": [8000],
                  "tower": {"encoder": "cnn"}},
        "text": {"modality": "text", "shape": [16], "vocab_size": 1000,
                 "tower": {"encoder": "bag"}},
    },
    "fusion": {"type": "gated"},
    "heads": {"label": {"type": "classification", "num_classes": 10}},
}


@pytest.fixture(scope="module")
def issue_model():
    return keras_mm.build_model(ISSUE_SPEC)


def test_issue_spec_inputs_and_outputs(issue_model):
    model = issue_model
    # Two or more inputs: a presence input by default (fusion.presence_mask).
    assert input_names(model) == ["audio", "image", "presence", "text"]
    by_name = {t.name.split(":")[0]: t for t in model.inputs}
    assert tuple(by_name["presence"].shape) == (None, 3)
    assert tuple(by_name["image"].shape) == (None, 28, 28, 1)
    assert tuple(by_name["audio"].shape) == (None, 8000)
    assert tuple(by_name["text"].shape) == (None, 16)
    assert by_name["text"].dtype == "int32"
    assert by_name["image"].dtype == "float32"
    assert model.output_names == ["label"]
    assert isinstance(model.output, dict)
    assert tuple(model.output["label"].shape) == (None, 10)
    for name in ("image_tower", "audio_tower", "text_tower", "fusion",
                 "label"):
        model.get_layer(name)
    assert type(model.get_layer("fusion")).__name__ == "GatedFusion"
    # Presence-mask columns follow the spec's input order.
    assert model.get_layer("fusion").modalities == ["image", "audio",
                                                    "text"]


def test_issue_spec_trains_a_step(issue_model):
    model = compile_model(issue_model, optimizer=fast_optimizer(0.01),
                          jit_compile=False)
    x = fake_inputs(model, batch=4)
    y = {"label": np.arange(4) % 10}
    before = [w.numpy().copy() for w in model.trainable_weights]
    assert_loss_went_down(model.fit(x, y, epochs=3, verbose=0))
    after = model.trainable_weights
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, after))
    probabilities = model.predict(x, verbose=0)["label"]
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_issue_spec_saves_and_loads_without_custom_objects(issue_model,
                                                           tmp_path):
    model = issue_model
    x = fake_inputs(model, seed=3, batch=4)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["label"],
                               model.predict(x, verbose=0)["label"],
                               atol=1e-6)
    # The spec travels with the file.
    assert model_spec(loaded) == model_spec(model)
    assert model_spec(loaded)["inputs"]["text"]["vocab_size"] == 1000
    assert input_names(loaded) == input_names(model)


def test_summary_shows_blocks(issue_model):
    out = io.StringIO()
    issue_model.summary(line_length=160,
                        print_fn=lambda line, **_: out.write(line + "\n"))
    text = out.getvalue()
    for block in ("image_tower", "audio_tower", "text_tower", "fusion",
                  "label"):
        assert block in text
    assert "ImageTower" in text and "GatedFusion" in text
    assert "ClassificationHead" in text


# -- every fusion type --------------------------------------------------------


def assert_loss_went_down(history):
    losses = history.history["loss"]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses


def eager_losses(model, x, y, steps=4, learning_rate=0.05):
    """Plain eager SGD steps on the label head: real training without
    tracing a train function (which costs more than the steps here)."""
    import tensorflow as tf
    optimizer = fast_optimizer(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    losses = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = loss_fn(y["label"], model(x, training=True)["label"])
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply(gradients, model.trainable_weights)
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("fusion_type", FUSION_TYPES)
def test_three_modalities_train(fusion_type):
    """Each fusion type builds into a three-input model with a presence
    input, and training lowers the loss: `model.fit` with XLA for one vector
    and one sequence fusion, eager steps for the others (each fusion
    layer's own battery XLA-fits it already)."""
    keras.utils.set_random_seed(0)
    spec = three_modality_spec(fusion_type, presence_mask=True)
    model = keras_mm.build_model(spec)
    assert input_names(model) == ["audio", "image", "presence", "text"]
    x = fake_inputs(model)
    y = {"label": np.arange(BATCH) % 3}
    if fusion_type not in XLA_FUSION_TYPES:
        # TensorFusion normalizes each input (default): the gradients of its
        # outer product of unit-scale factors are ~20x larger at
        # initialization, so plain SGD needs a smaller step (Adam, the
        # recipes' optimizer, does not care about the scale).
        rate = 0.002 if fusion_type == "tensor" else 0.05
        losses = eager_losses(model, x, y, learning_rate=rate)
        assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
        return
    compile_model(model, optimizer=fast_optimizer(0.05), jit_compile=True)
    assert model.jit_compile is True
    assert_loss_went_down(model.fit(x, y, batch_size=BATCH, epochs=6,
                                    verbose=0))


def test_xla_fits_cover_a_vector_and_a_sequence_fusion():
    kinds = {getattr(FUSIONS.get(t), "input_kind", "vector")
             for t in XLA_FUSION_TYPES}
    assert kinds == {"vector", "sequence"}


# -- masking ------------------------------------------------------------------


@pytest.mark.parametrize("fusion_type", ["gated", "joint_transformer"])
def test_absent_modality_changes_nothing(fusion_type):
    spec = three_modality_spec(fusion_type, presence_mask=True)
    model = keras_mm.build_model(spec)
    x = fake_inputs(model)
    # Column order of `presence` = spec input order: image, audio, text.
    presence = np.ones((BATCH, 3), "float32")
    presence[: BATCH // 2, 1] = 0.0  # audio absent in the first half
    x["presence"] = presence
    changed = dict(x)
    changed["audio"] = x["audio"] * -3.0 + 1.0
    out = model.predict(x, verbose=0)["label"]
    out_changed = model.predict(changed, verbose=0)["label"]
    half = BATCH // 2
    np.testing.assert_allclose(out_changed[:half], out[:half], atol=1e-6)
    # The same change does move the rows where audio is present, and all
    # rows when the presence mask says present: the test can fail.
    assert np.abs(out_changed[half:] - out[half:]).max() > 1e-5
    x["presence"] = np.ones_like(presence)
    changed["presence"] = x["presence"]
    assert np.abs(model.predict(changed, verbose=0)["label"][:half]
                  - model.predict(x, verbose=0)["label"][:half]).max() > 1e-5


@pytest.mark.parametrize("fusion_type", ["concat", "joint_transformer"])
def test_padded_frames_change_nothing(fusion_type):
    """`mask: true` adds `<name>_mask`; padded frames (False) are ignored,
    by the tower (vector fusions) or by the fusion (sequence fusions, which
    get the towers' token masks)."""
    spec = {"inputs": {"image": tiny_image(), "clip": tiny_video()},
            "fusion": tiny_fusion(fusion_type, presence_mask=False),
            "heads": {"label": {"type": "classification",
                                "num_classes": 3}}}
    model = keras_mm.build_model(spec)
    assert input_names(model) == ["clip", "clip_mask", "image"]
    by_name = {t.name.split(":")[0]: t for t in model.inputs}
    assert by_name["clip_mask"].dtype == "bool"
    assert tuple(by_name["clip_mask"].shape) == (None, 4)
    x = fake_inputs(model)
    mask = np.ones((BATCH, 4), bool)
    mask[:, 2:] = False  # the last two frames are padding
    x["clip_mask"] = mask
    changed = dict(x)
    changed["clip"] = x["clip"].copy()
    changed["clip"][:, 2:] = 5.0
    out = model.predict(x, verbose=0)["label"]
    np.testing.assert_allclose(model.predict(changed, verbose=0)["label"],
                               out, atol=1e-6)
    # Unmasked, the same frames do change the output.
    x["clip_mask"] = changed["clip_mask"] = np.ones((BATCH, 4), bool)
    assert np.abs(model.predict(changed, verbose=0)["label"]
                  - model.predict(x, verbose=0)["label"]).max() > 1e-5


def test_mixed_bfloat16_outputs_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    spec = {"inputs": {"image": tiny_image(), "clip": tiny_video()},
            "fusion": tiny_fusion("film", presence_mask=True),
            "trunk": {"hidden_units": [8]},
            "heads": {"label": {"type": "classification", "num_classes": 3},
                      "score": {"type": "regression"}}}
    model = keras_mm.build_model(spec)
    assert model.get_layer("fusion").compute_dtype == "bfloat16"
    out = model(fake_inputs(model, batch=2))
    assert out["label"].dtype == "float32"
    assert out["score"].dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out["label"])))


# -- multi-task ---------------------------------------------------------------


def test_multi_task_heads_have_own_loss_weights_and_metrics():
    spec = {
        "inputs": {"image": tiny_image(), "audio": tiny_audio()},
        "fusion": tiny_fusion("concat"),
        "trunk": {"hidden_units": [8], "dropout": 0.0},
        "heads": {
            "label": {"type": "classification", "num_classes": 3,
                      "class_names": ["a", "b", "c"], "loss_weight": 2.0},
            "score": {"type": "regression", "loss": "mae",
                      "loss_weight": 0.5, "metrics": ["mse"]},
        },
    }
    model = keras_mm.build_model(spec)
    assert sorted(model.output_names) == ["label", "score"]
    assert model.get_layer("trunk").name == "trunk"
    compile_model(model, optimizer=fast_optimizer(), jit_compile=False)
    x = fake_inputs(model)
    y = {"label": np.arange(BATCH) % 3,
         "score": np.linspace(-1, 1, BATCH).astype("float32")[:, None]}
    history = model.fit(x, y, epochs=1, verbose=0).history
    assert {"label_accuracy", "score_mse", "label_loss",
            "score_loss"} <= set(history)
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    out = model.predict(x, verbose=0)
    label_loss = float(keras.losses.SparseCategoricalCrossentropy()(
        y["label"], out["label"]))
    score_loss = float(np.mean(np.abs(out["score"] - y["score"])))
    np.testing.assert_allclose(result["label_loss"], label_loss, rtol=1e-4)
    np.testing.assert_allclose(result["score_loss"], score_loss, rtol=1e-4)
    np.testing.assert_allclose(result["loss"],
                               2.0 * label_loss + 0.5 * score_loss,
                               rtol=1e-4)
    np.testing.assert_allclose(
        result["score_mse"], np.mean((out["score"] - y["score"]) ** 2),
        rtol=1e-4)
    assert model.get_layer("label").class_names == ["a", "b", "c"]


# -- single-modality baselines ------------------------------------------------


def test_unimodal_spec_builds_single_input_model():
    spec = three_modality_spec("joint_transformer", presence_mask=True)
    single = build_unimodal_spec(spec, "audio")
    assert list(single["inputs"]) == ["audio"]
    assert single["fusion"] is None
    assert single["heads"] == normalize_spec(spec)["heads"]
    model = keras_mm.build_model(single)
    assert input_names(model) == ["audio"]
    assert all(layer.name != "fusion" for layer in model.layers)
    # The tower gives a vector although the fused model used sequences.
    assert model.get_layer("audio_tower").output_mode == "vector"
    compile_model(model, optimizer=fast_optimizer(), jit_compile=False)
    x = fake_inputs(model, batch=4)
    assert_loss_went_down(model.fit(x, {"label": np.arange(4) % 3},
                                    epochs=3, verbose=0))
    with pytest.raises(ConfigError, match="inputs: 'video' is not one of "
                                          "image, audio, text"):
        build_unimodal_spec(spec, "video")


def test_tower_output_follows_fusion_kind():
    spec = three_modality_spec("joint_transformer")
    model = keras_mm.build_model(spec)
    assert model.get_layer("text_tower").output_mode == "sequence"
    spec["fusion"] = tiny_fusion("film")
    model = keras_mm.build_model(spec)
    assert model.get_layer("image_tower").output_mode == "feature_map"
    assert model.get_layer("audio_tower").output_mode == "vector"
    # The spec's own choice wins.
    spec["inputs"]["audio"]["tower"]["output"] = "sequence"
    model = keras_mm.build_model(spec)
    assert model.get_layer("audio_tower").output_mode == "sequence"


def test_tabular_and_sensor_inputs():
    spec = {"inputs": {
        "tab": {"modality": "tabular", "numeric": 3, "categorical": [5, 4]},
        "motion": {"modality": "sensor", "shape": [10, 3], "mask": True,
                   "tower": {"encoder": "gru", "dim": 8}}},
        "fusion": {"type": "concat", "presence_mask": True},
        "heads": {"flag": {"type": "binary"}}}
    model = keras_mm.build_model(spec)
    assert input_names(model) == ["motion", "motion_mask", "presence",
                                  "tab_categorical", "tab_numeric"]
    by_name = {t.name.split(":")[0]: t for t in model.inputs}
    assert by_name["tab_categorical"].dtype == "int32"
    assert tuple(by_name["tab_numeric"].shape) == (None, 3)
    compile_model(model, optimizer=fast_optimizer(), jit_compile=False)
    x = fake_inputs(model, batch=4)
    x["tab_categorical"] = np.array([[0, 1], [4, 3], [2, 0], [1, 1]],
                                    "int32")
    assert_loss_went_down(model.fit(x, {"flag": np.array([0, 1, 0, 1])},
                                    epochs=3, verbose=0))


def test_complete_spec_from_preprocessors():
    from keras_mm.data import AudioPreprocessor, ImagePreprocessor
    spec = {"inputs": {
        "image": {"modality": "image", "tower": {"encoder": "cnn"}},
        "audio": {"modality": "audio",
                  "preprocess": {"features": "log_mel"},
                  "tower": {"encoder": "cnn"}}},
        "fusion": {"type": "film", "target": "image"},
        "heads": {"label": {"type": "classification", "num_classes": 2}}}
    with pytest.raises(ConfigError, match="inputs.image.shape: missing"):
        keras_mm.build_model(spec)
    pre = {"image": ImagePreprocessor("image", size=(12, 10), channels=1),
           "audio": AudioPreprocessor("audio", sample_rate=8000,
                                      duration=0.25, features="log_mel")}
    full = complete_spec(spec, pre)
    assert full["inputs"]["image"]["shape"] == [12, 10, 1]
    assert full["inputs"]["audio"]["shape"] == list(
        pre["audio"].output_shape())
    assert full["inputs"]["audio"]["tower"]["frontend"] is None
    spec["inputs"]["image"]["shape"] = [28, 28, 1]
    with pytest.raises(ConfigError, match=r"inputs.image.shape: \[28, 28, 1\]"
                                          r" differs from \[12, 10, 1\]"):
        complete_spec(spec, pre)


# -- errors -------------------------------------------------------------------


def _set(spec, path, value):
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


_DELETE = object()


@pytest.mark.parametrize("path, value, key_path, expected", [
    ("inputs.image.tower.encodr", "cnn", "inputs.image.tower.encodr",
     "unknown key 'encodr' for ImageTower; allowed keys are backbone, "
     "base_filters, depth, dim, dropout, encoder, filters"),
    ("inputs.image.tower.encoder", "cnnn", "inputs.image.tower.encoder",
     "ImageTower: encoder='cnnn' is not one of 'applications', 'cnn', "
     "'resnet', 'vit'"),
    ("fusion.type", "concatt", "fusion.type",
     "'concatt' is not one of " + ", ".join(FUSIONS.names())),
    ("fusion.unitz", 8, "fusion.unitz",
     "unknown key 'unitz' for FiLMFusion; allowed keys are "),
    ("fusion.target", "audio", "fusion.target",
     "'audio' is an input of modality audio; the target gives the feature "
     "map, so it must be an image or video input: one of image"),
    ("fusion.presence_mask", "yes", "fusion.presence_mask",
     "'yes' is not one of true, false"),
    # Strict types: 1 is not true.
    ("fusion.presence_mask", 1, "fusion.presence_mask",
     "1 is not one of true, false"),
    ("trunk", {"hidden_units": [8, 0]}, "trunk.hidden_units[1]",
     "0 is not an integer >= 1"),
    ("inputs.audio.mask", True, "inputs.audio.mask",
     "unknown key 'mask'; allowed keys are modality, preprocess, shape, "
     "source, tower"),
    ("heads.label.type", "softmax", "heads.label.type",
     "'softmax' is not one of " + ", ".join(HEADS.names())),
    ("heads.label.num_classes", _DELETE, "heads.label.num_classes",
     "missing required key 'num_classes' (ClassificationHead needs it)"),
    ("heads.label.loss", "hinge_loss_x", "heads.label.loss",
     "'hinge_loss_x' is not a Keras loss name"),
    ("heads.label.metrics", ["acuracy"], "heads.label.metrics[0]",
     "'acuracy' is not a Keras metric name"),
    ("inputs.image.modalty", "image", "inputs.image.modalty",
     "unknown key 'modalty'; allowed keys are modality, preprocess, shape, "
     "source, tower"),
    ("inputs.image.modality", "picture", "inputs.image.modality",
     "'picture' is not one of " + ", ".join(TOWERS.names())),
    ("inputs.image.shape", [8, 8], "inputs.image.shape",
     "[8, 8] has 2 axes; a image input has 3 (without the batch axis)"),
    ("inputs.image.shape", _DELETE, "inputs.image.shape",
     "missing required key 'shape'"),
    ("inputs.image.mask", True, "inputs.image.mask",
     "unknown key 'mask'; allowed keys are"),
    ("inputs.audio.tower.frontend", None, "inputs.audio.tower.frontend",
     "null takes a spectrogram [frames, bins], but inputs.audio.shape=[512] "
     "is a waveform"),
    ("inputs.audio", {"modality": "audio", "shape": [15, 8],
                      "preprocess": {"features": "log_mel"},
                      "tower": {"frontend": "log_mel"}},
     "inputs.audio.tower.frontend", "'log_mel' computes features that "
     "inputs.audio.preprocess.features='log_mel' already computes"),
    ("trunk", {"units": [8]}, "trunk.units",
     "unknown key 'units'; allowed keys are activation, dropout, "
     "hidden_units"),
    ("trunk", {"hidden_units": [8], "activation": "relux"},
     "trunk.activation", "'relux' is not a Keras activation"),
    ("fusoin", {}, "fusoin",
     "unknown key 'fusoin'; allowed keys are fusion, heads, inputs, name, "
     "trunk"),
    ("heads", _DELETE, "heads", "missing required key 'heads'"),
    ("heads.image", {"type": "binary"}, "heads.image",
     "the name 'image' is also used by inputs.image; rename one of them"),
    ("inputs.image.tower.output", "sequence", "inputs.image.tower.output",
     "'sequence' is not one of feature_map"),
])
def test_spec_errors_name_key_path_and_allowed(path, value, key_path,
                                               expected):
    spec = {"inputs": {"image": tiny_image(), "audio": tiny_audio()},
            "fusion": tiny_fusion("film"),
            "heads": {"label": {"type": "classification",
                                "num_classes": 3}}}
    spec = copy.deepcopy(spec)
    _set(spec, path, value)
    with pytest.raises(ConfigError) as info:
        keras_mm.build_model(spec)
    assert info.value.key_path == key_path, str(info.value)
    assert str(info.value).startswith(f"{key_path}: "), str(info.value)
    assert expected in str(info.value), str(info.value)


def test_vector_fusion_rejects_sequence_towers_and_builder_owned_args():
    spec = three_modality_spec("gated")
    spec["inputs"]["text"]["tower"]["output"] = "sequence"
    with pytest.raises(ConfigError) as info:
        keras_mm.build_model(spec)
    assert str(info.value).startswith(
        "inputs.text.tower.output: 'sequence' is not one of vector (fusion "
        "'gated' takes vector inputs)")
    spec = three_modality_spec("gated")
    spec["inputs"]["text"]["tower"]["sequence_length"] = 6
    with pytest.raises(ConfigError, match="inputs.text.tower.sequence_length"
                                          ": 'sequence_length' is set by the "
                                          "builder from inputs.text.shape"):
        keras_mm.build_model(spec)


def test_layer_build_errors_name_the_spec_key():
    spec = {"inputs": {"image": tiny_image()},
            "fusion": tiny_fusion("cross_attention"),
            "heads": {"label": {"type": "classification",
                                "num_classes": 3}}}
    with pytest.raises(ConfigError) as info:
        keras_mm.build_model(spec)
    assert info.value.key_path == "fusion"
    assert "CrossAttentionFusion" in str(info.value)
    with pytest.raises(ConfigError, match="fusion: missing required key "
                                          "'fusion' \\(2 inputs need"):
        keras_mm.build_model({"inputs": {"image": tiny_image(),
                                         "audio": tiny_audio()},
                              "heads": spec["heads"]})


def test_import_keras_mm_is_light():
    import subprocess
    import sys
    code = ("import sys, keras_mm; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True, cwd=keras_mm.__path__[0]
                         + "/..").stdout.split()
    assert out == ["False", "False"]
    assert callable(keras_mm.build_model)
    with pytest.raises(AttributeError):
        keras_mm.not_a_function  # noqa: B018


def test_normalized_spec_is_stable_and_rebuilds_the_model():
    spec = {"inputs": {"image": tiny_image(), "audio": tiny_audio()},
            "fusion": tiny_fusion("film", presence_mask=True),
            "trunk": {"hidden_units": [8]},
            "heads": {"label": {"type": "classification", "num_classes": 3,
                                "metrics": ["accuracy"]}}}
    normalized = normalize_spec(spec)
    assert normalize_spec(normalized) == normalized
    assert normalized["heads"]["label"]["loss_weight"] == 1.0
    assert normalized["fusion"]["presence_mask"] is True
    model = keras_mm.build_model(spec)
    assert model_spec(model) == normalized
    again = keras_mm.build_model(model_spec(model))
    assert input_names(again) == input_names(model)
    assert again.count_params() == model.count_params()
    with pytest.raises(ValueError, match="carries no keras_mm spec"):
        model_spec(keras.Sequential([keras.Input((2,)),
                                     keras.layers.Dense(1)]))


@pytest.mark.parametrize("encoder", ["bag", "cnn"])
def test_a_frozen_scratch_tower_does_not_train(encoder):
    """`tower: {trainable: false}`: none of the tower's variables train
    (Keras 3 leaves the sub-layers a layer creates in build() trainable
    unless the flag is set again after building; the builder does)."""
    spec = {"inputs": {
        "text": {"modality": "text", "shape": [8], "vocab_size": 40,
                 "tower": {"encoder": encoder, "dim": 8,
                           "trainable": False}},
        "image": {"modality": "image", "shape": [8, 8, 1],
                  "tower": {"encoder": "cnn", "filters": [4], "dim": 8}}},
        "fusion": {"type": "concat", "presence_mask": False},
        "heads": {"d": {"type": "classification", "num_classes": 3}}}
    model = compile_model(keras_mm.build_model(spec), optimizer="adam")
    tower = model.get_layer("text_tower")
    assert not [w.path for w in model.trainable_weights
                if w.path.startswith("text_tower/")]
    before = [w.numpy().copy() for w in tower.weights]
    rng = np.random.default_rng(0)
    x = {"text": rng.integers(1, 40, size=(16, 8)).astype("int32"),
         "image": rng.uniform(size=(16, 8, 8, 1)).astype("float32")}
    model.fit(x, {"d": rng.integers(0, 3, size=16)}, epochs=2, verbose=0)
    for a, b in zip(before, tower.weights):
        np.testing.assert_array_equal(a, b.numpy())
