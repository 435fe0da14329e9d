"""`ViTImageEncoder`: `ImageTower(encoder="vit")`'s vision transformer."""

import keras
from keras import ops

from keras_mm.layers.position_embedding import PositionEmbedding
from keras_mm.layers.transformer_encoder import TransformerEncoder
from keras_mm.layers.utils import (check_fraction, check_positive_int)
from keras_mm.registry import IMAGE_ENCODERS
from keras_mm.towers.image_encoder import ImageEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@IMAGE_ENCODERS.register("vit")
class ViTImageEncoder(ImageEncoder):
    """A vision transformer: non-overlapping `patch_size` patches embedded
    by a strided convolution, a learned [CLS] token, learned position
    embeddings, dropout, and `num_layers` pre-norm transformer layers
    (`TransformerEncoder`). The images need a fixed size (the position
    embeddings have one entry per patch).

    The features are the tokens `[batch, 1 + H' * W', dim]` with
    `H' = H // patch_size`: `pool()` returns the [CLS] token and `grid()`
    the patch tokens as a `[batch, H', W', dim]` map. They already have
    the tower's width (`projected`).

    Args:
        dim: token width.
        patch_size: patch size in pixels.
        num_layers, num_heads: transformer depth and heads.
        intermediate_dim: transformer MLP width (None: `4 * dim`).
        dropout: dropout on the embedded tokens and inside the transformer.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, height, width, channels]`.
        training: Python bool (dropout).

    Masking: none (every patch is valid).

    Example:

    >>> encoder = ViTImageEncoder(dim=16, patch_size=7, num_heads=2,
    ...                           num_layers=1)
    >>> tuple(encoder(keras.random.uniform((2, 28, 28, 1))).shape)
    (2, 17, 16)
    """

    projected = True

    def __init__(self, dim=64, patch_size=4, num_layers=2, num_heads=4,
                 intermediate_dim=None, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.dim = check_positive_int(name, "dim", dim)
        self.patch_size = check_positive_int(name, "patch_size", patch_size)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            name, "intermediate_dim", intermediate_dim, allow_none=True)
        self.dropout = check_fraction(name, "dropout", dropout)

    def build(self, input_shape):
        shape = tuple(input_shape)
        name = type(self).__name__
        height, width = shape[1], shape[2]
        if height is None or width is None:
            raise ValueError(
                f"{name} needs a fixed image size for its position "
                f"embeddings; got shape {shape}")
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(
                f"{name}: patch_size={self.patch_size} is larger than the "
                f"{height}x{width} images; lower patch_size")
        policy = self.dtype_policy
        self.patch_embedding = keras.layers.Conv2D(
            self.dim, self.patch_size, strides=self.patch_size,
            padding="valid", kernel_initializer="glorot_uniform",
            dtype=policy, name="patch_embedding")
        self.patch_embedding.build(shape)
        self.grid_shape = self.spatial(shape)
        tokens = self.grid_shape[0] * self.grid_shape[1] + 1
        self.cls_token = self.add_weight(
            name="cls_token", shape=(1, 1, self.dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.position_embedding = PositionEmbedding(
            tokens, dtype=policy, name="position_embedding")
        self.position_embedding.build((None, tokens, self.dim))
        self.embedding_dropout = keras.layers.Dropout(self.dropout,
                                                      dtype=policy)
        self.transformer = TransformerEncoder(
            num_layers=self.num_layers, num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim, dropout=self.dropout,
            dtype=policy, name="transformer")
        self.transformer.build((None, tokens, self.dim))
        self.built = True

    def call(self, inputs, training=None):
        x = self.patch_embedding(inputs)
        batch = ops.shape(x)[0]
        patches = ops.reshape(x, (batch, -1, self.dim))
        cls = ops.broadcast_to(ops.cast(self.cls_token, patches.dtype),
                               (batch, 1, self.dim))
        tokens = self.position_embedding(
            ops.concatenate([cls, patches], axis=1))
        tokens = self.embedding_dropout(tokens, training=training)
        return self.transformer(tokens, training=training)

    def spatial(self, input_shape):
        def down(size):
            return None if size is None else size // self.patch_size

        return down(input_shape[1]), down(input_shape[2])

    def grid(self, features):
        return ops.reshape(features[:, 1:], (-1, *self.grid_shape, self.dim))

    def pool(self, features):
        return features[:, 0]

    def compute_output_shape(self, input_shape):
        height, width = self.spatial(input_shape)
        tokens = None if height is None or width is None \
            else height * width + 1
        return (input_shape[0], tokens, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "dim": self.dim,
            "patch_size": self.patch_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
        })
        return config
