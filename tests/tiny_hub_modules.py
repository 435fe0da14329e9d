"""Tiny TF-Hub-format SavedModels, written locally (no network).

TF-Hub's BERT-style text models come as a pair of SavedModels, and its image
feature-vector models as one; these helpers write small random-weight
stand-ins in the same layout and with the same calling conventions
(https://www.tensorflow.org/hub/common_saved_model_apis/text and
.../images):

- `write_text_preprocessor(folder, ...)`: the preprocessing model. Its
  root is callable on a string tensor `[B]` and returns a dict of int32
  `[B, seq_length]` tensors `input_word_ids`, `input_mask`,
  `input_type_ids`. With `pack=True` (TF-Hub's layout) it also has the
  `tokenize` sub-function (strings -> ragged int32 `[B, words, pieces]`)
  and the `bert_pack_inputs` sub-object (a list of ragged token tensors,
  `seq_length=` int32 scalar -> the same dict), so that the caller picks
  the sequence length. Tokenization is tensorflow_text's `BertTokenizer`
  over a vocabulary file saved as a SavedModel asset, lower-cased.
- `write_text_encoder(folder, ...)`: the encoder. Callable on that dict
  (`training=` True/False: True scales the even features by 0.8 and the
  odd ones by 1.2, a deterministic stand-in for dropout) and returns `pooled_output` `[B, H]`,
  `sequence_output` `[B, T, H]`, `encoder_outputs` (one `[B, T, H]` per
  layer) and `default` (= pooled_output). Embeddings (word, position,
  type), one single-head self-attention layer with a masked softmax and
  layer norms, and a tanh pooler on the first token; all weights are
  trainable `tf.Variable`s, listed in `.variables` /
  `.trainable_variables` as TF-Hub's Reusable SavedModel API asks.
- `write_image_feature_vector(folder, ...)`: callable on float32
  `[B, H, W, 3]` in [0, 1] (any size, or a fixed `size`; `training=` as the
  encoder's), returns `[B, dim]`: a 3x3 convolution, ReLU, global mean
  pooling and a dense layer.

Each writer returns the folder (a plain local SavedModel folder is a valid
TF-Hub handle). `VOCAB` is the default vocabulary; `expected_ids` gives the
ids its tokenizer should produce for simple lower-case words.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "a", "cat", "dog",
         "sat", "on", "mat", "run", "##s", "##ing", "big", "red", "is",
         ".", ",", "!"]


def write_vocab(path, tokens=VOCAB):
    """Writes one token a line; returns `path`."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return path


def _pack(segments, seq_length, cls_id, sep_id):
    """BERT packing of ONE ragged token segment to `seq_length`:
    `[CLS] tokens[:seq_length - 2] [SEP]`, then 0-padding."""
    (tokens,) = segments
    if tokens.ragged_rank == 2:
        tokens = tokens.merge_dims(-2, -1)
    tokens = tf.cast(tokens, tf.int32)
    seq_length = tf.cast(seq_length, tf.int32)
    tokens = tokens[:, :seq_length - 2]
    rows = tokens.nrows()
    cls = tf.fill([rows, 1], tf.constant(cls_id, tf.int32))
    sep = tf.fill([rows, 1], tf.constant(sep_id, tf.int32))
    ids = tf.concat([cls, tokens, sep], axis=1)
    shape = tf.stack([tf.cast(rows, tf.int32), seq_length])
    word_ids = ids.to_tensor(default_value=0, shape=shape)
    mask = tf.ones_like(ids).to_tensor(default_value=0, shape=shape)
    return {"input_word_ids": word_ids, "input_mask": mask,
            "input_type_ids": tf.zeros_like(word_ids)}


class _PackInputs(tf.train.Checkpoint):
    """`bert_pack_inputs` as TF-Hub saves it: callable on a list of ragged
    segments with an overridable `seq_length=` (int32 scalar). TF-Hub's
    takes one or two segments; this tiny one takes one."""

    def __init__(self, cls_id, sep_id, default_seq_length):
        super().__init__()

        @tf.function(autograph=False)
        def call(inputs, seq_length=default_seq_length):
            return _pack(inputs, seq_length, cls_id, sep_id)

        self.__call__ = call
        for ragged_rank in (1, 2):
            call.get_concrete_function(
                [tf.RaggedTensorSpec([None] * (ragged_rank + 1),
                                     dtype=tf.int32)],
                seq_length=tf.TensorSpec([], tf.int32))


class _TextPreprocessor(tf.Module):
    def __init__(self, vocab_file, seq_length, pack):
        super().__init__()
        import tensorflow_text as text

        tokens = open(vocab_file, encoding="utf-8").read().split("\n")
        self.vocab_file = tf.saved_model.Asset(vocab_file)
        self.table = tf.lookup.StaticVocabularyTable(
            tf.lookup.TextFileInitializer(
                self.vocab_file, tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER),
            num_oov_buckets=1)
        self.tokenizer = text.BertTokenizer(
            self.table, token_out_type=tf.int64, lower_case=True,
            unknown_token="[UNK]")
        self.cls_id = tokens.index("[CLS]")
        self.sep_id = tokens.index("[SEP]")
        self.seq_length = int(seq_length)
        if pack:
            self.bert_pack_inputs = _PackInputs(self.cls_id, self.sep_id,
                                                self.seq_length)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, sentences):
        return tf.cast(self.tokenizer.tokenize(sentences), tf.int32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, sentences):
        return _pack([self.tokenize(sentences)], self.seq_length,
                     self.cls_id, self.sep_id)


def write_text_preprocessor(folder, vocab=VOCAB, seq_length=16, pack=True):
    """Writes the preprocessing SavedModel into `folder`; returns it.

    Args:
        folder: the SavedModel folder (created).
        vocab: the word-piece vocabulary (`[PAD]` id 0, with `[UNK]`,
            `[CLS]`, `[SEP]`).
        seq_length: the root call's output length (and `bert_pack_inputs`'
            default).
        pack: also save `tokenize` and `bert_pack_inputs` (TF-Hub's
            layout); False gives a module with a fixed output length only.
    """
    os.makedirs(folder, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="tiny_hub_vocab_")
    try:
        vocab_file = write_vocab(os.path.join(scratch, "vocab.txt"), vocab)
        module = _TextPreprocessor(vocab_file, seq_length, pack)
        tf.saved_model.save(module, folder, signatures={
            "serving_default": module.__call__.get_concrete_function()})
    finally:  # the SavedModel holds its own copy (assets/vocab.txt)
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


class _Encoder(tf.train.Checkpoint):
    def __init__(self, vocab_size, hidden, max_len, seed):
        super().__init__()
        rng = np.random.default_rng(seed)

        def var(name, shape, scale=0.5, value=None):
            if value is None:
                value = rng.normal(0.0, scale, shape)
            return tf.Variable(np.asarray(value, np.float32), name=name,
                               trainable=True)

        h = hidden
        self.word_embeddings = var("word_embeddings", [vocab_size, h])
        self.position_embeddings = var("position_embeddings", [max_len, h])
        self.type_embeddings = var("type_embeddings", [2, h])
        self.embedding_gamma = var("embedding_gamma", [h], value=np.ones(h))
        self.embedding_beta = var("embedding_beta", [h], value=np.zeros(h))
        scale = 1.0 / np.sqrt(h)
        self.query = var("query", [h, h], scale)
        self.key = var("key", [h, h], scale)
        self.value = var("value", [h, h], scale)
        self.attention_output = var("attention_output", [h, h], scale)
        self.output_gamma = var("output_gamma", [h], value=np.ones(h))
        self.output_beta = var("output_beta", [h], value=np.zeros(h))
        self.pooler_kernel = var("pooler_kernel", [h, h], scale)
        self.pooler_bias = var("pooler_bias", [h], 0.1)
        weights = [self.word_embeddings, self.position_embeddings,
                   self.type_embeddings, self.embedding_gamma,
                   self.embedding_beta, self.query, self.key, self.value,
                   self.attention_output, self.output_gamma,
                   self.output_beta, self.pooler_kernel, self.pooler_bias]
        self.variables = list(weights)
        self.trainable_variables = list(weights)

        # training=True scales the even features by 0.8 and the odd ones
        # by 1.2: a deterministic stand-in for dropout, so that tests can
        # see which mode the module ran in.
        keep = np.tile([0.8, 1.2], (h + 1) // 2)[:h].astype(np.float32)

        @tf.function(autograph=False)
        def call(inputs, training=False):
            outputs = self._encode(inputs)
            if training:
                outputs = {k: (v * keep if not isinstance(v, list)
                               else [x * keep for x in v])
                           for k, v in outputs.items()}
            return outputs

        self.__call__ = call
        spec = tf.TensorSpec([None, None], tf.int32)
        for training in (False, True):
            call.get_concrete_function(
                {"input_word_ids": spec, "input_mask": spec,
                 "input_type_ids": spec}, training=training)

    @staticmethod
    def _norm(x, gamma, beta):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + 1e-6) * gamma + beta

    def _encode(self, inputs):
        ids = inputs["input_word_ids"]
        mask = tf.cast(inputs["input_mask"], tf.float32)
        length = tf.shape(ids)[1]
        x = (tf.gather(self.word_embeddings, ids)
             + self.position_embeddings[tf.newaxis, :length]
             + tf.gather(self.type_embeddings, inputs["input_type_ids"]))
        x = self._norm(x, self.embedding_gamma, self.embedding_beta)
        q = tf.einsum("btd,de->bte", x, self.query)
        k = tf.einsum("btd,de->bte", x, self.key)
        v = tf.einsum("btd,de->bte", x, self.value)
        scores = tf.einsum("bqd,bkd->bqk", q, k) / tf.sqrt(
            tf.cast(tf.shape(x)[-1], tf.float32))
        scores += (1.0 - mask[:, tf.newaxis, :]) * -1e9
        attended = tf.einsum("bqk,bkd->bqd", tf.nn.softmax(scores), v)
        attended = tf.einsum("btd,de->bte", attended, self.attention_output)
        sequence = self._norm(x + attended, self.output_gamma,
                              self.output_beta)
        pooled = tf.tanh(tf.matmul(sequence[:, 0], self.pooler_kernel)
                         + self.pooler_bias)
        return {"pooled_output": pooled, "sequence_output": sequence,
                "encoder_outputs": [sequence], "default": pooled}


def write_text_encoder(folder, vocab_size=len(VOCAB), hidden=16,
                       max_len=64, seed=0):
    """Writes the encoder SavedModel into `folder`; returns it.

    Args:
        folder: the SavedModel folder (created).
        vocab_size: rows of the word embedding (the preprocessor's vocab).
        hidden: the width H of every output.
        max_len: rows of the position embedding (the longest sequence).
        seed: NumPy seed of the random weights.
    """
    tf.saved_model.save(_Encoder(vocab_size, hidden, max_len, seed), folder)
    return folder


class _ImageModule(tf.train.Checkpoint):
    def __init__(self, filters, dim, seed, size):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.conv_kernel = tf.Variable(
            rng.normal(0.0, 0.5, [3, 3, 3, filters]).astype(np.float32),
            name="conv_kernel")
        self.conv_bias = tf.Variable(
            rng.normal(0.0, 0.1, [filters]).astype(np.float32),
            name="conv_bias")
        self.dense_kernel = tf.Variable(
            rng.normal(0.0, 1.0 / np.sqrt(filters),
                       [filters, dim]).astype(np.float32),
            name="dense_kernel")
        weights = [self.conv_kernel, self.conv_bias, self.dense_kernel]
        self.variables = list(weights)
        self.trainable_variables = list(weights)

        keep = np.tile([0.8, 1.2], (dim + 1) // 2)[:dim].astype(np.float32)

        @tf.function(autograph=False)
        def call(images, training=False):
            x = tf.nn.conv2d(images, self.conv_kernel, 1, "SAME")
            x = tf.nn.relu(x + self.conv_bias)
            x = tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.dense_kernel)
            return x * keep if training else x  # fixed "dropout"

        self.__call__ = call
        height, width = size or (None, None)
        for training in (False, True):
            call.get_concrete_function(
                tf.TensorSpec([None, height, width, 3], tf.float32),
                training=training)


def write_image_feature_vector(folder, filters=8, dim=12, seed=0,
                               size=None):
    """Writes an image feature-vector SavedModel into `folder`; returns it.

    Args:
        folder: the SavedModel folder (created).
        filters: convolution channels.
        dim: the feature-vector width D.
        seed: NumPy seed of the random weights.
        size: None (any image size) or the (H, W) the module requires.
    """
    tf.saved_model.save(_ImageModule(filters, dim, seed, size), folder)
    return folder


def expected_ids(words, seq_length, vocab=VOCAB):
    """The packed ids `[CLS] w... [SEP] 0...` of whole-word `words`
    (each in `vocab`), for checks that do not trust the tokenizer."""
    ids = [vocab.index("[CLS]")] + [vocab.index(w) for w in words] + [
        vocab.index("[SEP]")]
    ids = ids[:seq_length - 1] + [vocab.index("[SEP]")] if len(
        ids) > seq_length else ids
    return ids + [0] * (seq_length - len(ids))
