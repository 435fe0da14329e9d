"""`HubTextTower`: a TF-Hub text encoder SavedModel as a keras_mm tower."""

import keras
from keras import ops

from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int)
from keras_mm.pretrained import hub_loading
from keras_mm.registry import PRETRAINED_TOWERS

OUTPUTS = ("vector", "sequence")
POOLINGS = ("pooled", "cls", "mean")
ENCODER_OUTPUTS = ("pooled_output", "sequence_output")


def check_whole_module(owner, trainable_blocks, lora_rank):
    """A SavedModel is one opaque function: only `trainable` applies."""
    if trainable_blocks is not None:
        raise ValueError(
            f"{owner}: trainable_blocks={trainable_blocks!r} is not "
            "supported: a TF-Hub SavedModel has no block structure to "
            "freeze in part; use trainable=True (all) or False (none), or "
            "a keras-hub preset (preset: ...) for the last N blocks")
    if lora_rank is not None:
        raise ValueError(
            f"{owner}: lora_rank={lora_rank!r} is not supported: LoRA "
            "needs the model's dense layers and a TF-Hub SavedModel only "
            "has its traced function; set lora_rank: null, or use a "
            "keras-hub preset (preset: ...)")


@keras.saving.register_keras_serializable(package="keras_mm")
@PRETRAINED_TOWERS.register("text_hub")
class HubTextTower(keras.layers.Layer):
    """Text tower over a TF-Hub BERT-style encoder SavedModel.

    The encoder is TF-Hub's text encoder half (its preprocessing half is
    `keras_mm.pretrained.HubTextPreprocessor`): a SavedModel callable on
    `{input_word_ids, input_mask, input_type_ids}` (int32 `[B, T]`) that
    returns `pooled_output` `[B, H]` and `sequence_output` `[B, T, H]`. It
    is loaded with `tf.saved_model.load`; its variables become this
    layer's weights (the same variables, not copies), so that they train
    when the layer is trainable, are saved in `.keras` files, and go into
    the exported SavedModel with the model.

    The module gets `training=True` only when the layer is trainable and
    called in training (dropout inside the encoder), like TF-Hub's own
    `hub.KerasLayer`. `input_type_ids` are zeros (one text segment).

    - `output="vector"`: `[B, dim]` from `pooling`: `"pooled"` (the
      module's `pooled_output`, BERT's tanh pooler on `[CLS]`), `"cls"`
      (the first token of `sequence_output`) or `"mean"` (the mean of
      `sequence_output` over the real tokens);
    - `output="sequence"`: `[B, T, dim]`, padded tokens zeroed;
      `compute_mask` returns the boolean token mask.

    `dim=None` keeps the encoder's width H; an int adds a Dense projection
    (after `dropout`).

    Masking: `mask` (bool `[B, T]`, the preprocessor's `<name>_mask`) is
    the encoder's `input_mask`; without one, `ids != 0` (id 0 is BERT's
    padding). A row with no real token (an absent text) gives zeros from
    `"mean"`; the fusion layers ignore absent modalities anyway.

    Fine-tuning: `trainable` (the Keras layer argument) trains the whole
    encoder or freezes it (its variables then stay bitwise unchanged). A
    SavedModel has no block structure or dense layers to reach, so
    `trainable_blocks` and `lora_rank` are accepted only as `None` (a
    keras-hub preset tower has both). Every variable path starts with
    `<tower name>/` (per-tower learning-rate multipliers match on it).

    Saving: `get_config` holds the handle, not the graph: loading a
    `.keras` file loads the module from its handle again (it must be
    reachable there, downloaded or in TF-Hub's cache) and then restores the
    fine-tuned weights from the file. The exported SavedModel holds the
    encoder's graph and weights and needs no handle.

    Args:
        handle: the encoder: a TF-Hub URL (`https://tfhub.dev/...`,
            `https://www.kaggle.com/models/...`; downloaded once into
            TF-Hub's cache, offline a one-line error says how to use a
            local copy) or a local SavedModel folder.
        output: `"vector"` or `"sequence"`.
        pooling: `"pooled"`, `"cls"` or `"mean"` (vector output).
        dim: output width; `None` = the encoder's own width.
        dropout: dropout rate on the encoder's features.
        trainable_blocks: must be `None` (see Fine-tuning).
        lora_rank: must be `None` (see Fine-tuning).
        **kwargs: Keras layer arguments (`trainable`, `name`, `dtype`).

    Call arguments:
        inputs: int32 token ids `[B, T]` (`input_word_ids`).
        training: Python bool.
        mask: optional bool `[B, T]` (`input_mask`).

    Example:

    >>> tower = HubTextTower("/models/small_bert_L2_H128",
    ...                      pooling="pooled", dim=64, trainable=False)
    ... # doctest: +SKIP
    >>> tower(ids, mask=ids != 0).shape  # doctest: +SKIP
    TensorShape([2, 64])
    """

    input_dtype = "int32"

    def __init__(self, handle, output="vector", pooling="pooled", dim=None,
                 dropout=0.0, trainable_blocks=None, lora_rank=None,
                 **kwargs):
        super().__init__(**kwargs)
        owner = "HubTextTower"
        self.handle = hub_loading.check_handle(handle, owner)
        self.output_mode = check_choice(owner, "output", output, OUTPUTS)
        self.pooling = check_choice(owner, "pooling", pooling, POOLINGS)
        self.dim = check_positive_int(owner, "dim", dim, allow_none=True)
        self.dropout = check_fraction(owner, "dropout", dropout)
        check_whole_module(owner, trainable_blocks, lora_rank)
        self.trainable_blocks = trainable_blocks
        self.lora_rank = lora_rank
        self.supports_masking = True

        module, _ = hub_loading.load(self.handle, owner)
        self._module = module
        self._fn = hub_loading.module_function(module, owner, self.handle)
        self.hidden_size = self._encoder_width(owner)
        # Under the tower's own name scope, so that a per-tower
        # learning-rate multiplier finds the module's variables by path.
        with keras.name_scope(self.name, caller=self):
            self.module_weights = hub_loading.wrap_variables(
                self._fn.variables())
        if not self.trainable:   # as Layer._track_variable does it
            for variable in self.module_weights:
                variable.trainable = False

    def _encoder_width(self, owner):
        outputs = self._fn.output_signature()
        if not isinstance(outputs, dict) or not set(ENCODER_OUTPUTS) <= set(
                outputs):
            got = sorted(outputs) if isinstance(outputs, dict) else outputs
            raise ValueError(
                f"{owner}: handle {self.handle!r} is not a TF-Hub text "
                f"encoder: it returns {got}, not pooled_output and "
                "sequence_output (is it the preprocessing model? That one "
                "goes to HubTextPreprocessor / hub.preprocessor)")
        width = outputs["sequence_output"].shape[-1]
        if width is None:
            width = outputs["pooled_output"].shape[-1]
        if width is None:
            raise ValueError(f"{owner}: handle {self.handle!r}: the "
                             "encoder's output width is not static")
        return int(width)

    def build(self, input_shape):
        width = self.hidden_size
        self.dropout_layer = keras.layers.Dropout(self.dropout,
                                                  dtype=self.dtype_policy)
        if self.dim is not None:
            self.projection = keras.layers.Dense(
                self.dim, dtype=self.dtype_policy, name="projection")
            self.projection.build((None, width))
        else:
            self.projection = None

    def _mask(self, inputs, mask):
        if mask is None:
            return ops.not_equal(inputs, 0)
        return ops.cast(mask, "bool")

    def call(self, inputs, training=None, mask=None):
        ids = ops.cast(inputs, "int32")
        token_mask = self._mask(ids, mask)
        outputs = self._fn(
            {"input_word_ids": ids,
             "input_mask": ops.cast(token_mask, "int32"),
             "input_type_ids": ops.zeros_like(ids)},
            training=bool(training) and self.trainable)
        weights = ops.cast(token_mask, "float32")[..., None]
        if self.output_mode == "sequence":
            x = outputs["sequence_output"] * weights
        elif self.pooling == "pooled":
            x = outputs["pooled_output"]
        elif self.pooling == "cls":
            x = outputs["sequence_output"][:, 0]
        else:
            total = ops.sum(outputs["sequence_output"] * weights, axis=1)
            x = total / ops.maximum(ops.sum(weights, axis=1), 1.0)
        x = ops.cast(x, self.compute_dtype)
        x = self.dropout_layer(x, training=training)
        if self.projection is not None:
            x = self.projection(x)
            if self.output_mode == "sequence":
                x = x * ops.cast(weights, x.dtype)
        return x

    def compute_mask(self, inputs, mask=None):
        if self.output_mode != "sequence":
            return None
        return self._mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        width = self.dim or self.hidden_size
        if self.output_mode == "sequence":
            return (input_shape[0], input_shape[1], width)
        return (input_shape[0], width)

    def get_config(self):
        config = super().get_config()
        config.update({"handle": self.handle, "output": self.output_mode,
                       "pooling": self.pooling, "dim": self.dim,
                       "dropout": self.dropout,
                       "trainable_blocks": self.trainable_blocks,
                       "lora_rank": self.lora_rank})
        return config


__all__ = ["HubTextTower", "check_whole_module"]
