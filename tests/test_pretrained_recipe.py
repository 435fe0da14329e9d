"""The shipped pretrained recipe end to end, on tiny local presets (issue
14): `recipes/pretrained_text_image.yaml` with its presets pointed at a
keras-hub BERT and a ResNet preset written by `save_to_preset` in a temp
folder trains, exports and verifies; a fresh process that imports only
tensorflow and tensorflow_text gives, from the raw strings and image bytes,
the predictions of the in-process Keras model on the pipeline's tensors."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tiny_presets_image import resnet_preset
from tiny_presets_text import bert_preset

RECIPE = os.path.join(os.path.dirname(__file__), "..", "recipes",
                      "pretrained_text_image.yaml")

FRESH = r"""
import glob, importlib.abc, importlib.util, json, os, sys

HIDDEN = ("keras", "tf_keras", "keras_hub", "keras_mm")


class Hide(importlib.abc.MetaPathFinder):
    # The HIDDEN packages look uninstalled (as in the verifier).

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) \
                if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None


sys.meta_path[:] = [Hide(list(sys.meta_path))]
import numpy as np
import tensorflow as tf
# tensorflow-text's ops only, as TF Serving links them.
text = importlib.util.find_spec("tensorflow_text").submodule_search_locations
for library in glob.glob(os.path.join(text[0], "python", "ops", "_*.so")):
    tf.load_op_library(library)
path, texts_file, images_file, out = sys.argv[1:]
texts = json.load(open(texts_file))
images = [open(p, "rb").read() for p in json.load(open(images_file))]
serve = tf.saved_model.load(path).signatures["serving_default"]
result = serve(text=tf.constant(texts), image=tf.constant(images))
np.savez(out, **{k: v.numpy() for k, v in result.items()})
assert not [m for m in sys.modules if m.partition(".")[0] in HIDDEN]
"""


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    return {"text": bert_preset(os.fspath(root / "bert")),
            "image": resnet_preset(os.fspath(root / "resnet"))}


@pytest.mark.slow
def test_pretrained_recipe_trains_exports_and_serves_raw_inputs(
        presets, tmp_path):
    from keras_mm.builder import model_spec
    from keras_mm.recipes import load_recipe
    from keras_mm.training import load_run, train
    from keras_mm.training.run_data import eval_dataset, make_pipeline

    data = tmp_path / "demo"
    overrides = [
        f"inputs.text.preset={presets['text']}",
        f"inputs.image.preset={presets['image']}",
        "training.epochs=2", "training.batch_size=8",
        "training.tensorboard=false",
        f"data.splits.train={data / 'train.csv'}",
        f"data.splits.val={data / 'val.csv'}",
        f"data.splits.test={data / 'test.csv'}",
        f"data.generate.out_dir={data}",
        "data.generate.num_train=32", "data.generate.num_val=8",
        "data.generate.num_test=8",
        f"export.base_dir={tmp_path / 'saved'}",
        # Random-weight tiny presets need not beat chance in 2 epochs.
        "export.allow_untrained=true",
    ]
    recipe = load_recipe(RECIPE, overrides)
    assert recipe["inputs"]["text"]["preset"] == presets["text"]
    result = train(recipe, runs_dir=tmp_path / "runs", verbose=0)
    assert result.export_path and os.path.exists(
        os.path.join(result.export_path, "saved_model.pb"))
    assert result.verify_report["ok"], result.verify_report

    # The frozen image tower did not move; the text tower did.
    _, model, preprocessors = load_run(result.run_dir)
    assert type(preprocessors["text"]).__name__ == "TextPresetPreprocessor"
    assert type(preprocessors["image"]).__name__ == "ImagePresetPreprocessor"
    assert not model.get_layer("image_tower").trainable
    assert model.get_layer("text_tower").trainable

    with open(data / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    texts = [r["text"] for r in rows]
    images = [os.path.join(data, r["image"]) if not os.path.isabs(
        r["image"]) else r["image"] for r in rows]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "images.json").write_text(json.dumps(images))
    out = tmp_path / "fresh.npz"
    subprocess.run([sys.executable, "-c", FRESH, result.export_path,
                    str(tmp_path / "texts.json"),
                    str(tmp_path / "images.json"), str(out)],
                   check=True, timeout=300)
    served = np.load(out)

    pipe = make_pipeline(recipe, "test", preprocessors, model_spec(model),
                         input_names=[t.name.split(":")[0]
                                      for t in model.inputs])
    features = next(iter(eval_dataset(pipe, len(rows))))[0]
    want = np.asarray(model(features, training=False)["label"])
    np.testing.assert_allclose(served["label_probabilities"], want,
                               atol=1e-5, rtol=0)
    assert served["label_probabilities"].shape == (len(rows), 4)
