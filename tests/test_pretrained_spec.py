"""`preset:` / `hub:` on a spec or recipe input (issue 14): the input's
tower comes from PRETRAINED_TOWERS and its preprocessor from the same key
in PREPROCESSORS; the keys the pretrained model owns are refused
elsewhere; a model built from a preset saves and loads without the preset
folder."""

import os
import shutil

import numpy as np
import pytest

from tiny_presets_text import bert_preset

from keras_mm.errors import ConfigError


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return bert_preset(os.fspath(tmp_path_factory.mktemp("p") / "bert"))


def text_spec(preset, **entry):
    return {"name": "m",
            "inputs": {"review": {"modality": "text", "preset": preset,
                                  "shape": [16], **entry}},
            "fusion": None,
            "heads": {"label": {"type": "classification",
                                "num_classes": 3}}}


def test_a_preset_input_builds_the_pretrained_tower_with_a_mask_input(
        bert, tmp_path):
    import keras

    from keras_mm import build_model
    from keras_mm.builder import model_spec, normalize_spec
    from keras_mm.pretrained.text_preset_tower import TextPresetTower

    spec = normalize_spec(text_spec(bert, tower={"pooling": "mean"}))
    assert spec["inputs"]["review"]["mask"] is True
    assert "vocab_size" not in spec["inputs"]["review"]
    model = build_model(spec)
    tower = model.get_layer("review_tower")
    assert isinstance(tower, TextPresetTower)
    assert tower.preset == bert and tower.pooling == "mean"
    names = sorted(t.name.split(":")[0] for t in model.inputs)
    assert names == ["review", "review_mask"]
    ids = np.array([[2, 5, 6, 3] + [0] * 12, [2, 7, 3] + [0] * 13], "int32")
    batch = {"review": ids, "review_mask": ids != 0}
    want = np.asarray(model(batch)["label"])

    # The saved model needs no preset folder: the backbone is in its config.
    path = tmp_path / "m.keras"
    model.save(path)
    moved = tmp_path / "gone"
    shutil.copytree(bert, moved)
    shutil.rmtree(bert)
    try:
        loaded = keras.saving.load_model(path)
    finally:
        shutil.copytree(moved, bert)
    np.testing.assert_allclose(np.asarray(loaded(batch)["label"]), want,
                               atol=1e-6)
    assert model_spec(loaded)["inputs"]["review"]["preset"] == bert


def test_keys_the_pretrained_model_owns_are_refused(bert):
    from keras_mm.builder import normalize_spec

    with pytest.raises(ConfigError, match=r"inputs\.review\.tower\.preset: "
                       r"'preset' is set by the builder from "
                       r"inputs\.review\.preset"):
        normalize_spec(text_spec(bert, tower={"preset": "/x"}))
    with pytest.raises(ConfigError, match=r"inputs\.review\.tower\.backbone"):
        normalize_spec(text_spec(bert, tower={"backbone": {}}))
    with pytest.raises(ConfigError, match=r"inputs\.review\.tower\.encoder: "
                       "unknown key 'encoder' for TextPresetTower"):
        normalize_spec(text_spec(bert, tower={"encoder": "bag"}))
    with pytest.raises(ConfigError, match="either preset .* or hub"):
        normalize_spec(text_spec(bert, hub="/models/enc"))
    with pytest.raises(ConfigError, match=r"inputs\.review\.preset: "):
        normalize_spec(text_spec(""))


def test_a_modality_without_a_pretrained_tower_says_which_have_one(bert):
    from keras_mm.builder import normalize_spec

    spec = text_spec(bert)
    spec["inputs"]["review"]["modality"] = "sensor"
    spec["inputs"]["review"]["shape"] = [10, 3]
    with pytest.raises(ConfigError) as info:
        normalize_spec(spec)
    message = str(info.value)
    assert message.startswith("inputs.review.preset: no pretrained sensor "
                              "tower takes a preset; modalities with one: ")
    assert "text" in message and "image" in message


def test_recipe_preset_input_gets_the_preset_preprocessor(bert):
    from keras_mm.registry import preprocessor_class
    from keras_mm.training.run_preprocessors import make_preprocessors

    recipe = {"inputs": {"review": {"modality": "text", "preset": bert,
                                    "preprocess": {"max_len": 16}}}}
    pre = make_preprocessors(recipe)["review"]
    assert type(pre).__name__ == "TextPresetPreprocessor"
    assert pre.preset == bert and pre.max_len == 16
    recipe["inputs"]["review"]["preprocess"]["preset"] = "/elsewhere"
    with pytest.raises(ConfigError, match=r"inputs\.review\.preprocess\."
                       r"preset: set by the input's preset key"):
        make_preprocessors(recipe)
    with pytest.raises(ConfigError, match=r"inputs\.t\.hub\.preprocessor: "
                       "a TF-Hub text encoder needs its preprocessing"):
        preprocessor_class("t", {"modality": "text", "hub": "/models/enc"})


def test_preset_preprocessors_round_trip_through_preprocessors_json(bert):
    import json

    import tensorflow as tf

    from keras_mm.data import deserialize_preprocessor, serialize_preprocessor
    from keras_mm.pretrained.text_preset_preprocessor import (
        TextPresetPreprocessor)

    pre = TextPresetPreprocessor("review", bert, max_len=16)
    data = json.loads(json.dumps(serialize_preprocessor(pre)))
    assert data["modality"] == "text" and data["type"] == "text_preset"
    again = deserialize_preprocessor(data)
    assert type(again) is TextPresetPreprocessor
    texts = tf.constant(["the cat sat", ""])
    for key, value in pre(texts).items():
        np.testing.assert_array_equal(again(texts)[key], value, err_msg=key)
