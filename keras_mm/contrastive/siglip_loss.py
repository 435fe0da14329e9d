import math

import keras
from keras import ops

from keras_mm.contrastive.contrastive_loss import (ContrastiveLoss,
                                                   diagonal_sign)
from keras_mm.layers.utils import check_positive_float


@keras.saving.register_keras_serializable(package="keras_mm")
class SigLipLoss(ContrastiveLoss):
    """SigLIP's pairwise sigmoid loss with a learnable temperature and bias.

    The logits are `exp(log_scale) * cos(a_i, b_j) + bias`; every `(i, j)`
    is a binary problem (`i == j` a match). The loss is
    `-1/|B| * sum_i sum_j log sigmoid(z_ij * logit_ij)`, `z_ij = +1` on the
    pairs and -1 elsewhere (Zhai et al., 2023). Under a distribution
    strategy the `j` run over the global batch, and the local rows of every
    replica together cover the global matrix.

    Args:
        scale: the initial logit scale (SigLIP: 10, `log_scale = log 10`).
        bias: the initial bias (SigLIP: -10).

    Call arguments:
        inputs: `[a, b]`, two `[batch, dim]` embeddings; row i of each is
            one pair. They are L2-normalised here.
        training, mask: unused (every row is a pair).

    Returns `[batch]` float32: each pair's logit (its sigmoid is the match
    probability). The loss goes to `add_loss`.

    Example:

    >>> import numpy as np
    >>> layer = SigLipLoss()
    >>> a = np.eye(2, dtype="float32")
    >>> [round(float(s), 2) for s in layer([a, a])]
    [0.0, 0.0]
    """

    def __init__(self, scale=10.0, bias=-10.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = check_positive_float("SigLipLoss", "scale", scale)
        self.bias = float(bias)

    def build(self, input_shape):
        self.log_scale = self.add_weight(
            name="log_scale", shape=(),
            initializer=keras.initializers.Constant(math.log(self.scale)),
            dtype="float32", autocast=False)
        self.logit_bias_weight = self.add_weight(
            name="bias", shape=(),
            initializer=keras.initializers.Constant(self.bias),
            dtype="float32", autocast=False)
        super().build(input_shape)

    def logit_scale(self):
        return ops.exp(self.log_scale)

    def logit_bias(self):
        return self.logit_bias_weight

    def matrix_loss(self, a, b):
        # The (a_i, b_j) matrix holds every binary problem once (its
        # transpose is the same problems), so only b is gathered.
        global_b, targets = self.global_columns(b)
        logits = self.logits(a, global_b)
        signs = diagonal_sign(logits, targets)
        return ops.mean(-ops.sum(ops.log_sigmoid(signs * logits), axis=-1))

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "bias": self.bias})
        return config
