"""`TransformerSensorEncoder`: `SensorTower(encoder="transformer")`'s step
transformer."""

import keras

from keras_mm.layers.position_embedding import PositionEmbedding
from keras_mm.layers.transformer_encoder import TransformerEncoder
from keras_mm.layers.utils import (check_fraction, check_positive_int,
                                   clone_initializer)
from keras_mm.registry import SENSOR_ENCODERS
from keras_mm.towers.sensor_encoder import SensorEncoder


@keras.saving.register_keras_serializable(package="keras_mm")
@SENSOR_ENCODERS.register("transformer")
class TransformerSensorEncoder(SensorEncoder):
    """A dense projection of each step to `dim`, learned position embeddings
    (one per step of the input length, which must be fixed: pad the series
    and pass a step mask) and `num_layers` pre-norm transformer layers
    whose attention ignores missing steps.

    Args:
        dim: token width.
        num_layers, num_heads: transformer depth and heads (`num_heads`
            must divide `dim`).
        intermediate_dim: MLP width; None: `4 * dim`.
        dropout: dropout inside the transformer.
        kernel_initializer: initializer of the dense kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, steps, channels]`.
        mask: optional bool `[batch, steps]`, False for missing steps.
        training: Python bool (dropout).

    Example:

    >>> encoder = TransformerSensorEncoder(dim=8, num_heads=2, num_layers=1)
    >>> tuple(encoder(keras.ops.ones((2, 5, 3))).shape)
    (2, 5, 8)
    """

    def __init__(self, dim=64, num_layers=1, num_heads=4,
                 intermediate_dim=None, dropout=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.dim = check_positive_int(name, "dim", dim)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            name, "intermediate_dim", intermediate_dim, allow_none=True)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if shape[1] is None:
            raise ValueError(
                f"{type(self).__name__} needs a fixed number of steps for "
                "its position embeddings (pad the series and pass a step "
                f"mask); got input shape {shape}")
        seq_shape = shape[:2] + (self.dim,)
        policy = self.dtype_policy
        self.input_projection = keras.layers.Dense(
            self.dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=policy, name="input_projection")
        self.input_projection.build(shape)
        self.position_embedding = PositionEmbedding(
            shape[1], dtype=policy, name="position_embedding")
        self.position_embedding.build(seq_shape)
        self.transformer = TransformerEncoder(
            num_layers=self.num_layers, num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim, dropout=self.dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=policy, name="transformer")
        self.transformer.build(seq_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        x = self.position_embedding(self.input_projection(inputs))
        return self.transformer(x, mask=mask, training=training)

    def get_config(self):
        config = super().get_config()
        config.update({
            "dim": self.dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
