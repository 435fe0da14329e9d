"""Contrastive alignment: CLIP's and SigLIP's losses as endpoint layers.

`ClipLoss` and `SigLipLoss` take two batches of paired embeddings (row i of
each is one pair), hold the learnable temperature (and SigLIP's bias), add
the loss with `add_loss` and return each pair's logit. Under a
`tf.distribute` strategy the negatives come from the global batch
(`gather_replicas`).
"""

from keras_mm.contrastive.clip_loss import ClipLoss
from keras_mm.contrastive.contrastive_loss import ContrastiveLoss
from keras_mm.contrastive.replicas import gather_replicas
from keras_mm.contrastive.siglip_loss import SigLipLoss

__all__ = ["ClipLoss", "ContrastiveLoss", "SigLipLoss", "gather_replicas"]
