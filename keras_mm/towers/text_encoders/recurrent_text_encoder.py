"""`RecurrentTextEncoder`: the stacked bidirectional RNN shared by
`BiGRUTextEncoder` and `BiLSTMTextEncoder`."""

import keras
from keras import ops

from keras_mm.layers.utils import (check_choice, check_positive_int,
                                   clone_initializer)
from keras_mm.towers.text_encoder import TextEncoder

CUDNN_CHOICES = (False, True, "auto")


class RecurrentTextEncoder(TextEncoder):
    """`num_layers` bidirectional recurrent layers (`rnn_units` per
    direction) that skip padded steps; padded steps of the output are zero.
    Subclasses set `cell` (`keras.layers.GRU` or `keras.layers.LSTM`) and
    `prefix` (the sublayer names: `"bigru0"`, ...).

    Args:
        rnn_units: units per direction; None: `dim`.
        dim: the tower's width (the default of `rnn_units`).
        num_layers: recurrent layers.
        use_cudnn: passed to the GRU / LSTM layers. `False` (default) uses
            the portable implementation, which compiles with XLA and accepts
            any mask; `"auto"` uses cuDNN on a GPU (faster, but Keras then
            turns off XLA for the model, and cuDNN needs right-padded rows
            with at least one token each).
        kernel_initializer: initializer of the recurrent input kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, tokens, embedding_dim]`.
        mask: bool `[batch, tokens]`, True for real tokens.
        training: Python bool (passed to the recurrent layers).

    Example:

    >>> from keras_mm.towers.text_encoders import BiLSTMTextEncoder
    >>> encoder = BiLSTMTextEncoder(rnn_units=3, num_layers=1)
    >>> isinstance(encoder, RecurrentTextEncoder), encoder.cell.__name__
    (True, 'LSTM')
    """

    cell = None
    prefix = None

    def __init__(self, rnn_units=None, dim=64, num_layers=2, use_cudnn=False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.rnn_units = check_positive_int(name, "rnn_units", rnn_units,
                                            allow_none=True)
        self.dim = check_positive_int(name, "dim", dim)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.use_cudnn = check_choice(name, "use_cudnn", use_cudnn,
                                      CUDNN_CHOICES)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def units(self):
        return self.rnn_units or self.dim

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.rnns = []
        for i in range(self.num_layers):
            rnn = keras.layers.Bidirectional(
                self.cell(self.units, return_sequences=True,
                          use_cudnn=self.use_cudnn,
                          kernel_initializer=clone_initializer(
                              self.kernel_initializer),
                          dtype=self.dtype_policy),
                dtype=self.dtype_policy, name=f"{self.prefix}{i}")
            rnn.build(shape)
            shape = shape[:2] + (2 * self.units,)
            self.rnns.append(rnn)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        x = inputs
        for rnn in self.rnns:
            x = rnn(x, mask=mask, training=training)
        if mask is not None:
            x = x * ops.cast(mask, x.dtype)[:, :, None]
        return x

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:2], 2 * self.units)

    def get_config(self):
        config = super().get_config()
        config.update({
            "rnn_units": self.rnn_units,
            "dim": self.dim,
            "num_layers": self.num_layers,
            "use_cudnn": self.use_cudnn,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
