"""`TCNSensorEncoder`: `SensorTower(encoder="tcn")`'s causal temporal
convolutional network."""

import keras

from keras_mm.layers.temporal_conv_net import TemporalConvNet
from keras_mm.layers.utils import (check_fraction, check_positive_int,
                                   check_widths)
from keras_mm.registry import SENSOR_ENCODERS
from keras_mm.towers.sensor_encoder import SensorEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@SENSOR_ENCODERS.register("tcn")
class TCNSensorEncoder(SensorEncoder):
    """A `TemporalConvNet` with `dim` filters, `kernel_size`, one residual
    block per entry of `tcn_dilations` and causal padding: step t only sees
    steps <= t (and the zeros the tower puts at missing steps).

    Args:
        dim: filters.
        kernel_size: convolution width.
        tcn_dilations: one block per dilation rate (at least one).
        dropout: dropout inside the blocks.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, steps, channels]`.
        mask: optional bool `[batch, steps]` (passed to the TCN).
        training: Python bool (dropout).

    Example:

    >>> encoder = TCNSensorEncoder(dim=4, tcn_dilations=(1, 2))
    >>> tuple(encoder(keras.ops.ones((2, 5, 3))).shape)
    (2, 5, 4)
    """

    def __init__(self, dim=64, kernel_size=3, tcn_dilations=(1, 2, 4, 8),
                 dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.dim = check_positive_int(name, "dim", dim)
        self.kernel_size = check_positive_int(name, "kernel_size",
                                              kernel_size)
        self.tcn_dilations = check_widths(name, "tcn_dilations",
                                          tcn_dilations, "dilation rate",
                                          "(1, 2, 4)")
        self.dropout = check_fraction(name, "dropout", dropout)

    def build(self, input_shape):
        self.tcn = TemporalConvNet(
            filters=self.dim, kernel_size=self.kernel_size,
            dilations=self.tcn_dilations, dropout=self.dropout,
            padding="causal", dtype=self.dtype_policy, name="tcn")
        self.tcn.build(tuple(input_shape))
        self.built = True

    def call(self, inputs, mask=None, training=None):
        return self.tcn(inputs, mask=mask, training=training)

    def get_config(self):
        config = super().get_config()
        config.update({
            "dim": self.dim,
            "kernel_size": self.kernel_size,
            "tcn_dilations": list(self.tcn_dilations),
            "dropout": self.dropout,
        })
        return config
