"""Three-digits: MNIST image + FSDD spoken digit + generated RGB photo.

Every example shows one digit three ways: an MNIST image (28x28 grayscale
PNG), a spoken FSDD recording of the same digit (8 kHz WAV), and a small
RGB JPEG "photo" of the same digit drawn with Pillow (32x32: the glyph in a
seeded random size, position, rotation and colour on a textured, noisy
background). It is the first-try data set of issue 12 and of
`benchmarks/accuracy_three_modalities.py`.

Built deterministically from `../shared/data` (the same seed gives the
same bytes, also for a limited build's rows):

- MNIST: the 10,000 test images are permuted by
  `np.random.default_rng(seed).permutation(10000)`; positions 0-6999 are
  the train split, 7000-7999 val, 8000-9999 test (the same 2,000 test
  images as AV-MNIST with that seed); each split is listed in MNIST index
  order.
- Audio: FSDD takes 5-49 are the train and val pool, takes 0-4 (the
  official FSDD test split) the test pool; row `i` of a split gets a
  recording of its label drawn as in AV-MNIST (`pair_recordings`, split
  ids 0 / 1 / 2 = train / val / test). Recordings are reused across rows.
- Photo of row `i`: drawn with `default_rng([seed, 4, split_id, i])`
  (`render_photo`).
- `limit` keeps the first `limit` rows of each split and changes nothing
  else.

Variants:

- `clean`: MNIST images as they are; the `audio` column points at the
  original FSDD files (absolute paths).
- `degraded`: each MNIST image Gaussian-blurred (radius `BLUR_RADIUS`) plus
  white Gaussian pixel noise (std `IMAGE_NOISE_STD` grey levels, from
  `default_rng([seed, 5, split_id, i])`), clipped to uint8; each recording
  cut/padded to 1 s with white noise at -3 dB SNR (`degrade_waveform` of
  AV-MNIST, noise from `default_rng([seed, 3, split_id, i])`) and written as
  a new WAV. The photos are the same as in `clean`.

Output (`out_dir`):

```
train.csv, val.csv, test.csv   columns (COLUMNS): mnist, audio, photo,
                               label, mnist_index, audio_digit, speaker, take
three_digits.json              seed, variant, sizes, settings
train/mnist/04711.png          (MNIST index in the name)
train/photo/04711.jpg
train/audio/04711_3_jackson_12.wav   (degraded only)
val/... test/...
```

`mnist` and `photo` paths are relative to the manifest's folder; `label` is
the digit (0-9) of all three modalities (`audio_digit` repeats it from the
FSDD file name). `three_digits_recipe(out_dir)` returns a recipe dict (the
README's style, tower defaults) for `keras_mm.training.train`.

Example:

>>> out = build_three_digits("../shared/data/mnist", "../shared/data/fsdd",
...                          "data/three_digits", limit=100)  # doctest: +SKIP
>>> recipe = three_digits_recipe(out)                         # doctest: +SKIP
"""

import os
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from keras_mm.datasets import _io
from keras_mm.datasets.av_mnist import (SAMPLE_RATE, TEST_TAKES, TRAIN_TAKES,
                                        _pools, degrade_waveform,
                                        fsdd_recordings_dir, list_fsdd,
                                        pair_recordings)
from keras_mm.datasets.idx import load_mnist
from keras_mm.errors import DataError

VARIANTS = ("clean", "degraded")
SPLITS = ("train", "val", "test")
SPLIT_SIZES = (7000, 1000, 2000)
PHOTO_SIZE = 32
JPEG_QUALITY = 90
BLUR_RADIUS = 1.5
IMAGE_NOISE_STD = 60.0
COLUMNS = ("mnist", "audio", "photo", "label", "mnist_index", "audio_digit",
           "speaker", "take")
_CANVAS = 64        # photos are drawn at 2x and downsampled (antialiasing)


def split_three(num_images, seed):
    """MNIST indices of the train / val / test rows (each sorted)."""
    if num_images < sum(SPLIT_SIZES):
        raise DataError(f"expected the 10,000 MNIST test images, found "
                        f"{num_images}")
    perm = np.random.default_rng(seed).permutation(num_images)
    bounds = np.cumsum((0,) + SPLIT_SIZES)
    return [np.sort(perm[bounds[k]:bounds[k + 1]]) for k in range(3)]


def _font(size):
    return ImageFont.load_default(size=int(size))


def render_photo(digit, rng, size=PHOTO_SIZE):
    """A `[size, size, 3]` uint8 RGB "photo" of `digit` drawn with `rng`.

    Background: a random-colour linear gradient plus a random-colour
    sinusoidal texture and Gaussian noise; the digit glyph in a random
    contrasting colour, font size, offset and rotation (+-25 degrees).
    """
    c = _CANVAS
    yy, xx = np.mgrid[0:c, 0:c] / c
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-60, 60, (2, 3))
    freq = rng.uniform(2, 8, 2)
    phase = rng.uniform(0, 2 * np.pi, 2)
    texture = np.sin(2 * np.pi * (freq[0] * xx + phase[0])) * \
        np.sin(2 * np.pi * (freq[1] * yy + phase[1]))
    tex_colour = rng.uniform(-40, 40, 3)
    bg = (base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
          + texture[..., None] * tex_colour)
    # Glyph colour: far from the mean background colour.
    mean = bg.reshape(-1, 3).mean(axis=0)
    colour = np.where(mean > 127, rng.uniform(0, 70, 3),
                      rng.uniform(185, 255, 3))
    glyph = Image.new("L", (c, c), 0)
    draw = ImageDraw.Draw(glyph)
    font = _font(rng.integers(30, 50))
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    w, h = right - left, bottom - top
    dx = rng.uniform(-0.15, 0.15) * c
    dy = rng.uniform(-0.15, 0.15) * c
    draw.text(((c - w) / 2 - left + dx, (c - h) / 2 - top + dy), str(digit),
              fill=255, font=font)
    glyph = glyph.rotate(float(rng.uniform(-25, 25)),
                         resample=Image.BILINEAR)
    alpha = np.asarray(glyph, np.float64)[..., None] / 255.0
    img = bg * (1 - alpha) + colour * alpha
    img = img + rng.normal(0, 12, img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    small = Image.fromarray(img).resize((size, size), Image.BILINEAR)
    return np.asarray(small)


def degrade_image(pixels, rng, radius=BLUR_RADIUS, noise_std=IMAGE_NOISE_STD):
    """Blurs a uint8 `[H, W]` image and adds white noise (uint8 result)."""
    blurred = Image.fromarray(np.asarray(pixels, np.uint8)).filter(
        ImageFilter.GaussianBlur(radius))
    x = np.asarray(blurred, np.float64) + rng.normal(0, noise_std,
                                                     pixels.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _write_jpeg(path, pixels):
    Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY)


def build_three_digits(mnist_dir, fsdd_dir, out_dir, *, variant="clean",
                       seed=0, limit=None, overwrite=False):
    """Builds the three-digits manifest set into `out_dir` (module docs).

    Args:
        mnist_dir: folder with the MNIST test split IDX files.
        fsdd_dir: the FSDD folder (holding `recordings/`) or its recordings.
        out_dir: output folder, written atomically.
        variant: `"clean"` or `"degraded"` (MNIST blurred + noised, audio at
            -3 dB SNR, photos clean).
        seed: seed of the split, the pairing, the photos and the noise.
        limit: keep the first `limit` rows of each split; None keeps
            7,000 / 1,000 / 2,000.
        overwrite: replace an existing non-empty `out_dir`.

    Returns:
        `out_dir` (absolute), holding `train.csv`, `val.csv`, `test.csv`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of "
                         f"{', '.join(VARIANTS)}")
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise ValueError(f"limit={limit!r} must be a positive integer or None")
    out_dir = os.path.abspath(os.fspath(out_dir))
    _io.check_output_dir(out_dir, overwrite)
    images, labels = load_mnist(mnist_dir)
    recordings = list_fsdd(fsdd_dir)
    split_idx = split_three(len(images), seed)
    train_pool = _pools(recordings, TRAIN_TAKES)
    pools = (train_pool, train_pool, _pools(recordings, TEST_TAKES))
    info = {
        "name": "three_digits", "variant": variant, "seed": int(seed),
        "limit": None if limit is None else int(limit),
        "full_sizes": dict(zip(SPLITS, SPLIT_SIZES)), "sizes": {},
        "num_classes": 10, "class_names": [str(d) for d in range(10)],
        "columns": list(COLUMNS),
        "fsdd_takes": {"train": list(TRAIN_TAKES), "val": list(TRAIN_TAKES),
                       "test": list(TEST_TAKES)},
        "photo": {"size": PHOTO_SIZE, "format": "JPEG",
                  "quality": JPEG_QUALITY},
        "sources": {"mnist": os.path.abspath(mnist_dir),
                    "fsdd": os.path.abspath(fsdd_recordings_dir(fsdd_dir))},
    }
    if variant == "degraded":
        info["mnist"] = {"blur_radius": BLUR_RADIUS,
                         "noise_std": IMAGE_NOISE_STD}
        info["audio"] = {"copied": True, "snr_db": -3.0,
                         "sample_rate": SAMPLE_RATE, "rescaled_clips": 0}
    else:
        info["audio"] = {"copied": False, "paths": "absolute",
                         "sample_rate": SAMPLE_RATE}
    with _io.staging_dir(out_dir, overwrite=overwrite) as tmp:
        for split_id, (split, idx) in enumerate(zip(SPLITS, split_idx)):
            pairs = pair_recordings(labels[idx], pools[split_id], seed,
                                    split_id)
            if limit is not None:
                idx, pairs = idx[:int(limit)], pairs[:int(limit)]
            for sub in ("mnist", "photo") + (
                    ("audio",) if variant == "degraded" else ()):
                os.makedirs(os.path.join(tmp, split, sub))
            rows = []
            for i, (mnist_index, pair) in enumerate(zip(idx, pairs)):
                digit, speaker, take, src = pair
                label = int(labels[mnist_index])
                pixels = images[mnist_index]
                if variant == "degraded":
                    pixels = degrade_image(pixels, np.random.default_rng(
                        [seed, 5, split_id, i]))
                mnist_rel = f"{split}/mnist/{int(mnist_index):05d}.png"
                _io.write_png(os.path.join(tmp, mnist_rel), pixels)
                photo_rel = f"{split}/photo/{int(mnist_index):05d}.jpg"
                _write_jpeg(os.path.join(tmp, photo_rel), render_photo(
                    label, np.random.default_rng([seed, 4, split_id, i])))
                if variant == "clean":
                    audio = src
                else:
                    samples, rate = _io.read_wav(src)
                    if rate != SAMPLE_RATE:
                        raise DataError(
                            f"sample rate {rate} Hz, expected {SAMPLE_RATE} "
                            "Hz", file=src, reason="bad_audio")
                    noisy, rescaled = degrade_waveform(
                        samples, np.random.default_rng([seed, 3, split_id,
                                                        i]))
                    info["audio"]["rescaled_clips"] += int(rescaled)
                    audio = (f"{split}/audio/{int(mnist_index):05d}_{digit}_"
                             f"{speaker}_{take}.wav")
                    _io.write_wav(os.path.join(tmp, audio), noisy,
                                  SAMPLE_RATE)
                rows.append({"mnist": mnist_rel, "audio": audio,
                             "photo": photo_rel, "label": label,
                             "mnist_index": int(mnist_index),
                             "audio_digit": digit, "speaker": speaker,
                             "take": take})
            _io.write_manifest(os.path.join(tmp, f"{split}.csv"), COLUMNS,
                               rows)
            info["sizes"][split] = len(rows)
        _io.write_json(os.path.join(tmp, "three_digits.json"), info)
    return out_dir


def three_digits_recipe(data_dir, *, name="three_digits", fusion="concat",
                        epochs=8, batch_size=64, inputs=("mnist", "audio",
                                                         "photo")):
    """The first-try recipe dict of a built three-digits folder.

    README style with the tower defaults: `mnist` (28x28x1) and `photo`
    (32x32x3) through `ImageTower` defaults, `audio` (1 s log-mel) through
    the `AudioTower` cnn; `fusion` type at its defaults; Adam at the
    trainer's default learning rate (constant); `compare_unimodal: true`.

    Args:
        data_dir: a folder written by `build_three_digits`.
        name: the run name.
        fusion: the fusion type.
        epochs, batch_size: training length and batch size.
        inputs: the subset of `("mnist", "audio", "photo")` to use.

    Returns:
        A plain recipe dict for `keras_mm.training.train`.
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    all_inputs = {
        "mnist": {"modality": "image", "source": "mnist",
                  "preprocess": {"size": [28, 28], "channels": 1}},
        "audio": {"modality": "audio", "source": "audio",
                  "preprocess": {"sample_rate": SAMPLE_RATE,
                                 "duration": 1.0},
                  "tower": {"encoder": "cnn", "frontend": "log_mel",
                            "sample_rate": SAMPLE_RATE}},
        "photo": {"modality": "image", "source": "photo",
                  "preprocess": {"size": [PHOTO_SIZE, PHOTO_SIZE],
                                 "channels": 3}},
    }
    unknown = [k for k in inputs if k not in all_inputs]
    if unknown:
        raise ValueError(f"inputs: {unknown} are not among "
                         f"{', '.join(all_inputs)}")
    return {
        "name": name,
        "data": {"splits": {s: os.path.join(data_dir, f"{s}.csv")
                            for s in SPLITS},
                 "allow_paths_outside": True},
        "inputs": {k: all_inputs[k] for k in inputs},
        "fusion": {"type": fusion},
        "heads": {"label": {"type": "classification", "num_classes": 10,
                            "class_names": [str(d) for d in range(10)],
                            "source": "label"}},
        "training": {"epochs": int(epochs), "batch_size": int(batch_size),
                     "seed": 0},
        "evaluation": {"splits": ["test"], "compare_unimodal": True},
    }


def main(argv=None):
    """`python -m keras_mm.datasets.three_digits --mnist D --fsdd D --out D`."""
    a = _io.mnist_fsdd_arguments(__doc__.split("\n")[0],
                                 VARIANTS).parse_args(argv)
    start = time.perf_counter()
    return _io.run_builder(
        lambda: build_three_digits(a.mnist, a.fsdd, a.out, variant=a.variant,
                                   seed=a.seed, limit=a.limit,
                                   overwrite=a.overwrite),
        lambda out: f"three-digits ({a.variant}, seed {a.seed}) in {out} "
                    f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
