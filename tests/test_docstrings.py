"""The `>>>` examples in the layer packages' docstrings run as doctests.

Every module of keras_mm.towers, .fusion, .heads, .layers, .ops,
.pretrained and .compression is collected with pkgutil; each module's
examples must pass, a sensible number of examples must be found (so the
test cannot pass on an empty collection), and every public class must carry at least one example
(the pretrained ones skip theirs: they need a preset folder).
"""

import doctest
import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ("keras_mm.towers", "keras_mm.fusion", "keras_mm.heads",
            "keras_mm.layers", "keras_mm.ops", "keras_mm.pretrained",
            "keras_mm.compression")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# Public classes that carry no example, with the reason.
NO_EXAMPLE = {
    "BaseHead": "abstract: a subclass sets output_units() and the losses",
    "ModuleFunction": "internal: the hub towers' wrapper of a restored "
                      "SavedModel function",
    "SavedModelRunner": "needs an exported SavedModel (test_compression)",
    "LiteRTRunner": "needs a .tflite file (test_compression)",
}


def _module_names():
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names.extend(info.name for info in pkgutil.walk_packages(
            module.__path__, package + "."))
    return names


MODULES = _module_names()


def _doctests(module_name):
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder().find(module) if t.examples]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in _doctests(module_name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_examples_are_collected():
    # 31 modules, about 30 docstrings with 100 examples when written.
    assert len(MODULES) >= 30, MODULES
    assert {"keras_mm.towers.image_tower", "keras_mm.fusion.base_fusion",
            "keras_mm.heads.binary_head", "keras_mm.layers.utils",
            "keras_mm.ops.audio_features"} <= set(MODULES)
    tests = [t for name in MODULES for t in _doctests(name)]
    assert len(tests) >= 28, [t.name for t in tests]
    assert sum(len(t.examples) for t in tests) >= 90


def test_every_public_class_has_an_example():
    missing = []
    for name in MODULES:
        module = importlib.import_module(name)
        for cls_name, cls in vars(module).items():
            if (not inspect.isclass(cls) or cls.__module__ != name
                    or cls_name.startswith("_") or cls_name in NO_EXAMPLE):
                continue
            doc = inspect.getdoc(cls) or ""
            if "Example:" not in doc or ">>>" not in doc:
                missing.append(f"{name}.{cls_name}")
    assert not missing, f"classes without an `Example:` block: {missing}"
