"""Tests of keras_mm.datasets: the demo set, AV-MNIST, BasicMotions, readers.

Files are read back with independent tools (Pillow, `wave`, NumPy, `gzip`).
"""

import csv
import gzip
import os
import re
import struct
import time
import wave

import numpy as np
import pytest
from PIL import Image

from keras_mm.datasets import av_mnist, basicmotions, demo
from keras_mm.datasets.idx import read_idx
from keras_mm.data.ts_format import parse_ts, read_ts
from keras_mm.errors import DataError


# ---------------------------------------------------------------- helpers
def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_wav_float(path):
    with wave.open(str(path), "rb") as f:
        assert f.getnchannels() == 1 and f.getsampwidth() == 2
        rate = f.getframerate()
        data = np.frombuffer(f.readframes(f.getnframes()), "<i2")
    return data.astype(np.float64) / 32768.0, rate


def tree_bytes(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def nearest_centroid_accuracy(train_x, train_y, test_x, test_y):
    mean, std = train_x.mean(0), train_x.std(0) + 1e-9
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classes = np.unique(train_y)
    centroids = np.stack([train_x[train_y == c].mean(0) for c in classes])
    dist = ((test_x[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float(np.mean(classes[np.argmin(dist, 1)] == test_y))


def mnist_independent(mnist_dir):
    """MNIST test images/labels decoded here with gzip + NumPy only."""
    with gzip.open(os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels


FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


# ---------------------------------------------------------------- readers
TS_TEXT = """# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3:4,5,6:up
1.5,?,2.5:7,8:down

0.5,0.25:1e-3,-2:up
"""


def test_parse_ts_values_missing_unequal_lengths_and_labels():
    data = parse_ts(TS_TEXT, path="toy.ts")
    assert len(data) == 3 and data.num_channels == 2
    assert data.labels == ["up", "down", "up"]
    assert data.class_labels == ["up", "down"]
    assert data.metadata["problemname"] == "Toy"
    assert data.metadata["dimensions"] == 2
    np.testing.assert_array_equal(data.series[0], [[1, 4], [2, 5], [3, 6]])
    x = data.to_numpy()
    assert x.shape == (3, 3, 2) and x.dtype == np.float32
    # '?' -> NaN; the shorter second dimension is NaN-padded.
    np.testing.assert_array_equal(np.isnan(x[1]),
                                  [[0, 0], [1, 0], [0, 1]])
    np.testing.assert_allclose(x[2, :2], [[0.5, 1e-3], [0.25, -2]])
    assert np.all(np.isnan(x[2, 2]))


@pytest.mark.parametrize("bad, message", [
    ("1,2,3:4,5,6:sideways", "line 10: label 'sideways' is not one of"),
    ("1,2,x:4,5,6:up", "line 10: dimension 1, value 3: 'x' is not a number"),
    ("1,2,3:up", "line 10: 1 dimension(s), expected 2"),
])
def test_parse_ts_bad_rows_name_file_line_and_field(bad, message):
    text = TS_TEXT.split("@data")[0] + "@data\n" + bad + "\n"
    with pytest.raises(DataError) as err:
        parse_ts(text, path="toy.ts")
    assert str(err.value).startswith("toy.ts, row 1: ")
    assert message in str(err.value)


def test_parse_ts_bad_header():
    with pytest.raises(DataError, match=r"line 1: unknown header tag @colour"):
        parse_ts("@colour red\n@data\n1,2\n", path="x.ts")
    with pytest.raises(DataError, match=r"@timeStamps true files are not"):
        parse_ts("@timeStamps true\n@data\n(1,2)\n", path="x.ts")
    with pytest.raises(DataError, match=r"no @data line"):
        parse_ts("@problemName X\n", path="x.ts")
    with pytest.raises(DataError, match="series lengths"):
        parse_ts("@equalLength true\n@seriesLength 3\n@data\n1,2\n")


def test_read_idx_against_numpy_written_file(tmp_path):
    values = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2, 3, 4) + values.tobytes()
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as f:
        f.write(raw)
    (tmp_path / "b-idx1-ubyte").write_bytes(
        struct.pack(">BBBBI", 0, 0, 0x0D, 1, 2)
        + np.array([1.5, -2.0], ">f4").tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"),
                                  values)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "b-idx1-ubyte")),
                                  [1.5, -2.0])
    (tmp_path / "bad").write_bytes(raw[:-1])
    with pytest.raises(DataError, match="bad.*needs 24 data bytes"):
        read_idx(str(tmp_path / "bad"))


# ---------------------------------------------------------------- demo set
def test_demo_set_files_and_determinism(tmp_path):
    kw = dict(num_train=12, num_val=4, num_test=4)
    info = demo.make_demo_dataset(tmp_path / "a", seed=3, **kw)
    demo.make_demo_dataset(tmp_path / "b", seed=3, **kw)
    demo.make_demo_dataset(tmp_path / "c", seed=4, **kw)
    a, b, c = (tree_bytes(tmp_path / n) for n in "abc")
    assert a == b                                  # byte-identical
    assert len(a) == 3 * 20 + 4                    # 3 files/example + 4
    assert set(a) == set(c)
    assert a["train.csv"] != c["train.csv"]
    assert a["train/images/0000.png"] != c["train/images/0000.png"]
    assert a["train/audio/0000.wav"] != c["train/audio/0000.wav"]
    assert info["class_names"] == list(demo.CLASS_NAMES)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]

    rows = read_rows(tmp_path / "a" / "train.csv")
    assert list(rows[0]) == list(demo.COLUMNS)
    counts = np.bincount([int(r["label_id"]) for r in rows], minlength=4)
    assert counts.tolist() == [3, 3, 3, 3]             # balanced
    for r in rows:
        assert r["label"] == demo.CLASS_NAMES[int(r["label_id"])]
        assert r["text"].strip()
        img = Image.open(tmp_path / "a" / r["image"])
        assert img.mode == "RGB" and img.size == (32, 32)
        wav, rate = read_wav_float(tmp_path / "a" / r["audio"])
        assert rate == 8000 and wav.shape == (4000,)
        sensor = np.loadtxt(tmp_path / "a" / r["sensor"], delimiter=",")
        assert sensor.shape == (50, 3) and np.all(np.isfinite(sensor))


def test_demo_each_modality_alone_is_ambiguous_fusion_is_not(tmp_path):
    demo.make_demo_dataset(tmp_path, seed=0, num_train=200, num_val=0,
                           num_test=200)

    def features(split):
        rows = read_rows(tmp_path / f"{split}.csv")
        pixels, colour, pitch, text, slope, y = [], [], [], [], [], []
        for r in rows:
            img = np.asarray(Image.open(tmp_path / r["image"]), np.float64)
            pixels.append(img.ravel())
            colour.append([img[..., 0].mean() - img[..., 2].mean()])
            wav, _ = read_wav_float(tmp_path / r["audio"])
            power = np.abs(np.fft.rfft(wav)) ** 2
            freqs = np.fft.rfftfreq(len(wav), 1 / 8000)
            pitch.append([power[freqs > 650].sum() / power.sum()])
            words = set(r["text"].split())
            text.append([float(bool(words & {"contrasting", "mismatched",
                                             "different"}))])
            s = np.loadtxt(tmp_path / r["sensor"], delimiter=",")
            slope.append([s[-10:, 0].mean() - s[:10, 0].mean()])
            y.append(int(r["label_id"]))
        return {k: np.array(v) for k, v in dict(
            pixels=pixels, colour=colour, pitch=pitch, text=text,
            slope=slope, y=y).items()}

    tr, te = features("train"), features("test")

    def acc(*keys, target=None):
        target = (lambda y: y) if target is None else target
        x_tr = np.concatenate([tr[k] for k in keys], 1)
        x_te = np.concatenate([te[k] for k in keys], 1)
        return nearest_centroid_accuracy(x_tr, target(tr["y"]), x_te,
                                         target(te["y"]))

    # Each cue carries its bit...
    assert acc("colour", target=lambda y: y // 2) >= 0.95
    assert acc("pixels", target=lambda y: y // 2) >= 0.8
    assert acc("pitch", target=lambda y: y % 2) >= 0.95
    assert acc("text", target=lambda y: (y // 2) ^ (y % 2)) >= 0.8
    assert acc("slope", target=lambda y: y % 2) >= 0.6
    # ...but alone no modality gets much above 50% on the 4 classes,
    for keys in (("pixels",), ("colour",), ("pitch",), ("text",),
                 ("slope",)):
        assert acc(*keys) <= 0.6, keys
    # while fusing image and audio solves it.
    assert acc("colour", "pitch") >= 0.95


def test_ensure_demo_dataset_builds_once_and_atomically(tmp_path,
                                                        monkeypatch):
    kw = dict(num_train=4, num_val=4, num_test=4)
    out = tmp_path / "demo"
    first = demo.ensure_demo_dataset(out, **kw)
    assert first["created"] is True
    stamp = os.stat(out / "train.csv").st_mtime_ns
    again = demo.ensure_demo_dataset(out, **kw)
    assert again["created"] is False and again["sizes"] == first["sizes"]
    assert os.stat(out / "train.csv").st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="built with"):
        demo.ensure_demo_dataset(out, seed=1, **kw)

    # A build that fails midway leaves neither the output nor a temp folder.
    calls = []

    def failing_sensor(rng, b):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.zeros((50, 3))

    monkeypatch.setattr(demo, "_sensor", failing_sensor)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_demo_dataset(tmp_path / "other", **kw)
    assert sorted(os.listdir(tmp_path)) == ["demo"]


# ---------------------------------------------------------------- BasicMotions
def test_basicmotions_ts_reader_on_the_real_files(shared_data):
    data = read_ts(shared_data / "basicmotions" / "BasicMotions_TRAIN.ts")
    x = data.to_numpy()
    assert x.shape == (40, 100, 6) and not np.isnan(x).any()
    assert data.class_labels == ["Standing", "Running", "Walking",
                                 "Badminton"]
    assert sorted(set(data.labels)) == sorted(data.class_labels)
    # First values of the file, read by hand from its text.
    np.testing.assert_allclose(x[0, :3, 0], [0.079106, 0.079106, -0.903497],
                               rtol=1e-6)


def test_basicmotions_build(shared_data, tmp_path):
    ts_dir = shared_data / "basicmotions"
    info = basicmotions.build_basicmotions(ts_dir, tmp_path / "a")
    basicmotions.build_basicmotions(ts_dir, tmp_path / "b")
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert info["sizes"] == {"train": 40, "test": 40}
    assert info["num_classes"] == 4
    for split in ("train", "test"):
        rows = read_rows(tmp_path / "a" / f"{split}.csv")
        assert len(rows) == 40 and list(rows[0]) == list(basicmotions.COLUMNS)
        assert {r["label"] for r in rows} == set(info["class_names"])
        # Independent parse of the .ts text for the comparison.
        lines = [ln for ln in (ts_dir / f"BasicMotions_{split.upper()}.ts")
                 .read_text().splitlines() if ln and ln[0] not in "#@"]
        for r in rows:
            fields = lines[int(r["ts_row"]) - 1].split(":")
            assert r["label"] == fields[-1]
            full = np.array([[float(v) for v in f.split(",")]
                             for f in fields[:-1]], np.float32).T
            acc = np.load(tmp_path / "a" / r["accelerometer"])
            gyro = np.load(tmp_path / "a" / r["gyroscope"])
            assert acc.shape == gyro.shape == (100, 3)
            assert acc.dtype == np.dtype("<f4")
            np.testing.assert_array_equal(acc, full[:, :3])
            np.testing.assert_array_equal(gyro, full[:, 3:])


def test_basicmotions_csv_format(shared_data, tmp_path):
    basicmotions.build_basicmotions(shared_data / "basicmotions", tmp_path,
                                    file_format="csv")
    row = read_rows(tmp_path / "test.csv")[5]
    x = np.loadtxt(tmp_path / row["gyroscope"], delimiter=",")
    ref = read_ts(shared_data / "basicmotions" / "BasicMotions_TEST.ts")
    np.testing.assert_allclose(x, ref.series[5][:, 3:], atol=1e-6)


def test_basicmotions_dimension_order(shared_data):
    """Dimensions 0-2 behave as accelerometer, 3-5 as gyroscope."""
    data = read_ts(shared_data / "basicmotions" / "BasicMotions_TRAIN.ts")
    x, y = data.to_numpy(np.float64), np.array(data.labels)
    means = np.stack([x[y == c].mean(axis=(0, 1)) for c in set(data.labels)])
    assert np.abs(means[:, 3:]).max() < 0.3      # angular velocity ~ 0
    assert np.abs(means[:, :3]).max() > 3.0      # running: linear accel.


# ---------------------------------------------------------------- AV-MNIST
def _av_dirs(shared_data):
    return shared_data / "mnist", shared_data / "fsdd"


def test_av_mnist_full_clean_build_pairs_agree(shared_data, tmp_path):
    mnist_dir, fsdd_dir = _av_dirs(shared_data)
    start = time.perf_counter()
    info = av_mnist.build_av_mnist(mnist_dir, fsdd_dir, tmp_path / "full",
                                   variant="clean", seed=0)
    seconds = time.perf_counter() - start
    print(f"full clean AV-MNIST build: {seconds:.1f} s")
    assert info["sizes"] == {"train": 8000, "test": 2000}
    images, labels = mnist_independent(mnist_dir)
    seen = {}
    for split, takes in (("train", range(5, 50)), ("test", range(0, 5))):
        rows = read_rows(tmp_path / "full" / f"{split}.csv")
        assert len(rows) == (8000 if split == "train" else 2000)
        seen[split] = {int(r["mnist_index"]) for r in rows}
        for r in rows:
            # Manifest paths work from any cwd: the audio path is absolute.
            assert os.path.isabs(r["audio"]) and os.path.isfile(r["audio"])
            digit, speaker, take = FSDD_NAME.match(
                os.path.basename(r["audio"])).groups()
            mnist_label = int(labels[int(r["mnist_index"])])
            assert int(r["label"]) == mnist_label == int(digit)
            assert int(take) in takes
            assert (r["audio_digit"], r["speaker"], r["take"]) == (
                digit, speaker, take)
        for r in rows[::997]:
            png = np.asarray(Image.open(tmp_path / "full" / r["image"]))
            np.testing.assert_array_equal(png, images[int(r["mnist_index"])])
    assert len(seen["train"]) == 8000 and len(seen["test"]) == 2000
    assert seen["train"] | seen["test"] == set(range(10000))
    # A limited build (and a second build) gives the same first rows.
    av_mnist.build_av_mnist(mnist_dir, fsdd_dir, tmp_path / "lim",
                            variant="clean", seed=0, limit=40)
    for split in ("train", "test"):
        full = (tmp_path / "full" / f"{split}.csv").read_bytes()
        lim = (tmp_path / "lim" / f"{split}.csv").read_bytes()
        assert full.startswith(lim) and lim.count(b"\n") == 41


def test_av_mnist_deterministic_and_seed_dependent(shared_data, tmp_path):
    mnist_dir, fsdd_dir = _av_dirs(shared_data)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        av_mnist.build_av_mnist(mnist_dir, fsdd_dir, tmp_path / name,
                                variant="degraded", seed=seed, limit=25)
    a, b, c = (tree_bytes(tmp_path / n) for n in "abc")
    assert a == b                                 # all files byte-identical
    assert len([k for k in a if k.endswith(".wav")]) == 50
    assert a["train.csv"] != c["train.csv"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        av_mnist.build_av_mnist(mnist_dir, fsdd_dir, tmp_path / "a",
                                seed=5, limit=2)


def test_av_mnist_degraded_pca_and_snr(shared_data, tmp_path):
    mnist_dir, fsdd_dir = _av_dirs(shared_data)
    out = tmp_path / "deg"
    info = av_mnist.build_av_mnist(mnist_dir, fsdd_dir, out,
                                   variant="degraded", seed=0, limit=60)
    assert info["pca"]["components"] == 4
    assert info["sizes"] == {"train": 60, "test": 60}

    # Independent PCA (eigen-decomposition of the covariance) of the train
    # images: 4 components are the fewest holding 25% of the variance.
    images, labels = mnist_independent(mnist_dir)
    train_idx, _ = av_mnist.split_indices(10000, 0)
    x = images[train_idx].reshape(8000, -1) / 255.0
    mean = x.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    order = np.argsort(evals)[::-1]
    ratio = np.cumsum(evals[order]) / evals.sum()
    assert ratio[2] < 0.25 <= ratio[3]
    np.testing.assert_allclose(info["pca"]["explained_variance_total"],
                               ratio[3], rtol=1e-6)
    v = evecs[:, order[:4]]

    snrs, rescaled = [], 0
    for split in ("train", "test"):
        rows = read_rows(out / f"{split}.csv")
        for r in rows[:10]:
            idx = int(r["mnist_index"])
            png = np.asarray(Image.open(out / r["image"]), np.float64)
            centred = images[idx].ravel() / 255.0 - mean
            expect = np.clip(np.round(255 * (mean + centred @ v @ v.T)),
                             0, 255).reshape(28, 28)
            assert np.abs(png - expect).max() <= 1   # rounding at .5 only
            assert int(r["label"]) == int(labels[idx])
            noisy, rate = read_wav_float(out / r["audio"])
            assert rate == 8000 and noisy.shape == (8000,)
            name = f"{r['audio_digit']}_{r['speaker']}_{r['take']}.wav"
            assert r["audio"].endswith(name)
            src, _ = read_wav_float(fsdd_dir / "recordings" / name)
            clean = np.zeros(8000)
            clean[:min(8000, len(src))] = src[:8000]
            peak = np.abs(noisy).max()
            if peak >= 32767 / 32768:
                # Rescaled as a whole to peak at full scale: never clipped
                # (no run of two full-scale samples), not measured below.
                rescaled += 1
                full = np.abs(noisy) >= 32767 / 32768
                assert not np.any(full[1:] & full[:-1])
                continue
            snrs.append(10 * np.log10(np.mean(clean ** 2)
                                      / np.mean((noisy - clean) ** 2)))
    snrs = np.array(snrs)
    print("SNR dB:", np.round(snrs, 2), "rescaled:", rescaled)
    # The noise power of 8,000 Gaussian samples has a relative std of 1.6%
    # (0.07 dB): each clip within 0.3 dB of -3 dB, the mean within 0.1 dB.
    assert len(snrs) >= 15
    assert np.abs(snrs + 3.0).max() < 0.3, snrs
    assert abs(snrs.mean() + 3.0) < 0.1, snrs.mean()
