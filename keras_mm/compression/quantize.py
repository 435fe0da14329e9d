"""`quantize_model`: a weight-quantized copy of a trained model."""

import os
import tempfile

import keras
import numpy as np

from keras_mm.compression.int8_kernel_conv import (Int8KernelMixin,
                                                   quantize_conv_kernels)
from keras_mm.errors import ExportError
from keras_mm.recipes.schema import QUANTIZE_MODES

MODES = QUANTIZE_MODES
# The layer types Keras 3.15 quantizes (their `quantize` refuses
# subclasses); layers of other packages that define their own `quantize`
# (keras-hub's ReversibleEmbedding) are quantized too.
_KERAS_QUANTIZABLE = (keras.layers.Dense, keras.layers.EinsumDense,
                      keras.layers.Embedding)


def _keras_quantizable(layer):
    return type(layer) in _KERAS_QUANTIZABLE or (
        "quantize" in vars(type(layer))
        and not isinstance(layer, keras.Model))


def _leaf_layers(model):
    return [layer for layer in model._flatten_layers(include_self=False,
                                                     recursive=True)
            if not list(layer._flatten_layers(include_self=False))]


def _params(layer):
    return int(sum(np.prod(v.shape) for v in layer.weights))


def copy_model(model):
    """An independent copy of `model` (a `.keras` round trip, so every
    registered keras_mm and keras-hub layer comes back as itself)."""
    with tempfile.TemporaryDirectory(prefix="keras_mm_copy_") as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        return keras.saving.load_model(path, compile=False)


def quantize_model(model, mode="int8"):
    """A weight-quantized copy of `model`, for export; `model` is unchanged.

    `int8`: Keras' int8 quantization of every Dense, EinsumDense and
    Embedding layer (int8 kernel + per-channel scale; Dense and EinsumDense
    also quantize their inputs per call), plus int8 kernels for the
    convolutions (`quantize_conv_kernels`). `float8`: Keras' float8
    Dense / EinsumDense layers (meant for float8 hardware; on CPU it does
    not shrink the model). Other weights (normalization, recurrent cells,
    attention of layers Keras does not quantize) stay float; the summary
    says which.

    Args:
        model: a built Keras model.
        mode: `"int8"` or `"float8"`.

    Returns:
        `(quantized copy, summary)`: the summary holds `mode`,
        `quantized_layers` / `float_layers` (layer paths) and
        `quantized_params` / `float_params`.

    Raises:
        ExportError: an unknown mode, or a model with nothing to quantize.

    Example:

    >>> import keras
    >>> from keras_mm.compression import quantize_model
    >>> inputs = keras.Input((8,))
    >>> model = keras.Model(inputs, keras.layers.Dense(4, name="out")(inputs))
    >>> small, summary = quantize_model(model)
    >>> summary["quantized_layers"], summary["float_params"]
    (['out'], 0)
    """
    if mode not in MODES:
        raise ExportError(f"quantize={mode!r}: choose one of "
                          f"{', '.join(MODES)} (or none)")
    copy = copy_model(model)
    keras_layers = [layer for layer in _leaf_layers(copy)
                    if _keras_quantizable(layer)]
    if keras_layers:
        chosen = {id(layer) for layer in keras_layers}
        copy.quantize(mode, filters=lambda layer: id(layer) in chosen)
    if mode == "int8":
        quantize_conv_kernels(copy)
    quantized, left = [], []
    for layer in _leaf_layers(copy):
        if not layer.weights:
            continue
        done = isinstance(layer, Int8KernelMixin) or \
            getattr(layer, "quantization_mode", None) == mode
        (quantized if done else left).append(layer)
    if not quantized:
        raise ExportError(
            f"quantize={mode!r}: the model has no layer {mode} applies to "
            "(Dense, EinsumDense, Embedding" +
            (", convolutions" if mode == "int8" else "") + ")")
    summary = {"mode": mode,
               "quantized_layers": [layer.path for layer in quantized],
               "float_layers": [layer.path for layer in left],
               "quantized_params": sum(map(_params, quantized)),
               "float_params": sum(map(_params, left))}
    return copy, summary
