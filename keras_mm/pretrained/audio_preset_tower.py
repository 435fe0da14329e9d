"""Audio tower over the encoder of a keras-hub Whisper backbone."""


import keras
from keras import ops

from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int)
from keras_mm.pretrained.preset_loading import keras_hub
from keras_mm.pretrained.tower_utils import (check_fine_tuning, check_source,
                                           load_backbone,
                                           train_only_adapters,
                                           trainable_property)
from keras_mm.registry import PRETRAINED_TOWERS

OUTPUTS = ("vector", "sequence")
POOLINGS = ("mean", "max")


def _plain(value):
    """`value` with Keras's tracked dicts / lists made plain (JSON-ready)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def encoder_layers(backbone):
    """The layers of a `WhisperBackbone`'s encoder half, in call order:
    `(stem, blocks, final_norm)` with stem = the two convolutions, the
    padder, the position embedding, the add and the dropout."""
    stem = [backbone.encoder_conv_layer_1, backbone.encoder_padder,
            backbone.encoder_conv_layer_2,
            backbone.encoder_position_embedding,
            backbone.encoder_embeddings_add,
            backbone.encoder_embeddings_dropout]
    return stem, list(backbone.encoder_transformer_layers), \
        backbone.encoder_layer_norm


def whisper_encoder(backbone, name="whisper_encoder"):
    """An encoder-only functional model over `backbone`'s own encoder
    layers (shared: the same weights), the graph of
    `WhisperBackbone`'s `encoder_sequence_output`: features
    `[B, frames, num_mels]` -> `[B, ceil(frames / 2), hidden_dim]`. The
    decoder is not in it."""
    (conv_1, padder, conv_2, positions, add, dropout), blocks, norm = \
        encoder_layers(backbone)
    features = keras.Input((None, backbone.num_mels), dtype="float32",
                           name="encoder_features")
    x = keras.activations.gelu(conv_1(features), approximate=False)
    x = padder(x)
    x = keras.activations.gelu(conv_2(x), approximate=False)
    x = add((x, positions(x)))
    x = dropout(x)
    for block in blocks:
        x = block(x)
    x = norm(x)
    model = keras.Model(features, x, name=name)
    # As keras-hub's Backbone does (a functional model takes no dtype).
    model.dtype_policy = backbone.dtype_policy
    return model


@keras.saving.register_keras_serializable(package="keras_mm")
@PRETRAINED_TOWERS.register("audio_preset")
class AudioPresetTower(keras.layers.Layer):
    """Audio tower over the encoder of a pretrained keras-hub Whisper model.

    Takes the log-mel features of the preset's audio converter,
    `[batch, frames, num_mels]` (`AudioPresetPreprocessor`: 3000 x 80 for a
    30-s Whisper window), and runs the ENCODER half of a keras-hub
    `WhisperBackbone`: two GELU convolutions (the second with stride 2),
    the position table, the transformer blocks and the final layer norm,
    i.e. the backbone's `encoder_sequence_output`. The tower builds an
    encoder-only graph over the backbone's own encoder layers (the
    attribute `backbone`): the decoder is neither called nor kept, so its
    weights are not the tower's and serving computes the encoder only.

    keras-hub 0.32 has no pure audio encoder (no wav2vec 2 / HuBERT / AST
    backbone); Moonshine is another encoder-decoder (raw waveform in) and
    Gemma 3n / Gemma 4 audio encoders come inside multimodal LMs, so
    Whisper is the family supported here.

    Outputs: `output="vector"`: `[batch, width]`, the mean (`pooling=
    "mean"`) or max (`"max"`) of the encoder states over the positions;
    `output="sequence"`: `[batch, ceil(frames / 2), width]`. Whisper's
    encoder has no padding mask (the silence padding the window is part of
    its input, as in OpenAI's model), so the mean runs over every position
    and the sequence's mask is all True. `dim=None` keeps the backbone's
    `hidden_dim`; an int adds a `Dense` projection to `dim`.

    Window length: the position table holds `max_encoder_sequence_length //
    2` rows (1500 for the real presets: 30 s); keras-hub slices it to the
    input length, so shorter windows run (see `AudioPresetPreprocessor`'s
    `duration`), and a longer input is refused at build time.

    Fine-tuning:

    - `trainable=False` (the Keras argument) freezes the whole tower
      (encoder and projection).
    - `trainable_blocks=N` keeps only the last N transformer blocks of the
      encoder trainable (+ the final layer norm and `dim`'s projection); the
      convolutions and the earlier blocks are frozen. `0` trains only the
      final norm and the projection.
    - `lora_rank=r` calls keras-hub's `WhisperBackbone.enable_lora(r)`:
      low-rank adapters on the attention query / value layers. Only the
      adapters train in the encoder (their layers' biases are frozen too;
      keras-hub leaves them trainable); `dim`'s projection trains.
      `count_params()` of the trainable weights shows it. Saving merges the
      adapters into the kernels (Keras's LoRA), so a reloaded tower
      computes the same and restarts its adapters from zero.

    The position table is never trained (Whisper's is sinusoidal; keras-hub
    makes it non-trainable), also after `tower.trainable = True`. Setting
    `tower.trainable = True` again (e.g. after a frozen warm-up) re-applies
    `trainable_blocks` / `lora_rank`.

    Args:
        preset: a keras-hub preset name, `kaggle://` / `hf://` handle or
            local preset folder with a `WhisperBackbone`; loaded with its
            weights. Offline, a name that needs a download fails with one
            line naming the preset and how to use a local copy.
        backbone: instead of (or, in a saved config, beside) `preset`: a
            keras-hub `WhisperBackbone` instance (its encoder layers are
            used, and so trained, in place) or its serialized config
            (`keras.saving.serialize_keras_object`; random weights). It
            wins over `preset`, so that a saved model rebuilds without the
            preset folder.
        output: `"vector"` or `"sequence"` (kept as the attribute
            `output_mode`).
        pooling: `"mean"` or `"max"` over positions, for `"vector"`.
        dim: None (the backbone's `hidden_dim`) or the width of a Dense
            projection.
        dropout: dropout rate on the output.
        trainable_blocks: None (all trainable) or the number of last
            encoder blocks left trainable (above).
        lora_rank: None, or the LoRA rank (above).
        **kwargs: standard `keras.layers.Layer` arguments (`trainable`,
            `dtype`, `name`); the backbone is loaded with this dtype policy.

    Call arguments:
        inputs: float `[batch, frames, num_mels]` log-mel features, at most
            `max_encoder_sequence_length` frames.
        training: Python bool (dropout).
        mask: not supported (Whisper's encoder takes no padding mask); must
            be None.

    Masking: `output="sequence"` has `compute_mask` give an all-True bool
    `[batch, positions]` mask; `"vector"` gives None. A missing clip is
    marked by the fusion presence mask (`<name>_present`).

    Example:

    >>> tower = AudioPresetTower(preset="/models/whisper_tiny_en",
    ...                          dim=64, trainable_blocks=1)  # doctest: +SKIP
    >>> tower(features).shape  # features: [B, 3000, 80]    # doctest: +SKIP
    TensorShape([B, 64])
    """

    input_dtype = "float32"

    def __init__(self, preset=None, backbone=None, output="vector",
                 pooling="mean", dim=None, dropout=0.0, trainable_blocks=None,
                 lora_rank=None, **kwargs):
        super().__init__(**kwargs)
        name = "AudioPresetTower"
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.pooling = check_choice(name, "pooling", pooling, POOLINGS)
        self.dim = check_positive_int(name, "dim", dim, allow_none=True)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.trainable_blocks, self.lora_rank = check_fine_tuning(
            name, trainable_blocks, lora_rank)
        check_source(name, preset, backbone,
                     backbone_class="WhisperBackbone")
        self.preset = preset
        # The tower's variables live under its own name scope, so that a
        # per-tower learning-rate multiplier finds them by path.
        with keras.name_scope(self.name, caller=self):
            self._load(preset, backbone)
        if self.trainable_blocks is not None and \
                self.trainable_blocks > self.num_blocks:
            raise ValueError(
                f"{name}: trainable_blocks={self.trainable_blocks} but the "
                f"WhisperBackbone of {self._source()} has "
                f"{self.num_blocks} encoder blocks; use "
                f"0..{self.num_blocks}, or None for all")
        self.supports_masking = self.output_mode == "sequence"
        self._ready = True
        self._apply_trainability()

    # -- loading ------------------------------------------------------------

    def _source(self):
        return f"preset {self.preset!r}" if self.preset is not None \
            else "backbone"

    def _load(self, preset, backbone):
        models = keras_hub().models
        if isinstance(backbone, dict):
            kind = backbone.get("registered_name") or \
                backbone.get("class_name")
            if kind != "keras_hub>WhisperBackbone":
                raise ValueError(
                    f"AudioPresetTower: backbone config is a {kind!r}, not "
                    "a keras_hub>WhisperBackbone")
        backbone = load_backbone("AudioPresetTower", preset, backbone,
                                 self.dtype_policy.name,
                                 what="a keras-hub WhisperBackbone")
        if not isinstance(backbone, models.WhisperBackbone):
            raise ValueError(
                f"AudioPresetTower: {self._source()} has a "
                f"{type(backbone).__name__}, not a WhisperBackbone; "
                "supported: keras-hub Whisper presets (the encoder half)")
        self.backbone_config = keras.saving.serialize_keras_object(backbone)
        self.hidden_dim = int(backbone.hidden_dim)
        self.num_mels = int(backbone.num_mels)
        self.max_frames = int(backbone.max_encoder_sequence_length)
        if self.lora_rank is not None:
            # keras-hub's own LoRA (on the whole backbone; the decoder's
            # adapters go with the decoder, which the tower does not keep).
            backbone.enable_lora(self.lora_rank)
        self.num_blocks = len(backbone.encoder_transformer_layers)
        # The full backbone is not an attribute: only the encoder's layers
        # are tracked (weights, saving).
        self.backbone = whisper_encoder(backbone)

    def _layer(self, name):
        return self.backbone.get_layer(name)

    def _stem(self):
        """The encoder's layers before its blocks (convolutions, position
        table), which `trainable_blocks` freezes."""
        return [self._layer(n) for n in (
            "encoder_token_embedding_conv_layer_1",
            "encoder_token_embedding_conv_layer_2",
            "encoder_position_embedding")]

    def _blocks(self):
        return [self._layer(f"transformer_encoder_layer_{i}")
                for i in range(self.num_blocks)]

    # -- fine-tuning --------------------------------------------------------

    def _lora_layers(self):
        return [layer for layer in self.backbone._flatten_layers()
                if getattr(layer, "lora_enabled", False)]

    def _apply_trainability(self):
        """Sets the trainable flags of the sub-layers from `trainable`,
        `trainable_blocks` and `lora_rank`."""
        if not getattr(self, "_ready", False):
            return
        if not self.trainable:
            # Keras only freezes the variables that exist when `trainable`
            # is set; sub-layers made later would still train.
            keras.layers.Layer.trainable.fset(self, False)
            return
        if self.lora_rank is not None:
            for sub in self.backbone._flatten_layers(include_self=False):
                sub.trainable = False
            train_only_adapters(self._lora_layers())
        elif self.trainable_blocks is not None:
            blocks = self._blocks()
            frozen = self._stem() + blocks[:len(blocks)
                                           - self.trainable_blocks]
            for layer in frozen:
                layer.trainable = False
        self._layer("encoder_position_embedding").trainable = False

    trainable = trainable_property

    # -- shapes -------------------------------------------------------------

    @staticmethod
    def positions(frames):
        """Encoder positions of `frames` feature frames (the stride-2
        convolution after one frame of padding each side)."""
        return None if frames is None else (int(frames) + 1) // 2

    def _check_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 3 or shape[-1] != self.num_mels:
            raise ValueError(
                "AudioPresetTower takes log-mel features [batch, frames, "
                f"{self.num_mels}] (the preset's audio converter: "
                f"AudioPresetPreprocessor); got shape {shape}")
        if shape[1] is not None and shape[1] > self.max_frames:
            raise ValueError(
                f"AudioPresetTower: {shape[1]} feature frames exceed the "
                f"{self.max_frames} of the WhisperBackbone of "
                f"{self._source()} (max_encoder_sequence_length; its "
                f"position table has {self.max_frames // 2} rows): set the "
                "preprocessor's duration to at most the converter's window")
        return shape

    def build(self, input_shape):
        self._check_shape(input_shape)
        if self.dim is not None:
            self.projection = keras.layers.Dense(
                self.dim, dtype=self.dtype_policy, name="projection")
            self.projection.build((None, self.hidden_dim))
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="output_dropout")
        self.built = True
        self._apply_trainability()

    # -- calling ------------------------------------------------------------

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(
                "AudioPresetTower does not take a mask (Whisper's encoder "
                "has no padding mask); mark a missing clip with the fusion "
                "presence mask instead")
        x = self.backbone(inputs, training=training)
        if self.output_mode == "vector":
            x = ops.mean(x, axis=1) if self.pooling == "mean" else \
                ops.max(x, axis=1)
        if self.dim is not None:
            x = self.projection(x)
        return self.output_dropout(x, training=training)

    def compute_mask(self, inputs, mask=None):
        if self.output_mode != "sequence":
            return None
        # From the inputs, so that a symbolic batch size works too.
        frames = ops.ones_like(inputs[:, :, 0], dtype="bool")
        return frames[:, ::2]

    def compute_output_shape(self, input_shape):
        shape = self._check_shape(input_shape)
        width = self.dim if self.dim is not None else self.hidden_dim
        if self.output_mode == "vector":
            return (shape[0], width)
        return (shape[0], self.positions(shape[1]), width)

    def get_config(self):
        config = super().get_config()
        config.update({
            "preset": self.preset,
            "backbone": _plain(self.backbone_config),
            "output": self.output_mode,
            "pooling": self.pooling,
            "dim": self.dim,
            "dropout": self.dropout,
            "trainable_blocks": self.trainable_blocks,
            "lora_rank": self.lora_rank,
        })
        return config
