"""`SensorTower`'s encoder architectures, one class per file, registered in
`keras_mm.registry.SENSOR_ENCODERS` under the name
`SensorTower(encoder=...)` takes."""

from keras_mm.towers.sensor_encoder import SensorEncoder
from keras_mm.towers.sensor_encoders.recurrent_sensor_encoder import (
    RecurrentSensorEncoder)
from keras_mm.towers.sensor_encoders.gru_sensor_encoder import (
    GRUSensorEncoder)
from keras_mm.towers.sensor_encoders.lstm_sensor_encoder import (
    LSTMSensorEncoder)
from keras_mm.towers.sensor_encoders.tcn_sensor_encoder import (
    TCNSensorEncoder)
from keras_mm.towers.sensor_encoders.transformer_sensor_encoder import (
    TransformerSensorEncoder)

__all__ = ["GRUSensorEncoder", "LSTMSensorEncoder", "RecurrentSensorEncoder",
           "SensorEncoder", "TCNSensorEncoder", "TransformerSensorEncoder"]
