"""Name -> class registries used by the builders.

Recipes and specs name things by short type names (`"gated"`, `"image"`).
A `Registry` maps those names to classes; registering a name twice raises,
and looking up an unknown name raises a `ConfigError` listing the allowed
names.

`register_all()` imports every module that registers something: the Keras
serializable classes (`keras_mm>MultimodalModel`, the towers, fusion layers,
heads and blocks, so that a plain `keras.models.load_model` finds them) and
the registries below. `import keras_mm` calls it as soon as Keras is
imported (see `keras_mm/__init__.py`).
"""

from keras_mm.errors import not_one_of


class Registry:
    """A mapping from type names to classes.

    Args:
        kind: what is registered (`"tower"`, `"fusion"`...), used in messages.

    Example:

    >>> FUSIONS = Registry("fusion")
    >>> @FUSIONS.register("concat")
    ... class ConcatFusion: ...
    >>> FUSIONS.get("concat") is ConcatFusion
    True
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name):
        """Class decorator registering the class under `name`."""

        def decorator(cls):
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(
                    f"{self.kind} type {name!r} is already registered to "
                    f"{self._entries[name].__qualname__}; pick another name"
                )
            self._entries[name] = cls
            return cls

        return decorator

    def unregister(self, name):
        """Removes `name` (e.g. a test's or a notebook's own class)."""
        if name not in self._entries:
            raise KeyError(f"{self.kind} type {name!r} is not registered")
        del self._entries[name]

    def get(self, name, key_path=None):
        """Returns the class for `name` or raises a ConfigError."""
        if name not in self._entries:
            raise not_one_of(key_path or f"{self.kind}.type", name,
                             self.names())
        return self._entries[name]

    def names(self):
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def items(self):
        return sorted(self._entries.items())


TOWERS = Registry("tower")  # modality -> tower class
FUSIONS = Registry("fusion")  # fusion type -> fusion class
HEADS = Registry("head")  # head type -> head class
PREPROCESSORS = Registry("preprocessor")  # modality -> preprocessor class
# Pretrained towers, keyed "<modality>_<source>" (source: "preset" for a
# keras-hub preset, "hub" for a TF-Hub / SavedModel module). An input that
# names a `preset` or `hub` gets its tower here and its preprocessor under
# the same key in PREPROCESSORS (e.g. "text_preset").
PRETRAINED_TOWERS = Registry("pretrained tower")
# `ImageTower(encoder=NAME)`'s architectures (`ImageEncoder` subclasses).
IMAGE_ENCODERS = Registry("image encoder")
# `AudioTower(encoder=NAME)`'s architectures (`AudioEncoder` subclasses).
AUDIO_ENCODERS = Registry("audio encoder")
# `TextTower(encoder=NAME)`'s architectures (`TextEncoder` subclasses).
TEXT_ENCODERS = Registry("text encoder")
# `SensorTower(encoder=NAME)`'s architectures (`SensorEncoder` subclasses).
SENSOR_ENCODERS = Registry("sensor encoder")
# `VideoTower(encoder=NAME)`'s architectures (`VideoEncoder` subclasses).
VIDEO_ENCODERS = Registry("video encoder")


# Modules whose import registers classes (Keras serializables and the
# registries above). The builder's MultimodalModel is the model class of
# every `.keras` file the trainer writes.
REGISTERING_MODULES = ("keras_mm.layers", "keras_mm.towers",
                       "keras_mm.pretrained", "keras_mm.fusion",
                       "keras_mm.heads", "keras_mm.builder.multimodal_model",
                       "keras_mm.training.optimizers",
                       "keras_mm.data")


def preprocessor_class(name, entry):
    """The preprocessor class of input `name` (a recipe input `entry`) and
    the arguments its `preset` / `hub` key sets: `<modality>_preset` with
    `preset=...`, `<modality>_hub` with `handle=<hub.preprocessor>` where
    the hub entry names one, else the modality's own preprocessor.

    Raises:
        ConfigError: a TF-Hub text encoder without its preprocessing
            module, or a modality without a pretrained preprocessor.
    """
    import keras_mm.data  # noqa: F401  (fills PREPROCESSORS)
    import keras_mm.pretrained  # noqa: F401
    from keras_mm.errors import ConfigError

    preset, hub = entry.get("preset"), entry.get("hub")
    if isinstance(hub, str):
        hub = {"encoder": hub}
    modality = entry["modality"]
    if preset is not None:
        return PREPROCESSORS.get(f"{modality}_preset",
                                 key_path=f"inputs.{name}.preset"), \
            {"preset": preset}
    if hub is not None and hub.get("preprocessor") is not None:
        return PREPROCESSORS.get(f"{modality}_hub",
                                 key_path=f"inputs.{name}.hub"), \
            {"handle": hub["preprocessor"]}
    if hub is not None and modality == "text":
        raise ConfigError(f"inputs.{name}.hub.preprocessor",
                          "a TF-Hub text encoder needs its preprocessing "
                          "module: hub: {encoder: ..., preprocessor: ...}")
    return PREPROCESSORS.get(modality, key_path=f"inputs.{name}.modality"), {}


def register_all():
    """Imports every registering module (idempotent; imports Keras/TF).

    Example:

    >>> register_all()
    >>> "gated" in FUSIONS and "image" in TOWERS
    True
    """
    import importlib

    for module in REGISTERING_MODULES:
        importlib.import_module(module)
