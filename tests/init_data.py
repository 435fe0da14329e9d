"""Small generated data sets for the `keras-mm init` tests: real files
written with Pillow, `wave` and NumPy, where the class shows in every
modality (bright / dark images, high / low tones, rising / falling
series, words)."""

import csv
import os
import wave

import numpy as np
from PIL import Image

CLASSES = ("dark", "bright")


def write_image(path, size=(12, 10), channels=3, level=0.5, fmt=None,
                seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[0], size[1]) + ((channels,) if channels > 1 else ())
    pixels = np.clip(level * 255 + rng.normal(0, 20, shape), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    image.save(path, format=fmt or os.path.splitext(path)[1][1:].upper()
               .replace("JPG", "JPEG"))
    return path


def write_wav(path, seconds=0.25, rate=8000, freq=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.repeat(samples, channels).tobytes())
    return path


def write_gif(path, frames=4, size=(8, 8), level=0.5):
    images = [Image.fromarray(np.full(size + (3,), int(level * 255 * (i + 1)
                                                       / frames), np.uint8))
              for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:],
                   duration=50, loop=0)
    return path


def series(steps, channels, rising):
    t = np.linspace(0, 1, steps)[:, None]
    return (t if rising else 1 - t) * np.ones((1, channels))


def write_sensor_csv(path, steps=20, channels=3, rising=True):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"ch{i}" for i in range(channels)])
        writer.writerows(np.round(series(steps, channels, rising), 4))
    return path


def write_npy(path, steps=20, channels=2, rising=True):
    np.save(path, series(steps, channels, rising).astype(np.float32))
    return path


def image_folder(root, per_class=10, splits=False):
    """`root/<class>/<i>.png` (or under train/ and test/ with
    `splits=True`)."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            split = ("test" if i % 5 == 0 else "train") if splits else ""
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            write_image(os.path.join(folder, f"{i}.png"), size=(16, 16),
                        level=0.2 + 0.6 * c, seed=i)
    return root


def six_modality_csv(root, rows=24):
    """`root/data.csv` with image, audio, video (GIF), sensor (CSV file),
    text, numeric and categorical columns and a `label` column."""
    files = os.path.join(root, "files")
    os.makedirs(files, exist_ok=True)
    lines = []
    words = {0: "a quiet small dark grey thing", 1: "a loud big bright "
             "shiny thing"}
    for i in range(rows):
        c = i % 2
        lines.append({
            "photo": os.path.relpath(write_image(
                os.path.join(files, f"p{i}.jpg"), size=(20, 16),
                level=0.2 + 0.6 * c, seed=i), root),
            "speech": os.path.relpath(write_wav(
                os.path.join(files, f"s{i}.wav"), seconds=0.2 + 0.01 * i,
                freq=300 + 500 * c), root),
            "clip": os.path.relpath(write_gif(
                os.path.join(files, f"v{i}.gif"), frames=3 + i % 3,
                level=0.3 + 0.6 * c), root),
            "imu": os.path.relpath(write_sensor_csv(
                os.path.join(files, f"m{i}.csv"), steps=10 + i,
                rising=bool(c)), root),
            "caption": f"{words[c]} number {i}",
            "weight": f"{1.5 * c + 0.1 * i:.2f}",
            "colour": ("red", "blue", "green")[(i + c) % 3],
            "label": CLASSES[c],
        })
    path = os.path.join(root, "data.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    return path
