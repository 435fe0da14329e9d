"""The embedded demo set: small, deterministic, and only fusion solves it.

`make_demo_dataset(out_dir, seed=0)` writes real files - PNG images, WAV
audio, sensor CSV files - and one CSV manifest per split; the text lives in
the manifest. `ensure_demo_dataset(out_dir)` builds it only when absent.

Construction. There are 4 classes, the pairs of two hidden bits `(a, b)`:

| label | a (colour) | b (pitch) |
|---|---|---|
| `warm_low`  | 0 warm | 0 low  |
| `warm_high` | 0 warm | 1 high |
| `cool_low`  | 1 cool | 0 low  |
| `cool_high` | 1 cool | 1 high |

- image (32x32 RGB PNG): a filled circle or square (random shape, position
  and size) on a random grey background with Gaussian pixel noise; its hue
  is warm (red-yellow) for `a = 0` and cool (cyan-blue) for `a = 1`.
  Shape, size, position, brightness and background carry no information.
  The image tells `a` and nothing about `b`: alone it reaches ~50%.
- audio (WAV, 16-bit PCM, 8 kHz, 0.5 s): one tone with a smooth envelope at
  a random onset, plus white noise; its pitch is 220-440 Hz for `b = 0` and
  880-1760 Hz for `b = 1`. Amplitude, onset, length and noise level carry no
  information. Alone it reaches ~50%.
- text (manifest column `text`): a short phrase of random filler words
  holding one cue word that says whether the two bits agree (`a XOR b`:
  "matching"/"alike"/"consistent" for 0, "contrasting"/"mismatched"/
  "different" for 1); the cue is right with probability 0.9. Alone the text
  tells only the parity, so it reaches ~50% (45% with the cue noise).
- sensor (CSV, `[50, 3]` float, headerless, one row per step): channel 0
  drifts up for `b = 1` and down for `b = 0` - a noisy cue, agreeing with
  `b` for 75% of the examples - channel 1 is a sine of random frequency and
  channel 2 a random walk (both uninformative); Gaussian noise on all.
  Alone it reaches ~37%.

So every modality alone is at or below ~50%, while image + audio determine
the class exactly (and image + text or audio + text reach ~90%): only a
fused model classifies the set well. Labels are balanced in every split.

Determinism: example `i` of split `s` draws everything from
`np.random.default_rng([seed, s, i])`; PNG (Pillow), WAV (`wave`) and CSV
(fixed `%.5f` format, `\\n` line ends) writing stores no timestamps. The same
seed gives byte-identical files; another seed gives other files.

Output (`out_dir`):
```
train.csv, val.csv, test.csv   columns: image, audio, text, sensor, label,
                               label_id (image/audio/sensor paths relative
                               to the manifest's folder)
demo.json                      seed, sizes, class names, file formats
train/images/0000.png, train/audio/0000.wav, train/sensor/0000.csv, ...
```

Example:

>>> info = ensure_demo_dataset("data/demo")          # doctest: +SKIP
>>> info["class_names"]                              # doctest: +SKIP
['warm_low', 'warm_high', 'cool_low', 'cool_high']
"""

import argparse
import colorsys
import json
import os
import sys

import numpy as np

from keras_mm.datasets import _io
from keras_mm.errors import KerasMMError

CLASS_NAMES = ("warm_low", "warm_high", "cool_low", "cool_high")
SPLITS = ("train", "val", "test")
COLUMNS = ("image", "audio", "text", "sensor", "label", "label_id")
IMAGE_SIZE = 32
SAMPLE_RATE = 8000
AUDIO_SAMPLES = 4000          # 0.5 s
SENSOR_STEPS = 50
SENSOR_CHANNELS = 3
TEXT_RELIABILITY = 0.9
SENSOR_RELIABILITY = 0.75
LOW_PITCH = (220.0, 440.0)
HIGH_PITCH = (880.0, 1760.0)
_CUE_WORDS = (("matching", "alike", "consistent"),
              ("contrasting", "mismatched", "different"))
_OPENERS = ("a", "one", "this", "another", "the")
_SUBJECTS = ("sample", "recording", "item", "example", "capture", "reading")
_FILLERS = ("today", "indoors", "outdoors", "again", "quietly", "at noon",
            "from the lab", "in the field", "once more", "", "", "")
_DEFAULT_SIZES = {"train": 600, "val": 150, "test": 150}


def class_bits(label_id):
    """`(a, b)`: the colour bit and the pitch bit of a class id."""
    return label_id // 2, label_id % 2


def _image(rng, a):
    size = IMAGE_SIZE
    grey = rng.uniform(60.0, 160.0)
    img = np.full((size, size, 3), grey)
    hue = rng.uniform(-0.04, 0.12) % 1.0 if a == 0 else rng.uniform(0.5, 0.68)
    colour = 255.0 * np.array(colorsys.hsv_to_rgb(
        hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)))
    radius = rng.uniform(5.0, 9.0)
    cy, cx = rng.uniform(10.0, size - 10.0, size=2)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if rng.random() < 0.5:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    else:
        inside = (np.abs(yy - cy) <= radius * 0.85) & \
            (np.abs(xx - cx) <= radius * 0.85)
    img[inside] = colour
    img += rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _audio(rng, b):
    low, high = LOW_PITCH if b == 0 else HIGH_PITCH
    freq = rng.uniform(low, high)
    amplitude = rng.uniform(0.15, 0.5)
    length = int(rng.uniform(0.2, 0.35) * SAMPLE_RATE)
    onset = int(rng.uniform(0.0, 0.5 * SAMPLE_RATE - length))
    t = np.arange(length) / SAMPLE_RATE
    tone = amplitude * np.hanning(length) * np.sin(
        2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    wave = np.zeros(AUDIO_SAMPLES)
    wave[onset:onset + length] = tone
    wave += rng.normal(0.0, rng.uniform(0.005, 0.03), size=AUDIO_SAMPLES)
    return _io.to_pcm16(np.clip(wave, -1.0, 32767 / 32768))


def _text(rng, a, b):
    parity = a ^ b
    if rng.random() >= TEXT_RELIABILITY:
        parity = 1 - parity
    words = [rng.choice(_OPENERS), rng.choice(_SUBJECTS),
             rng.choice(_CUE_WORDS[parity]), rng.choice(_FILLERS)]
    return " ".join(w for w in words if w)


def _sensor(rng, b):
    cue = b if rng.random() < SENSOR_RELIABILITY else 1 - b
    t = np.linspace(0.0, 1.0, SENSOR_STEPS)
    slope = rng.uniform(0.5, 1.5) * (1.0 if cue == 1 else -1.0)
    x = np.empty((SENSOR_STEPS, SENSOR_CHANNELS))
    x[:, 0] = rng.normal(0.0, 0.5) + slope * t
    x[:, 1] = rng.uniform(0.2, 1.0) * np.sin(
        2 * np.pi * rng.uniform(1.0, 6.0) * t + rng.uniform(0, 2 * np.pi))
    x[:, 2] = np.cumsum(rng.normal(0.0, 0.1, SENSOR_STEPS))
    x += rng.normal(0.0, 0.3, size=x.shape)
    return x


def _write_sensor(path, x):
    np.savetxt(path, x, fmt="%.5f", delimiter=",", newline="\n")


def _balanced_labels(n, seed, split_id):
    labels = np.arange(n) % len(CLASS_NAMES)
    return np.random.default_rng([seed, split_id, 1 << 30]).permutation(labels)


def _params(seed, num_train, num_val, num_test):
    return {"seed": int(seed), "sizes": {"train": int(num_train),
                                         "val": int(num_val),
                                         "test": int(num_test)}}


def make_demo_dataset(out_dir, seed=0, num_train=600, num_val=150,
                      num_test=150, overwrite=False):
    """Writes the demo set into `out_dir` (atomically); see the module docs.

    Args:
        out_dir: output folder (must be absent or empty unless `overwrite`).
        seed: the seed of every random draw.
        num_train, num_val, num_test: examples per split (0 skips a split's
            examples but still writes its manifest header).
        overwrite: replace an existing non-empty `out_dir`.

    Returns:
        The dict written to `demo.json`, plus `"out_dir"`.
    """
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    for split, n in sizes.items():
        if int(n) != n or n < 0:
            raise ValueError(f"num_{split}={n!r} must be an integer >= 0")
    out_dir = os.path.abspath(os.fspath(out_dir))
    info = {"name": "demo", **_params(seed, num_train, num_val, num_test),
            "class_names": list(CLASS_NAMES),
            "num_classes": len(CLASS_NAMES),
            "columns": list(COLUMNS),
            "image": {"height": IMAGE_SIZE, "width": IMAGE_SIZE,
                      "channels": 3, "format": "png", "cue": "hue -> bit a"},
            "audio": {"sample_rate": SAMPLE_RATE, "samples": AUDIO_SAMPLES,
                      "format": "wav pcm16 mono", "cue": "pitch -> bit b"},
            "text": {"cue": "a xor b", "reliability": TEXT_RELIABILITY},
            "sensor": {"steps": SENSOR_STEPS, "channels": SENSOR_CHANNELS,
                       "format": "csv %.5f, no header",
                       "cue": "channel 0 slope -> bit b",
                       "reliability": SENSOR_RELIABILITY}}
    with _io.staging_dir(out_dir, overwrite=overwrite) as tmp:
        for split_id, split in enumerate(SPLITS):
            n = int(sizes[split])
            for sub in ("images", "audio", "sensor"):
                os.makedirs(os.path.join(tmp, split, sub))
            width = max(4, len(str(max(n - 1, 0))))
            rows = []
            for i, label_id in enumerate(_balanced_labels(n, seed, split_id)):
                label_id = int(label_id)
                a, b = class_bits(label_id)
                rng = np.random.default_rng([seed, split_id, i])
                stem = f"{i:0{width}d}"
                row = {"image": f"{split}/images/{stem}.png",
                       "audio": f"{split}/audio/{stem}.wav",
                       "sensor": f"{split}/sensor/{stem}.csv",
                       "label": CLASS_NAMES[label_id], "label_id": label_id}
                _io.write_png(os.path.join(tmp, row["image"]), _image(rng, a))
                _io.write_wav(os.path.join(tmp, row["audio"]), _audio(rng, b),
                              SAMPLE_RATE)
                row["text"] = _text(rng, a, b)
                _write_sensor(os.path.join(tmp, row["sensor"]), _sensor(rng, b))
                rows.append(row)
            _io.write_manifest(os.path.join(tmp, f"{split}.csv"), COLUMNS,
                               rows)
        _io.write_json(os.path.join(tmp, "demo.json"), info)
    info["out_dir"] = out_dir
    return info


def _is_complete(out_dir):
    return all(os.path.isfile(os.path.join(out_dir, name))
               for name in ("demo.json", "train.csv", "val.csv", "test.csv"))


def ensure_demo_dataset(out_dir, seed=0, num_train=600, num_val=150,
                        num_test=150):
    """Builds the demo set into `out_dir` unless a complete one is there.

    The set is written into a temporary folder and renamed into place, so an
    interrupted run never leaves a half-written `out_dir`; when another
    process finishes first, its set is used.

    Returns:
        The content of `demo.json`, plus `"out_dir"` and `"created"` (True
        when this call built the set).

    Raises:
        FileExistsError: `out_dir` holds other files, or a demo set built
            with another seed or other sizes (delete it or choose another
            folder).
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    wanted = _params(seed, num_train, num_val, num_test)

    def existing():
        with open(os.path.join(out_dir, "demo.json"), encoding="utf-8") as f:
            info = json.load(f)
        have = {"seed": info.get("seed"), "sizes": info.get("sizes")}
        if have != wanted:
            raise FileExistsError(
                f"{out_dir} holds a demo set built with {have}, not "
                f"{wanted}; delete that folder or choose another one")
        info.update(out_dir=out_dir, created=False)
        return info

    if _is_complete(out_dir):
        return existing()
    try:
        info = make_demo_dataset(out_dir, seed=seed, num_train=num_train,
                                 num_val=num_val, num_test=num_test)
    except OSError:
        if _is_complete(out_dir):       # another process won the race
            return existing()
        raise
    info["created"] = True
    return info


def main(argv=None):
    """`python -m keras_mm.datasets.demo --out DIR [--seed N]`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=_DEFAULT_SIZES["train"])
    p.add_argument("--num-val", type=int, default=_DEFAULT_SIZES["val"])
    p.add_argument("--num-test", type=int, default=_DEFAULT_SIZES["test"])
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        info = make_demo_dataset(a.out, seed=a.seed, num_train=a.num_train,
                                 num_val=a.num_val, num_test=a.num_test,
                                 overwrite=a.overwrite)
    except (KerasMMError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"demo set (seed {info['seed']}): {info['sizes']} in "
          f"{info['out_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
