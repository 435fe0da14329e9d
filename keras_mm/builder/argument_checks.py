"""Value checks of layer / preprocessor arguments, and size bounds.

`check_argument_values` checks a section's keyword arguments against the
types of the class's defaults before the class is constructed, so that a
bad value is named by its key and expected type
(`inputs.image.tower.dim: expected an integer, got str 'abc'`) instead of
the constructor's `invalid literal for int()`. The bounds refuse sizes
that pass every type check and then hang or exhaust memory.
"""

from keras_mm.builder import schema
from keras_mm.errors import ConfigError

# Upper bounds on sizes that pass every type check and then hang or
# exhaust memory while the model is built (`fusion.units: 1000000000`).
# Layer widths (and each entry of a width list) up to MAX_WIDTH; a
# per-example input of at most MAX_INPUT_ELEMENTS values.
MAX_WIDTH = 16384
WIDTH_ARGUMENTS = ("units", "dim", "embedding_dim", "hidden_units",
                   "intermediate_dim", "projection_dim", "rnn_units",
                   "filters", "base_filters", "rank", "num_heads",
                   "num_layers", "num_mel_bins", "num_mfcc", "kernel_size",
                   "patch_size")
MAX_INPUT_ELEMENTS = 1 << 26


def _expected(default):
    """`(check, words)` for the type of an argument's default, or None."""
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool)), "true or false"
    if schema.is_int(default):
        return schema.is_int, "an integer"
    if isinstance(default, float):
        return (lambda v: isinstance(v, (int, float))
                and not isinstance(v, bool)), "a number"
    return None


def check_argument_values(kwargs, arguments, key_path):
    """Checks argument values against the type of their defaults (an int
    default wants an integer, a float one a number, a bool one true or
    false; None is always allowed), and layer widths against `MAX_WIDTH`.

    Errors name the key and the expected type, e.g.
    `inputs.image.tower.dim: expected an integer, got 'abc'`.
    """
    for key, value in kwargs.items():
        if value is None or key not in arguments:
            continue
        expected = _expected(arguments[key])
        if expected is not None and not expected[0](value):
            raise ConfigError(f"{key_path}.{key}",
                              f"expected {expected[1]}, got "
                              f"{type(value).__name__} {value!r}")
        if key in WIDTH_ARGUMENTS:
            values = value if isinstance(value, (list, tuple)) else [value]
            for i, item in enumerate(values):
                if schema.is_int(item) and item > MAX_WIDTH:
                    where = f"[{i}]" if value is not item else ""
                    raise ConfigError(
                        f"{key_path}.{key}{where}",
                        f"{item!r} is above the limit of {MAX_WIDTH} (a "
                        "layer this wide needs more memory than a model "
                        "should; use a smaller value)")


def input_elements(shape):
    """Values per example of a shape (a Python int, no overflow)."""
    total = 1
    for d in shape:
        total *= int(d)
    return total


def check_input_size(shape, key_path):
    """Refuses a per-example input of more than `MAX_INPUT_ELEMENTS`."""
    elements = input_elements(shape)
    if elements > MAX_INPUT_ELEMENTS:
        raise ConfigError(
            key_path, f"{list(shape)} is {elements:,} values per example, "
            f"above the limit of {MAX_INPUT_ELEMENTS:,}; use a smaller size")
