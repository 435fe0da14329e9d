"""The TPU readiness check (`keras_mm.tpu`): one bad model per finding.

Each model is compiled with XLA on CPU by `check_model`: a StringLookup
inside the model (Keras falls back to jit_compile=False with a warning
only, and XLA rejects the string input), float64 and a boolean mask
(XLA on CPU compiles both, a TPU rejects them: the HLO shows them), a
dynamic-size TensorArray (a wrong result under XLA), and a partial last
batch (an unknown batch dimension); a clean model passes. Then the
recipe-level check on the demo set and `keras-mm check`.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mm.cli.main import main
from keras_mm.tpu import check_model
from test_training import tiny_recipe, write_recipe


class Float64(keras.layers.Layer):
    def call(self, x):
        return tf.cast(tf.cast(x, tf.float64) * 2.0, self.compute_dtype)


class BooleanMask(keras.layers.Layer):
    def call(self, x):
        kept = tf.boolean_mask(x, x[:, 0] > 0)
        return x + tf.reduce_sum(kept, axis=0, keepdims=True)


class GrowingArray(keras.layers.Layer):
    def call(self, x):
        array = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        array = tf.while_loop(lambda i, a: i < 3,
                              lambda i, a: (i + 1, a.write(i, x[:, 0])),
                              (0, array))[1]
        return x + tf.reduce_sum(array.stack(), axis=0)[:, None]

    def compute_output_shape(self, shape):
        return shape


def dense_model(layer=None):
    inputs = keras.Input((4,), name="x")
    hidden = inputs if layer is None else layer(inputs)
    model = keras.Model({"x": inputs},
                        {"y": keras.layers.Dense(2, name="out")(hidden)})
    model.compile("sgd", {"y": "mse"})
    return model


def batch(n=8):
    rng = np.random.default_rng(0)
    return ({"x": rng.normal(size=(n, 4)).astype("float32")},
            {"y": rng.normal(size=(n, 2)).astype("float32")})


def failed(report, check):
    return " ".join(f["what"] for f in report.failed(check))


def test_a_clean_model_passes_every_check():
    report = check_model(dense_model(), batch(), batch_size=8)
    assert report.ok and report.exit_code == 0
    assert report.failed() == []
    assert sorted({f["check"] for f in report.findings}) == \
        ["a", "b", "c", "d", "e"]
    assert "ready for XLA" in report.table()


def test_string_lookup_inside_the_model_is_reported():
    inputs = keras.Input((), dtype="string", name="words")
    ids = keras.layers.StringLookup(vocabulary=["a", "b"],
                                    name="lookup")(inputs)
    vectors = keras.layers.Embedding(4, 3, name="embed")(ids)
    model = keras.Model({"words": inputs},
                        {"y": keras.layers.Dense(2, name="out")(vectors)})
    model.compile("sgd", {"y": "mse"})
    report = check_model(model, ({"words": np.array(["a", "b"] * 4)},
                                 {"y": np.zeros((8, 2), "float32")}))
    assert not report.ok and report.exit_code == 1
    assert "layers without XLA support: lookup" in failed(report, "a")
    assert "string tensor in input words" in failed(report, "b")
    assert model.jit_compile is False or model._jit_compile is None


def test_float64_is_found_in_the_hlo_and_named():
    report = check_model(dense_model(Float64(name="doubles")), batch())
    assert report.ok                     # XLA on CPU compiles it
    assert failed(report, "c") == "float64 in layer doubles"


def test_a_boolean_mask_is_a_data_dependent_shape():
    report = check_model(dense_model(BooleanMask(name="mask")), batch())
    assert report.ok
    assert failed(report, "c") == "data-dependent shape in layer mask"
    assert "float64" not in failed(report, "c")


def test_a_dynamic_tensor_array_is_caught():
    # XLA returns an empty array (no error at the TensorArray): the
    # model's shapes no longer agree, and the check says where to look.
    report = check_model(dense_model(GrowingArray(name="grow")), batch())
    found = report.failed("b") + report.failed("d")
    assert found, report.table()
    assert "TensorArray" in " ".join(f["fix"] for f in found)


def test_a_partial_last_batch_is_an_unknown_dimension():
    x, y = batch(10)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    report = check_model(dense_model(), next(iter(dataset)),
                         dataset=dataset)
    assert report.ok
    assert "x [None, 4]" in failed(report, "f")
    fixed = tf.data.Dataset.from_tensor_slices((x, y)).batch(
        4, drop_remainder=True)
    report = check_model(dense_model(), next(iter(fixed)), dataset=fixed)
    assert report.failed("f") == []


def test_advice_names_the_batch_and_the_dense_widths():
    inputs = keras.Input((4,), name="x")
    model = keras.Model({"x": inputs},
                        {"y": keras.layers.Dense(100, name="wide")(inputs)})
    model.compile("sgd", {"y": "mse"})
    x = {"x": np.ones((6, 4), "float32")}
    report = check_model(model, (x, {"y": np.ones((6, 100), "float32")}),
                         batch_size=6, replicas=8, steps_per_execution=1,
                         precision="float32")
    advice = failed(report, "e")
    assert "global batch 6 over 8 replica(s): not a multiple of 64" in \
        advice
    assert "wide (100)" in advice
    assert "steps_per_execution 1" in advice and "precision float32" in \
        advice
    assert report.ok                       # advice only


@pytest.fixture(scope="module")
def demo_recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tpu_check")
    recipe = tiny_recipe(tmp / "demo", batch_size=8, sizes=(36, 16, 16))
    recipe["inputs"]["sensor"]["tower"] = {"encoder": "tcn", "dim": 8}
    return write_recipe(tmp / "recipe.yaml", recipe)


def test_keras_mm_check_on_a_recipe(demo_recipe, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["check", demo_recipe, "--tpu", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("| check | result |") == 1
    report = json.loads(out.read_text())
    assert report["ok"] is True
    checks = {f["check"] for f in report["findings"]}
    assert checks == {"a", "b", "c", "d", "e", "f"}
    shapes = [f["what"] for f in report["findings"]
              if f["check"] == "f" and f["ok"]]
    assert shapes and "presence [8, 2]" in shapes[0]
    # 36 training rows in batches of 8: 4 dropped every epoch
    assert any("4 of the 36 training examples" in f["what"]
               for f in report["findings"])


def test_keras_mm_check_exits_1_when_keras_gives_up_xla(demo_recipe,
                                                        capsys):
    # op determinism (training.deterministic) makes Keras fall back to
    # jit_compile=False with a warning only: check a fails
    assert main(["check", demo_recipe, "--set",
                 "training.deterministic=true"]) == 1
    out = capsys.readouterr().out
    assert "op determinism is enabled" in out and "NOT ready" in out


def test_train_under_tpu_runs_the_check_first(demo_recipe):
    from keras_mm.errors import ConfigError
    from keras_mm.tpu.recipe_check import require_ready

    said = []
    report = require_ready(demo_recipe, say=said.append)
    assert report.ok and len(said) == 1 and "| check |" in said[0]
    with pytest.raises(ConfigError, match="training.strategy.*readiness "
                                          "check failed: a. Keras falls"):
        require_ready(_deterministic(demo_recipe))


def _deterministic(path):
    import yaml

    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f)
    recipe["training"]["deterministic"] = True
    return recipe


SHIPPED = [("demo", [], False), ("image_text", [], False),
           ("joint_transformer", [], False),
           ("av_mnist", ["data.generate.mnist_dir={data}/mnist",
                         "data.generate.fsdd_dir={data}/fsdd"], True),
           ("retrieval_av_mnist", ["data.generate.mnist_dir={data}/mnist",
                                   "data.generate.fsdd_dir={data}/fsdd"],
            True),
           ("sensor_basicmotions", ["data.generate.ts_dir={data}/"
                                    "basicmotions"], True)]


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides,needs_data", SHIPPED,
                         ids=[s[0] for s in SHIPPED])
def test_shipped_recipes_pass_check_tpu(name, overrides, needs_data,
                                        tmp_path, monkeypatch, request):
    # video_audio (no generator) and pretrained_text_image (presets from
    # Kaggle) say in their headers why they are not checked here
    import pathlib

    data = None
    if needs_data:
        data = request.getfixturevalue("shared_data")
    monkeypatch.chdir(tmp_path)          # generated data goes here
    recipe = pathlib.Path(__file__).resolve().parents[1] / "recipes" / \
        f"{name}.yaml"
    args = ["check", str(recipe), "--tpu"]
    for override in overrides:
        args += ["--set", override.format(data=data)]
    assert main(args) == 0

