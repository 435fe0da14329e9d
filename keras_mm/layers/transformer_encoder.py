import keras
from keras import ops

from keras_mm.layers.utils import (check_fraction, check_positive_float,
                                   check_positive_int, clone_initializer)


@keras.saving.register_keras_serializable(package="keras_mm")
class TransformerEncoder(keras.layers.Layer):
    """A stack of pre-norm transformer encoder layers.

    Each layer is `x + MHA(LN(x))` then `x + MLP(LN(x))`; a final layer
    norm follows the stack. The model width is the last input dimension.

    Args:
        num_layers: number of encoder layers.
        num_heads: attention heads per layer.
        intermediate_dim: hidden width of the MLP; `None` means 4x width.
        dropout: dropout rate on attention weights and residual branches.
        activation: MLP activation.
        layer_norm_epsilon: epsilon of the layer norms.
        kernel_initializer: initializer of every kernel.

    Call arguments:
        inputs: `[batch, tokens, dim]`.
        training: Python bool, dropout on or off.
        mask: optional boolean `[batch, tokens]`, `True` for real tokens.
            Padded tokens are never attended to; the mask passes through.

    Example:

    >>> x = keras.random.normal((2, 5, 16))
    >>> tuple(TransformerEncoder(num_layers=1, num_heads=2)(x).shape)
    (2, 5, 16)
    """

    def __init__(self, num_layers=2, num_heads=4, intermediate_dim=None,
                 dropout=0.1, activation="gelu", layer_norm_epsilon=1e-6,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        owner = "TransformerEncoder"
        self.num_layers = check_positive_int(owner, "num_layers", num_layers)
        self.num_heads = check_positive_int(owner, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            owner, "intermediate_dim", intermediate_dim, allow_none=True)
        self.dropout = check_fraction(owner, "dropout", dropout)
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = check_positive_float(
            owner, "layer_norm_epsilon", layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(
                "TransformerEncoder needs a known last dimension; got "
                f"input shape {input_shape}"
            )
        if dim % self.num_heads:
            raise ValueError(
                f"TransformerEncoder: width {dim} is not divisible by "
                f"num_heads={self.num_heads}; change num_heads or the width"
            )
        hidden = self.intermediate_dim or 4 * dim
        seq_shape = tuple(input_shape)
        init = clone_initializer
        self.attn_norms, self.attns, self.mlp_norms = [], [], []
        self.fc1s, self.fc2s = [], []
        for i in range(self.num_layers):
            norm1 = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
                name=f"layer{i}_attn_norm")
            attn = keras.layers.MultiHeadAttention(
                num_heads=self.num_heads, key_dim=dim // self.num_heads,
                dropout=self.dropout,
                kernel_initializer=init(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"layer{i}_attn")
            norm2 = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
                name=f"layer{i}_mlp_norm")
            fc1 = keras.layers.Dense(
                hidden, activation=self.activation,
                kernel_initializer=init(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"layer{i}_mlp_fc1")
            fc2 = keras.layers.Dense(
                dim, kernel_initializer=init(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"layer{i}_mlp_fc2")
            norm1.build(seq_shape)
            attn.build(seq_shape, seq_shape)
            norm2.build(seq_shape)
            fc1.build(seq_shape)
            fc2.build(seq_shape[:-1] + (hidden,))
            self.attn_norms.append(norm1)
            self.attns.append(attn)
            self.mlp_norms.append(norm2)
            self.fc1s.append(fc1)
            self.fc2s.append(fc2)
        self.residual_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy)
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
            name="final_norm")
        self.final_norm.build(seq_shape)
        self.built = True

    def call(self, inputs, training=None, mask=None):
        x = inputs
        attention_mask = None
        if mask is not None:
            mask = ops.cast(mask, "bool")
            attention_mask = ops.logical_and(
                ops.expand_dims(mask, 1), ops.expand_dims(mask, 2))
        drop = self.residual_dropout
        for i in range(self.num_layers):
            h = self.attn_norms[i](x)
            h = self.attns[i](h, h, attention_mask=attention_mask,
                              training=training)
            x = x + drop(h, training=training)
            h = self.fc2s[i](self.fc1s[i](self.mlp_norms[i](x)))
            x = x + drop(h, training=training)
        x = self.final_norm(x)
        if mask is not None:
            x = x * ops.cast(ops.expand_dims(mask, -1), x.dtype)
        return x

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
