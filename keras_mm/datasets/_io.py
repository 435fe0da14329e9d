"""File helpers shared by the data-set builders (private).

Everything written here is deterministic: the same arrays give the same bytes
(Pillow's PNG writer stores no timestamp, `wave` stores no date, CSV files use
`\\n` line ends and fixed number formats).
"""

import contextlib
import csv
import json
import os
import shutil
import tempfile
import wave

import numpy as np
from PIL import Image

from keras_mm.errors import DataError


def write_png(path, pixels):
    """Writes a uint8 `[H, W]` (grayscale) or `[H, W, 3]` (RGB) array."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ValueError(f"write_png({path}): expected [H, W] or [H, W, 3], "
                         f"got {pixels.shape}")
    # uint8 [H, W] -> mode "L", [H, W, 3] -> "RGB" (inferred by Pillow).
    Image.fromarray(pixels).save(path, format="PNG")


def to_pcm16(waveform):
    """float waveform in [-1, 1) -> int16 samples (x 32768, rounded, clipped).

    The inverse of `from_pcm16`: `to_pcm16(from_pcm16(s)) == s`.
    """
    samples = np.round(np.asarray(waveform, dtype=np.float64) * 32768.0)
    return np.clip(samples, -32768, 32767).astype("<i2")


def from_pcm16(samples):
    """int16 samples -> float64 waveform in [-1, 1) (divided by 32768)."""
    return np.asarray(samples, dtype=np.float64) / 32768.0


def write_wav(path, samples, sample_rate):
    """Writes int16 mono samples as a 16-bit PCM WAV file."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        raise TypeError(f"write_wav({path}): samples must be int16, got "
                        f"{samples.dtype}")
    with wave.open(os.fspath(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(samples.astype("<i2").tobytes())


def read_wav(path):
    """Reads a 16-bit PCM mono WAV -> (int16 samples, sample_rate).

    Raises:
        DataError: naming the file, when it is not 16-bit PCM mono.
    """
    try:
        with wave.open(os.fspath(path), "rb") as f:
            channels, width = f.getnchannels(), f.getsampwidth()
            rate, frames = f.getframerate(), f.getnframes()
            data = f.readframes(frames)
    except (wave.Error, EOFError) as e:
        raise DataError(f"not a readable PCM WAV file ({e})", file=path,
                        reason="bad_audio") from e
    if channels != 1 or width != 2:
        raise DataError(
            f"expected 16-bit mono PCM, got {channels} channel(s) of "
            f"{8 * width}-bit samples", file=path, reason="bad_audio")
    return np.frombuffer(data, dtype="<i2").astype(np.int16), rate


def write_manifest(path, columns, rows):
    """Writes a CSV manifest (header + rows) with `\\n` line ends."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _is_nonempty_dir(path):
    return os.path.isdir(path) and bool(os.listdir(path))


def check_output_dir(out_dir, overwrite):
    """Raises FileExistsError when `out_dir` holds files and not overwrite."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a folder; choose "
                              "another output folder")
    if _is_nonempty_dir(out_dir) and not overwrite:
        raise FileExistsError(
            f"{out_dir} already exists and is not empty; pass "
            "overwrite=True (CLI: --overwrite) or choose another folder")


@contextlib.contextmanager
def staging_dir(out_dir, overwrite=False):
    """Yields a temporary sibling folder that replaces `out_dir` on success.

    An interrupted or failed build leaves no half-written `out_dir`: files
    are written into `.<name>.tmp-XXXX` next to it and the folder is renamed
    into place only after everything was written. On failure the temporary
    folder is removed.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    check_output_dir(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-",
                           dir=parent)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        old = None
        if os.path.isdir(out_dir):
            check_output_dir(out_dir, overwrite)
            old = tempfile.mkdtemp(
                prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "d"))
        os.rename(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def mnist_fsdd_arguments(description, variants):
    """The argparse parser of the MNIST + FSDD builders' `main` (`--mnist`,
    `--fsdd`, `--out`, `--variant`, `--seed`, `--limit`, `--overwrite`)."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--mnist", required=True, help="MNIST IDX folder")
    p.add_argument("--fsdd", required=True, help="FSDD folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--variant", choices=variants, default="clean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    return p


def run_builder(build, say):
    """`main`'s exit code: 0 after `say(build())` is printed, 1 with the
    error on stderr."""
    import sys

    from keras_mm.errors import KerasMMError

    try:
        result = build()
    except (KerasMMError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(say(result))
    return 0
