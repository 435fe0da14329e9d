"""Image dimensions read from the file header, with core TF string ops.

`image_header(contents)` reads the format, height and width of PNG, JPEG,
GIF, BMP and WebP bytes *without decoding the pixels* (`tf.strings.substr`
and `tf.io.decode_raw` on a fixed 64-byte prefix; `tf.image.extract_jpeg_shape`
for JPEG, which reads the SOF marker only). It runs in `tf.data` and inside
a SavedModel, so a preprocessor can refuse a decompression bomb (a small
file that decodes to billions of pixels) before allocating it:
`check_image_size(...)` does that with an in-graph assertion whose message
holds only safe text (the input name, the format, the dimensions and the
limit; never bytes of the input).

`bmp_palette(contents)` gives the colour table of an 8-bit (palette) BMP,
which `tf.io.decode_bmp` returns as raw indices.
"""

import tensorflow as tf

#: Format codes of `image_header`, indices into `FORMATS`.
FORMATS = ("unknown", "PNG", "JPEG", "GIF", "BMP", "WebP")
UNKNOWN, PNG, JPEG, GIF, BMP, WEBP = range(6)

_PREFIX = 64


def _prefix(contents):
    """The first 64 bytes as uint8 `[64]` (zero-padded when shorter)."""
    head = tf.strings.substr(contents, 0, _PREFIX)
    head = tf.strings.join([head, tf.constant(b"\0" * _PREFIX)])
    head = tf.strings.substr(head, 0, _PREFIX)
    return tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)


def _int(b, offset, size, big_endian=False):
    """Unsigned integer of `size` bytes at `offset` of the int64 vector b."""
    value = tf.constant(0, tf.int64)
    order = range(size) if big_endian else reversed(range(size))
    for i in order:
        value = value * 256 + b[offset + i]
    return value


def _matches(b, offset, magic):
    return tf.reduce_all(tf.equal(
        b[offset:offset + len(magic)],
        tf.constant(list(magic), tf.int64)))


def image_header(contents):
    """`(format, height, width)` of encoded image bytes, from the header.

    Args:
        contents: scalar string tensor.

    Returns:
        `format` int32 (an index into `FORMATS`; 0 = not recognised, then
        height and width are 0), `height` and `width` int64 (as the header
        states them; a BMP's negative height, meaning top-down, is given
        as its absolute value).
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    b = _prefix(contents)
    zero = tf.constant(0, tf.int64)

    png = _matches(b, 0, b"\x89PNG\r\n\x1a\n") & _matches(b, 12, b"IHDR")
    gif = _matches(b, 0, b"GIF8")
    bmp = _matches(b, 0, b"BM")
    webp = _matches(b, 0, b"RIFF") & _matches(b, 8, b"WEBP")
    jpeg = tf.io.is_jpeg(contents)

    png_hw = (_int(b, 20, 4, True), _int(b, 16, 4, True))
    gif_hw = (_int(b, 8, 2), _int(b, 6, 2))
    # BMP: BITMAPCOREHEADER (12 bytes) has 16-bit sizes, the others
    # signed 32-bit ones.
    core = tf.equal(_int(b, 14, 4), 12)
    signed_h = _int(b, 22, 4)
    signed_h = tf.where(signed_h >= 2 ** 31, signed_h - 2 ** 32, signed_h)
    signed_w = _int(b, 18, 4)
    signed_w = tf.where(signed_w >= 2 ** 31, signed_w - 2 ** 32, signed_w)
    bmp_hw = (tf.where(core, _int(b, 20, 2), tf.abs(signed_h)),
              tf.where(core, _int(b, 18, 2), signed_w))
    # WebP: lossy "VP8 ", lossless "VP8L" or extended "VP8X".
    vp8 = _matches(b, 12, b"VP8 ")
    vp8l = _matches(b, 12, b"VP8L")
    bits = _int(b, 21, 4)
    webp_hw = (
        tf.where(vp8, _int(b, 28, 2) % 16384,
                 tf.where(vp8l, (bits // 16384) % 16384 + 1,
                          _int(b, 27, 3) + 1)),
        tf.where(vp8, _int(b, 26, 2) % 16384,
                 tf.where(vp8l, bits % 16384 + 1, _int(b, 24, 3) + 1)))

    def jpeg_hw():
        shape = tf.cast(tf.image.extract_jpeg_shape(contents), tf.int64)
        return shape[0], shape[1]

    jpeg_h, jpeg_w = tf.cond(jpeg, jpeg_hw, lambda: (zero, zero))
    fmt = tf.constant(UNKNOWN, tf.int32)
    height = width = zero
    # Later entries win; the signatures exclude each other.
    for flag, code, (h, w) in ((png, PNG, png_hw), (gif, GIF, gif_hw),
                               (bmp, BMP, bmp_hw), (webp, WEBP, webp_hw),
                               (jpeg, JPEG, (jpeg_h, jpeg_w))):
        fmt = tf.where(flag, tf.constant(code, tf.int32), fmt)
        height = tf.where(flag, h, height)
        width = tf.where(flag, w, width)
    return fmt, height, width


def check_image_size(contents, max_pixels, what):
    """Assertion ops refusing an image larger than `max_pixels`.

    Reads the header only (see `image_header`). Use the returned ops as
    control dependencies of the decoding. The message names `what` (e.g.
    "input `image`"; no single quote, so eager messages print it plainly),
    the format, the dimensions and the limit, and holds no byte of the
    input.

    Returns:
        `(checks, (format, height, width))`.
    """
    fmt, height, width = image_header(contents)
    pixels = height * width
    checks = []
    for code in (PNG, JPEG, GIF, BMP, WEBP):
        name = FORMATS[code]
        is_it = tf.equal(fmt, code)
        checks.append(tf.debugging.Assert(
            tf.logical_not(is_it) | (pixels <= max_pixels),
            [f"{what}: the {name} image is", height, "x", width,
             f"pixels (height x width), more than max_pixels={max_pixels}; "
             "shrink the image, or raise max_pixels of the "
             "preprocessor if such images are expected"], summarize=3))
        checks.append(tf.debugging.Assert(
            tf.logical_not(is_it) | ((height > 0) & (width > 0)),
            [f"{what}: the {name} header gives a size of", height, "x",
             width, "pixels; the file is damaged: replace it"], summarize=3))
    return checks, (fmt, height, width)


def bmp_palette(contents):
    """`(is_palette, colours)` of a BMP: is_palette is True for an 8-bit
    BMP (whose pixels `tf.io.decode_bmp` returns as indices); colours is
    uint8 `[256, 3]` RGB (entries the file does not define are black)."""
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    b = _prefix(contents)
    bmp = _matches(b, 0, b"BM")
    dib = _int(b, 14, 4)
    core = tf.equal(dib, 12)
    bit_count = tf.where(core, _int(b, 24, 2), _int(b, 28, 2))
    used = tf.where(core, tf.zeros_like(dib), _int(b, 46, 4))
    used = tf.where((used <= 0) | (used > 256),
                    tf.constant(256, tf.int64), used)
    entry = tf.where(core, tf.constant(3, tf.int64), 4)
    is_palette = bmp & tf.equal(bit_count, 8)
    start = tf.where(is_palette, 14 + dib, 0)
    length = tf.where(is_palette, used * entry, 0)
    table = tf.strings.substr(contents, tf.minimum(
        start, tf.cast(tf.strings.length(contents), tf.int64)), length)
    raw = tf.io.decode_raw(table, tf.uint8)
    n = tf.size(raw, out_type=tf.int64) // entry
    raw = tf.reshape(raw[:n * entry], tf.stack([n, entry]))
    bgr = raw[:, :3]
    rgb = tf.reverse(bgr, axis=[1])
    none = tf.zeros_like(n)
    colours = tf.pad(rgb, tf.reshape(tf.stack([none, 256 - n, none, none]),
                                     [2, 2]))
    return is_palette, tf.ensure_shape(colours, [256, 3])


def gif_frame_count(contents):
    """The number of frames of GIF bytes, from its block structure.

    Walks the blocks (extensions, image descriptors and their data
    sub-blocks) without decoding a pixel: one loop step per block or
    sub-block (at most 255 bytes each), so the cost is linear in the file
    size. `tf.io.decode_gif` allocates frames x height x width x 3 bytes;
    this lets a preprocessor refuse an animation of a million frames
    before that. Counting stops at the trailer, at a byte that starts no
    block, or at the end of the bytes.

    Args:
        contents: scalar string tensor (GIF bytes; others give 0).

    Returns:
        int64 scalar.
    """
    contents = tf.reshape(tf.convert_to_tensor(contents, tf.string), [])
    data = tf.cast(tf.io.decode_raw(contents, tf.uint8), tf.int64)
    n = tf.size(data, out_type=tf.int64)

    def at(pos):
        """The byte at `pos`, or -1 past the end."""
        safe = tf.minimum(pos, tf.maximum(n - 1, 0))
        return tf.where(pos < n, tf.gather(tf.concat([data, [-1]], 0), safe),
                        tf.constant(-1, tf.int64))

    def table(packed):
        return tf.where(packed >= 128, 3 * tf.bitwise.left_shift(
            tf.constant(2, tf.int64), packed % 8), 0)

    is_gif = (n >= 13) & tf.strings.regex_full_match(
        tf.strings.substr(contents, 0, 6), "GIF8[79]a")
    start = 13 + table(at(tf.constant(10, tf.int64)))
    # state 0: at a block; 1: in a block's data sub-blocks; 2: finished.
    state = tf.where(is_gif, tf.constant(0, tf.int64), 2)

    def step(pos, frames, state):
        byte = at(pos)
        in_data = tf.equal(state, 1)
        end_of_data = in_data & tf.equal(byte, 0)
        extension = tf.equal(state, 0) & tf.equal(byte, 0x21)
        image = tf.equal(state, 0) & tf.equal(byte, 0x2C)
        new_pos = tf.where(
            end_of_data, pos + 1,
            tf.where(in_data, pos + byte + 1,
                     tf.where(extension, pos + 2,
                              pos + 11 + table(at(pos + 9)))))
        new_state = tf.where(
            end_of_data, tf.constant(0, tf.int64),
            tf.where(in_data | extension | image, tf.constant(1, tf.int64),
                     tf.constant(2, tf.int64)))
        return new_pos, frames + tf.cast(image, tf.int64), new_state

    _, frames, _ = tf.while_loop(
        lambda pos, frames, state: (state < 2) & (pos < n), step,
        (start, tf.constant(0, tf.int64), state))
    return frames
