import keras

from keras_mm.heads.base_head import BaseHead, check_names
from keras_mm.layers.utils import check_positive_int
from keras_mm.registry import HEADS




@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("classification")
class ClassificationHead(BaseHead):
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
    >>> probs = head(keras.ops.ones((2, 8)))
    >>> tuple(probs.shape)
    (2, 3)
    >>> keras.ops.convert_to_numpy(keras.ops.sum(probs, axis=-1)).round(4)
    array([1., 1.], dtype=float32)
    """

    def __init__(self, num_classes, class_names=None, hidden_units=(),
                 dropout=0.0, activation="relu",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(hidden_units=hidden_units, dropout=dropout,
                         activation=activation,
                         kernel_initializer=kernel_initializer, **kwargs)
        self.num_classes = check_positive_int("ClassificationHead",
                                              "num_classes", num_classes)
        if self.num_classes < 2:
            raise ValueError(
                "ClassificationHead: num_classes=1; use BinaryHead (type "
                "'binary') for two-class problems with one output, or "
                "num_classes >= 2")
        self.class_names = check_names("ClassificationHead", "class_names",
                                        class_names, self.num_classes,
                                        "num_classes")

    output_activation = "softmax"

    def output_units(self):
        return self.num_classes

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
        })
        return config
