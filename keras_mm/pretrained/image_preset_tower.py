"""Image tower over a keras-hub image backbone (ViT, ResNet, CLIP, SigLIP)."""

import copy

import keras
from keras import ops

from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int)
from keras_mm.pretrained.preset_loading import keras_hub
from keras_mm.pretrained.tower_utils import (check_fine_tuning, check_source,
                                           load_backbone,
                                           train_only_adapters,
                                           trainable_property, with_dtype)
from keras_mm.registry import PRETRAINED_TOWERS

OUTPUTS = ("vector", "sequence", "feature_map")
# Pooling choices of `output="vector"` per backbone family; the first one is
# the family's default.
POOLINGS = {
    "vit": ("cls", "mean"),
    "clip": ("projection", "cls", "mean"),
    "siglip": ("map", "mean"),
    "resnet": ("avg", "max"),
    "conv": ("avg", "max"),
}
# Families whose backbone has attention layers for keras-hub's enable_lora.
_LORA_FAMILIES = ("vit", "clip", "siglip")
_FULL_MODELS = ("keras_hub>CLIPBackbone", "keras_hub>SigLIPBackbone")


def _family(model):
    """The family of a keras-hub backbone (None when not an image one)."""
    models = keras_hub().models
    if isinstance(model, (models.CLIPVisionEncoder, models.CLIPBackbone)):
        return "clip"
    if isinstance(model, (models.SigLIPVisionEncoder,
                          models.SigLIPBackbone)):
        return "siglip"
    if isinstance(model, models.ViTBackbone):
        return "vit"
    if isinstance(model, models.ResNetBackbone):
        return "resnet"
    output = getattr(model, "output", None)
    if isinstance(model, models.Backbone) and not isinstance(
            getattr(model, "inputs", None), dict) and hasattr(
                output, "shape") and len(output.shape) == 4:
        return "conv"
    return None


@keras.saving.register_keras_serializable(package="keras_mm")
@PRETRAINED_TOWERS.register("image_preset")
class ImagePresetTower(keras.layers.Layer):
    """Image tower over a pretrained keras-hub image backbone.

    Takes float images `[batch, H, W, 3]` already converted by the preset's
    image converter (`ImagePresetPreprocessor`: resize, scale, offset) and
    runs the backbone of a keras-hub preset. Supported backbones, and what
    `output="vector"` returns (`pooling`, default first):

    - `ViTBackbone`: `"cls"` (the class token of the final layer norm, as
      keras-hub's `ViTImageClassifier(pooling="token")`) or `"mean"` (over
      the patch tokens). A ViT without a class token defaults to `"mean"`.
    - `CLIPBackbone` (its vision half only; the text encoder is not
      built): `"projection"` is THE CLIP image embedding,
      `CLIPBackbone.get_vision_embeddings` (the class token after the final
      layer norm, through `vision_projection`: width `projection_dim`,
      the joint image-text space); `"cls"` is that class token before the
      projection, `"mean"` the mean of the patch tokens. A bare
      `CLIPVisionEncoder` has no projection and defaults to `"cls"`.
    - `SigLIPBackbone` (vision half): `"map"` is THE SigLIP image
      embedding, `SigLIPBackbone.get_vision_embeddings` (the vision
      encoder's attention-pooling head, width `hidden_dim`); `"mean"` is
      the mean of the patch tokens after the final layer norm.
    - `ResNetBackbone`, and other keras-hub backbones whose output is a
      feature map (EfficientNet, ...): `"avg"` or `"max"` pooling over the
      final feature map.

    `output="sequence"` gives the patch tokens `[batch, P, width]` (the
    class token left out, as `ImageTower(encoder="vit")`), or the feature
    map's positions for convolutional backbones; `output="feature_map"`
    gives `[batch, H', W', width]` (the patch grid for transformers).
    `dim=None` keeps the backbone's own width; an int adds a `Dense`
    projection to `dim`.

    Fine-tuning:

    - `trainable=False` (the Keras argument) freezes the whole tower
      (backbone and projection); batch norms then run in inference mode.
    - `trainable_blocks=N` keeps only the last N blocks trainable (+ the
      final norm / pooler / CLIP projection, and `dim`'s projection): the
      transformer blocks of ViT / CLIP / SigLIP, the stages (stacks) of a
      ResNet. The embeddings (ResNet: stem) and earlier blocks are frozen,
      their batch norms in inference mode. `0` trains only the final norm
      / pooler and the projection. Not for other convolutional backbones.
    - `lora_rank=r` calls keras-hub's `enable_lora(r)` on the backbone
      (ViT, CLIP, SigLIP): low-rank adapters on the attention query /
      value layers. Only the adapters train in the backbone: their layers'
      biases are frozen too (keras-hub leaves them trainable), and so is
      the CLIP projection; `dim`'s projection trains. `count_params()` of
      the trainable weights shows it. Saving merges the adapters into the
      kernels (Keras's LoRA), so a reloaded tower computes the same and
      restarts its adapters from zero.

    Setting `tower.trainable = True` again (e.g. after a frozen warm-up)
    re-applies `trainable_blocks` / `lora_rank`. Parts that the output
    does not use (the CLIP projection and the SigLIP pooling head outside
    their `"vector"` pooling) are frozen.

    The backbone (from `preset` or a config) is made inside the tower's
    name scope, so every variable path starts with `<tower name>/`
    (per-tower learning-rate multipliers match on it). A `Backbone`
    instance passed as `backbone=` (ViT, ResNet) is used as given and keeps
    its own variable paths.

    Args:
        preset: a keras-hub preset name, `kaggle://` / `hf://` handle or
            local preset folder (a backbone or task preset); its backbone is
            loaded with its weights. Offline, a name that needs a download
            fails with one line naming the preset and how to use a local
            copy.
        backbone: instead of (or, in a saved config, beside) `preset`: a
            keras-hub `Backbone` instance or its serialized config
            (`keras.saving.serialize_keras_object`; random weights). It
            wins over `preset`, so that a saved model rebuilds without the
            preset folder. Kept as the attribute `backbone`: the model the
            tower calls (for CLIP / SigLIP the vision encoder).
        output: `"vector"`, `"sequence"` or `"feature_map"` (kept as the
            attribute `output_mode`).
        pooling: the `"vector"` pooling (above); None = the family default.
        dim: None (the backbone's width) or the width of a Dense
            projection.
        dropout: dropout rate on the output.
        trainable_blocks: None (all trainable) or the number of last blocks
            left trainable (above).
        lora_rank: None, or the LoRA rank (above).
        **kwargs: standard `keras.layers.Layer` arguments (`trainable`,
            `dtype`, `name`); the backbone is loaded with this dtype policy.

    Call arguments:
        inputs: float `[batch, H, W, channels]`, the size and channels of
            the backbone's `image_shape`.
        training: Python bool (dropout; batch norms of trainable layers).
        mask: not supported (images have no padding); must be None.

    Masking: `output="sequence"` has `compute_mask` give an all-True bool
    `[batch, tokens]` mask (every patch is valid); otherwise None. A
    missing image is marked by the fusion presence mask.

    Example:

    >>> tower = ImagePresetTower(preset="/models/vit_base_patch16_224",
    ...                          dim=64, trainable_blocks=2)  # doctest: +SKIP
    >>> tower(images).shape  # images: [B, 224, 224, 3]   # doctest: +SKIP
    TensorShape([B, 64])
    """

    input_dtype = "float32"

    def __init__(self, preset=None, backbone=None, output="vector",
                 pooling=None, dim=None, dropout=0.0, trainable_blocks=None,
                 lora_rank=None, **kwargs):
        super().__init__(**kwargs)
        name = "ImagePresetTower"
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.dim = check_positive_int(name, "dim", dim, allow_none=True)
        self.dropout = check_fraction(name, "dropout", dropout)
        self.trainable_blocks, self.lora_rank = check_fine_tuning(
            name, trainable_blocks, lora_rank)
        check_source(name, preset, backbone)
        self.preset = preset
        self.vision_projection = None
        # The tower's variables live under its own name scope, so that a
        # per-tower learning-rate multiplier finds them by path.
        with keras.name_scope(self.name, caller=self):
            self._load(preset, backbone)
        self.family = _family(self.backbone)
        if self.family is None:
            raise ValueError(
                f"{name}: {self._source()} has a "
                f"{type(self.backbone).__name__}, not an image backbone; "
                "supported: ViT, ResNet, CLIP, SigLIP, or a keras-hub image "
                "backbone with a feature-map output (EfficientNet, ...)")
        choices = POOLINGS[self.family]
        if self.family == "clip" and self.vision_projection is None:
            choices = choices[1:]
        if self.family == "vit" and not self.backbone.use_class_token:
            choices = ("mean",)
        self.pooling = choices[0] if pooling is None else check_choice(
            f"{name}({type(self.backbone).__name__})", "pooling", pooling,
            choices)
        if self.lora_rank is not None:
            self._enable_lora()
        if self.trainable_blocks is not None:
            self._check_blocks()
        self.supports_masking = self.output_mode == "sequence"
        self._ready = True
        self._apply_trainability()

    # -- loading ------------------------------------------------------------

    def _source(self):
        return f"preset {self.preset!r}" if self.preset is not None \
            else "backbone"

    def _load(self, preset, backbone):
        policy = self.dtype_policy.name
        models = keras_hub().models
        if isinstance(backbone, dict):
            self.backbone_config = copy.deepcopy(backbone)
            if backbone.get("registered_name") in _FULL_MODELS:
                # Only the vision half is built (not the text encoder).
                config = backbone["config"]
                self.backbone = keras.saving.deserialize_keras_object(
                    with_dtype(config["vision_encoder"], policy))
                if "projection_dim" in config:
                    self.vision_projection = self._projection_layer(
                        config["projection_dim"])
                return
            self.backbone = load_backbone("ImagePresetTower", preset,
                                          backbone, policy)
            return
        backbone = load_backbone("ImagePresetTower", preset, backbone,
                                 policy)
        self.backbone_config = keras.saving.serialize_keras_object(backbone)
        if isinstance(backbone, (models.CLIPBackbone, models.SigLIPBackbone)):
            # A fresh vision encoder with the model's weights: the given
            # model (text half included) is not kept alive by this tower.
            source = backbone.vision_encoder
            self.backbone = keras.saving.deserialize_keras_object(
                with_dtype(keras.saving.serialize_keras_object(source),
                            policy))
            self.backbone.set_weights(source.get_weights())
            if isinstance(backbone, models.CLIPBackbone):
                self.vision_projection = self._projection_layer(
                    backbone.projection_dim)
                self.vision_projection.set_weights(
                    backbone.vision_projection.get_weights())
            return
        self.backbone = backbone

    def _projection_layer(self, projection_dim):
        layer = keras.layers.Dense(projection_dim, use_bias=False,
                                   dtype=self.dtype_policy,
                                   name="vision_projection")
        layer.build((None, self.backbone.hidden_dim))
        return layer

    # -- fine-tuning --------------------------------------------------------

    def _enable_lora(self):
        if self.family not in _LORA_FAMILIES:
            raise ValueError(
                f"ImagePresetTower: lora_rank={self.lora_rank} needs a "
                "backbone with attention layers (ViT, CLIP, SigLIP); "
                f"{type(self.backbone).__name__} has none: use "
                "trainable_blocks= or trainable=False instead")
        self.backbone.enable_lora(self.lora_rank)

    def _lora_layers(self):
        return [layer for layer in self.backbone._flatten_layers()
                if getattr(layer, "lora_enabled", False)]

    def _blocks(self):
        """(stem layers, blocks, head layers) of the backbone."""
        backbone = self.backbone
        if self.family == "vit":
            encoder = backbone.get_layer("vit_encoder")
            return ([backbone.get_layer("vit_patching_and_embedding")],
                    list(encoder.encoder_layers), [encoder.layer_norm])
        if self.family == "clip":
            head = [backbone.layer_norm]
            if self.vision_projection is not None:
                head.append(self.vision_projection)
            return ([backbone.embedding, backbone.pre_layer_norm],
                    list(backbone.encoder_layers), head)
        if self.family == "siglip":
            return ([backbone.embedding], list(backbone.encoder_layers),
                    [backbone.post_layer_norm, backbone.head])
        stacks = [[] for _ in backbone.stackwise_num_filters]
        stem, head = [], []
        for layer in backbone.layers:
            if layer.name.startswith("stack"):
                index = int(layer.name[5:].split("_")[0])
                stacks[index].append(layer)
            elif layer.name.startswith("post_"):
                head.append(layer)
            else:
                stem.append(layer)
        return stem, stacks, head

    def _check_blocks(self):
        if self.family == "conv":
            raise ValueError(
                f"ImagePresetTower: trainable_blocks={self.trainable_blocks}"
                " is supported for ViT, CLIP, SigLIP and ResNet backbones; "
                f"{type(self.backbone).__name__} is not one: use "
                "trainable=False or trainable_blocks=None")
        count = len(self._blocks()[1])
        if self.trainable_blocks > count:
            unit = "stages" if self.family == "resnet" else \
                "transformer blocks"
            raise ValueError(
                f"ImagePresetTower: trainable_blocks={self.trainable_blocks}"
                f" but the {type(self.backbone).__name__} of "
                f"{self._source()} has {count} {unit}; use 0..{count}, or "
                "None for all")

    def _sublayers(self):
        layers = [self.backbone]
        if self.vision_projection is not None:
            layers.append(self.vision_projection)
        return layers

    def _unused(self):
        """Layers the output mode does not use (the CLIP projection, the
        SigLIP pooling head): frozen, as they get no gradient."""
        if self.output_mode == "vector" and self.pooling in ("projection",
                                                             "map"):
            return []
        if self.family == "clip" and self.vision_projection is not None:
            return [self.vision_projection]
        if self.family == "siglip":
            return [self.backbone.head]
        return []

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
        for layer in self._unused():
            layer.trainable = False
        if self.lora_rank is not None:
            for layer in self._sublayers():
                for sub in layer._flatten_layers(include_self=False):
                    sub.trainable = False
            if self.vision_projection is not None:
                self.vision_projection.trainable = False
            train_only_adapters(self._lora_layers())
        elif self.trainable_blocks is not None:
            stem, blocks, _ = self._blocks()
            frozen = stem + blocks[:len(blocks) - self.trainable_blocks]
            for group in frozen:
                for layer in group if isinstance(group, list) else [group]:
                    layer.trainable = False

    trainable = trainable_property

    # -- shapes -------------------------------------------------------------

    def _image_shape(self):
        return tuple(getattr(self.backbone, "image_shape", (None,) * 3))

    def _width(self):
        """Channels of the features before `dim`'s projection."""
        if self.family in ("resnet", "conv"):
            return self.backbone.output.shape[-1]
        if self.output_mode == "vector" and self.pooling == "projection":
            return self.vision_projection.units
        return self.backbone.hidden_dim

    def _grid(self, input_shape):
        """(H', W') of the feature map / patch grid."""
        if self.family in ("resnet", "conv"):
            shape = self.backbone.compute_output_shape(
                (None, *input_shape[1:]))
            return shape[1], shape[2]
        patch = self.backbone.patch_size
        patch = patch if isinstance(patch, (tuple, list)) else (patch, patch)
        height, width = self._image_shape()[:2]
        return height // patch[0], width // patch[1]

    def build(self, input_shape):
        shape = tuple(input_shape)
        expected = self._image_shape()
        if len(shape) != 4 or shape[1] is None or shape[2] is None:
            raise ValueError(
                "ImagePresetTower takes float images [batch, height, width, "
                f"channels] of a fixed size; got shape {shape}")
        wrong = [(got, want) for got, want in zip(shape[1:], expected)
                 if want is not None and got != want]
        if wrong:
            raise ValueError(
                f"ImagePresetTower: the {type(self.backbone).__name__} of "
                f"{self._source()} takes images of shape {expected}; got "
                f"{shape[1:]}: set the image preprocessor's size to the "
                "preset's (ImagePresetPreprocessor does)")
        self._tokens = None
        if self.output_mode == "sequence":
            grid = self._grid(shape)
            self._tokens = grid[0] * grid[1]
        if self.dim is not None:
            self.projection = keras.layers.Dense(
                self.dim, dtype=self.dtype_policy, name="projection")
            self.projection.build((None, self._width()))
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="output_dropout")
        self.built = True
        self._apply_trainability()

    # -- calling ------------------------------------------------------------

    def _patches(self, tokens):
        """Drops the class token of ViT / CLIP sequences."""
        if self.family == "clip" or (self.family == "vit" and
                                     self.backbone.use_class_token):
            return tokens[:, 1:]
        return tokens

    def _encode(self, inputs, training):
        """The family's vector / token / map features (before `dim`)."""
        family, backbone = self.family, self.backbone
        vector = self.output_mode == "vector"
        if family in ("resnet", "conv"):
            x = backbone(inputs, training=training)
            if vector:
                if self.pooling == "avg":
                    return ops.mean(x, axis=(1, 2))
                return ops.max(x, axis=(1, 2))
            return x
        if family == "siglip":
            if vector and self.pooling == "map":
                return backbone({"images": inputs}, training=training)
            x = backbone.embedding(inputs, training=training)
            for block in backbone.encoder_layers:
                x = block(x, training=training)
            tokens = backbone.post_layer_norm(x)
        elif family == "clip":
            tokens = backbone({"images": inputs}, training=training)
            if isinstance(tokens, dict):
                tokens = tokens["sequence_output"]
        else:
            tokens = backbone(inputs, training=training)
        if not vector:
            return self._patches(tokens)
        if self.pooling == "mean":
            return ops.mean(self._patches(tokens), axis=1)
        if self.pooling == "projection":
            return self.vision_projection(tokens[:, 0])
        return tokens[:, 0]

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(
                "ImagePresetTower does not take a mask (images have no "
                "padding); mark a missing image with the fusion presence "
                "mask instead")
        x = self._encode(inputs, training)
        if self.output_mode == "feature_map" and len(x.shape) == 3:
            grid = self._grid(inputs.shape)
            x = ops.reshape(x, (-1, grid[0], grid[1], x.shape[-1]))
        elif self.output_mode == "sequence" and len(x.shape) == 4:
            x = ops.reshape(x, (-1, self._tokens, x.shape[-1]))
        if self.dim is not None:
            x = self.projection(x)
        return self.output_dropout(x, training=training)

    def compute_mask(self, inputs, mask=None):
        if self.output_mode != "sequence":
            return None
        # From the inputs, so that a symbolic batch size works too.
        valid = ops.ones_like(inputs[:, :1, 0, 0], dtype="bool")
        return ops.repeat(valid, self._tokens, axis=1)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        width = self.dim if self.dim is not None else self._width()
        if self.output_mode == "vector":
            return (batch, width)
        grid = self._grid(input_shape)
        if self.output_mode == "feature_map":
            return (batch, grid[0], grid[1], width)
        return (batch, grid[0] * grid[1], width)

    def get_config(self):
        config = super().get_config()
        config.update({
            "preset": self.preset,
            "backbone": copy.deepcopy(self.backbone_config),
            "output": self.output_mode,
            "pooling": self.pooling,
            "dim": self.dim,
            "dropout": self.dropout,
            "trainable_blocks": self.trainable_blocks,
            "lora_rank": self.lora_rank,
        })
        return config
