import numbers

import keras
from keras import ops

from keras_mm.layers.utils import clone_initializer
from keras_mm.registry import HEADS


def _check_names(owner, argument, names, count, count_argument):
    """Validates a list of class/label names; returns it as a list."""
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{owner}: {argument} must be a list of strings; got {names!r}")
    names = list(names)
    if len(names) != count:
        raise ValueError(
            f"{owner}: {argument} has {len(names)} names but "
            f"{count_argument}={count}; give one name per output")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"{owner}: {argument} has duplicate names {duplicates}; "
            "names must be unique")
    return names


def _check_count(owner, argument, value):
    """Validates a positive integer argument; returns it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        raise ValueError(
            f"{owner}: {argument}={value!r}; pass a positive integer")
    return int(value)


@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("classification")
class ClassificationHead(keras.layers.Layer):
    """Multi-class classification head: optional MLP, then softmax.

    The final `Dense` and the softmax run in float32 whatever the dtype
    policy, so probabilities (and the loss) are float32 under
    `mixed_bfloat16`.

    Args:
        num_classes: number of classes (>= 2).
        class_names: optional list of `num_classes` unique class names,
            kept in the config (and so in saved models).
        hidden_units: widths of hidden `Dense` layers before the output.
        dropout: dropout rate before each `Dense`.
        activation: activation of the hidden layers.
        kernel_initializer: initializer of every kernel.

    Call arguments:
        inputs: `[batch, dim]` (e.g. a fusion output).
        training: Python bool, dropout on or off.

    Returns:
        float32 probabilities `[batch, num_classes]` (rows sum to 1). Train
        with `default_loss()` (sparse categorical cross-entropy on integer
        labels).

    Example:

    >>> head = ClassificationHead(3, class_names=["cat", "dog", "bird"])
    >>> head(keras.ops.ones((2, 8))).shape
    (2, 3)
    """

    def __init__(self, num_classes, class_names=None, hidden_units=(),
                 dropout=0.0, activation="relu",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = _check_count("ClassificationHead", "num_classes",
                                        num_classes)
        if self.num_classes < 2:
            raise ValueError(
                "ClassificationHead: num_classes=1; use BinaryHead (type "
                "'binary') for two-class problems with one output, or "
                "num_classes >= 2")
        self.class_names = _check_names("ClassificationHead", "class_names",
                                        class_names, self.num_classes,
                                        "num_classes")
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
            self.num_classes,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype="float32", name="logits")
        self.logits.build(shape)
        self.probabilities = keras.layers.Activation(
            "softmax", dtype="float32", name="softmax")
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for dense in self.hidden_layers:
            x = dense(self.dropout_layer(x, training=training))
        x = self.dropout_layer(x, training=training)
        return self.probabilities(self.logits(ops.cast(x, "float32")))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_classes,)

    def compute_output_spec(self, inputs, training=None):
        # The output is float32 whatever the policy (the default spec would
        # claim the compute dtype, e.g. bfloat16).
        return keras.KerasTensor(self.compute_output_shape(inputs.shape),
                                 dtype="float32")

    def default_loss(self):
        """Sparse categorical cross-entropy on integer labels."""
        return keras.losses.SparseCategoricalCrossentropy()

    def default_metrics(self):
        """Fresh metric objects: accuracy on integer labels."""
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
