"""Small helpers shared by keras_mm layers."""

import keras


def clone_initializer(initializer):
    """Returns a fresh initializer with the same config.

    Keras initializers with a seed return the same values on each call;
    giving each sub-layer its own copy keeps sub-layers from starting equal.
    """
    if isinstance(initializer, keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return keras.initializers.get(initializer)


def check_choice(owner, argument, value, allowed):
    """Raises a ValueError naming the argument when `value` is not allowed."""
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(
            f"{owner}: {argument}={value!r} is not one of {choices}"
        )
    return value
