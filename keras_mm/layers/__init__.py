"""Building blocks shared by towers and fusion layers."""

from keras_mm.layers.position_embedding import PositionEmbedding
from keras_mm.layers.temporal_conv_net import TemporalConvNet
from keras_mm.layers.transformer_encoder import TransformerEncoder

__all__ = ["PositionEmbedding", "TemporalConvNet", "TransformerEncoder"]
