"""`keras-mm tune RECIPE`: hyperparameter search over a recipe's key paths.

The recipe's `tune:` section (`keras_mm.recipes.tune_schema`) maps key
paths to search spaces. KerasTuner's oracles pick the values; each trial is
an ordinary `keras_mm.training.train` run of the recipe with those values
set, in its own run folder, so it resumes as any run does. The search's
folder (`<training.runs_dir>/<name>_tune` by default):

```
search.json        the search's fingerprint, seconds per trial
data/              train / val manifests when the recipe had no val split
keras_tuner/       KerasTuner's oracle and trial states
trials/<name>_trial_<id>/   each trial's run folder
trials.csv         one row per trial (trials.png: the plot)
best.yaml          the best trial's recipe, ready for `keras-mm train`
```

Selection is on the val split only: trials evaluate val alone, and the
test split is evaluated after the search for the best trial and the
recipe's own (reported, never selected on). A search killed at any point is resumed by the same
command: finished trials are kept, the interrupted one is retried with
the same values from its last epoch backup. `max_trials` and `max_minutes`
may be raised between sessions; any other change to the recipe or its
`tune:` section is refused (or `overwrite` starts again).

Trials skip the export and the single-modality scoreboard (they do not
change the fused val metric). Hyperband sets `training.epochs` per trial
to its bracket's budget and trains each trial from scratch.
"""

import copy
import gc
import hashlib
import json
import math
import os
import shutil
import time

import keras_tuner

from keras_mm.errors import ConfigError, DataError
from keras_mm.serving.atomic import atomic_write_text
from keras_mm.tuning import search_space, tune_report
from keras_mm.tuning.tune_result import TuneResult

SEARCH_FILE = "search.json"
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error", "ece",
                   "crossentropy", "hinge", "brier")
# Keys that may change between sessions of one search.
BUDGET_KEYS = ("max_trials", "max_minutes", "folder")


def resolve_objective(recipe, objective, direction):
    """`(objective, direction)` of `tune.objective` / `tune.direction`:
    `auto` is the first classification head's accuracy, else `loss`."""
    heads = recipe["heads"]
    if objective == "auto":
        objective = next((f"{h}.accuracy" for h, s in heads.items()
                          if s["type"] in ("classification", "binary")),
                         "loss")
    if objective != "loss":
        head, _, metric = objective.partition(".")
        if head not in heads or not metric:
            first = next(iter(heads))
            raise ConfigError(
                "tune.objective", f"{objective!r} is not loss or "
                f"<head>.<metric> of the heads ({', '.join(heads)}), e.g. "
                f"{first}.accuracy; it is read on the val split")
    if direction == "auto":
        last = objective.split(".")[-1].lower()
        direction = "min" if any(w in last for w in LOWER_IS_BETTER) \
            else "max"
    return objective, direction


def split_score(metrics, split, objective):
    """The objective's value in `metrics[split]`, or None."""
    entry = metrics.get(split) or {}
    if objective == "loss":
        return entry.get("loss")
    head, metric = objective.split(".", 1)
    value = ((entry.get("heads") or {}).get(head) or {}).get(metric)
    return value if isinstance(value, (int, float)) else None


class _SearchState:
    """`search.json`: the fingerprint and the seconds of each trial."""

    def __init__(self, folder, fingerprint, overwrite):
        self.path = os.path.join(folder, SEARCH_FILE)
        if overwrite and os.path.isdir(folder):
            shutil.rmtree(folder)
        state = None
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                state = json.load(f)
        if state is not None and state.get("fingerprint") != fingerprint:
            raise ConfigError(
                "tune", f"{folder} holds a search of another recipe, data "
                "or search space; only tune.max_trials and "
                "tune.max_minutes may change between sessions. Pass "
                "--overwrite to start again, or set tune.folder")
        os.makedirs(folder, exist_ok=True)
        self.state = state or {"fingerprint": fingerprint, "seconds": {}}
        self.save()

    def tested(self, trial_id, run_dir, split):
        """`{split: metrics}` of a trial's best model on `split`, evaluated
        once (kept in search.json)."""
        from keras_mm.training import evaluate

        tested = self.state.setdefault("tested", {}).setdefault(trial_id, {})
        if split not in tested:
            import keras
            metrics = evaluate(run_dir, splits=[split])[split]
            keras.backend.clear_session()
            tested[split] = {"loss": metrics.get("loss"), "heads": {
                head: {k: v for k, v in values.items()
                       if isinstance(v, (int, float))}
                for head, values in metrics.get("heads", {}).items()}}
            self.save()
        return {split: tested[split]}

    def spent(self):
        return float(sum(self.state["seconds"].values()))

    def record(self, trial_id, seconds):
        self.state["seconds"][trial_id] = seconds
        self.save()

    def save(self):
        atomic_write_text(self.path, json.dumps(self.state, indent=1,
                                                sort_keys=True))


def _fingerprint(raw, splits, train_digest):
    tune = {k: v for k, v in (raw.get("tune") or {}).items()
            if k not in BUDGET_KEYS}
    body = {k: v for k, v in raw.items() if k != "tune"}
    text = json.dumps({"recipe": body, "tune": tune, "splits": splits,
                       "train": train_digest}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _raw_recipe(recipe, overrides):
    from keras_mm.recipes import apply_overrides, read_yaml

    raw = read_yaml(recipe) if isinstance(recipe, (str, os.PathLike)) \
        else copy.deepcopy(recipe)
    raw, _ = apply_overrides(raw or {}, overrides)
    return raw


def _say(verbose, text):
    if verbose:
        print(text, flush=True)


def _trial_recipe(base, values, name, epochs):
    from keras_mm.recipes import apply_overrides

    recipe, _ = apply_overrides(base, search_space.overrides(values))
    recipe["name"] = name
    if epochs is not None:
        recipe.setdefault("training", {})["epochs"] = int(epochs)
    return recipe


def _describe(values):
    return ", ".join(f"{k}={tune_report.cell(v)}" for k, v in
                     values.items())


def _rows(oracle, space, objective, trials_dir, name, state, recipe_values,
          direction):
    from keras_mm.training.run_folder import METRICS_FILE

    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        values = {k: trial.hyperparameters.values.get(k) for k in space}
        run_dir = os.path.join(trials_dir, f"{name}_trial_{trial_id}")
        metrics = {}
        path = os.path.join(run_dir, METRICS_FILE)
        if trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED \
                and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                metrics = json.load(f)
        score = split_score(metrics, "val", objective)
        rows.append({
            "trial": trial_id, "status": trial.status, "values": values,
            "score": score, "run_dir": run_dir,
            "splits": {},
            "seconds": state.state["seconds"].get(trial_id),
            "recipe": recipe_values is not None and values == recipe_values
            and trial_id == min(oracle.trials), "best": False})
    scored = [r for r in rows if r["score"] is not None
              and math.isfinite(r["score"])]
    if scored:
        sign = 1 if direction == "max" else -1
        best = max(scored, key=lambda r: (sign * r["score"], -int(
            r["trial"])))
        best["best"] = True
    return rows


def tune(recipe, overrides=(), *, max_trials=None, max_minutes=None,
         algorithm=None, folder=None, runs_dir=None, overwrite=False,
         verbose=1, train_verbose=0):
    """Searches the recipe's `tune.space`; writes the table, the plot and
    `best.yaml`.

    Args:
        recipe: a YAML recipe path, or a recipe dict, with a `tune:`
            section.
        overrides: `"key.path=value"` strings (`--set`), tune keys included.
        max_trials, max_minutes, algorithm, folder: override `tune.*`.
        runs_dir: overrides `training.runs_dir` (the default folder's
            parent).
        overwrite: start again in a folder that holds another search.
        verbose: 0 silent, 1 a line per trial and the table.
        train_verbose: each trial's `train` verbosity.

    Returns:
        A `TuneResult`.

    Raises:
        ConfigError: no `tune:` section, a search-space value that makes an
            invalid recipe (at `tune.space.<key path>`), an objective the
            val metrics lack, or a folder holding another search.

    Example:

    >>> result = tune("recipes/av_mnist.yaml",
    ...               overrides=["tune.max_trials=4"])   # doctest: +SKIP
    >>> result.best["values"], result.best_recipe        # doctest: +SKIP
    """
    import keras

    from keras_mm.training import run_data, run_folder, train
    from keras_mm.tuning.holdout import holdout_splits, manifest_digest
    from keras_mm.tuning.recipe_tuner import RecipeTuner, make_oracle

    normalized = run_folder.load_recipe(recipe, overrides)
    if "tune" not in normalized:
        raise ConfigError(
            "tune", "the recipe has no tune: section; add one mapping key "
            "paths to search spaces, e.g. tune: {space: {fusion.type: "
            "{choice: [concat, film]}}}")
    raw = _raw_recipe(recipe, overrides)
    settings = dict(normalized["tune"])
    for key, value in (("max_trials", max_trials),
                       ("max_minutes", max_minutes),
                       ("algorithm", algorithm), ("folder", folder)):
        if value is not None:
            settings[key] = value
    space = settings["space"]
    search_space.check_space(raw, space)
    objective, direction = resolve_objective(
        normalized, settings["objective"], settings["direction"])
    name = normalized["name"]
    parent = runs_dir or normalized["training"]["runs_dir"]
    folder = os.path.abspath(settings["folder"] or os.path.join(
        parent, f"{name}_tune"))

    run_data.generate_data(normalized)
    train_path = normalized["data"]["splits"]["train"]
    digest = manifest_digest(train_path) if isinstance(train_path, str) \
        and normalized["data"]["format"] == "manifest" else None
    state = _SearchState(folder, _fingerprint(raw, normalized["data"][
        "splits"], digest), overwrite)
    notes = []
    splits, note = holdout_splits(normalized, settings["val_fraction"],
                                  settings["seed"],
                                  os.path.join(folder, "data"))
    if note:
        notes.append(note)
    data = copy.deepcopy(normalized["data"])
    data.update(splits=splits, generate=None)
    if note:    # the held-out manifests hold absolute paths, checked above
        data["allow_paths_outside"] = True
    extra = [s for s in ("test",) if s in splits]
    # Trials are scored on val only; the test split is evaluated at the end
    # for the best trial and the recipe's own (never selected on).
    evaluation = {"splits": ["val"], "compare_unimodal": False}
    base = {k: copy.deepcopy(v) for k, v in raw.items() if k != "tune"}
    base.update(data=data, evaluation=evaluation)

    recipe_values, why = search_space.recipe_values(raw, normalized, space)
    if settings["algorithm"] == "hyperband" or not settings[
            "include_recipe"]:
        recipe_values, why = None, None
    if why:
        notes.append(f"the recipe's own values are not a trial: {why}")
    oracle = make_oracle(
        settings["algorithm"], f"val_{objective}", direction,
        search_space.hyperparameters(space), settings["max_trials"],
        settings["seed"], normalized["training"]["epochs"],
        settings["hyperband_factor"], recipe_values)
    trials_dir = os.path.join(folder, "trials")
    for line in notes:
        _say(verbose, f"tune: {line}")

    def run_trial(trial):
        values = {k: trial.hyperparameters.values[k] for k in space}
        epochs = trial.hyperparameters.values.get("tuner/epochs")
        trial_name = f"{name}_trial_{trial.trial_id}"
        run_dir = os.path.join(trials_dir, trial_name)
        started = time.perf_counter()
        if run_folder.finished_run(run_dir):
            # Killed after its run finished and before the oracle heard.
            with open(os.path.join(run_dir, run_folder.METRICS_FILE),
                      encoding="utf-8") as f:
                metrics = json.load(f)
        else:
            try:
                metrics = train(_trial_recipe(base, values, trial_name,
                                              epochs),
                                export=False, runs_dir=trials_dir,
                                verbose=train_verbose).metrics
            except DataError as error:
                raise _Fatal(error) from None
            finally:
                keras.backend.clear_session()
                gc.collect()
        seconds = time.perf_counter() - started
        state.record(trial.trial_id, seconds)
        score = split_score(metrics, "val", objective)
        if score is None:
            raise _Fatal(ConfigError(
                "tune.objective", f"the val metrics have no {objective!r}; "
                f"they have {_available(metrics.get('val') or {})}"))
        if not math.isfinite(score):
            raise keras_tuner.errors.FailedTrialError(
                f"val {objective} is {score} (the loss went non-finite?)")
        _say(verbose, f"tune: trial {trial.trial_id}: {_describe(values)}"
             f"{f', epochs={epochs}' if epochs else ''} -> val "
             f"{objective} {score:.4f} ({seconds:.0f} s)")
        return {f"val_{objective}": score}

    def reported(trial):
        if trial.status != keras_tuner.engine.trial.TrialStatus.COMPLETED:
            last = (trial.message or "").strip().splitlines()[-1:] or ["?"]
            _say(verbose, f"tune: trial {trial.trial_id} "
                 f"{trial.status.lower()}: {last[0]}")

    tuner = RecipeTuner(oracle, run_trial, folder)
    tuner.oracle.verbose = 0
    budget = None if settings["max_minutes"] is None else \
        60.0 * settings["max_minutes"]
    try:
        stopped = tuner.search_within(settings["max_trials"], budget,
                                      state.spent, on_trial=reported)
    except _Fatal as error:
        raise error.args[0] from None

    rows = _rows(tuner.oracle, space, objective, trials_dir, name, state,
                 recipe_values, direction)
    for row in rows:
        if row["best"] or row["recipe"]:
            row["splits"] = {s: split_score(state.tested(
                row["trial"], row["run_dir"], s), s, objective)
                for s in extra}
    result = TuneResult(folder=folder, objective=objective,
                        direction=direction, trials=rows, stopped=stopped,
                        notes=notes)
    result.table = tune_report.table_text(rows, list(space), objective,
                                          extra)
    tune_report.write_table(rows, list(space), extra,
                            os.path.join(folder, tune_report.TABLE_FILE))
    result.best = next((r for r in rows if r["best"]), None)
    if result.best is not None:
        result.plot = tune_report.plot_trials(
            rows, space, objective, os.path.join(folder,
                                                 tune_report.PLOT_FILE))
        result.best_recipe = os.path.join(folder, tune_report.BEST_FILE)
        text, _ = tune_report.best_recipe(
            raw, result.best["values"], data,
            {"splits": ["val"] + extra, "compare_unimodal": normalized[
                "evaluation"]["compare_unimodal"]}, f"{name}_best",
            result.best["trial"],
            result.best["score"], objective, result.best_recipe)
        atomic_write_text(result.best_recipe, text)
    _say(verbose, result.table)
    return result


def _available(entry):
    names = ["loss"] if "loss" in entry else []
    for head, metrics in (entry.get("heads") or {}).items():
        names += [f"{head}.{m}" for m, v in metrics.items()
                  if isinstance(v, (int, float))]
    return ", ".join(names) or "none"


class _Fatal(keras_tuner.errors.FatalError):
    """Stops the search with `args[0]`: KerasTuner re-raises `FatalError`s
    and records other errors as failed trials. A data error or a missing
    objective is every trial's, not one set of values'."""
