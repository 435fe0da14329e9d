"""Text tower over a keras-hub text backbone (BERT, DistilBERT, RoBERTa...)."""

import copy
import re

import keras
from keras import ops

from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_non_negative_int, check_positive_int)
from keras_mm.pretrained.preset_loading import from_preset, keras_hub
from keras_mm.pretrained.tower_utils import (check_fine_tuning, check_source,
                                           load_backbone,
                                           train_only_adapters,
                                           trainable_property)
from keras_mm.registry import PRETRAINED_TOWERS

OUTPUTS = ("vector", "sequence")
POOLINGS = ("cls", "mean", "pooled")
# Direct sub-layers of a backbone that are transformer blocks: keras-hub
# names them transformer_layer_<i> (BERT, DistilBERT, RoBERTa, GPT-2...),
# group_<g>_inner_layer_<i> (ALBERT) or
# disentangled_attention_encoder_layer_<i> (DeBERTa-v3).
_BLOCK_NAME = re.compile(r"layer_\d+$")
_NAME = "TextPresetTower"


@keras.saving.register_keras_serializable(package="keras_mm")
@PRETRAINED_TOWERS.register("text_preset")
class TextPresetTower(keras.layers.Layer):
    """Text tower over a pretrained keras-hub text backbone.

    Takes the token ids (and padding mask) of `TextPresetPreprocessor` for
    the same preset and runs the preset's backbone: BERT, DistilBERT,
    RoBERTa, ALBERT, DeBERTa-v3, and other keras-hub backbones with
    `token_ids` / `padding_mask` inputs (GPT-2...). Backbones that also take
    `segment_ids` (BERT, ALBERT) get zeros: one segment per text (sentence
    pairs are not supported yet).

    - `output="vector"`: `[batch, width]`, by `pooling`: `"cls"` the first
      token of the final sequence (`[CLS]` / `<s>`), `"mean"` the mean of
      the real tokens (the mask's True positions; a row without any gives
      zeros), `"pooled"` the backbone's own `pooled_output` (BERT, ALBERT:
      the dense + tanh of `[CLS]`; other backbones have none and refuse
      it).
    - `output="sequence"`: `[batch, tokens, width]`, padded positions
      zeroed; `compute_mask` returns the bool `[batch, tokens]` mask.

    `width` is `dim`, or with `dim=None` the backbone's own hidden size (no
    projection). `dropout` applies to the backbone's features before `dim`'s
    projection (as keras-hub's text classifiers do).

    Fine-tuning:

    - `trainable=False` (the Keras argument) freezes the whole tower,
      backbone and projection.
    - `trainable_blocks=N` keeps only the last N transformer blocks
      trainable, with the layers after them (the pooler, a final norm) and
      `dim`'s projection; the embeddings (token, position, segment
      embeddings and their norm; DeBERTa's relative embeddings; ALBERT's
      embedding projection) and the earlier blocks are frozen. `0` trains
      only the layers after the blocks and the projection. ALBERT's blocks
      are its distinct (shared) group layers.
    - `lora_rank=r` calls keras-hub's `enable_lora(r)` on the backbone:
      low-rank adapters on the attention query / value layers. Only the
      adapters train in the backbone (their layers' biases are frozen too;
      keras-hub leaves them trainable); `dim`'s projection trains. The
      trainable parameter count shows it. Saving merges the adapters into
      the kernels (Keras's LoRA), so a reloaded tower computes the same and
      restarts its adapters from zero. Not together with
      `trainable_blocks`.
    - The pooler (`pooled_dense`) is frozen whenever the output does not
      use it (`pooling` other than `"pooled"`, or `output="sequence"`):
      it gets no gradient.

    Setting `tower.trainable = True` again (e.g. after a frozen warm-up)
    re-applies `trainable_blocks` / `lora_rank` and the unused pooler.

    The backbone is created inside the tower's name scope, so every
    variable path starts with `<tower name>/` (per-tower learning-rate
    multipliers match on it).

    Args:
        preset: a keras-hub preset name, `kaggle://` / `hf://` handle or
            local preset folder (`save_to_preset`); its backbone is loaded
            with its weights, and the pad id is read from its tokenizer.
            Offline, a name that needs a download fails with one line
            naming the preset and how to use a local copy.
        backbone: instead of (or, in a saved config, beside) `preset`: a
            keras-hub text `Backbone` instance (used as given, its dtype
            policy included) or its serialized config
            (`keras.saving.serialize_keras_object`; random weights, built
            with this tower's dtype policy). It wins over `preset`, so
            that a saved model rebuilds without the preset folder.
        output: `"vector"` or `"sequence"` (kept as the attribute
            `output_mode`).
        pooling: `"cls"`, `"mean"` or `"pooled"` (`output="vector"`).
        dim: None (the backbone's width) or the width of a Dense
            projection.
        dropout: dropout rate on the backbone's features.
        trainable_blocks: None (all trainable) or the number of last
            blocks left trainable (above).
        lora_rank: None, or the LoRA rank (above).
        pad_id: the token id of padding, used for the mask when `call`
            gets none; None reads it from the preset's tokenizer (0 for
            BERT, 1 for RoBERTa). Stored resolved in the config.
        **kwargs: standard `keras.layers.Layer` arguments (`trainable`,
            `dtype`, `name`); the backbone is loaded with this dtype policy.

    Call arguments:
        inputs: int token ids `[batch, tokens]` (at most the backbone's
            `max_sequence_length` tokens).
        training: Python bool (dropout, the backbone's own dropout
            included).
        mask: bool `[batch, tokens]`, True on real tokens
            (`TextPresetPreprocessor`'s `<name>_mask`). None means
            `inputs != pad_id`.

    Masking: padded tokens are hidden from the backbone's attention (its
    `padding_mask`), excluded from `"mean"` pooling and zeroed in the
    `"sequence"` output, whose `compute_mask` is the padding mask. An
    absent text (all-False mask) gives `"mean"` zeros; mark it absent with
    the fusion presence mask.

    Example:

    >>> tower = TextPresetTower(preset="/models/bert_tiny_en_uncased",
    ...                         dim=64, lora_rank=4)   # doctest: +SKIP
    >>> tower(ids, mask=mask).shape  # ids, mask: [B, 128]   # doctest: +SKIP
    TensorShape([B, 64])
    """

    input_dtype = "int32"

    def __init__(self, preset=None, backbone=None, output="vector",
                 pooling="cls", dim=None, dropout=0.0, trainable_blocks=None,
                 lora_rank=None, pad_id=None, **kwargs):
        super().__init__(**kwargs)
        self.output_mode = check_choice(_NAME, "output", output, OUTPUTS)
        self.pooling = check_choice(_NAME, "pooling", pooling, POOLINGS)
        self.dim = check_positive_int(_NAME, "dim", dim, allow_none=True)
        self.dropout = check_fraction(_NAME, "dropout", dropout)
        self.trainable_blocks, self.lora_rank = check_fine_tuning(
            _NAME, trainable_blocks, lora_rank)
        if pad_id is not None:
            pad_id = check_non_negative_int(_NAME, "pad_id", pad_id)
        check_source(_NAME, preset, backbone)
        self.preset = preset
        with keras.name_scope(self.name):
            self._load(preset, backbone)
        self._check_backbone()
        if pad_id is None and backbone is None:
            pad_id = self._preset_pad_id()
        self.pad_id = pad_id
        if self.lora_rank is not None:
            self.backbone.enable_lora(self.lora_rank)
        if self.trainable_blocks is not None:
            self._check_blocks()
        self.supports_masking = True     # it takes the padding mask
        self._ready = True
        self._apply_trainability()

    # -- loading ------------------------------------------------------------

    def _source(self):
        kind = type(self.backbone).__name__
        if self.preset is not None:
            return f"the {kind} of preset {self.preset!r}"
        return f"the {kind} backbone"

    def _load(self, preset, backbone):
        self.backbone_config = copy.deepcopy(backbone) \
            if isinstance(backbone, dict) else None
        self.backbone = load_backbone(_NAME, preset, backbone,
                                      self.dtype_policy.name,
                                      keras_hub().models.Backbone)
        if self.backbone_config is None:
            self.backbone_config = keras.saving.serialize_keras_object(
                self.backbone)

    def _check_backbone(self):
        inputs = self.backbone.input
        names = sorted(inputs) if isinstance(inputs, dict) else []
        if "token_ids" not in names or "padding_mask" not in names:
            raise ValueError(
                f"{_NAME}: {self._source()} is not a text backbone (its "
                f"inputs are {names or type(inputs).__name__}; a text "
                "backbone takes token_ids and padding_mask): use the image "
                "or audio preset tower for it")
        self._input_names = tuple(names)
        output = self.backbone.output
        self._has_pooled = isinstance(output, dict) and \
            "pooled_output" in output
        if self.pooling == "pooled" and not self._has_pooled:
            raise ValueError(
                f"{_NAME}: pooling='pooled' needs a backbone with a "
                f"pooled_output (BERT, ALBERT); {self._source()} has none: "
                "use pooling='cls' or 'mean'")

    def _preset_pad_id(self):
        """The pad id of the preset's tokenizer (None without one)."""
        try:
            tokenizer = from_preset(
                keras_hub().tokenizers.Tokenizer.from_preset, self.preset,
                "tokenizer", _NAME)
        except ValueError:
            return None     # a backbone-only preset: call needs a mask
        pad_id = getattr(tokenizer, "pad_token_id", None)
        return None if pad_id is None else int(pad_id)

    # -- fine-tuning --------------------------------------------------------

    def _blocks(self):
        """(embedding layers, blocks, layers after the blocks) of the
        backbone, in the backbone's layer order (weightless layers out)."""
        block_class = keras_hub().layers.TransformerEncoder
        layers = [layer for layer in self.backbone.layers if layer.weights]
        is_block = [isinstance(layer, block_class) or
                    bool(_BLOCK_NAME.search(layer.name)) for layer in layers]
        if not any(is_block):
            return layers, [], []
        first = is_block.index(True)
        blocks = [layer for layer, b in zip(layers, is_block) if b]
        after = [layer for layer, b in zip(layers[first:], is_block[first:])
                 if not b]
        return layers[:first], blocks, after

    def _pooler(self):
        """The backbone's pooler layers (`pooled_dense`)."""
        return [layer for layer in self.backbone.layers
                if layer.name.startswith("pooled") and layer.weights]

    def _check_blocks(self):
        count = len(self._blocks()[1])
        if count == 0:
            raise ValueError(
                f"{_NAME}: trainable_blocks={self.trainable_blocks} needs "
                f"transformer blocks; {self._source()} has none that "
                "keras_mm recognizes: use trainable=False or "
                "trainable_blocks=None")
        if self.trainable_blocks > count:
            raise ValueError(
                f"{_NAME}: trainable_blocks={self.trainable_blocks} but "
                f"{self._source()} has {count} transformer blocks; use "
                f"0..{count}, or None for all")

    def _lora_layers(self):
        return [layer for layer in self.backbone._flatten_layers(
            include_self=False) if getattr(layer, "lora_enabled", False)]

    def _apply_trainability(self):
        """Sets the trainable flags of the sub-layers from `trainable`,
        `trainable_blocks`, `lora_rank` and the pooler's use."""
        if not getattr(self, "_ready", False):
            return
        if not self.trainable:
            # Keras only freezes the variables that exist when `trainable`
            # is set; sub-layers made later would still train.
            keras.layers.Layer.trainable.fset(self, False)
            return
        self.backbone.trainable = True
        if self.lora_rank is not None:
            for layer in self.backbone._flatten_layers(include_self=False):
                layer.trainable = False
            train_only_adapters(self._lora_layers())
            return
        frozen = []
        if self.trainable_blocks is not None:
            embeddings, blocks, _ = self._blocks()
            frozen = embeddings + blocks[:len(blocks) -
                                         self.trainable_blocks]
        if self.output_mode == "sequence" or self.pooling != "pooled":
            frozen += self._pooler()
        for layer in frozen:
            layer.trainable = False

    trainable = trainable_property

    # -- shapes -------------------------------------------------------------

    def _width(self):
        """The backbone's hidden size (features before `dim`)."""
        output = self.backbone.output
        if isinstance(output, dict):
            output = output["sequence_output"]
        return output.shape[-1]

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 2:
            raise ValueError(
                f"{_NAME} takes int token ids [batch, tokens]; got shape "
                f"{shape}")
        limit = getattr(self.backbone, "max_sequence_length", None)
        if limit is not None and shape[1] is not None and shape[1] > limit:
            raise ValueError(
                f"{_NAME}: {shape[1]} tokens exceed the max_sequence_length="
                f"{limit} of {self._source()}; set the preprocessor's "
                f"max_len <= {limit}")
        self.output_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="output_dropout")
        if self.dim is not None:
            self.projection = keras.layers.Dense(
                self.dim, dtype=self.dtype_policy, name="projection")
            self.projection.build((None, self._width()))
        self.built = True
        self._apply_trainability()

    # -- calling ------------------------------------------------------------

    def _mask(self, ids, mask):
        if mask is not None:
            return ops.cast(mask, "bool")
        if self.pad_id is None:
            raise ValueError(
                f"{_NAME}: no mask given and no pad_id known (the preset "
                "has no tokenizer): pass mask= (the preprocessor's "
                "<name>_mask) or pad_id=")
        return ops.not_equal(ids, self.pad_id)

    def call(self, inputs, training=None, mask=None):
        ids = ops.cast(inputs, "int32")
        mask = self._mask(ids, mask)
        feed = {"token_ids": ids, "padding_mask": mask}
        if "segment_ids" in self._input_names:
            feed["segment_ids"] = ops.zeros_like(ids)
        out = self.backbone(feed, training=training)
        sequence = out["sequence_output"] if isinstance(out, dict) else out
        if self.output_mode == "sequence":
            x = sequence
        elif self.pooling == "pooled":
            x = out["pooled_output"]
        elif self.pooling == "mean":
            weights = ops.cast(mask, sequence.dtype)[:, :, None]
            count = ops.maximum(ops.sum(weights, axis=1),
                                ops.cast(1.0, sequence.dtype))
            x = ops.sum(sequence * weights, axis=1) / count
        else:
            x = sequence[:, 0]
        x = self.output_dropout(x, training=training)
        if self.dim is not None:
            x = self.projection(x)
        if self.output_mode == "sequence":
            x = x * ops.cast(mask, x.dtype)[:, :, None]
        return x

    def compute_mask(self, inputs, mask=None):
        if self.output_mode != "sequence":
            return None
        return self._mask(ops.cast(inputs, "int32"), mask)

    def compute_output_shape(self, input_shape):
        width = self.dim if self.dim is not None else self._width()
        if self.output_mode == "vector":
            return (input_shape[0], width)
        return (input_shape[0], input_shape[1], width)

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
            "pad_id": self.pad_id,
        })
        return config


__all__ = ["TextPresetTower"]
