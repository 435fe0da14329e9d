"""keras_mm: multimodal models in Keras 3 on TensorFlow.

`import keras_mm` stays light (no TensorFlow import); the model-building
functions below are imported on first use:

- `keras_mm.build_model(spec)`, `keras_mm.compile_model(model, spec)`,
- `keras_mm.build_unimodal_spec(spec, input_name)`,
  `keras_mm.model_spec(model)`,
- `keras_mm.load_recipe(path, overrides=[...])`,
- `keras_mm.export(model, preprocessors, name, ...)` (TF Serving export).
"""

from keras_mm.version import __version__  # noqa: F401

_LAZY = {
    "build_model": "keras_mm.builder.model_builder",
    "compile_model": "keras_mm.builder.model_builder",
    "build_unimodal_spec": "keras_mm.builder.model_builder",
    "model_spec": "keras_mm.builder.model_builder",
    "load_recipe": "keras_mm.recipes.recipe",
    "export": "keras_mm.serving.exporter",
}

__all__ = ["__version__"] + sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_mm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
