"""Fusion layers: `{modality: tower output}` (+ presence mask) -> a vector.

Importing this package registers every fusion type in
`keras_mm.registry.FUSIONS`.
"""

from keras_mm.fusion.base_fusion import BaseFusion
from keras_mm.fusion.cross_attention_fusion import CrossAttentionFusion
from keras_mm.fusion.film_fusion import FiLMFusion
from keras_mm.fusion.joint_transformer_fusion import JointTransformerFusion

__all__ = ["BaseFusion", "CrossAttentionFusion", "FiLMFusion",
           "JointTransformerFusion"]
