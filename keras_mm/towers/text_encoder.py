"""`TextEncoder`: the base class of the text encoders in
`keras_mm.registry.TEXT_ENCODERS`."""

import keras


class TextEncoder(keras.layers.Layer):
    """Base class of a `TextTower` encoder architecture.

    A text encoder maps the tower's token embeddings `[batch, tokens,
    embedding_dim]` (padded positions already zeroed) and the boolean token
    mask to features `[batch, tokens, channels]`. Padded tokens must not
    influence the real ones. `TextTower(encoder=NAME)` looks `NAME` up in
    `keras_mm.registry.TEXT_ENCODERS`, builds the class with the tower
    arguments its `__init__` names, then applies dropout, the projection to
    `dim` and the pooling. A new architecture is a subclass registered
    there that defines `call(embeddings, mask=None, training=None)` and
    `compute_output_shape`.

    `pooling` is how the tower reduces the tokens for `output="vector"`:
    `"mean"` (the masked mean of the projected tokens) or `"max"` (the
    projection of the masked max over the features, which must then be
    >= 0 and zero at padded steps, as ReLU features are).

    `legacy_path` names where the encoder's sublayers sat in the weights of
    a `TextTower` saved before this registry existed (`""`: directly under
    the tower).

    Call arguments:
        inputs: float `[batch, tokens, embedding_dim]`.
        mask: bool `[batch, tokens]`, True for real tokens.
        training: Python bool (dropout).

    Example:

    A user's architecture, which `TextTower(encoder="running_sum")` then
    builds:

    >>> from keras_mm.registry import TEXT_ENCODERS
    >>> class RunningSum(TextEncoder):
    ...     def call(self, inputs, mask=None, training=None):
    ...         return keras.ops.cumsum(inputs, axis=1)
    >>> _ = TEXT_ENCODERS.register("running_sum")(RunningSum)
    >>> from keras_mm.towers import TextTower
    >>> tower = TextTower(vocab_size=50, sequence_length=6,
    ...                   encoder="running_sum", dim=8)
    >>> tuple(tower(keras.ops.array([[4, 9, 3, 0, 0, 0]])).shape)
    (1, 8)
    >>> TEXT_ENCODERS.unregister("running_sum")
    """

    pooling = "mean"
    legacy_path = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)
