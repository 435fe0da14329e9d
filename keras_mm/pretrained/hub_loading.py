"""Loading TF-Hub / SavedModel modules with one-line errors (offline by
design).

A handle is a TF-Hub URL (`https://tfhub.dev/...`,
`https://www.kaggle.com/models/...`, a `.tar.gz` URL, `gs://...`) or a local
SavedModel folder (what `tar -xzf` of a downloaded module gives).

- `resolve(handle, owner)`: the local folder of `handle`. A URL is looked up
  first in TF-Hub's own cache (`$TFHUB_CACHE_DIR/<sha1 of the handle>`, by
  default `<tmp>/tfhub_modules/...`), which needs no network and no
  `tensorflow_hub` import; else `tensorflow_hub.resolve` downloads it. With
  no network the error is one line that names the handle and the two ways to
  use a local copy.
- `load(handle, owner)`: `tf.saved_model.load` of the resolved folder
  (tensorflow_text imported first: TF-Hub's text modules hold its ops).
- `module_function(module, owner, handle)`: the callable of a loaded
  module (its restored `__call__`, as TF-Hub's Reusable SavedModel API
  defines it; else a `serve` / `serving_default` endpoint) as a
  `ModuleFunction`, which knows whether it takes `training=`, which
  variables it reads and what its outputs look like.
- `wrap_variables(variables)`: Keras variables that *share* the module's
  `tf.Variable`s (not copies): a Keras layer that holds them trains them,
  saves them in `.keras` files and restores them on load.

Measured with Keras 3.15 (the reason the towers do not use
`keras.layers.TFSMLayer`): TFSMLayer trains the module's variables too, but
it calls its endpoint without `training=` and without a mask, and a model
holding one only loads from `.keras` with `safe_mode=False`.
"""

import hashlib
import inspect
import os
import sys
import tempfile
import types

_URL_SCHEMES = ("http://", "https://", "gs://")

# Substrings of the errors urllib / tensorflow_hub raise when a download
# cannot reach its host.
_NETWORK_SIGNS = ("URLError", "Name or service not known",
                  "Temporary failure in name", "Network is unreachable",
                  "No route to host", "timed out", "Connection refused",
                  "Failed to resolve", "nodename nor servname")


def is_url(handle):
    """True when `handle` names a remote module (http(s):// or gs://)."""
    return isinstance(handle, str) and handle.startswith(_URL_SCHEMES)


def cache_dir():
    """TF-Hub's module cache: `$TFHUB_CACHE_DIR`, else
    `<system temp>/tfhub_modules` (where `tensorflow_hub` puts them)."""
    return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), "tfhub_modules")


def cache_folder(handle):
    """The folder TF-Hub caches `handle` in (it may not exist)."""
    return os.path.join(cache_dir(),
                        hashlib.sha1(handle.encode("utf8")).hexdigest())


def is_saved_model(folder):
    """True when `folder` holds a saved_model.pb (local, or gs:// where
    tensorflow_hub's UNCOMPRESSED load format resolves to one)."""
    names = ("saved_model.pb", "saved_model.pbtxt")
    if is_url(folder):
        import tensorflow as tf
        return any(tf.io.gfile.exists(f"{folder.rstrip('/')}/{name}")
                   for name in names)
    return os.path.isdir(folder) and any(
        os.path.exists(os.path.join(folder, name)) for name in names)


def _local_copy_help(handle):
    return (f"download {handle}?tf-hub-format=compressed where there is a "
            "network, untar it (tar -xzf) into a folder and set the handle "
            "to that folder, or untar it into "
            f"{cache_folder(handle)} (TFHUB_CACHE_DIR/<sha1 of the handle>; "
            "set TFHUB_CACHE_DIR to choose the cache) to keep the handle")


def check_handle(handle, owner):
    """The handle as a string (a path-like object too); refuses one that
    cannot be a handle, before anything is loaded."""
    if isinstance(handle, os.PathLike):
        handle = os.fspath(handle)
    if not isinstance(handle, str) or not handle.strip():
        raise ValueError(f"{owner}: handle={handle!r} must be a TF-Hub URL "
                         "(https://tfhub.dev/..., https://www.kaggle.com/"
                         "models/...) or a local SavedModel folder")
    return handle


def _import_tensorflow_hub(owner, handle):
    """`tensorflow_hub`, which imports `pkg_resources` at import time: that
    module is gone from setuptools >= 81 (this stack has 84), so a stand-in
    holding the one function it uses (`parse_version`) is put in place for
    the import only."""
    try:
        import tensorflow_hub
        return tensorflow_hub
    except ModuleNotFoundError as error:
        if error.name != "pkg_resources":
            raise ValueError(
                f"{owner}: handle {handle!r} needs tensorflow_hub to "
                f"download it and it cannot be imported ({error}); "
                f"{_local_copy_help(handle)}") from None
    from packaging.version import parse

    stand_in = types.ModuleType("pkg_resources")
    stand_in.parse_version = parse
    sys.modules["pkg_resources"] = stand_in
    try:
        import tensorflow_hub
    except ImportError as error:
        raise ValueError(
            f"{owner}: handle {handle!r} needs tensorflow_hub to download "
            f"it and it cannot be imported ({error}); "
            f"{_local_copy_help(handle)}") from None
    finally:
        if sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]
    return tensorflow_hub


def resolve(handle, owner):
    """The local SavedModel folder of `handle` (downloaded if need be).

    Raises:
        ValueError: one line naming the handle: no such folder, not a
            SavedModel, or a URL that cannot be downloaded (no network),
            with how to use a local copy.
    """
    handle = check_handle(handle, owner)
    if not is_url(handle):
        folder = os.path.expanduser(handle)
        if os.path.isfile(folder) and folder.endswith((".tar.gz", ".tgz",
                                                       ".tar")):
            raise ValueError(f"{owner}: handle {handle!r} is an archive; "
                             "untar it (tar -xzf) into a folder and set the "
                             "handle to that folder")
        if not os.path.isdir(folder):
            raise ValueError(f"{owner}: handle {handle!r}: no such folder "
                             "(a local handle is a SavedModel folder, e.g. "
                             "a downloaded TF-Hub module untarred)")
        if not is_saved_model(folder):
            raise ValueError(f"{owner}: handle {handle!r} holds no "
                             "saved_model.pb: not a SavedModel folder")
        return folder
    cached = cache_folder(handle)
    if is_saved_model(cached):
        return cached
    hub = _import_tensorflow_hub(owner, handle)
    try:
        folder = hub.resolve(handle)
    except Exception as error:  # urllib / tarfile / hub raise many kinds
        text = f"{type(error).__name__}: {error}"
        first = text.strip().splitlines()[0]
        if any(sign in text for sign in _NETWORK_SIGNS):
            raise ValueError(
                f"{owner}: handle {handle!r} needs a download and there is "
                f"no network here ({first}); {_local_copy_help(handle)}") \
                from None
        raise ValueError(f"{owner}: cannot download handle {handle!r} "
                         f"({first}); {_local_copy_help(handle)}") from None
    if not is_saved_model(folder):
        raise ValueError(f"{owner}: handle {handle!r} resolved to {folder}, "
                         "which holds no saved_model.pb (a TF1 hub.Module "
                         "is not supported; use a TF2 SavedModel)")
    return folder


def load(handle, owner):
    """`tf.saved_model.load` of `resolve(handle)`; (module, folder)."""
    import importlib

    import tensorflow as tf

    # tensorflow_text registers the ops TF-Hub's text modules use.
    importlib.import_module("tensorflow_text")

    folder = resolve(handle, owner)
    try:
        return tf.saved_model.load(folder), folder
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{owner}: cannot load the SavedModel of handle "
                         f"{handle!r} ({folder}): {first}") from None


class ModuleFunction:
    """The callable of a loaded module, with what the towers need to know.

    Attributes:
        fn: the restored function (or signature).
        by_keywords: True for a signature (called with `**inputs`).
        takes_training: True when `fn` has a `training` argument.
        concrete_functions: its traced variants.
    """

    def __init__(self, fn, by_keywords):
        self.fn = fn
        self.by_keywords = by_keywords
        try:
            parameters = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            parameters = {}
        self.takes_training = "training" in parameters and not by_keywords
        if hasattr(fn, "concrete_functions"):
            self.concrete_functions = list(fn.concrete_functions)
        else:
            self.concrete_functions = [fn]

    def __call__(self, inputs, training=False):
        if self.by_keywords:
            return self.fn(**inputs)
        if self.takes_training:
            return self.fn(inputs, training=bool(training))
        return self.fn(inputs)

    def variables(self):
        """The `tf.Variable`s its concrete functions read, trainable ones
        first, each once."""
        seen, trainable, other = set(), [], []
        for concrete in self.concrete_functions:
            for v in concrete.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    (trainable if v.trainable else other).append(v)
        return trainable + other

    def input_signature(self):
        """The positional input spec of the first concrete function (the
        `training=False` one where there is a choice)."""
        concrete = self._inference_concrete()
        args, kwargs = concrete.structured_input_signature
        if self.by_keywords:
            return kwargs
        return args[0] if args else None

    def output_signature(self):
        """`structured_outputs` of the inference concrete function (a dict
        of TensorSpecs for TF-Hub's text encoders, one spec for images)."""
        import tensorflow as tf

        outputs = self._inference_concrete().structured_outputs
        return tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, t.dtype)
            if hasattr(t, "shape") else t, outputs)

    def _inference_concrete(self):
        for concrete in self.concrete_functions:
            args, _ = getattr(concrete, "structured_input_signature",
                              ((), {}))
            if len(args) > 1 and args[1] is False:
                return concrete
        return self.concrete_functions[0]


def module_function(module, owner, handle):
    """The `ModuleFunction` of a loaded module: its restored `__call__`
    (TF-Hub's convention), else its `serve` endpoint (Keras' `export`),
    else its `serving_default` signature."""
    fn = module.__dict__.get("__call__") if hasattr(module, "__dict__") \
        else None
    if fn is not None and hasattr(fn, "concrete_functions"):
        return ModuleFunction(fn, by_keywords=False)
    serve = getattr(module, "serve", None)
    if serve is not None and hasattr(serve, "concrete_functions"):
        return ModuleFunction(serve, by_keywords=False)
    signatures = getattr(module, "signatures", {})
    if "serving_default" in signatures:
        return ModuleFunction(signatures["serving_default"],
                              by_keywords=True)
    raise ValueError(f"{owner}: the SavedModel of handle {handle!r} is not "
                     "callable: it has no __call__, serve endpoint or "
                     "serving_default signature")


def wrap_variables(variables):
    """Keras variables sharing each `tf.Variable` of `variables` (the
    TensorFlow backend keeps a `tf.Variable` initializer as its value)."""
    import keras

    wrapped = []
    for v in variables:
        name = v.name.split(":")[0].replace("/", "_") or "variable"
        wrapped.append(keras.Variable(initializer=v, shape=v.shape,
                                      dtype=v.dtype.name,
                                      trainable=v.trainable, name=name))
    for keras_variable, v in zip(wrapped, variables):
        if keras_variable.value is not v:
            raise RuntimeError("keras.Variable did not keep the module's "
                               "tf.Variable as its value")
    return wrapped


__all__ = ["ModuleFunction", "cache_dir", "cache_folder", "check_handle",
           "is_url", "load", "module_function", "resolve", "wrap_variables"]
