"""Video tower: a pretrained keras-hub image backbone on every frame, then a
temporal encoder over the frame vectors."""

import keras
from keras import ops

from keras_mm.layers.position_embedding import PositionEmbedding
from keras_mm.layers.temporal_conv_net import TemporalConvNet
from keras_mm.layers.transformer_encoder import TransformerEncoder
from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int, check_positive_ints)
from keras_mm.pretrained.image_preset_tower import ImagePresetTower
from keras_mm.pretrained.tower_utils import check_source
from keras_mm.registry import PRETRAINED_TOWERS
from keras_mm.towers.video_tower import TEMPORALS, _masked_mean

OUTPUTS = ("vector", "sequence")
_NAME = "VideoPresetTower"


@keras.saving.register_keras_serializable(package="keras_mm")
@PRETRAINED_TOWERS.register("video_preset")
class VideoPresetTower(keras.layers.Layer):
    """Video tower over a pretrained keras-hub image backbone per frame.

    Takes clips `[batch, frames, H, W, 3]` whose frames are already
    converted by the preset's image converter (`VideoPresetPreprocessor`)
    and the frame mask. One `ImagePresetTower` (`output="vector"`, the
    attribute `frame_encoder`: one backbone shared by all frames) turns
    every frame into a vector (its `pooling`: e.g. the ViT class token, the
    CLIP / SigLIP image embedding, ResNet average pooling), then the
    `temporal` stage of the scratch `VideoTower` runs over the frame
    vectors: `"mean"` (none), `"tcn"` (`TemporalConvNet`, causal,
    `tcn_dilations`), `"gru"` (a GRU) or `"transformer"` (learned positions
    + `num_layers` pre-norm layers, `num_heads`, `intermediate_dim`).

    - `output="vector"`: the masked mean of the temporal tokens, `[batch,
      width]`;
    - `output="sequence"`: the temporal tokens `[batch, frames, width]`,
      padded frames zeroed; `compute_mask` gives the frame mask (all True
      when `call` gets none).

    `width` is `dim`, or with `dim=None` the frame encoder's own width (the
    backbone's, or CLIP's projection): `dim` is the frame encoder's Dense
    projection, so the temporal stage runs at `width`. `dropout` applies
    inside the temporal stage (TCN, transformer) and on the output.

    Fine-tuning (the frame encoder's; see `ImagePresetTower`):

    - `trainable=False` (the Keras argument) freezes the whole tower,
      frame encoder and temporal stage; batch norms then run in inference
      mode.
    - `trainable_blocks=N`: only the backbone's last N blocks (+ its final
      norm / pooler / projection) train, with `dim`'s projection and the
      temporal stage.
    - `lora_rank=r`: keras-hub's `enable_lora(r)` on the backbone (ViT,
      CLIP, SigLIP); only the adapters train in the backbone.

    Every variable path starts with `<tower name>/` (per-tower
    learning-rate multipliers match on it).

    Args:
        preset: a keras-hub image preset name, `kaggle://` / `hf://` handle
            or local preset folder (ViT, ResNet, CLIP, SigLIP...); its
            backbone is loaded with its weights. Offline, a name that needs
            a download fails with one line.
        backbone: instead of (or, in a saved config, beside) `preset`: a
            keras-hub image `Backbone` or its serialized config (random
            weights); it wins over `preset`, so that a saved model rebuilds
            without the preset folder.
        temporal: `"mean"`, `"tcn"`, `"gru"` or `"transformer"`.
        output: `"vector"` or `"sequence"` (kept as the attribute
            `output_mode`).
        dim: None (the frame encoder's width) or the width of a Dense
            projection of every frame vector.
        dropout: dropout rate of the temporal stage and the output.
        trainable_blocks: None (all trainable) or the number of the
            backbone's last blocks left trainable.
        lora_rank: None, or the LoRA rank.
        pooling: the frame vector's pooling; None = the backbone family's
            default (`ImagePresetTower`).
        tcn_dilations: one TCN block per dilation (`temporal="tcn"`).
        num_layers, num_heads, intermediate_dim: `temporal="transformer"`
            (the width must be divisible by `num_heads`).
        **kwargs: standard `keras.layers.Layer` arguments (`trainable`,
            `dtype`, `name`); the backbone is loaded with this dtype policy.

    Call arguments:
        inputs: float `[batch, frames, H, W, 3]`, the backbone's image
            size (the preset preprocessor's).
        training: Python bool (dropout; batch norms of trainable layers).
        mask: optional bool `[batch, frames]`, False for padded frames.

    Masking: padded frames are zeroed before the backbone, their frame
    vectors are zeroed, and they are excluded from the temporal stage
    (masked TCN / GRU / attention) and from the mean, and zeroed in the
    `"sequence"` output: a clip padded with masked frames gives the output
    of the same clip unpadded. (A trainable ResNet's batch norms, in
    training, count padded frames as black frames in their statistics.)
    A clip without frames (all-False mask) gives zeros; mark it absent with
    the fusion presence mask.

    Example:

    >>> tower = VideoPresetTower(preset="/models/vit_base_patch16_224",
    ...                          temporal="gru", dim=64,
    ...                          trainable=False)     # doctest: +SKIP
    >>> tower(clips, mask=mask).shape  # clips: [B, 8, 224, 224, 3]
    ... # doctest: +SKIP
    TensorShape([B, 64])
    """

    input_dtype = "float32"

    def __init__(self, preset=None, backbone=None, temporal="mean",
                 output="vector", dim=None, dropout=0.0,
                 trainable_blocks=None, lora_rank=None, pooling=None,
                 tcn_dilations=(1, 2, 4), num_layers=2, num_heads=4,
                 intermediate_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.temporal = check_choice(_NAME, "temporal", temporal, TEMPORALS)
        self.output_mode = check_choice(_NAME, "output", output, OUTPUTS)
        self.dim = check_positive_int(_NAME, "dim", dim, allow_none=True)
        self.dropout = check_fraction(_NAME, "dropout", dropout)
        self.tcn_dilations = check_positive_ints(_NAME, "tcn_dilations",
                                                 tcn_dilations)
        if self.temporal == "tcn" and not self.tcn_dilations:
            raise ValueError(f"{_NAME}: tcn_dilations must list at least "
                             "one dilation rate, e.g. tcn_dilations=(1, 2, "
                             "4)")
        self.num_layers = check_positive_int(_NAME, "num_layers", num_layers)
        self.num_heads = check_positive_int(_NAME, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            _NAME, "intermediate_dim", intermediate_dim, allow_none=True)
        check_source(_NAME, preset, backbone, kind="image ")
        self.preset = preset
        # The tower's variables live under its own name scope, so that a
        # per-tower learning-rate multiplier finds them by path.
        with keras.name_scope(self.name, caller=self):
            try:
                self.frame_encoder = ImagePresetTower(
                    preset=preset, backbone=backbone, output="vector",
                    pooling=pooling, dim=self.dim,
                    trainable_blocks=trainable_blocks, lora_rank=lora_rank,
                    dtype=self.dtype_policy, name="frame_encoder")
            except ValueError as error:
                raise ValueError(f"{_NAME}: {error}") from None
        self.trainable_blocks = self.frame_encoder.trainable_blocks
        self.lora_rank = self.frame_encoder.lora_rank
        self.pooling = self.frame_encoder.pooling
        self.supports_masking = True
        self._freeze_if_frozen()

    @property
    def backbone(self):
        """The keras-hub model run on every frame (the frame encoder's)."""
        return self.frame_encoder.backbone

    def _freeze_if_frozen(self):
        # Keras only freezes the variables that exist when `trainable` is
        # set; sub-layers made later would still train.
        if not self.trainable:
            keras.layers.Layer.trainable.fset(self, False)

    # -- shapes -------------------------------------------------------------

    def _width(self, input_shape):
        """Width of the frame vectors (and of the temporal stage)."""
        return self.frame_encoder.compute_output_shape(
            (None, *tuple(input_shape)[2:]))[-1]

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 5 or None in shape[2:]:
            raise ValueError(
                f"{_NAME} takes float clips [batch, frames, height, width, "
                f"channels] with a known frame size; got shape {shape}")
        policy = self.dtype_policy
        self.frame_encoder.build((None, *shape[2:]))
        width = self._width(shape)
        steps = shape[1]
        seq_shape = (None, steps, width)
        if self.temporal == "tcn":
            self.temporal_layer = TemporalConvNet(
                filters=width, dilations=self.tcn_dilations,
                dropout=self.dropout, dtype=policy, name="tcn")
            self.temporal_layer.build(seq_shape)
        elif self.temporal == "gru":
            self.temporal_layer = keras.layers.GRU(
                width, return_sequences=True, dtype=policy, name="gru")
            self.temporal_layer.build(seq_shape)
        elif self.temporal == "transformer":
            if steps is None:
                raise ValueError(
                    f"{_NAME}(temporal='transformer') needs a fixed number "
                    "of frames for its position embeddings (pad clips and "
                    f"pass a frame mask); got shape {shape}")
            if width % self.num_heads:
                raise ValueError(
                    f"{_NAME}: temporal='transformer' runs at width {width}"
                    f", which num_heads={self.num_heads} does not divide; "
                    "change num_heads or dim")
            self.position_embedding = PositionEmbedding(
                steps, dtype=policy, name="position_embedding")
            self.position_embedding.build(seq_shape)
            self.temporal_layer = TransformerEncoder(
                num_layers=self.num_layers, num_heads=self.num_heads,
                intermediate_dim=self.intermediate_dim,
                dropout=self.dropout, dtype=policy, name="transformer")
            self.temporal_layer.build(seq_shape)
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=policy, name="output_dropout")
        self.built = True
        self._freeze_if_frozen()

    # -- calling ------------------------------------------------------------

    def frame_vectors(self, inputs, mask=None, training=None):
        """The frame encoder on every frame: `[batch, frames, width]`
        (padded frames zeroed, before the temporal stage)."""
        x = ops.cast(inputs, self.compute_dtype)
        weights = None
        if mask is not None:
            weights = ops.cast(mask, x.dtype)
            x = x * weights[:, :, None, None, None]
        shape = ops.shape(x)
        frames = ops.reshape(x, (-1,) + tuple(x.shape[2:]))
        vectors = self.frame_encoder(frames, training=training)
        vectors = ops.reshape(vectors, (shape[0], shape[1],
                                        vectors.shape[-1]))
        if weights is not None:
            vectors = vectors * ops.cast(weights, vectors.dtype)[:, :, None]
        return vectors

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            mask = ops.cast(mask, "bool")
        steps = self.frame_vectors(inputs, mask, training)
        weights = None
        if mask is not None:
            weights = ops.cast(mask, steps.dtype)[:, :, None]
        if self.temporal == "transformer":
            steps = self.position_embedding(steps)
        if self.temporal != "mean":
            steps = self.temporal_layer(steps, training=training, mask=mask)
            steps = ops.cast(steps, self.compute_dtype)
            if weights is not None:
                steps = steps * weights
        steps = self.output_dropout(steps, training=training)
        if self.output_mode == "sequence":
            return steps
        if weights is None:
            return ops.mean(steps, axis=1)
        return _masked_mean(steps, weights)

    def compute_mask(self, inputs, mask=None):
        if self.output_mode != "sequence":
            return None
        if mask is not None:
            return ops.cast(mask, "bool")
        # From the inputs, so that a symbolic batch size works too.
        return ops.ones_like(inputs[:, :, 0, 0, 0], dtype="bool")

    def compute_output_shape(self, input_shape):
        width = self._width(input_shape)
        if self.output_mode == "vector":
            return (input_shape[0], width)
        return (input_shape[0], input_shape[1], width)

    def get_config(self):
        config = super().get_config()
        config.update({
            "preset": self.preset,
            "backbone": self.frame_encoder.get_config()["backbone"],
            "temporal": self.temporal,
            "output": self.output_mode,
            "dim": self.dim,
            "dropout": self.dropout,
            "trainable_blocks": self.trainable_blocks,
            "lora_rank": self.lora_rank,
            "pooling": self.pooling,
            "tcn_dilations": list(self.tcn_dilations),
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
        })
        return config


__all__ = ["VideoPresetTower"]
