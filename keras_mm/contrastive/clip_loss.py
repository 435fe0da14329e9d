import math

import keras
from keras import ops

from keras_mm.contrastive.contrastive_loss import ContrastiveLoss
from keras_mm.layers.utils import check_positive_float


@keras.saving.register_keras_serializable(package="keras_mm")
class ClipLoss(ContrastiveLoss):
    """CLIP's symmetric InfoNCE loss with a learnable temperature.

    The logits are `exp(log_scale) * cos(a_i, b_j)`, with `log_scale`
    learnable (initialised to `log(1 / temperature)`) and the scale clipped
    at `max_scale` as in CLIP (Radford et al., 2021). The loss is the mean of
    the cross-entropy of each `a_i` over every `b_j` (its pair the target)
    and of each `b_i` over every `a_j`. Under a distribution strategy the
    `j` run over the global batch.

    Args:
        temperature: the initial temperature (CLIP: 0.07).
        max_scale: the largest logit scale (CLIP: 100).

    Call arguments:
        inputs: `[a, b]`, two `[batch, dim]` embeddings; row i of each is
            one pair. They are L2-normalised here.
        training, mask: unused (every row is a pair).

    Returns `[batch]` float32: each pair's logit, `scale * cos(a_i, b_i)`.
    The loss goes to `add_loss`, so `model.compile()` needs no loss for it.

    Example:

    >>> import numpy as np
    >>> layer = ClipLoss()
    >>> a = np.eye(4, dtype="float32")
    >>> scores = layer([a, a])
    >>> [round(float(s), 2) for s in scores]
    [14.29, 14.29, 14.29, 14.29]
    >>> round(float(layer.losses[0]), 4)
    0.0
    """

    def __init__(self, temperature=0.07, max_scale=100.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_positive_float("ClipLoss", "temperature",
                                                temperature)
        self.max_scale = check_positive_float("ClipLoss", "max_scale",
                                              max_scale)

    def build(self, input_shape):
        self.log_scale = self.add_weight(
            name="log_scale", shape=(),
            initializer=keras.initializers.Constant(
                math.log(1.0 / self.temperature)),
            dtype="float32", autocast=False)
        super().build(input_shape)

    def logit_scale(self):
        return ops.exp(ops.minimum(self.log_scale,
                                   math.log(self.max_scale)))

    def matrix_loss(self, a, b):
        global_a, targets = self.global_columns(a)
        global_b, _ = self.global_columns(b)
        ab = keras.losses.sparse_categorical_crossentropy(
            targets, self.logits(a, global_b), from_logits=True)
        ba = keras.losses.sparse_categorical_crossentropy(
            targets, self.logits(b, global_a), from_logits=True)
        return (ops.mean(ab) + ops.mean(ba)) / 2.0

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature,
                       "max_scale": self.max_scale})
        return config
