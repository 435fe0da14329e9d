import keras
from keras import ops

import keras_mm.towers.video_encoders  # noqa: F401  (fills VIDEO_ENCODERS)
from keras_mm.layers.position_embedding import PositionEmbedding
from keras_mm.layers.temporal_conv_net import TemporalConvNet
from keras_mm.layers.transformer_encoder import TransformerEncoder
from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int, check_positive_ints,
                                   check_widths, config_value, plain)
from keras_mm.registry import TOWERS, VIDEO_ENCODERS
from keras_mm.towers.encoder_arguments import make_encoder
from keras_mm.towers.legacy_weights import remap_legacy_encoder
from keras_mm.towers.resnet_backbone import NORM_MOMENTUM
OUTPUTS = ("vector", "sequence", "feature_map")
TEMPORALS = ("mean", "tcn", "gru", "transformer")


def _masked_mean(x, step_mask):
    """Mean over axis 1 of `x` [B, T, D] where `step_mask` [B, T, 1] is 1."""
    total = ops.sum(x * step_mask, axis=1)
    count = ops.maximum(ops.sum(step_mask, axis=1), ops.cast(1.0, x.dtype))
    return total / count


@keras.saving.register_keras_serializable(package="keras_mm")
@TOWERS.register("video")
class VideoTower(keras.layers.Layer):
    """Video tower: encodes clips `[batch, frames, height, width, channels]`.

    Encoders (`keras_mm.registry.VIDEO_ENCODERS`; one `VideoEncoder` class
    each, which the tower builds with the arguments below that its
    `__init__` names; a new architecture is a new registered class). Both
    give a feature map `[batch, T', H', W', dim]`:

    - `"conv3d"` (`Conv3DVideoEncoder`): a C3D-style stack, one block per entry
      of `filters` (3x3x3 convolution, ReLU, max pool; the first pool is 1x2x2
      and the later ones 2x2x2, so `T' = ceil(T / 2**(len(filters) - 1))` and
      `H' = ceil(H / 2**len(filters))`), then a dense projection to `dim`.
    - `"frames"` (`FramesVideoEncoder`): a shared per-frame 2-D CNN (an
      `ImageTower` with `encoder="cnn"`, `filters`, `kernel_size`) applied to
      every frame; `T' = T`, `H' = ceil(H / 2**len(filters))`.

    The feature map is averaged over space into one token per time step,
    and the `temporal` stage runs over those tokens: `"mean"` (none),
    `"tcn"` (`TemporalConvNet`, causal, `tcn_dilations`), `"gru"` (a GRU)
    or `"transformer"` (learned positions + `num_layers` pre-norm layers).

    - `output="vector"`: the masked mean of the temporal tokens, `[batch,
      dim]`;
    - `output="sequence"`: the temporal tokens `[batch, T', dim]`;
      `compute_mask` gives the frame mask (pooled to `T'` for `conv3d`);
    - `output="feature_map"`: `[batch, T', H', W', dim]`, the feature map
      plus (for `temporal != "mean"`) each time step's temporal token
      broadcast over space, so every location carries the clip context.

    Masking: the optional boolean frame mask `[batch, frames]` marks real
    frames True and padded frames False. Padded frames are zeroed before
    the encoder and after each 3-D convolution, excluded from the temporal
    stage (masked TCN/GRU/attention) and from the mean, and zeroed in the
    outputs: their content never changes the output. A pooled `conv3d`
    step is valid when any of its frames is. (In training, the batch norm
    of the `frames` CNN counts padded frames as black frames.)

    Weights saved before the encoder registry (the encoder's sublayers
    directly under the tower) still load (`legacy_weights`).

    Args:
        encoder: `"conv3d"` or `"frames"`.
        output: `"vector"`, `"sequence"` or `"feature_map"` (kept as the
            attribute `output_mode`: `output` is a Keras Layer property).
        temporal: `"mean"`, `"tcn"`, `"gru"` or `"transformer"`.
        dim: output width.
        dropout: dropout rate on the output and inside the temporal stage.
        filters: channels per conv block.
        kernel_size: conv size (per axis).
        tcn_dilations: one TCN block per dilation (`temporal="tcn"`).
        num_layers, num_heads, intermediate_dim: `temporal="transformer"`.
        kernel_initializer: initializer of the conv kernels.
        normalization: the `frames` CNN's normalization: `"batch"`,
            `"group"` or `"layer"` (see `ImageTower`).
        norm_momentum: its batch-norm momentum (see `ImageTower`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: float `[batch, frames, height, width, channels]`.
        training: Python bool (batch norm and dropout).
        mask: optional boolean `[batch, frames]`, False for padded frames.

    Example:

    >>> clips = keras.random.uniform((2, 8, 32, 32, 3))
    >>> mask = keras.ops.arange(8)[None, :] < keras.ops.array([[8], [5]])
    >>> tower = VideoTower(encoder="frames", temporal="gru", dim=16,
    ...                    filters=(8, 16), output="sequence")
    >>> out = tower(clips, mask=mask)
    >>> tuple(out.shape)
    (2, 8, 16)
    >>> bool(keras.ops.all(out[1, 5:] == 0))  # padded frames give zeros
    True
    """

    input_dtype = "float32"

    def __init__(self, encoder="frames", output="vector", temporal="mean",
                 dim=64, dropout=0.0, filters=(32, 64), kernel_size=3,
                 tcn_dilations=(1, 2, 4), num_layers=2, num_heads=4,
                 intermediate_dim=None, kernel_initializer="he_normal",
                 normalization="batch", norm_momentum=NORM_MOMENTUM,
                 **kwargs):
        super().__init__(**kwargs)
        name = "VideoTower"
        self.encoder = check_choice(name, "encoder", encoder,
                                    tuple(VIDEO_ENCODERS.names()))
        # `output` is a Keras Layer property: stored as `output_mode`.
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.temporal = check_choice(name, "temporal", temporal, TEMPORALS)
        self.dim = check_positive_int(name, "dim", dim)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.filters = plain(filters)
        self.kernel_size = plain(kernel_size)
        self.tcn_dilations = check_widths(
            name, "tcn_dilations", tcn_dilations, "dilation rate",
            "(1, 2, 4)") if temporal == "tcn" else check_positive_ints(
                name, "tcn_dilations", tcn_dilations)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        self.num_heads = check_positive_int(name, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            name, "intermediate_dim", intermediate_dim, allow_none=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.normalization = plain(normalization)
        self.norm_momentum = plain(norm_momentum)
        # The encoder checks the arguments it takes (the others are kept
        # for get_config only).
        self.video_encoder = make_encoder(
            VIDEO_ENCODERS, self.encoder,
            {"filters": self.filters, "kernel_size": kernel_size,
             "dim": dim, "kernel_initializer": self.kernel_initializer,
             "normalization": normalization, "norm_momentum": norm_momentum},
            dtype=self.dtype_policy, name="video_encoder")
        self.supports_masking = True

    # -- building -----------------------------------------------------------

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 5 or None in shape[2:]:
            raise ValueError(
                "VideoTower takes float clips [batch, frames, height, width, "
                f"channels] with a known frame size; got shape {shape}")
        policy = self.dtype_policy
        self.video_encoder.build(shape)
        steps = self.video_encoder.grid(shape)[0]
        seq_shape = (None, steps, self.dim)
        if self.temporal == "tcn":
            self.temporal_layer = TemporalConvNet(
                filters=self.dim, dilations=self.tcn_dilations,
                dropout=self.dropout, dtype=policy, name="tcn")
            self.temporal_layer.build(seq_shape)
        elif self.temporal == "gru":
            self.temporal_layer = keras.layers.GRU(
                self.dim, return_sequences=True, dtype=policy, name="gru")
            self.temporal_layer.build(seq_shape)
        elif self.temporal == "transformer":
            if steps is None:
                raise ValueError(
                    "VideoTower(temporal='transformer') needs a fixed "
                    "number of frames for its position embeddings (pad "
                    f"clips and pass a frame mask); got shape {shape}")
            self.position_embedding = PositionEmbedding(
                steps, dtype=policy, name="position_embedding")
            self.position_embedding.build(seq_shape)
            self.temporal_layer = TransformerEncoder(
                num_layers=self.num_layers, num_heads=self.num_heads,
                intermediate_dim=self.intermediate_dim,
                dropout=self.dropout, dtype=policy, name="transformer")
            self.temporal_layer.build(seq_shape)
        self.output_dropout = keras.layers.Dropout(self.dropout,
                                                   dtype=policy)
        self.built = True

    # -- calling ------------------------------------------------------------

    def _feature_map(self, inputs, mask, training):
        """Feature map [B, T', H', W', dim] and step mask [B, T'] or None."""
        x = ops.cast(inputs, self.compute_dtype)
        if mask is not None:
            x = x * ops.cast(mask, x.dtype)[:, :, None, None, None]
        fmap = self.video_encoder(x, mask=mask, training=training)
        return fmap, self.video_encoder.step_mask(mask)

    def load_own_variables(self, store):
        # A file saved before the encoder registry: the encoder's
        # sublayers sat directly under the tower.
        if remap_legacy_encoder(store, "video_encoder",
                                self.video_encoder.legacy_path):
            return
        super().load_own_variables(store)

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            mask = ops.cast(mask, "bool")
        fmap, step_mask = self._feature_map(inputs, mask, training)
        steps = ops.mean(fmap, axis=(2, 3))
        weights = None
        if step_mask is not None:
            weights = ops.cast(step_mask, fmap.dtype)[:, :, None]
            steps = steps * weights
        if self.temporal == "transformer":
            steps = self.position_embedding(steps)
        if self.temporal != "mean":
            steps = self.temporal_layer(steps, training=training,
                                        mask=step_mask)
            steps = ops.cast(steps, fmap.dtype)
            if weights is not None:
                steps = steps * weights
        if self.output_mode == "feature_map":
            if self.temporal != "mean":
                fmap = fmap + steps[:, :, None, None, :]
            if weights is not None:
                fmap = fmap * weights[:, :, :, None, None]
            return self.output_dropout(fmap, training=training)
        steps = self.output_dropout(steps, training=training)
        if self.output_mode == "sequence":
            return steps
        if weights is None:
            return ops.mean(steps, axis=1)
        return _masked_mean(steps, weights)

    def compute_mask(self, inputs, mask=None):
        if mask is None or self.output_mode != "sequence":
            return None
        return self.video_encoder.step_mask(mask)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        if self.output_mode == "vector":
            return (batch, self.dim)
        steps, height, width = self.video_encoder.grid(input_shape)
        if self.output_mode == "sequence":
            return (batch, steps, self.dim)
        return (batch, steps, height, width, self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": self.encoder,
            "output": self.output_mode,
            "temporal": self.temporal,
            "dim": self.dim,
            "dropout": self.dropout,
            "filters": config_value(self.filters),
            "kernel_size": self.kernel_size,
            "tcn_dilations": list(self.tcn_dilations),
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "normalization": self.normalization,
            "norm_momentum": self.norm_momentum,
        })
        return config
