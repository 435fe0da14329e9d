"""Output heads: classification, binary, multilabel, regression."""

import numpy as np
import keras
import pytest

from helpers import run_layer_checks
from keras_mm.heads.binary_head import BinaryHead
from keras_mm.heads.classification_head import ClassificationHead
from keras_mm.heads.multilabel_head import MultilabelHead
from keras_mm.heads.regression_head import RegressionHead
from keras_mm.registry import HEADS

RNG = np.random.RandomState(0)
X = RNG.normal(size=(4, 8)).astype("float32")

CASES = [
    (ClassificationHead, {"num_classes": 3, "class_names": ["x", "y", "z"],
                          "hidden_units": [8], "dropout": 0.1}, 3),
    (BinaryHead, {"hidden_units": [8]}, 1),
    (MultilabelHead, {"num_labels": 5, "label_names": list("abcde")}, 5),
    (RegressionHead, {"units": 2, "hidden_units": [8, 4]}, 2),
]
IDS = ["classification", "binary", "multilabel", "regression"]


def _labels(cls, width):
    rng = np.random.RandomState(3)
    if cls is ClassificationHead:
        return rng.randint(0, width, size=(4,))
    if cls is RegressionHead:
        return rng.normal(size=(4, width)).astype("float32")
    return rng.randint(0, 2, size=(4, width)).astype("float32")


@pytest.mark.parametrize("cls,kwargs,width", CASES, ids=IDS)
def test_layer_checks(cls, kwargs, width, tmp_path):
    """The battery; its one (XLA) fit trains the head on real labels with
    its own `default_loss()` and `default_metrics()`."""
    head = cls(**kwargs)
    metrics = head.default_metrics()
    assert metrics and head.default_metrics()[0] is not metrics[0]  # fresh
    out = run_layer_checks(
        cls, kwargs, X, tmp_path=tmp_path, expected_output_shape=(4, width),
        fit_target=_labels(cls, width), fit_loss=head.default_loss(),
        fit_metrics=metrics,
        # by design (BaseHead) the output Dense and activation are float32
        float32_sublayers=("logits", cls.output_activation),
        output_dtype="float32")
    out = np.asarray(out)
    if cls is ClassificationHead:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)
    if cls in (BinaryHead, MultilabelHead):
        assert np.all((out > 0) & (out < 1))


@pytest.mark.parametrize("cls,kwargs,width", CASES, ids=IDS)
def test_float32_output_under_mixed_bfloat16(cls, kwargs, width):
    keras.config.set_dtype_policy("mixed_bfloat16")
    head = cls(**kwargs)
    out = head(X)
    assert out.dtype == "float32"
    # the hidden layers do compute in bfloat16; only the output is float32
    for dense in head.hidden_layers:
        assert dense.compute_dtype == "bfloat16"
    # symbolic too
    inp = keras.Input((8,))
    assert head(inp).dtype == "float32"
    model = keras.Model(inp, head(inp))
    assert model(X).dtype == "float32"


def test_classification_loss_matches_cross_entropy():
    head = ClassificationHead(3)
    probs = np.asarray(head(X))
    y = np.array([0, 2, 1, 1])
    expected = -np.mean(np.log(probs[np.arange(4), y]))
    loss = float(head.default_loss()(y, probs))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_class_names_survive_save(tmp_path):
    head = ClassificationHead(3, class_names=["cat", "dog", "bird"],
                              name="label_head")
    inp = keras.Input((8,))
    model = keras.Model(inp, head(inp))
    path = str(tmp_path / "head.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("label_head").class_names == ["cat", "dog",
                                                          "bird"]


@pytest.mark.parametrize("make,match", [
    (lambda: ClassificationHead(3, class_names=["a", "b"]),
     r"class_names has 2 names but num_classes=3"),
    (lambda: ClassificationHead(2, class_names=["a", "a"]), "duplicate"),
    (lambda: ClassificationHead(2, class_names="ab"), "list of strings"),
    (lambda: ClassificationHead(2, class_names=[0, 1]), "list of strings"),
    (lambda: ClassificationHead(1), "BinaryHead"),
    (lambda: ClassificationHead(0), "num_classes"),
    (lambda: ClassificationHead(2.5), "num_classes"),
    (lambda: MultilabelHead(3, label_names=["a"]),
     r"label_names has 1 names but num_labels=3"),
    (lambda: RegressionHead(units=0), "units"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_registered():
    assert HEADS.get("classification") is ClassificationHead
    assert HEADS.get("binary") is BinaryHead
    assert HEADS.get("multilabel") is MultilabelHead
    assert HEADS.get("regression") is RegressionHead
