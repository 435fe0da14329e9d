"""Fusion layers: `{modality: tower output}` (+ presence mask) -> a vector.

Importing this package registers every fusion type in
`keras_mm.registry.FUSIONS`.
"""

from keras_mm.fusion.attention_fusion import AttentionFusion
from keras_mm.fusion.base_fusion import BaseFusion
from keras_mm.fusion.concat_fusion import ConcatFusion
from keras_mm.fusion.cross_attention_fusion import CrossAttentionFusion
from keras_mm.fusion.film_fusion import FiLMFusion
from keras_mm.fusion.gated_fusion import GatedFusion
from keras_mm.fusion.joint_transformer_fusion import JointTransformerFusion
from keras_mm.fusion.low_rank_fusion import LowRankFusion
from keras_mm.fusion.tensor_fusion import TensorFusion
from keras_mm.fusion.weighted_fusion import WeightedFusion

__all__ = ["AttentionFusion", "BaseFusion", "ConcatFusion",
           "CrossAttentionFusion", "FiLMFusion", "GatedFusion",
           "JointTransformerFusion", "LowRankFusion", "TensorFusion",
           "WeightedFusion"]
