"""`LSTMSensorEncoder`: `SensorTower(encoder="lstm")`'s stacked LSTM
layers."""

import keras

from keras_mm.registry import SENSOR_ENCODERS
from keras_mm.towers.sensor_encoders.recurrent_sensor_encoder import (
    RecurrentSensorEncoder)


@keras.saving.register_keras_serializable(package="keras_mm")
@SENSOR_ENCODERS.register("lstm")
class LSTMSensorEncoder(RecurrentSensorEncoder):
    """`num_layers` stacked LSTM layers of `dim` units that skip missing
    steps (see `RecurrentSensorEncoder` for the arguments).

    Example:

    >>> encoder = LSTMSensorEncoder(dim=4)
    >>> tuple(encoder(keras.ops.ones((2, 5, 3))).shape)
    (2, 5, 4)
    """

    cell = keras.layers.LSTM
    prefix = "lstm"
