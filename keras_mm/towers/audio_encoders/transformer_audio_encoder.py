"""`TransformerAudioEncoder`: `AudioTower(encoder="transformer")`'s frame
transformer."""

import keras

from keras_mm.layers.position_embedding import PositionEmbedding
from keras_mm.layers.transformer_encoder import TransformerEncoder
from keras_mm.layers.utils import check_fraction, check_positive_int
from keras_mm.registry import AUDIO_ENCODERS
from keras_mm.towers.audio_encoder import AudioEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@AUDIO_ENCODERS.register("transformer")
class TransformerAudioEncoder(AudioEncoder):
    """Each frame embedded to `dim` by a dense layer, learned position
    embeddings, then `num_layers` pre-norm transformer layers: `[batch,
    frames, dim]`, already the tower's width (`projected`). The clips need
    a fixed length (one position embedding per frame).

    Args:
        dim: token width.
        num_layers, num_heads: transformer depth and heads.
        intermediate_dim: transformer MLP width (None: `4 * dim`).
        dropout: dropout inside the transformer.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, frames, bins]`.
        training: Python bool (dropout).

    Masking: none (clips are cropped or padded to a fixed length).

    Example:

    >>> encoder = TransformerAudioEncoder(dim=16, num_heads=2, num_layers=1)
    >>> tuple(encoder(keras.random.uniform((2, 61, 40))).shape)
    (2, 61, 16)
    """

    projected = True

    def __init__(self, dim=64, num_layers=2, num_heads=4,
                 intermediate_dim=None, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.dim = check_positive_int(name, "dim", dim)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            name, "intermediate_dim", intermediate_dim, allow_none=True)
        self.dropout = check_fraction(name, "dropout", dropout)

    def build(self, input_shape):
        frames = input_shape[1]
        if frames is None:
            raise ValueError(
                f"{type(self).__name__} needs a fixed clip length for its "
                f"position embeddings; got features of shape "
                f"{tuple(input_shape)}")
        policy = self.dtype_policy
        self.embedding = keras.layers.Dense(self.dim, dtype=policy,
                                            name="frame_embedding")
        self.embedding.build(input_shape)
        self.position_embedding = PositionEmbedding(
            frames, dtype=policy, name="position_embedding")
        self.position_embedding.build((None, frames, self.dim))
        self.transformer = TransformerEncoder(
            num_layers=self.num_layers, num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim, dropout=self.dropout,
            dtype=policy, name="transformer")
        self.transformer.build((None, frames, self.dim))
        self.built = True

    def call(self, inputs, training=None):
        x = self.position_embedding(self.embedding(inputs))
        return self.transformer(x, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "dim": self.dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
        })
        return config
