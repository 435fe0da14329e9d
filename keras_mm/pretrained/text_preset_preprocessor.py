"""Text preprocessor of a keras-hub preset: the preset's own tokenizer."""

import hashlib

import tensorflow as tf

from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import check_positive_int
from keras_mm.pretrained.preset_loading import (check_preset, from_preset,
                                                keras_hub)
from keras_mm.registry import PREPROCESSORS

# A text counts as absent when it holds nothing but white space (ASCII
# white space and the Unicode separators: no-break space, ideographic
# space...).
_BLANK = r"[\s\p{Z}]*"


def preset_backbone_config(preset, owner):
    """The backbone constructor arguments recorded in a preset.

    A keras-hub preset folder's `config.json` holds them directly; a
    Hugging Face checkpoint's are converted by keras-hub's converter for
    its `model_type`. Returns `{}` where neither applies (e.g. a timm
    config). Needs the preset's `config.json` (a download for a preset name
    or handle: offline, a one-line ValueError naming the preset).
    """
    from keras_hub.src.utils.preset_utils import get_preset_loader
    loader = from_preset(get_preset_loader, preset, "config.json", owner)
    config = loader.config
    if "registered_name" in config:
        return dict(config.get("config") or {})
    converter = getattr(loader, "converter", None)
    if converter is not None and hasattr(converter,
                                         "convert_backbone_config"):
        try:
            return dict(converter.convert_backbone_config(config))
        except Exception:  # a converter that needs more than the config
            return {}
    return {}


def _shared_sentencepiece_resource(model):
    """A tensorflow-text SentencePiece model resource under a fixed shared
    name (`keras_mm_sentencepiece_<sha1 of the model>`).

    tensorflow-text's own resource is private to the eager kernel that
    made it (its TODO b/318839908), and `tf.random.set_seed` /
    `keras.utils.set_random_seed` / `keras.backend.clear_session` clear the
    eager kernel cache: every later call, in `tf.data` too, then fails with
    "Resource ... SentencepieceOp ... does not exist". Under a shared name
    the resource manager keeps it. In a SavedModel it is re-created the
    same way (graph ops only).
    """
    from tensorflow.python.trackable import resource
    from tensorflow_text.python.ops import sentencepiece_tokenizer

    ops = sentencepiece_tokenizer.gen_sentencepiece_tokenizer
    name = "keras_mm_sentencepiece_" + hashlib.sha1(model).hexdigest()

    class SharedSentencepieceModel(resource.TrackableResource):
        def __init__(self):
            super().__init__()
            self._model = model
            _ = self.resource_handle     # created now, outside any graph

        def _create_resource(self):
            return ops.sentencepiece_op(model=self._model, shared_name=name)

    return SharedSentencepieceModel()


def _share_sentencepiece_models(tokenizer):
    """Moves a keras-hub SentencePiece tokenizer's tensorflow-text model
    to a shared-name resource (see `_shared_sentencepiece_resource`); other
    tokenizers are left as they are."""
    piece = getattr(tokenizer, "_sentence_piece", None)
    current = getattr(piece, "_model_resource", None)
    model = getattr(current, "_model", None)
    if isinstance(model, bytes):
        piece._model_resource = _shared_sentencepiece_resource(model)


@PREPROCESSORS.register("text_preset")
class TextPresetPreprocessor(Preprocessor):
    """Raw text -> the token ids and padding mask of a keras-hub preset.

    Runs the preset's own text preprocessing: keras-hub's
    `TextClassifierPreprocessor.from_preset(preset, sequence_length=max_len)`
    (it resolves to the family's class: `BertTextClassifierPreprocessor`,
    `DistilBertTextClassifierPreprocessor`,
    `RobertaTextClassifierPreprocessor`, `AlbertTextClassifierPreprocessor`,
    `DebertaV3TextClassifierPreprocessor`, ...): the preset's tokenizer
    (WordPiece, byte-level BPE, SentencePiece), then its start / end / pad
    tokens, truncated and padded to `max_len`. A preset whose backbone has no
    classifier preprocessor in keras-hub (GPT-2, Gemma, ...) gets its
    `Tokenizer` and a `keras_hub.layers.StartEndPacker` with the tokenizer's
    start / end / pad ids (those it has).

    The graph is keras-hub's TensorFlow path (tensorflow-text ops), so the
    same code runs in `tf.data` and inside the exported SavedModel; an
    eager call goes through a `tf.function` too (keras-hub's eager calls
    take a pure-Python path instead). Tokenizing is batched
    (`batched_parse = True`); `parse` tokenizes a batch of one and gives
    the same values bitwise.

    Absent text: an empty or white-space-only text gives
    `<name>_present = 0`, ids all equal to the preset's pad id (0 for BERT,
    1 for RoBERTa) and a mask all False, so that the tower and the fusion
    see nothing of it. Any other text is present (even if the tokenizer
    keeps no token of it: then only the start / end tokens are unmasked).

    SentencePiece tokenizers (ALBERT, DeBERTa-v3, T5...) get their
    tensorflow-text model resource under a shared name, so that it survives
    `keras.utils.set_random_seed` and `keras.backend.clear_session` (which
    destroy tensorflow-text's kernel-private one).

    Single segments only: sentence pairs are not supported yet. Backbones
    with `segment_ids` (BERT, ALBERT) get all-zero segment ids from
    `TextPresetTower`.

    Args:
        name: the model input name.
        preset: a keras-hub preset name, `kaggle://` / `hf://` handle, or
            a local preset folder (written by `save_to_preset`; works
            offline). Offline, a name or handle gives a one-line ValueError
            naming the preset and how to use a local copy.
        max_len: the padded token length, start and end tokens included.
            Must not exceed the backbone's `max_sequence_length` (read from
            the preset's `config.json`).

    Outputs: `<name>` int32 `[B, max_len]` token ids, `<name>_mask` bool
    `[B, max_len]` (True on real tokens, start / end tokens included),
    `<name>_present` float32 `[B]`.

    Example:

    >>> pre = TextPresetPreprocessor("review", "/models/bert_tiny",
    ...                              max_len=16)   # doctest: +SKIP
    >>> batch = pre(tf.constant(["A fine film.", ""]))   # doctest: +SKIP
    >>> batch["review"].shape   # doctest: +SKIP
    TensorShape([2, 16])
    >>> batch["review_present"].numpy()   # doctest: +SKIP
    array([1., 0.], dtype=float32)
    """

    modality = "text"
    registered_name = "text_preset"
    batched_parse = True

    def __init__(self, name, preset, max_len=128):
        super().__init__(name)
        owner = f"TextPresetPreprocessor({name!r})"
        self.preset = check_preset(preset, owner)
        self.max_len = check_positive_int(owner, "max_len", max_len)
        config = preset_backbone_config(preset, owner)
        self.max_sequence_length = config.get("max_sequence_length")
        if self.max_sequence_length is not None and \
                self.max_len > int(self.max_sequence_length):
            raise ValueError(
                f"{owner}: max_len={self.max_len} exceeds the "
                f"max_sequence_length={self.max_sequence_length} of the "
                f"backbone of preset {preset!r}; use max_len <= "
                f"{self.max_sequence_length}")
        self._packer = None
        self.layer = self._load(owner)
        self.tokenizer = getattr(self.layer, "tokenizer", self.layer)
        _share_sentencepiece_models(self.tokenizer)
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad_id) if pad_id is not None else 0
        self._encode_fn = None

    def _load(self, owner):
        """The preset's classifier preprocessor, built; or its tokenizer
        (then `self._packer` holds a StartEndPacker)."""
        hub = keras_hub()
        try:
            layer = from_preset(
                hub.models.TextClassifierPreprocessor.from_preset,
                self.preset, "text preprocessor", owner,
                sequence_length=self.max_len)
        except ValueError as error:
            if "Unable to find a subclass" not in str(error):
                raise
            return self._load_tokenizer(owner)
        layer.build(None)
        return layer

    def _load_tokenizer(self, owner):
        hub = keras_hub()
        tokenizer = from_preset(hub.tokenizers.Tokenizer.from_preset,
                                self.preset, "tokenizer", owner)
        ids = {key: getattr(tokenizer, f"{key}_token_id", None)
               for key in ("start", "end", "pad")}
        self._packer = hub.layers.StartEndPacker(
            sequence_length=self.max_len, start_value=ids["start"],
            end_value=ids["end"], pad_value=ids["pad"] or 0,
            return_padding_mask=True)
        self._packer.build(None)
        tokenizer.build(None)
        return tokenizer

    # -- config ------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(preset=self.preset, max_len=self.max_len)
        return config

    def __repr__(self):
        return (f"TextPresetPreprocessor(name={self.name!r}, "
                f"preset={self.preset!r}, max_len={self.max_len})")

    @property
    def vocabulary_size(self):
        """Number of token ids of the preset's tokenizer."""
        return int(self.tokenizer.vocabulary_size())

    def resources(self):
        """The built keras-hub layers the exporter must track (their lookup
        tables and tokenizer models)."""
        if self._packer is not None:
            return [self.layer, self._packer]
        return [self.layer]

    # -- signatures ----------------------------------------------------------

    def raw_signature(self):
        return {self.name: tf.TensorSpec([None], tf.string)}

    def parsed_signature(self):
        return {self.name: tf.TensorSpec([self.max_len], tf.int32),
                self._key("_mask"): tf.TensorSpec([self.max_len], tf.bool),
                self._key("_present"): tf.TensorSpec([], tf.float32)}

    def output_signature(self):
        return {self.name: tf.TensorSpec([None, self.max_len], tf.int32),
                self._key("_mask"): tf.TensorSpec([None, self.max_len],
                                                  tf.bool),
                self._key("_present"): tf.TensorSpec([None], tf.float32)}

    # -- graph code ----------------------------------------------------------

    def _tokenize(self, texts):
        """keras-hub's TF path on `[B]` strings -> (ids, mask)."""
        if self._packer is not None:
            ids, mask = self._packer(self.layer(texts))
        else:
            out = self.layer(texts)
            ids, mask = out["token_ids"], out["padding_mask"]
        return tf.cast(ids, tf.int32), tf.cast(mask, tf.bool)

    def encode(self, texts):
        """`[B]` strings -> (ids int32 `[B, max_len]`, mask bool, present
        float32 `[B]`), absent rows blanked (see the class docstring)."""
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        if tf.executing_eagerly():
            if self._encode_fn is None:
                self._encode_fn = tf.function(
                    self._encode_graph, reduce_retracing=True,
                    input_signature=[tf.TensorSpec([None], tf.string)])
            return self._encode_fn(texts)
        return self._encode_graph(texts)

    def _encode_graph(self, texts):
        ids, mask = self._tokenize(texts)
        ids = tf.ensure_shape(ids, [None, self.max_len])
        mask = tf.ensure_shape(mask, [None, self.max_len])
        present = tf.logical_not(tf.strings.regex_full_match(texts, _BLANK))
        keep = present[:, None]
        ids = tf.where(keep, ids, tf.constant(self.pad_id, tf.int32))
        mask = tf.logical_and(mask, keep)
        return ids, mask, tf.cast(present, tf.float32)

    def parse_batch(self, raw_batch, training=False, seeds=None):
        """`[B]` raw texts -> the batched `parse` outputs (one tokenizer
        call for the batch)."""
        del training, seeds
        ids, mask, present = self.encode(self.select_raw(raw_batch))
        return {self.name: ids, self._key("_mask"): mask,
                self._key("_present"): present}

    def parse(self, raw, training=False, seed=None):
        """ONE raw text -> `{<name>: [max_len], <name>_mask: [max_len],
        <name>_present: []}` (a batch of one through `parse_batch`)."""
        del training, seed
        text = tf.reshape(tf.convert_to_tensor(self.select_raw(raw),
                                               tf.string), [1])
        ids, mask, present = self.encode(text)
        return {self.name: ids[0], self._key("_mask"): mask[0],
                self._key("_present"): present[0]}

    def transform(self, parsed, training=False, seed=None):
        del training, seed
        return {self.name: tf.cast(parsed[self.name], tf.int32),
                self._key("_mask"): tf.cast(parsed[self._key("_mask")],
                                            tf.bool),
                self._key("_present"): tf.cast(
                    parsed[self._key("_present")], tf.float32)}


__all__ = ["TextPresetPreprocessor", "preset_backbone_config"]
