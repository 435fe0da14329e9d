"""What one file holds, from its first bytes (header-only reads).

`probe_file(path)` tells which modality the toolkit would read a file as
(`image`, `audio`, `sensor` or `video`) by its magic bytes, and the sizes
the preprocessors need: image height / width / channels (the height and
width from `keras_mm.ops.image_header`, the toolkit's own header reader),
animated GIF frame counts, WAV sample rate / channels / duration (a walk of
the RIFF chunks in the first 64 KiB), `.npy` shapes (the NPY header only)
and sensor CSV shapes `[T, C]`.

The magic bytes decide, not the extension: a `.png` holding JPEG bytes is
an image, a `.png` holding WAV bytes is audio (the mismatch is reported in
`note`), and a file whose bytes the toolkit cannot read is refused with a
`DataError` naming the file and saying what it would read instead.
"""

import dataclasses
import os

from keras_mm.errors import DataError

#: Bytes read from each file for its header.
HEADER_BYTES = 64 * 1024
#: The largest sensor CSV read to count its rows.
MAX_CSV_BYTES = 64 << 20

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
AUDIO_EXTENSIONS = (".wav", ".wave")
SENSOR_EXTENSIONS = (".npy", ".csv", ".tsv")
#: Video containers keras_mm has no decoder for (core TF decodes none).
VIDEO_CONTAINERS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm",
                    ".mpg", ".mpeg")
FILE_EXTENSIONS = (IMAGE_EXTENSIONS + AUDIO_EXTENSIONS + SENSOR_EXTENSIONS
                   + VIDEO_CONTAINERS)
READABLE = ("PNG, JPEG, GIF, BMP or WebP images, 16-bit PCM WAV audio, "
            ".npy or numeric .csv series, animated GIF video")


@dataclasses.dataclass
class FileInfo:
    """One probed file.

    Attributes:
        path: the file.
        kind: `image`, `audio`, `sensor` or `video` (an animated GIF).
        format: `PNG`, `JPEG`, `GIF`, `BMP`, `WebP`, `WAV`, `NPY` or `CSV`.
        shape: image `[H, W, C]`; video `[frames, H, W, C]`; sensor
            `[T, C]`; audio `[samples]`.
        sample_rate: audio only.
        channels: image / video / audio / sensor channels.
        note: a remark (e.g. the extension does not match the bytes).
    """

    path: str
    kind: str
    format: str
    shape: list
    sample_rate: int = None
    channels: int = None
    note: str = None


def _magic(head):
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and len(head) >= 26:
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV"
    if head.startswith(b"\x93NUMPY"):
        return "NPY"
    if head[4:8] == b"ftyp":
        return "MP4/MOV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "Matroska/WebM"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(
            b"\x00\x00\x01\xb3"):
        return "MPEG"
    return None


_KIND_OF_EXTENSION = {
    **{e: "image" for e in IMAGE_EXTENSIONS},
    **{e: "audio" for e in AUDIO_EXTENSIONS},
    **{e: "sensor" for e in SENSOR_EXTENSIONS},
    **{e: "video" for e in VIDEO_CONTAINERS},
}
_FORMAT_OF_EXTENSION = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG",
                        ".gif": "GIF", ".bmp": "BMP", ".webp": "WebP",
                        ".wav": "WAV", ".wave": "WAV", ".npy": "NPY",
                        ".csv": "CSV", ".tsv": "CSV"}


def looks_like_file(value):
    """Whether a manifest cell names a file by its extension."""
    return isinstance(value, str) and value.lower().endswith(FILE_EXTENSIONS)


def _image_info(path, head, fmt):
    import tensorflow as tf
    from PIL import Image

    from keras_mm.ops.image_header import image_header
    try:
        _, height, width = image_header(tf.constant(head))
        height, width = int(height), int(width)
    except tf.errors.OpError:   # a JPEG whose SOF lies past the prefix
        height = width = 0
    try:
        with Image.open(path) as image:
            mode = image.mode
            frames = getattr(image, "n_frames", 1) if fmt == "GIF" else 1
            if not height or not width:
                width, height = image.size
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read this {fmt} image ({e}); re-save it or "
                        "remove the row", file=path) from None
    channels = 1 if mode in ("1", "L", "I", "I;16", "F") else \
        4 if mode in ("RGBA", "LA", "PA") else 3
    if mode == "P":
        channels = 3
    if frames > 1:
        return FileInfo(path, "video", fmt, [frames, height, width, channels],
                        channels=channels)
    return FileInfo(path, "image", fmt, [height, width, channels],
                    channels=channels)


def wav_header(head, path, file_size=None):
    """`(sample_rate, channels, frames)` of 16-bit PCM WAV bytes, from a
    walk of the RIFF chunks in `head` (the file's first bytes)."""
    fmt, data_start, data_size = None, None, None
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8],
                                                        "little")
        if chunk == b"fmt " and fmt is None:
            fmt = head[pos + 8:pos + 8 + size]
        elif chunk == b"data":
            data_start, data_size = pos + 8, size
            break
        pos += 8 + size + size % 2
    if fmt is None or len(fmt) < 16 or data_start is None:
        missing = "fmt" if fmt is None else "data"
        raise DataError(f"this WAV file has no {missing} "
                        f"chunk in its first {HEADER_BYTES // 1024} KiB "
                        "(truncated or not a WAV file); re-save it as 16-bit "
                        "PCM WAV", file=path)
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    bits = int.from_bytes(fmt[14:16], "little")
    if tag not in (1, 0xFFFE) or bits != 16 or channels < 1:
        raise DataError(f"this WAV file is format tag {tag}, {bits}-bit: "
                        "keras_mm reads 16-bit PCM WAV only; convert it, e.g. "
                        "`sox in.wav -b 16 -e signed-integer out.wav`",
                        file=path)
    if file_size is not None:
        data_size = min(data_size, max(file_size - data_start, 0))
    return rate, channels, data_size // (2 * channels)


def _npy_info(path):
    import numpy as np
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, _ = read(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read this .npy header ({e})",
                        file=path) from None
    if len(shape) == 1:
        shape = (shape[0], 1)
    if len(shape) != 2:
        raise DataError(f"this .npy array has shape {list(shape)}; a series "
                        "is [T] or [T, channels]", file=path)
    return FileInfo(path, "sensor", "NPY", [int(shape[0]), int(shape[1])],
                    channels=int(shape[1]))


def _number(text):
    text = text.strip()
    if text.lower() in ("", "nan"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def _csv_info(path, size):
    if size > MAX_CSV_BYTES:
        raise DataError(f"this sensor CSV has {size:,} bytes, above the "
                        f"{MAX_CSV_BYTES >> 20} MiB read to infer its shape; "
                        "save long series as .npy", file=path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and not all(_number(v) for v in lines[0].split(delimiter)):
        lines = lines[1:]      # a header line (the toolkit's header="auto")
    if not lines or not all(_number(v) for v in lines[0].split(delimiter)):
        return None
    widths = {len(line.split(delimiter)) for line in lines}
    if len(widths) != 1:
        raise DataError(f"this sensor CSV has rows of {sorted(widths)} "
                        "fields; every row needs one value per channel",
                        file=path)
    channels = widths.pop()
    return FileInfo(path, "sensor", "CSV", [len(lines), channels],
                    channels=channels)


def probe_file(path):
    """Probes one file: its kind, format and shape (see `FileInfo`).

    Raises:
        DataError: the file cannot be opened, is a video container the
            toolkit has no decoder for, or holds bytes of no readable kind;
            the message names the file and what to do.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as e:
        raise DataError(f"cannot read this file ({e.strerror})",
                        file=path) from None
    if not head:
        raise DataError("the file is empty", file=path)
    ext = os.path.splitext(path)[1].lower()
    fmt = _magic(head)
    if fmt in ("MP4/MOV", "AVI", "Matroska/WebM", "MPEG"):
        raise DataError(f"a {fmt} video: keras_mm has no decoder for video "
                        "containers (core TensorFlow has none); extract the "
                        "frames (e.g. `ffmpeg -i clip.mp4 f_%03d.png`) and "
                        "list them in the cell separated by '|', or save "
                        "an animated GIF", file=path)
    if fmt is None and ext in (".csv", ".tsv"):
        info = _csv_info(path, size)
        if info is not None:
            return info
    if fmt is None:
        expected = _FORMAT_OF_EXTENSION.get(ext)
        said = f"its extension says {expected} but " if expected else ""
        raise DataError(f"{said}its bytes are not of a kind keras_mm reads "
                        f"({READABLE}); fix or remove the file", file=path)
    if fmt == "WAV":
        rate, channels, frames = wav_header(head, path, size)
        info = FileInfo(path, "audio", "WAV", [frames], sample_rate=rate,
                        channels=channels)
    elif fmt == "NPY":
        info = _npy_info(path)
    else:
        info = _image_info(path, head if fmt != "GIF" else _whole(path),
                           fmt)
    expected = _FORMAT_OF_EXTENSION.get(ext)
    if expected is not None and expected != info.format:
        info.note = (f"extension {ext} but {info.format} bytes: read as "
                     f"{info.kind} ({info.format})")
    return info


def _whole(path):
    with open(path, "rb") as f:
        return f.read()

