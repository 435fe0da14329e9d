"""Which modality each manifest column holds, inferred from its content.

`infer_columns(rows, root, ...)` looks at every column of a manifest's rows:

- cells naming files (by extension, or an existing file) are probed with
  `keras_mm.inference.file_probe.probe_file` on a bounded sample: images,
  WAV audio, `.npy` / numeric `.csv` series, animated GIFs (video); a cell
  holding several image paths (`a.png|b.png`, or a JSON list) is a video
  given as frames. The magic bytes decide the kind;
- numbers are numeric tabular features;
- strings with at least `TEXT_MIN_WORDS` words on average (or longer than
  `TEXT_MIN_CHARS` characters) are text; other strings with at most
  `MAX_CATEGORIES` distinct values are categorical; short strings unique to
  almost every row (ids, keys) are reported as ignored;
- the label is the column named with `label=`, else the first of
  `LABEL_NAMES`; its values choose the head: strings or few distinct
  integers -> classification, other numbers -> regression.

Sizes come from the TRAIN rows: the percentile `LENGTH_PERCENTILE` of
series / audio / text lengths, with the number of training examples it
would truncate.
"""

import math
import os
import random
import re

from keras_mm.errors import DataError
from keras_mm.inference.file_probe import looks_like_file, probe_file

LABEL_NAMES = ("label", "labels", "target", "class", "y")
SPLIT_COLUMN = "split"
TEXT_MIN_WORDS = 3
TEXT_MIN_CHARS = 24
MAX_CATEGORIES = 50
MAX_CLASSES = 100
LENGTH_PERCENTILE = 95
#: Files probed per column (a seeded sample of the training rows).
DEFAULT_SAMPLE = 64
#: Upper bounds of the inferred sizes (small models for a first run).
MAX_IMAGE_SIDE = 128
MAX_FRAME_SIDE = 64
MAX_FRAMES = 16
MAX_AUDIO_SECONDS = 10.0
MAX_SERIES_LENGTH = 1024
MAX_TEXT_TOKENS = 256
PATH_SEPARATOR = "|"


def is_empty(value):
    return value is None or value == "" or value == [] or (
        isinstance(value, float) and math.isnan(value))


def percentile(values, q=LENGTH_PERCENTILE):
    """The nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def length_summary(lengths, chosen):
    """min / median / max, the chosen length and how many exceed it."""
    ordered = sorted(lengths)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2],
            "max": ordered[-1], "chosen": chosen,
            "truncated": sum(1 for n in lengths if n > chosen),
            "of": len(lengths)}


def find_label(columns, label=None):
    """The label column: `label` if given (it must exist), else the first
    column named as in `LABEL_NAMES` (case-insensitive)."""
    if label is not None:
        if label not in columns:
            raise DataError(f"--label {label!r} is not a column; the columns "
                            f"are {', '.join(columns)}")
        return label
    for name in LABEL_NAMES:
        for column in columns:
            if column.lower() == name:
                return column
    raise DataError(f"no label column found among {', '.join(columns)} "
                    f"(looked for {', '.join(LABEL_NAMES)}); pass --label "
                    "COLUMN")


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def infer_head(rows, column):
    """The head of a label column: `{type, num_classes, class_names}` or
    `{type: regression}`, plus `values` (non-empty cell count)."""
    values = [r.get(column) for r in rows if not is_empty(r.get(column))]
    missing = len(rows) - len(values)
    if not values:
        raise DataError(f"the label column {column!r} is empty; fill it in "
                        "or pass --label COLUMN", column=column)
    numbers = [_number(v) for v in values]
    distinct = sorted({str(v) for v in values})
    if all(n is not None for n in numbers):
        integral = all(float(n).is_integer() for n in numbers)
        ints = sorted({int(n) for n in numbers}) if integral else []
        if not integral or len(ints) > min(MAX_CLASSES, max(2, len(values)
                                                            // 2)):
            return {"type": "regression", "labelled": len(values),
                    "missing": missing, "min": min(numbers),
                    "max": max(numbers)}
        names = [str(i) for i in ints]
    else:
        if len(distinct) > MAX_CLASSES:
            raise DataError(f"the label column {column!r} has {len(distinct)} "
                            f"distinct strings (at most {MAX_CLASSES} classes "
                            "are inferred); pass --label COLUMN for another "
                            "column", column=column)
        names = distinct
    if len(names) < 2:
        raise DataError(f"the label column {column!r} has one value "
                        f"({names[0]!r}) in {len(values)} rows; a classifier "
                        "needs two or more classes (or pass --label COLUMN)",
                        column=column)
    counts = {}
    for v in values:
        key = str(int(_number(v))) if all(n is not None for n in numbers) \
            else str(v)
        counts[key] = counts.get(key, 0) + 1
    return {"type": "classification", "num_classes": len(names),
            "class_names": names, "counts": counts,
            "labelled": len(values), "missing": missing}


def _cell_paths(value):
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    if isinstance(value, str) and PATH_SEPARATOR in value:
        return [v for v in value.split(PATH_SEPARATOR) if v]
    return [value] if isinstance(value, str) and value else []


def _join(root, path):
    return path if os.path.isabs(path) or "://" in path else \
        os.path.normpath(os.path.join(root, path))


def _is_file_column(cells, root):
    files = [c for c in cells[:20] if all(
        looks_like_file(p) or os.path.isfile(_join(root, p))
        for p in _cell_paths(c))]
    return bool(cells) and len(files) * 2 >= min(len(cells), 20)


def _probe_column(column, cells, root, sample, seed):
    """Probes a sample of a file column's (row, cell) pairs."""
    chosen = cells if len(cells) <= sample else sorted(
        random.Random(seed).sample(cells, sample), key=lambda c: c[0])
    infos, frames = [], []
    for row, cell in chosen:
        paths = _cell_paths(cell)
        try:
            info = probe_file(_join(root, paths[0]))
        except DataError as e:
            raise DataError(e.reason or str(e).split(": ", 1)[-1],
                            file=e.file, row=row, column=column) from None
        if len(paths) > 1 or isinstance(cell, list):
            if info.kind != "image":
                raise DataError(f"a list of files must be image frames (a "
                                f"video); {paths[0]} is {info.kind}",
                                row=row, column=column)
            frames.append(len(paths))
        infos.append((row, info))
    kinds = {}
    for row, info in infos:
        kinds.setdefault(info.kind, (row, info))
    if frames:
        kinds = {"frames": infos[0]}
    if len(kinds) > 1:
        (ka, (ra, a)), (kb, (rb, b)) = list(kinds.items())[:2]
        raise DataError(f"the column mixes kinds: row {ra} is {ka} "
                        f"({a.path}), row {rb} is {kb} ({b.path}); one column "
                        "holds one modality", column=column)
    return infos, frames


def _median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _scaled(height, width, limit):
    scale = min(1.0, limit / max(height, width))
    return [max(1, round(height * scale)), max(1, round(width * scale))]


def _image_channels(infos):
    channels = {i.channels for _, i in infos}
    return 1 if channels == {1} else 3


def _summarise_files(column, infos, frames):
    first = infos[0][1]
    notes = [f"row {r}: {i.note}" for r, i in infos if i.note]
    out = {"files_probed": len(infos), "formats": sorted(
        {i.format for _, i in infos})}
    if notes:
        out["notes"] = notes[:5]
    if frames or first.kind == "video":
        heights = [i.shape[-3] for _, i in infos]
        widths = [i.shape[-2] for _, i in infos]
        counts = frames or [i.shape[0] for _, i in infos]
        num_frames = min(MAX_FRAMES, percentile(counts))
        out.update(modality="video", source="frames" if frames else "gif",
                   frames=length_summary(counts, num_frames),
                   size=_scaled(_median(heights), _median(widths),
                                MAX_FRAME_SIDE),
                   channels=_image_channels(infos),
                   sampled_sizes=_size_range(heights, widths))
    elif first.kind == "image":
        heights = [i.shape[0] for _, i in infos]
        widths = [i.shape[1] for _, i in infos]
        out.update(modality="image", channels=_image_channels(infos),
                   size=_scaled(_median(heights), _median(widths),
                                MAX_IMAGE_SIDE),
                   sampled_sizes=_size_range(heights, widths))
    elif first.kind == "audio":
        _check_all_equal(infos, lambda i: i.sample_rate, "{} Hz", column,
                         "the WAV files have different sample rates",
                         "keras_mm does not resample: resample them to one "
                         "rate")
        rate = first.sample_rate
        seconds = [i.shape[0] / rate for _, i in infos]
        duration = min(MAX_AUDIO_SECONDS,
                       math.ceil(percentile(seconds) * 20) / 20.0) or 0.05
        out.update(modality="audio", sample_rate=rate,
                   channels=sorted({i.channels for _, i in infos}),
                   seconds=length_summary([round(s, 3) for s in seconds],
                                          duration))
    else:  # sensor
        _check_all_equal(infos, lambda i: i.shape[1], "{}", column,
                         "the series have different channel counts",
                         "every file needs the same channels")
        steps = [i.shape[0] for _, i in infos]
        length = max(1, min(MAX_SERIES_LENGTH, percentile(steps)))
        out.update(modality="sensor", source="npy" if first.format == "NPY"
                   else "csv", channels=first.shape[1],
                   shape=f"[T, {first.shape[1]}]",
                   length=length_summary(steps, length))
    return out


def _check_all_equal(infos, value_of, label, column, what, fix):
    """Raises a `DataError` naming one file (row and path) per distinct
    `value_of(info)` when the sampled files disagree."""
    seen = {}
    for row, info in infos:
        seen.setdefault(value_of(info), (row, info.path))
    if len(seen) > 1:
        described = ", ".join(f"{label.format(v)} (row {r}, {p})"
                              for v, (r, p) in sorted(seen.items()))
        raise DataError(f"{what}: {described}; {fix}", column=column)


def _size_range(heights, widths):
    pairs = sorted(zip(heights, widths), key=lambda p: p[0] * p[1])
    return {"smallest": list(pairs[0]), "median": list(pairs[len(pairs)
                                                             // 2]),
            "largest": list(pairs[-1])}


_TOKEN = re.compile(r"\w+|[^\w\s]")


def _string_kind(column, cells, n_rows):
    texts = [str(c) for c in cells]
    words = [len(t.split()) for t in texts]
    chars = [len(t) for t in texts]
    distinct = len(set(texts))
    if (sum(words) / len(words) >= TEXT_MIN_WORDS
            or sum(chars) / len(chars) > TEXT_MIN_CHARS):
        tokens = [len(_TOKEN.findall(t)) for t in texts]
        max_len = max(4, min(MAX_TEXT_TOKENS,
                             math.ceil(percentile(tokens) * 1.25)))
        return {"modality": "text", "max_len": max_len,
                "tokens": length_summary(tokens, max_len),
                "distinct_words": len({w.lower() for t in texts
                                       for w in _TOKEN.findall(t)})}
    if distinct <= MAX_CATEGORIES and distinct < max(2, 0.9 * len(cells)):
        return {"modality": "categorical", "categories": distinct}
    return {"modality": "ignored",
            "reason": f"{distinct} distinct short strings in {len(cells)} "
                      "rows (an id?); not a feature. Rename it or give it as "
                      "text by making it longer"}


def infer_columns(rows, root, columns=None, label=None, train_rows=None,
                  sample=DEFAULT_SAMPLE, seed=0):
    """The inference of every column of a manifest.

    Args:
        rows: the manifest rows (dicts); their row numbers are 1-based.
        root: folder relative paths are resolved against.
        columns: column names in order (default: those of the rows).
        label: the label column (default: found by name, `find_label`).
        train_rows: the row numbers of the training split (lengths are
            inferred from them; default all rows).
        sample: files probed per file column.
        seed: seed of the file sample.

    Returns:
        `{"label": column, "head": infer_head(...), "columns": {column:
        {"modality": ..., ...}}}`.
    """
    if columns is None:
        columns = []
        for r in rows:
            columns.extend(c for c in r if c not in columns)
    if not rows:
        raise DataError("the manifest has no rows")
    label = find_label(columns, label)
    train = set(train_rows) if train_rows is not None else None
    out = {}
    for column in columns:
        if column == label:
            continue
        if column.lower() == SPLIT_COLUMN:
            out[column] = {"modality": "split"}
            continue
        cells = [(i + 1, r.get(column)) for i, r in enumerate(rows)
                 if not is_empty(r.get(column))]
        if not cells:
            out[column] = {"modality": "ignored",
                           "reason": "every cell is empty"}
            continue
        values = [c for _, c in cells]
        train_cells = [(i, c) for i, c in cells if train is None or i in
                       train] or cells
        numbers = [_number(v) for v in values]
        if all(not isinstance(v, (str, list)) for v in values) or (
                all(n is not None for n in numbers) and not any(
                    isinstance(v, list) for v in values)):
            out[column] = {"modality": "numeric"}
        elif _is_file_column(values, root):
            infos, frames = _probe_column(column, train_cells, root, sample,
                                          seed)
            out[column] = _summarise_files(column, infos, frames)
        elif any(isinstance(v, (list, dict)) for v in values):
            out[column] = {"modality": "ignored",
                           "reason": "JSON lists that are not file paths; "
                                     "save each series as .npy and give "
                                     "its path"}
        else:
            out[column] = _string_kind(column, [c for _, c in train_cells],
                                       len(rows))
        empty = len(rows) - len(cells)
        if empty:
            out[column]["empty_cells"] = empty
    return {"label": label, "head": infer_head(rows, label),
            "columns": out}
