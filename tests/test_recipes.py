"""Recipe loading, `--set` overrides, safe loading and error messages."""

import json
import os

import pytest
import yaml

from recipe_files import write

from keras_mm.errors import ConfigError
from keras_mm.recipes import (apply_overrides, load_recipe, parse_override,
                              recipe_model_spec, save_recipe)

RECIPE = """\
name: tiny
data:
  splits:
    train: data/tiny/train.csv
    val: data/tiny/val.csv
    test: data/tiny/test.csv
  bad_records: skip
inputs:
  image:
    modality: image
    source: image_path
    preprocess: {size: [8, 8], channels: 1}
    shape: [8, 8, 1]
    tower: {encoder: cnn, dim: 8, filters: [4]}
  audio:
    modality: audio
    preprocess: {sample_rate: 8000, duration: 0.1, features: log_mel,
                 frame_length: 64, frame_step: 32, num_mel_bins: 8}
    shape: [24, 8]
    tower: {encoder: cnn, dim: 8, filters: [4]}
fusion: {type: film, target: image, units: 8, presence_mask: true}
trunk: {hidden_units: [16, 8], dropout: 0.1}
heads:
  label: {type: classification, num_classes: 4, source: label,
          metrics: [accuracy]}
training:
  epochs: 2
  batch_size: 8
  optimizer: {type: adam, learning_rate: 0.01}
  schedule: {type: cosine}
evaluation: {splits: [test], compare_unimodal: true}
"""


@pytest.fixture
def recipe_path(tmp_path):
    return write(tmp_path, RECIPE, "tiny.yaml")


def test_load_fills_defaults(recipe_path):
    recipe = load_recipe(recipe_path)
    assert recipe["name"] == "tiny"
    assert recipe["data"]["format"] == "manifest"
    assert recipe["data"]["bad_records"] == "skip"
    assert recipe["data"]["splits"]["val"] == "data/tiny/val.csv"
    assert recipe["inputs"]["image"]["source"] == "image_path"
    assert recipe["inputs"]["audio"]["preprocess"]["features"] == "log_mel"
    # Features come from the preprocessor, so the tower gets no front end.
    assert recipe["inputs"]["audio"]["tower"]["frontend"] is None
    assert recipe["fusion"] == {"type": "film", "presence_mask": True,
                                "target": "image", "units": 8}
    assert recipe["trunk"] == {"hidden_units": [16, 8], "dropout": 0.1,
                               "activation": "relu"}
    assert recipe["heads"]["label"]["loss_weight"] == 1.0
    assert recipe["heads"]["label"]["source"] == "label"
    training = recipe["training"]
    assert training["optimizer"] == {"type": "adam", "learning_rate": 0.01}
    assert training["schedule"] == {"type": "cosine"}
    assert training["strategy"] == "auto"
    assert training["precision"] == "auto"
    assert training["jit_compile"] == "auto"
    assert training["backup"] == {"save_freq": "epoch"}
    assert training["early_stopping"] is None
    assert recipe["evaluation"] == {"splits": ["test"],
                                    "compare_unimodal": True}
    assert recipe["export"]["name"] == "tiny"
    assert recipe["export"]["base_dir"] == "saved_models"
    # Plain data throughout: it round-trips through JSON and YAML.
    assert json.loads(json.dumps(recipe)) == recipe
    assert yaml.safe_load(yaml.safe_dump(recipe)) == recipe


def test_name_defaults_to_file_stem(tmp_path):
    text = RECIPE.replace("name: tiny\n", "")
    recipe = load_recipe(write(tmp_path, text, "my_run.yaml"))
    assert recipe["name"] == "my_run"
    assert recipe["export"]["name"] == "my_run"


def test_model_spec_builds(recipe_path):
    from keras_mm import build_model
    recipe = load_recipe(recipe_path)
    spec = recipe_model_spec(recipe)
    assert set(spec) == {"name", "inputs", "fusion", "trunk", "heads"}
    model = build_model(spec)
    assert sorted(t.name.split(":")[0] for t in model.inputs) == [
        "audio", "image", "presence"]
    assert model.output_names == ["label"]
    assert model.get_layer("audio_tower").frontend is None


def test_overrides(recipe_path):
    recipe = load_recipe(recipe_path, overrides=[
        "training.epochs=5",
        "fusion.units=16",
        "trunk.hidden_units=[32]",
        "trunk.dropout=0",
        "training.early_stopping={monitor: val_accuracy, patience: 2}",
        "data.splits.test=null",
        "evaluation.splits=[val]",
        "export.name=tiny-v2",
        "heads.label.class_names=[a, b, c, d]",
        "training.optimizer.type=sgd",
        "training.optimizer.momentum=0.9",
        "training.seed=7",
        "name=other",
    ])
    training = recipe["training"]
    assert training["epochs"] == 5 and isinstance(training["epochs"], int)
    assert recipe["fusion"]["units"] == 16
    assert recipe["trunk"]["hidden_units"] == [32]
    assert recipe["trunk"]["dropout"] == 0.0
    assert training["early_stopping"]["monitor"] == "val_accuracy"
    assert training["early_stopping"]["patience"] == 2
    assert "test" not in recipe["data"]["splits"]
    assert recipe["evaluation"]["splits"] == ["val"]
    assert recipe["export"]["name"] == "tiny-v2"
    assert recipe["heads"]["label"]["class_names"] == ["a", "b", "c", "d"]
    assert training["optimizer"] == {"type": "sgd", "learning_rate": 0.01,
                                     "momentum": 0.9}
    assert training["seed"] == 7
    assert recipe["name"] == "other"


def test_override_creates_missing_sections_and_indexes_lists(recipe_path):
    recipe = load_recipe(recipe_path, overrides=[
        "export.verify=false", "trunk.hidden_units.1=4"])
    assert recipe["export"]["verify"] is False
    assert recipe["trunk"]["hidden_units"] == [16, 4]


def test_parse_override_values_are_yaml():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=0.5") == (["a"], 0.5)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=x=y") == (["a"], "x=y")
    assert parse_override("a=") == (["a"], None)
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_override("training.epochs")
    with pytest.raises(ConfigError, match="not a dotted key path"):
        parse_override("a..b=1")
    # A tag that would build a Python object is refused in overrides too.
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("a=!!python/object/apply:os.system [echo hi]")


def test_apply_overrides_errors():
    with pytest.raises(ConfigError, match="index it with 0..1"):
        apply_overrides({"a": [1, 2]}, ["a.5=3"])
    with pytest.raises(ConfigError, match="holds 3, not a mapping"):
        apply_overrides({"a": 3}, ["a.b=1"])


def test_safe_load_rejects_python_tags(tmp_path):
    marker = tmp_path / "ran"
    text = RECIPE + (
        f"export: !!python/object/apply:os.system ['touch {marker}']\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "python/object" in message and "safe_load" in message
    assert not marker.exists()


def test_duplicate_keys_are_rejected(tmp_path):
    text = RECIPE + "training:\n  epochs: 3\n"
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, text))
    assert "training: key 'training' is given twice" in str(info.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "data: {splits: [\ninputs: 1\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: line ")
    assert "invalid YAML" in str(info.value)


def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=f"^{path}: cannot read"):
        load_recipe(path)


@pytest.mark.parametrize("override, expected", [
    ("fusion.type=concatt",
     "fusion.type: 'concatt' is not one of "),
    ("inputs.image.tower.encodr=cnn",
     "inputs.image.tower.encodr: unknown key 'encodr' for ImageTower; "
     "allowed keys are "),
    ("inputs.image.tower.encoder=cnnn",
     "inputs.image.tower.encoder: ImageTower: encoder='cnnn' is not one "
     "of 'applications', 'cnn', 'resnet', 'vit'"),
    ("inputs.image.modality=picture",
     "inputs.image.modality: 'picture' is not one of "),
    ("heads.label.type=softmax",
     "heads.label.type: 'softmax' is not one of binary, classification, "
     "contrastive, multilabel, regression"),
    ("heads.label.num_clases=3",
     "heads.label.num_clases: unknown key 'num_clases' for "
     "ClassificationHead; allowed keys are "),
    ("data.bad_records=drop",
     "data.bad_records: 'drop' is not one of error, skip, missing"),
    ("data.format=parquet",
     "data.format: 'parquet' is not one of manifest, tfrecord"),
    ("data.splits.holdout=x.csv",
     "data.splits.holdout: 'holdout' is not one of train, val, test"),
    ("training.strategy=gpu",
     "training.strategy: 'gpu' is not one of auto, default, mirrored, "
     "multi_worker, tpu"),
    ("training.precision=float16",
     "training.precision: 'float16' is not one of auto, float32, "
     "mixed_float16, mixed_bfloat16"),
    ("training.optimizer.type=adamm",
     "training.optimizer.type: 'adamm' is not one of "),
    ("training.optimizer.lr=0.1",
     "training.optimizer.lr: unknown key 'lr' for Adam; allowed keys are "),
    ("training.schedule.type=cosinus",
     "training.schedule.type: 'cosinus' is not one of constant, cosine, "),
    ("training.epochs=0", "training.epochs: 0 is not an integer >= 1"),
    ("training.epoch=3", "training.epoch: unknown key 'epoch'; allowed keys"),
    ("evaluation.splits=[holdout]",
     "evaluation.splits[0]: 'holdout' is not one of the splits in "
     "data.splits: train, val, test"),
    ("inputs.audio.tower.frontend=log_mel",
     "inputs.audio.tower.frontend: 'log_mel' computes features that "
     "inputs.audio.preprocess.features='log_mel' already computes"),
    ("inputs.audio.preprocess.features=logmel",
     "inputs.audio.preprocess.features: AudioPreprocessor('audio'): "
     "features='logmel' is not one of"),
    ("inputs.image.preprocess.sise=[8, 8]",
     "inputs.image.preprocess.sise: unknown key 'sise' for "
     "ImagePreprocessor; allowed keys are "),
    ("fusion.target=audio",
     "fusion.target: 'audio' is an input of modality audio"),
    ("export.name=a/b", "export.name: 'a/b' is not a plain name"),
    ("fusoin.type=concat",
     "fusoin: unknown section 'fusoin'; allowed sections are name, data, "
     "inputs, fusion, trunk, heads, training, evaluation, export"),
    # Schema checks: strict types (1 is not true), bounds, list items.
    ("training.verbose=true",
     "training.verbose: True is not one of auto, 0, 1, 2"),
    ("training.jit_compile=1",
     "training.jit_compile: 1 is not one of auto, True, False"),
    ("training.early_stopping.patience=-1",
     "training.early_stopping.patience: -1 is not an integer >= 0"),
    ("training.early_stopping.monitr=loss",
     "training.early_stopping.monitr: unknown key 'monitr'; allowed keys "
     "are min_delta, mode, monitor, patience, restore_best_weights"),
    ("training.backup.save_freq=0",
     "training.backup.save_freq: 0 is not an integer >= 1 (or epoch)"),
    ("training.schedule.decay_steps=0",
     "training.schedule.decay_steps: 0 is not an integer >= 1"),
    ("data.shuffle_buffer=big",
     "data.shuffle_buffer: 'big' is not an integer >= 0"),
    ("data.generate={out_dir: x}",
     "data.generate.type: missing required key 'type'; one of av_mnist, "
     "basicmotions, demo"),
    ("data.generate.type=mnist",
     "data.generate.type: 'mnist' is not one of av_mnist, basicmotions, "
     "demo"),
    ("data.generate={type: demo, out_dri: x}",
     "data.generate.out_dri: unknown key 'out_dri' for generator 'demo'; "
     "allowed keys are "),
    ("export.verify=maybe",
     "export.verify: 'maybe' is not one of true, false"),
    ("inputs.image.shape=[8, 0, 1]",
     "inputs.image.shape[1]: 0 is not an integer >= 1"),
    ("inputs.image.vocab_size=10",
     "inputs.image.vocab_size: unknown key 'vocab_size'; allowed keys are "
     "modality, preprocess, shape, source, tower"),
    ("heads.label.loss_weight=-1",
     "heads.label.loss_weight: -1 is below 0.0"),
])
def test_errors_name_file_key_path_value_and_allowed(recipe_path, override,
                                                     expected):
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe_path, overrides=[override])
    message = str(info.value)
    assert message.startswith(f"{recipe_path} (with --set {override}): "), \
        message
    assert expected in message, message


def test_error_in_file_names_file_without_override(tmp_path):
    path = write(tmp_path, RECIPE.replace("type: film", "type: concatt"))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: fusion.type: 'concatt' is not one "
                              "of "), message
    from keras_mm.registry import FUSIONS
    assert message.endswith(", ".join(FUSIONS.names()))
    assert info.value.key_path == "fusion.type"


@pytest.mark.parametrize("text, expected", [
    ("", "the recipe is empty"),
    ("- a\n- b\n", "the recipe must be a mapping of sections"),
    (RECIPE.replace("  splits:\n", "  splitz:\n"),
     "data.splitz: unknown key 'splitz'; allowed keys are "),
])
def test_structure_errors(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_missing_section(tmp_path):
    recipe = yaml.safe_load(RECIPE)
    del recipe["heads"]
    path = write(tmp_path, yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value) == (f"{path}: heads: missing required section "
                               "'heads'")


def test_save_recipe_round_trip(recipe_path, tmp_path):
    recipe = load_recipe(recipe_path, overrides=["training.epochs=4"])
    out = save_recipe(recipe, str(tmp_path / "resolved.yaml"))
    again = load_recipe(out)
    assert again == recipe
    assert os.path.basename(out) == "resolved.yaml"


def test_shape_must_match_preprocessor(recipe_path):
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe_path, overrides=["inputs.image.shape=[8, 8, 3]"])
    assert ("inputs.image.shape: [8, 8, 3] differs from [8, 8, 1], the "
            "shape inputs.image.preprocess produces") in str(info.value)
    # Left out, the shape is for the pipeline to derive.
    recipe = load_recipe(recipe_path, overrides=["inputs.image.shape=null"])
    assert "shape" not in recipe["inputs"]["image"]


RECIPES_DIR = os.path.join(os.path.dirname(__file__), "..", "recipes")
SHIPPED = sorted(f for f in os.listdir(RECIPES_DIR) if f.endswith(".yaml"))
# Recipes whose towers come from pretrained presets (downloads): built,
# trained and exported on tiny local presets by tests/test_pretrained_recipe.py.
PRETRAINED = ("pretrained_text_image.yaml",)


def test_recipes_are_shipped():
    assert {"demo.yaml", "av_mnist.yaml"} <= set(SHIPPED), SHIPPED


def stated_preprocessors(recipe):
    """The recipe's preprocessors as it states them, without its data: the
    text vocabulary gets `max_vocab_size` tokens (the most `adapt` may
    learn), every other preprocessor's output shape follows from its
    arguments alone."""
    from keras_mm.data.text_preprocessor import RESERVED_TOKENS
    from keras_mm.training.run_preprocessors import make_preprocessors
    preprocessors = make_preprocessors(recipe)
    for pre in preprocessors.values():
        if pre.modality == "text":
            words = [f"w{i}" for i in range(pre.max_vocab_size
                                            - len(RESERVED_TOKENS))]
            pre.set_vocab(list(RESERVED_TOKENS) + words)
        assert pre.modality != "tabular", "no shipped recipe has one yet"
    return preprocessors


@pytest.mark.parametrize("name", [n for n in SHIPPED if n not in PRETRAINED])
def test_shipped_recipes_validate_and_build(name):
    """Each shipped recipe validates and builds its model, with the input
    shapes its preprocessors produce; the model runs on an example of those
    shapes."""
    import numpy as np

    from keras_mm import build_model
    from keras_mm.builder import complete_spec
    recipe = load_recipe(os.path.join(RECIPES_DIR, name))
    assert recipe["name"]
    assert recipe["data"]["splits"]["train"]
    spec = recipe_model_spec(recipe)
    assert set(spec) == {"name", "inputs", "fusion", "trunk", "heads"}
    preprocessors = stated_preprocessors(recipe)
    model = build_model(complete_spec(spec, preprocessors))
    by_name = {t.name.split(":")[0]: t for t in model.inputs}
    batch = {}
    for input_name, pre in preprocessors.items():
        signature = pre.output_signature()[input_name]
        assert tuple(by_name[input_name].shape) == tuple(signature.shape), \
            input_name
        assert by_name[input_name].dtype == signature.dtype.name, input_name
        shape = (1,) + tuple(signature.shape[1:])
        batch[input_name] = np.ones(shape, signature.dtype.as_numpy_dtype)
        if recipe["inputs"][input_name].get("mask"):
            batch[f"{input_name}_mask"] = np.ones(shape[:2], bool)
    if recipe["fusion"] and recipe["fusion"]["presence_mask"]:
        batch["presence"] = np.ones((1, len(preprocessors)), "float32")
    assert sorted(batch) == sorted(by_name)
    outputs = model(batch)
    assert sorted(outputs) == sorted(recipe["heads"])
    for head, head_spec in recipe["heads"].items():
        values = np.asarray(outputs[head])
        if head_spec["type"] == "contrastive":
            # unit embeddings (zero where a tower gives zeros on this
            # all-ones example: normalising leaves 0, never NaN)
            assert values.shape == (1, len(head_spec["modalities"]),
                                    head_spec["embedding_dim"])
            norms = np.linalg.norm(values, axis=-1)
            assert np.all((abs(norms - 1) < 1e-5) | (norms == 0)), norms
            continue
        assert values.shape == (1, head_spec["num_classes"])
        np.testing.assert_allclose(values.sum(-1), 1.0, atol=1e-5)
