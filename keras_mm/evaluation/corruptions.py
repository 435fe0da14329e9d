"""Seeded noise on a preprocessor's PARSED values, one severity level.

The robustness report (`keras_mm.evaluation.robustness`) passes these to
`Pipeline.dataset(..., corrupt=...)`: the noise is added after `parse` and
before `transform`, so the model sees what a noisy raw input would give.
Level 0 returns the values unchanged (bitwise); levels `1..levels` grow
linearly in severity:

- image (and video, per frame): Gaussian pixel noise, std =
  `0.5 * level / levels` of the pixel range (255), clipped to [0, 255];
- audio: white noise at an SNR from 20 dB (level 1) to -5 dB (level
  `levels`), in equal steps; the clean power is the clip's own mean square
  over its non-padded span (up to its last non-zero sample) and the noise
  is scaled to that SNR exactly, inside the span only;
- text (`TextPreprocessor`): a fraction `0.5 * level / levels` of the
  tokens replaced by `[UNK]`; padding (id 0) and the reserved tokens
  (`[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`...) are never touched;
- sensor: Gaussian noise of `level / levels` times each channel's training
  std, and a fraction `0.5 * level / levels` of the time steps dropped (NaN,
  which `transform` masks as missing);
- tabular: numeric columns get Gaussian noise of `level / levels` times
  their training std; a fraction `0.5 * level / levels` of the categorical
  cells is blanked (missing).

Absent examples (`<name>_present = 0`) are left as they are. Each
example's draw is a stateless function of `(seed, level, input name,
the example's clean values)`: the same for every model evaluated with the
same seed, whatever the batch size.
"""

import zlib

import tensorflow as tf

IMAGE_MAX_STD = 0.5        # of the pixel range, at the last level
PIXEL_RANGE = 255.0
SNR_FIRST_DB, SNR_LAST_DB = 20.0, -5.0
MAX_RATE = 0.5             # text replacement / sensor drop / cell blanking
SENSOR_MAX_STD = 1.0       # of the channel std, at the last level


def severity(kind, level, levels):
    """The corruption's parameters at `level` (JSON-ready dict)."""
    level, levels = int(level), int(levels)
    t = level / levels if levels else 0.0
    if kind in ("image", "video"):
        return {"pixel_std_fraction": IMAGE_MAX_STD * t}
    if kind == "audio":
        if level == 0:
            return {"snr_db": None}
        step = (SNR_FIRST_DB - SNR_LAST_DB) / max(levels - 1, 1)
        return {"snr_db": SNR_FIRST_DB - step * (level - 1)}
    if kind == "text":
        return {"replace_rate": MAX_RATE * t}
    if kind == "sensor":
        return {"std_fraction": SENSOR_MAX_STD * t, "drop_rate": MAX_RATE * t}
    if kind == "tabular":
        return {"std_fraction": SENSOR_MAX_STD * t,
                "missing_rate": MAX_RATE * t}
    raise ValueError(f"no corruption for modality {kind!r}")


def corruption_kind(preprocessor):
    """The corruption family of a preprocessor, or `(None, why)`."""
    from keras_mm.data.text_preprocessor import TextPreprocessor

    kind = getattr(preprocessor, "modality", None)
    if kind == "text" and not isinstance(preprocessor, TextPreprocessor):
        return None, (f"{type(preprocessor).__name__}: its special token "
                      "ids are not known here; no text noise")
    if kind in ("image", "video", "audio", "text", "sensor", "tabular"):
        return kind, None
    return None, (f"{type(preprocessor).__name__} (modality {kind!r}): no "
                  "corruption defined for this kind")


def _example_seeds(values, seed, level, name):
    """int64 `[B, 2]`: per example, from its clean values."""
    base = (int(seed) * 1000003 + int(level) * 7919
            + zlib.crc32(name.encode("utf-8"))) % (2 ** 62)
    flat = tf.reshape(values, [tf.shape(values)[0], -1])
    if flat.dtype != tf.string:
        flat = tf.where(tf.math.is_nan(tf.cast(flat, tf.float32)),
                        tf.zeros_like(flat), flat) \
            if flat.dtype.is_floating else flat
    digest = tf.bitcast(tf.fingerprint(flat), tf.int64)
    return tf.stack([tf.fill(tf.shape(digest), tf.constant(base, tf.int64)),
                     digest], axis=1)


def _draw(seeds, shape, dist):
    """Per-example stateless draws, float32 `[B, *shape]`."""
    def one(s):
        if dist == "normal":
            return tf.random.stateless_normal(shape, seed=s)
        return tf.random.stateless_uniform(shape, seed=s)
    return tf.map_fn(one, seeds, fn_output_signature=tf.TensorSpec(
        shape, tf.float32))


def _present(parsed, key, batch):
    if key in parsed:
        return tf.cast(parsed[key], tf.float32) > 0
    return tf.ones([batch], tf.bool)


def _expand(mask, rank):
    return tf.reshape(mask, [-1] + [1] * (rank - 1))


def corrupt_parsed(preprocessor, parsed, level, levels=5, seed=0):
    """One preprocessor's batched parse outputs with the noise of `level`.

    Args:
        preprocessor: the fitted preprocessor that parsed them.
        parsed: `{key: batched tensor}` (`preprocessor.parse` outputs).
        level: 0 (clean: returned unchanged) to `levels`.
        levels: the number of severity levels.
        seed: the corruption's seed.

    Returns:
        The same keys, dtypes and shapes.

    Example:

    >>> noisy = corrupt_parsed(pre, {"image": images,      # doctest: +SKIP
    ...                              "image_present": present}, level=2)
    """
    level, levels = int(level), int(levels)
    if not 0 <= level <= levels:
        raise ValueError(f"level={level}: must be in 0..{levels}")
    if level == 0:
        return dict(parsed)
    kind, why = corruption_kind(preprocessor)
    if kind is None:
        raise ValueError(why)
    name = preprocessor.name
    params = severity(kind, level, levels)
    out = dict(parsed)
    present_key = f"{name}_present"
    if kind == "tabular":
        return _tabular(preprocessor, out, params, level, seed)
    x = tf.convert_to_tensor(parsed[name])
    batch = tf.shape(x)[0]
    present = _present(parsed, present_key, batch)
    seeds = _example_seeds(x, seed, level, name)
    shape = x.shape[1:]
    if kind in ("image", "video"):
        noise = _draw(seeds, shape, "normal") * (
            params["pixel_std_fraction"] * PIXEL_RANGE)
        keep = _expand(present, len(x.shape))
        if kind == "video" and f"{name}_mask" in parsed:
            frames = tf.cast(parsed[f"{name}_mask"], tf.bool)
            keep = tf.logical_and(keep, tf.reshape(
                frames, [-1, shape[0]] + [1] * (len(shape) - 1)))
        noisy = tf.clip_by_value(x + noise, 0.0, PIXEL_RANGE)
        out[name] = tf.where(keep, noisy, x)
    elif kind == "audio":
        out[name] = _audio(x, present, seeds, params["snr_db"])
    elif kind == "text":
        reserved = len(preprocessor.reserved_tokens)
        unk = preprocessor.vocab.index("[UNK]")
        u = _draw(seeds, shape, "uniform")
        hit = (x >= reserved) & (u < params["replace_rate"]) & \
            _expand(present, 2)
        out[name] = tf.where(hit, tf.cast(unk, x.dtype), x)
    elif kind == "sensor":
        std = getattr(preprocessor, "std", None) or [1.0] * shape[-1]
        noise = _draw(seeds, shape, "normal") * tf.constant(
            [params["std_fraction"] * float(s) for s in std], tf.float32)
        u = _draw(seeds[:, ::-1], shape[:1], "uniform")
        drop = (u < params["drop_rate"])[:, :, None]
        keep = _expand(present, 3)
        noisy = tf.where(drop, tf.fill(tf.shape(x), float("nan")), x + noise)
        out[name] = tf.where(keep, noisy, x)
    return out


def _audio(x, present, seeds, snr_db):
    nonzero = tf.cast(tf.not_equal(x, 0.0), tf.int32)
    steps = tf.shape(x)[1]
    idx = tf.range(steps)[None, :]
    last = tf.reduce_max(tf.where(nonzero > 0, idx + 1, 0), axis=1)
    span = idx < last[:, None]
    spanf = tf.cast(span, tf.float32)
    count = tf.maximum(tf.reduce_sum(spanf, axis=1), 1.0)
    power = tf.reduce_sum(tf.square(x) * spanf, axis=1) / count
    noise = _draw(seeds, x.shape[1:], "normal") * spanf
    noise_power = tf.reduce_sum(tf.square(noise), axis=1) / count
    target = power / (10.0 ** (snr_db / 10.0))
    scale = tf.sqrt(tf.math.divide_no_nan(target, noise_power))
    keep = tf.logical_and(present, last > 0)[:, None]
    return tf.where(keep, x + noise * scale[:, None], x)


def _tabular(pre, out, params, level, seed):
    name = pre.name
    num_key, cat_key = f"{name}_numeric", f"{name}_categorical"
    ref = out.get(num_key, out.get(cat_key))
    batch = tf.shape(ref)[0]
    present = _present(out, f"{name}_present", batch)
    if num_key in out:
        x = tf.convert_to_tensor(out[num_key])
        seeds = _example_seeds(x, seed, level, name)
        var = getattr(pre, "variance", None) or [1.0] * x.shape[-1]
        noise = _draw(seeds, x.shape[1:], "normal") * tf.constant(
            [params["std_fraction"] * float(v) ** 0.5 for v in var],
            tf.float32)
        out[num_key] = tf.where(present[:, None], x + noise, x)
    if cat_key in out:
        c = tf.convert_to_tensor(out[cat_key])
        seeds = _example_seeds(c, seed, level, name + "/categorical")
        u = _draw(seeds, c.shape[1:], "uniform")
        blank = (u < params["missing_rate"]) & present[:, None]
        out[cat_key] = tf.where(blank, tf.fill(tf.shape(c), ""), c)
    return out


def make_corrupt(preprocessors, name, level, levels=5, seed=0):
    """A `Pipeline.dataset(corrupt=...)` callable that corrupts input
    `name` at `level` and leaves the other inputs as they are."""
    pre = preprocessors[name]

    def corrupt(parsed):
        parsed = dict(parsed)
        parsed[name] = corrupt_parsed(pre, parsed[name], level, levels, seed)
        return parsed

    return corrupt
