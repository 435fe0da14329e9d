"""`SensorEncoder`: the base class of the sensor encoders in
`keras_mm.registry.SENSOR_ENCODERS`."""

import keras


class SensorEncoder(keras.layers.Layer):
    """Base class of a `SensorTower` encoder architecture.

    A sensor encoder maps a series `[batch, steps, channels]` (missing steps
    already zeroed) and its boolean step mask to one `dim`-wide token per
    step, `[batch, steps, dim]`; missing steps must not change the tokens of
    the others. `SensorTower(encoder=NAME)` looks `NAME` up in
    `keras_mm.registry.SENSOR_ENCODERS`, builds the class with the tower
    arguments its `__init__` names (it takes `dim`), then zeroes the
    missing steps, applies the output dropout and the pooling. A new
    architecture is a subclass registered there that defines
    `call(inputs, mask=None, training=None)`.

    `legacy_path` names where the encoder's sublayers sat in the weights of
    a `SensorTower` saved before this registry existed (`""`: directly
    under the tower).

    Call arguments:
        inputs: float `[batch, steps, channels]`.
        mask: optional bool `[batch, steps]`, False for missing steps.
        training: Python bool (dropout).

    Example:

    A user's architecture, which `SensorTower(encoder="dense")` then
    builds:

    >>> from keras_mm.registry import SENSOR_ENCODERS
    >>> class Dense(SensorEncoder):
    ...     def __init__(self, dim=64, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.dim = dim
    ...     def build(self, input_shape):
    ...         self.dense = keras.layers.Dense(self.dim, name="dense")
    ...         self.dense.build(input_shape)
    ...     def call(self, inputs, mask=None, training=None):
    ...         return self.dense(inputs)
    >>> _ = SENSOR_ENCODERS.register("dense")(Dense)
    >>> from keras_mm.towers import SensorTower
    >>> tower = SensorTower(encoder="dense", dim=8)
    >>> tuple(tower(keras.random.normal((2, 20, 3))).shape)
    (2, 8)
    >>> SENSOR_ENCODERS.unregister("dense")
    """

    legacy_path = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:2], self.dim)
