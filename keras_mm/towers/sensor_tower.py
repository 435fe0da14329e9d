import keras
from keras import ops

import keras_mm.towers.sensor_encoders  # noqa: F401  (fills SENSOR_ENCODERS)
from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int, config_value, plain)
from keras_mm.registry import SENSOR_ENCODERS, TOWERS
from keras_mm.towers.encoder_arguments import make_encoder
from keras_mm.towers.legacy_weights import remap_legacy_encoder

OUTPUTS = ("vector", "sequence")
POOLINGS = ("mean", "last", "attention", "max")


@keras.saving.register_keras_serializable(package="keras_mm")
@TOWERS.register("sensor")
class SensorTower(keras.layers.Layer):
    """Sensor tower: encodes multivariate series `[batch, steps, channels]`.

    Encoders (`keras_mm.registry.SENSOR_ENCODERS`; one `SensorEncoder`
    class each, which the tower builds with the arguments below that its
    `__init__` names; a new architecture is a new registered class). Each
    gives one `dim`-wide token per time step:

    - `"lstm"` / `"gru"` (`LSTMSensorEncoder` / `GRUSensorEncoder`):
      `num_layers` stacked (unidirectional) LSTM / GRU layers of `dim` units
      that skip missing steps (the state is carried over them);
    - `"tcn"` (`TCNSensorEncoder`): a `TemporalConvNet` (`dim` filters,
      `kernel_size`, one residual block per entry of `tcn_dilations`, causal
      padding: step t only sees steps <= t);
    - `"transformer"` (`TransformerSensorEncoder`): a dense projection to
      `dim`, learned position embeddings (one per step of the input length) and
      `num_layers` pre-norm transformer layers whose attention ignores missing
      steps.

    - `output="vector"`: `[batch, dim]`, the tokens pooled over the valid
      steps by `pooling`: `"mean"`; `"last"`, the token of the last VALID
      step (the final state of a recurrent encoder that skipped the padding;
      with the causal TCN, the step that has seen the whole series);
      `"attention"`, a softmax-weighted mean whose weights come from a
      learned query (`pool_query`, `[dim]`) scored against each token,
      missing steps excluded from the softmax; `"max"`, the per-feature
      maximum over the valid steps;
    - `output="sequence"`: `[batch, steps, dim]`, missing steps zeroed;
      `compute_mask` passes the step mask through (None without one).

    Masking: the optional boolean `mask` `[batch, steps]` marks real steps
    True and missing / padded steps False, anywhere in the sequence. The
    values at missing steps never change the output (they may even be NaN):
    they are replaced by zeros before the encoder (which is what the TCN
    sees, as for its causal padding), skipped by the recurrent layers,
    excluded from attention and from the pooling, and zeroed in the
    sequence output. A row without any valid step gives zeros. Right-padded
    series with their mask give the same vector as the unpadded series, for
    every pooling, with the lstm, gru and tcn encoders.

    Weights saved before the encoder registry (the encoder's sublayers
    directly under the tower) still load (`legacy_weights`).

    Args:
        encoder: `"lstm"`, `"gru"`, `"tcn"` or `"transformer"`.
        output: `"vector"` or `"sequence"`.
        dim: output width (units, filters or transformer width).
        dropout: dropout rate on the output (and inside the TCN and the
            transformer).
        num_layers: recurrent or transformer layers.
        num_heads: attention heads (`"transformer"`); must divide `dim`.
        intermediate_dim: transformer MLP width; `None` means 4x `dim`.
        kernel_size: TCN convolution width.
        tcn_dilations: one TCN block per dilation rate.
        pooling: `"max"` (default), `"mean"`, `"last"` or `"attention"`:
            how `output="vector"` pools the tokens. `"max"` was chosen by
            measurement: on BasicMotions, as it is and cut to random
            lengths of 20-100 steps, it was the best or within one test
            example of the best pooling for each of the gru, lstm and tcn
            encoders, while `"last"` lost 6-16 points
            (`benchmarks/accuracy_basicmotions.py --study pooling`; figures
            in BENCHMARKS.md).
        use_cudnn: passed to the LSTM / GRU layers. The default `False` uses
            the portable implementation, which compiles with XLA and accepts
            masks with gaps; `"auto"` uses cuDNN on a GPU (faster, but Keras
            then turns off XLA for the model, and cuDNN only accepts
            right-padded masks with at least one valid step per row).
        kernel_initializer: initializer of the recurrent-layer and dense
            kernels (the TCN keeps its He-normal default for ReLU blocks).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, steps, channels]`.
        training: Python bool, dropout on or off.
        mask: optional boolean `[batch, steps]`, False for missing steps.

    Example:

    >>> series = keras.random.normal((2, 50, 6))
    >>> mask = keras.ops.arange(50)[None, :] < keras.ops.array([[50], [30]])
    >>> tower = SensorTower(encoder="tcn", dim=16, tcn_dilations=(1, 2, 4))
    >>> tuple(tower(series, mask=mask).shape)
    (2, 16)
    """

    input_dtype = "float32"

    def __init__(self, encoder="gru", output="vector", dim=64, dropout=0.0,
                 num_layers=1, num_heads=4, intermediate_dim=None,
                 kernel_size=3, tcn_dilations=(1, 2, 4, 8), pooling="max",
                 use_cudnn=False, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        name = "SensorTower"
        self.encoder = check_choice(name, "encoder", encoder,
                                    tuple(SENSOR_ENCODERS.names()))
        # `output` is a Keras Layer property: stored as `output_mode`.
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.dim = check_positive_int(name, "dim", dim)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.num_layers = plain(num_layers)
        self.num_heads = plain(num_heads)
        self.intermediate_dim = plain(intermediate_dim)
        self.kernel_size = plain(kernel_size)
        self.tcn_dilations = plain(tcn_dilations)
        self.pooling = check_choice(name, "pooling", pooling, POOLINGS)
        self.use_cudnn = plain(use_cudnn)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # The encoder checks the arguments it takes (the others are kept
        # for get_config only).
        self.sensor_encoder = make_encoder(
            SENSOR_ENCODERS, self.encoder,
            {"dim": dim, "dropout": dropout, "num_layers": num_layers,
             "num_heads": num_heads, "intermediate_dim": intermediate_dim,
             "kernel_size": kernel_size,
             "tcn_dilations": self.tcn_dilations, "use_cudnn": use_cudnn,
             "kernel_initializer": self.kernel_initializer},
            dtype=self.dtype_policy, name="sensor_encoder")
        self.supports_masking = True

    # -- building -----------------------------------------------------------

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] is None:
            raise ValueError(
                "SensorTower takes float series [batch, steps, channels] "
                f"with a known number of channels; got input shape {shape}")
        policy = self.dtype_policy
        self.sensor_encoder.build(shape)
        if self.output_mode == "vector" and self.pooling == "attention":
            self.pool_query = self.add_weight(
                name="pool_query", shape=(self.dim,),
                initializer="zeros", trainable=True)
        self.output_dropout = keras.layers.Dropout(self.dropout,
                                                   dtype=policy)
        self.built = True

    # -- calling ------------------------------------------------------------

    def call(self, inputs, training=None, mask=None):
        x = ops.cast(inputs, self.compute_dtype)
        if mask is not None:
            mask = ops.cast(mask, "bool")
            # `where`, not a product: missing values may be NaN.
            x = ops.where(mask[:, :, None], x, ops.zeros_like(x))
        x = self.sensor_encoder(x, mask=mask, training=training)
        x = ops.cast(x, self.compute_dtype)
        weights = None
        if mask is not None:
            weights = ops.cast(mask, x.dtype)[:, :, None]
            x = x * weights
        x = self.output_dropout(x, training=training)
        if self.output_mode == "sequence":
            return x
        return self._pool(x, mask, weights)

    def _pool(self, x, mask, weights):
        """`[batch, steps, dim]` -> `[batch, dim]` over the valid steps
        (`x` is already zero at missing steps)."""
        if self.pooling == "mean":
            if weights is None:
                return ops.mean(x, axis=1)
            total = ops.sum(x, axis=1)
            count = ops.maximum(ops.sum(weights, axis=1),
                                ops.cast(1.0, x.dtype))
            return total / count
        if self.pooling == "last":
            if mask is None:
                return x[:, -1]
            steps = ops.shape(x)[1]
            # Index of the last True step: the largest (i + 1) * mask, - 1.
            positions = ops.arange(1, steps + 1, dtype="int32")[None, :]
            last = ops.max(positions * ops.cast(mask, "int32"), axis=1) - 1
            picked = ops.take_along_axis(
                x, ops.maximum(last, 0)[:, None, None], axis=1)[:, 0]
            # A row without a valid step: zeros (x is zero there anyway).
            return picked * ops.cast(last >= 0, x.dtype)[:, None]
        if self.pooling == "max":
            if mask is None:
                return ops.max(x, axis=1)
            valid = ops.cast(mask, "bool")[:, :, None]
            best = ops.max(ops.where(valid, x, ops.full_like(
                x, float("-inf"))), axis=1)
            any_valid = ops.any(valid, axis=1)
            return ops.where(any_valid, best, ops.zeros_like(best))
        # attention: softmax over the valid steps of <token, query> / sqrt(d).
        query = ops.cast(self.pool_query, x.dtype)
        scores = ops.sum(x * query, axis=-1) / ops.cast(
            self.dim ** 0.5, x.dtype)
        scores = ops.cast(scores, "float32")
        valid = (ops.ones_like(scores, dtype="bool") if mask is None
                 else ops.cast(mask, "bool"))
        scores = ops.where(valid, scores, ops.full_like(scores, -1e9))
        # Masked softmax over the steps (a row without a valid step: zeros).
        exp = ops.exp(scores - ops.max(scores, axis=1, keepdims=True))
        exp = exp * ops.cast(valid, exp.dtype)
        attn = exp / ops.maximum(ops.sum(exp, axis=1, keepdims=True), 1e-30)
        return ops.sum(x * ops.cast(attn, x.dtype)[:, :, None], axis=1)

    def load_own_variables(self, store):
        # A file saved before the encoder registry: the encoder's
        # sublayers sat directly under the tower (`pool_query` is the
        # tower's own, in either layout).
        remap_legacy_encoder(store, "sensor_encoder",
                             self.sensor_encoder.legacy_path)
        super().load_own_variables(store)

    def compute_mask(self, inputs, mask=None):
        if mask is None or self.output_mode != "sequence":
            return None
        return ops.cast(mask, "bool")

    def compute_output_shape(self, input_shape):
        if self.output_mode == "vector":
            return (input_shape[0], self.dim)
        return (input_shape[0], input_shape[1], self.dim)

    @classmethod
    def from_config(cls, config):
        # Saved before `pooling` existed: those towers were mean-pooled.
        config = dict(config)
        config.setdefault("pooling", "mean")
        return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": self.encoder,
            "output": self.output_mode,
            "dim": self.dim,
            "dropout": self.dropout,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "kernel_size": self.kernel_size,
            "tcn_dilations": config_value(self.tcn_dilations),
            "pooling": self.pooling,
            "use_cudnn": self.use_cudnn,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
