"""The run folder `runs/<name>/` as the trainer keeps it.

- the file names of the folder (the list is in `keras_mm.training.trainer`);
- `load_recipe(recipe, overrides)`: a recipe path or dict, validated, with
  absolute data paths (what `recipe.yaml` holds); `--set name=X` renames
  the export too, unless the recipe names its export otherwise;
- `work_dir(run_dir, is_chief)`: where a worker writes (the run folder on
  the chief, a private `.<type>-<index>` folder on other workers);
- starting over (`clear_run`) or resuming (`backup_epoch`,
  `check_resumable`, `history_rows`), and `remove_backups` once the whole
  command has succeeded;
- `finished_run(run_dir)`: the `run.json` of a run that completed (a
  re-run is refused unless `overwrite`: `refuse_finished`);
- `find_run_dir`: the run folder of a run folder or recipe path.
"""

import copy
import csv
import datetime
import glob
import hashlib
import json
import os
import shutil

from keras_mm.errors import ConfigError
from keras_mm.training import run_data, run_preprocessors
from keras_mm.training.run_backup import read_backup_metadata

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "learning_curves.png"
SCOREBOARD_FILE = "scoreboard.json"
BEST_FILE = "best.keras"
FINAL_FILE = "final.keras"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
UNIMODAL_DIR = "unimodal"
EARLY_STOPPING_FILE = "early_stopping_best.npz"
UNIMODAL_KEY_FILE = "unimodal_key.json"

# Recipe keys whose change makes a backup unusable.
RESUME_KEYS = ("data", "inputs", "fusion", "trunk", "heads",
               "training.batch_size", "training.optimizer",
               "training.schedule", "training.seed", "training.precision",
               "training.epochs", "distill")


def _export_follows_name(raw, stem, overrides):
    """`overrides` plus `export.name=<new name>` when they rename the run
    (`name=X`) and the recipe's export name is unset or just repeats its
    run name: one name renames the run and its export."""
    from keras_mm.recipes import parse_override

    keys = {}
    for text in overrides or ():
        parts, value = parse_override(text)
        keys[".".join(parts)] = value
    if "name" not in keys or "export.name" in keys or "export" in keys:
        return list(overrides or ())
    raw = raw if isinstance(raw, dict) else {}
    old_name = raw.get("name") or stem
    export = raw.get("export") if isinstance(raw.get("export"), dict) \
        else {}
    if export.get("name") not in (None, old_name):
        return list(overrides)          # an export name of its own
    return list(overrides) + [f"export.name={keys['name']}"]


def load_recipe(recipe, overrides):
    """A recipe path or dict with `overrides` applied, normalized, with
    absolute data paths.

    `--set name=X` renames the run folder and the export (`export.name`)
    unless the recipe gives its export a name other than its run name or
    `--set export.name=...` is given too.
    """
    from keras_mm.recipes import apply_overrides, load_recipe as load, \
        normalize_recipe, read_yaml

    if isinstance(recipe, (str, os.PathLike)):
        stem = os.path.splitext(os.path.basename(os.fspath(recipe)))[0]
        overrides = _export_follows_name(read_yaml(recipe), stem, overrides)
        loaded = load(recipe, overrides=overrides)
    elif isinstance(recipe, dict):
        overrides = _export_follows_name(recipe, "recipe", overrides)
        raw, _ = apply_overrides(recipe, overrides)
        loaded = normalize_recipe(raw)
    else:
        raise TypeError(f"recipe must be a path or a dict, not "
                        f"{type(recipe).__name__}")
    return run_data.resolve_paths(loaded)


def tf_config_task():
    """`(task type, task index)` of this process in `TF_CONFIG`."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return "worker", 0
    task = json.loads(raw).get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0))


def work_dir(run_dir, is_chief):
    """The folder this worker writes its run files to (created)."""
    if is_chief:
        path = run_dir
    else:
        kind, index = tf_config_task()
        path = os.path.join(run_dir, f".{kind}-{index}")
    os.makedirs(path, exist_ok=True)
    return path


def _get(recipe, dotted):
    node = recipe
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check_resumable(recipe, saved_path, backup_dir):
    """Raises `ConfigError` naming the first key of `RESUME_KEYS` where
    `recipe` differs from the interrupted run's `saved_path`."""
    from keras_mm.recipes import read_yaml

    if not os.path.exists(saved_path):
        return
    saved = read_yaml(saved_path)
    for key in RESUME_KEYS:
        old, new = _get(saved, key), _get(recipe, key)
        if json.dumps(old, sort_keys=True) != json.dumps(new,
                                                         sort_keys=True):
            raise ConfigError(
                key, f"differs from the interrupted run in {saved_path} "
                f"({old!r} there, {new!r} now); resume it with the same "
                f"recipe, or delete {backup_dir} to start over")


def backup_epoch(backup_dir):
    """The epoch a backup resumes at, or None when there is no backup."""
    metadata = read_backup_metadata(backup_dir)
    return None if metadata is None else int(metadata["epoch"])


def history_rows(path, keep):
    """The first `keep` rows of `history.csv` as `[(epoch, logs)]`; the
    file is cut to them (rows of an epoch being redone are dropped)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        lines = list(reader)
    if not lines:
        return []
    header, body = lines[0], lines[1:keep + 1]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)
    rows = []
    for values in body:
        logs = {}
        for key, value in zip(header, values):
            try:
                logs[key] = float(value)
            except ValueError:
                continue
        epoch = int(logs.pop("epoch", len(rows)))
        rows.append((epoch, logs))
    return rows


def remove(path):
    """Removes a file or a folder tree, if present."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def clear_run(path):
    """Removes the outputs of a previous, finished run from the folder
    `path` (fresh start). Its `unimodal/` runs stay: the scoreboard reuses
    those whose key still matches (`find_unimodal`)."""
    for name in (HISTORY_FILE, METRICS_FILE, RUN_FILE, CURVES_FILE,
                 BEST_FILE, FINAL_FILE, TENSORBOARD_DIR,
                 run_preprocessors.PREPROCESSORS_FILE):
        remove(os.path.join(path, name))
    for name in os.listdir(path):
        if name.startswith("confusion_") and name.endswith(".png"):
            remove(os.path.join(path, name))


def remove_backups(run_dir, is_chief):
    """Removes the backups of a completed command (and, on a non-chief
    worker, its private folder), in the run folder and its unimodal
    runs."""
    unimodal = os.path.join(run_dir, UNIMODAL_DIR)
    folders = [run_dir] + ([os.path.join(unimodal, name)
                            for name in sorted(os.listdir(unimodal))]
                           if os.path.isdir(unimodal) else [])
    kind, index = tf_config_task()
    for folder in folders:
        if is_chief:
            remove(os.path.join(folder, BACKUP_DIR))
        else:
            remove(os.path.join(folder, f".{kind}-{index}"))


def mark_finished(run_dir, phases, export_path=None):
    """Adds `finished`, `finished_at`, `phases` (seconds per phase of the
    whole command) and `export_path` to the run's `run.json`."""
    from keras_mm.serving.atomic import atomic_write_text

    path = os.path.join(os.fspath(run_dir), RUN_FILE)
    info = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    info.update(finished=True, phases=phases, export_path=export_path,
                finished_at=datetime.datetime.now(datetime.timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%SZ"))
    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True)
                      + "\n")


# -- single-input runs of the scoreboard, reused while unchanged ---------------


def unimodal_recipe(recipe, input_name):
    """The recipe of the `input_name`-only model of the scoreboard."""
    from keras_mm.builder import unimodal_spec
    from keras_mm.recipes import recipe_model_spec

    single = unimodal_spec(recipe_model_spec(recipe), input_name)
    sub = copy.deepcopy(recipe)
    sub["name"] = f"{recipe['name']}_{input_name}_only"
    sub["inputs"] = single["inputs"]
    sub["fusion"] = None
    sub["evaluation"] = dict(sub["evaluation"], compare_unimodal=False)
    return sub


def unimodal_key(sub_recipe, name, preprocessor):
    """A content hash of one single-input run: its recipe (less its name,
    export and output settings), the fitted preprocessor's config, the
    identity of every data file it reads (paths, sizes, mtimes, manifest
    contents: the pipelines' fingerprints) and the seed (in the recipe)."""
    from keras_mm.data import validation
    from keras_mm.version import __version__

    keyed = copy.deepcopy(sub_recipe)
    for key in ("name", "export"):
        keyed.pop(key, None)
    for key in ("runs_dir", "verbose", "tensorboard"):
        keyed["training"].pop(key, None)
    h = hashlib.sha256()
    h.update(json.dumps([__version__, keyed], sort_keys=True,
                        default=str).encode())
    for split in sorted(keyed["data"]["splits"]):
        pipe = run_data.make_pipeline(sub_recipe, split,
                                      {name: preprocessor}, {})
        h.update(f"{split}:{validation.fingerprint(pipe)}".encode())
    return h.hexdigest()


def _key_of(folder):
    path = os.path.join(folder, UNIMODAL_KEY_FILE)
    if not os.path.exists(path) or os.path.exists(
            os.path.join(folder, BACKUP_DIR)) or not os.path.exists(
            os.path.join(folder, METRICS_FILE)):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("key")
    except (OSError, ValueError):
        return None


def find_unimodal(runs_dir, run_dir, name, key):
    """A completed `unimodal/<name>` folder with `key`: this run's own,
    else another run's in `runs_dir`; None when there is none."""
    own = os.path.join(run_dir, UNIMODAL_DIR, name)
    others = sorted(glob.glob(os.path.join(glob.escape(runs_dir), "*",
                                           UNIMODAL_DIR, name)))
    for folder in [own] + [f for f in others
                           if os.path.abspath(f) != os.path.abspath(own)]:
        if _key_of(folder) == key:
            return folder
    return None


def reuse_unimodal(found, sub_dir, is_chief, splits):
    """Copies a reused single-input run into `sub_dir` (unless it is
    there); returns its metrics, in the order of `splits`."""
    if is_chief and os.path.abspath(found) != os.path.abspath(sub_dir):
        remove(sub_dir)
        shutil.copytree(found, sub_dir)
    with open(os.path.join(found, METRICS_FILE), encoding="utf-8") as f:
        metrics = json.load(f)
    return {split: metrics[split] for split in splits if split in metrics}


def forget_unimodal(sub_dir):
    """Removes the key of a single-input run about to be (re)trained."""
    remove(os.path.join(sub_dir, UNIMODAL_KEY_FILE))


def remember_unimodal(sub_dir, key):
    """Writes the key of a completed single-input run."""
    from keras_mm.serving.atomic import atomic_write_text

    atomic_write_text(os.path.join(sub_dir, UNIMODAL_KEY_FILE),
                      json.dumps({"key": key}) + "\n")


def finished_run(run_dir):
    """`run.json` of the completed run in `run_dir` (the whole command
    succeeded: `"finished": true`), or None (no run, or one still to be
    resumed or finished)."""
    path = os.path.join(os.fspath(run_dir), RUN_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("finished") else None


def refuse_finished(run_dir, name):
    """Raises `ConfigError` when `run_dir` holds a completed run: training
    again would overwrite it (and publish another export version)."""
    info = finished_run(run_dir)
    if info is None:
        return
    when = f" on {info['finished_at']}" if info.get("finished_at") else ""
    export = f", exported to {info['export_path']}" if info.get(
        "export_path") else ""
    raise ConfigError(
        "name", f"{run_dir} already holds the finished run {name!r}"
        f"{when}{export}; training again would overwrite it. Give the new "
        f"run another name (--set name={name}-2; the export follows the "
        "name), or pass --overwrite (train(..., overwrite=True)) to "
        "replace it")


def find_run_dir(run_dir_or_recipe):
    """The run folder of a run folder path or of the recipe trained into
    it (`training.runs_dir/<name>`); `ConfigError` when it holds no run."""
    path = os.fspath(run_dir_or_recipe)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, RECIPE_FILE)):
            raise ConfigError(None, f"{path} is not a run folder (it has no "
                              f"{RECIPE_FILE}); train first or pass the run "
                              "folder runs/<name>")
        return path
    recipe = load_recipe(path, ())
    run_dir = os.path.join(recipe["training"]["runs_dir"], recipe["name"])
    if not os.path.exists(os.path.join(run_dir, RECIPE_FILE)):
        raise ConfigError(None, f"{run_dir} holds no finished run of "
                          f"{path}; train it first (keras-mm train {path})")
    return run_dir
