import keras
from keras import ops

from keras_mm.layers.utils import check_positive_int


@keras.saving.register_keras_serializable(package="keras_mm")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position vector to each token of a sequence.

    Args:
        sequence_length: the longest sequence the layer accepts.
        initializer: initializer of the position table.

    Call arguments:
        inputs: `[batch, tokens, dim]` with `tokens <= sequence_length`.
        mask: optional boolean `[batch, tokens]`; passed through unchanged.

    Example:

    >>> x = keras.ops.zeros((2, 4, 8))
    >>> tuple(PositionEmbedding(sequence_length=16)(x).shape)
    (2, 4, 8)
    """

    def __init__(self, sequence_length, initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = check_positive_int(
            "PositionEmbedding", "sequence_length", sequence_length)
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=self.initializer,
        )
        self.built = True

    def call(self, inputs, training=None, mask=None):
        length = ops.shape(inputs)[1]
        if isinstance(length, int) and length > self.sequence_length:
            raise ValueError(
                f"PositionEmbedding({self.name!r}): the input has {length} "
                f"positions but sequence_length={self.sequence_length}; "
                "raise sequence_length or shorten the input")
        positions = ops.cast(
            self.position_embeddings[:length], inputs.dtype)
        return inputs + ops.expand_dims(positions, 0)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        })
        return config
