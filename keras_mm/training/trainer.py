"""`train(recipe)`: from a YAML recipe to an evaluated, exported model.

Steps of `train`:
1. load and validate the recipe (`--set` overrides), resolve data paths;
2. choose the strategy (`resolve_strategy`: TPU, several GPUs, several
   workers from `TF_CONFIG`, or one device), its precision policy
   (`keras.config.set_dtype_policy`) and seeds
   (`keras.utils.set_random_seed`; `training.deterministic` also turns on
   `tf.config.experimental.enable_op_determinism`);
3. build the data set when absent (`data.generate`);
4. build the preprocessors and fit them on the TRAIN split only
   (`preprocessors.json`);
5. build and compile the model in the strategy's scope (input shapes and
   vocabulary sizes from the fitted preprocessors);
6. fit (`model.fit`, or `fit_distributed` where `model.fit` fails in
   Keras 3.15: under `MultiWorkerMirroredStrategy`, and under any
   multi-replica strategy for models with boolean (mask) inputs)
   with backup-and-restore, best checkpoint, early stopping, the learning
   rate schedule, TensorBoard and CSV logs; a progress bar on a terminal,
   one line per epoch otherwise;
7. evaluate every split of `evaluation.splits` with the best checkpoint;
8. optionally train the same recipe on each single input
   (`evaluation.compare_unimodal`) and print the scoreboard;
9. export to `saved_models/<name>/<version>` and verify it.

The run folder `runs/<name>/`:

```
recipe.yaml            the resolved recipe (overrides applied, absolute paths)
preprocessors.json     fitted preprocessors (keras_mm.data serialization)
run.json               strategy, precision, epochs run, resumed_from_epoch
metrics.json           {split: {loss, num_examples, heads: {head: {metric}}}}
history.csv            one row per epoch (keras.callbacks.CSVLogger)
learning_curves.png    loss and metrics per epoch, train and validation
confusion_<head>_<split>.png   classification / binary heads
best.keras             best checkpoint (final.keras without checkpointing)
tensorboard/           TensorBoard logs
backup/                BackupAndRestore state while the run is unfinished
bad_input_<split>.json bad-input reports
unimodal/<input>/      the single-modality runs of the scoreboard
```

Resuming: a run killed at any point is resumed by the same command. The
backup (`RunBackup`) is written at the end of each epoch
(`training.backup.save_freq: epoch`, the default) after the history row,
the best checkpoint and the early-stopping state, so the resumed run
restarts the interrupted epoch from the weights, optimizer and random
state (dropout seeds) of the previous epoch end, with the same batches and
augmentation draws (`run_data.epoch_dataset`), the same early-stopping and
checkpoint state, and ends with the same metrics as an uninterrupted run
when `training.deterministic` is on. Backups are removed only when the
whole command has succeeded: a kill during the evaluation, the scoreboard
runs or the export restores the trained model instead of training again.
(With an integer `save_freq` Keras restarts the interrupted epoch from its
first batch with the mid-epoch weights, so the result is close but not
identical.)
"""

import contextlib
import copy
import csv
import json
import logging
import os
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_mm.errors import ConfigError
from keras_mm.training import run_artifacts, run_data
from keras_mm.training.distributed_loop import fit_distributed
from keras_mm.training.optimizers import build_optimizer
from keras_mm.training.run_backup import RunBackup, read_backup_metadata
from keras_mm.training.resumable_early_stopping import (
    ResumableEarlyStopping, replay_best, resolve_mode)
from keras_mm.training.strategy import resolve_strategy
from keras_mm.training.train_result import TrainResult

log = logging.getLogger("keras_mm")

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "learning_curves.png"
BEST_FILE = "best.keras"
FINAL_FILE = "final.keras"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
UNIMODAL_DIR = "unimodal"
EARLY_STOPPING_FILE = "early_stopping_best.npz"

# Recipe keys whose change makes a backup unusable.
_RESUME_KEYS = ("data", "inputs", "fusion", "trunk", "heads",
                "training.batch_size", "training.optimizer",
                "training.schedule", "training.seed", "training.precision",
                "training.epochs")


# -- small helpers --------------------------------------------------------------


def _say(verbose, message):
    """A line for the user (stdout, when not silent) and the log."""
    log.info(message)
    if verbose:
        print(message, flush=True)


def _verbosity(value):
    """Keras `verbose`: 1 (progress bar) on a terminal, 2 (one line per
    epoch) otherwise; 0 silent."""
    if value in (None, "auto"):
        return 1 if sys.stdout.isatty() else 2
    return int(value)


def _load_recipe(recipe, overrides):
    from keras_mm.recipes import apply_overrides, load_recipe, \
        normalize_recipe

    if isinstance(recipe, (str, os.PathLike)):
        loaded = load_recipe(recipe, overrides=overrides)
    elif isinstance(recipe, dict):
        raw, _ = apply_overrides(recipe, overrides)
        loaded = normalize_recipe(raw)
    else:
        raise TypeError(f"recipe must be a path or a dict, not "
                        f"{type(recipe).__name__}")
    return run_data.resolve_paths(loaded)


def _get(recipe, dotted):
    node = recipe
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _check_resumable(recipe, saved_path, backup_dir):
    from keras_mm.recipes import read_yaml

    if not os.path.exists(saved_path):
        return
    saved = read_yaml(saved_path)
    for key in _RESUME_KEYS:
        old, new = _get(saved, key), _get(recipe, key)
        if json.dumps(old, sort_keys=True) != json.dumps(new,
                                                         sort_keys=True):
            raise ConfigError(
                key, f"differs from the interrupted run in {saved_path} "
                f"({old!r} there, {new!r} now); resume it with the same "
                f"recipe, or delete {backup_dir} to start over")


def _tf_config_task():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return "worker", 0
    task = json.loads(raw).get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0))


def _backup_epoch(backup_dir):
    """The epoch a backup resumes at, or None when there is no backup."""
    metadata = read_backup_metadata(backup_dir)
    return None if metadata is None else int(metadata["epoch"])


def _history_rows(path, keep):
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


@contextlib.contextmanager
def _global_state(precision, deterministic):
    """Sets the dtype policy and op determinism; restores them after."""
    from tensorflow.python.framework import config as tf_config

    policy = keras.config.dtype_policy()
    was_deterministic = tf_config.is_op_determinism_enabled()
    keras.config.set_dtype_policy(precision)
    if deterministic and not was_deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        if deterministic and not was_deterministic:
            tf_config.disable_op_determinism()


def _monitor(config, has_val, what, verbose):
    """A monitor config usable with the data at hand (`val_x` -> `x`
    without a validation split), with its mode resolved."""
    if not config:
        return None
    config = dict(config)
    if not has_val and config["monitor"].startswith("val_"):
        _say(verbose, f"{what}: no val split, monitoring "
             f"{config['monitor'][4:]!r} instead of {config['monitor']!r}")
        config["monitor"] = config["monitor"][4:]
    mode = resolve_mode(config["monitor"], config.get("mode", "auto"))
    if mode is None:
        raise ConfigError(
            f"training.{what}.mode",
            f"cannot tell whether {config['monitor']!r} should go up or down;"
            " set mode to min or max")
    config["mode"] = mode
    return config


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _clear_run(work_dir):
    """Removes the outputs of a previous, finished run (fresh start)."""
    for name in (HISTORY_FILE, METRICS_FILE, RUN_FILE, CURVES_FILE,
                 BEST_FILE, FINAL_FILE, TENSORBOARD_DIR, UNIMODAL_DIR,
                 run_data.PREPROCESSORS_FILE):
        _remove(os.path.join(work_dir, name))
    for name in os.listdir(work_dir):
        if name.startswith("confusion_") and name.endswith(".png"):
            _remove(os.path.join(work_dir, name))


def _tensorboard_installed():
    import importlib.util
    return importlib.util.find_spec("tensorboard") is not None


def _model_input_names(model):
    return [t.name.split(":")[0] for t in model.inputs]


# -- evaluation ------------------------------------------------------------------


def _split_metrics(results, heads):
    """Keras `evaluate` results -> `{"loss", "heads": {head: {metric}}}`."""
    out = {"loss": float(results.get("loss", float("nan"))),
           "heads": {h: {} for h in heads}}
    single = len(heads) == 1
    for key, value in results.items():
        if key == "loss":
            continue
        for head in sorted(heads, key=len, reverse=True):
            if key.startswith(head + "_"):
                out["heads"][head][key[len(head) + 1:]] = float(value)
                break
        else:
            if single:
                out["heads"][heads[0]][key] = float(value)
            else:
                out.setdefault("other", {})[key] = float(value)
    if single and "loss" not in out["heads"][heads[0]]:
        out["heads"][heads[0]]["loss"] = out["loss"]
    return out


def _confusion_heads(spec):
    """`{head: (kind, class names)}` of classification and binary heads."""
    out = {}
    for head, entry in spec["heads"].items():
        if entry["type"] == "classification":
            names = entry.get("class_names") or [
                str(i) for i in range(int(entry["num_classes"]))]
            out[head] = ("classification", [str(n) for n in names])
        elif entry["type"] == "binary":
            names = entry.get("class_names") or ["0", "1"]
            out[head] = ("binary", [str(n) for n in names])
    return out


def _confusions(model, dataset, spec):
    heads = _confusion_heads(spec)
    if not heads:
        return {}
    truth = {h: [] for h in heads}
    guess = {h: [] for h in heads}
    for features, labels in dataset:
        outputs = model(features, training=False)
        for head, (kind, _) in heads.items():
            y = np.asarray(labels[head])
            p = np.asarray(keras.ops.convert_to_numpy(outputs[head]),
                           np.float32)
            if kind == "classification":
                truth[head].append(y.reshape(-1).astype(int))
                guess[head].append(p.argmax(axis=-1).reshape(-1))
            else:
                truth[head].append((y.reshape(-1) > 0.5).astype(int))
                guess[head].append((p.reshape(-1) > 0.5).astype(int))
    out = {}
    for head, (_, names) in heads.items():
        if not truth[head]:
            continue
        out[head] = (run_artifacts.confusion_matrix(
            np.concatenate(truth[head]), np.concatenate(guess[head]),
            len(names)), names)
    return out


def _evaluate_splits(model, recipe, spec, preprocessors, splits, batch_size,
                     report_dir=None, plot_dir=None, pipelines=None):
    """Metrics of `model` on each split; confusion PNGs into `plot_dir`."""
    heads = list(spec["heads"])
    input_names = _model_input_names(model)
    metrics = {}
    for split in splits:
        pipe = (pipelines or {}).get(split) or run_data.make_pipeline(
            recipe, split, preprocessors, spec, input_names=input_names,
            report_dir=report_dir)
        dataset = run_data.eval_dataset(pipe, batch_size)
        results = model.evaluate(dataset, return_dict=True, verbose=0)
        entry = _split_metrics(results, heads)
        confusions = _confusions(model, dataset, spec)
        count = None
        for head, (matrix, names) in confusions.items():
            count = int(matrix.sum())
            if plot_dir is not None:
                run_artifacts.plot_confusion_matrix(
                    matrix, names, os.path.join(
                        plot_dir, f"confusion_{head}_{split}.png"),
                    title=f"{head} - {split}")
            entry["heads"][head]["confusion_matrix"] = matrix.tolist()
        if count is None:
            count = int(sum(int(tf.shape(tf.nest.flatten(b)[0])[0])
                            for b in dataset))
        entry["num_examples"] = count
        metrics[split] = entry
    return metrics


def _load_model(path, spec=None):
    """A one-device copy of a `.keras` checkpoint, compiled for evaluation."""
    from keras_mm.builder import compile_model, model_spec

    model = keras.saving.load_model(path, compile=False)
    compile_model(model, spec or model_spec(model), optimizer="adam",
                  jit_compile=False)
    return model


# -- scoreboard ------------------------------------------------------------------


def scoreboard_rows(metrics, label="fused"):
    """Rows `{"model", "split", "loss", "<head>_<metric>": value}`."""
    rows = []
    for split, entry in metrics.items():
        row = {"model": label, "split": split, "loss": entry["loss"]}
        for head, values in entry["heads"].items():
            for name, value in values.items():
                if name in ("loss", "confusion_matrix"):
                    continue
                row[f"{head}_{name}"] = value
        rows.append(row)
    return rows


def format_scoreboard(rows):
    """The scoreboard as a plain-text table."""
    if not rows:
        return ""
    columns = ["model", "split", "loss"]
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    table = [columns] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table)
              for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- one training run ------------------------------------------------------------


def _unimodal_recipe(recipe, input_name):
    from keras_mm.builder import unimodal_spec
    from keras_mm.recipes import recipe_model_spec

    single = unimodal_spec(recipe_model_spec(recipe), input_name)
    sub = copy.deepcopy(recipe)
    sub["name"] = f"{recipe['name']}_{input_name}_only"
    sub["inputs"] = single["inputs"]
    sub["fusion"] = None
    sub["evaluation"] = dict(sub["evaluation"], compare_unimodal=False)
    return sub


def _run(recipe, plan, run_dir, verbose, extra_callbacks=(),
         preprocessors=None):
    """Trains one model of `recipe` into `run_dir`; evaluates on the chief.

    Returns:
        `(TrainResult, preprocessors, spec, eval model or None)`.
    """
    from keras_mm.builder import build_model, compile_model
    from keras_mm.builder.spec import complete_spec
    from keras_mm.recipes import recipe_model_spec, save_recipe

    training = recipe["training"]
    seed = training["seed"]
    if plan.is_chief:
        work_dir = run_dir
    else:
        kind, index = _tf_config_task()
        work_dir = os.path.join(run_dir, f".{kind}-{index}")
    os.makedirs(work_dir, exist_ok=True)
    backup_dir = os.path.join(work_dir, BACKUP_DIR)
    recipe_path = os.path.join(work_dir, RECIPE_FILE)
    history_path = os.path.join(work_dir, HISTORY_FILE)
    pre_path = os.path.join(work_dir, run_data.PREPROCESSORS_FILE)

    resume_epoch = _backup_epoch(backup_dir) if training["backup"] else None
    if resume_epoch is None:
        _remove(backup_dir)
        _clear_run(work_dir)
        initial_epoch = 0
    else:
        _check_resumable(recipe, recipe_path, backup_dir)
        initial_epoch = resume_epoch
        _say(verbose, f"resuming {recipe['name']} from the backup in "
             f"{backup_dir}: epoch {min(initial_epoch + 1, training['epochs'])}"
             f" of {training['epochs']}")
    save_recipe(recipe, recipe_path)

    # Data and preprocessors.
    keras.utils.set_random_seed(seed)
    run_data.generate_data(recipe)
    if preprocessors is None:
        if resume_epoch is not None and os.path.exists(pre_path):
            preprocessors = run_data.load_preprocessors(
                pre_path, order=list(recipe["inputs"]))
        else:
            preprocessors = run_data.adapt_preprocessors(
                run_data.make_preprocessors(recipe), recipe)
    else:
        preprocessors = {n: preprocessors[n] for n in recipe["inputs"]}
    run_data.save_preprocessors(preprocessors, pre_path)
    spec = complete_spec(recipe_model_spec(recipe), preprocessors)

    # Model.
    with plan.strategy.scope():
        keras.utils.set_random_seed(seed)
        model = build_model(spec)
    input_names = _model_input_names(model)
    splits = recipe["data"]["splits"]
    pipelines = {split: run_data.make_pipeline(
        recipe, split, preprocessors, spec, input_names=input_names,
        report_dir=work_dir) for split in splits}
    has_val = "val" in pipelines
    deterministic = bool(recipe["data"]["deterministic"] or
                         training["deterministic"])
    batch_size = training["batch_size"]
    keras.utils.set_random_seed(seed)
    train_ds, steps = run_data.epoch_dataset(
        pipelines["train"], batch_size, seed=seed, epochs=training["epochs"],
        initial_epoch=initial_epoch,
        shuffle_buffer=recipe["data"]["shuffle_buffer"],
        drop_remainder=plan.drop_remainder, cache=recipe["data"]["cache"],
        deterministic=deterministic)
    val_ds = run_data.eval_dataset(pipelines["val"], batch_size,
                                   plan.drop_remainder) if has_val else None
    with plan.strategy.scope():
        optimizer = build_optimizer(training, steps)
        compile_model(model, spec, optimizer=optimizer,
                      jit_compile=training["jit_compile"],
                      steps_per_execution=plan.steps_per_execution)

    # Callbacks (the backup last: it marks an epoch done once the history
    # row, the best checkpoint and the early-stopping state are written).
    rows = _history_rows(history_path, initial_epoch)
    callbacks = []
    stopper = None
    es_config = _monitor(training["early_stopping"], has_val,
                         "early_stopping", verbose)
    if es_config:
        stopper = ResumableEarlyStopping(
            monitor=es_config["monitor"], mode=es_config["mode"],
            patience=es_config["patience"],
            min_delta=es_config["min_delta"],
            restore_best_weights=es_config["restore_best_weights"],
            history=rows, verbose=1 if verbose else 0,
            weights_path=os.path.join(backup_dir, EARLY_STOPPING_FILE))
        callbacks.append(stopper)
    ckpt_config = _monitor(training["checkpoint"], has_val, "checkpoint",
                           verbose)
    best_path = os.path.join(work_dir, BEST_FILE)
    if ckpt_config:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            best_path, monitor=ckpt_config["monitor"],
            mode=ckpt_config["mode"], save_best_only=True,
            initial_value_threshold=replay_best(
                rows, ckpt_config["monitor"], ckpt_config["mode"])))
    callbacks.append(keras.callbacks.CSVLogger(history_path, append=True))
    if training["tensorboard"]:
        if _tensorboard_installed():
            callbacks.append(keras.callbacks.TensorBoard(
                os.path.join(work_dir, TENSORBOARD_DIR), write_graph=False))
        else:
            _say(verbose, "training.tensorboard: the tensorboard package is "
                 "not installed (pip install tensorboard); no TensorBoard "
                 "logs are written")
    callbacks.extend(extra_callbacks or ())
    if training["backup"]:
        # Kept until the whole command is done (`_finish`): a kill during
        # the evaluation, the scoreboard runs or the export resumes there.
        callbacks.append(RunBackup(
            backup_dir, save_freq=training["backup"]["save_freq"],
            delete_checkpoint=False))

    epochs = training["epochs"]
    if stopper is not None and stopper.replay().stopped:
        epochs = initial_epoch      # it had stopped before the kill
    fit_verbose = verbose if plan.is_chief else 0
    custom_loop, notes = plan.use_custom_loop, list(plan.notes)
    bool_inputs = [t.name.split(":")[0] for t in model.inputs
                   if keras.backend.standardize_dtype(t.dtype) == "bool"]
    if not custom_loop and plan.num_replicas > 1 and bool_inputs:
        # Keras 3.15's fit under a multi-replica strategy averages the first
        # batch (`_maybe_symbolic_build`): boolean inputs fail ("AddN" of
        # bool). The distributed loop never does that.
        custom_loop = True
        notes.append(f"model.fit fails under {type(plan.strategy).__name__}"
                     f" with boolean inputs ({', '.join(bool_inputs)}) in "
                     "Keras 3.15; using the keras_mm distributed loop")
        _say(verbose, notes[-1])
    if initial_epoch >= epochs:
        # Training had finished before the kill (in a later step of the
        # command): restore the final state, train nothing.
        _say(verbose, f"{recipe['name']}: training had finished; restoring "
             "its final state from the backup")
        finished = keras.callbacks.CallbackList(callbacks, model=model)
        finished.on_train_begin()
        finished.on_train_end()
    elif custom_loop:
        fit_distributed(model, train_ds, epochs=epochs,
                        validation_data=val_ds, callbacks=callbacks,
                        strategy=plan.strategy, initial_epoch=initial_epoch,
                        steps_per_epoch=steps, verbose=fit_verbose)
    else:
        model.fit(train_ds, epochs=epochs, steps_per_epoch=steps,
                  validation_data=val_ds, callbacks=callbacks,
                  initial_epoch=initial_epoch, verbose=fit_verbose,
                  shuffle=False)

    history = run_artifacts.read_history_csv(history_path) \
        if os.path.exists(history_path) else {}
    epochs_run = len(next(iter(history.values()), []))
    checkpoint = best_path if ckpt_config and os.path.exists(best_path) \
        else None
    if checkpoint is None:
        checkpoint = os.path.join(work_dir, FINAL_FILE)
        model.save(checkpoint)
    result = TrainResult(run_dir=run_dir, metrics={}, history=history,
                         best_checkpoint=checkpoint,
                         resumed_from_epoch=initial_epoch,
                         epochs_run=epochs_run, is_chief=plan.is_chief,
                         model=model)
    if not plan.is_chief:
        return result, preprocessors, spec, None

    # Evaluation (one device, the best checkpoint) and artifacts.
    eval_model = _load_model(checkpoint, spec)
    result.metrics = _evaluate_splits(
        eval_model, recipe, spec, preprocessors,
        recipe["evaluation"]["splits"], batch_size, plot_dir=run_dir,
        pipelines=pipelines)
    run_artifacts.write_json(os.path.join(run_dir, METRICS_FILE),
                             result.metrics)
    if history:
        run_artifacts.plot_learning_curves(
            history, os.path.join(run_dir, CURVES_FILE))
    run_artifacts.write_json(os.path.join(run_dir, RUN_FILE), {
        "name": recipe["name"], "strategy": plan.kind,
        "num_replicas": plan.num_replicas, "precision": plan.precision,
        "steps_per_execution": plan.steps_per_execution,
        "custom_loop": custom_loop, "notes": notes,
        "steps_per_epoch": steps, "epochs": training["epochs"],
        "epochs_run": epochs_run, "resumed_from_epoch": initial_epoch,
        "checkpoint": os.path.basename(checkpoint)})
    return result, preprocessors, spec, eval_model


# -- public API -------------------------------------------------------------------


def train(recipe, overrides=(), *, export=True, verify=True, runs_dir=None,
          verbose=None, callbacks=None):
    """Trains, evaluates and exports the model of a recipe.

    Running the same command again after the process was killed resumes
    the run from its last backup (`runs/<name>/backup`).

    Args:
        recipe: a YAML recipe path, or a recipe dict (plain data).
        overrides: `"key.path=value"` strings (the CLI's `--set`).
        export: export the best model to `export.base_dir/<name>/<version>`.
        verify: verify the export before publishing it (also needs
            `export.verify` in the recipe).
        runs_dir: folder of the run folders (default `training.runs_dir`).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch; default
            `training.verbose` (`auto`: 1 on a terminal, 2 otherwise).
        callbacks: extra `keras.callbacks.Callback`s for the main run.

    Returns:
        A `TrainResult`.

    Example:

    >>> result = train("recipes/demo.yaml",
    ...                overrides=["training.epochs=2"])   # doctest: +SKIP
    >>> result.metrics["test"]["heads"]["label"]["accuracy"]  # doctest: +SKIP
    0.9
    """
    recipe = _load_recipe(recipe, overrides)
    training = recipe["training"]
    if runs_dir is not None:
        training["runs_dir"] = os.fspath(runs_dir)
    training["runs_dir"] = os.path.abspath(training["runs_dir"])
    recipe["export"]["base_dir"] = os.path.abspath(
        recipe["export"]["base_dir"])
    verbose = _verbosity(training["verbose"] if verbose is None else verbose)
    plan = resolve_strategy(training["strategy"], training["precision"],
                            training["steps_per_execution"], training["tpu"])
    if not plan.is_chief:
        verbose = 0
    run_dir = os.path.join(training["runs_dir"], recipe["name"])
    os.makedirs(run_dir, exist_ok=True)

    for note in plan.notes:
        _say(verbose, note)
    if recipe["data"]["cache"] == "memory":
        log.info("data.cache: memory is not used for training: each epoch "
                 "is its own seeded pass (see run_data.epoch_dataset)")

    with _global_state(plan.precision, training["deterministic"]):
        result, preprocessors, spec, eval_model = _run(
            recipe, plan, run_dir, verbose, callbacks)
        if plan.is_chief:
            result.scoreboard = scoreboard_rows(result.metrics, "fused")
        if recipe["evaluation"]["compare_unimodal"] and \
                len(recipe["inputs"]) > 1:
            for name in recipe["inputs"]:
                sub = _unimodal_recipe(recipe, name)
                sub_dir = os.path.join(run_dir, UNIMODAL_DIR, name)
                _say(verbose, f"training the {name}-only model of the "
                     "scoreboard")
                sub_result, _, _, _ = _run(sub, plan, sub_dir, verbose,
                                           preprocessors=preprocessors)
                if plan.is_chief:
                    result.unimodal[name] = sub_result.metrics
                    result.scoreboard.extend(scoreboard_rows(
                        sub_result.metrics, f"{name} only"))
        if not plan.is_chief:
            _finish(run_dir, plan)
            return result
        if result.scoreboard:
            run_artifacts.write_json(
                os.path.join(run_dir, "scoreboard.json"), result.scoreboard)
            if verbose:
                print("\n" + format_scoreboard(result.scoreboard) + "\n",
                      flush=True)
        if export:
            result.export_path, result.verify_report = _export(
                eval_model, preprocessors, recipe, spec,
                verify=verify and recipe["export"]["verify"],
                report_dir=run_dir)
            _say(verbose, f"exported to {result.export_path}")
        _finish(run_dir, plan)
    return result


def _finish(run_dir, plan):
    """Removes the backups of a completed command (and, on a non-chief
    worker, its private folder)."""
    unimodal = os.path.join(run_dir, UNIMODAL_DIR)
    folders = [run_dir] + ([os.path.join(unimodal, name)
                            for name in sorted(os.listdir(unimodal))]
                           if os.path.isdir(unimodal) else [])
    kind, index = _tf_config_task()
    for folder in folders:
        if plan.is_chief:
            _remove(os.path.join(folder, BACKUP_DIR))
        else:
            _remove(os.path.join(folder, f".{kind}-{index}"))


def _export(model, preprocessors, recipe, spec, name=None, base_dir=None,
            version=None, verify=True, report_dir=None):
    from keras_mm.serving import export as export_model

    settings = recipe["export"]
    splits = recipe["data"]["splits"]
    split = next((s for s in ("test", "val", "train") if s in splits))
    pipe = run_data.make_pipeline(recipe, split, preprocessors, spec,
                                  report_dir=report_dir, with_labels=False)
    golden = run_data.golden_examples(pipe, settings["golden_examples"])
    path = export_model(
        model, preprocessors, name or settings["name"],
        golden_examples=golden,
        base_dir=base_dir or settings["base_dir"],
        version=version if version is not None else settings["version"],
        verify=verify)
    return path, _verify_report(path) if verify else None


def _verify_report(path):
    """The verifier's report the exporter keeps beside a verified export
    (it publishes nothing that failed)."""
    from keras_mm.serving import exporter

    name = getattr(exporter, "VERIFY_FILE",
                   os.path.join("assets.extra", "keras_mm_verify.json"))
    report_path = os.path.join(path, name)
    if os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as f:
            return json.load(f)
    return {"ok": True, "path": path,
            "note": "verified by keras_mm.serving.export before publishing"}


def _find_run_dir(run_dir_or_recipe):
    path = os.fspath(run_dir_or_recipe)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, RECIPE_FILE)):
            raise ConfigError(None, f"{path} is not a run folder (it has no "
                              f"{RECIPE_FILE}); train first or pass the run "
                              "folder runs/<name>")
        return path
    recipe = _load_recipe(path, ())
    run_dir = os.path.join(recipe["training"]["runs_dir"], recipe["name"])
    if not os.path.exists(os.path.join(run_dir, RECIPE_FILE)):
        raise ConfigError(None, f"{run_dir} holds no finished run of "
                          f"{path}; train it first (keras-mm train {path})")
    return run_dir


def load_run(run_dir, checkpoint=None):
    """Loads a finished run: `(recipe, model, preprocessors)`.

    Args:
        run_dir: the run folder (`runs/<name>`).
        checkpoint: a `.keras` file to load instead of the run's best
            checkpoint (`best.keras`, else `final.keras`).

    Returns:
        The resolved recipe (dict), the model (compiled for evaluation, on
        one device) and `{input name: fitted preprocessor}`.
    """
    from keras_mm.recipes import load_recipe

    run_dir = os.fspath(run_dir)
    recipe = load_recipe(os.path.join(run_dir, RECIPE_FILE))
    if checkpoint is None:
        for name in (BEST_FILE, FINAL_FILE):
            if os.path.exists(os.path.join(run_dir, name)):
                checkpoint = os.path.join(run_dir, name)
                break
        else:
            raise ConfigError(None, f"{run_dir} holds no {BEST_FILE} nor "
                              f"{FINAL_FILE}: the run did not finish; run "
                              "the same train command again to resume it")
    preprocessors = run_data.load_preprocessors(
        os.path.join(run_dir, run_data.PREPROCESSORS_FILE),
        order=list(recipe["inputs"]))
    model = _load_model(checkpoint)
    return recipe, model, preprocessors


def evaluate(run_dir_or_recipe, splits=("test",), checkpoint=None):
    """Metrics of a finished run's best model on `splits`.

    Args:
        run_dir_or_recipe: the run folder, or the recipe it was trained
            from (its run folder is `training.runs_dir/<name>`).
        splits: split names of the recipe's `data.splits`.
        checkpoint: a `.keras` file instead of the run's best checkpoint.

    Returns:
        `{split: {"loss", "num_examples", "heads": {head: {metric}}}}`.
    """
    from keras_mm.builder import model_spec

    run_dir = _find_run_dir(run_dir_or_recipe)
    recipe, model, preprocessors = load_run(run_dir, checkpoint)
    if isinstance(splits, str):
        splits = (splits,)
    return _evaluate_splits(model, recipe, model_spec(model), preprocessors,
                            list(splits), recipe["training"]["batch_size"])


def export_run(run_dir, name=None, base_dir=None, version=None,
               verify=True):
    """Exports a finished run's best model with its fitted preprocessors.

    Args:
        run_dir: the run folder (or the recipe it was trained from).
        name: served model name (default `export.name`).
        base_dir: default `export.base_dir`.
        version: default the next free version.
        verify: verify before publishing.

    Returns:
        The published version folder.
    """
    from keras_mm.builder import model_spec

    run_dir = _find_run_dir(run_dir)
    recipe, model, preprocessors = load_run(run_dir)
    path, _ = _export(model, preprocessors, recipe, model_spec(model),
                      name=name, base_dir=base_dir, version=version,
                      verify=verify)
    return path


__all__ = ["evaluate", "export_run", "format_scoreboard", "load_run",
           "scoreboard_rows", "train"]
