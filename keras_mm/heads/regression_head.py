import keras

from keras_mm.heads.base_head import BaseHead
from keras_mm.layers.utils import check_positive_int
from keras_mm.registry import HEADS


@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("regression")
class RegressionHead(BaseHead):
    """Regression head: optional MLP, then a linear float32 output.

    The final `Dense` runs in float32 whatever the dtype policy, so the
    predictions are float32 under `mixed_bfloat16`.

    Args:
        units: number of regression targets.
        hidden_units: widths of hidden `Dense` layers before the output.
        dropout: dropout rate before each `Dense`.
        activation: activation of the hidden layers.
        kernel_initializer: initializer of every kernel.

    Call arguments:
        inputs: `[batch, dim]`.
        training: Python bool, dropout on or off.

    Returns:
        float32 predictions `[batch, units]`. Train with `default_loss()`
        (mean squared error).

    Example:

    >>> tuple(RegressionHead(units=2)(keras.ops.ones((2, 8))).shape)
    (2, 2)
    """

    def __init__(self, units=1, hidden_units=(), dropout=0.0,
                 activation="relu", kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(hidden_units=hidden_units, dropout=dropout,
                         activation=activation,
                         kernel_initializer=kernel_initializer, **kwargs)
        self.units = check_positive_int("RegressionHead", "units", units)

    output_activation = "linear"

    def output_units(self):
        return self.units

    def default_loss(self):
        """Mean squared error."""
        return keras.losses.MeanSquaredError()

    def default_metrics(self):
        """Fresh metric objects: mean absolute error and RMSE."""
        return [keras.metrics.MeanAbsoluteError(name="mae"),
                keras.metrics.RootMeanSquaredError(name="rmse")]

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
        })
        return config
