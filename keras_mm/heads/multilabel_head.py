import keras

from keras_mm.heads.base_head import BaseHead, check_names
from keras_mm.layers.utils import check_positive_int
from keras_mm.registry import HEADS


@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("multilabel")
class MultilabelHead(BaseHead):
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
    >>> tuple(head(keras.ops.ones((2, 8))).shape)
    (2, 4)
    """

    def __init__(self, num_labels, label_names=None, hidden_units=(),
                 dropout=0.0, activation="relu",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(hidden_units=hidden_units, dropout=dropout,
                         activation=activation,
                         kernel_initializer=kernel_initializer, **kwargs)
        self.num_labels = check_positive_int("MultilabelHead", "num_labels",
                                             num_labels)
        self.label_names = check_names("MultilabelHead", "label_names",
                                        label_names, self.num_labels,
                                        "num_labels")

    output_activation = "sigmoid"

    def output_units(self):
        return self.num_labels

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
        })
        return config
