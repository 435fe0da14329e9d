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
   rate schedule, TensorBoard and CSV logs, and `training.fine_tuning`'s
   frozen warm-up and per-tower learning-rate multipliers
   (`fine_tuning`); a progress bar on a terminal, one line per epoch
   otherwise;
7. evaluate every split of `evaluation.splits` with the best checkpoint;
8. optionally train the same recipe on each single input
   (`evaluation.compare_unimodal`) and print the scoreboard;
9. refuse the export of a run that learned nothing (its loss went
   non-finite, or a classification head never beat the majority class /
   the prior: `baseline_check`) unless `export.allow_untrained`, warn in
   any case; export to `saved_models/<name>/<version>` and verify it.

In the code, `_run` trains one model: `_prepare` (steps 3-4, and fresh
start or resume), `_build` (5), `_fit` (6) and `_evaluate` (7); `train`
adds `_compare_unimodal`, `run_artifacts.publish_scoreboard` (8) and
`_export` (9).
The run folder's bookkeeping is in `run_folder`, the callbacks in
`run_callbacks`, evaluation and export in `finished_run`, and the files
written in `run_artifacts`.

The run folder `runs/<name>/`:

```
recipe.yaml            the resolved recipe (overrides applied, absolute paths)
preprocessors.json     fitted preprocessors (keras_mm.data serialization)
run.json               strategy, precision, epochs run, resumed_from_epoch,
                       phases (seconds per phase), finished (a re-run of a
                       finished run is refused unless `overwrite`)
metrics.json           {split: {loss, num_examples, heads: {head: {metric}}}}
history.csv            one row per epoch (keras.callbacks.CSVLogger)
learning_curves.png    loss and metrics per epoch, train and validation
confusion_<head>_<split>.png   classification / binary heads
best.keras             best checkpoint (final.keras without checkpointing)
tensorboard/           TensorBoard logs
backup/                BackupAndRestore state while the run is unfinished
bad_input_<split>.json bad-input reports
scoreboard.json        fused and single-modality rows per split
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

import dataclasses
import logging
import os
import sys
import typing

import keras

from keras_mm.errors import ExportError
from keras_mm.serving.atomic import atomic_save_model
from keras_mm.training.baseline_check import check_trained
from keras_mm.training import (distill_run, fine_tuning, run_artifacts,
                               run_data, run_folder, run_preprocessors,
                               tower_init)
from keras_mm.training.distributed_loop import fit_distributed
from keras_mm.compression.compressed_export import export_recipe_modes
from keras_mm.training.finished_run import (evaluate_splits, export_model,
                                            load_model, model_input_names)
from keras_mm.training.optimizers import build_optimizer
from keras_mm.training.phase_clock import PhaseClock
from keras_mm.training.run_callbacks import make_callbacks
from keras_mm.training.run_folder import (BACKUP_DIR, BEST_FILE, CURVES_FILE,
                                          FINAL_FILE, HISTORY_FILE,
                                          METRICS_FILE, RECIPE_FILE, RUN_FILE,
                                          SCOREBOARD_FILE, UNIMODAL_DIR)
from keras_mm.training.strategy import global_state, resolve_strategy
from keras_mm.training.train_result import TrainResult

log = logging.getLogger("keras_mm")


# -- small helpers ------------------------------------------------------------


def _say(verbose, message):
    """A line for the user (stdout, when not silent) and the log.

    Logged at DEBUG: the CLI shows keras_mm's INFO records on stderr, so an
    INFO record would print the line a second time there.
    """
    log.debug(message)
    if verbose:
        print(message, flush=True)


def _verbosity(value):
    """Keras `verbose`: 1 (progress bar) on a terminal, 2 (one line per
    epoch) otherwise; 0 silent."""
    if value in (None, "auto"):
        return 1 if sys.stdout.isatty() else 2
    return int(value)



# -- the steps of one training run --------------------------------------------


@dataclasses.dataclass
class _Run:
    """What the steps of one training run (`_run`) hand on to each other.

    `prepare` fills the folder, resume and data fields, `build` the model
    and data sets, `fit` the loop, history and checkpoint fields.
    """

    recipe: dict
    plan: typing.Any                    # StrategyPlan
    run_dir: str
    verbose: int
    work_dir: str = ""                  # run_dir, or a non-chief's own folder
    resumed: bool = False               # a backup was found
    initial_epoch: int = 0
    preprocessors: dict = None
    spec: dict = None
    sources: dict = None                # tower.init_from: {input: (run, recipe)}
    teacher: typing.Any = None          # distill: distill_run.Teacher
    model: typing.Any = None
    pipelines: dict = None
    train_ds: typing.Any = None
    val_ds: typing.Any = None
    steps: int = 0                      # batches per epoch
    custom_loop: bool = False           # fit_distributed instead of fit
    notes: list = dataclasses.field(default_factory=list)
    history: dict = dataclasses.field(default_factory=dict)
    checkpoint: str = None              # the .keras file evaluated
    clock: typing.Any = None            # PhaseClock: run.json "phases"
    checked: dict = None                # the fused run's pipelines

    @property
    def training(self):
        return self.recipe["training"]

    def path(self, name):
        return os.path.join(self.work_dir, name)


def _prepare(recipe, plan, run_dir, verbose, preprocessors=None,
             clock=None, checked=None):
    """Step 1: the work folder, fresh start or resume, the data set and
    the fitted preprocessors, the completed model spec."""
    from keras_mm.builder.spec import complete_spec
    from keras_mm.recipes import recipe_model_spec, save_recipe

    run_data.modality_dropout(recipe)     # its ConfigError before any work
    sources = tower_init.check_sources(recipe)     # init_from, likewise
    teacher = distill_run.check_teacher(recipe)     # distill, likewise
    run = _Run(recipe=recipe, plan=plan, run_dir=run_dir, verbose=verbose,
               clock=clock or PhaseClock(), checked=checked)
    training = run.training
    run.work_dir = run_folder.work_dir(run_dir, plan.is_chief)
    backup_dir = run.path(BACKUP_DIR)
    recipe_path = run.path(RECIPE_FILE)
    pre_path = run.path(run_preprocessors.PREPROCESSORS_FILE)

    resume_epoch = run_folder.backup_epoch(backup_dir) \
        if training["backup"] else None
    run.resumed = resume_epoch is not None
    if not run.resumed:
        run_folder.remove(backup_dir)
        run_folder.clear_run(run.work_dir)
    else:
        run_folder.check_resumable(recipe, recipe_path, backup_dir)
        run.initial_epoch = resume_epoch
        epoch = min(run.initial_epoch + 1, training["epochs"])
        _say(verbose, f"resuming {recipe['name']} from the backup in "
             f"{backup_dir}: epoch {epoch} of {training['epochs']}")
    save_recipe(recipe, recipe_path)

    keras.utils.set_random_seed(training["seed"])
    with run.clock.phase("generate"):
        run_data.generate_data(recipe)
    if preprocessors is not None:       # the fused run's, for a unimodal one
        preprocessors = {n: preprocessors[n] for n in recipe["inputs"]}
    elif run.resumed and os.path.exists(pre_path):
        preprocessors = run_preprocessors.load_preprocessors(
            pre_path, order=list(recipe["inputs"]))
    else:
        if teacher is not None:         # the student's are the teacher's
            preprocessors = distill_run.teacher_preprocessors(teacher)
        else:
            preprocessors = run_preprocessors.make_preprocessors(recipe)
            preprocessors.update(tower_init.source_preprocessors(sources))
        preprocessors = run_preprocessors.adapt_preprocessors(
            preprocessors, recipe, clock=run.clock,
            fitted=list(preprocessors) if teacher else sources)
    run_preprocessors.save_preprocessors(preprocessors, pre_path)
    run.preprocessors = preprocessors
    run.spec = complete_spec(recipe_model_spec(recipe), preprocessors)
    run.sources, run.teacher = sources, teacher
    return run


def _build(run):
    """Step 2: the model (in the strategy's scope), the pipelines of every
    split, the epochs' training batches, and the compiled model."""
    from keras_mm.builder import build_model, compile_model

    recipe, plan, training = run.recipe, run.plan, run.training
    seed, batch_size = training["seed"], training["batch_size"]
    clock = run.clock
    weights = tower_init.source_weights(run.sources)
    with plan.strategy.scope(), clock.phase("build"):
        keras.utils.set_random_seed(seed)
        run.model = build_model(run.spec)
        tower_init.initialize_towers(run.model, weights, run.sources)
        distill_run.attach(run.model, run.teacher)
    input_names = model_input_names(run.model)
    run.pipelines = {split: run_data.make_pipeline(
        recipe, split, run.preprocessors, run.spec, input_names=input_names,
        report_dir=run.work_dir) for split in recipe["data"]["splits"]}
    with clock.phase("validate"):       # the bad-input check (once each)
        for split, pipe in run.pipelines.items():
            if run.checked and split in run.checked:
                run_data.share_check(pipe, run.checked[split])
        for split in ("train", "val"):
            if split in run.pipelines:
                run.pipelines[split].validate()
        fit_pipe = distill_run.fit_pipeline(run.teacher, run)  # or None
    deterministic = bool(recipe["data"]["deterministic"] or
                         training["deterministic"])
    keras.utils.set_random_seed(seed)
    run.train_ds, run.steps = run_data.epoch_dataset(
        fit_pipe or run.pipelines["train"], batch_size, seed=seed,
        epochs=training["epochs"], initial_epoch=run.initial_epoch,
        shuffle_buffer=recipe["data"]["shuffle_buffer"],
        drop_remainder=plan.drop_remainder, cache=recipe["data"]["cache"],
        deterministic=deterministic)
    run.train_ds = run_data.numeric_labels(run.train_ds)
    run.val_ds = run_data.numeric_labels(run_data.eval_dataset(
        run.pipelines["val"], batch_size, plan.drop_remainder)) \
        if "val" in run.pipelines else None
    with plan.strategy.scope(), clock.phase("build"):
        optimizer = build_optimizer(training, run.steps)
        compile_model(run.model, run.spec, optimizer=optimizer,
                      jit_compile=training["jit_compile"],
                      steps_per_execution=plan.steps_per_execution)


def _choose_loop(run):
    """`run.custom_loop` and `run.notes`: the strategy's choice, and the
    distributed loop where `model.fit` fails on boolean inputs."""
    plan = run.plan
    run.custom_loop, run.notes = plan.use_custom_loop, list(plan.notes)
    bool_inputs = [t.name.split(":")[0] for t in run.model.inputs
                   if keras.backend.standardize_dtype(t.dtype) == "bool"]
    if not run.custom_loop and plan.num_replicas > 1 and bool_inputs:
        # Keras 3.15's fit under a multi-replica strategy averages the first
        # batch (`_maybe_symbolic_build`): boolean inputs fail ("AddN" of
        # bool). The distributed loop never does that.
        run.custom_loop = True
        run.notes.append(
            f"model.fit fails under {type(plan.strategy).__name__}"
            f" with boolean inputs ({', '.join(bool_inputs)}) in "
            "Keras 3.15; using the keras_mm distributed loop")
        _say(run.verbose, run.notes[-1])


def _fit(run, extra_callbacks=()):
    """Step 3: trains from `run.initial_epoch` (nothing when the backup
    says training had finished); the history and the checkpoint to
    evaluate (`best.keras`, else the final model saved as `final.keras`).

    Returns:
        The `TrainResult` (metrics still empty).
    """
    say = lambda message: _say(run.verbose, message)    # noqa: E731
    warmup = fine_tuning.warmup_callback(run.recipe, run.model, say=say)
    callbacks, stopper, checkpointing = make_callbacks(
        run.training, run.work_dir, run.initial_epoch,
        has_val=run.val_ds is not None, verbose=run.verbose, say=say,
        extra_callbacks=tuple(extra_callbacks or ())
        + (run.clock.callback(),),
        first_callbacks=(warmup,) if warmup is not None else ())
    model, plan = run.model, run.plan
    epochs = run.training["epochs"]
    if stopper is not None and stopper.replay().stopped:
        epochs = run.initial_epoch      # it had stopped before the kill
    fit_verbose = run.verbose if plan.is_chief else 0
    _choose_loop(run)
    fine_tuning.refuse_custom_loop(
        warmup, run.custom_loop, f"used under {type(plan.strategy).__name__}")
    if run.initial_epoch >= epochs:
        # Training had finished before the kill (in a later step of the
        # command): restore the final state, train nothing.
        _say(run.verbose, f"{run.recipe['name']}: training had finished; "
             "restoring its final state from the backup")
        finished = keras.callbacks.CallbackList(callbacks, model=model)
        finished.on_train_begin()
        finished.on_train_end()
    elif run.custom_loop:
        with run.clock.phase("fit"):
            fit_distributed(model, run.train_ds, epochs=epochs,
                            validation_data=run.val_ds, callbacks=callbacks,
                            strategy=plan.strategy,
                            initial_epoch=run.initial_epoch,
                            steps_per_epoch=run.steps, verbose=fit_verbose)
    else:
        with run.clock.phase("fit"):
            model.fit(run.train_ds, epochs=epochs, steps_per_epoch=run.steps,
                      validation_data=run.val_ds, callbacks=callbacks,
                      initial_epoch=run.initial_epoch, verbose=fit_verbose,
                      shuffle=False)
    if warmup is not None:              # when the towers were unfrozen
        run.notes.extend(warmup.notes)

    history_path = run.path(HISTORY_FILE)
    run.history = run_artifacts.read_history_csv(history_path) \
        if os.path.exists(history_path) else {}
    best_path = run.path(BEST_FILE)
    run.checkpoint = best_path if checkpointing and \
        os.path.exists(best_path) else None
    if run.checkpoint is None:
        run.checkpoint = run.path(FINAL_FILE)
        atomic_save_model(model, run.checkpoint)
    return TrainResult(run_dir=run.run_dir, metrics={}, history=run.history,
                       best_checkpoint=run.checkpoint,
                       resumed_from_epoch=run.initial_epoch,
                       epochs_run=len(next(iter(run.history.values()), [])),
                       is_chief=plan.is_chief, model=model)


def _evaluate(run, result):
    """Step 4 (chief only): evaluates the checkpoint on one device on
    `evaluation.splits`; writes metrics.json, the learning curves, the
    confusion PNGs and run.json.

    Returns:
        The evaluated one-device model (the one exported).
    """
    recipe, plan, training = run.recipe, run.plan, run.training
    with run.clock.phase("evaluate"):
        eval_model = load_model(run.checkpoint, run.spec)
        from keras_mm.training import mode_check    # batch-norm lag (H1)
        run.notes.extend(mode_check.run_recalibration(
            eval_model, run.pipelines, training["batch_size"], run.checkpoint))
        result.metrics = evaluate_splits(
            eval_model, recipe, run.spec, run.preprocessors,
            recipe["evaluation"]["splits"], training["batch_size"],
            plot_dir=run.run_dir, pipelines=run.pipelines)
    with run.clock.phase("mode_check"):
        run.notes.extend(mode_check.run_mode_check(
            eval_model, run.pipelines, run.spec, training["batch_size"],
            recipe["name"]))
    run_artifacts.write_json(os.path.join(run.run_dir, METRICS_FILE),
                             result.metrics)
    if run.history:
        with run.clock.phase("plots"):
            run_artifacts.plot_learning_curves(
                run.history, os.path.join(run.run_dir, CURVES_FILE))
    run_artifacts.write_json(os.path.join(run.run_dir, RUN_FILE), {
        "name": recipe["name"], "strategy": plan.kind,
        "num_replicas": plan.num_replicas, "precision": plan.precision,
        "steps_per_execution": plan.steps_per_execution,
        "custom_loop": run.custom_loop, "notes": run.notes,
        "steps_per_epoch": run.steps, "epochs": training["epochs"],
        "epochs_run": result.epochs_run,
        "resumed_from_epoch": run.initial_epoch,
        "checkpoint": os.path.basename(run.checkpoint),
        "phases": run.clock.as_dict()})
    return eval_model


def _run(recipe, plan, run_dir, verbose, extra_callbacks=(),
         preprocessors=None, clock=None, checked=None):
    """Trains one model of `recipe` into `run_dir`; evaluates on the chief.

    Returns:
        `(TrainResult, _Run, evaluated model or None)`.
    """
    run = _prepare(recipe, plan, run_dir, verbose, preprocessors, clock,
                   checked)
    _build(run)
    result = _fit(run, extra_callbacks)
    eval_model = _evaluate(run, result) if plan.is_chief else None
    return result, run, eval_model


# -- the steps of `train` after the fused run ---------------------------------


def _compare_unimodal(recipe, plan, run_dir, verbose, preprocessors, result,
                      checked=None):
    """Trains the recipe on each single input (with the fused run's
    preprocessors) into `unimodal/<input>/`; adds their metrics and
    scoreboard rows to `result` on the chief.

    A single-input model whose recipe, fitted preprocessor, data files
    (paths, sizes, mtimes) and seed are those of a completed one (in this
    run folder or another of `training.runs_dir`:
    `run_folder.unimodal_key`) is reused, not trained again; the log says
    so. `checked`: the fused run's pipelines, whose bad-input checks the
    single-input runs share (`run_data.share_check`)."""
    runs_dir = recipe["training"]["runs_dir"]
    for name in recipe["inputs"]:
        sub = run_folder.unimodal_recipe(recipe, name)
        # A one-input model has no presence input: no modality dropout.
        sub["training"] = dict(sub["training"], modality_dropout=None)
        sub_dir = os.path.join(run_dir, UNIMODAL_DIR, name)
        key = run_folder.unimodal_key(sub, name, preprocessors[name])
        found = run_folder.find_unimodal(runs_dir, run_dir, name, key)
        if found is not None:
            metrics = run_folder.reuse_unimodal(
                found, sub_dir, plan.is_chief, sub["evaluation"]["splits"])
            _say(verbose, f"reusing the {name}-only model of the scoreboard"
                 f" from {found}: its recipe, data and seed are unchanged")
        else:
            _say(verbose, f"training the {name}-only model of the "
                 "scoreboard")
            run_folder.forget_unimodal(sub_dir)
            sub_result, _, _ = _run(sub, plan, sub_dir, verbose,
                                    preprocessors=preprocessors,
                                    checked=checked)
            metrics = sub_result.metrics
            if plan.is_chief:
                run_folder.remember_unimodal(sub_dir, key)
        if plan.is_chief:
            result.unimodal[name] = metrics
            result.scoreboard.extend(run_artifacts.scoreboard_rows(
                metrics, f"{name} only"))


def _compare_teacher(run, result):
    """The scoreboard's `teacher` rows and, with `distill.compare_alone`,
    the student trained without the teacher (`alone/`)."""
    if run.plan.is_chief:
        result.scoreboard[:0] = run_artifacts.scoreboard_rows(
            distill_run.teacher_metrics(run.teacher, run), "teacher")
    if run.teacher.settings["compare_alone"]:
        _say(run.verbose, "training the student without the teacher")
        alone = _run(distill_run.alone_recipe(run.recipe), run.plan,
                     os.path.join(run.run_dir, "alone"), run.verbose,
                     preprocessors=run.preprocessors, checked=run.pipelines)
        result.scoreboard.extend(run_artifacts.scoreboard_rows(
            alone[0].metrics, "student alone") if run.plan.is_chief else [])


def _export(run, eval_model, result, verify):
    """Exports the evaluated model (and verifies it when asked); sets
    `result.export_path` and `result.verify_report`."""
    recipe = run.recipe
    with run.clock.phase("export"):
        result.export_path, result.verify_report = export_model(
            eval_model, run.preprocessors, recipe, run.spec,
            verify=verify and recipe["export"]["verify"],
            report_dir=run.run_dir)
    seconds = (result.verify_report or {}).get("seconds")
    if seconds is not None:             # the verifier's share of export
        run.clock.add("export", -float(seconds))
        run.clock.add("verify", float(seconds))
    _say(run.verbose, f"exported to {result.export_path}")
    with run.clock.phase("export"):     # export.quantize / export.litert
        result.compressed_exports = export_recipe_modes(
            eval_model, run.preprocessors, recipe, run.spec,
            verify=verify and recipe["export"]["verify"],
            report_dir=run.run_dir, say=lambda m: _say(run.verbose, m))


# -- public API ---------------------------------------------------------------


def train(recipe, overrides=(), *, export=True, verify=True, runs_dir=None,
          verbose=None, callbacks=None, overwrite=False):
    """Trains, evaluates and exports the model of a recipe.

    Running the same command again after the process was killed resumes
    the run from its last backup (`runs/<name>/backup`). Running it again
    after it finished is refused (it would overwrite `runs/<name>/` and
    publish another export version): rename the run (`--set name=...`,
    the export follows) or pass `overwrite=True`.

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
        overwrite: train again into the folder of a finished run (its
            single-input models are still reused where unchanged).

    Returns:
        A `TrainResult`.

    Raises:
        ConfigError: `runs/<name>/` holds a finished run and not
            `overwrite`.
        ExportError: with `export`, when the model looks untrained (its
            loss went non-finite, or a classification head never beat the
            trivial baseline) and `export.allow_untrained` is false; the
            run folder is complete and `error.result` is the `TrainResult`.

    Example:

    >>> result = train("recipes/demo.yaml",
    ...                overrides=["training.epochs=2"])   # doctest: +SKIP
    >>> result.metrics["test"]["heads"]["label"]["accuracy"]  # doctest: +SKIP
    0.9
    """
    recipe = run_folder.load_recipe(recipe, overrides)
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
    if not overwrite:
        run_folder.refuse_finished(run_dir, recipe["name"])
    os.makedirs(run_dir, exist_ok=True)
    clock = PhaseClock()

    for note in plan.notes:
        _say(verbose, note)
    if plan.kind == "tpu" and plan.is_chief:
        from keras_mm.tpu.recipe_check import require_ready

        with clock.phase("tpu_check"):
            require_ready(recipe, say=lambda text: _say(verbose, text))

    with global_state(plan.precision, training["deterministic"]):
        result, run, eval_model = _run(recipe, plan, run_dir, verbose,
                                       callbacks, clock=clock)
        if plan.is_chief:
            result.scoreboard = run_artifacts.scoreboard_rows(
                result.metrics, "student" if run.teacher else "fused")
        if recipe["evaluation"]["compare_unimodal"] and \
                len(recipe["inputs"]) > 1:
            with clock.phase("scoreboard"):
                _compare_unimodal(recipe, plan, run_dir, verbose,
                                  run.preprocessors, result, run.pipelines)
        elif plan.is_chief:             # no stale single-input rows
            run_folder.remove(os.path.join(run_dir, UNIMODAL_DIR))
        if run.teacher is not None:
            with clock.phase("scoreboard"):
                _compare_teacher(run, result)
        refused = None
        if plan.is_chief:
            run_artifacts.publish_scoreboard(
                result.scoreboard, os.path.join(run_dir, SCOREBOARD_FILE),
                verbose)
            refused = check_trained(run, result, export)
            if export and refused is None:
                _export(run, eval_model, result, verify)
        if refused is None:
            # Refused: the backup stays, so the same command with
            # export.allow_untrained exports without training again.
            run_folder.remove_backups(run_dir, plan.is_chief)
            if plan.is_chief:
                run_folder.mark_finished(run_dir, clock.as_dict(),
                                         result.export_path)
    if refused is not None:
        error = ExportError(refused)
        error.result = result
        raise error
    return result


__all__ = ["train"]
