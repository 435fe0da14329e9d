import keras
from keras import ops

from keras_mm.heads.classification_head import _check_count, _check_names
from keras_mm.layers.utils import clone_initializer
from keras_mm.registry import HEADS


@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("multilabel")
class MultilabelHead(keras.layers.Layer):
    """Multi-label head: optional MLP, then one independent sigmoid per label.

    The final `Dense` and the sigmoid run in float32 whatever the dtype
    policy, so probabilities are float32 under `mixed_bfloat16`.

    Args:
        num_labels: number of labels.
        label_names: optional list of `num_labels` unique label names, kept
            in the config (and so in saved models).
        hidden_units: widths of hidden `Dense` layers before the output.
        dropout: dropout rate before each `Dense`.
        activation: activation of the hidden layers.
        kernel_initializer: initializer of every kernel.

    Call arguments:
        inputs: `[batch, dim]`.
        training: Python bool, dropout on or off.

    Returns:
        float32 probabilities `[batch, num_labels]`, each in (0, 1). Train
        with `default_loss()` (binary cross-entropy on multi-hot labels).

    Example:

    >>> head = MultilabelHead(4, label_names=["a", "b", "c", "d"])
    >>> head(keras.ops.ones((2, 8))).shape
    (2, 4)
    """

    def __init__(self, num_labels, label_names=None, hidden_units=(),
                 dropout=0.0, activation="relu",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_labels = _check_count("MultilabelHead", "num_labels",
                                       num_labels)
        self.label_names = _check_names("MultilabelHead", "label_names",
                                        label_names, self.num_labels,
                                        "num_labels")
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
            self.num_labels,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype="float32", name="logits")
        self.logits.build(shape)
        self.probabilities = keras.layers.Activation(
            "sigmoid", dtype="float32", name="sigmoid")
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for dense in self.hidden_layers:
            x = dense(self.dropout_layer(x, training=training))
        x = self.dropout_layer(x, training=training)
        return self.probabilities(self.logits(ops.cast(x, "float32")))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_labels,)

    def compute_output_spec(self, inputs, training=None):
        # The output is float32 whatever the policy (the default spec would
        # claim the compute dtype, e.g. bfloat16).
        return keras.KerasTensor(self.compute_output_shape(inputs.shape),
                                 dtype="float32")

    def default_loss(self):
        """Binary cross-entropy on multi-hot labels `[batch, num_labels]`."""
        return keras.losses.BinaryCrossentropy()

    def default_metrics(self):
        """Fresh metric objects: per-label binary accuracy and ROC AUC."""
        return [keras.metrics.BinaryAccuracy(name="accuracy"),
                keras.metrics.AUC(name="auc", multi_label=True,
                                  num_labels=self.num_labels)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_labels": self.num_labels,
            "label_names": self.label_names,
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
