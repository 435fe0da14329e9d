"""`infer_dataset`, `init_recipe` and the shipped example recipes.

Where `init_recipe` writes (the data folder is never written to):

- the recipe at `out` (default `<name>.yaml` in the current folder);
- for a folder of class subfolders, or a single manifest without split
  files beside it, the split manifests `<out stem>_train.csv` (`_val`,
  `_test`; `.jsonl` when cells hold lists) next to the recipe. Their file
  paths are relative to the manifests' folder when the data lies under
  it, else absolute, and then the recipe sets `data.allow_paths_outside`;
- a manifest named `train.csv` / `x_train.csv` / `x.train.csv` with `val`
  / `test` siblings is used as it is, with its siblings (nothing written
  but the recipe); a manifest with a `split` column (train / val / test)
  is written out as the three split manifests.

The recipe's split paths are relative to the current folder (as the
shipped recipes' are: run `keras-mm train` from where you ran `init`) when
they lie under it, else absolute.
"""

import csv
import importlib.resources
import json
import os
import random
import re

from keras_mm.errors import DataError
from keras_mm.inference.column_kinds import (DEFAULT_SAMPLE, SPLIT_COLUMN,
                                             find_label, infer_columns,
                                             is_empty)
from keras_mm.inference.folder_layout import (SPLIT_FOLDERS, folder_examples,
                                              split_group)
from keras_mm.inference.recipe_writer import (recipe_from_inference,
                                              recipe_text, summary_lines)

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
SPLITS = ("train", "val", "test")
_SPLIT_WORDS = SPLIT_FOLDERS


def _is_manifest(path):
    return path.lower().endswith(MANIFEST_SUFFIXES) and os.path.isfile(path)


def _siblings(path):
    """`{split: path}` when `path` is a train manifest with val/test files
    beside it (`train.csv`, `x_train.csv`, `x.train.csv`), else None."""
    folder, base = os.path.split(os.path.abspath(path))
    match = re.match(r"^(.*?)([._-]?)(train|training)(\.[A-Za-z]+)$", base,
                     re.IGNORECASE)
    if not match:
        return None
    prefix, sep, _, suffix = match.groups()
    found = {"train": os.path.abspath(path)}
    for word, split in _SPLIT_WORDS.items():
        candidate = os.path.join(folder, f"{prefix}{sep}{word}{suffix}")
        if split != "train" and split not in found and os.path.isfile(
                candidate):
            found[split] = candidate
    return found if len(found) > 1 else None


def _read(path):
    from keras_mm.data.manifest import Manifest
    manifest = Manifest.read(path)
    return manifest.rows, manifest.columns, manifest.root


def _seeded_split(rows, label, seed):
    """Row indices per split: per label value, a seeded shuffle."""
    groups = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row.get(label)), []).append(i)
    rng = random.Random(seed)
    out = {s: [] for s in SPLITS}
    numeric_label = len(groups) > max(2, len(rows) // 2)
    if numeric_label:                      # regression: one group
        groups = {"": list(range(len(rows)))}
    for key in sorted(groups):
        for split, part in split_group(groups[key], rng).items():
            out[split] += part
    return {s: sorted(v) for s, v in out.items() if v}


def _manifest_plan(path, label, seed):
    """Rows, columns, root and `{split: row indices}` of a manifest DATA,
    and `{split: file}` when its split files are used as they are."""
    siblings = _siblings(path)
    if siblings:
        rows, columns, index, files = [], [], {}, {}
        root = None
        for split, file in siblings.items():
            r, c, root_here = _read(file)
            root = root or root_here
            if root_here != root:
                siblings = None
                break
            index[split] = list(range(len(rows), len(rows) + len(r)))
            rows.extend(r)
            columns.extend(x for x in c if x not in columns)
            files[split] = file
        if siblings:
            return rows, columns, root, index, files
    rows, columns, root = _read(path)
    if not rows:
        raise DataError("the manifest has no rows", file=path)
    label = find_label(columns, label)
    split_column = next((c for c in columns if c.lower() == SPLIT_COLUMN),
                        None)
    if split_column is not None:
        index = {}
        for i, row in enumerate(rows):
            word = str(row.get(split_column) or "").lower()
            if word not in _SPLIT_WORDS:
                raise DataError(f"{row.get(split_column)!r} is not a split "
                                "name (train, val, test)", file=path,
                                row=i + 1, column=split_column)
            index.setdefault(_SPLIT_WORDS[word], []).append(i)
        if "train" not in index:
            raise DataError("no row has split 'train'", file=path,
                            column=split_column)
        return rows, columns, root, index, None
    return rows, columns, root, _seeded_split(rows, label, seed), None


def _folder_plan(path, seed):
    layout = folder_examples(path, seed)
    rows, index = [], {}
    for split in SPLITS:
        for file, name in layout["splits"].get(split, ()):
            index.setdefault(split, []).append(len(rows))
            rows.append({"file": file, "label": name})
    return rows, ["file", "label"], os.path.dirname(os.path.abspath(path)), \
        index, layout


def _plan(path, label, seed):
    if _is_manifest(path):
        return ("manifest",) + _manifest_plan(path, label, seed) + (None,)
    if os.path.isfile(path):
        raise DataError("not a manifest (.csv, .tsv, .jsonl) or a folder of "
                        "class subfolders", file=path)
    if not os.path.exists(path):
        raise DataError("no such file or folder", file=path)
    rows, columns, root, index, layout = _folder_plan(path, seed)
    return "folder", rows, columns, root, index, None, layout


def infer_dataset(path, label=None, sample=DEFAULT_SAMPLE, seed=0,
                  _plan_out=None):
    """Infers what a data set holds, reading only a sample of file headers.

    Args:
        path: a CSV/TSV/JSONL manifest, or a folder of class subfolders
            (optionally under `train/`, `val/`, `test/`).
        label: the label column (default: found by name: label, labels,
            target, class, y).
        sample: files probed per file column.
        seed: the seed of the file sample and of the splits made.

    Returns:
        A JSON-serializable dict: `source`, `layout` (`manifest` or
        `folder`), `rows`, `splits` (`{split: examples}`), `kept_splits`,
        `label`, `head` (`classification` with its classes, or
        `regression`), `columns` (`{column: {"modality": ..., sizes and
        length distributions}}`) and `skipped` (files of a folder that no
        modality reads).

    Raises:
        DataError: no label column (pass `label=`), an empty folder, an
            unreadable or unrecognised file (named, with its row and
            column).

    Example:

    >>> info = infer_dataset("photos/")                  # doctest: +SKIP
    >>> info["columns"]["image"]["size"]                 # doctest: +SKIP
    [32, 32]
    >>> info["head"]["num_classes"]                      # doctest: +SKIP
    10
    """
    path = os.fspath(path)
    layout_kind, rows, columns, root, index, files, layout = _plan(
        path, label, seed)
    inference = infer_columns(rows, root, columns=columns,
                              label=label if layout_kind == "manifest"
                              else "label",
                              train_rows=[i + 1 for i in index["train"]],
                              sample=sample, seed=seed)
    if layout_kind == "folder":
        inference["head"] = _folder_head(layout)
        info = inference["columns"].pop("file")
        inference["columns"] = {info["modality"]: info}
        for i, row in enumerate(rows):
            rows[i] = {info["modality"]: row["file"], "label": row["label"]}
    result = {"source": path, "layout": layout_kind, "rows": len(rows),
              "splits": {s: len(index[s]) for s in SPLITS if s in index},
              "kept_splits": bool(files) or (layout or {}).get(
                  "kept_splits", False) or any(
                      c.lower() == SPLIT_COLUMN for c in columns),
              **inference,
              "skipped": (layout or {}).get("skipped", [])}
    if _plan_out is not None:
        _plan_out.update(rows=rows, root=root, index=index, files=files)
    return result


def _folder_head(layout):
    counts = {}
    for items in layout["splits"].values():
        for _, name in items:
            counts[name] = counts.get(name, 0) + 1
    return {"type": "classification", "num_classes": len(layout["classes"]),
            "class_names": layout["classes"], "counts": counts,
            "labelled": sum(counts.values()), "missing": 0}


def _under(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _recipe_path(path):
    """A split path as the recipe names it: relative to the cwd when it
    lies under it, else absolute."""
    path = os.path.abspath(path)
    return os.path.relpath(path) if _under(path, os.getcwd()) else path


def _split_writes(plan, inference, out_dir, stem, force):
    """The split manifests to write: `{split: {"path", "columns", "rows",
    "jsonl", "outside"}}` (file paths made relative to `out_dir`, or
    absolute when outside it)."""
    rows, root = plan["rows"], plan["root"]
    file_columns = [c for c, info in inference["columns"].items()
                    if info["modality"] in ("image", "audio", "video",
                                            "sensor")]
    columns = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    lists = any(isinstance(row.get(c), (list, dict)) for row in rows
                for c in columns)
    suffix = ".jsonl" if lists else ".csv"
    outside = False

    def fix(value):
        nonlocal outside
        if isinstance(value, list):
            return [fix(v) for v in value]
        if not isinstance(value, str) or not value:
            return value
        parts = value.split("|")
        out = []
        for part in parts:
            full = part if os.path.isabs(part) else os.path.normpath(
                os.path.join(root, part))
            if _under(full, out_dir):
                out.append(os.path.relpath(full, out_dir))
            else:
                outside = True
                out.append(full)
        return "|".join(out)

    writes = {}
    for split, indices in plan["index"].items():
        target = os.path.join(out_dir, f"{stem}_{split}{suffix}")
        if os.path.exists(target) and not force:
            raise DataError("exists; pass --force to overwrite it, or "
                            "--out another recipe path", file=target)
        chosen = []
        for i in indices:
            row = dict(rows[i])
            for c in file_columns:
                row[c] = fix(row.get(c))
            chosen.append(row)
        writes[split] = {"path": target, "columns": columns, "rows": chosen,
                         "jsonl": lists, "outside": outside}
    return writes


def _write_rows(path, columns, rows, jsonl):
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if jsonl:
            for row in rows:
                f.write(json.dumps({c: row.get(c) for c in columns}) + "\n")
        else:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if is_empty(row.get(c)) else row.get(c)
                                 for c in columns])
    os.replace(tmp, path)


def default_name(path):
    """A recipe name from the data path (`photos/` -> `photos`)."""
    base = os.path.basename(os.path.normpath(os.path.abspath(path)))
    base = re.sub(r"(_?train(ing)?)?\.(csv|tsv|jsonl|ndjson)$", "", base,
                  flags=re.IGNORECASE)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", base).strip("._-")
    return name or "data"


def init_recipe(path, out=None, name=None, label=None, sample=DEFAULT_SAMPLE,
                seed=0, force=False):
    """Infers a recipe from the data at `path` and writes it.

    Args:
        path: a manifest or a folder (see `infer_dataset`).
        out: the recipe file (default `<name>.yaml` in the current folder).
        name: the recipe / run / export name (default from `path`).
        label: the label column.
        sample: files probed per file column.
        seed: the seed of the splits made and of training.
        force: overwrite an existing recipe / split manifests.

    Returns:
        `{"recipe_path", "manifests" ({split: path} written), "recipe"
        (plain data), "text" (the YAML written), "inference"}`.

    Raises:
        DataError: as `infer_dataset`, or the recipe exists (pass `force`).
        ConfigError: the recipe written does not validate (a bug: report
            it).
    """
    from keras_mm.recipes import normalize_recipe

    path = os.fspath(path)
    name = default_name(path) if name is None else name
    out = os.path.abspath(out or f"{name}.yaml")
    if os.path.exists(out) and not force:
        raise DataError("exists; pass --force to overwrite it, or --out "
                        "another path", file=out)
    plan = {}
    inference = infer_dataset(path, label=label, sample=sample, seed=seed,
                              _plan_out=plan)
    out_dir = os.path.dirname(out)
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(out))[0]
    outside, manifests = False, {}
    if plan["files"]:
        splits = {s: _recipe_path(p) for s, p in plan["files"].items()}
        recipe = recipe_from_inference(inference, splits, name, seed=seed)
        normalize_recipe(recipe, name=name)   # what `keras-mm train` checks
    else:
        # Checked before anything is written, then written.
        writes = _split_writes(plan, inference, out_dir, stem, force)
        outside = any(w["outside"] for w in writes.values())
        splits = {s: _recipe_path(w["path"]) for s, w in writes.items()}
        recipe = recipe_from_inference(inference, splits, name,
                                       allow_paths_outside=outside,
                                       seed=seed)
        normalize_recipe(recipe, name=name)
        for split, w in writes.items():
            _write_rows(w["path"], w["columns"], w["rows"], w["jsonl"])
            manifests[split] = w["path"]
    text = recipe_text(recipe, inference)
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    return {"recipe_path": out, "manifests": manifests, "recipe": recipe,
            "text": text, "inference": inference}


# -- shipped recipes ----------------------------------------------------------


def _examples_folder():
    # Through the keras_mm package: importing keras_mm.recipes would load
    # TensorFlow (slow for `keras-mm --help`).
    return importlib.resources.files("keras_mm").joinpath("recipes",
                                                          "examples")


def example_names():
    """Names of the recipes shipped in the package (`demo`, ...)."""
    return sorted(p.name[:-5] for p in _examples_folder().iterdir()
                  if p.name.endswith(".yaml"))


def copy_example(name, out=None, force=False):
    """Copies the shipped recipe `name` to `out` (default `<name>.yaml`).

    Returns:
        The path written.

    Raises:
        ValueError: `name` is not a shipped recipe (the message lists
            them), or `out` exists and `force` is False.
    """
    names = example_names()
    if name not in names:
        raise ValueError(f"--example {name!r} is not one of the shipped "
                         f"recipes: {', '.join(names)}")
    out = os.path.abspath(out or f"{name}.yaml")
    if os.path.exists(out) and not force:
        raise DataError("exists; pass --force to overwrite it, or --out "
                        "another path", file=out)
    data = _examples_folder().joinpath(f"{name}.yaml").read_bytes()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        f.write(data)
    return out


__all__ = ["copy_example", "default_name", "example_names", "infer_dataset",
           "init_recipe", "summary_lines"]
