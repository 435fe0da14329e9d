"""Preprocessor tests: decoders against files written by independent tools
(Pillow, `wave`, csv, NumPy), adapt on the training split only, and the
training (tf.data) path equal to the serving (tf.function + map_fn) path."""

import csv
import io
import json
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from media_files import wav_bytes

from keras_mm.data import AudioPreprocessor
from keras_mm.data import ImagePreprocessor
from keras_mm.data import SensorPreprocessor
from keras_mm.data import TabularPreprocessor
from keras_mm.data import TextPreprocessor
from keras_mm.data import VideoPreprocessor
from keras_mm.data import decode_csv_bytes
from keras_mm.data import decode_npy_bytes
from keras_mm.data import deserialize_preprocessor
from keras_mm.data import read_ts
from keras_mm.data import serialize_preprocessor
from keras_mm.ops import audio_features
from keras_mm.registry import PREPROCESSORS

RNG = np.random.default_rng(0)


# -- helpers -----------------------------------------------------------------

def image_bytes(array, fmt, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def pil_pixels(data, mode):
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def tf_data_path(pre, raws, batch_size=2, training=False):
    """Training path: parse per example in tf.data, batch, transform."""
    ds = tf.data.Dataset.from_tensor_slices(raws)
    ds = ds.map(lambda raw: pre.parse(raw, training=training))
    ds = ds.batch(batch_size)
    ds = ds.map(lambda batch: pre.transform(batch, training=training))
    parts = list(ds.as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def serving_path(pre, raws):
    """Serving path: pre(raw) in a tf.function over the raw signature."""
    signature = pre.raw_signature()
    if not isinstance(raws, dict):
        raws = {next(iter(signature)): raws}
    fn = tf.function(lambda raw: pre(raw), input_signature=[signature])
    out = fn({k: tf.constant(raws[k], dtype=signature[k].dtype)
              for k in signature})
    return {k: v.numpy() for k, v in out.items()}


def assert_same_outputs(a, b, atol=0.0):
    assert sorted(a) == sorted(b)
    for key in a:
        if atol:
            np.testing.assert_allclose(a[key], b[key], atol=atol, rtol=0,
                                       err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def round_trip(pre):
    data = json.loads(json.dumps(serialize_preprocessor(pre)))
    clone = deserialize_preprocessor(data)
    assert type(clone) is type(pre)
    assert clone.get_config() == pre.get_config()
    return clone


def test_registry_has_the_six_modalities():
    assert PREPROCESSORS.get("image") is ImagePreprocessor
    assert PREPROCESSORS.get("text") is TextPreprocessor
    assert PREPROCESSORS.get("audio") is AudioPreprocessor
    assert PREPROCESSORS.get("video") is VideoPreprocessor
    assert PREPROCESSORS.get("sensor") is SensorPreprocessor
    assert PREPROCESSORS.get("tabular") is TabularPreprocessor


# -- image -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF", "JPEG"])
def test_image_decoding_matches_pillow(fmt):
    rgb = RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    data = image_bytes(rgb, fmt)
    pre = ImagePreprocessor("img", size=(6, 9), channels=3, scale=1.0)
    out = pre.parse(tf.constant(data))
    expected = pil_pixels(data, "RGB").astype(np.float32)
    # JPEG: TF decodes with the accurate integer DCT, like Pillow's libjpeg;
    # allow 2 levels for libjpeg version differences. Others: exact.
    tolerance = 2.0 if fmt == "JPEG" else 0.0
    np.testing.assert_allclose(out["img"].numpy(), expected, atol=tolerance,
                               rtol=0)
    assert out["img_present"].numpy() == 1.0


def test_image_channel_conversions_match_pillow():
    gray = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgb = rgba[..., :3].copy()
    to_gray = ImagePreprocessor("g", size=(5, 7), channels=1, scale=1.0)
    to_rgb = ImagePreprocessor("c", size=(5, 7), channels=3, scale=1.0)
    for fmt in ("PNG", "BMP"):  # grayscale files stay exact
        data = image_bytes(gray, fmt)
        np.testing.assert_array_equal(
            to_gray.parse(data)["g"].numpy()[..., 0], gray)
        np.testing.assert_array_equal(to_rgb.parse(data)["c"].numpy(),
                                      pil_pixels(data, "RGB"))
    data = image_bytes(rgba, "PNG")  # RGBA -> RGB drops alpha, like Pillow
    np.testing.assert_array_equal(to_rgb.parse(data)["c"].numpy(), rgb)
    # RGB -> gray: Pillow's ITU-R 601-2 weights; Pillow rounds to integers.
    data = image_bytes(rgb, "PNG")
    np.testing.assert_allclose(to_gray.parse(data)["g"].numpy()[..., 0],
                               pil_pixels(data, "L"), atol=0.51, rtol=0)


def test_image_animated_gif_gives_first_frame():
    frames = [Image.fromarray(np.full((4, 6, 3), v, np.uint8))
              for v in (10, 200, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True,
                   append_images=frames[1:])
    pre = ImagePreprocessor("img", size=(4, 6), scale=1.0)
    out = pre.parse(buffer.getvalue())["img"].numpy()
    np.testing.assert_array_equal(out, pil_pixels(buffer.getvalue(), "RGB"))


def test_image_resize_pad_normalize_and_empty():
    data = image_bytes(np.full((4, 8, 3), 102, np.uint8), "PNG")
    pre = ImagePreprocessor("img", size=(8, 8), preserve_aspect=True,
                            mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 2.0])
    out = pre(tf.constant([data, b""]))
    x = out["img"].numpy()
    expected = (102 / 255 - np.array([0.1, 0.2, 0.3])) / [0.5, 0.5, 2.0]
    np.testing.assert_allclose(x[0, 2:6], np.broadcast_to(expected, (4, 8, 3)),
                               atol=1e-6)
    # Padding rows are zero pixels, then normalized like any pixel.
    np.testing.assert_allclose(x[0, :2], np.broadcast_to(
        -np.array([0.1, 0.2, 0.3]) / [0.5, 0.5, 2.0], (2, 8, 3)), atol=1e-6)
    # Empty bytes: absent modality, all zeros.
    np.testing.assert_array_equal(x[1], 0.0)
    np.testing.assert_array_equal(out["img_present"].numpy(), [1.0, 0.0])
    assert out["img"].dtype == tf.float32


def test_image_undecodable_bytes_raise():
    pre = ImagePreprocessor("img", size=(4, 4))
    with pytest.raises(tf.errors.InvalidArgumentError):
        pre.parse(tf.constant(b"this is not an image"))


def test_image_augmentation_only_in_training():
    tf.random.set_seed(1)
    ramp = np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1))
    raws = [image_bytes(np.stack([ramp] * 3, -1), "PNG")] * 4
    pre = ImagePreprocessor("img", size=(8, 8), random_crop=0.75,
                            random_flip=True, random_brightness=0.2)
    evaluation = [pre(tf.constant(raws))["img"].numpy() for _ in range(2)]
    np.testing.assert_array_equal(evaluation[0], evaluation[1])
    np.testing.assert_allclose(evaluation[0][0, :, :, 0],
                               ramp.astype(np.float32) / 255, atol=1e-6)
    trained = pre(tf.constant(raws), training=True)["img"].numpy()
    assert trained.shape == evaluation[0].shape
    assert not np.allclose(trained, evaluation[0], atol=1e-3)


def test_image_training_equals_serving_bitwise():
    raws = [image_bytes(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8), f)
            for h, w, f in ((10, 7, "PNG"), (5, 5, "JPEG"), (9, 12, "BMP"),
                            (6, 6, "GIF"))] + [b""]
    pre = ImagePreprocessor("img", size=(8, 6), preserve_aspect=True,
                            mean=0.5, std=0.25)
    train = tf_data_path(pre, raws)
    assert_same_outputs(train, serving_path(pre, raws))
    assert_same_outputs(train, serving_path(round_trip(pre), raws))


def test_outputs_stay_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    data = image_bytes(np.zeros((3, 3, 3), np.uint8), "PNG")
    out = ImagePreprocessor("img", size=(3, 3))(tf.constant([data]))
    assert out["img"].dtype == tf.float32
    wav = AudioPreprocessor("a", sample_rate=8000, duration=0.1,
                            features="log_mel", frame_length=64,
                            frame_step=32)(tf.constant([wav_bytes([1] * 8)]))
    assert wav["a"].dtype == tf.float32


# -- text --------------------------------------------------------------------

TRAIN_TEXTS = ["The apple and the banana.", "An APPLE a day!",
               "banana bread and apple pie", "the Ａｐｐｌｅ ﬁeld"] * 3
OTHER_TEXTS = ["zebra zebra quokka", "the zebra ate a quokka"] * 5


def adapted_text(**kwargs):
    pre = TextPreprocessor("txt", learn_params={"lower_thresh": 1},
                           max_vocab_size=200, **kwargs)
    return pre.adapt(tf.data.Dataset.from_tensor_slices(TRAIN_TEXTS))


def test_text_normalization_nfkc_and_lowercase():
    pre = TextPreprocessor("txt", vocab=["[PAD]", "[UNK]", "hello"])
    out = pre.normalize(
        tf.constant(["Ｈｅｌｌｏ ＷＯＲＬＤ", "ﬁne Café"]))
    assert [t.decode() for t in out.numpy()] == ["hello world", "fine café"]


def test_text_vocab_learned_only_from_adapt_data():
    pre = adapted_text()
    vocab = pre.vocab
    assert vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert pre.vocab_size == len(vocab)
    for word in ("apple", "banana", "field"):  # "Ａｐｐｌｅ" -> "apple"
        assert word in vocab
    assert "zebra" not in vocab and "quokka" not in vocab
    # Adapting on other data gives another vocabulary.
    other = TextPreprocessor("txt", learn_params={"lower_thresh": 1},
                             max_vocab_size=200)
    other.adapt(OTHER_TEXTS)  # a plain list works too
    assert "zebra" in other.vocab and "apple" not in other.vocab


def test_text_padding_truncation_and_empty():
    pre = adapted_text(max_len=4)
    ids = {t: i for i, t in enumerate(pre.vocab)}
    out = pre(tf.constant(["Apple banana", "apple banana apple banana apple",
                           "", "   "]))
    np.testing.assert_array_equal(out["txt"].numpy(), [
        [ids["apple"], ids["banana"], 0, 0],
        [ids["apple"], ids["banana"], ids["apple"], ids["banana"]],
        [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out["txt_present"].numpy(), [1, 1, 0, 0])
    assert out["txt"].dtype == tf.int32
    tokens = pre.detokenize(out["txt"][:1]).to_list()
    assert tokens == [[b"apple", b"banana"]]


def test_text_vocab_file_and_unknown_words(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\nhello\nworld\n##s\n!\n", encoding="utf-8")
    pre = TextPreprocessor("txt", vocab_file=str(path), max_len=6)
    out = pre.parse(tf.constant("Hello worlds! zzz"))
    np.testing.assert_array_equal(out["txt"].numpy(), [2, 3, 4, 5, 1, 0])
    clone = round_trip(pre)
    assert clone.get_config()["vocab"][2] == "hello"
    with pytest.raises(ValueError, match=r"\[PAD\]"):
        TextPreprocessor("txt", vocab=["hello", "[UNK]"])
    with pytest.raises(ValueError, match="adapt on a non-empty"):
        TextPreprocessor("txt").adapt(["", "  "])


def test_text_training_equals_serving_bitwise():
    pre = adapted_text(max_len=8)
    raws = TRAIN_TEXTS[:4] + OTHER_TEXTS[:2] + [""]
    train = tf_data_path(pre, raws, batch_size=3)
    assert_same_outputs(train, serving_path(pre, raws))
    assert_same_outputs(train, serving_path(round_trip(pre), raws))


def test_not_adapted_raises_clear_error():
    with pytest.raises(ValueError, match="adapt"):
        TextPreprocessor("txt").parse(tf.constant("hi"))


# -- audio -------------------------------------------------------------------

def test_audio_wav_decodes_to_exact_samples():
    samples = RNG.integers(-32768, 32768, 800)
    pre = AudioPreprocessor("a", sample_rate=8000, duration=0.1)
    out = pre.parse(tf.constant(wav_bytes(samples)))
    np.testing.assert_array_equal(out["a"].numpy(),
                                  samples.astype(np.float32) / 32768)
    assert out["a_present"].numpy() == 1.0


def test_audio_stereo_becomes_mono_mean():
    samples = RNG.integers(-32768, 32768, (400, 2))
    pre = AudioPreprocessor("a", sample_rate=8000, duration=0.05)
    out = pre.parse(wav_bytes(samples))["a"].numpy()
    scaled = samples.astype(np.float32) / np.float32(32768)
    np.testing.assert_allclose(out, (scaled[:, 0] + scaled[:, 1]) / 2,
                               atol=1e-7, rtol=0)


def test_audio_wrong_sample_rate_is_rejected_naming_both_rates():
    pre = AudioPreprocessor("a", sample_rate=8000, duration=0.1)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        pre.parse(wav_bytes(np.zeros(1600), rate=16000))
    assert "16000" in str(error.value) and "8000" in str(error.value)
    fn = tf.function(lambda raw: pre(raw),
                     input_signature=[pre.raw_signature()])
    with pytest.raises(tf.errors.InvalidArgumentError, match="16000"):
        fn({"a": tf.constant([wav_bytes(np.zeros(1600), rate=16000)])})


def test_audio_non_pcm16_and_truncated_wav_raise():
    pre = AudioPreprocessor("a", sample_rate=8000, duration=0.1)
    for sampwidth in (1, 4):  # 8-bit and 32-bit PCM
        with pytest.raises(tf.errors.InvalidArgumentError, match="16-bit"):
            pre.parse(wav_bytes(np.ones(100), sampwidth=sampwidth))
    good = wav_bytes(np.ones(100))
    for cut in (len(good) - 3, 30):
        with pytest.raises(tf.errors.InvalidArgumentError):
            pre.parse(good[:cut])


def test_audio_crop_and_pad():
    samples = np.arange(1000) * 20 - 10000
    scaled = samples.astype(np.float32) / 32768
    data = wav_bytes(samples)
    center = AudioPreprocessor("a", sample_rate=8000, duration=0.05)
    np.testing.assert_array_equal(center.parse(data)["a"].numpy(),
                                  scaled[300:700])
    start = AudioPreprocessor("a", sample_rate=8000, duration=0.05,
                              crop="start")
    np.testing.assert_array_equal(start.parse(data)["a"].numpy(),
                                  scaled[:400])
    long = AudioPreprocessor("a", sample_rate=8000, duration=0.2)
    padded = long.parse(data)["a"].numpy()
    np.testing.assert_array_equal(padded[:1000], scaled)
    np.testing.assert_array_equal(padded[1000:], 0.0)
    # Training: a random contiguous window of the clip.
    offsets = set()
    for _ in range(5):
        window = center.parse(data, training=True)["a"].numpy()
        offset = int(np.argmin(np.abs(scaled - window[0])))
        np.testing.assert_array_equal(window, scaled[offset:offset + 400])
        offsets.add(offset)
    assert len(offsets) > 1


def with_list_chunk(wav):
    """`wav` with a LIST chunk between `fmt ` and `data` (decode_wav reads
    it; it is not the canonical 44-byte layout)."""
    info = b"INFOISFT\x06\x00\x00\x00keras\x00"
    chunk = b"LIST" + len(info).to_bytes(4, "little") + info
    body = wav[12:36] + chunk + wav[36:]
    return b"RIFF" + (len(body) + 4).to_bytes(4, "little") + b"WAVE" + body


def test_canonical_wav_accepts_only_the_plain_44_byte_layout():
    from keras_mm.data.audio_preprocessor import canonical_wav
    good = wav_bytes(RNG.integers(-32768, 32768, 300))
    cases = {
        "wave module, mono 16-bit": (good, True),
        "empty": (b"", False),
        "stereo": (wav_bytes(np.zeros((300, 2))), False),
        "other rate": (wav_bytes(np.zeros(300), rate=16000), False),
        "8-bit": (wav_bytes(np.zeros(300), sampwidth=1), False),
        "truncated": (good[:-2], False),
        "trailing byte": (good + b"\x00", False),
        "LIST chunk": (with_list_chunk(good), False),
        "header only": (wav_bytes(np.zeros(0, int)), True),
    }
    found = canonical_wav(tf.constant([c[0] for c in cases.values()]), 8000)
    assert dict(zip(cases, found.numpy().tolist())) == {
        k: v[1] for k, v in cases.items()}


@pytest.mark.parametrize("crop,duration,training", [
    ("center", 0.1, False), ("start", 0.1, False), ("center", 0.02, False),
    ("start", 0.02, False), ("center", 0.05, True)])
def test_audio_parse_batch_equals_parse_bitwise(crop, duration, training):
    pre = AudioPreprocessor("a", sample_rate=8000, duration=duration,
                            crop=crop)
    canonical = [wav_bytes(RNG.integers(-32768, 32768, n))
                 for n in (800, 500, 1200, 0)] + [b""]
    other = [with_list_chunk(canonical[0]),
             wav_bytes(RNG.integers(-32768, 32768, (700, 2)))]
    seeds = tf.constant([[7, i] for i in range(len(canonical) + 2)])
    for raws in (canonical, canonical + other):  # batched / per example
        kwargs = {"seeds": seeds[:len(raws)]} if training else {}
        batch = pre.parse_batch(tf.constant(raws), training=training,
                                **kwargs)
        for i, raw in enumerate(raws):
            one = pre.parse(tf.constant(raw), training=training,
                            seed=seeds[i] if training else None)
            np.testing.assert_array_equal(batch["a"][i], one["a"])
            assert batch["a_present"][i] == one["a_present"]
    # The first batch took the batched path (all canonical or empty).
    from keras_mm.data.audio_preprocessor import canonical_wav
    assert canonical_wav(tf.constant(canonical[:4]), 8000).numpy().all()
    if training:   # the seeds choose the windows: other seeds, other crops
        again = pre.parse_batch(tf.constant(canonical[:3]), training=True,
                                seeds=seeds[:3] + 1)
        assert not np.array_equal(again["a"], batch["a"][:3])


def test_audio_parse_batch_raises_for_bad_files_in_a_batch():
    pre = AudioPreprocessor("a", sample_rate=8000, duration=0.1)
    good = wav_bytes(np.ones(100))
    for bad, match in ((good[:-3], "too short"),
                       (wav_bytes(np.ones(9), rate=16000), "16000")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            pre.parse_batch(tf.constant([good, bad]))


@pytest.mark.parametrize("features", ["log_mel", "mfcc"])
def test_audio_features_training_equals_serving(features):
    raws = [wav_bytes(RNG.integers(-20000, 20000, n))
            for n in (800, 500, 1200)] + [b""]
    pre = AudioPreprocessor("a", sample_rate=8000, duration=0.1,
                            features=features, frame_length=128,
                            frame_step=64, num_mel_bins=20, num_mfcc=8)
    train = tf_data_path(pre, raws)
    serve = serving_path(pre, raws)
    assert_same_outputs(train, serve, atol=1e-5)
    assert_same_outputs(train, serving_path(round_trip(pre), raws),
                        atol=1e-5)
    bins = 20 if features == "log_mel" else 8
    assert train["a"].shape == (4, pre.num_frames, bins)
    assert pre.output_shape() == (pre.num_frames, bins)
    np.testing.assert_array_equal(train["a"][3], 0.0)
    np.testing.assert_array_equal(train["a_present"], [1, 1, 1, 0])
    # The features are keras_mm.ops.audio_features of the decoded waveform.
    wave_pre = AudioPreprocessor("a", sample_rate=8000, duration=0.1)
    waveform = wave_pre.parse(raws[0])["a"][None]
    expected = audio_features.log_mel_spectrogram(
        waveform, 8000, frame_length=128, frame_step=64, num_mel_bins=20)
    if features == "mfcc":
        expected = audio_features.mfcc(expected, 8)
    np.testing.assert_allclose(train["a"][0], expected[0], atol=1e-5)


def test_audio_reads_real_fsdd_recording(shared_data):
    path = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[0]
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    pre = AudioPreprocessor("a", sample_rate=rate,
                            duration=len(samples) / rate)
    out = pre.parse(tf.io.read_file(str(path)))["a"].numpy()
    np.testing.assert_array_equal(out, samples.astype(np.float32) / 32768)


# -- video -------------------------------------------------------------------

def constant_frames(values, shape=(4, 6)):
    return [image_bytes(np.full((*shape, 3), v, np.uint8), "PNG")
            for v in values]


def test_video_short_clip_is_padded_and_masked():
    pre = VideoPreprocessor("clip", num_frames=5, size=(4, 6), scale=1.0)
    out = pre(tf.constant([constant_frames([10, 20, 30]) + [b""]]))
    np.testing.assert_array_equal(out["clip_mask"].numpy(),
                                  [[True, True, True, False, False]])
    np.testing.assert_array_equal(out["clip"].numpy()[0, :, 0, 0, 0],
                                  [10, 20, 30, 0, 0])
    assert out["clip"].shape == (1, 5, 4, 6, 3)


def test_video_long_clip_is_sampled_uniformly():
    pre = VideoPreprocessor("clip", num_frames=4, size=(2, 3), scale=1.0)
    frames = constant_frames([10 * i for i in range(10)])
    out = pre.parse(tf.constant(frames))
    # indices floor((i + 0.5) * 10 / 4) = 1, 3, 6, 8
    np.testing.assert_array_equal(out["clip"].numpy()[:, 0, 0, 0],
                                  [10, 30, 60, 80])
    assert out["clip_mask"].numpy().all()


def test_video_gif_source():
    frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8))
              for v in (0, 40, 80, 120, 160, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True,
                   append_images=frames[1:])
    expected = []
    gif = Image.open(io.BytesIO(buffer.getvalue()))
    for k in range(gif.n_frames):
        gif.seek(k)
        expected.append(np.asarray(gif.convert("RGB"))[0, 0, 0])
    pre = VideoPreprocessor("clip", num_frames=3, size=(4, 4), source="gif",
                            scale=1.0)
    raws = [buffer.getvalue(), b""]
    out = serving_path(pre, raws)
    np.testing.assert_array_equal(out["clip"][0, :, 0, 0, 0],
                                  [expected[1], expected[3], expected[5]])
    np.testing.assert_array_equal(out["clip_present"], [1, 0])
    np.testing.assert_array_equal(out["clip_mask"][1], False)
    assert_same_outputs(tf_data_path(pre, raws), out)


def test_video_training_equals_serving_bitwise():
    frames = [image_bytes(RNG.integers(0, 256, (8, 10, 3), dtype=np.uint8),
                          "JPEG") for _ in range(6)]
    raws = [frames[:6], frames[:2] + [b""] * 4, [b""] * 6]
    pre = VideoPreprocessor("clip", num_frames=4, size=(6, 6), mean=0.5,
                            std=0.2)
    train = tf_data_path(pre, raws)
    assert_same_outputs(train, serving_path(pre, raws))
    assert_same_outputs(train, serving_path(round_trip(pre), raws))
    np.testing.assert_array_equal(train["clip_present"], [1, 1, 0])
    np.testing.assert_array_equal(train["clip"][1, 2:], 0.0)


# -- sensor files -------------------------------------------------------------

def test_csv_written_by_csv_module_parses_exactly(tmp_path):
    values = RNG.normal(size=(7, 3)).astype(np.float32)
    rows = [[repr(float(v)) for v in row] for row in values]
    rows[2][1] = ""  # a missing value
    path = tmp_path / "series.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ax", "ay", "az"])
        writer.writerows(rows)
    expected = values.copy()
    expected[2, 1] = np.nan
    contents = tf.io.read_file(str(path))
    for header in ("auto", True):
        np.testing.assert_array_equal(
            decode_csv_bytes(contents, 3, header=header).numpy(), expected)
    no_header = "\n".join(",".join(r) for r in rows) + "\n"
    np.testing.assert_array_equal(
        decode_csv_bytes(tf.constant(no_header), 3).numpy(), expected)
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_csv_bytes(contents, 2).numpy()


@pytest.mark.parametrize("dtype", ["<f4", "<f8", ">f4", "<i2", "|u1"])
def test_npy_written_by_numpy_parses_exactly(dtype):
    values = (RNG.normal(size=(9, 4)) * 50).astype(dtype)
    out = decode_npy_bytes(tf.constant(npy_bytes(values))).numpy()
    np.testing.assert_array_equal(out, values.astype(np.float32))


def test_npy_layouts_and_errors():
    values = RNG.normal(size=(5, 3)).astype(np.float32)
    fortran = np.asfortranarray(values)
    np.testing.assert_array_equal(
        decode_npy_bytes(npy_bytes(fortran)).numpy(), values)
    np.testing.assert_array_equal(
        decode_npy_bytes(npy_bytes(values[:, 0])).numpy(), values[:, :1])
    data = npy_bytes(values)
    with pytest.raises(tf.errors.InvalidArgumentError, match="truncated"):
        decode_npy_bytes(data[:-4]).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="npy"):
        decode_npy_bytes(b"x,y\n1,2\n").numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="supported"):
        decode_npy_bytes(npy_bytes(np.zeros((2, 2, 2), np.float32))).numpy()


def test_read_ts_basicmotions_through_the_sensor_preprocessor(shared_data):
    folder = shared_data / "basicmotions"
    splits = {}
    for split in ("TRAIN", "TEST"):
        data = read_ts(str(folder / f"BasicMotions_{split}.ts"))
        series = data.to_numpy()  # [N, T, C]
        assert np.transpose(series, (0, 2, 1)).shape == (40, 6, 100)
        assert data.class_labels == ["Standing", "Running", "Walking",
                                     "Badminton"]
        assert sorted(set(data.labels)) == sorted(data.class_labels)
        splits[split] = series
    assert splits["TRAIN"][0, 0, 0] == pytest.approx(0.079106)
    pre = SensorPreprocessor("imu", channels=6, length=100)
    pre.adapt(list(splits["TRAIN"]))
    np.testing.assert_allclose(pre.mean,
                               splits["TRAIN"].reshape(-1, 6).mean(0),
                               rtol=1e-5)
    out = pre(tf.constant(splits["TEST"]))
    assert out["imu"].shape == (40, 100, 6)
    assert out["imu_mask"].numpy().all()


# -- sensor preprocessor ------------------------------------------------------

def test_sensor_adapt_uses_only_the_adapt_split():
    split_a = [RNG.normal(1.0, 2.0, (30, 2)) for _ in range(4)]
    split_b = [RNG.normal(9.0, 1.0, (30, 2)) for _ in range(4)]
    split_a[0][3, 1] = np.nan  # NaN is ignored by the statistics
    pre = SensorPreprocessor("imu", channels=2, length=30)
    pre.adapt(split_a)
    # The raw series are float32 (the raw signature's dtype).
    a = np.concatenate(split_a).astype(np.float32).astype(np.float64)
    both = np.concatenate(split_a + split_b)
    np.testing.assert_allclose(pre.mean, np.nanmean(a, axis=0), rtol=1e-12)
    np.testing.assert_allclose(pre.std, np.nanstd(a, axis=0), rtol=1e-10)
    assert not np.allclose(pre.mean, np.nanmean(both, axis=0), atol=1.0)


def test_sensor_nan_mask_padding_and_all_nan():
    pre = SensorPreprocessor("imu", channels=2, length=5, mean=[1.0, 2.0],
                             std=[2.0, 4.0])
    series = np.array([[3, 6], [np.nan, 2], [5, 10]], np.float32)
    all_nan = np.full((3, 2), np.nan, np.float32)
    out = pre(tf.constant(np.stack([series, all_nan])))
    np.testing.assert_array_equal(out["imu"].numpy()[0], [
        [1, 1], [0, 0], [2, 2], [0, 0], [0, 0]])
    np.testing.assert_array_equal(out["imu_mask"].numpy(), [
        [True, False, True, False, False], [False] * 5])
    np.testing.assert_array_equal(out["imu_present"].numpy(), [1, 0])
    np.testing.assert_array_equal(out["imu"].numpy()[1], 0.0)


def test_sensor_crop_modes():
    series = np.arange(20, dtype=np.float32).reshape(10, 2)
    start = SensorPreprocessor("s", channels=2, length=4, normalize=False)
    center = SensorPreprocessor("s", channels=2, length=4, crop="center",
                                normalize=False)
    np.testing.assert_array_equal(start.parse(series)["s"], series[:4])
    np.testing.assert_array_equal(center.parse(series)["s"], series[3:7])
    windows = {int(start.parse(series, training=True)["s"][0, 0])
               for _ in range(8)}
    assert len(windows) > 1 and windows <= set(range(0, 14, 2))


@pytest.mark.parametrize("source", ["csv", "npy"])
def test_sensor_file_sources_training_equals_serving(source):
    series = [RNG.normal(size=(n, 3)).astype(np.float32) for n in (6, 9, 4)]
    if source == "csv":
        raws = ["a,b,c\n" + "\n".join(",".join(repr(float(v)) for v in row)
                                      for row in s) for s in series]
    else:
        raws = [npy_bytes(s) for s in series]
    pre = SensorPreprocessor("imu", channels=3, length=8, source=source)
    pre.adapt(raws)
    np.testing.assert_allclose(pre.mean,
                               np.concatenate(series).mean(0), atol=1e-6)
    train = tf_data_path(pre, raws)
    assert_same_outputs(train, serving_path(pre, raws))
    assert_same_outputs(train, serving_path(round_trip(pre), raws))
    expected = (series[0] - np.float32(pre.mean)) / np.float32(pre.std)
    np.testing.assert_allclose(train["imu"][0, :6], expected, atol=1e-6)
    np.testing.assert_array_equal(train["imu_mask"][0],
                                  [True] * 6 + [False] * 2)


# -- tabular ------------------------------------------------------------------

def tabular_rows(ages, cities):
    return [{"age": a, "city": c, "unused": "x"} for a, c in zip(ages, cities)]


def test_tabular_adapt_only_on_adapt_split():
    split_a = tabular_rows([20.0, 30.0, np.nan, 40.0],
                           ["oslo", "rome", "oslo", ""])
    split_b = tabular_rows([90.0, 80.0], ["lima", "lima"])
    pre = TabularPreprocessor("tab", numeric=["age"], categorical=["city"])
    pre.adapt(split_a)
    assert pre.mean == [30.0]
    assert pre.variance == pytest.approx([200.0 / 3])
    assert pre.mean != [np.nanmean([20, 30, 40, 90, 80])]
    assert pre.vocabularies == [["oslo", "rome"]]
    assert pre.cardinalities == [3]
    out = pre({"age": tf.constant([30.0, np.nan, 50.0]),
               "city": tf.constant(["rome", "lima", ""])})
    np.testing.assert_allclose(out["tab_numeric"].numpy()[:, 0],
                               [0.0, 0.0, 20 / np.sqrt(200 / 3)], rtol=1e-6)
    np.testing.assert_array_equal(out["tab_categorical"].numpy(),
                                  [[2], [0], [0]])
    np.testing.assert_array_equal(out["tab_present"].numpy(), [1, 1, 1])
    assert len(pre.resources()) == 1
    # Adapting on both splits would have shown in the statistics.
    leaked = TabularPreprocessor("tab", numeric=["age"],
                                 categorical=["city"])
    leaked.adapt(split_a + split_b)
    assert leaked.mean != pre.mean
    assert "lima" in leaked.vocabularies[0]


def test_tabular_training_equals_serving_and_round_trip():
    rows = tabular_rows([1.0, 2.0, np.nan, 4.0, 5.0],
                        ["a", "b", "a", "", "c"])
    for row, n in zip(rows, [3, 1, 2, 2, np.nan]):
        row["n"] = n
    pre = TabularPreprocessor("tab", numeric=["age", "n"],
                              categorical=["city"], missing_indicators=True,
                              max_tokens=2)
    pre.adapt(rows)
    assert pre.vocabularies == [["a", "b"]] and pre.num_numeric == 4
    raws = {k: [r[k] for r in rows] for k in ("age", "n", "city")}
    raws["age"][3] = np.nan
    raws["n"][3] = np.nan
    train = tf_data_path(pre, raws)
    assert_same_outputs(train, serving_path(pre, raws))
    assert_same_outputs(train, serving_path(round_trip(pre), raws))
    np.testing.assert_array_equal(train["tab_categorical"][:, 0],
                                  [1, 2, 1, 0, 0])
    np.testing.assert_array_equal(train["tab_numeric"][:, 2:], [
        [0, 0], [0, 0], [1, 0], [1, 1], [0, 1]])
    # Row 3 has no numeric value and an empty category: absent.
    np.testing.assert_array_equal(train["tab_present"], [1, 1, 1, 0, 1])


@pytest.mark.parametrize("shape", [(5, 5), (10, 7), (9, 12), (20, 50)])
def test_image_preserve_aspect_matches_resize_with_pad(shape):
    # Eager tf.image.resize_with_pad is the reference geometry; ours gives
    # the same values eagerly and inside a tf.function (where TF's own op
    # can floor 6 * (1 - ulp) to 5 and skip the resize).
    image = tf.constant(RNG.uniform(0, 255, (*shape, 3)), tf.float32)
    expected = tf.image.resize_with_pad(image, 8, 6).numpy()
    from keras_mm.data.image_preprocessor import resize_image
    fn = tf.function(lambda x: resize_image(x, (8, 6), True),
                     input_signature=[tf.TensorSpec([None, None, 3])])
    np.testing.assert_allclose(resize_image(image, (8, 6), True), expected,
                               atol=1e-4)
    np.testing.assert_allclose(fn(image), expected, atol=1e-4)


def test_preprocessors_serve_from_a_saved_model(tmp_path):
    """The serving path survives tf.saved_model (tables tracked as told)."""
    text = adapted_text(max_len=6)
    tab = TabularPreprocessor("tab", numeric=["age"], categorical=["city"])
    tab.adapt(tabular_rows([1.0, 3.0], ["oslo", "rome"]))
    image = ImagePreprocessor("img", size=(4, 4), preserve_aspect=True)
    pres = [text, tab, image]
    signature = {}
    for pre in pres:
        signature.update(pre.raw_signature())
    module = tf.Module()
    module.tables = [t for pre in pres for t in pre.resources()]

    @tf.function(input_signature=[signature])
    def serve(raw):
        out = {}
        for pre in pres:
            out.update(pre(raw))
        return out

    module.serve = serve
    raws = {"txt": tf.constant(["apple pie", ""]),
            "age": tf.constant([2.0, np.nan]),
            "city": tf.constant(["rome", "lima"]),
            "img": tf.constant([image_bytes(np.full((2, 6, 3), 9, np.uint8),
                                            "PNG"), b""])}
    expected = serve(raws)
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    got = loaded.serve(raws)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key].numpy(),
                                      expected[key].numpy(), err_msg=key)
    np.testing.assert_array_equal(got["tab_categorical"].numpy(), [[2], [0]])
