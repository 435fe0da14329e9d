import keras
from keras import ops

from keras_mm.heads.classification_head import _check_count
from keras_mm.layers.utils import clone_initializer
from keras_mm.registry import HEADS


@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("regression")
class RegressionHead(keras.layers.Layer):
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

    >>> RegressionHead(units=2)(keras.ops.ones((2, 8))).shape
    (2, 2)
    """

    def __init__(self, units=1, hidden_units=(), dropout=0.0,
                 activation="relu", kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.units = _check_count("RegressionHead", "units", units)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.hidden_layers = []
        for i, width in enumerate(self.hidden_units):
            dense = keras.layers.Dense(
                width, activation=self.activation,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"hidden{i}")
            dense.build(shape)
            self.hidden_layers.append(dense)
            shape = shape[:-1] + (width,)
        self.dropout_layer = keras.layers.Dropout(self.dropout,
                                                  dtype=self.dtype_policy)
        self.prediction = keras.layers.Dense(
            self.units,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype="float32", name="prediction")
        self.prediction.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for dense in self.hidden_layers:
            x = dense(self.dropout_layer(x, training=training))
        x = self.dropout_layer(x, training=training)
        return self.prediction(ops.cast(x, "float32"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def compute_output_spec(self, inputs, training=None):
        # The output is float32 whatever the policy (the default spec would
        # claim the compute dtype, e.g. bfloat16).
        return keras.KerasTensor(self.compute_output_shape(inputs.shape),
                                 dtype="float32")

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
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
