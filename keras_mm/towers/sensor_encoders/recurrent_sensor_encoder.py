"""`RecurrentSensorEncoder`: the stacked RNN shared by `GRUSensorEncoder`
and `LSTMSensorEncoder`."""

import keras

from keras_mm.layers.utils import (check_choice, check_positive_int,
                                   clone_initializer)
from keras_mm.towers.sensor_encoder import SensorEncoder

CUDNN_CHOICES = (False, True, "auto")


class RecurrentSensorEncoder(SensorEncoder):
    """`num_layers` stacked (unidirectional) recurrent layers of `dim` units
    that skip missing steps (the state is carried over them). Subclasses set
    `cell` (`keras.layers.GRU` or `keras.layers.LSTM`) and `prefix` (the
    sublayer names: `"gru0"`, ...).

    Args:
        dim: units.
        num_layers: recurrent layers.
        use_cudnn: passed to the LSTM / GRU layers. `False` (default) uses
            the portable implementation, which compiles with XLA and accepts
            masks with gaps; `"auto"` uses cuDNN on a GPU (faster, but Keras
            then turns off XLA for the model, and cuDNN only accepts
            right-padded masks with at least one valid step per row).
        kernel_initializer: initializer of the input kernels.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, steps, channels]`.
        mask: optional bool `[batch, steps]`, False for missing steps.
        training: Python bool (passed to the recurrent layers).

    Example:

    >>> from keras_mm.towers.sensor_encoders import LSTMSensorEncoder
    >>> encoder = LSTMSensorEncoder(dim=4)
    >>> isinstance(encoder, RecurrentSensorEncoder), encoder.cell.__name__
    (True, 'LSTM')
    """

    cell = None
    prefix = None

    def __init__(self, dim=64, num_layers=1, use_cudnn=False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.dim = check_positive_int(name, "dim", dim)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.use_cudnn = check_choice(name, "use_cudnn", use_cudnn,
                                      CUDNN_CHOICES)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.rnns = []
        for i in range(self.num_layers):
            rnn = self.cell(
                self.dim, return_sequences=True, use_cudnn=self.use_cudnn,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"{self.prefix}{i}")
            rnn.build(shape)
            shape = shape[:2] + (self.dim,)
            self.rnns.append(rnn)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        x = inputs
        for rnn in self.rnns:
            x = rnn(x, mask=mask, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update({
            "dim": self.dim,
            "num_layers": self.num_layers,
            "use_cudnn": self.use_cudnn,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
