"""`ImageEncoder`: the base class of the image encoders in
`keras_mm.registry.IMAGE_ENCODERS`."""

import keras
from keras import ops


class ImageEncoder(keras.layers.Layer):
    """Base class of an `ImageTower` encoder architecture.

    An image encoder maps float images `[batch, height, width, channels]`
    to features; `ImageTower(encoder=NAME)` looks `NAME` up in
    `keras_mm.registry.IMAGE_ENCODERS`, builds the class with the tower
    arguments its `__init__` names, projects the features to the tower's
    `dim` (unless `projected`), applies the output dropout and reads them
    out with `grid()` or `pool()`. A new architecture is a subclass
    registered there:

    - `call(images, training=None)` returns the features: a feature map
      `[batch, H', W', C]` by default; another layout (for example the
      [CLS] token before the patch tokens) where `grid()` and `pool()`
      read it;
    - `spatial(input_shape)` returns `(H', W')` (None where unknown);
    - `grid(features)` returns the feature map `[batch, H', W', C]`
      (default: the features as they are);
    - `pool(features)` returns one vector per image (default: the mean
      over positions);
    - `projected = True` where the features already have the tower's
      width (the encoder then takes a `dim` argument).

    `legacy_path` names where the encoder's sublayers sat in the weights of
    an `ImageTower` saved before this registry existed: `""` (directly
    under the tower) or the tower attribute that held the encoder (e.g.
    `"resnet"`). `ImageTower` uses it to load such files.

    Call arguments:
        inputs: float `[batch, height, width, channels]`.
        training: Python bool (batch norm, dropout).

    Example:

    A user's architecture, which `ImageTower(encoder="pool4")` then builds:

    >>> from keras_mm.registry import IMAGE_ENCODERS
    >>> class Pool4(ImageEncoder):
    ...     def call(self, inputs, training=None):
    ...         return keras.ops.average_pool(inputs, 4, 4, padding="valid")
    ...     def spatial(self, input_shape):
    ...         return input_shape[1] // 4, input_shape[2] // 4
    ...     def compute_output_shape(self, input_shape):
    ...         return (input_shape[0], *self.spatial(input_shape),
    ...                 input_shape[-1])
    >>> _ = IMAGE_ENCODERS.register("pool4")(Pool4)
    >>> from keras_mm.towers import ImageTower
    >>> tower = ImageTower(encoder="pool4", dim=8, output="sequence")
    >>> tuple(tower(keras.random.uniform((2, 16, 16, 3))).shape)
    (2, 16, 8)
    >>> IMAGE_ENCODERS.unregister("pool4")
    """

    projected = False
    legacy_path = ""
    # Set by the tower while it is restored from a saved model (whose
    # variables replace the initial ones): no weights file is read then.
    restoring = False

    def spatial(self, input_shape):
        raise NotImplementedError(
            f"{type(self).__name__} must define spatial(input_shape)")

    def grid(self, features):
        return features

    def pool(self, features):
        return ops.mean(features, axis=(1, 2))

    def compute_mask(self, inputs, mask=None):
        return None
