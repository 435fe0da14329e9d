"""The run folder `runs/<name>/` as the trainer keeps it.

- the file names of the folder (the list is in `keras_mm.training.trainer`);
- `load_recipe(recipe, overrides)`: a recipe path or dict, validated, with
  absolute data paths (what `recipe.yaml` holds);
- `work_dir(run_dir, is_chief)`: where a worker writes (the run folder on
  the chief, a private `.<type>-<index>` folder on other workers);
- starting over (`clear_run`) or resuming (`backup_epoch`,
  `check_resumable`, `history_rows`), and `remove_backups` once the whole
  command has succeeded;
- `find_run_dir`: the run folder of a run folder or recipe path.
"""

import csv
import json
import os
import shutil

from keras_mm.errors import ConfigError
from keras_mm.training import run_data
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

# Recipe keys whose change makes a backup unusable.
RESUME_KEYS = ("data", "inputs", "fusion", "trunk", "heads",
               "training.batch_size", "training.optimizer",
               "training.schedule", "training.seed", "training.precision",
               "training.epochs")


def load_recipe(recipe, overrides):
    """A recipe path or dict with `overrides` applied, normalized, with
    absolute data paths."""
    from keras_mm.recipes import apply_overrides, load_recipe as load, \
        normalize_recipe

    if isinstance(recipe, (str, os.PathLike)):
        loaded = load(recipe, overrides=overrides)
    elif isinstance(recipe, dict):
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
    `path` (fresh start)."""
    for name in (HISTORY_FILE, METRICS_FILE, RUN_FILE, CURVES_FILE,
                 BEST_FILE, FINAL_FILE, TENSORBOARD_DIR, UNIMODAL_DIR,
                 run_data.PREPROCESSORS_FILE):
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
