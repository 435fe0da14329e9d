"""Tiny random-weight keras-hub TEXT presets for tests (no network).

Each function builds a keras-hub backbone and its tokenizer with tiny sizes
(WordPiece: 30 tokens; byte-level BPE: the 256 bytes + about 60 merged
tokens; SentencePiece: 28 pieces; hidden 16, 2 layers, 2 heads, 32 positions), and
writes them with keras-hub's own `save_to_preset` into `path` (created);
it returns `str(path)`, a preset folder that `from_preset` loads offline.

- `bert_preset`: `BertBackbone` + `BertTokenizer` (WordPiece, lowercase;
  pad id 0; the backbone takes `segment_ids`, and has a `pooled_output`);
- `distilbert_preset`: `DistilBertBackbone` + `DistilBertTokenizer`
  (WordPiece; no segment ids, no pooled output);
- `roberta_preset`: `RobertaBackbone` + `RobertaTokenizer` (byte-level BPE
  with a tiny vocabulary and merges; `<pad>` is id 1);
- `albert_preset`: `AlbertBackbone` + `AlbertTokenizer` (SentencePiece
  trained here on `TEXTS`; segment ids, pooled output, 2 distinct blocks);
- `deberta_preset`: `DebertaV3Backbone` + `DebertaV3Tokenizer`
  (SentencePiece; relative position embeddings);
- `gpt2_preset`: `GPT2Backbone` + `GPT2Tokenizer` (the same BPE): a
  backbone without a keras-hub `TextClassifierPreprocessor` (the
  preprocessor's tokenizer + packer fallback).

`WORDS` are the words the vocabularies cover; `TEXTS` a few sentences over
them. Weights are random (seeded), with `weight_scale` widening the
kernels and embeddings (keras-hub's 0.02 initializers make the outputs of
a tiny model nearly constant, and so tests weak).
"""

import os

import numpy as np

WORDS = ("the", "a", "cat", "dog", "sat", "on", "mat", "ran", "big", "small",
         "red", "blue", "hello", "world", "film", "good", "bad", "is")
TEXTS = ("the cat sat on the mat", "a big red dog ran", "hello world !",
         "the film is good", "a small blue cat is bad .", "the dog sat",
         "good", "bad film , bad cat ?")
WORDPIECE_VOCAB = (("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") + WORDS +
                   ("##s", "##ed", "##ing", ".", ",", "!", "?"))
_BPE_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
_PUNCTUATION = ".,!?"


def _byte_characters():
    """The 256 characters byte-level BPE writes bytes as (GPT-2's table:
    printable Latin-1 bytes as themselves, the others from U+0100 on; the
    space byte is `Ġ`)."""
    keep = (list(range(ord("!"), ord("~") + 1)) +
            list(range(ord("\u00a1"), ord("\u00ac") + 1)) +
            list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _bpe_vocabulary_and_merges(specials):
    """A byte-level BPE vocabulary (dict) and merges covering WORDS.

    The 256 byte characters keep any UTF-8 text encodable (a byte missing
    from the vocabulary would become id -1 on keras-hub's TF path); each word of WORDS after a
    space is one token, built by left-to-right merges (a text's first
    word, without the space, stays in pieces).
    """
    vocab = {}
    for token in specials:
        vocab.setdefault(token, len(vocab))
    for char in _byte_characters():
        vocab.setdefault(char, len(vocab))
    for char in _PUNCTUATION:
        vocab.setdefault("Ġ" + char, len(vocab))
    merges = [f"Ġ {c}" for c in _PUNCTUATION]
    for word in WORDS:
        piece = "Ġ" + word[0]
        merges.append(f"Ġ {word[0]}")
        vocab.setdefault(piece, len(vocab))
        for char in word[1:]:
            merges.append(f"{piece} {char}")
            piece += char
            vocab.setdefault(piece, len(vocab))
    seen, unique = set(), []
    for merge in merges:
        if merge not in seen:
            seen.add(merge)
            unique.append(merge)
    return vocab, unique


def _scale_weights(backbone, weight_scale, seed):
    """Redraws kernels / embeddings with std `weight_scale` (biases and
    normalization parameters kept)."""
    if not weight_scale:
        return
    rng = np.random.RandomState(seed)
    for variable in backbone.weights:
        name = variable.path.split("/")[-1]
        if name in ("gamma", "beta", "bias") or len(variable.shape) < 2:
            continue
        variable.assign(rng.normal(0.0, weight_scale, variable.shape)
                        .astype(variable.dtype))


def _save(path, backbone, tokenizer):
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    backbone.save_to_preset(path)
    tokenizer.save_to_preset(path)
    return path


def _sizes(hidden_dim, num_layers, num_heads, intermediate_dim,
           max_sequence_length):
    return dict(num_layers=num_layers, num_heads=num_heads,
                hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
                max_sequence_length=max_sequence_length)


def bert_preset(path, *, hidden_dim=16, num_layers=2, num_heads=2,
                intermediate_dim=32, max_sequence_length=32, dropout=0.1,
                weight_scale=0.2, seed=0):
    """A tiny BERT preset (WordPiece vocabulary `WORDPIECE_VOCAB`)."""
    import keras
    import keras_hub
    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.BertTokenizer(
        vocabulary=list(WORDPIECE_VOCAB), lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(WORDPIECE_VOCAB), dropout=dropout,
        **_sizes(hidden_dim, num_layers, num_heads, intermediate_dim,
                 max_sequence_length))
    _scale_weights(backbone, weight_scale, seed)
    return _save(path, backbone, tokenizer)


def distilbert_preset(path, *, hidden_dim=16, num_layers=2, num_heads=2,
                      intermediate_dim=32, max_sequence_length=32,
                      dropout=0.1, weight_scale=0.2, seed=1):
    """A tiny DistilBERT preset (no segment ids, no pooled output)."""
    import keras
    import keras_hub
    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.DistilBertTokenizer(
        vocabulary=list(WORDPIECE_VOCAB), lowercase=True)
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=len(WORDPIECE_VOCAB), dropout=dropout,
        **_sizes(hidden_dim, num_layers, num_heads, intermediate_dim,
                 max_sequence_length))
    _scale_weights(backbone, weight_scale, seed)
    return _save(path, backbone, tokenizer)


def roberta_preset(path, *, hidden_dim=16, num_layers=2, num_heads=2,
                   intermediate_dim=32, max_sequence_length=32, dropout=0.1,
                   weight_scale=0.2, seed=2):
    """A tiny RoBERTa preset (byte-level BPE; `<pad>` = id 1)."""
    import keras
    import keras_hub
    keras.utils.set_random_seed(seed)
    vocab, merges = _bpe_vocabulary_and_merges(_BPE_SPECIALS)
    tokenizer = keras_hub.models.RobertaTokenizer(vocabulary=vocab,
                                                  merges=merges)
    backbone = keras_hub.models.RobertaBackbone(
        vocabulary_size=len(vocab), dropout=dropout,
        **_sizes(hidden_dim, num_layers, num_heads, intermediate_dim,
                 max_sequence_length))
    _scale_weights(backbone, weight_scale, seed)
    return _save(path, backbone, tokenizer)


def _sentencepiece_proto(pad_piece, unk_piece):
    """A tiny SentencePiece model (word pieces of TEXTS; `[CLS]` / `[SEP]`
    as its bos / eos pieces, `[MASK]` a user symbol), as bytes."""
    import io

    import sentencepiece
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(TEXTS) * 4), model_writer=out,
        vocab_size=28, hard_vocab_limit=False, model_type="word",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece=pad_piece,
        unk_piece=unk_piece, bos_piece="[CLS]", eos_piece="[SEP]",
        user_defined_symbols=["[MASK]"], minloglevel=2)
    return out.getvalue()


def albert_preset(path, *, hidden_dim=16, embedding_dim=8, num_layers=2,
                  num_groups=2, num_heads=2, intermediate_dim=32,
                  max_sequence_length=32, dropout=0.1, weight_scale=0.2,
                  seed=4):
    """A tiny ALBERT preset (SentencePiece; segment ids and a pooled
    output like BERT; `num_groups` distinct shared blocks)."""
    import keras
    import keras_hub
    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.AlbertTokenizer(
        proto=_sentencepiece_proto("<pad>", "<unk>"))
    backbone = keras_hub.models.AlbertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=num_layers,
        num_heads=num_heads, num_groups=num_groups,
        num_inner_repetitions=1, embedding_dim=embedding_dim,
        hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
        dropout=dropout, max_sequence_length=max_sequence_length)
    _scale_weights(backbone, weight_scale, seed)
    return _save(path, backbone, tokenizer)


def deberta_preset(path, *, hidden_dim=16, num_layers=2, num_heads=2,
                   intermediate_dim=32, max_sequence_length=32, dropout=0.1,
                   weight_scale=0.2, seed=5):
    """A tiny DeBERTa-v3 preset (SentencePiece; relative position
    embeddings; no segment ids, no pooled output)."""
    import keras
    import keras_hub
    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.DebertaV3Tokenizer(
        proto=_sentencepiece_proto("[PAD]", "[UNK]"))
    backbone = keras_hub.models.DebertaV3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(), bucket_size=8,
        dropout=dropout, **_sizes(hidden_dim, num_layers, num_heads,
                                  intermediate_dim, max_sequence_length))
    _scale_weights(backbone, weight_scale, seed)
    return _save(path, backbone, tokenizer)


def gpt2_preset(path, *, hidden_dim=16, num_layers=2, num_heads=2,
                intermediate_dim=32, max_sequence_length=32, dropout=0.1,
                weight_scale=0.2, seed=3):
    """A tiny GPT-2 preset (BPE with `<|endoftext|>` as start, end and pad
    token): keras-hub has no text classifier preprocessor for it."""
    import keras
    import keras_hub
    keras.utils.set_random_seed(seed)
    vocab, merges = _bpe_vocabulary_and_merges(("<|endoftext|>",))
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab,
                                               merges=merges)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocab), dropout=dropout,
        **_sizes(hidden_dim, num_layers, num_heads, intermediate_dim,
                 max_sequence_length))
    _scale_weights(backbone, weight_scale, seed)
    return _save(path, backbone, tokenizer)


__all__ = ["TEXTS", "WORDPIECE_VOCAB", "WORDS", "albert_preset",
           "bert_preset", "deberta_preset", "distilbert_preset",
           "gpt2_preset", "roberta_preset"]
