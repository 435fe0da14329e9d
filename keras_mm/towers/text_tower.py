import keras
from keras import ops

import keras_mm.towers.text_encoders  # noqa: F401  (fills TEXT_ENCODERS)
from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int, clone_initializer,
                                   config_value, plain)
from keras_mm.registry import TEXT_ENCODERS, TOWERS
from keras_mm.towers.encoder_arguments import make_encoder
from keras_mm.towers.legacy_weights import remap_legacy_encoder

OUTPUTS = ("vector", "sequence")


def _masked_mean(x, weights):
    """Mean over axis 1 of `x` [B, T, D] where `weights` [B, T, 1] is 1.

    A row without any valid step gives zeros.
    """
    total = ops.sum(x * weights, axis=1)
    count = ops.maximum(ops.sum(weights, axis=1), ops.cast(1.0, x.dtype))
    return total / count


@keras.saving.register_keras_serializable(package="keras_mm")
@TOWERS.register("text")
class TextTower(keras.layers.Layer):
    """Text tower: encodes padded token ids `[batch, tokens]` (0 = padding).

    The ids go through an `Embedding` (`embedding_dim` wide; padded
    positions are zeroed) and then the `encoder`
    (`keras_mm.registry.TEXT_ENCODERS`; one `TextEncoder` class each, which
    the tower builds with the arguments below that its `__init__` names; a
    new architecture is a new registered class):

    - `"bag"` (`BagTextEncoder`): no contextual encoder (bag of embeddings);
    - `"cnn"` (`CNNTextEncoder`): one same-padded `Conv1D` (ReLU, `filters`
      channels) per entry of `kernel_sizes`, concatenated; the vector output
      max-pools each channel over the real tokens only (Kim, 2014);
    - `"bigru"` / `"bilstm"` (`BiGRUTextEncoder` / `BiLSTMTextEncoder`):
      `num_layers` bidirectional GRU / LSTM layers (`rnn_units` per direction)
      that skip padded steps;
    - `"transformer"` (`TransformerTextEncoder`): learned position embeddings
      and `num_layers` pre-norm transformer encoder layers (`num_heads`, width
      `embedding_dim`) whose attention never looks at padded tokens.

    A dense projection then maps every token to `dim`.

    - `output="vector"`: `[batch, dim]`, the masked mean of the projected
      tokens (for `"cnn"`: the projection of the masked max-pool);
    - `output="sequence"`: `[batch, tokens, dim]`, padded tokens zeroed;
      `compute_mask` returns the boolean token mask `ids != 0`.

    Masking: token id 0 is padding. Padded tokens never influence the
    output: their embeddings are zeroed (which equals the convolutions' own
    zero padding), recurrent layers skip them, attention ignores them, and
    pooling excludes them. A row of padding only gives zeros.

    Weights saved before the encoder registry (the encoder's sublayers
    directly under the tower) still load (`legacy_weights`).

    Args:
        vocab_size: number of token ids, including 0 (padding) and any
            OOV id; ids must lie in `[0, vocab_size)`.
        sequence_length: the longest token sequence the tower accepts (the
            size of the position table of `"transformer"`).
        embedding_dim: width of the token embeddings (and of the
            transformer).
        encoder: `"bag"`, `"cnn"`, `"bigru"`, `"bilstm"` or `"transformer"`.
        output: `"vector"` or `"sequence"`.
        dim: output width.
        dropout: dropout rate on the encoder features (and inside the
            transformer).
        num_layers: recurrent or transformer layers.
        num_heads: attention heads (`"transformer"`); must divide
            `embedding_dim`.
        intermediate_dim: transformer MLP width; `None` means 4x width.
        kernel_sizes: convolution widths (`"cnn"`).
        filters: channels per convolution width (`"cnn"`); `None` means
            `dim`.
        rnn_units: units per direction (`"bigru"`, `"bilstm"`); `None`
            means `dim`.
        use_cudnn: passed to the GRU / LSTM layers. The default `False` uses
            the portable implementation, which compiles with XLA and accepts
            any mask; `"auto"` uses cuDNN on a GPU (faster, but Keras then
            turns off XLA for the model, and cuDNN needs right-padded rows
            with at least one token each).
        embeddings_initializer: initializer of the embedding table.
        kernel_initializer: initializer of the dense and conv kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: int token ids `[batch, tokens]`, `tokens <= sequence_length`,
            0 = padding.
        training: Python bool, dropout on or off.
        mask: optional boolean `[batch, tokens]`; combined (logical and)
            with `ids != 0`.

    Example:

    >>> ids = keras.ops.array([[5, 9, 2, 0, 0], [7, 0, 0, 0, 0]])
    >>> tower = TextTower(vocab_size=100, sequence_length=5, encoder="cnn",
    ...                   embedding_dim=16, dim=8)
    >>> tuple(tower(ids).shape)
    (2, 8)
    """

    input_dtype = "int32"

    def __init__(self, vocab_size, sequence_length, embedding_dim=64,
                 encoder="bag", output="vector", dim=64, dropout=0.0,
                 num_layers=2, num_heads=4, intermediate_dim=None,
                 kernel_sizes=(2, 3, 4), filters=None, rnn_units=None,
                 use_cudnn=False, embeddings_initializer="uniform",
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        name = "TextTower"
        self.vocab_size = check_positive_int(name, "vocab_size", vocab_size)
        self.sequence_length = check_positive_int(name, "sequence_length",
                                                  sequence_length)
        self.embedding_dim = check_positive_int(name, "embedding_dim",
                                                embedding_dim)
        self.encoder = check_choice(name, "encoder", encoder,
                                    tuple(TEXT_ENCODERS.names()))
        # `output` is a Keras Layer property: stored as `output_mode`.
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.dim = check_positive_int(name, "dim", dim)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.num_layers = plain(num_layers)
        self.num_heads = plain(num_heads)
        self.intermediate_dim = plain(intermediate_dim)
        self.kernel_sizes = plain(kernel_sizes)
        self.filters = plain(filters)
        self.rnn_units = plain(rnn_units)
        self.use_cudnn = plain(use_cudnn)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # The encoder checks the arguments it takes (the others are kept
        # for get_config only): checked now, built in build() after the
        # embedding, so that the weights keep the order (and the initial
        # values under a seed) of the towers before the encoder registry.
        self._encoder_arguments = {
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers, "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "kernel_sizes": self.kernel_sizes, "filters": self.filters,
            "rnn_units": self.rnn_units, "use_cudnn": self.use_cudnn,
            "kernel_initializer": self.kernel_initializer, "dim": self.dim,
            "dropout": self.dropout}
        self._make_encoder()
        self.supports_masking = True

    # -- building -----------------------------------------------------------

    def _make_encoder(self):
        return make_encoder(TEXT_ENCODERS, self.encoder,
                            self._encoder_arguments,
                            dtype=self.dtype_policy, name="text_encoder")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 2:
            raise ValueError(
                "TextTower takes int token ids [batch, tokens]; got input "
                f"shape {shape}")
        if shape[1] is not None and shape[1] > self.sequence_length:
            raise ValueError(
                f"TextTower: the input has {shape[1]} tokens but "
                f"sequence_length={self.sequence_length}; raise "
                "sequence_length or truncate the token ids")
        policy = self.dtype_policy
        seq_shape = (shape[0], shape[1], self.embedding_dim)
        self.embedding = keras.layers.Embedding(
            self.vocab_size, self.embedding_dim,
            embeddings_initializer=clone_initializer(
                self.embeddings_initializer),
            dtype=policy, name="embedding")
        self.embedding.build(shape)
        self.text_encoder = self._make_encoder()
        self.text_encoder.build(seq_shape)
        self.feature_dropout = keras.layers.Dropout(self.dropout,
                                                    dtype=policy)
        self.projection = keras.layers.Dense(
            self.dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=policy, name="projection")
        self.projection.build(
            self.text_encoder.compute_output_shape(seq_shape))
        self.built = True

    # -- calling ------------------------------------------------------------

    def _token_mask(self, inputs, mask=None):
        token_mask = ops.not_equal(inputs, 0)
        if mask is not None:
            token_mask = ops.logical_and(token_mask, ops.cast(mask, "bool"))
        return token_mask

    def call(self, inputs, training=None, mask=None):
        ids = ops.cast(inputs, "int32")
        token_mask = self._token_mask(ids, mask)
        x = self.embedding(ids)
        weights = ops.cast(token_mask, x.dtype)[:, :, None]
        x = x * weights
        x = self.text_encoder(x, mask=token_mask, training=training)
        x = self.feature_dropout(x, training=training)
        weights = ops.cast(weights, x.dtype)
        if self.output_mode == "vector" and \
                self.text_encoder.pooling == "max":
            pooled = self.projection(ops.max(x, axis=1))
            has_tokens = ops.any(token_mask, axis=1, keepdims=True)
            return pooled * ops.cast(has_tokens, pooled.dtype)
        x = self.projection(x) * ops.cast(weights, self.compute_dtype)
        if self.output_mode == "sequence":
            return x
        return _masked_mean(x, ops.cast(weights, x.dtype))

    def load_own_variables(self, store):
        # A file saved before the encoder registry: the encoder's
        # sublayers sat directly under the tower.
        if remap_legacy_encoder(store, "text_encoder",
                                self.text_encoder.legacy_path):
            return
        super().load_own_variables(store)

    def compute_mask(self, inputs, mask=None):
        if self.output_mode != "sequence":
            return None
        return self._token_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        if self.output_mode == "vector":
            return (input_shape[0], self.dim)
        return (input_shape[0], input_shape[1], self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocab_size": self.vocab_size,
            "sequence_length": self.sequence_length,
            "embedding_dim": self.embedding_dim,
            "encoder": self.encoder,
            "output": self.output_mode,
            "dim": self.dim,
            "dropout": self.dropout,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "kernel_sizes": config_value(self.kernel_sizes),
            "filters": self.filters,
            "rnn_units": self.rnn_units,
            "use_cudnn": self.use_cudnn,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
