"""A dual-encoder recipe end to end: train, metrics, embed, export, serve.

One tiny run of the demo set (text bag-of-words + sensor GRU, `fusion:
none`, a CLIP contrastive head whose `source` is the class column) is
trained with export and verification, then:

- `metrics.json`'s retrieval figures equal `retrieval_report` recomputed
  from the embeddings `keras-mm embed` wrote and the manifest's classes;
- `embed_text` / `embed_sensor` / `score` called in a fresh process that
  imports only tensorflow and tensorflow_text give the in-process
  embeddings (`keras-mm embed`, the Keras model) of the same raw rows;
- the verifier replayed the embed golden values; the CLI refuses an
  existing output folder and a run without a contrastive head, each with
  one line.
"""

import csv
import json
import os
import pickle
import textwrap

import numpy as np
import pytest

from fresh_export import run_fresh_script
from keras_mm.cli.main import main
from keras_mm.errors import ConfigError
from keras_mm.evaluation.retrieval import retrieval_report
from keras_mm.recipes import normalize_recipe
from test_training import tiny_recipe


def dual_recipe(data_dir, name="dual", **training):
    recipe = tiny_recipe(data_dir, name=name, epochs=3, **training)
    recipe["fusion"] = "none"
    # longer than the series (50 steps): padded, so the mask matters
    recipe["inputs"]["sensor"]["preprocess"]["length"] = 64
    recipe["heads"] = {"align": {"type": "contrastive", "embedding_dim": 8,
                                 "source": "label"}}
    return recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from keras_mm.training import train

    tmp = tmp_path_factory.mktemp("dual")
    recipe = dual_recipe(tmp / "demo")
    recipe["export"] = {"base_dir": str(tmp / "saved_models")}
    result = train(recipe, runs_dir=str(tmp / "runs"), verbose=0)
    out = tmp / "embeddings"
    assert main(["embed", result.run_dir, "--split", "test", "--out",
                 str(out)]) == 0
    return {"tmp": tmp, "result": result, "out": out}


def _manifest(tmp):
    with open(tmp / "demo" / "test.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_metrics_are_the_retrieval_report_of_the_embeddings(run):
    out = run["out"]
    info = json.loads((out / "embeddings.json").read_text())
    assert info["inputs"] == ["text", "sensor"] and info["count"] == 16
    keys = np.load(out / "keys.npy")
    np.testing.assert_array_equal(keys, np.arange(16))
    text, sensor = np.load(out / "text.npy"), np.load(out / "sensor.npy")
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    labels = np.array([row["label"] for row in _manifest(run["tmp"])])
    want = retrieval_report(text, sensor, labels, names=("text", "sensor"))
    metrics = json.loads(open(os.path.join(run["result"].run_dir,
                                           "metrics.json")).read())
    got = metrics["test"]["heads"]["align"]
    assert metrics["test"]["num_examples"] == 16
    for direction, values in want.items():
        for name, value in values.items():
            assert got["retrieval"][direction][name] == pytest.approx(
                value, abs=1e-6), (direction, name)
        assert got[f"{direction}_r@1"] == pytest.approx(values["r@1"])
        assert got[f"{direction}_class_r@1"] == pytest.approx(
            values["class_r@1"])


FRESH_SCRIPT = textwrap.dedent("""
    import json, pickle, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    with open(sys.argv[2], "rb") as f:
        raw = pickle.load(f)
    loaded = tf.saved_model.load(sys.argv[1])
    out = {"signatures": sorted(loaded.signatures)}
    for name, keys in (("embed_text", ["text"]),
                       ("embed_sensor", ["sensor"]),
                       ("score", ["text", "sensor"])):
        result = loaded.signatures[name](
            **{k: tf.constant(raw[k]) for k in keys})
        out[name] = {k: v.numpy() for k, v in result.items()}
    with open(sys.argv[3], "wb") as f:
        pickle.dump(out, f)
    print("MODULES " + json.dumps(sorted(
        m for m in sys.modules if m.split(".")[0] in
        ("keras", "keras_hub", "keras_mm", "tf_keras"))))
""")


def test_embed_signatures_in_a_fresh_process_equal_the_towers(run):
    tmp, result = run["tmp"], run["result"]
    rows = _manifest(tmp)
    raw = {"text": [r["text"].encode() for r in rows],
           "sensor": [open(tmp / "demo" / r["sensor"], "rb").read()
                      for r in rows]}
    with open(tmp / "raw.pkl", "wb") as f:
        pickle.dump(raw, f)
    run_fresh_script(FRESH_SCRIPT, result.export_path, tmp / "raw.pkl",
                     tmp / "served.pkl")
    with open(tmp / "served.pkl", "rb") as f:
        served = pickle.load(f)
    assert served["signatures"] == [
        "embed_sensor", "embed_text", "score", "serve_examples",
        "serve_tensors", "serving_default"]
    text = np.load(run["out"] / "text.npy")
    sensor = np.load(run["out"] / "sensor.npy")
    np.testing.assert_allclose(served["embed_text"]["embedding"], text,
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["embed_sensor"]["embedding"], sensor,
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["score"]["similarity"],
                               (text * sensor).sum(axis=1), atol=1e-5)
    verify = result.verify_report
    assert verify["ok"] and verify["checks"]["embed"]["ok"]
    assert verify["checks"]["embed"]["signatures"] == [
        "embed_sensor", "embed_text", "score"]


def test_embed_cli_errors_are_one_line(run, tmp_path, capsys):
    capsys.readouterr()
    code = main(["embed", run["result"].run_dir, "--out", str(run["out"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "exists and is not empty" in err[0]
    code = main(["embed", run["result"].run_dir, "--split", "holdout",
                 "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "'holdout' is not one of" in err[0]
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("key,value,path", [
    ("evaluation", {"compare_unimodal": True}, "evaluation.compare_unimodal"),
    ("training", {"modality_dropout": 0.3}, "training.modality_dropout"),
])
def test_recipe_keys_a_dual_encoder_cannot_take(tmp_path, key, value, path):
    recipe = dual_recipe(tmp_path / "demo")
    recipe[key] = dict(recipe[key], **value)
    with pytest.raises(ConfigError) as error:
        normalize_recipe(recipe)
    assert error.value.key_path == path


def test_a_siglip_head_starts_at_the_log_odds_of_its_batch(tmp_path):
    import math

    from keras_mm.heads.contrastive_head import ContrastiveHead

    recipe = dual_recipe(tmp_path / "demo", batch_size=16)
    recipe["heads"]["align"]["loss"] = "siglip"
    normalized = normalize_recipe(recipe)
    assert normalized["heads"]["align"]["loss_options"] == {
        "bias": round(-math.log(16), 4)}
    head = normalized["heads"]["align"]
    layer = ContrastiveHead(head["modalities"], loss="siglip",
                            embedding_dim=4,
                            loss_options=head["loss_options"])
    layer({"text": np.ones((2, 3), "float32"),
           "sensor": np.ones((2, 5), "float32")})
    biases = [float(w.numpy()) for w in layer.weights
              if w.path.endswith("bias") and "loss" in w.path]
    assert biases == [pytest.approx(-math.log(16), abs=1e-4)]
    # a bias given is kept; CLIP has none
    recipe["heads"]["align"]["loss_options"] = {"bias": -2.0}
    assert normalize_recipe(recipe)["heads"]["align"]["loss_options"] == {
        "bias": -2.0}
    recipe["heads"]["align"].update(loss="clip", loss_options=None)
    assert "loss_options" not in normalize_recipe(recipe)["heads"]["align"] \
        or not normalize_recipe(recipe)["heads"]["align"]["loss_options"]


def classifier_recipe(run, name, **tower):
    """The tiny classifier recipe, both towers started from the dual run."""
    recipe = tiny_recipe(run["tmp"] / "demo", name=name, epochs=1)
    recipe["inputs"]["sensor"]["preprocess"]["length"] = 64
    for entry in recipe["inputs"].values():
        entry["tower"].update(init_from=run["result"].run_dir, **tower)
    recipe["export"] = {"base_dir": str(run["tmp"] / "saved_models")}
    return recipe


def _tower_weights(run_dir, name):
    from keras_mm.training import load_run

    _, model, _ = load_run(run_dir)
    return [w.numpy() for w in model.get_layer(f"{name}_tower").weights]


def test_init_from_copies_the_towers_and_their_preprocessors(run):
    from keras_mm.training import train

    recipe = classifier_recipe(run, "frozen_from_dual", trainable=False)
    result = train(recipe, runs_dir=str(run["tmp"] / "runs"), verbose=0,
                   export=False)
    for name in ("text", "sensor"):
        source = _tower_weights(run["result"].run_dir, name)
        started = _tower_weights(result.run_dir, name)
        assert len(source) == len(started) > 0
        for a, b in zip(source, started):    # frozen: bitwise the source's
            np.testing.assert_array_equal(a, b)
    theirs = json.loads(open(os.path.join(run["result"].run_dir,
                                          "preprocessors.json")).read())
    ours = json.loads(open(os.path.join(result.run_dir,
                                        "preprocessors.json")).read())
    assert ours["text"] == theirs["text"]     # the same vocabulary
    assert result.metrics["test"]["heads"]["label"]["accuracy"] >= 0


@pytest.mark.parametrize("change,path,words", [
    (lambda r: r["inputs"]["sensor"]["preprocess"].update(length=40),
     "inputs.sensor.preprocess", "length: 64 there, 40 here"),
    (lambda r: r["inputs"]["text"]["tower"].update(dim=16),
     "inputs.text.tower", "dim: 8 there, 16 here"),
    (lambda r: r["inputs"]["text"]["tower"].update(init_from="runs/nowhere"),
     "inputs.text.tower.init_from", "is not a finished run folder"),
    (lambda r: r["inputs"].update(words=r["inputs"].pop("text")),
     "inputs.words.tower.init_from", "has no input 'words'"),
])
def test_init_from_mismatches_name_the_key(run, change, path, words):
    from keras_mm.training import train

    recipe = classifier_recipe(run, "bad_init")
    change(recipe)
    with pytest.raises(ConfigError) as error:
        train(recipe, runs_dir=str(run["tmp"] / "runs"), verbose=0,
              export=False)
    assert error.value.key_path == path
    assert words in str(error.value)


def test_embed_refuses_an_empty_value_naming_the_input(run):
    import tensorflow as tf

    loaded = tf.saved_model.load(run["result"].export_path)
    embed = loaded.signatures["embed_text"]
    out = embed(text=tf.constant(["one example matching"]))["embedding"]
    assert out.shape == (1, 8)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="input `text` is empty in an example"):
        embed(text=tf.constant(["one example matching", ""]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        embed(text=tf.constant([], tf.string))
