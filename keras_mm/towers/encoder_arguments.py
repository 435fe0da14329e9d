"""Building a tower's encoder from the tower's arguments."""

import inspect


def make_encoder(registry, encoder, arguments, **layer_kwargs):
    """`registry.get(encoder)` built with the `arguments` its `__init__` names.

    A tower takes the arguments of all its encoders (one recipe key each);
    each encoder class takes, and checks, only its own. `layer_kwargs`
    (`dtype`, `name`) go to every encoder.

    Example:

    >>> from keras_mm.registry import IMAGE_ENCODERS
    >>> encoder = make_encoder(IMAGE_ENCODERS, "cnn",
    ...                        {"filters": (4,), "patch_size": 7},
    ...                        name="image_encoder")
    >>> type(encoder).__name__, encoder.filters
    ('CNNImageEncoder', (4,))
    """
    cls = registry.get(encoder)
    takes = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in arguments.items() if k in takes},
               **layer_kwargs)
