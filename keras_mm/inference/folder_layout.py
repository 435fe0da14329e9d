"""A folder of class subfolders -> manifest rows and splits.

The `image_dataset_from_directory` layout: `DATA/<class>/<file>` (images,
WAV audio, `.npy` / `.csv` series), or the same under `DATA/train/`,
`DATA/val/` (or `validation/`, `valid/`, `dev/`) and `DATA/test/`, whose
splits are kept. Without split folders (or without a val folder) the
examples are split with a fixed seed, per class: `VAL_FRACTION` and
`TEST_FRACTION` of each class of 3 or more examples.

Hidden files (`.DS_Store`, `._x`) and files of no modality the toolkit reads
are listed in `skipped`, never dropped unsaid.
"""

import os
import random

from keras_mm.errors import DataError
from keras_mm.inference.file_probe import FILE_EXTENSIONS

SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val",
                 "valid": "val", "validation": "val", "dev": "val",
                 "test": "test", "testing": "test"}
VAL_FRACTION = 0.1
TEST_FRACTION = 0.1


def _classes(folder):
    try:
        entries = sorted(os.listdir(folder))
    except OSError as e:
        raise DataError(f"cannot list this folder ({e.strerror})",
                        file=folder) from None
    dirs = [e for e in entries if not e.startswith(".")
            and os.path.isdir(os.path.join(folder, e))]
    loose = [e for e in entries if not e.startswith(".")
             and not os.path.isdir(os.path.join(folder, e))]
    return dirs, loose


def _files(folder, skipped):
    out = []
    for base, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(base, name)
            if name.startswith(".") or not name.lower().endswith(
                    FILE_EXTENSIONS):
                skipped.append(path)
            else:
                out.append(path)
    return out


def _stratified(examples, seed):
    """`{split: [(path, label)]}` from a per-class seeded shuffle."""
    by_class = {}
    for path, label in examples:
        by_class.setdefault(label, []).append((path, label))
    splits = {"train": [], "val": [], "test": []}
    rng = random.Random(seed)
    for label in sorted(by_class):
        for split, part in split_group(by_class[label], rng).items():
            splits[split].extend(part)
    return splits


def split_group(items, rng):
    """`{"train", "val", "test": items}` of one class (shuffled in place by
    `rng`): TEST_FRACTION and VAL_FRACTION of them, at least one each once
    there are 3 or more, the rest for training."""
    rng.shuffle(items)
    n = len(items)
    n_test = max(1, round(n * TEST_FRACTION)) if n >= 3 else 0
    n_val = max(1, round(n * VAL_FRACTION)) if n >= 3 else 0
    return {"test": items[:n_test], "val": items[n_test:n_test + n_val],
            "train": items[n_test + n_val:]}


def folder_examples(folder, seed=0):
    """Reads the layout of `folder`.

    Returns:
        `{"splits": {split: [(path, class name)]}, "classes": [...],
        "kept_splits": bool, "skipped": [paths]}`; paths are absolute.

    Raises:
        DataError: no class subfolders, an empty class folder, or no
            readable file; the message names the folder.
    """
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise DataError("not a folder, a .csv or a .jsonl manifest",
                        file=folder)
    dirs, loose = _classes(folder)
    skipped = [os.path.join(folder, n) for n in loose]
    split_dirs = {d: SPLIT_FOLDERS[d.lower()] for d in dirs
                  if d.lower() in SPLIT_FOLDERS}
    if not dirs:
        raise DataError("no class subfolders: put each class's files in "
                        "their own folder (DATA/<class>/<file>), or give a "
                        "CSV/JSONL manifest", file=folder)
    layout = {}
    if split_dirs and "train" in split_dirs.values():
        others = [d for d in dirs if d not in split_dirs]
        if others:
            raise DataError(f"mixes split folders ({', '.join(split_dirs)}) "
                            f"with other folders ({', '.join(others)}); put "
                            "every class under train/ (and val/, test/)",
                            file=folder)
        for d, split in split_dirs.items():
            layout.setdefault(split, []).append(os.path.join(folder, d))
    else:
        layout["all"] = [folder]
    examples = {}
    classes = set()
    for split, roots in layout.items():
        for root in roots:
            class_dirs, loose = _classes(root)
            skipped.extend(os.path.join(root, n) for n in loose)
            if not class_dirs:
                raise DataError("no class subfolders in this split folder",
                                file=root)
            for name in class_dirs:
                files = _files(os.path.join(root, name), skipped)
                if not files and split in ("all", "train"):
                    raise DataError("this class folder holds no readable "
                                    "file (images, WAV, .npy, .csv)",
                                    file=os.path.join(root, name))
                classes.add(name)
                examples.setdefault(split, []).extend(
                    (path, name) for path in files)
    if "all" in examples:
        splits = _stratified(examples.pop("all"), seed)
    else:
        splits = {s: examples.get(s, []) for s in ("train", "val", "test")}
        if not splits["val"]:
            made = _stratified(splits["train"], seed)
            splits["train"] = made["train"] + made["test"]
            splits["val"] = made["val"]
    if not splits["train"]:
        raise DataError("no training examples found", file=folder)
    return {"splits": {s: sorted(v) for s, v in splits.items() if v},
            "classes": sorted(classes), "kept_splits": "all" not in layout,
            "skipped": sorted(skipped)}
