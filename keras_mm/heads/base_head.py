import keras
from keras import ops

from keras_mm.layers.utils import (check_fraction, check_positive_ints,
                                   check_unique_strings, clone_initializer)


def check_names(owner, argument, names, count, count_argument):
    """Validates a list of `count` unique class/label names (or None);
    returns it as a list."""
    names = check_unique_strings(owner, argument, names, allow_none=True)
    if names is not None and len(names) != count:
        raise ValueError(
            f"{owner}: {argument} has {len(names)} names but "
            f"{count_argument}={count}; give one name per output")
    return names


class BaseHead(keras.layers.Layer):
    """Shared body of the heads: optional MLP, then a float32 output layer.

    Subclasses set `output_activation` (a Keras activation name) and
    implement `output_units()`, `default_loss()` and `default_metrics()`.
    The final `Dense` and its activation run in float32 whatever the dtype
    policy, so head outputs (and losses) are float32 under
    `mixed_bfloat16`.

    Args:
        hidden_units: widths of hidden `Dense` layers before the output.
        dropout: dropout rate before each `Dense`.
        activation: activation of the hidden layers.
        kernel_initializer: initializer of every kernel.
    """

    output_activation = "linear"

    def __init__(self, hidden_units=(), dropout=0.0, activation="relu",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        owner = self.__class__.__name__
        self.hidden_units = check_positive_ints(owner, "hidden_units",
                                                hidden_units)
        self.dropout = check_fraction(owner, "dropout", dropout)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def output_units(self):
        raise NotImplementedError

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
            self.output_units(),
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype="float32", name="logits")
        self.logits.build(shape)
        self.output_layer = keras.layers.Activation(
            self.output_activation, dtype="float32",
            name=self.output_activation)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for dense in self.hidden_layers:
            x = dense(self.dropout_layer(x, training=training))
        x = self.dropout_layer(x, training=training)
        return self.output_layer(self.logits(ops.cast(x, "float32")))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.output_units(),)

    def compute_output_spec(self, inputs, training=None):
        # The output is float32 whatever the policy (the default spec would
        # claim the compute dtype, e.g. bfloat16).
        return keras.KerasTensor(self.compute_output_shape(inputs.shape),
                                 dtype="float32")

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
