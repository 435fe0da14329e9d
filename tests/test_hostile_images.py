"""Hostile images and video frames: decompression bombs, palette BMPs.

Every size is read from the header before decoding (keras_mm.ops.
image_header), so an image above `max_pixels` costs a header read in
serving and in the training pipeline (where it is a bad record). The
20000 x 20000 PNG bomb is only ever handed to a subprocess.
"""

import csv
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mm.data import ImagePreprocessor
from keras_mm.data import VideoPreprocessor
from keras_mm.data.image_preprocessor import DEFAULT_MAX_PIXELS
from keras_mm.data.image_preprocessor import _to_channels
from keras_mm.data.image_preprocessor import resize_image
from keras_mm.data.pipeline import Pipeline
from keras_mm.errors import DataError
from keras_mm.ops import image_header

RNG = np.random.default_rng(13)
LABELS = {"label": {"type": "classification", "class_names": ["a", "b"]}}


def encode(array, fmt, **kwargs):
    buffer = io.BytesIO()
    image = array if isinstance(array, Image.Image) else \
        Image.fromarray(array)
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def serve(pre, raws):
    """The serving path: pre(raw) in a tf.function over raw_signature()."""
    signature = pre.raw_signature()
    key = next(iter(signature))
    fn = tf.function(lambda raw: pre(raw), input_signature=[signature])
    out = fn({key: tf.constant(raws, tf.string)})
    return {k: v.numpy() for k, v in out.items()}


def png_bomb(height, width):
    """An RGB PNG of zeros, `height` x `width`, written with zlib + struct.

    The zlib stream repeats one fully flushed deflate block of 500 rows
    (a full flush resets the compressor, so the block is the same bytes
    each time), then an empty final block and the Adler-32 of the data:
    a valid PNG of about 1 MB for 20000 x 20000, built in well under a
    second, without 1.2 GB in memory.
    """
    row = b"\0" * (1 + 3 * width)          # filter byte + RGB zeros
    rows_per_block = 500
    assert height % rows_per_block == 0
    chunk = row * rows_per_block
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // rows_per_block):
        adler = zlib.adler32(chunk, adler)
    final = zlib.compressobj(9, zlib.DEFLATED, -15)
    idat = (b"\x78\xda" + block * (height // rows_per_block)
            + final.flush(zlib.Z_FINISH) + struct.pack(">I", adler))

    def chunk_bytes(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk_bytes(b"IHDR", ihdr)
            + chunk_bytes(b"IDAT", idat) + chunk_bytes(b"IEND", b""))


def test_png_bomb_writer_is_a_valid_stream():
    # A small instance, decoded for real: the same construction as the
    # 20000 x 20000 file the subprocess test refuses.
    data = png_bomb(1000, 7)
    assert np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).shape \
        == (1000, 7, 3)
    assert not np.asarray(Image.open(io.BytesIO(data))).any()


# -- headers -------------------------------------------------------------------

HEADER_CASES = [("PNG", {}), ("PNG", {"mode": "L"}), ("JPEG", {}),
                ("GIF", {}), ("BMP", {}), ("BMP", {"mode": "P"}),
                ("WEBP", {"lossless": False}), ("WEBP", {"lossless": True})]


@pytest.mark.parametrize("fmt,options", HEADER_CASES)
def test_header_gives_the_size_pillow_wrote(fmt, options):
    options = dict(options)
    mode = options.pop("mode", "RGB")
    for height, width in ((7, 13), (300, 2)):
        image = Image.fromarray(RNG.integers(
            0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
        data = encode(image, fmt, **options)
        code, h, w = image_header.image_header(tf.constant(data))
        assert image_header.FORMATS[int(code)] == \
            {"WEBP": "WebP"}.get(fmt, fmt)
        assert (int(h), int(w)) == (height, width)
    code, h, w = image_header.image_header(tf.constant(b"GIF89a"))
    assert (int(code), int(h), int(w)) == (image_header.GIF, 0, 0)
    assert int(image_header.image_header(
        tf.constant(b"not an image"))[0]) == image_header.UNKNOWN


def test_header_of_a_top_down_bmp():
    # A negative BMP height means rows stored top-down.
    data = bytearray(encode(np.zeros((5, 3, 3), np.uint8), "BMP"))
    data[22:26] = struct.pack("<i", -5)
    assert [int(v) for v in image_header.image_header(
        tf.constant(bytes(data)))[1:]] == [5, 3]


# -- max_pixels ---------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_image_above_max_pixels_is_refused_naming_it(fmt):
    data = encode(RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8), fmt)
    name = {"WEBP": "WebP"}.get(fmt, fmt)
    pre = ImagePreprocessor("img", size=(4, 4), max_pixels=599)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        serve(pre, [data])
    message = info.value.message
    for part in (f"input `img`: the {name} image is", "20", "30",
                 "max_pixels=599"):
        assert part in message, (part, message)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="max_pixels=599"):
        pre.parse(tf.constant(data))                      # eager too
    # At the limit it decodes.
    at_limit = ImagePreprocessor("img", size=(4, 4), max_pixels=600)
    assert serve(at_limit, [data])["img_present"].tolist() == [1.0]


def test_zero_size_header_is_refused_as_damaged():
    pre = ImagePreprocessor("img", size=(4, 4))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input `img`: the GIF header gives a size of"):
        serve(pre, [b"GIF89a" + b"\0" * 7])


def test_max_pixels_default_config_and_validation():
    pre = ImagePreprocessor("img", size=(4, 4))
    assert pre.max_pixels == DEFAULT_MAX_PIXELS == 40_000_000
    config = json.loads(json.dumps(pre.get_config()))
    assert config["max_pixels"] == DEFAULT_MAX_PIXELS
    clone = ImagePreprocessor.from_config(dict(config, max_pixels=50))
    assert clone.max_pixels == 50
    assert VideoPreprocessor("v", max_pixels=9).get_config()[
        "max_pixels"] == 9
    for cls in (ImagePreprocessor, VideoPreprocessor):
        with pytest.raises(ValueError, match=r"max_pixels=0 must be a "
                                             "positive integer"):
            cls("x", max_pixels=0)


def test_video_frame_and_gif_above_max_pixels_are_refused():
    small = encode(np.zeros((4, 4, 3), np.uint8), "PNG")
    big = encode(np.zeros((10, 12, 3), np.uint8), "PNG")
    frames = VideoPreprocessor("clip", num_frames=2, size=(4, 4),
                               max_pixels=100)
    assert serve(frames, [[small, small]])["clip_present"].tolist() == [1.0]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input `clip` \(a frame\): the PNG image is"):
        serve(frames, [[small, big]])
    images = [Image.fromarray(np.full((10, 12, 3), v, np.uint8))
              for v in (0, 90)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True,
                   append_images=images[1:])
    gif = VideoPreprocessor("clip", num_frames=2, size=(4, 4), source="gif",
                            max_pixels=119)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input `clip` \(GIF clip\): the GIF image is"):
        serve(gif, [buffer.getvalue()])
    gif_ok = VideoPreprocessor("clip", num_frames=2, size=(4, 4),
                               source="gif", max_pixels=120)
    assert serve(gif_ok, [buffer.getvalue()])["clip_present"].tolist() == [1]


def gif_of_frames(width, height, frames):
    """A GIF (bytes, by hand) of a `width` x `height` canvas and `frames`
    image descriptors of one pixel each: a few bytes a frame, while
    `tf.io.decode_gif` allocates the whole canvas for every frame."""
    head = (b"GIF89a" + struct.pack("<HH", width, height) +
            b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff")
    frame = (b"\x21\xf9\x04\x00\x00\x00\x00\x00"       # graphic control
             b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00"
             b"\x02\x02\x44\x01\x00")                      # 1-pixel LZW data
    return head + frame * frames + b"\x3b"


@pytest.mark.parametrize("frames, size, optimize", [
    (1, (8, 8), False), (3, (16, 10), True), (40, (33, 20), False)])
def test_gif_frame_count_equals_pillow(frames, size, optimize):
    rng = np.random.default_rng(frames)
    images = [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3),
                                           dtype=np.uint8))
              for _ in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, optimize=optimize,
                   append_images=images[1:], duration=40, loop=0,
                   comment=b"x" * 300)
    data = buffer.getvalue()
    want = Image.open(io.BytesIO(data)).n_frames
    assert want == frames
    assert int(image_header.gif_frame_count(tf.constant(data))) == want
    assert int(tf.shape(tf.io.decode_gif(data))[0]) == want
    # Cut short: the frames whose image descriptor is there.
    assert int(image_header.gif_frame_count(tf.constant(
        data[:len(data) // 2]))) < want
    assert int(image_header.gif_frame_count(tf.constant(
        gif_of_frames(5, 4, 7)))) == 7
    for other in (b"", b"GIF8", encode(np.zeros((4, 4, 3), np.uint8), "PNG")):
        assert int(image_header.gif_frame_count(tf.constant(other))) == 0


def test_gif_with_too_many_frames_is_refused_before_decoding():
    """40 one-pixel frames on a 2000 x 2000 canvas: 1 KB of GIF that
    tf.io.decode_gif decodes into 480 MB (160 megapixels, above the
    default max_clip_pixels); refused by its frame count (each frame is
    within max_pixels). A million frames would be 23 MB of GIF."""
    bomb = gif_of_frames(2000, 2000, 40)
    assert len(bomb) < 1_000
    gif = VideoPreprocessor("clip", num_frames=2, size=(4, 4), source="gif")
    assert gif.get_config()["max_clip_pixels"] == 2 ** 27
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input `clip` \(GIF clip\): the GIF has\D*40"
                             r"\D*frames of\D*2000\D*2000\D*pixels, more than "
                             r"max_clip_pixels=134217728"):
        serve(gif, [bomb])
    small = VideoPreprocessor("clip", num_frames=2, size=(4, 4),
                              source="gif", max_clip_pixels=3 * 5 * 4)
    assert serve(small, [gif_of_frames(5, 4, 3)])["clip_mask"].tolist() == [
        [True, True]]
    with pytest.raises(tf.errors.InvalidArgumentError, match="the GIF has"):
        serve(small, [gif_of_frames(5, 4, 4)])


# -- resize before float --------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("preserve_aspect,antialias",
                         [(False, False), (True, False), (False, True)])
def test_uint8_resize_equals_the_float_first_path(channels, preserve_aspect,
                                                  antialias):
    # The old order (float32 full size, channels, resize) is the reference:
    # channel selection commutes bitwise with the resize; RGB -> grey is a
    # weighted sum, equal within float rounding (1e-3 of 0..255).
    raws = [encode(RNG.integers(0, 256, (17, 23, c), dtype=np.uint8)
                   .squeeze(), "PNG") for c in (1, 3, 4)]
    pre = ImagePreprocessor("img", size=(6, 5), channels=channels,
                            preserve_aspect=preserve_aspect,
                            antialias=antialias, scale=1.0)
    got = serve(pre, raws)["img"]
    for raw, image in zip(raws, got):
        full = tf.cast(tf.io.decode_png(raw), tf.float32)
        full = _to_channels(full, channels)
        expected = resize_image(full, (6, 5), preserve_aspect, antialias)
        source_channels = tf.io.decode_png(raw).shape[-1]
        if channels == 1 and source_channels >= 3:
            np.testing.assert_allclose(image, expected, atol=1e-3, rtol=0)
        else:
            np.testing.assert_array_equal(image, expected)


# -- palette BMP --------------------------------------------------------------

def palette_bmp(height=6, width=9, colours=40):
    palette = RNG.integers(0, 256, (colours, 3), dtype=np.uint8)
    indices = RNG.integers(0, colours, (height, width), dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    return encode(image, "BMP")


def test_palette_bmp_decodes_to_pillows_colours():
    data = palette_bmp()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    rgb = ImagePreprocessor("img", size=(6, 9), channels=3, scale=1.0)
    np.testing.assert_array_equal(serve(rgb, [data])["img"][0], expected)
    np.testing.assert_array_equal(rgb.parse(tf.constant(data))["img"],
                                  expected)
    rgba = ImagePreprocessor("img", size=(6, 9), channels=4, scale=1.0)
    np.testing.assert_array_equal(serve(rgba, [data])["img"][0],
                                  np.asarray(Image.open(io.BytesIO(data))
                                             .convert("RGBA")))
    grey = ImagePreprocessor("img", size=(6, 9), channels=1, scale=1.0)
    np.testing.assert_allclose(
        serve(grey, [data])["img"][0, ..., 0],
        np.asarray(Image.open(io.BytesIO(data)).convert("L")),
        atol=0.51, rtol=0)
    # Video frames share the decoder.
    video = VideoPreprocessor("clip", num_frames=1, size=(6, 9), scale=1.0)
    np.testing.assert_array_equal(serve(video, [[data]])["clip"][0, 0],
                                  expected)


def test_grey_palette_bmp_stays_exact_grey():
    grey = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    data = encode(grey, "BMP")               # Pillow: 8-bit, grey palette
    pre = ImagePreprocessor("g", size=(5, 7), channels=1, scale=1.0)
    np.testing.assert_array_equal(serve(pre, [data])["g"][0, ..., 0], grey)


# -- the training pipeline: a bad record ----------------------------------------

def write_manifest(folder, images, prefix="img"):
    folder = str(folder)
    rows = []
    for i, data in enumerate(images):
        path = os.path.join(folder, f"{prefix}{i}.png")
        with open(path, "wb") as f:
            f.write(data)
        rows.append({"image": f"{prefix}{i}.png", "label": "ab"[i % 2]})
    path = os.path.join(folder, "train.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_pipeline_counts_an_oversized_image_as_a_bad_record(tmp_path):
    small = [encode(np.full((8, 8, 3), 10 * i, np.uint8), "PNG")
             for i in range(3)]
    big = encode(np.zeros((20, 30, 3), np.uint8), "PNG")
    manifest = write_manifest(tmp_path, [small[0], big, small[1], small[2]])

    def pipeline(policy):
        pre = ImagePreprocessor("image", size=(8, 8), max_pixels=599)
        return Pipeline(manifest, {"image": pre}, labels=LABELS,
                        bad_input=policy, keep_present=True)

    with pytest.raises(DataError, match=r"row 2, column 'image'.*"
                                        r"PNG image is.*max_pixels=599"):
        pipeline("error").validate()
    pipe = pipeline("skip")
    images = np.concatenate([f["image"].numpy()
                             for f, _ in pipe.dataset(batch_size=2)])
    rows = pipe.report.rows
    assert [(r["row"], r["reason"], r["action"]) for r in rows] == [
        (2, "decode_error", "skipped")]
    assert "max_pixels=599" in rows[0]["detail"]
    assert "b'" not in rows[0]["detail"] and "\\x" not in rows[0]["detail"]
    np.testing.assert_allclose(images[:, 0, 0, 0] * 255, [0, 10, 20],
                               atol=1e-4)
    pipe = pipeline("missing")
    present = np.concatenate([f["image_present"].numpy()
                              for f, _ in pipe.dataset(batch_size=2)])
    np.testing.assert_array_equal(present, [1, 0, 1, 1])


# -- the bomb, measured in a subprocess -----------------------------------------

BOMB_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import tensorflow as tf
    from keras_mm.data import ImagePreprocessor
    from keras_mm.data.pipeline import Pipeline

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    bomb_path, small_path, warm_csv, junk_csv, bomb_csv = sys.argv[1:6]
    bomb = open(bomb_path, "rb").read()
    small = open(small_path, "rb").read()
    pre = ImagePreprocessor("image", size=(8, 8))
    fn = tf.function(lambda raw: pre(raw),
                     input_signature=[pre.raw_signature()])
    fn({"image": tf.constant([small])})               # trace and warm up
    result = {"bomb_bytes": len(bomb)}
    before, start = peak_mb(), time.perf_counter()
    try:
        fn({"image": tf.constant([bomb])})
        result["serving"] = "answered"
    except tf.errors.InvalidArgumentError as e:
        result["serving"] = e.message
    result["serving_s"] = time.perf_counter() - start
    result["serving_mb"] = peak_mb() - before

    labels = {"label": {"type": "classification", "class_names": ["a", "b"]}}
    def run(manifest):
        pipe = Pipeline(manifest, {"image": pre}, labels=labels,
                        bad_input="skip")
        n = sum(int(f["image"].shape[0]) for f, _ in pipe.dataset(2))
        return pipe, n
    run(warm_csv)                         # warm-up (first tracing)
    # Each manifest twice, alternated, the faster run kept: a load spike on
    # a shared machine in one run does not decide the comparison.
    junk_s, bomb_s = [], []
    before = peak_mb()
    for _ in range(2):
        start = time.perf_counter()
        run(junk_csv)             # the same work, an ordinary bad record
        junk_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        pipe, n = run(bomb_csv)
        bomb_s.append(time.perf_counter() - start)
    result["junk_s"], result["pipeline_s"] = min(junk_s), min(bomb_s)
    result["pipeline_mb"] = peak_mb() - before
    result["kept"] = n
    result["rows"] = pipe.report.rows
    print("RESULT " + json.dumps(result))
""")


def test_20000_square_png_bomb_is_refused_fast_and_small(tmp_path):
    bomb = png_bomb(20000, 20000)
    assert 0.9e6 < len(bomb) < 1.5e6          # about 1 MB compressed
    (tmp_path / "bomb.png").write_bytes(bomb)
    small = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    (tmp_path / "small.png").write_bytes(small)
    warm_dir, junk_dir, bomb_dir = (tmp_path / "warm", tmp_path / "junk",
                                    tmp_path / "bombed")
    for folder in (warm_dir, junk_dir, bomb_dir):
        folder.mkdir()
    warm_csv = write_manifest(warm_dir, [small, b"junk", small, small],
                              prefix="warm")
    junk_csv = write_manifest(junk_dir, [small, b"not an image", small,
                                         small], prefix="junk")
    bomb_csv = write_manifest(bomb_dir, [small, bomb, small, small])
    script = (
        "import resource\n"
        # A safety net: the old decoder took 6.9 GB on this file.
        "resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))\n"
        + BOMB_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "bomb.png"),
         str(tmp_path / "small.png"), warm_csv, junk_csv, bomb_csv],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    print({k: v for k, v in result.items() if k != "rows"})
    # Serving: refused in under 1 s with under 100 MB of extra peak RSS.
    assert "the PNG image is" in result["serving"], result
    assert "20000" in result["serving"] and \
        "max_pixels=40000000" in result["serving"]
    assert result["serving_s"] < 1.0, result
    assert result["serving_mb"] < 100, result
    # Pipeline: a bad record (skipped), at the cost of any bad record
    # (the same manifest with undecodable bytes in that row), + < 1 s.
    assert [(r["row"], r["reason"]) for r in result["rows"]] == [
        (2, "decode_error")], result
    assert "max_pixels=40000000" in result["rows"][0]["detail"]
    assert result["kept"] == 3
    assert result["pipeline_s"] < result["junk_s"] + 1.0, result
    assert result["pipeline_mb"] < 100, result
