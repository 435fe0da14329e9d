"""`BiGRUTextEncoder`: `TextTower(encoder="bigru")`'s bidirectional
GRU layers."""

import keras

from keras_mm.registry import TEXT_ENCODERS
from keras_mm.towers.text_encoders.recurrent_text_encoder import (
    RecurrentTextEncoder)


@keras.saving.register_keras_serializable(package="keras_mm")
@TEXT_ENCODERS.register("bigru")
class BiGRUTextEncoder(RecurrentTextEncoder):
    """`num_layers` bidirectional GRU layers that skip padded steps (see
    `RecurrentTextEncoder` for the arguments).

    Example:

    >>> encoder = BiGRUTextEncoder(rnn_units=4, num_layers=1)
    >>> tuple(encoder(keras.ops.ones((2, 5, 8))).shape)
    (2, 5, 8)
    """

    cell = keras.layers.GRU
    prefix = "bigru"
