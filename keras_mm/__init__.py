"""keras_mm: multimodal models in Keras 3 on TensorFlow.

`import keras_mm` is enough for a plain `keras.models.load_model(
"runs/x/best.keras")`: the Keras serializable classes (`MultimodalModel`,
towers, fusion layers, heads) are registered as soon as Keras is imported,
before or after keras_mm (`keras_mm.registry.register_all`). The import
itself stays light (no TensorFlow import, so the CLI can set TensorFlow's
logging first); `keras_mm.load_model(path)` registers and loads in one call.
The model-building functions below are imported on first use:

- `keras_mm.build_model(spec)`, `keras_mm.compile_model(model, spec)`,
- `keras_mm.build_unimodal_spec(spec, input_name)`,
  `keras_mm.model_spec(model)`,
- `keras_mm.load_recipe(path, overrides=[...])`,
- `keras_mm.export(model, preprocessors, name, ...)` (TF Serving export).
"""

import importlib.abc
import importlib.util
import sys
import warnings

from keras_mm.version import __version__  # noqa: F401

_LAZY = {
    "build_model": "keras_mm.builder.model_builder",
    "compile_model": "keras_mm.builder.model_builder",
    "build_unimodal_spec": "keras_mm.builder.model_builder",
    "model_spec": "keras_mm.builder.model_builder",
    "load_recipe": "keras_mm.recipes.recipe",
    "export": "keras_mm.serving.exporter",
}

__all__ = ["__version__", "load_model"] + sorted(_LAZY)


def _register():
    try:
        from keras_mm.registry import register_all
        register_all()
    except Exception as error:  # noqa: BLE001 - never break `import keras`
        warnings.warn(f"keras_mm could not register its Keras classes "
                      f"({type(error).__name__}: {error}); "
                      "keras.models.load_model will not find them",
                      RuntimeWarning, stacklevel=2)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """One-shot import hook: once `keras` has been imported (by anyone),
    registers keras_mm's Keras classes."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None or \
                not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register
        return spec


def _install_registration():
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "saving"):
        _register()                     # Keras is already there
    elif not any(isinstance(f, _RegisterAfterKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterKeras())


_install_registration()


def load_model(path, compile=True, **kwargs):
    """`keras.saving.load_model(path)` with keras_mm's classes registered.

    Args:
        path: a `.keras` file, e.g. `runs/<name>/best.keras`.
        compile: as in Keras.
        **kwargs: other `keras.saving.load_model` arguments.

    Example:

    >>> model = keras_mm.load_model("runs/demo/best.keras")  # doctest: +SKIP
    """
    import keras

    _register()
    return keras.saving.load_model(path, compile=compile, **kwargs)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_mm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
