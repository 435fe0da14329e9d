import keras
from keras import ops

from keras_mm.layers.utils import clone_initializer
from keras_mm.registry import HEADS


@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("binary")
class BinaryHead(keras.layers.Layer):
    """Binary classification head: optional MLP, then one sigmoid unit.

    The final `Dense` and the sigmoid run in float32 whatever the dtype
    policy, so the probability is float32 under `mixed_bfloat16`.

    Args:
        hidden_units: widths of hidden `Dense` layers before the output.
        dropout: dropout rate before each `Dense`.
        activation: activation of the hidden layers.
        kernel_initializer: initializer of every kernel.

    Call arguments:
        inputs: `[batch, dim]`.
        training: Python bool, dropout on or off.

    Returns:
        float32 probability of the positive class, `[batch, 1]`. Train with
        `default_loss()` (binary cross-entropy on 0/1 labels).

    Example:

    >>> BinaryHead()(keras.ops.ones((2, 8))).shape
    (2, 1)
    """

    def __init__(self, hidden_units=(), dropout=0.0, activation="relu",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
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
        self.logits = keras.layers.Dense(
            1, kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype="float32", name="logits")
        self.logits.build(shape)
        self.probability = keras.layers.Activation(
            "sigmoid", dtype="float32", name="sigmoid")
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for dense in self.hidden_layers:
            x = dense(self.dropout_layer(x, training=training))
        x = self.dropout_layer(x, training=training)
        return self.probability(self.logits(ops.cast(x, "float32")))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (1,)

    def compute_output_spec(self, inputs, training=None):
        # The output is float32 whatever the policy (the default spec would
        # claim the compute dtype, e.g. bfloat16).
        return keras.KerasTensor(self.compute_output_shape(inputs.shape),
                                 dtype="float32")

    def default_loss(self):
        """Binary cross-entropy on 0/1 labels."""
        return keras.losses.BinaryCrossentropy()

    def default_metrics(self):
        """Fresh metric objects: accuracy (threshold 0.5) and ROC AUC."""
        return [keras.metrics.BinaryAccuracy(name="accuracy"),
                keras.metrics.AUC(name="auc")]

    def get_config(self):
        config = super().get_config()
        config.update({
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
