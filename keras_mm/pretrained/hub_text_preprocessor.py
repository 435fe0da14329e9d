"""`HubTextPreprocessor`: a TF-Hub text preprocessing SavedModel as a
keras_mm preprocessor."""

import tensorflow as tf

from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import check_positive_int
from keras_mm.pretrained import hub_loading
from keras_mm.registry import PREPROCESSORS


@PREPROCESSORS.register("text_hub")
class HubTextPreprocessor(Preprocessor):
    """Raw text -> token ids with a TF-Hub preprocessing SavedModel.

    TF-Hub's BERT-family text models come as a pair: this preprocessing
    model (the tokenizer, its vocabulary as a SavedModel asset, and the
    packing with `[CLS]` / `[SEP]` and padding) and an encoder
    (`keras_mm.pretrained.HubTextTower`). The module is loaded with
    `tf.saved_model.load` and runs in `tf.data` and, tracked through
    `resources()`, inside the exported SavedModel: its vocabulary file
    becomes an asset of the export and its tables are initialized there.
    Loading an export needs `import tensorflow_text` (TF Serving links
    those ops).

    The sequence length: where the module has TF-Hub's `tokenize` and
    `bert_pack_inputs` (`seq_length=`), the text is packed to `max_len`
    (`None`: the module's own default, e.g. 128); a module with only its
    fixed-length root call takes `max_len=None` or its output length.

    Outputs (batched): `<name>` int32 `[B, max_len]` (`input_word_ids`;
    0 = padding), `<name>_mask` bool `[B, max_len]` (`input_mask`) and
    `<name>_present` float32 `[B]`. Text without any non-whitespace
    character (`""`, `"  "`) is absent: present 0, ids all 0 and mask all
    False (the module alone would give `[CLS] [SEP]`). The input type ids
    are not output: single-segment text has them all 0, and
    `HubTextTower` feeds zeros.

    Args:
        name: the model input name; output keys derive from it.
        handle: the preprocessing module: a TF-Hub URL (downloaded once into
            TF-Hub's cache; offline, a one-line error says how to use a
            local copy) or a local SavedModel folder.
        max_len: tokens per example, special tokens included; `None` = the
            module's default length.

    Example:

    >>> pre = HubTextPreprocessor(
    ...     "review", "/models/bert_en_uncased_preprocess_3", max_len=64)
    ... # doctest: +SKIP
    >>> batch = pre(tf.constant(["a fine film", ""]))  # doctest: +SKIP
    >>> batch["review"].shape, batch["review_present"].numpy()
    ... # doctest: +SKIP
    (TensorShape([2, 64]), array([1., 0.], dtype=float32))
    """

    modality = "text"
    registered_name = "text_hub"
    batched_parse = True

    def __init__(self, name, handle, max_len=None):
        super().__init__(name)
        owner = f"HubTextPreprocessor({name!r})"
        self.handle = hub_loading.check_handle(handle, owner)
        max_len = check_positive_int(owner, "max_len", max_len,
                                     allow_none=True)
        self._module, self.folder = hub_loading.load(self.handle, owner)
        module = self._module
        self.packs = hasattr(module, "tokenize") and hasattr(
            module, "bert_pack_inputs")
        if not self.packs and not callable(module):
            raise ValueError(
                f"{owner}: handle {self.handle!r} is not a TF-Hub text "
                "preprocessing model: it is neither callable on strings nor "
                "has tokenize and bert_pack_inputs")
        default = self._default_length(owner)
        if max_len is None:
            max_len = default
        elif not self.packs and max_len != default:
            raise ValueError(
                f"{owner}: max_len={max_len} but the module of handle "
                f"{self.handle!r} has no bert_pack_inputs and always gives "
                f"{default} tokens; set max_len to {default} or None")
        if max_len < 3:
            raise ValueError(f"{owner}: max_len={max_len} leaves no room for "
                             "text after [CLS] and [SEP]; use 3 or more")
        self.max_len = max_len

    def _default_length(self, owner):
        """The root call's output length (its signature, else one probe)."""
        try:
            outputs = self._module(tf.constant(["a"]))
        except Exception as error:
            raise ValueError(
                f"{owner}: the module of handle {self.handle!r} cannot be "
                "called on a string batch (is it the encoder rather than "
                f"the preprocessing model?): "
                f"{str(error).strip().splitlines()[0]}") from None
        if not isinstance(outputs, dict) or not {
                "input_word_ids", "input_mask"} <= set(outputs):
            keys = sorted(outputs) if isinstance(outputs, dict) else \
                type(outputs).__name__
            raise ValueError(
                f"{owner}: the module of handle {self.handle!r} returns "
                f"{keys}, not TF-Hub's input_word_ids / input_mask / "
                "input_type_ids")
        return int(outputs["input_word_ids"].shape[-1])

    # -- config --------------------------------------------------------------

    def get_config(self):
        return {"name": self.name, "handle": self.handle,
                "max_len": self.max_len}

    def __repr__(self):
        return (f"HubTextPreprocessor(name={self.name!r}, "
                f"handle={self.handle!r}, max_len={self.max_len})")

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

    def _pack(self, strings):
        if self.packs:
            tokens = self._module.tokenize(strings)
            return self._module.bert_pack_inputs(
                [tokens], seq_length=tf.constant(self.max_len, tf.int32))
        return self._module(strings)

    def parse_batch(self, raw_batch, training=False, seeds=None):
        """Strings `[B]` -> ids, mask (`[B, max_len]`) and presence `[B]`,
        the whole batch in one call of the module."""
        del training, seeds
        strings = tf.reshape(tf.convert_to_tensor(
            self.select_raw(raw_batch), tf.string), [-1])
        packed = self._pack(strings)
        present = tf.strings.length(tf.strings.strip(strings)) > 0
        ids = tf.cast(packed["input_word_ids"], tf.int32)
        mask = tf.cast(packed["input_mask"], tf.bool)
        ids = tf.where(present[:, tf.newaxis], ids, tf.zeros_like(ids))
        mask = tf.logical_and(mask, present[:, tf.newaxis])
        ids = tf.ensure_shape(ids, [None, self.max_len])
        mask = tf.ensure_shape(mask, [None, self.max_len])
        return {self.name: ids, self._key("_mask"): mask,
                self._key("_present"): tf.cast(present, tf.float32)}

    def parse(self, raw, training=False, seed=None):
        """ONE string -> `parse_batch` of a batch of one, unbatched (each
        example is packed on its own, so the values are the same)."""
        del seed
        raw = tf.reshape(tf.convert_to_tensor(self.select_raw(raw),
                                              tf.string), [1])
        return {k: v[0] for k, v in self.parse_batch(
            raw, training=training).items()}

    def transform(self, parsed, training=False, seed=None):
        del training, seed
        return {self.name: tf.cast(parsed[self.name], tf.int32),
                self._key("_mask"): tf.cast(parsed[self._key("_mask")],
                                            tf.bool),
                self._key("_present"): tf.cast(parsed[self._key("_present")],
                                               tf.float32)}

    def resources(self):
        """The loaded module: tracking it puts its vocabulary asset and
        lookup tables into the export."""
        return [self._module]


__all__ = ["HubTextPreprocessor"]
