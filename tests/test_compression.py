"""Compression: quantized SavedModels, LiteRT files, parity reports.

- int8 convolution kernels: the stored int8 values times their scale are
  the float kernel to within half a step, and the layer computes exactly
  the convolution of that dequantized kernel;
- a SavedModel stores each weight once (Keras 3.15's ExportArchive
  stored them twice);
- one tiny run (text bag-of-words + sensor TCN, concat fusion) trained
  with `export.quantize: int8` and `export.litert: int8`: the int8
  SavedModel (verified in a fresh process by the exporter) and the LiteRT
  file run, the LiteRT one in a fresh Python with `ai_edge_litert` and
  NumPy only, and every figure of their parity reports is recomputed here
  from the artefacts' own outputs; a refused export leaves no version.
"""

import json
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from fresh_export import run_fresh_script
from keras_mm.cli.main import main
from keras_mm.compression import quantize_model
from keras_mm.compression.compressed_export import export_compressed
from keras_mm.compression import litert_convert
from keras_mm.compression.int8_kernel_conv import quantize_int8
from keras_mm.compression.litert import strip_tensor_names, tensor_saved_model
from keras_mm.compression.parity import (LiteRTRunner, SavedModelRunner,
                                         artefact_bytes)
from keras_mm.errors import ConfigError, ExportError
from keras_mm.recipes import normalize_recipe
from keras_mm.serving.exporter import PARITY_FILE, store_weights_once
from test_training import tiny_recipe


def conv_model():
    inputs = keras.Input((16, 16, 3), name="x")
    x = keras.layers.Conv2D(32, 3, name="conv_a")(inputs)
    x = keras.layers.Conv2D(64, 3, strides=2, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def test_int8_kernels_are_the_float_kernels_to_half_a_step():
    model = conv_model()
    x = np.random.default_rng(0).normal(size=(5, 16, 16, 3)).astype("f4")
    floats = {v.path: v.numpy() for v in model.weights}
    small, summary = quantize_model(model)
    assert summary["quantized_layers"] == ["conv_a", "conv_b", "out"]
    assert summary["float_params"] == 0
    # the model given is left as it was
    assert all(np.array_equal(v.numpy(), floats[v.path])
               for v in model.weights)
    for name in ("conv_a", "conv_b"):
        layer = small.get_layer(name)
        assert layer._kernel.dtype == "int8"
        kernel = floats[f"{name}/kernel"]
        dequantized = np.asarray(layer.kernel)
        scale = np.asarray(layer.kernel_scale)
        assert scale.shape == (1, 1, 1, kernel.shape[-1])
        # symmetric abs-max per output channel: the whole int8 range used
        np.testing.assert_allclose(
            scale.reshape(-1), np.abs(kernel).max(axis=(0, 1, 2)) / 127,
            rtol=1e-6)
        assert np.all(np.abs(layer._kernel.numpy()).max(axis=(0, 1, 2))
                      == 127)
        assert np.all(np.abs(dequantized - kernel) <= scale / 2 + 1e-7)
        values, want_scale = quantize_int8(kernel)
        np.testing.assert_array_equal(layer._kernel.numpy(), values)
        np.testing.assert_array_equal(scale, want_scale)
    # the quantized convolutions compute the float convolution of the
    # dequantized kernel (the int8 Dense quantizes its inputs too: cut it)
    features = keras.Model(small.inputs[0],
                           small.get_layer("conv_b").output)
    reference = keras.Model(model.inputs[0],
                            model.get_layer("conv_b").output)
    reference.get_layer("conv_a").kernel.assign(
        small.get_layer("conv_a").kernel)
    reference.get_layer("conv_b").kernel.assign(
        small.get_layer("conv_b").kernel)
    np.testing.assert_allclose(features(x), reference(x), atol=1e-5)
    with pytest.raises(ExportError, match="choose one of int8, float8"):
        quantize_model(model, "int4")


def _export(model, folder):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec([None, 16, 16, 3])])
    store_weights_once(archive)
    archive.write_out(folder, verbose=False)
    return folder


def test_savedmodel_stores_each_weight_once_and_int8_shrinks_it(tmp_path):
    model = conv_model()
    folder = _export(model, str(tmp_path / "float"))
    stored = tf.train.list_variables(os.path.join(folder, "variables",
                                                  "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored
                 if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert values == model.count_params()
    small, _ = quantize_model(model)
    small_folder = _export(small, str(tmp_path / "int8"))
    x = np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype("f4")
    loaded = tf.saved_model.load(small_folder)
    np.testing.assert_allclose(loaded.serve(x), small(x), atol=1e-6)
    ratio = artefact_bytes(os.path.join(small_folder, "variables")) / \
        artefact_bytes(os.path.join(folder, "variables"))
    assert ratio < 0.3, ratio   # int8, per-channel scales, the index


def test_litert_files_lose_only_their_intermediate_tensor_names(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = conv_model()
    folder = tensor_saved_model(
        model, {"x": tf.TensorSpec([None, 16, 16, 3], name="x")},
        str(tmp_path / "sm"))
    out = str(tmp_path / "model.tflite")
    litert_convert.convert(folder, "none", out)
    with open(out, "rb") as f:
        blob = f.read()
    small = strip_tensor_names(blob)
    x = np.random.default_rng(2).normal(size=(1, 16, 16, 3)).astype("f4")
    results, names = [], []
    for content in (blob, small):
        interpreter = Interpreter(model_content=content)
        runner = interpreter.get_signature_runner("serving_default")
        assert list(runner.get_input_details()) == ["x"]
        results.append(runner(x=x))
        names.append({t["index"]: t["name"]
                      for t in interpreter.get_tensor_details()})
    assert list(results[1]) == list(results[0]) == ["out"]
    np.testing.assert_array_equal(results[1]["out"], results[0]["out"])
    np.testing.assert_allclose(results[1]["out"], model(x), atol=1e-5)
    ends = {d["index"] for d in Interpreter(model_content=small)
            .get_input_details() + Interpreter(model_content=small)
            .get_output_details()}
    assert all(names[1][i] == names[0][i] and names[0][i] for i in ends)
    assert all(not name for i, name in names[1].items() if i not in ends)
    dropped = sum(len(name) for i, name in names[0].items() if i not in ends)
    assert dropped > 100
    assert len(small) <= len(blob) - dropped


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from keras_mm.training import train

    tmp = tmp_path_factory.mktemp("compress")
    recipe = tiny_recipe(tmp / "demo", name="small", epochs=8,
                         sizes=(96, 32, 32))
    recipe["inputs"]["sensor"]["tower"] = {"encoder": "tcn", "dim": 8}
    recipe["export"] = {"base_dir": str(tmp / "saved_models"),
                        "quantize": "int8", "litert": "int8",
                        "max_metric_drop": 100, "calibration_batches": 2}
    result = train(recipe, runs_dir=str(tmp / "runs"), verbose=0)
    return {"tmp": tmp, "result": result,
            "models": tmp / "saved_models" / "small"}


def _test_batches(run):
    from keras_mm.training import run_data
    from keras_mm.training.finished_run import load_run

    recipe, model, preprocessors = load_run(run["result"].run_dir)
    pipe = run_data.make_pipeline(recipe, "test", preprocessors,
                                  {"fusion": {"presence_mask": True}},
                                  input_names=[t.name.split(":")[0]
                                               for t in model.inputs])
    batches = list(run_data.eval_dataset(pipe, 8))
    inputs = {k: np.concatenate([b[0][k].numpy() for b in batches])
              for k in batches[0][0]}
    labels = np.concatenate([b[1]["label"].numpy() for b in batches])
    return model, inputs, labels


def _check_head(entry, want, got, labels):
    np.testing.assert_allclose(entry["max_abs_error"],
                               np.abs(want - got).max(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(entry["mean_abs_error"],
                               np.abs(want - got).mean(), rtol=1e-4,
                               atol=1e-8)
    assert entry["top1_agreement"] == pytest.approx(
        np.mean(want.argmax(1) == got.argmax(1)))
    assert entry["reference"] == pytest.approx(
        100 * np.mean(want.argmax(1) == labels))
    assert entry["compressed"] == pytest.approx(
        100 * np.mean(got.argmax(1) == labels))


def test_int8_savedmodel_version_and_its_parity_report(run):
    result = run["result"]
    float_dir, int8_dir = result.export_path, str(run["models"] / "2")
    report = result.compressed_exports["savedmodel-int8"]
    assert report["path"] == os.path.abspath(int8_dir)
    with open(os.path.join(int8_dir, PARITY_FILE), encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(report))
    with open(os.path.join(int8_dir, "assets.extra", "keras_mm.json"),
              encoding="utf-8") as f:
        metadata = json.load(f)
    assert metadata["quantization"]["mode"] == "int8"
    assert "text_tower/embedding" in \
        metadata["quantization"]["quantized_layers"]
    with open(os.path.join(int8_dir, "assets.extra",
                           "keras_mm_verify.json"), encoding="utf-8") as f:
        assert json.load(f)["ok"]       # replayed in a fresh process
    # the report's figures, recomputed from the two published versions
    _, inputs, labels = _test_batches(run)
    heads = {"label": "classification"}
    want = SavedModelRunner(float_dir, heads)(inputs)["label"]
    got = SavedModelRunner(int8_dir, heads)(inputs)["label"]
    assert report["num_examples"] == len(labels)
    _check_head(report["heads"]["label"], want, got, labels)
    assert report["size_bytes"] == artefact_bytes(int8_dir) - \
        os.path.getsize(os.path.join(int8_dir, PARITY_FILE))
    assert report["weights_bytes"] == artefact_bytes(
        os.path.join(int8_dir, "variables"))
    assert report["reference_weights_bytes"] == artefact_bytes(
        os.path.join(float_dir, "variables"))
    assert report["weights_bytes"] < report["reference_weights_bytes"]
    assert report["latency_ms_p50"]["compressed"] > 0
    with open(run["models"] / "models.config", encoding="utf-8") as f:
        assert "base_path" in f.read()


LITERT_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    folder, inputs, out = sys.argv[1:4]
    with open(folder + "/preprocessing.json") as f:
        manifest = json.load(f)
    feed = dict(np.load(inputs))
    assert sorted(feed) == sorted(manifest["inputs"]), manifest["inputs"]
    runner = Interpreter(model_path=folder + "/" + manifest["model"]) \\
        .get_signature_runner("serving_default")
    rows = []
    for i in range(len(feed["presence"])):
        rows.append(runner(**{
            k: v[i:i + 1].astype(manifest["inputs"][k]["dtype"])
            for k, v in feed.items()})["label"])
    np.save(out, np.concatenate(rows))
    print("MODULES " + json.dumps(sorted(sys.modules)))
""")


def test_litert_int8_runs_without_tensorflow_and_its_report(run, tmp_path):
    report = run["result"].compressed_exports["litert-int8"]
    folder = run["models"].parent / "small_litert" / "1"
    assert report["path"] == os.path.abspath(folder / "model.tflite")
    with open(folder / "preprocessing.json", encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["outputs"]["label"]["class_names"][0] == "warm_low"
    vocab = manifest["preprocessors"]["text"]["config"]["vocab"]
    tokens = (folder / vocab["file"]).read_text("utf-8").splitlines()
    assert tokens[0] == "[PAD]" and len(tokens) == vocab["items"]
    assert manifest["id_bounds"]["text"] == len(tokens)
    model, inputs, labels = _test_batches(run)
    np.savez(tmp_path / "inputs.npz", **inputs)
    stdout = run_fresh_script(LITERT_SCRIPT, folder, tmp_path / "inputs.npz",
                              tmp_path / "out.npy")
    modules = json.loads(stdout.split("MODULES ")[-1])
    assert "tensorflow" not in modules and "keras" not in modules
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(
        got, LiteRTRunner(folder / "model.tflite")(inputs)["label"],
        atol=1e-6)
    want = np.asarray(model(inputs, training=False)["label"])
    _check_head(report["heads"]["label"], want, got, labels)
    assert report["size_bytes"] == os.path.getsize(folder / "model.tflite")
    # int8 weights and activations (this model is too small for the file
    # to shrink: the benchmark measures the ratios on AV-MNIST)
    tensors = LiteRTRunner(folder / "model.tflite").interpreter \
        .get_tensor_details()
    assert sum(t["dtype"] == np.int8 for t in tensors) > 10


def test_refused_exports_leave_no_version(run):
    models = run["models"]
    before = sorted(os.listdir(models))
    config = (models / "models.config").read_text("utf-8")
    # -100: refused whatever the drop (a test split of 32 rows moves 3.1
    # points an example, and int8 may well score higher than float32)
    with pytest.raises(ExportError, match="savedmodel-int8 export of "
                                          "'small' refused") as info:
        export_compressed(run["result"].run_dir, "int8", verify=False,
                          max_metric_drop=-100)
    assert "top-1 agreement" in str(info.value)
    assert sorted(os.listdir(models)) == before
    assert (models / "models.config").read_text("utf-8") == config
    litert = models.parent / "small_litert"
    before = sorted(os.listdir(litert))
    with pytest.raises(ExportError, match="litert-float16 export"):
        export_compressed(run["result"].run_dir, "float16", "litert",
                          max_metric_drop=-100)
    assert sorted(os.listdir(litert)) == before


def test_cli_export_compressed(run, capsys):
    run_dir = run["result"].run_dir
    assert main(["export", run_dir, "--quantize", "dynamic"]) != 0
    err = capsys.readouterr().err
    assert "--format litert" in err and len(err.strip().splitlines()) == 1
    assert main(["export", run_dir, "--format", "litert", "--quantize",
                 "float16", "--max-metric-drop", "100"]) == 0
    out = capsys.readouterr().out
    assert out.count("litert-float16:") == 1
    assert out.count("exported: ") == 1
    assert (run["models"].parent / "small_litert" / "2" /
            "model.tflite").exists()


@pytest.mark.parametrize("key,value", [("quantize", "int4"),
                                       ("litert", "int4"),
                                       ("max_metric_drop", -1)])
def test_recipe_compression_keys_are_checked(tmp_path, key, value):
    recipe = tiny_recipe(tmp_path / "demo", generate=False)
    recipe["export"] = {key: value}
    with pytest.raises(ConfigError, match=f"export.{key}"):
        normalize_recipe(recipe)
