"""`GRUSensorEncoder`: `SensorTower(encoder="gru")`'s stacked GRU
layers."""

import keras

from keras_mm.registry import SENSOR_ENCODERS
from keras_mm.towers.sensor_encoders.recurrent_sensor_encoder import (
    RecurrentSensorEncoder)


@keras.saving.register_keras_serializable(package="keras_mm")
@SENSOR_ENCODERS.register("gru")
class GRUSensorEncoder(RecurrentSensorEncoder):
    """`num_layers` stacked GRU layers of `dim` units that skip missing
    steps (see `RecurrentSensorEncoder` for the arguments).

    Example:

    >>> encoder = GRUSensorEncoder(dim=4)
    >>> tuple(encoder(keras.ops.ones((2, 5, 3))).shape)
    (2, 5, 4)
    """

    cell = keras.layers.GRU
    prefix = "gru"
