"""Hostile audio and sensor files (issue 13): correct or refused, clearly.

Each case goes through the shared preprocessor code, so it is checked on
the serving path (a `tf.function` over the raw signature, as exported), on
a tf.data map, and where it matters on a `Pipeline` over a manifest (the
bad-record report). Files are written by independent tools (`wave`, `csv`
with `encoding="utf-8-sig"`, `struct`, NumPy). Errors must be
`tf.errors.InvalidArgumentError` whose `str()` works (no raw bytes of the
input in the message) and names the input.
"""

import csv
import io
import struct
import time
import wave

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mm.data import decode_csv_bytes
from keras_mm.data import decode_npy_bytes
from keras_mm.data.audio_preprocessor import AudioPreprocessor
from keras_mm.data.audio_preprocessor import canonical_wav
from keras_mm.data.bad_input import clean_tf_message
from keras_mm.data.pipeline import Pipeline
from keras_mm.data.sensor_preprocessor import SensorPreprocessor
from keras_mm.errors import DataError
from media_files import wav_bytes

RNG = np.random.default_rng(13)
RATE = 8000


# -- files, written by independent tools -----------------------------------

def extensible_wav_bytes(samples, rate=RATE):
    """WAVE_FORMAT_EXTENSIBLE 16-bit PCM, header written with struct."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    channels = samples.shape[1]
    subformat = (struct.pack("<IHH", 1, 0, 0x10)
                 + b"\x80\x00\x00\xaa\x00\x38\x9b\x71")   # KSDATAFORMAT PCM
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate,
                      rate * 2 * channels, 2 * channels, 16, 22, 16,
                      (1 << channels) - 1) + subformat
    data = samples.astype("<i2").tobytes()
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_bytes():
    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def audio_pre(duration=0.05, **kwargs):
    return AudioPreprocessor("voice", sample_rate=RATE, duration=duration,
                             **kwargs)


def serve(pre, raws):
    """The serving path: pre(raw) in a tf.function over the raw signature."""
    signature = pre.raw_signature()
    key = next(iter(signature))
    if not hasattr(pre, "_test_serving_fn"):       # one trace per object
        pre._test_serving_fn = tf.function(lambda raw: pre(raw),
                                           input_signature=[signature])
    out = pre._test_serving_fn(
        {key: tf.constant(raws, dtype=signature[key].dtype)})
    return {k: v.numpy() for k, v in out.items()}


def tf_data(pre, raws, batch_size=2):
    """The training path: raw rows batched, then one map per batch."""
    ds = tf.data.Dataset.from_tensor_slices(raws).batch(batch_size)
    parts = list(ds.map(lambda raw: pre(raw)).as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def assert_clear_tf_error(run, *needles):
    """`run()` raises InvalidArgumentError; str() works and holds needles."""
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        run()
    full = str(info.value)             # UnicodeDecodeError before the fix
    # The assertion's message as the bad-input report shows it.
    text = clean_tf_message(info.value.message)
    for needle in needles:
        assert needle in text, (needle, full[-800:])
    return text


# -- WAV ---------------------------------------------------------------------

def test_wav_with_a_trailing_byte_is_read_as_wave_reads_it():
    samples = RNG.integers(-32768, 32768, 600)
    good = wav_bytes(samples)
    odd = good + b"\x00"
    with wave.open(io.BytesIO(odd)) as w:          # Python's wave reads it
        np.testing.assert_array_equal(
            np.frombuffer(w.readframes(w.getnframes()), "<i2"), samples)
    pre = audio_pre()
    np.testing.assert_array_equal(pre.parse(odd)["voice"],
                                  pre.parse(good)["voice"])
    np.testing.assert_array_equal(
        pre.parse(odd)["voice"], samples[100:500].astype(np.float32) / 32768)
    for path in (serve, tf_data):
        out = path(pre, [odd, good])
        np.testing.assert_array_equal(out["voice"][0], out["voice"][1])
        np.testing.assert_array_equal(out["voice_present"], [1.0, 1.0])


@pytest.mark.parametrize("channels", [1, 2])
def test_wave_format_extensible_pcm16_equals_the_plain_pcm_file(channels):
    samples = RNG.integers(-32768, 32768, (500, channels))
    extensible = extensible_wav_bytes(samples)
    plain = wav_bytes(samples)
    assert extensible[20:22] == b"\xfe\xff" and plain[20:22] == b"\x01\x00"
    pre = audio_pre(duration=0.1, crop="start")
    out = pre.parse(extensible)["voice"].numpy()
    np.testing.assert_array_equal(out, pre.parse(plain)["voice"].numpy())
    scaled = samples.astype(np.float32) / np.float32(32768)
    np.testing.assert_allclose(out[:500], scaled.mean(axis=1), atol=1e-7,
                               rtol=0)
    np.testing.assert_array_equal(out[500:], 0.0)
    served = serve(pre, [extensible, plain])
    np.testing.assert_array_equal(served["voice"][0], served["voice"][1])


def test_zero_sample_wav_is_an_absent_modality():
    empty_wav = wav_bytes(np.zeros(0, int))
    assert len(empty_wav) == 44 and canonical_wav(
        tf.constant([empty_wav]), RATE).numpy().all()
    good = wav_bytes(RNG.integers(-32768, 32768, 400))
    pre = audio_pre(features="log_mel", frame_length=64, frame_step=32,
                    num_mel_bins=8)
    assert pre.parse(empty_wav)["voice_present"].numpy() == 0.0
    batched = [empty_wav, b"", good]             # the canonical batched path
    mixed = [empty_wav, b"", good + b"\x00"]     # the per-example path
    for raws in (batched, mixed):
        for path in (serve, tf_data):
            out = path(pre, raws)
            # Equivalence: the same outputs as for empty bytes (absent).
            for key in ("voice", "voice_present"):
                np.testing.assert_array_equal(out[key][0], out[key][1])
            np.testing.assert_array_equal(out["voice_present"],
                                          [0.0, 0.0, 1.0])


def test_parse_batch_equals_parse_on_the_new_layouts():
    pre = audio_pre(duration=0.05, crop="start")
    raws = [wav_bytes(RNG.integers(-32768, 32768, 300)) + b"\x00",
            extensible_wav_bytes(RNG.integers(-32768, 32768, (450, 2))),
            wav_bytes(np.zeros(0, int)), b"",
            wav_bytes(RNG.integers(-32768, 32768, 900))]
    for batch in (raws, raws[2:]):               # per example / batched
        out = pre.parse_batch(tf.constant(batch))
        for i, raw in enumerate(batch):
            one = pre.parse(tf.constant(raw))
            np.testing.assert_array_equal(out["voice"][i], one["voice"])
            assert out["voice_present"][i] == one["voice_present"]
    assert pre.parse_batch(tf.constant(raws))["voice_present"].numpy() \
        .tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]


def chunky_wav(n):
    """A `fmt ` chunk, then `n` empty chunks and no `data` chunk."""
    fmt = wav_bytes(np.zeros(0, int))[12:36]
    body = b"WAVE" + fmt + b"JUNK\x00\x00\x00\x00" * n
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _bad_wavs():
    good = wav_bytes(RNG.integers(-32768, 32768, 200))
    chunky = chunky_wav(20000)
    garbage_fmt = good[:20] + b"\xff\xfe\x80\x81" + good[24:]
    return {
        "png as audio": (png_bytes(), "RIFF/WAVE header"),
        "random bytes": (bytes(range(128, 256)) * 3, "RIFF/WAVE header"),
        "truncated data": (good[:-5], "too short"),
        "truncated fmt": (good[:30], "too short"),
        "bad format tag": (garbage_fmt, "not PCM"),
        "many chunks, no data": (chunky, "no data chunk"),
    }


@pytest.mark.parametrize("case", list(_bad_wavs()))
def test_malformed_wav_raises_a_readable_tf_error_naming_the_input(case):
    bad, reason = _bad_wavs()[case]
    pre = audio_pre()
    good = wav_bytes(np.ones(100, int))
    needles = ("input voice", "WAV", reason)
    assert_clear_tf_error(lambda: serve(pre, [good, bad]), *needles)
    assert_clear_tf_error(lambda: tf_data(pre, [good, bad]), *needles)
    assert_clear_tf_error(lambda: pre.parse(bad), *needles)   # eager


def test_many_chunk_wav_is_refused_in_bounded_time():
    chunky = chunky_wav(200000)                # 1.6 MB of chunks
    pre = audio_pre()
    serve(pre, [wav_bytes(np.ones(10, int))])            # trace once
    start = time.perf_counter()
    assert_clear_tf_error(lambda: serve(pre, [chunky]), "no data chunk")
    assert time.perf_counter() - start < 5.0


def test_wav_errors_keep_their_reasons_for_the_pipeline_report():
    pre = audio_pre()
    text = assert_clear_tf_error(
        lambda: pre.parse(wav_bytes(np.zeros(100, int), rate=16000)),
        "16000", "8000", "sample rate", "input voice")
    assert "\\x" not in text


# -- sensor CSV --------------------------------------------------------------

def write_excel_csv(path, rows, header=None):
    """A CSV as Excel writes it: UTF-8 with a byte order mark."""
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("header", [None, ["ax", "ay"]])
def test_csv_with_a_utf8_bom_keeps_its_first_row(tmp_path, header):
    values = np.round(RNG.normal(size=(4, 2)), 4)
    path = write_excel_csv(tmp_path / "bom.csv",
                           [[f"{v:.4f}" for v in row] for row in values],
                           header)
    contents = path.read_bytes()
    assert contents.startswith(b"\xef\xbb\xbf")
    expected = values.astype(np.float32)
    np.testing.assert_array_equal(decode_csv_bytes(contents, 2).numpy(),
                                  expected)
    pre = SensorPreprocessor("imu", channels=2, length=4, source="csv",
                             normalize=False)
    plain = contents[3:]                          # the same file, no BOM
    for path_fn in (serve, tf_data):
        out = path_fn(pre, [contents, plain])
        np.testing.assert_array_equal(out["imu"][0], expected)
        np.testing.assert_array_equal(out["imu"][0], out["imu"][1])
        assert out["imu_mask"].all()


@pytest.mark.parametrize("text", [b"hello world\n", b"ax,ay\n",
                                  b"\xef\xbb\xbfax,ay\r\n\r\n"])
def test_csv_without_a_data_row_is_refused_not_absent(text):
    pre = SensorPreprocessor("imu", channels=2, length=4, source="csv",
                             normalize=False)
    good = b"1,2\n3,4\n"
    needles = ("input imu", "CSV", "no data row")
    assert_clear_tf_error(lambda: serve(pre, [good, text]), *needles)
    assert_clear_tf_error(lambda: tf_data(pre, [good, text]), *needles)
    # Empty bytes still mean an absent series.
    out = serve(pre, [good, b""])
    np.testing.assert_array_equal(out["imu_present"], [1.0, 0.0])


def test_non_numeric_and_binary_csv_rows_give_readable_errors():
    pre = SensorPreprocessor("imu", channels=2, length=4, source="csv",
                             normalize=False)
    good = b"1,2\n3,4\n"
    cases = {
        b"ax,ay\n1,2\n3,\xff\xfe\n": ("not a number on line", "3"),
        png_bytes(): ("not a number on line",),
        b"1,2\n3,4,5\n": ("fields on line", "but 2 are expected"),
    }
    for bad, needles in cases.items():
        text = assert_clear_tf_error(lambda: serve(pre, [good, bad]),
                                     "input imu", "CSV", *needles)
        assert "\\x" not in text
    assert_clear_tf_error(lambda: tf_data(pre, [good, png_bytes()]),
                          "input imu", "CSV", "not a number on line")


def test_npy_errors_hold_no_raw_bytes():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 2), np.float32))
    good = buffer.getvalue()
    bad_descr = good.replace(b"'<f4'", b"'\xff\xfe'")
    bad_shape = good.replace(b"(3, 2)", b"(\xff, 2)")
    truncated = good[:-3]
    pre = SensorPreprocessor("imu", channels=2, length=4, source="npy",
                             normalize=False)
    for bad, needle in ((bad_descr, "not supported"),
                        (bad_shape, "not supported"),
                        (truncated, "truncated"),
                        (png_bytes(), "not a .npy file")):
        for run in (lambda: serve(pre, [good, bad]),
                    lambda: decode_npy_bytes(bad, "imu").numpy()):
            assert_clear_tf_error(run, "input imu", needle)
    assert_clear_tf_error(lambda: tf_data(pre, [good, bad_descr]),
                          "input imu", "not supported")


def test_value_overflowing_on_normalization_is_masked_like_nan():
    pre = SensorPreprocessor("imu", channels=2, length=4, mean=[0.0, 0.0],
                             std=[0.5, 1.0])
    huge = np.array([[1, 1], [3e38, 1], [2, -2], [-3e38, 3e38]], np.float32)
    assert np.isfinite(huge).all()
    nan = huge.copy()
    nan[1, 0] = nan[3, 0] = np.nan              # the values that overflow
    for path_fn in (serve, tf_data):
        out = path_fn(pre, np.stack([huge, nan]))
        for key in ("imu", "imu_mask", "imu_present"):
            np.testing.assert_array_equal(out[key][0], out[key][1], key)
        assert np.isfinite(out["imu"]).all()
        np.testing.assert_array_equal(out["imu_mask"][0],
                                      [True, False, True, False])
    # A window whose every value overflows: absent, like an all-NaN one.
    all_huge = np.full((4, 2), 3e38, np.float32)
    out = serve(pre, np.stack([all_huge, np.full((4, 2), np.nan,
                                                 np.float32)]))
    np.testing.assert_array_equal(out["imu_present"], [0.0, 0.0])
    np.testing.assert_array_equal(out["imu"], 0.0)


# -- the training pipeline: bad records with readable details ---------------

def test_pipeline_reports_hostile_audio_and_sensor_rows(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    rows = []
    audio = {0: wav_bytes(RNG.integers(-32768, 32768, 400)),
             1: png_bytes(),                              # PNG as audio
             2: wav_bytes(RNG.integers(-32768, 32768, 400)) + b"\x00",
             3: wav_bytes(np.zeros(0, int)),              # 0 samples
             4: wav_bytes(RNG.integers(-32768, 32768, 400))}
    sensor = {0: b"ax,ay\n1,2\n3,4\n", 1: b"1,2\n",
              2: b"\xef\xbb\xbf1,2\n3,4\n", 3: b"1,2\n",
              4: b"just some text\n"}                     # one text line
    for i in range(5):
        (files / f"a{i}.wav").write_bytes(audio[i])
        (files / f"s{i}.csv").write_bytes(sensor[i])
        label = ["no", "yes"][i % 2]
        rows.append(f"files/a{i}.wav,files/s{i}.csv,{label}")
    manifest = tmp_path / "train.csv"
    manifest.write_text("voice,imu,label\n" + "\n".join(rows) + "\n")
    pres = {"voice": audio_pre(random_crop=False),
            "imu": SensorPreprocessor("imu", channels=2, length=3,
                                      source="csv", normalize=False)}
    labels = {"label": {"type": "classification",
                        "class_names": ["no", "yes"]}}
    pipe = Pipeline(str(manifest), pres, labels=labels, bad_input="skip",
                    presence_mask=True)
    features = {}
    for batch, _ in pipe.dataset(batch_size=2):
        for k, v in batch.items():
            features.setdefault(k, []).append(v.numpy())
    features = {k: np.concatenate(v) for k, v in features.items()}
    by_row = {r["row"]: r for r in pipe.report.rows}
    assert sorted(by_row) == [2, 4, 5]
    assert (by_row[2]["input"], by_row[2]["reason"]) == ("voice",
                                                         "decode_error")
    assert "RIFF/WAVE header" in by_row[2]["detail"]
    assert (by_row[4]["input"], by_row[4]["reason"]) == ("voice", "empty")
    assert (by_row[5]["input"], by_row[5]["reason"]) == ("imu",
                                                         "decode_error")
    assert "no data row" in by_row[5]["detail"]
    # Kept: rows 1 and 3; the BOM row keeps both of its steps.
    np.testing.assert_array_equal(features["imu"][1], [[1, 2], [3, 4],
                                                       [0, 0]])
    np.testing.assert_array_equal(features["presence"], 1.0)
    with pytest.raises(DataError, match="row 2, column 'voice'"):
        Pipeline(str(manifest), pres, labels=labels).validate()

