"""Small helpers shared by keras_mm layers: initializers, argument checks."""

import contextlib
import math
import numbers

import keras
import numpy as np


def clone_initializer(initializer):
    """Returns a fresh initializer with the same config.

    Keras initializers with a seed return the same values on each call;
    giving each sub-layer its own copy keeps sub-layers from starting equal.
    """
    if isinstance(initializer, keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return keras.initializers.get(initializer)


def plain(value):
    """`value` with NumPy scalars as Python scalars and sequences (lists,
    tuples, arrays) as tuples of them: what a layer stores for an argument
    it keeps for `get_config` without checking it (a tower keeps the
    arguments its encoder does not take).

    >>> plain([np.int64(1), 2.0]), plain(np.float32(0.5)), plain("cnn")
    ((1, 2.0), 0.5, 'cnn')
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def config_value(value):
    """`plain(value)` with tuples as lists, for `get_config`."""
    value = plain(value)
    return list(value) if isinstance(value, tuple) else value


def check_choice(owner, argument, value, allowed):
    """Raises a ValueError naming the argument when `value` is not allowed."""
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(
            f"{owner}: {argument}={value!r} is not one of {choices}"
        )
    return value


# -- argument validators ------------------------------------------------------
# One place for the `__init__` checks of every keras_mm layer (and of the
# builder / data code that wants the same rules). Each returns the value in
# its canonical type and raises a ValueError of the form
# "{owner}: {argument}={value!r} ..." that says what is allowed.


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(
        value, (bool, np.bool_))


def check_positive_int(owner, argument, value, allow_none=False):
    """Returns `value` as an int >= 1, or raises a ValueError naming it.

    Bools and non-integers (`2.5`, `8.0`, `"8"`) are refused; NumPy integers
    are accepted. With `allow_none=True`, `None` is returned unchanged.

    >>> check_positive_int("MyLayer", "units", 8)
    8
    >>> check_positive_int("MyLayer", "units", 0)
    Traceback (most recent call last):
    ValueError: MyLayer: units=0 must be a positive integer (1, 2, ...)
    """
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        none = " or None" if allow_none else ""
        raise ValueError(f"{owner}: {argument}={value!r} must be a positive "
                         f"integer (1, 2, ...){none}")
    return int(value)


def check_non_negative_int(owner, argument, value):
    """Returns `value` as an int >= 0, or raises a ValueError naming it.

    >>> check_non_negative_int("MyLayer", "num_layers", 0)
    0
    """
    if not _is_int(value) or value < 0:
        raise ValueError(f"{owner}: {argument}={value!r} must be an integer "
                         ">= 0 (0, 1, 2, ...)")
    return int(value)


def check_positive_ints(owner, argument, values, min_length=0):
    """Returns a list/tuple of positive ints as a tuple of ints.

    Each entry must pass `check_positive_int`; the error names the entry
    (`"{owner}: {argument}={entry!r} (entry i of ...)"`). A string or a
    non-iterable is refused, and so is a sequence shorter than
    `min_length`.

    >>> check_positive_ints("MyLayer", "filters", [8, 16])
    (8, 16)
    """
    if isinstance(values, (str, bytes)) or not isinstance(
            values, (list, tuple, np.ndarray)):
        raise ValueError(f"{owner}: {argument}={values!r} must be a list of "
                         "positive integers, e.g. [32, 64]")
    values = tuple(values)
    for i, v in enumerate(values):
        if not _is_int(v) or v < 1:
            raise ValueError(
                f"{owner}: {argument}={v!r} (entry {i} of {list(values)}) "
                "must be a positive integer (1, 2, ...)")
    if len(values) < min_length:
        raise ValueError(
            f"{owner}: {argument}={list(values)} must list at least "
            f"{min_length} positive integer(s)")
    return tuple(int(v) for v in values)


def check_widths(owner, argument, values, what, example):
    """`check_positive_ints` with at least one entry: a conv stack's
    `filters`, a text CNN's `kernel_sizes`, a TCN's dilations. `what` names
    one entry and `example` is a value to suggest.

    >>> check_widths("MyLayer", "filters", [8, 16], "conv block width",
    ...              "(32, 64)")
    (8, 16)
    """
    values = check_positive_ints(owner, argument, values)
    if not values:
        raise ValueError(f"{owner}: {argument} must list at least one "
                         f"{what}, e.g. {argument}={example}")
    return values


def ceil_div(size, factor):
    """`ceil(size / factor)`, None for an unknown size: a side of a map
    downsampled `factor` times with "same" padding.

    >>> ceil_div(28, 8), ceil_div(None, 2)
    (4, None)
    """
    return None if size is None else math.ceil(size / factor)


def check_fraction(owner, argument, value):
    """Returns a rate in [0, 1) (e.g. a dropout rate) as a float.

    >>> check_fraction("MyLayer", "dropout", 0.1)
    0.1
    >>> check_fraction("MyLayer", "dropout", 1.0)
    Traceback (most recent call last):
    ValueError: MyLayer: dropout=1.0 must be a number in [0, 1)
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{owner}: {argument}={value!r} must be a number in "
                         "[0, 1)")
    return float(value)


def check_positive_float(owner, argument, value, allow_none=False):
    """Returns a finite number > 0 as a float (epsilons, offsets, rates).

    >>> check_positive_float("MyLayer", "epsilon", 1e-6)
    1e-06
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, numbers.Real) or not 0.0 < float(value) < math.inf:
        none = " or None" if allow_none else ""
        raise ValueError(f"{owner}: {argument}={value!r} must be a finite "
                         f"number > 0{none}")
    return float(value)


def check_non_negative_float(owner, argument, value):
    """Returns a finite number >= 0 as a float.

    >>> check_non_negative_float("MyLayer", "lower_edge_hertz", 20)
    20.0
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, numbers.Real) or not 0.0 <= float(value) < math.inf:
        raise ValueError(f"{owner}: {argument}={value!r} must be a finite "
                         "number >= 0")
    return float(value)


def check_bool(owner, argument, value):
    """Returns `value` as a Python bool; only True / False are accepted
    (not `0`, `1` or `"yes"`).

    >>> check_bool("MyLayer", "return_attention", False)
    False
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {argument}={value!r} must be True or "
                         "False")
    return bool(value)


def check_unique_strings(owner, argument, values, allow_none=False):
    """Returns a list of unique, non-empty strings (e.g. modality, class or
    label names) as a list.

    >>> check_unique_strings("MyLayer", "modalities", ("image", "text"))
    ['image', 'text']
    """
    if values is None and allow_none:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(
            values, (list, tuple)) or not all(
                isinstance(v, str) and v for v in values):
        raise ValueError(f"{owner}: {argument} must be a list of strings "
                         f"(non-empty, unique); got {values!r}")
    values = list(values)
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{owner}: {argument} has duplicate names "
                         f"{duplicates}; names must be unique")
    return values


@contextlib.contextmanager
def record_attention_scores(attention_layers):
    """Records the attention probabilities of `MultiHeadAttention` layers.

    While the context is open, each listed layer's real `call` runs with
    `return_attention_scores=True`; the scores (`[batch, heads, queries,
    keys]`, after the masked softmax) are appended to the list of that
    layer, and the attention output alone is returned to the caller, so the
    layer that owns them computes exactly what it computes anyway (the mask
    it passes included). Yields one list per layer, in the given order.
    """
    records = [[] for _ in attention_layers]
    for layer, store in zip(attention_layers, records):
        original = type(layer).call.__get__(layer)

        def call(*args, _original=original, _store=store, **kwargs):
            kwargs["return_attention_scores"] = True
            output, scores = _original(*args, **kwargs)
            _store.append(scores)
            return output

        object.__setattr__(layer, "call", call)
    try:
        yield records
    finally:
        for layer in attention_layers:
            object.__delattr__(layer, "call")
