"""Weight-only int8 convolution kernels (Keras 3.15 quantizes Dense,
EinsumDense and Embedding layers only; in keras_mm's towers most weights
are convolution kernels).

`quantize_conv_kernels(model)` replaces the float kernel of every built
`Conv1D` / `Conv2D` / `Conv3D` layer (Keras' `BaseConv`; transposed and
depthwise convolutions keep float kernels) by an int8 variable and a float32 per-output-channel scale
(`scale = max|w| / 127` over every axis but the last, the symmetric
abs-max scheme Keras uses for Dense). The layer's `kernel` property then
returns `int8 * scale` in the compute dtype, so the convolution itself is
unchanged and only the stored weights shrink (about 4x). The layers are
for inference and export: they are no longer trainable.
"""

import keras
import numpy as np
from keras import ops

_SUBCLASSES = {}


class Int8KernelMixin:
    """The `kernel` of a convolution whose weights are int8 + scale (mixed
    into a quantized layer's class by `quantize_conv_kernels`).

    Example:

    >>> import keras
    >>> conv = keras.layers.Conv2D(4, 3)
    >>> conv.build((None, 8, 8, 1))
    >>> _ = quantize_conv_kernels(keras.Sequential([conv]))
    >>> isinstance(conv, Int8KernelMixin), conv._kernel.dtype
    (True, 'int8')
    """

    @property
    def kernel(self):
        return ops.multiply(ops.cast(self._kernel, self.compute_dtype),
                            ops.cast(self.kernel_scale, self.compute_dtype))


def _int8_class(cls):
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Int8Kernel{cls.__name__}",
                                (Int8KernelMixin, cls), {})
    return _SUBCLASSES[cls]


def _quantizable(layer):
    from keras.src.layers.convolutional.base_conv import BaseConv

    return (isinstance(layer, BaseConv) and layer.built
            and not isinstance(layer, Int8KernelMixin)
            and not getattr(layer, "lora_enabled", False))


def quantize_int8(values, axis=-1):
    """`(int8 values, float32 scale)` of `values`, symmetric abs-max per
    index of `axis` (the output channels), as Keras' AbsMaxQuantizer."""
    values = np.asarray(values, dtype=np.float32)
    reduce = tuple(i for i in range(values.ndim) if i != axis % values.ndim)
    scale = np.max(np.abs(values), axis=reduce, keepdims=True) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    quantized = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
    return quantized, scale


def quantize_conv_kernels(model):
    """Stores every convolution kernel of `model` as int8 + scale, in
    place. Returns the paths of the layers changed.

    Example:

    >>> import keras
    >>> inputs = keras.Input((16, 3))
    >>> conv = keras.layers.Conv1D(8, 3, name="conv")
    >>> model = keras.Model(inputs, conv(inputs))
    >>> quantize_conv_kernels(model)
    ['conv']
    >>> conv._kernel.dtype, tuple(conv.kernel_scale.shape)
    ('int8', (1, 1, 8))
    """
    changed = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not _quantizable(layer):
            continue
        kernel = layer._kernel
        values, scale = quantize_int8(kernel.numpy())
        layer._tracker.unlock()
        del layer._kernel
        layer._kernel = layer.add_weight(
            name="kernel", shape=values.shape, initializer="zeros",
            dtype="int8", trainable=False)
        layer.kernel_scale = layer.add_weight(
            name="kernel_scale", shape=scale.shape, initializer="ones",
            dtype="float32", trainable=False)
        layer._tracker.lock()
        layer._kernel.assign(values)
        layer.kernel_scale.assign(scale)
        layer.__class__ = _int8_class(type(layer))
        changed.append(layer.path if hasattr(layer, "path") else layer.name)
    if changed and isinstance(model, keras.Model):
        model.train_function = model.test_function = None
        model.predict_function = None
    return changed
