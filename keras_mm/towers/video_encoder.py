"""`VideoEncoder`: the base class of the video encoders in
`keras_mm.registry.VIDEO_ENCODERS`."""

import keras
from keras import ops


class VideoEncoder(keras.layers.Layer):
    """Base class of a `VideoTower` encoder architecture.

    A video encoder maps clips `[batch, frames, height, width, channels]`
    (padded frames already zeroed) and the boolean frame mask to a feature
    map `[batch, T', H', W', dim]`; padded frames must not change the
    features of the real ones. `VideoTower(encoder=NAME)` looks `NAME` up in
    `keras_mm.registry.VIDEO_ENCODERS`, builds the class with the tower
    arguments its `__init__` names (it takes `dim`), then averages the map
    over space and runs the temporal stage. A new architecture is a
    subclass registered there that defines `call(inputs, mask=None,
    training=None)`, `grid(input_shape)` (`(T', H', W')`, None where
    unknown) and, where `T' != T`, `step_mask(mask)` (the frame mask
    reduced to the `T'` steps).

    `legacy_path` names where the encoder's sublayers sat in the weights of
    a `VideoTower` saved before this registry existed (`""`: directly
    under the tower).

    Call arguments:
        inputs: float `[batch, frames, height, width, channels]`.
        mask: optional bool `[batch, frames]`, False for padded frames.
        training: Python bool (batch norm).

    Example:

    A user's architecture, which `VideoTower(encoder="pixels")` then
    builds:

    >>> from keras_mm.registry import VIDEO_ENCODERS
    >>> class Pixels(VideoEncoder):
    ...     def __init__(self, dim=64, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.dim = dim
    ...     def build(self, input_shape):
    ...         self.dense = keras.layers.Dense(self.dim, name="dense")
    ...         self.dense.build(input_shape)
    ...     def call(self, inputs, mask=None, training=None):
    ...         return self.dense(inputs)
    ...     def grid(self, input_shape):
    ...         return tuple(input_shape[1:4])
    >>> _ = VIDEO_ENCODERS.register("pixels")(Pixels)
    >>> from keras_mm.towers import VideoTower
    >>> tower = VideoTower(encoder="pixels", dim=8)
    >>> tuple(tower(keras.random.uniform((2, 3, 4, 4, 3))).shape)
    (2, 8)
    >>> VIDEO_ENCODERS.unregister("pixels")
    """

    legacy_path = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def grid(self, input_shape):
        raise NotImplementedError(
            f"{type(self).__name__} must define grid(input_shape)")

    def step_mask(self, mask):
        return None if mask is None else ops.cast(mask, "bool")

    def compute_mask(self, inputs, mask=None):
        return self.step_mask(mask)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.grid(input_shape), self.dim)
