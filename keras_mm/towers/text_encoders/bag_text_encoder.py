"""`BagTextEncoder`: `TextTower(encoder="bag")`, no contextual encoder."""

import keras

from keras_mm.registry import TEXT_ENCODERS
from keras_mm.towers.text_encoder import TextEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@TEXT_ENCODERS.register("bag")
class BagTextEncoder(TextEncoder):
    """A bag of embeddings: the token embeddings pass unchanged (the tower
    then projects and mean-pools them over the real tokens).

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, tokens, embedding_dim]`.
        mask: unused (the tower zeroes and excludes padded tokens).
        training: unused.

    Example:

    >>> tuple(BagTextEncoder()(keras.ops.ones((2, 5, 8))).shape)
    (2, 5, 8)
    """

    def call(self, inputs, mask=None, training=None):
        return inputs
