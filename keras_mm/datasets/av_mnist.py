"""AV-MNIST: MNIST digit images paired with spoken digits (FSDD).

Built exactly as `../shared/data/README.md` defines it, deterministically:

Split and pairing (same for both variants):
- The 10,000 MNIST test images are split by `np.random.default_rng(seed)
  .permutation(10000)`: the first 8,000 positions are the training images,
  the last 2,000 the test images; each split is then listed in MNIST index
  order.
- FSDD recordings (`{digit}_{speaker}_{take}.wav`) with takes 5-49 form the
  training pool, takes 0-4 (the official FSDD test split) the test pool;
  pools are listed per digit in (speaker, take) order.
- Row `i` of a split, whose MNIST label is `d`, gets recording
  `pool[d][floor(u_i * len(pool[d]))]` with `u = default_rng([seed, 1])
  .random(8000)` for train (`[seed, 2]`, 2,000 draws, for test). Recordings
  are reused across images, as in the benchmark. `limit` keeps the first
  `limit` rows of each split and changes nothing else: a limited build
  writes the same bytes as the first rows of the full build.

Variants:
- `clean`: images and recordings as they are. Images are written as 28x28
  grayscale PNGs; the audio is *not* copied: the manifest's `audio` column
  points at the original FSDD files, as absolute paths (`audio_paths=
  "absolute"`, the default: the manifest works from any working directory
  and wherever the output folder is moved) or as paths relative to the
  manifest's folder (`audio_paths="relative"`: portable when the output and
  the FSDD folder move together).
- `degraded` (Vielzeuf et al. 2018 / MultiBench setting, white noise instead
  of ESC-50): each image is replaced by its reconstruction from the leading
  principal components that together hold >= 25% of the pixel variance. The
  PCA (eigen-decomposition of the scatter matrix of the centred 8000x784
  training pixels scaled to [0, 1], i.e. their right singular vectors) is
  fitted on the training images only - always all 8,000 of them, whatever
  `limit` is - and gives 4 components on this data. Reconstructions are
  clipped to [0, 1] and rounded to uint8. Each waveform: the first 8,000
  samples (1 s at 8 kHz), zero-padded to 8,000, plus white Gaussian noise of
  power `10**0.3 * P` (-3 dB SNR), `P` being the mean power of that padded
  1-second clip; the noise of row `i` is drawn from `default_rng([seed, 3,
  split_id, i])` (split_id 0 = train, 1 = test), so every row has its own
  noise. Clipping: a noisy clip whose peak would exceed full scale is
  scaled down as a whole to peak at 32767/32768 (which keeps the SNR
  exact); no sample is hard-clipped. The number of rescaled clips is in the
  JSON. The noisy clips are written as new 16-bit PCM WAVs.

Output (`out_dir`):
```
train.csv, test.csv      columns: image, audio, label, mnist_index,
                         audio_digit, speaker, take
av_mnist.json            seed, variant, sizes, takes, PCA components and
                         explained variance, audio settings
train/images/04711.png   (MNIST index in the name)
train/audio/04711_3_jackson_12.wav   (degraded only: MNIST index, then the
                                      FSDD digit, speaker and take)
test/...
```
`label` is the MNIST label (0-9); `audio_digit`/`speaker`/`take` name the
FSDD recording, so every row shows that both modalities show the same digit.
Image paths are relative to the manifest's folder.

Example:

>>> info = build_av_mnist("../shared/data/mnist",
...                       "../shared/data/fsdd", "data/av_mnist_degraded",
...                       variant="degraded")          # doctest: +SKIP
>>> info["pca"]["components"]                          # doctest: +SKIP
4
"""

import os
import re
import time

import numpy as np

from keras_mm.datasets import _io
from keras_mm.datasets.idx import load_mnist
from keras_mm.errors import DataError

VARIANTS = ("clean", "degraded")
NUM_TRAIN = 8000
TRAIN_TAKES = (5, 49)
TEST_TAKES = (0, 4)
SAMPLE_RATE = 8000
CLIP_SAMPLES = 8000
PCA_VARIANCE = 0.25
SNR_DB = -3.0
COLUMNS = ("image", "audio", "label", "mnist_index", "audio_digit",
           "speaker", "take")
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
_FULL_SCALE = 32767.0 / 32768.0


def fsdd_recordings_dir(fsdd_dir):
    """The folder holding the WAVs: `fsdd_dir/recordings` or `fsdd_dir`."""
    sub = os.path.join(fsdd_dir, "recordings")
    return sub if os.path.isdir(sub) else fsdd_dir


def list_fsdd(fsdd_dir):
    """Lists FSDD recordings as `(digit, speaker, take, absolute_path)`.

    Sorted by (digit, speaker, take). Every `.wav` file must be named
    `{digit}_{speaker}_{take}.wav`.

    Raises:
        DataError: naming a `.wav` file with another name, or when the
            folder holds no recordings.
    """
    folder = os.path.abspath(fsdd_recordings_dir(os.fspath(fsdd_dir)))
    if not os.path.isdir(folder):
        raise DataError("FSDD folder not found; pass the folder holding "
                        "recordings/ (or the recordings themselves)",
                        file=folder, reason="missing_file")
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.lower().endswith(".wav"):
            continue
        m = _FSDD_NAME.match(name)
        if not m:
            raise DataError("FSDD file names must be "
                            "{digit}_{speaker}_{take}.wav", file=os.path.join(
                                folder, name), reason="bad_name")
        out.append((int(m.group(1)), m.group(2), int(m.group(3)),
                    os.path.join(folder, name)))
    if not out:
        raise DataError("no FSDD .wav recordings in this folder", file=folder,
                        reason="missing_file")
    out.sort(key=lambda r: (r[0], r[1], r[2]))
    return out


def split_indices(num_images, seed, num_train=NUM_TRAIN):
    """MNIST indices of the train and test images (each sorted)."""
    perm = np.random.default_rng(seed).permutation(num_images)
    return np.sort(perm[:num_train]), np.sort(perm[num_train:])


def _pools(recordings, takes):
    lo, hi = takes
    pools = {d: [r for r in recordings if r[0] == d and lo <= r[2] <= hi]
             for d in range(10)}
    return pools


def pair_recordings(labels, pools, seed, split_id):
    """For each label, the recording drawn from `pools[label]`."""
    u = np.random.default_rng([seed, 1 + split_id]).random(len(labels))
    pairs = []
    for label, ui in zip(labels, u):
        pool = pools[int(label)]
        if not pool:
            raise DataError(f"no FSDD recording of digit {int(label)} in the "
                            f"{'train' if split_id == 0 else 'test'} takes",
                            reason="missing_file")
        pairs.append(pool[int(ui * len(pool))])
    return pairs


def fit_pca(images, variance=PCA_VARIANCE):
    """PCA of `[N, H, W]` uint8 images scaled to [0, 1].

    Returns:
        dict with `mean` `[D]`, `components` `[k, D]` (the leading ones that
        together hold >= `variance` of the variance), `explained_variance_ratio`
        of those `k`, and `k`.
    """
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    centred = x - mean
    # The eigenvectors of the D x D scatter matrix are the right singular
    # vectors of the centred data (its eigenvalues the squared singular
    # values); for 8000 x 784 this is ~5x faster than a full SVD.
    evals, evecs = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    ratio = evals / np.sum(evals)
    k = int(np.argmax(np.cumsum(ratio) >= variance)) + 1
    return {"mean": mean, "components": evecs[:, order[:k]].T,
            "explained_variance_ratio": ratio[:k], "k": k}


def pca_reconstruct(images, pca):
    """Reconstructs uint8 images from the PCA's components."""
    shape = images.shape
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    v = pca["components"]
    recon = pca["mean"] + ((x - pca["mean"]) @ v.T) @ v
    recon = np.clip(np.round(recon * 255.0), 0, 255).astype(np.uint8)
    return recon.reshape(shape)


def degrade_waveform(samples, rng, snr_db=SNR_DB, clip_samples=CLIP_SAMPLES):
    """First `clip_samples` of int16 `samples`, zero-padded, plus white noise.

    Returns:
        (int16 noisy clip, rescaled): `rescaled` is True when the clip was
        scaled down to stay within full scale (the SNR is kept).
    """
    x = np.zeros(clip_samples)
    head = _io.from_pcm16(samples[:clip_samples])
    x[:len(head)] = head
    power = np.mean(x ** 2)
    noise_power = power * 10.0 ** (-snr_db / 10.0)
    y = x + np.sqrt(noise_power) * rng.standard_normal(clip_samples)
    peak = np.max(np.abs(y))
    rescaled = bool(peak > _FULL_SCALE)
    if rescaled:
        y *= _FULL_SCALE / peak
    return _io.to_pcm16(y), rescaled


def build_av_mnist(mnist_dir, fsdd_dir, out_dir, variant="clean", seed=0,
                   limit=None, audio_paths="absolute", overwrite=False):
    """Builds AV-MNIST into `out_dir` (see the module docs for the recipe).

    Args:
        mnist_dir: folder with `t10k-images-idx3-ubyte.gz` and
            `t10k-labels-idx1-ubyte.gz`.
        fsdd_dir: the FSDD folder (holding `recordings/`) or its recordings.
        out_dir: output folder; written atomically (a temporary sibling
            folder renamed into place at the end).
        variant: `"clean"` or `"degraded"`.
        seed: the seed of the split, the pairing and the noise.
        limit: keep only the first `limit` rows of each split (for quick
            tests); None keeps all 8,000 / 2,000.
        audio_paths: clean variant only: `"absolute"` or `"relative"` (to
            the manifest's folder) paths of the original FSDD files.
        overwrite: replace an existing non-empty `out_dir`.

    Returns:
        The dict written to `av_mnist.json`, plus `"out_dir"`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of "
                         f"{', '.join(VARIANTS)}")
    if audio_paths not in ("absolute", "relative"):
        raise ValueError(f"audio_paths={audio_paths!r} is not one of "
                         "absolute, relative")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit={limit!r} must be a positive integer or None")
    start = time.perf_counter()
    out_dir = os.path.abspath(os.fspath(out_dir))
    _io.check_output_dir(out_dir, overwrite)     # before any heavy work
    images, labels = load_mnist(mnist_dir)
    if len(images) <= NUM_TRAIN:
        raise DataError(f"expected the 10,000 MNIST test images, found "
                        f"{len(images)}", file=mnist_dir)
    recordings = list_fsdd(fsdd_dir)
    train_idx, test_idx = split_indices(len(images), seed)
    splits = [("train", 0, train_idx, _pools(recordings, TRAIN_TAKES)),
              ("test", 1, test_idx, _pools(recordings, TEST_TAKES))]
    pca = fit_pca(images[train_idx]) if variant == "degraded" else None

    info = {
        "name": "av_mnist", "variant": variant, "seed": int(seed),
        "limit": None if limit is None else int(limit),
        "full_sizes": {"train": int(len(train_idx)),
                       "test": int(len(test_idx))},
        "sizes": {}, "num_classes": 10,
        "class_names": [str(d) for d in range(10)],
        "fsdd_takes": {"train": list(TRAIN_TAKES), "test": list(TEST_TAKES)},
        "columns": list(COLUMNS),
        "sources": {"mnist": os.path.abspath(mnist_dir),
                    "fsdd": os.path.abspath(fsdd_recordings_dir(fsdd_dir))},
    }
    if variant == "clean":
        info["audio"] = {"copied": False, "paths": audio_paths,
                         "sample_rate": SAMPLE_RATE}
    else:
        info["pca"] = {
            "fitted_on": "train images (all 8000), pixels / 255",
            "variance_target": PCA_VARIANCE, "components": pca["k"],
            "explained_variance_ratio": [
                float(v) for v in pca["explained_variance_ratio"]],
            "explained_variance_total": float(
                np.sum(pca["explained_variance_ratio"])),
        }
        info["audio"] = {"copied": True, "sample_rate": SAMPLE_RATE,
                         "clip_samples": CLIP_SAMPLES, "snr_db": SNR_DB,
                         "noise": "white Gaussian, power 10**0.3 x mean power "
                                  "of the zero-padded 1 s clip",
                         "rescaled_clips": 0}

    with _io.staging_dir(out_dir, overwrite=overwrite) as tmp:
        for split, split_id, idx, pools in splits:
            pairs = pair_recordings(labels[idx], pools, seed, split_id)
            if limit is not None:
                idx, pairs = idx[:int(limit)], pairs[:int(limit)]
            split_images = images[idx]
            if pca is not None:
                split_images = pca_reconstruct(split_images, pca)
            os.makedirs(os.path.join(tmp, split, "images"))
            if variant == "degraded":
                os.makedirs(os.path.join(tmp, split, "audio"))
            rows = []
            for i, (mnist_index, pair) in enumerate(zip(idx, pairs)):
                digit, speaker, take, src = pair
                image_rel = f"{split}/images/{int(mnist_index):05d}.png"
                _io.write_png(os.path.join(tmp, image_rel), split_images[i])
                if variant == "clean":
                    audio = src if audio_paths == "absolute" else \
                        os.path.relpath(src, out_dir)
                else:
                    samples, rate = _io.read_wav(src)
                    if rate != SAMPLE_RATE:
                        raise DataError(
                            f"sample rate {rate} Hz, expected {SAMPLE_RATE} "
                            "Hz", file=src, reason="bad_audio")
                    rng = np.random.default_rng([seed, 3, split_id, i])
                    noisy, rescaled = degrade_waveform(samples, rng)
                    info["audio"]["rescaled_clips"] += int(rescaled)
                    audio = (f"{split}/audio/{int(mnist_index):05d}_{digit}_"
                             f"{speaker}_{take}.wav")
                    _io.write_wav(os.path.join(tmp, audio), noisy,
                                  SAMPLE_RATE)
                rows.append({"image": image_rel, "audio": audio,
                             "label": int(labels[mnist_index]),
                             "mnist_index": int(mnist_index),
                             "audio_digit": digit, "speaker": speaker,
                             "take": take})
            _io.write_manifest(os.path.join(tmp, f"{split}.csv"), COLUMNS,
                               rows)
            info["sizes"][split] = len(rows)
        _io.write_json(os.path.join(tmp, "av_mnist.json"), info)
    info["out_dir"] = out_dir
    info["seconds"] = time.perf_counter() - start
    return info


def main(argv=None):
    """`python -m keras_mm.datasets.av_mnist --mnist DIR --fsdd DIR --out DIR`."""
    p = _io.mnist_fsdd_arguments(__doc__.split("\n")[0], VARIANTS)
    p.add_argument("--audio-paths", choices=("absolute", "relative"),
                   default="absolute")
    a = p.parse_args(argv)
    return _io.run_builder(
        lambda: build_av_mnist(a.mnist, a.fsdd, a.out, variant=a.variant,
                               seed=a.seed, limit=a.limit,
                               audio_paths=a.audio_paths,
                               overwrite=a.overwrite),
        lambda info: f"AV-MNIST ({info['variant']}, seed {info['seed']}): "
                     f"{info['sizes']['train']} train / "
                     f"{info['sizes']['test']} test rows in "
                     f"{info['out_dir']} ({info['seconds']:.1f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
