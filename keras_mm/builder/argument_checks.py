"""Checks of layer / preprocessor arguments: names, values, size bounds.

`check_class_kwargs` checks a section's keys against the class's
constructor signature (`constructor_arguments`: unknown keys, required
ones left out) and `instantiate` constructs it, naming the key path of
the argument a constructor error is about.

`check_argument_values` checks a section's keyword arguments against the
types of the class's defaults before the class is constructed, so that a
bad value is named by its key and expected type
(`inputs.image.tower.dim: expected an integer, got str 'abc'`) instead of
the constructor's `invalid literal for int()`. The bounds refuse sizes
that pass every type check and then hang or exhaust memory.
"""

import inspect
import re

from keras_mm.builder import schema
from keras_mm.errors import ConfigError

# Layer arguments set by the builder, never by the spec.
BUILDER_OWNED = ("name", "dtype", "modalities", "input_shape", "batch_size",
                 "autocast", "input_dim")
_REQUIRED = inspect.Parameter.empty

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


def constructor_arguments(cls):
    """`{argument: default}` of `cls.__init__` (and of the parents it
    forwards `**kwargs` to, up to the Keras base classes). Required
    arguments have the default `inspect.Parameter.empty`."""
    arguments = {}
    for klass in cls.__mro__:
        if klass is object or klass.__module__.split(".")[0] == "keras":
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for parameter in list(inspect.signature(init).parameters.values())[1:]:
            if parameter.kind is parameter.VAR_KEYWORD:
                forwards = True
            elif parameter.kind is not parameter.VAR_POSITIONAL:
                arguments.setdefault(parameter.name, parameter.default)
        if not forwards:
            break
    return {k: v for k, v in arguments.items() if k not in BUILDER_OWNED}


def _plain(value, key_path):
    """Checks that a value is JSON-like (recipes and specs are plain data)."""
    try:
        return schema.plain(value)
    except schema.PydanticCustomError as error:
        raise ConfigError(key_path, error.context["message"]) from None


def _argument_from_error(message, allowed):
    """The constructor argument a check_choice-style message names."""
    for match in re.finditer(r"\b([A-Za-z_][A-Za-z0-9_]*)=", message):
        if match.group(1) in allowed:
            return match.group(1)
    return None


def instantiate(cls, kwargs, key_path, name=None, **builder_kwargs):
    """Calls `cls(**kwargs)`, turning a ValueError/TypeError into a
    ConfigError that names the key path of the offending argument."""
    try:
        return cls(**kwargs, **builder_kwargs, **({"name": name} if name
                                                   else {}))
    except (ValueError, TypeError) as error:
        if isinstance(error, ConfigError):
            raise
        argument = _argument_from_error(str(error), kwargs)
        message = str(error)
        if argument is None:
            # "invalid literal for int() with base 10: 'abc'": find the
            # argument by its value.
            named = [k for k, v in kwargs.items()
                     if isinstance(v, str) and repr(v) in message]
            if len(named) == 1:
                argument = named[0]
                message = f"{argument}={kwargs[argument]!r}: {message}"
        path = f"{key_path}.{argument}" if argument else key_path
        raise ConfigError(path, message) from error


def check_class_kwargs(kwargs, cls, key_path, builder_set=(),
                       extra_allowed=(), derived=None):
    """The signature-driven check: `kwargs` against `cls`'s constructor
    arguments (unknown keys, and required arguments left out).

    Returns:
        `constructor_arguments(cls)`.
    """
    arguments = constructor_arguments(cls)
    allowed = [a for a in arguments if a not in builder_set]
    allowed = sorted(set(allowed) | set(extra_allowed))
    for key in kwargs:
        if key in builder_set and derived and key in derived:
            raise ConfigError(
                f"{key_path}.{key}",
                f"{key!r} is set by the builder from {derived[key]}; remove "
                "it here")
        if key not in allowed:
            raise ConfigError(
                f"{key_path}.{key}",
                f"unknown key {key!r} for {cls.__name__}; allowed keys are "
                f"{', '.join(allowed)}")
    for argument, default in arguments.items():
        if default is _REQUIRED and argument not in kwargs \
                and argument not in (derived or {}):
            raise ConfigError(
                f"{key_path}.{argument}",
                f"missing required key {argument!r} ({cls.__name__} needs "
                "it)")
    check_argument_values(kwargs, arguments, key_path)
    return arguments
