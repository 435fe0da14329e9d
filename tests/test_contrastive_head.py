"""The contrastive head and the dual-encoder spec (`fusion: none`).

- the layer battery (config, symbolic call, gradients, `.keras`, XLA fit,
  dtype policies);
- equivalence: the head's loss is the sum over its pairs of CLIP's (or
  SigLIP's) NumPy loss on the projected embeddings, and its output rows
  are those embeddings; `pairs` limits the sum to the listed pairs;
- the builder: `fusion: none` + a contrastive head builds a model whose
  output is `head.embed` of each tower's output; the recipe-level errors
  name their key paths.
"""

import keras
import numpy as np
import pytest

from helpers import run_layer_checks
from keras_mm import build_model
from keras_mm.builder.model_builder import compile_model
from keras_mm.errors import ConfigError
from keras_mm.heads import ContrastiveHead
from test_contrastive import numpy_clip, numpy_siglip

RNG = np.random.default_rng(0)
INPUTS = {"image": RNG.normal(size=(6, 10)).astype("float32"),
          "audio": RNG.normal(size=(6, 7)).astype("float32"),
          "text": RNG.normal(size=(6, 5)).astype("float32")}


def test_layer_checks(tmp_path):
    run_layer_checks(
        ContrastiveHead, {"modalities": ["image", "audio"], "loss": "siglip",
                          "embedding_dim": 4},
        {k: INPUTS[k] for k in ("image", "audio")}, tmp_path=tmp_path,
        # the embeddings are float32 by design (normalised in float32)
        expected_output_shape=(6, 2, 4), output_dtype="float32",
        # the output does not depend on them; they train through add_loss
        # (the gradients are checked in test_contrastive)
        grad_exempt=("image_audio_loss/",))


def _projected(head, name):
    dense = head.projections[name]
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
    return INPUTS[name] @ kernel + bias


@pytest.mark.parametrize("loss,pairs", [
    ("clip", None), ("siglip", None), ("clip", [["text", "image"]])])
def test_loss_is_the_sum_over_pairs_of_the_numpy_loss(loss, pairs):
    head = ContrastiveHead(["image", "audio", "text"], loss=loss,
                           embedding_dim=3, pairs=pairs)
    out = keras.ops.convert_to_numpy(head(INPUTS))
    projected = {m: _projected(head, m) for m in head.modalities}
    for j, name in enumerate(head.modalities):
        unit = projected[name] / np.linalg.norm(projected[name], axis=1,
                                                keepdims=True)
        np.testing.assert_allclose(out[:, j], unit, atol=1e-5)
    expected = 0.0
    for layer, (a, b) in zip(head.loss_layers, head.pairs):
        log_scale = float(keras.ops.convert_to_numpy(layer.log_scale))
        if loss == "clip":
            expected += numpy_clip(projected[a], projected[b], log_scale)
        else:
            bias = float(keras.ops.convert_to_numpy(layer.bias))
            expected += numpy_siglip(projected[a], projected[b], log_scale,
                                     bias)
    assert len(head.pairs) == (3 if pairs is None else 1)
    got = float(sum(keras.ops.convert_to_numpy(x) for x in head.losses))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


SPEC = {"inputs": {
    "image": {"modality": "image", "shape": [12, 12, 1],
              "tower": {"encoder": "cnn", "filters": [4], "dim": 8}},
    "text": {"modality": "text", "shape": [6], "vocab_size": 30,
             "tower": {"encoder": "bag", "dim": 8}}},
    "fusion": "none",
    "heads": {"align": {"type": "contrastive", "embedding_dim": 4}}}


def test_dual_encoder_spec_builds_and_trains():
    model = compile_model(build_model(SPEC), optimizer="adam")
    assert sorted(l.name for l in model.layers) == [
        "align", "image", "image_tower", "text", "text_tower"]
    rng = np.random.default_rng(1)
    x = {"image": rng.uniform(size=(8, 12, 12, 1)).astype("float32"),
         "text": rng.integers(0, 30, size=(8, 6)).astype("int32")}
    out = keras.ops.convert_to_numpy(model(x, training=False)["align"])
    head = model.get_layer("align")
    assert head.modalities == ["image", "text"]     # default: every input
    for j, name in enumerate(head.modalities):
        tower = model.get_layer(f"{name}_tower")
        np.testing.assert_allclose(
            out[:, j], keras.ops.convert_to_numpy(
                head.embed(name, tower(x[name], training=False))),
            atol=1e-6)
    history = model.fit(x, epochs=3, batch_size=8, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("change,path,words", [
    ({"fusion": "concat"}, "heads.align", "set fusion: none"),
    ({"fusion": {"type": "none", "units": 3}}, "fusion", "remove units"),
    ({"heads": {"align": {"type": "contrastive", "loss": "infonce"}}},
     "heads.align.loss", "not one of clip, siglip"),
    ({"heads": {"align": {"type": "contrastive",
                          "modalities": ["image", "audio"]}}},
     "heads.align.modalities[1]", "'audio' is not one of image, text"),
    ({"heads": {"align": {"type": "contrastive"},
                "digit": {"type": "classification", "num_classes": 3}}},
     "heads.digit", "tower.init_from"),
    ({"heads": {"align": {"type": "contrastive", "loss_weight": 2}}},
     "heads.align.loss_weight", "unknown key"),
    ({"heads": {"align": {"type": "contrastive", "metrics": ["accuracy"]}}},
     "heads.align.metrics", "retrieval metrics"),
    ({"trunk": {"hidden_units": [4]}}, "trunk", "remove the trunk"),
    ({"fusion": None, "heads": {"d": {"type": "classification",
                                      "num_classes": 3}}},
     "fusion", "or none for a dual encoder"),
])
def test_dual_encoder_errors_name_the_key(change, path, words):
    with pytest.raises(ConfigError) as error:
        build_model({**SPEC, **change})
    assert error.value.key_path == path
    assert words in str(error.value)


def test_loss_options_reach_every_loss_layer():
    head = ContrastiveHead(["image", "audio", "text"], loss="siglip",
                           loss_options={"bias": -4.5, "scale": 5.0})
    head(INPUTS)
    for layer in head.loss_layers:
        assert float(keras.ops.convert_to_numpy(layer.log_scale)) == \
            pytest.approx(np.log(5.0))
        assert float(keras.ops.convert_to_numpy(
            layer.logit_bias_weight)) == pytest.approx(-4.5)
    assert ContrastiveHead.from_config(head.get_config()).loss_options == \
        {"bias": -4.5, "scale": 5.0}


@pytest.mark.parametrize("options,words", [
    ({"bias": -4.5}, "are not arguments of the clip loss"),
    ({"temperature": -1}, "temperature"),
])
def test_bad_loss_options_are_named(options, words):
    with pytest.raises(ConfigError) as error:
        build_model({**SPEC, "heads": {"align": {
            "type": "contrastive", "loss_options": options}}})
    assert error.value.key_path.startswith("heads.align")
    assert words in str(error.value)
