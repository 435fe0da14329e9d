import keras

from keras_mm.heads.base_head import BaseHead
from keras_mm.registry import HEADS


@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("binary")
class BinaryHead(BaseHead):
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

    >>> probs = BinaryHead(dtype="mixed_bfloat16")(keras.ops.ones((2, 8)))
    >>> tuple(probs.shape), keras.backend.standardize_dtype(probs.dtype)
    ((2, 1), 'float32')
    """

    def __init__(self, hidden_units=(), dropout=0.0, activation="relu",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(hidden_units=hidden_units, dropout=dropout,
                         activation=activation,
                         kernel_initializer=kernel_initializer, **kwargs)

    output_activation = "sigmoid"

    def output_units(self):
        return 1

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
        })
        return config
