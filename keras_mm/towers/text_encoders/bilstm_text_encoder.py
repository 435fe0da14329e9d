"""`BiLSTMTextEncoder`: `TextTower(encoder="bilstm")`'s bidirectional
LSTM layers."""

import keras

from keras_mm.registry import TEXT_ENCODERS
from keras_mm.towers.text_encoders.recurrent_text_encoder import (
    RecurrentTextEncoder)


@keras.saving.register_keras_serializable(package="keras_mm")
@TEXT_ENCODERS.register("bilstm")
class BiLSTMTextEncoder(RecurrentTextEncoder):
    """`num_layers` bidirectional LSTM layers that skip padded steps (see
    `RecurrentTextEncoder` for the arguments).

    Example:

    >>> encoder = BiLSTMTextEncoder(rnn_units=4, num_layers=1)
    >>> tuple(encoder(keras.ops.ones((2, 5, 8))).shape)
    (2, 5, 8)
    """

    cell = keras.layers.LSTM
    prefix = "bilstm"
