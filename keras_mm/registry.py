"""Name -> class registries used by the builders.

Recipes and specs name things by short type names (`"gated"`, `"image"`).
A `Registry` maps those names to classes; registering a name twice raises,
and looking up an unknown name raises a `ConfigError` listing the allowed
names.

`register_all()` imports every module that registers something: the Keras
serializable classes (`keras_mm>MultimodalModel`, the towers, fusion layers,
heads and blocks, so that a plain `keras.models.load_model` finds them) and
the four registries below. `import keras_mm` calls it as soon as Keras is
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


# Modules whose import registers classes (Keras serializables and the four
# registries above). The builder's MultimodalModel is the model class of
# every `.keras` file the trainer writes.
REGISTERING_MODULES = ("keras_mm.layers", "keras_mm.towers", "keras_mm.fusion",
                       "keras_mm.heads", "keras_mm.builder.multimodal_model",
                       "keras_mm.data")


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
