"""`TransformerTextEncoder`: `TextTower(encoder="transformer")`'s token
transformer."""

import keras

from keras_mm.layers.position_embedding import PositionEmbedding
from keras_mm.layers.transformer_encoder import TransformerEncoder
from keras_mm.layers.utils import (check_fraction, check_positive_int,
                                   clone_initializer)
from keras_mm.registry import TEXT_ENCODERS
from keras_mm.towers.text_encoder import TextEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@TEXT_ENCODERS.register("transformer")
class TransformerTextEncoder(TextEncoder):
    """Learned position embeddings (one per position up to
    `sequence_length`) and `num_layers` pre-norm transformer encoder layers
    at the embedding width, whose attention never looks at padded tokens.

    Args:
        sequence_length: the longest token sequence (the position table).
        num_layers, num_heads: transformer depth and heads (`num_heads`
            must divide the embedding width).
        intermediate_dim: MLP width; None: 4x the embedding width.
        dropout: dropout inside the transformer.
        kernel_initializer: initializer of the transformer's kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, tokens, embedding_dim]`, `tokens <=
            sequence_length`.
        mask: bool `[batch, tokens]`, True for real tokens.
        training: Python bool (dropout).

    Example:

    >>> encoder = TransformerTextEncoder(sequence_length=5, num_heads=2,
    ...                                  num_layers=1)
    >>> tuple(encoder(keras.ops.ones((2, 5, 8))).shape)
    (2, 5, 8)
    """

    def __init__(self, sequence_length, num_layers=2, num_heads=4,
                 intermediate_dim=None, dropout=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.sequence_length = check_positive_int(name, "sequence_length",
                                                  sequence_length)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            name, "intermediate_dim", intermediate_dim, allow_none=True)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.position_embedding = PositionEmbedding(
            self.sequence_length, dtype=self.dtype_policy,
            name="position_embedding")
        self.position_embedding.build(shape)
        self.transformer = TransformerEncoder(
            num_layers=self.num_layers, num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim, dropout=self.dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy, name="transformer")
        self.transformer.build(shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        return self.transformer(self.position_embedding(inputs), mask=mask,
                                training=training)

    def get_config(self):
        config = super().get_config()
        config.update({
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
