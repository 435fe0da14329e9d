"""keras-hub text presets: TextPresetPreprocessor and TextPresetTower.

Every preset is a tiny random-weight one written by keras-hub's own
`save_to_preset` (tests/tiny_presets_text.py); nothing is downloaded.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import check_precision, run_layer_checks
from keras_mm.data.base_preprocessor import (deserialize_preprocessor,
                                             serialize_preprocessor)
from keras_mm.pretrained.text_preset_preprocessor import \
    TextPresetPreprocessor
from keras_mm.pretrained.text_preset_tower import TextPresetTower
from keras_mm.registry import PREPROCESSORS, PRETRAINED_TOWERS
import tiny_presets_text

MAX_LEN = 12
# Present texts (known words, unknown words, upper case, a text longer than
# MAX_LEN tokens), and absent ones (empty, white space, Unicode spaces).
TEXTS = list(tiny_presets_text.TEXTS[:4]) + [
    "The CAT ran , the dog sat on a big red mat and the film is good !",
    "zebra quux", "", "   ", "\u3000\u00a0\t", "dog"]
ABSENT = [t.strip(" \t\u3000\u00a0") == "" for t in TEXTS]


@pytest.fixture(scope="session")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_presets")
    return {name: getattr(tiny_presets_text, f"{name}_preset")(root / name)
            for name in ("bert", "distilbert", "roberta", "albert", "deberta",
                         "gpt2")}


_PREPROCESSORS = {}


def preprocessor(presets, family):
    """One preprocessor per family for the whole session (tracing
    keras-hub's byte-level BPE graph takes seconds). conftest clears the
    Keras session after every test, so the SentencePiece ones also show
    that their model resource survives it."""
    if family not in _PREPROCESSORS:
        _PREPROCESSORS[family] = TextPresetPreprocessor(
            "text", presets[family], max_len=MAX_LEN)
    return _PREPROCESSORS[family]


def backbone_of(path):
    import keras_hub
    return keras_hub.models.Backbone.from_preset(path)


def close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a, "float32"),
                               np.asarray(b, "float32"), atol=atol, rtol=0)


# -- registration and config ---------------------------------------------------


def test_registered_under_text_preset(presets):
    assert PREPROCESSORS.get("text_preset") is TextPresetPreprocessor
    assert PRETRAINED_TOWERS.get("text_preset") is TextPresetTower
    pre = preprocessor(presets, "bert")
    assert pre.modality == "text" and pre.registered_name == "text_preset"
    assert pre.batched_parse and TextPresetTower.input_dtype == "int32"
    config = pre.get_config()
    assert config == {"name": "text", "preset": presets["bert"],
                      "max_len": MAX_LEN}
    json.dumps(config)
    again = TextPresetPreprocessor.from_config(config)
    assert again.get_config() == config
    data = serialize_preprocessor(pre)
    assert data["type"] == "text_preset"
    revived = deserialize_preprocessor(json.loads(json.dumps(data)))
    assert type(revived) is TextPresetPreprocessor
    assert revived.get_config() == config
    assert pre.output_shape() == (MAX_LEN,)
    signature = pre.output_signature()
    assert signature["text"].dtype == tf.int32
    assert signature["text_mask"].dtype == tf.bool
    assert signature["text_present"].shape.as_list() == [None]
    assert pre.vocabulary_size == len(tiny_presets_text.WORDPIECE_VOCAB)
    assert pre.resources() == [pre.layer] and pre.layer.built


# -- the preprocessor -----------------------------------------------------------


def reference_batch(presets, family, texts=TEXTS):
    """keras-hub's own preprocessor for the preset, called eagerly: its
    pure-Python path (the `tokenizers` library for BPE), an implementation
    independent of the TF graph the preprocessor runs."""
    import keras_hub
    reference = keras_hub.models.TextClassifierPreprocessor.from_preset(
        presets[family], sequence_length=MAX_LEN)
    out = reference(tf.constant(texts))
    return (np.asarray(out["token_ids"]), np.asarray(out["padding_mask"]),
            reference.tokenizer)


def check_ids(pre, presets, family, pad_id):
    out = pre(tf.constant(TEXTS))
    ids, mask = out["text"].numpy(), out["text_mask"].numpy()
    present = out["text_present"].numpy()
    assert ids.dtype == np.int32 and mask.dtype == bool
    assert ids.shape == mask.shape == (len(TEXTS), MAX_LEN)
    np.testing.assert_array_equal(present, [0.0 if a else 1.0
                                            for a in ABSENT])
    ref_ids, ref_mask, tokenizer = reference_batch(presets, family)
    keep = ~np.array(ABSENT)
    np.testing.assert_array_equal(ids[keep], ref_ids[keep])
    np.testing.assert_array_equal(mask[keep], ref_mask[keep])
    # The long text is truncated: all MAX_LEN tokens real, ending on the
    # end token; the start token first in every present row.
    assert mask[4].all() and ids[4, -1] == tokenizer.end_token_id
    assert (ids[keep, 0] == tokenizer.start_token_id).all()
    # Absent texts: pad ids, mask all False (keras-hub gives start + end).
    assert pre.pad_id == pad_id == tokenizer.pad_token_id
    assert (ids[~keep] == pad_id).all() and not mask[~keep].any()
    assert ref_mask[~keep].any()


def check_parse_equals_parse_batch(pre):
    batch = pre.parse_batch(tf.constant(TEXTS))
    for i in (0, 4, 6, 7):
        one = pre.parse(tf.constant(TEXTS[i]))
        assert sorted(one) == sorted(batch)
        for key in batch:
            assert one[key].shape == batch[key].shape[1:]
            assert one[key].dtype == batch[key].dtype
            np.testing.assert_array_equal(one[key].numpy(),
                                          batch[key].numpy()[i])
    # a dict of raw values, as the pipeline gives it
    one = pre.parse({"text": tf.constant(TEXTS[1])})
    np.testing.assert_array_equal(one["text"], batch["text"][1])
    return batch


def test_bert_preprocessor_ids_parse_and_tf_data(presets):
    pre = preprocessor(presets, "bert")
    assert type(pre.layer).__name__ == "BertTextClassifierPreprocessor"
    check_ids(pre, presets, "bert", pad_id=0)
    batch = check_parse_equals_parse_batch(pre)
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(TEXTS)) \
        .batch(4).map(lambda b: pre.transform(pre.parse_batch(b)))
    piped = {k: np.concatenate([b[k].numpy() for b in dataset])
             for k in batch}
    for key in batch:
        np.testing.assert_array_equal(piped[key], batch[key].numpy())
    distil = TextPresetPreprocessor("text", presets["distilbert"],
                                    max_len=MAX_LEN)
    assert type(distil.layer).__name__ == \
        "DistilBertTextClassifierPreprocessor"
    check_ids(distil, presets, "distilbert", pad_id=0)


def test_roberta_preprocessor_byte_pair_ids_and_pad_id_1(presets):
    pre = preprocessor(presets, "roberta")
    assert type(pre.layer).__name__ == "RobertaTextClassifierPreprocessor"
    check_ids(pre, presets, "roberta", pad_id=1)
    check_parse_equals_parse_batch(pre)


def test_sentencepiece_preprocessors_albert_and_deberta(presets):
    for family, cls_name in (
            ("albert", "AlbertTextClassifierPreprocessor"),
            ("deberta", "DebertaV3TextClassifierPreprocessor")):
        pre = preprocessor(presets, family)
        assert type(pre.layer).__name__ == cls_name
        check_ids(pre, presets, family, pad_id=0)
        check_parse_equals_parse_batch(pre)


def test_sentencepiece_survives_set_random_seed_and_clear_session(presets):
    """tensorflow-text keeps a SentencePiece model in an eager kernel that
    `tf.random.set_seed` (every keras-mm run seeds) and `clear_session`
    destroy; the preprocessor's shared-name resource survives both, in
    eager calls and in a tf.data pipeline made before."""
    pre = TextPresetPreprocessor("text", presets["deberta"], max_len=MAX_LEN)
    texts = tf.constant(TEXTS[:3])
    before = pre(texts)["text"].numpy()
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(3).map(
        lambda b: pre.transform(pre.parse_batch(b)))
    keras.utils.set_random_seed(11)
    keras.backend.clear_session(free_memory=False)
    np.testing.assert_array_equal(pre(texts)["text"].numpy(), before)
    np.testing.assert_array_equal(next(iter(dataset))["text"], before)
    fresh = TextPresetPreprocessor("other", presets["deberta"],
                                   max_len=MAX_LEN)
    keras.utils.set_random_seed(12)
    np.testing.assert_array_equal(fresh(texts)["other"].numpy(), before)


def test_preset_without_a_classifier_preprocessor_gets_tokenizer_and_packer(
        presets):
    import keras_hub
    pre = preprocessor(presets, "gpt2")
    assert isinstance(pre.layer, keras_hub.models.GPT2Tokenizer)
    assert len(pre.resources()) == 2
    out = pre(tf.constant(TEXTS))
    ids, mask = out["text"].numpy(), out["text_mask"].numpy()
    tokens = pre.layer(tf.constant(TEXTS[:2]))      # Python path
    eos = pre.layer.end_token_id
    for row in range(2):
        want = [eos] + np.asarray(tokens[row]).tolist() + [eos]
        np.testing.assert_array_equal(ids[row, :len(want)], want)
        assert (ids[row, len(want):] == pre.pad_id).all()
        assert mask[row, :len(want)].all() and not mask[row, len(want):].any()
    assert (ids[6] == pre.pad_id).all() and not mask[6].any()
    check_parse_equals_parse_batch(pre)


def test_max_len_above_the_backbones_max_sequence_length_is_refused(
        presets):
    with pytest.raises(ValueError, match=r"max_len=33 exceeds the "
                       r"max_sequence_length=32 .*use max_len <= 32"):
        TextPresetPreprocessor("text", presets["bert"], max_len=33)
    pre = TextPresetPreprocessor("text", presets["distilbert"], max_len=32)
    assert pre(tf.constant(["a"]))["text"].shape == (1, 32)
    with pytest.raises(ValueError, match=r"max_len=0 must be a positive"):
        TextPresetPreprocessor("text", presets["bert"], max_len=0)


@pytest.mark.parametrize("build", [
    lambda preset: TextPresetPreprocessor("text", preset),
    lambda preset: TextPresetTower(preset=preset)],
    ids=["preprocessor", "tower"])
def test_offline_errors_are_one_line_and_name_the_preset(build, tmp_path):
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        build("bert_tiny_en_uncased")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message and "'bert_tiny_en_uncased'" in message
    assert "no network" in message and "local" in message
    empty = tmp_path / "not_a_preset"
    empty.mkdir()
    with pytest.raises(ValueError) as info:
        build(str(empty))
    message = str(info.value)
    assert "\n" not in message and repr(str(empty)) in message
    assert "config.json" in message


# -- the tower equals the backbone ----------------------------------------------


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta",
                                    "albert", "deberta"])
def test_tower_equals_the_keras_hub_backbone_called_directly(presets,
                                                             family):
    path = presets[family]
    out = preprocessor(presets, family)(tf.constant(TEXTS))
    ids, mask = out["text"], out["text_mask"]
    backbone = backbone_of(path)
    segments = "segment_ids" in backbone.input      # BERT, ALBERT
    feed = {"token_ids": ids, "padding_mask": mask}
    if segments:
        feed["segment_ids"] = tf.zeros_like(ids)
    direct = backbone(feed, training=False)
    sequence = direct["sequence_output"] if isinstance(direct, dict) \
        else direct
    sequence = sequence.numpy()
    m = mask.numpy()[:, :, None].astype("float32")
    towers = {
        "sequence": TextPresetTower(preset=path, output="sequence"),
        "cls": TextPresetTower(preset=path, pooling="cls"),
        "mean": TextPresetTower(preset=path, pooling="mean")}
    got = {k: t(ids, mask=mask, training=False).numpy()
           for k, t in towers.items()}
    close(got["sequence"], sequence * m)
    close(got["cls"], sequence[:, 0])
    mean = (sequence * m).sum(1) / np.maximum(m.sum(1), 1.0)
    close(got["mean"], mean)
    assert np.abs(got["mean"][np.array(ABSENT)]).max() == 0.0
    # Without a mask the tower uses ids != the preset's pad id (1 for
    # RoBERTa); same values on the present rows.
    keep = ~np.array(ABSENT)
    no_mask = towers["sequence"](ids, training=False).numpy()
    close(no_mask[keep], got["sequence"][keep])
    mask_out = towers["sequence"].compute_mask(ids, mask)
    np.testing.assert_array_equal(mask_out, mask)
    if segments:
        pooled = TextPresetTower(preset=path, pooling="pooled")
        close(pooled(ids, mask=mask), direct["pooled_output"])
    else:
        with pytest.raises(ValueError, match="pooling='pooled' needs a "
                           "backbone with a pooled_output"):
            TextPresetTower(preset=path, pooling="pooled")
    # Sanity: the backbone is sensitive to the mask and to segment ids, so
    # the equalities above are not vacuous.
    loose = backbone({**feed, "padding_mask": tf.ones_like(mask)},
                     training=False)
    loose = loose["sequence_output"] if isinstance(loose, dict) else loose
    assert np.abs(loose.numpy()[0, 0] - sequence[0, 0]).max() > 1e-3
    if segments:
        shifted = backbone({**feed, "segment_ids": tf.ones_like(ids)},
                           training=False)["sequence_output"].numpy()
        assert np.abs(shifted[0, 0] - sequence[0, 0]).max() > 1e-3


# -- layer contract -------------------------------------------------------------


def token_batch(presets, family="bert"):
    out = preprocessor(presets, family)(tf.constant(TEXTS[:4]))
    return out["text"].numpy(), out["text_mask"].numpy()


def test_layer_checks_vector_and_save_without_the_preset(presets, tmp_path):
    ids, mask = token_batch(presets)
    # A copy of the preset that is deleted before loading: the saved model
    # needs no preset folder.
    path = shutil.copytree(presets["bert"], tmp_path / "bert_copy")
    run_layer_checks(
        TextPresetTower, {"preset": str(path), "dim": 8, "pooling": "mean"},
        ids, call_kwargs={"mask": mask}, tmp_path=tmp_path,
        expected_output_shape=(4, 8), mixed_precision=("mixed_bfloat16",))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((MAX_LEN,), dtype="int32")
    tower = TextPresetTower(preset=str(path), dim=4)
    model = keras.Model(inputs, tower(inputs))
    before = model(ids)
    model.save(tmp_path / "m.keras")
    shutil.rmtree(path)
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    close(loaded(ids), before, atol=1e-6)
    assert loaded.layers[-1].pad_id == 0


@pytest.mark.slow
def test_layer_checks_sequence_roberta(presets, tmp_path):
    ids, mask = token_batch(presets, "roberta")
    run_layer_checks(
        TextPresetTower, {"preset": presets["roberta"], "output": "sequence"},
        ids, call_kwargs={"mask": mask}, tmp_path=tmp_path,
        expected_output_shape=(4, MAX_LEN, 16), mixed_precision=False)


@pytest.mark.parametrize("family,output", [("distilbert", "sequence")])
def test_mixed_bfloat16_backbone_sublayers_and_output(presets, family,
                                                      output):
    """Every sub-layer of the backbone computes in bfloat16 (float32
    variables), and so does the output."""
    ids, mask = token_batch(presets)
    out = check_precision(
        TextPresetTower, {"preset": presets[family], "output": output,
                          "dim": 8, "pooling": "mean"},
        ids, call_kwargs={"mask": mask}, policies=("mixed_bfloat16",))
    assert out["mixed_bfloat16"].dtype == "bfloat16"
    tower = TextPresetTower(preset=presets[family], dtype="mixed_bfloat16",
                            pooling="mean")
    assert tower.backbone.dtype_policy.name == "mixed_bfloat16"
    reference = TextPresetTower(preset=presets[family], pooling="mean")
    # bfloat16 keeps ~3 significant digits: close to float32, not equal
    close(tower(ids, mask=mask), reference(ids, mask=mask), atol=0.1)


def test_argument_errors_name_class_argument_and_value(presets):
    path = presets["bert"]
    cases = [({"output": "tokens"}, r"TextPresetTower: output='tokens'"),
             ({"pooling": "max"}, r"TextPresetTower: pooling='max'"),
             ({"dim": 0}, r"TextPresetTower: dim=0"),
             ({"dropout": 1.5}, r"TextPresetTower: dropout=1.5"),
             ({"trainable_blocks": -1}, r"trainable_blocks=-1"),
             ({"trainable_blocks": 3},
              r"trainable_blocks=3 but the BertBackbone .* has 2 "
              r"transformer blocks; use 0..2"),
             ({"lora_rank": 0}, r"TextPresetTower: lora_rank=0"),
             ({"lora_rank": 2, "trainable_blocks": 1}, r"choose one")]
    for kwargs, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            TextPresetTower(preset=path, **kwargs)
    with pytest.raises(ValueError, match="give preset="):
        TextPresetTower()
    with pytest.raises(ValueError, match="backbone must be a keras-hub"):
        TextPresetTower(backbone=keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"36 tokens exceed the "
                       r"max_sequence_length=32"):
        TextPresetTower(preset=path)(np.ones((2, 36), "int32"))


# -- fine-tuning ----------------------------------------------------------------


def snapshot(layer):
    return {w.path: np.array(w.numpy()) for w in layer.weights}


def train_steps(tower, ids, mask, steps=1, learning_rate=0.05):
    """`steps` SGD steps (eager, no graph tracing) of a model: tower ->
    Dense(1) on a fixed target, over `model.trainable_variables` as `fit`
    would."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((MAX_LEN,), dtype="int32", name="ids")
    mask_in = keras.Input((MAX_LEN,), dtype="bool", name="mask")
    x = tower(inputs, mask=mask_in)
    if len(x.shape) == 3:
        x = keras.ops.mean(x, axis=1)
    model = keras.Model([inputs, mask_in], keras.layers.Dense(1)(x))
    optimizer = keras.optimizers.SGD(learning_rate)
    y = np.linspace(-2.0, 2.0, len(ids)).astype("float32")[:, None]
    for _ in range(steps):
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            pred = model([ids, mask], training=True)
            loss = tf.reduce_mean((pred - y) ** 2)
        optimizer.apply(tape.gradient(loss, variables), variables)
    return model


def changed(before, after):
    return {p for p in before if not np.array_equal(before[p], after[p])}


def test_frozen_tower_leaves_every_weight_bitwise_unchanged(presets):
    ids, mask = token_batch(presets)
    tower = TextPresetTower(preset=presets["bert"], dim=4, trainable=False)
    before = snapshot(tower)
    model = train_steps(tower, ids, mask)
    assert tower.trainable_weights == []
    head = model.layers[-1]
    assert {id(w) for w in model.trainable_weights} == \
        {id(w) for w in head.weights}
    assert changed(before, snapshot(tower)) == set()
    assert len(before) > 30


def test_trainable_blocks_trains_the_last_blocks_and_pooler_only(presets):
    ids, mask = token_batch(presets)
    tower = TextPresetTower(preset=presets["bert"], pooling="pooled", dim=4,
                            trainable_blocks=1, name="text_tower")
    backbone = tower.backbone
    before = snapshot(backbone)
    train_steps(tower, ids, mask)
    moved = changed(before, snapshot(backbone))
    prefix = "text_tower/"
    trains = [p for p in before
              if p.startswith(prefix + "transformer_layer_1/")
              or p.startswith(prefix + "pooled_dense/")]
    assert trains and set(trains) == moved, sorted(set(trains) ^ moved)
    # every variable path is under the tower's name (lr multipliers)
    assert all(w.path.startswith("text_tower/") for w in tower.weights)
    count = sum(int(np.prod(backbone.get_layer(n).weights[i].shape))
                for n in ("transformer_layer_1", "pooled_dense")
                for i in range(len(backbone.get_layer(n).weights)))
    count += 16 * 4 + 4                                 # the projection
    trainable = sum(int(np.prod(w.shape)) for w in tower.trainable_weights)
    assert trainable == count
    # trainable_blocks=0: only the pooler (and projection) in the backbone
    zero = TextPresetTower(preset=presets["bert"], pooling="pooled",
                           trainable_blocks=0)
    names = {w.path.split("/")[1] for w in zero.trainable_weights}
    assert names == {"pooled_dense"}


def test_unused_pooler_is_frozen_and_trainable_true_reapplies(presets):
    ids, mask = token_batch(presets)
    tower = TextPresetTower(preset=presets["bert"], trainable_blocks=1)
    paths = sorted(w.path for w in tower.trainable_weights)
    assert paths and not [p for p in paths if "pooled_dense" in p]
    assert all("transformer_layer_1" in p for p in paths)
    tower.trainable = False
    assert tower.trainable_weights == []
    tower.trainable = True
    assert sorted(w.path for w in tower.trainable_weights) == paths
    full = TextPresetTower(preset=presets["bert"], pooling="cls")
    before = snapshot(full.backbone)
    train_steps(full, ids, mask)
    moved = changed(before, snapshot(full.backbone))
    assert moved and not [p for p in moved if "pooled_dense" in p]
    assert [p for p in moved if "token_embedding" in p]


def test_albert_and_deberta_blocks_and_lora(presets):
    albert = TextPresetTower(preset=presets["albert"], pooling="pooled",
                             trainable_blocks=1)
    layers = {w.path.split("/")[1] for w in albert.trainable_weights}
    assert layers == {"group_1_inner_layer_0", "pooled_dense"}
    deberta = TextPresetTower(preset=presets["deberta"], trainable_blocks=1)
    layers = {w.path.split("/")[1] for w in deberta.trainable_weights}
    assert layers == {"disentangled_attention_encoder_layer_1"}
    lora = TextPresetTower(preset=presets["deberta"], lora_rank=2)
    names = sorted(w.path.rsplit("/", 1)[-1] for w in lora.trainable_weights)
    assert names == ["lora_kernel_a"] * 4 + ["lora_kernel_b"] * 4


def test_lora_trains_only_the_adapters(presets, tmp_path):
    tower = TextPresetTower(preset=presets["roberta"], lora_rank=2,
                            pooling="mean", name="text_tower")
    backbone = tower.backbone
    adapters = [w for w in backbone.trainable_weights]
    assert adapters and all(w.path.rsplit("/", 1)[-1] in (
        "lora_kernel_a", "lora_kernel_b") for w in adapters)
    lora_layers = [layer for layer in backbone._flatten_layers()
                   if getattr(layer, "lora_enabled", False)]
    assert len(lora_layers) == 4           # 2 blocks x (query, value)
    expected = sum(int(np.prod(layer._kernel.shape[:-1])) * 2 +
                   2 * int(layer._kernel.shape[-1]) for layer in lora_layers)
    assert sum(int(np.prod(w.shape)) for w in adapters) == expected
    assert backbone.count_params() > 10 * expected
    before = snapshot(backbone)
    rids, rmask = token_batch(presets, "roberta")
    train_steps(tower, rids, rmask, steps=2)
    moved = changed(before, snapshot(backbone))
    assert moved == {w.path for w in adapters}, sorted(
        moved ^ {w.path for w in adapters})
    # frozen warm-up and back: the adapters alone again
    tower.trainable = False
    tower.trainable = True
    assert {w.path for w in backbone.trainable_weights} == \
        {w.path for w in adapters}
    # saved with LoRA: reloads (adapters merged) to the same outputs
    inputs = keras.Input((MAX_LEN,), dtype="int32")
    model = keras.Model(inputs, tower(inputs))
    expected = model(rids)
    model.save(tmp_path / "lora.keras")
    loaded = keras.saving.load_model(tmp_path / "lora.keras")
    close(loaded(rids), expected, atol=1e-5)


# -- train == serve, in a fresh TF-only process ---------------------------------


EXPORT_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    texts = json.load(open(sys.argv[2], encoding="utf-8"))
    loaded = tf.saved_model.load(sys.argv[1])
    out = loaded.serve(tf.constant(texts, tf.string))
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
    print("MODULES " + json.dumps(sorted(
        m for m in sys.modules if m.split(".")[0] in
        ("keras", "keras_hub", "keras_mm", "tf_keras"))))
""")


@pytest.mark.parametrize("families", [
    ("bert", "albert"),
    pytest.param(("roberta", "deberta"), marks=pytest.mark.slow)],
    ids=["bert+albert", "roberta+deberta"])
def test_train_equals_serve_in_tf_data_tf_function_and_fresh_savedmodel(
        presets, tmp_path, families):
    """tf.data == the tf.function serving path == the SavedModel reloaded
    by a process that imports only tensorflow and tensorflow_text (token
    ids and masks bitwise, predictions within 1e-5), for two presets in one
    export: WordPiece (BERT) and SentencePiece (ALBERT: segment ids); the
    slow case byte-level BPE (RoBERTa: lookup tables and a cache, pad id 1)
    and DeBERTa-v3. The preset folders (copies) are deleted before the
    fresh process loads the export: it stands alone."""
    copies = {family: os.fspath(shutil.copytree(
        presets[family], tmp_path / "presets" / family))
        for family in families}
    pres = {family: TextPresetPreprocessor("text", copies[family],
                                           max_len=MAX_LEN)
            for family in families}
    keras.utils.set_random_seed(3)
    inputs, vectors = [], []
    for family in pres:
        ids = keras.Input((MAX_LEN,), dtype="int32", name=f"{family}_ids")
        mask = keras.Input((MAX_LEN,), dtype="bool", name=f"{family}_mask")
        tower = TextPresetTower(preset=copies[family], dim=4,
                                pooling="mean", name=f"{family}_tower")
        inputs += [ids, mask]
        vectors.append(tower(ids, mask=mask))
    joined = vectors[0] if len(vectors) == 1 else \
        keras.layers.Concatenate()(vectors)
    model = keras.Model(inputs, keras.layers.Dense(2)(joined))

    def features(batches):
        return [t for family in pres for t in (
            batches[family]["text"], batches[family]["text_mask"])]

    # Training path: batched rows, one map of transform(parse_batch(.)).
    train = {}
    for family, pre in pres.items():
        dataset = tf.data.Dataset.from_tensor_slices(tf.constant(TEXTS)) \
            .batch(3).map(lambda b, pre=pre: pre.transform(
                pre.parse_batch(b)))
        train[family] = {k: np.concatenate([b[k].numpy() for b in dataset])
                         for k in ("text", "text_mask", "text_present")}
    in_process = model(features(train), training=False)

    def serve(raw):
        out, batches = {}, {}
        for family, pre in pres.items():
            batches[family] = pre(raw)
            out[f"{family}_ids"] = batches[family]["text"]
            out[f"{family}_mask"] = batches[family]["text_mask"]
            out[f"{family}_present"] = batches[family]["text_present"]
        out["pred"] = model(features(batches), training=False)
        return out

    def check(result):
        for family in pres:
            for key, name in (("ids", "text"), ("mask", "text_mask"),
                              ("present", "text_present")):
                np.testing.assert_array_equal(
                    np.asarray(result[f"{family}_{key}"]),
                    train[family][name])
        close(result["pred"], in_process)

    serving = tf.function(serve,
                          input_signature=[tf.TensorSpec([None], tf.string)])
    check(serving(tf.constant(TEXTS)))
    archive = keras.export.ExportArchive()
    archive.track(model)
    for pre in pres.values():
        for resource in pre.resources():
            archive.track(resource)
    archive.add_endpoint("serve", serving)      # the function traced above
    export = str(tmp_path / "export")
    archive.write_out(export, verbose=False)
    shutil.rmtree(tmp_path / "presets")
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(TEXTS), encoding="utf-8")
    result = tmp_path / "out.npz"
    proc = subprocess.run(
        [sys.executable, "-c", EXPORT_SCRIPT, export, str(texts),
         str(result)], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = json.loads(proc.stdout.split("MODULES ")[-1])
    assert not [m for m in modules if m.split(".")[0] in
                ("keras_hub", "keras_mm")], modules
    check(dict(np.load(result)))
