"""Output heads: classification, binary, multilabel, regression, and the
contrastive alignment head.

Importing this package registers every head in `keras_mm.registry.HEADS`.
"""

from keras_mm.heads.binary_head import BinaryHead
from keras_mm.heads.classification_head import ClassificationHead
from keras_mm.heads.contrastive_head import ContrastiveHead
from keras_mm.heads.multilabel_head import MultilabelHead
from keras_mm.heads.regression_head import RegressionHead

__all__ = ["BinaryHead", "ClassificationHead", "ContrastiveHead",
           "MultilabelHead",
           "RegressionHead"]
