"""Text preprocessor: normalize -> WordPiece ids -> pad/truncate."""

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset

from keras_mm.data.base_preprocessor import Preprocessor
from keras_mm.layers.utils import check_choice
from keras_mm.registry import PREPROCESSORS

RESERVED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


@PREPROCESSORS.register("text")
class TextPreprocessor(Preprocessor):
    """UTF-8 text -> int32 WordPiece ids `[B, max_len]`, 0 = `[PAD]`.

    `parse` normalizes (Unicode `normalization_form`, default NFKC, with
    `tensorflow_text.normalize_utf8`, then lowercase), splits with BERT's
    pre-tokenization (whitespace, punctuation, CJK characters) and WordPiece
    with `tensorflow_text.FastBertTokenizer`, then truncates to `max_len`
    (keeps the first tokens) and pads with 0. `transform` passes the ids
    through (tokenizing happens in tf.data / serving, never in the model).

    The vocabulary is either given (`vocab` list, or `vocab_file` with one
    token per line, read at construction), or learned by `adapt` from the
    training split with `tensorflow_text`'s `bert_vocab_from_dataset`. The
    vocabulary is stored in the config, so `from_config(get_config())` needs
    no file. Its first token must be `[PAD]` (id 0) and it must hold `[UNK]`
    (unknown words).

    Text with no tokens (empty or whitespace only) gives all-zero ids and
    `<name>_present = 0`.

    Args:
        name: model input name.
        max_len: output length.
        vocab: list of tokens (`[PAD]` first).
        vocab_file: path (any `tf.io.gfile` path) of a vocab file, one token
            per line; used when `vocab` is None.
        max_vocab_size: target size of the vocabulary `adapt` learns.
        lowercase: lowercase after normalization.
        normalization_form: `"NFKC"`, `"NFC"`, `"NFD"`, `"NFKD"` or None.
        reserved_tokens: tokens put first in a learned vocab (`[PAD]` first).
        learn_params: extra arguments of the WordPiece learner (e.g.
            `{"lower_thresh": 1}` for tiny corpora; see
            `wordpiece_tokenizer_learner_lib.learn` in
            `tensorflow_text.tools.wordpiece_vocab`).

    Outputs: `<name>` int32 `[B, max_len]`, `<name>_present` float32 `[B]`.

    Example:

    >>> pre = TextPreprocessor("text", max_len=16,
    ...                        learn_params={"lower_thresh": 1})
    >>> pre.adapt(tf.data.Dataset.from_tensor_slices(train_texts))
    >>> pre(tf.constant(["A cat sat."]))["text"].shape
    TensorShape([1, 16])
    """

    modality = "text"

    def __init__(self, name, max_len=64, vocab=None, vocab_file=None,
                 max_vocab_size=8000, lowercase=True,
                 normalization_form="NFKC", reserved_tokens=RESERVED_TOKENS,
                 learn_params=None):
        super().__init__(name)
        owner = f"TextPreprocessor({name!r})"
        self.max_len = int(max_len)
        if self.max_len < 1:
            raise ValueError(f"{owner}: max_len={max_len} must be >= 1")
        self.max_vocab_size = int(max_vocab_size)
        self.lowercase = bool(lowercase)
        self.normalization_form = check_choice(
            owner, "normalization_form", normalization_form,
            ("NFKC", "NFC", "NFD", "NFKD", None))
        self.reserved_tokens = list(reserved_tokens)
        if (not self.reserved_tokens or self.reserved_tokens[0] != "[PAD]"
                or "[UNK]" not in self.reserved_tokens):
            raise ValueError(f"{owner}: reserved_tokens={reserved_tokens!r} "
                             "must start with '[PAD]' and contain '[UNK]'")
        self.learn_params = dict(learn_params or {})
        if vocab is None and vocab_file is not None:
            with tf.io.gfile.GFile(vocab_file, "r") as f:
                vocab = [line.rstrip("\r\n") for line in f]
            while vocab and vocab[-1] == "":
                vocab.pop()
        self._tokenizer = None
        self.vocab = None
        if vocab is not None:
            self.set_vocab(vocab, source=vocab_file or "vocab")

    def set_vocab(self, vocab, source="vocab"):
        vocab = [str(t) for t in vocab]
        if not vocab or vocab[0] != "[PAD]" or "[UNK]" not in vocab:
            raise ValueError(
                f"TextPreprocessor({self.name!r}): {source}: the vocabulary "
                "must start with '[PAD]' (id 0) and contain '[UNK]'")
        if len(set(vocab)) != len(vocab):
            raise ValueError(f"TextPreprocessor({self.name!r}): {source}: "
                             "the vocabulary has duplicate tokens")
        try:
            tokenizer = tf_text.FastBertTokenizer(
                vocab, token_out_type=tf.int32, unknown_token="[UNK]",
                lower_case_nfd_strip_accents=False)
        except RuntimeError as e:  # e.g. only reserved tokens
            raise ValueError(
                f"TextPreprocessor({self.name!r}): {source}: cannot build "
                f"a WordPiece tokenizer from {len(vocab)} tokens ({e}); "
                "adapt on a non-empty training split or give a real "
                "vocabulary") from None
        self.vocab = vocab
        self._tokenizer = tokenizer

    @property
    def vocab_size(self):
        """Number of ids (the TextTower's `vocab_size`)."""
        if self.vocab is None:
            raise self._not_adapted("vocabulary")
        return len(self.vocab)

    @property
    def is_adapted(self):
        return self.vocab is not None

    def get_config(self):
        config = super().get_config()
        config.update(max_len=self.max_len, vocab=self.vocab,
                      max_vocab_size=self.max_vocab_size,
                      lowercase=self.lowercase,
                      normalization_form=self.normalization_form,
                      reserved_tokens=list(self.reserved_tokens),
                      learn_params=dict(self.learn_params))
        return config

    def normalize(self, text):
        """Unicode normalization then lowercase (any shape of strings)."""
        text = tf.convert_to_tensor(text, tf.string)
        if self.normalization_form is not None:
            text = tf_text.normalize_utf8(text, self.normalization_form)
        if self.lowercase:
            text = tf.strings.lower(text, encoding="utf-8")
        return text

    def adapt(self, dataset):
        """Learns the WordPiece vocabulary from raw training texts."""
        texts = self.examples(dataset).map(
            lambda t: self.normalize(tf.reshape(t, [])))
        try:
            vocab = bert_vocab_from_dataset.bert_vocab_from_dataset(
                texts, vocab_size=self.max_vocab_size,
                reserved_tokens=list(self.reserved_tokens),
                bert_tokenizer_params={"lower_case": False},
                learn_params=dict(self.learn_params))
        except StopIteration:  # the learner found no word at all
            vocab = list(self.reserved_tokens)
        self.set_vocab(vocab, source="learned vocabulary")
        return self

    def raw_signature(self):
        return {self.name: tf.TensorSpec([None], tf.string)}

    def parsed_signature(self):
        return {self.name: tf.TensorSpec([self.max_len], tf.int32),
                self._key("_present"): tf.TensorSpec([], tf.float32)}

    def output_signature(self):
        return {self.name: tf.TensorSpec([None, self.max_len], tf.int32),
                self._key("_present"): tf.TensorSpec([None], tf.float32)}

    def tokenize(self, text):
        """Normalized WordPiece ids of ONE text, all of them (int32 `[n]`)."""
        if self._tokenizer is None:
            raise self._not_adapted("vocabulary")
        text = tf.reshape(self.normalize(text), [1])
        return self._tokenizer.tokenize(text).flat_values

    def parse(self, raw, training=False, seed=None):
        del training, seed
        ids = self.tokenize(self.select_raw(raw))[:self.max_len]
        count = tf.size(ids)
        ids = tf.pad(ids, [[0, self.max_len - count]])
        ids = tf.ensure_shape(ids, [self.max_len])
        return {self.name: ids,
                self._key("_present"): tf.cast(count > 0, tf.float32)}

    def transform(self, parsed, training=False, seed=None):
        del training, seed
        return {self.name: tf.cast(parsed[self.name], tf.int32),
                self._key("_present"): tf.cast(
                    parsed[self._key("_present")], tf.float32)}

    def detokenize(self, ids):
        """Tokens of `[..., n]` ids (0 = padding dropped), for inspection."""
        vocab = tf.constant(self.vocab)
        ids = tf.convert_to_tensor(ids)
        return tf.ragged.boolean_mask(tf.gather(vocab, ids), ids > 0)
