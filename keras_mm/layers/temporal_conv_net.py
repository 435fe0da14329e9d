import keras
from keras import ops

from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int, check_positive_ints,
                                   clone_initializer)


@keras.saving.register_keras_serializable(package="keras_mm")
class TemporalConvNet(keras.layers.Layer):
    """Temporal convolutional network: residual blocks of dilated convolutions.

    Each block is two dilated `Conv1D` (causal padding by default) with
    layer norm, activation and dropout, plus a residual connection (a 1x1
    convolution where the width changes). The receptive field is
    `1 + 2 * (kernel_size - 1) * sum(dilations)` steps.

    Args:
        filters: channels of every block.
        kernel_size: convolution width.
        dilations: one block per dilation rate.
        dropout: dropout rate inside the blocks.
        activation: activation inside the blocks.
        padding: `"causal"` (output t sees inputs <= t) or `"same"`.
        kernel_initializer: initializer of every kernel.

    Call arguments:
        inputs: `[batch, steps, channels]`.
        training: Python bool, dropout on or off.
        mask: optional boolean `[batch, steps]`; masked steps are zeroed on
            input and output, and the mask passes through.

    Example:

    >>> x = keras.random.normal((2, 20, 3))
    >>> tuple(TemporalConvNet(filters=8, dilations=(1, 2))(x).shape)
    (2, 20, 8)
    """

    def __init__(self, filters=64, kernel_size=3, dilations=(1, 2, 4, 8),
                 dropout=0.1, activation="relu", padding="causal",
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        owner = "TemporalConvNet"
        self.filters = check_positive_int(owner, "filters", filters)
        self.kernel_size = check_positive_int(owner, "kernel_size",
                                              kernel_size)
        self.dilations = check_positive_ints(owner, "dilations", dilations,
                                             min_length=1)
        self.dropout = check_fraction(owner, "dropout", dropout)
        self.activation = keras.activations.get(activation)
        self.padding = check_choice(owner, "padding", padding,
                                    ("causal", "same"))
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.convs1, self.convs2, self.norms1, self.norms2 = [], [], [], []
        self.residual_projections = []
        for i, rate in enumerate(self.dilations):
            conv1 = keras.layers.Conv1D(
                self.filters, self.kernel_size, padding=self.padding,
                dilation_rate=rate,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"block{i}_conv1")
            conv2 = keras.layers.Conv1D(
                self.filters, self.kernel_size, padding=self.padding,
                dilation_rate=rate,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"block{i}_conv2")
            norm1 = keras.layers.LayerNormalization(
                dtype=self.dtype_policy, name=f"block{i}_norm1")
            norm2 = keras.layers.LayerNormalization(
                dtype=self.dtype_policy, name=f"block{i}_norm2")
            out_shape = shape[:-1] + (self.filters,)
            conv1.build(shape)
            norm1.build(out_shape)
            conv2.build(out_shape)
            norm2.build(out_shape)
            if shape[-1] != self.filters:
                proj = keras.layers.Conv1D(
                    self.filters, 1,
                    kernel_initializer=clone_initializer(
                        self.kernel_initializer),
                    dtype=self.dtype_policy, name=f"block{i}_residual")
                proj.build(shape)
            else:
                proj = keras.layers.Identity(dtype=self.dtype_policy,
                                             name=f"block{i}_residual")
            self.convs1.append(conv1)
            self.convs2.append(conv2)
            self.norms1.append(norm1)
            self.norms2.append(norm2)
            self.residual_projections.append(proj)
            shape = out_shape
        self.block_dropout = keras.layers.Dropout(self.dropout,
                                                  dtype=self.dtype_policy)
        self.built = True

    def call(self, inputs, training=None, mask=None):
        x = inputs
        step_mask = None
        if mask is not None:
            step_mask = ops.cast(ops.expand_dims(mask, -1), x.dtype)
            x = x * step_mask
        for i in range(len(self.dilations)):
            h = self.activation(self.norms1[i](self.convs1[i](x)))
            h = self.block_dropout(h, training=training)
            h = self.activation(self.norms2[i](self.convs2[i](h)))
            h = self.block_dropout(h, training=training)
            x = h + self.residual_projections[i](x)
            if step_mask is not None:
                x = x * ops.cast(step_mask, x.dtype)
        return x

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dilations": list(self.dilations),
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "padding": self.padding,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
