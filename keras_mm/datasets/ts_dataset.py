"""Any UEA/UCR `.ts` problem -> sensor arrays + CSV manifests.

`build_ts_dataset` converts a `.ts` problem (read by THE reader,
`keras_mm.data.ts_format.read_ts`) into what `keras_mm` trains on: one
`.npy` (or CSV) file per example and input, and `train.csv` / `test.csv`
(and `val.csv` with `val_fraction`) manifests. Any number of channels,
unequal lengths (each file keeps its own length `[T_i, C]`; the
`SensorPreprocessor` pads them to its `length` and masks the padding),
missing values (`?` in the file -> NaN in the array: masked steps), and the
labels of `@classLabel` (class names, in the header's order) or of
`@targetLabel` (numbers).

Where the data comes from (`source`):

- a `.ts` file: `X_TRAIN.ts` is paired with its sibling `X_TEST.ts` when
  there is one; any other single file is split into train and test by a
  seeded, stratified `test_fraction`;
- a folder holding `<Problem>_TRAIN.ts` and `<Problem>_TEST.ts` (one
  problem; with several, name it with `problem`);
- a problem name, looked up in `search_dir` (`<dir>/<Problem>_TRAIN.ts` or
  `<dir>/<problem folder>/<Problem>_TRAIN.ts`, case-insensitive), e.g.
  `"BasicMotions"` with `search_dir="../shared/data"`.

Output (`out_dir`, written atomically; the same input gives the same bytes):
```
train.csv, test.csv (, val.csv)    columns: <input>..., label, ts_row
dataset.json                       sizes, classes, channels, lengths, ...
train/<input>/0000.npy, ...        float32 little-endian [T_i, C]
```
`ts_row` is the example's data row in its `.ts` file (1 = first; `val`
rows come from the TRAIN file). With `inputs={"acc": [0, 1, 2], "gyro":
[3, 4, 5]}` the dimensions are split into several sensor inputs (the
BasicMotions builder does this); the default is one input `series` with
every dimension. `dataset.json` reports the length distribution of each
split, so `preprocess.length` can be chosen (its `suggested_length` is the
longest training series: nothing is truncated).

Example:

>>> info = build_ts_dataset("BasicMotions", "data/bm",
...                         search_dir="../shared/data")   # doctest: +SKIP
>>> info["sizes"], info["channels"], info["lengths"]["train"]["max"]
...                                                         # doctest: +SKIP
({'train': 40, 'test': 40}, 6, 100)
"""

import glob
import os

import numpy as np

from keras_mm.data.ts_format import read_ts, series_lengths
from keras_mm.datasets import _io
from keras_mm.errors import DataError

FILE_FORMATS = ("npy", "csv")
DEFAULT_INPUT = "series"


def _write_array(path, array, file_format):
    array = np.ascontiguousarray(array, dtype="<f4")
    if file_format == "npy":
        with open(path, "wb") as f:
            np.save(f, array, allow_pickle=False)
    else:
        np.savetxt(path, array, fmt="%.6f", delimiter=",", newline="\n")


def _pair(train_path):
    base = os.path.basename(train_path)
    stem = base[:-len("_TRAIN.ts")]
    folder = os.path.dirname(train_path)
    for name in os.listdir(folder or "."):
        if name.lower() == f"{stem}_test.ts".lower():
            return os.path.join(folder, name)
    return None


def _train_files(folder):
    return sorted(p for p in glob.glob(os.path.join(folder, "*"))
                  if p.lower().endswith("_train.ts") and os.path.isfile(p))


def _pick(candidates, problem, where):
    if problem is not None:
        chosen = [p for p in candidates if os.path.basename(p).lower()
                  == f"{problem}_train.ts".lower()]
        if chosen:
            return chosen[0]
        raise DataError(f"no {problem}_TRAIN.ts here; the problems found "
                        f"are {_names(candidates) or '(none)'}", file=where,
                        reason="missing_file")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataError("no <Problem>_TRAIN.ts file in this folder; give a "
                        ".ts file, or a folder with <Problem>_TRAIN.ts and "
                        "<Problem>_TEST.ts", file=where,
                        reason="missing_file")
    raise DataError(f"several problems here ({_names(candidates)}); name "
                    "one (problem=..., CLI: --problem NAME)", file=where,
                    reason="ambiguous")


def _names(paths):
    return ", ".join(os.path.basename(p)[:-len("_TRAIN.ts")] for p in paths)


def resolve_ts_source(source, search_dir=None, problem=None):
    """`(train_path, test_path or None)` of a `.ts` file, folder or problem
    name (see the module docstring)."""
    source = os.fspath(source)
    if os.path.isfile(source):
        if source.lower().endswith("_train.ts"):
            return source, _pair(source)
        return source, None
    if os.path.isdir(source):
        train = _pick(_train_files(source), problem, source)
        return train, _pair(train)
    folder = os.fspath(search_dir) if search_dir is not None else os.getcwd()
    if os.sep in source or source.lower().endswith(".ts"):
        raise DataError("no such file or folder; give a .ts file, a folder "
                        "of <Problem>_TRAIN.ts / _TEST.ts files, or a problem "
                        "name with --search-dir", file=source,
                        reason="missing_file")
    candidates = _train_files(folder)
    if os.path.isdir(folder):
        for sub in sorted(os.listdir(folder)):
            if sub.lower() == source.lower() and os.path.isdir(
                    os.path.join(folder, sub)):
                candidates += _train_files(os.path.join(folder, sub))
    chosen = [p for p in candidates if os.path.basename(p).lower()
              == f"{source}_train.ts".lower()]
    if not chosen:
        raise DataError(
            f"no .ts problem {source!r} here (looked for {source}_TRAIN.ts "
            f"in this folder and in its {source!r} subfolder); give the "
            "folder holding it with --search-dir, or a .ts file path",
            file=folder, reason="missing_file")
    return chosen[0], _pair(chosen[0])


def stratified_split(labels, fraction, seed):
    """Seeded split of example indices: `(kept, taken)`, each sorted;
    `taken` holds about `fraction` of each class (at least one of a class
    with two or more examples). Non-class labels (targets, None): a plain
    seeded split."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    if fraction <= 0 or n == 0:
        return list(range(n)), []
    groups = {}
    if labels and all(isinstance(v, str) for v in labels):
        for i, v in enumerate(labels):
            groups.setdefault(v, []).append(i)
    else:
        groups[None] = list(range(n))
    taken = []
    for key in sorted(groups, key=str):
        idx = np.array(groups[key])
        rng.shuffle(idx)
        k = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        taken += idx[:k].tolist()
    taken = sorted(taken)
    kept = sorted(set(range(n)) - set(taken))
    return kept, taken


def _check_inputs(inputs, channels, path):
    if inputs is None:
        return {DEFAULT_INPUT: list(range(channels))}
    out = {}
    for name, dims in inputs.items():
        dims = [int(d) for d in dims]
        bad = [d for d in dims if not 0 <= d < channels]
        if bad or not dims:
            raise DataError(
                f"input {name!r}: dimensions {dims} must be between 0 and "
                f"{channels - 1} (the file has {channels} dimensions)",
                file=path, reason="bad_shape")
        out[name] = dims
    return out


def _length_stats(lengths):
    if not lengths:
        return {"count": 0}
    a = np.asarray(lengths)
    return {"count": int(a.size), "min": int(a.min()), "max": int(a.max()),
            "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95))}


def _check_test(train, test):
    if test.num_channels != train.num_channels:
        raise DataError(
            f"{test.num_channels} dimensions, but the TRAIN file "
            f"{train.path} has {train.num_channels}", file=test.path,
            reason="bad_shape")
    if (train.labels is None) != (test.labels is None):
        raise DataError(f"labels present in one of the TRAIN / TEST files "
                        f"only (TRAIN: {train.path})", file=test.path,
                        reason="bad_label")
    if train.class_labels and test.class_labels and set(
            train.class_labels) != set(test.class_labels):
        raise DataError(
            f"@classLabel {' '.join(test.class_labels)} differs from the "
            f"TRAIN file's {' '.join(train.class_labels)} ({train.path})",
            file=test.path, reason="bad_label")


def build_ts_dataset(source, out_dir, *, search_dir=None, problem=None,
                     inputs=None, file_format="npy", val_fraction=0.0,
                     test_fraction=0.2, seed=0, overwrite=False,
                     info_file="dataset.json", name=None, channels=None):
    """Converts a `.ts` problem into manifests + per-example arrays.

    Args:
        source: a `.ts` file, a folder, or a problem name (module docstring).
        out_dir: output folder (written atomically).
        search_dir: where a problem name is looked up (default: the
            current folder).
        problem: the problem to take from a folder holding several.
        inputs: `{input name: [dimension, ...]}`; default one input
            `"series"` with every dimension.
        file_format: `"npy"` (float32 little-endian) or `"csv"` (headerless,
            `%.6f`, `nan` for a missing value).
        val_fraction: part of the training examples moved to `val.csv`
            (seeded, stratified by class); 0 writes no `val.csv`.
        test_fraction: the test part of a single `.ts` file without a TEST
            file.
        seed: the seed of the splits.
        overwrite: replace a non-empty `out_dir`.
        info_file: name of the JSON summary written in `out_dir`.
        name: the data set name recorded (default: the problem name).
        channels: when set, the number of dimensions the files must have.

    Returns:
        The dict written to `info_file`, plus `"out_dir"`.

    Raises:
        DataError: naming the file (and line) of malformed or mismatched
            `.ts` content, or a source that cannot be found.
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format={file_format!r} is not one of "
                         f"{', '.join(FILE_FORMATS)}")
    for arg, value in (("val_fraction", val_fraction),
                       ("test_fraction", test_fraction)):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{arg}={value!r} must be in [0, 1)")
    out_dir = os.path.abspath(os.fspath(out_dir))
    _io.check_output_dir(out_dir, overwrite)
    train_path, test_path = resolve_ts_source(source, search_dir, problem)
    train = read_ts(train_path)
    if not len(train):
        raise DataError("the file has no data rows after @data",
                        file=train_path, reason="empty")
    # split -> (TsData, [example indices])
    parts = {}
    if test_path is not None:
        test = read_ts(test_path)
        if not len(test):
            raise DataError("the file has no data rows after @data",
                            file=test_path, reason="empty")
        _check_test(train, test)
        kept, test_idx = list(range(len(train))), None
        parts["test"] = (test, list(range(len(test))))
    else:
        kept, test_idx = stratified_split(train.labels or [None] * len(train),
                                          test_fraction, seed)
        if not test_idx:
            raise DataError(
                f"no TEST file and test_fraction={test_fraction} leaves no "
                "test example; add <Problem>_TEST.ts or raise test_fraction",
                file=train_path, reason="empty")
        parts["test"] = (train, test_idx)
    labels = train.labels or [None] * len(train)
    sub = [labels[i] for i in kept]
    keep_pos, val_pos = stratified_split(sub, val_fraction, seed + 1)
    parts = {"train": (train, [kept[j] for j in keep_pos]),
             **({"val": (train, [kept[j] for j in val_pos])}
                if val_pos else {}),
             "test": parts["test"]}
    if channels is not None and train.num_channels != channels:
        raise DataError(f"expected {channels} dimensions, got "
                        f"{train.num_channels}", file=train_path,
                        reason="bad_shape")
    channels = train.num_channels
    input_dims = _check_inputs(inputs, channels, train_path)
    has_labels = train.labels is not None
    columns = list(input_dims) + (["label"] if has_labels else []) \
        + ["ts_row"]
    problem_name = train.metadata.get("problemname") or os.path.basename(
        train_path)[:-3].rsplit("_", 1)[0]
    label_type = ("class" if train.class_labels else
                  "target" if has_labels else None)
    info = {"name": name or problem_name, "problem": problem_name,
            "sizes": {}, "channels": channels,
            "inputs": {n: {"dimensions": d, "channels": len(d)}
                       for n, d in input_dims.items()},
            "label_type": label_type, "file_format": file_format,
            "dtype": "float32 little-endian" if file_format == "npy"
            else "CSV %.6f, no header", "columns": columns,
            "files": {"train": os.path.abspath(train_path),
                      "test": os.path.abspath(test_path or train_path)},
            "lengths": {}, "missing_values": {}, "seed": int(seed)}
    if train.class_labels:
        info["class_names"] = list(train.class_labels)
        info["num_classes"] = len(train.class_labels)
    with _io.staging_dir(out_dir, overwrite=overwrite) as tmp:
        for split, (ts, indices) in parts.items():
            width = max(3, len(str(len(ts) - 1)))
            for n in input_dims:
                os.makedirs(os.path.join(tmp, split, n))
            rows = []
            for i in indices:
                x = ts.series[i].astype(np.float32)
                row = {"ts_row": i + 1}
                if has_labels:
                    row["label"] = ts.labels[i]
                for n, dims in input_dims.items():
                    rel = f"{split}/{n}/{i:0{width}d}.{file_format}"
                    _write_array(os.path.join(tmp, rel), x[:, dims],
                                 file_format)
                    row[n] = rel
                rows.append(row)
            _io.write_manifest(os.path.join(tmp, f"{split}.csv"), columns,
                               rows)
            info["sizes"][split] = len(rows)
            lengths = series_lengths(ts)
            info["lengths"][split] = _length_stats(
                [lengths[i] for i in indices])
            info["missing_values"][split] = int(sum(
                np.isnan(ts.series[i]).sum() for i in indices))
        info["suggested_length"] = info["lengths"]["train"]["max"]
        _io.write_json(os.path.join(tmp, info_file), info)
    info["out_dir"] = out_dir
    return info


def describe(info):
    """The few lines `keras-mm data ts` prints."""
    sizes = " / ".join(f"{n} {s}" for s, n in info["sizes"].items())
    tr = info["lengths"]["train"]
    classes = (f"{info['num_classes']} classes ("
               f"{', '.join(info['class_names'])})"
               if info.get("class_names") else
               f"labels: {info['label_type'] or 'none'}")
    lines = [f"{info['problem']}: {sizes} examples, {info['channels']} "
             f"channel(s), {classes}",
             f"train lengths {tr['min']}-{tr['max']} steps (median "
             f"{tr['median']:g}); missing values: "
             f"{sum(info['missing_values'].values())}",
             *[f"input {n}: preprocess: {{channels: {d['channels']}, "
               f"length: {info['suggested_length']}, source: "
               f"{info['file_format']}}}" for n, d in info["inputs"].items()],
             f"written to {info['out_dir']}"]
    return "\n".join(lines)
