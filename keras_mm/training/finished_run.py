"""A trained model and its run folder: evaluation and export.

- `evaluate_splits(model, recipe, spec, preprocessors, splits, ...)`: the
  `metrics.json` entries of a model (loss, per-head metrics, confusion
  matrices and their PNGs), as the trainer writes them;
- `export_model(model, preprocessors, recipe, spec, ...)`: the SavedModel
  export with golden examples from the recipe's data, and the verifier's
  report;
- the public `load_run`, `evaluate` and `export_run` on a finished run.
"""

import json
import os
import zipfile

import keras
import tensorflow as tf

from keras_mm.errors import ConfigError, DataError
from keras_mm.training import (retrieval_eval, run_artifacts, run_data,
                               run_preprocessors)
from keras_mm.training.run_folder import (BEST_FILE, FINAL_FILE,
                                          HISTORY_FILE, METRICS_FILE,
                                          RECIPE_FILE, find_run_dir)


def model_input_names(model):
    return [t.name.split(":")[0] for t in model.inputs]


def check_checkpoint(path):
    """Raises a `DataError` naming `path` when it is not a readable
    `.keras` file (Keras says "File not found" for a truncated one)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError("no such checkpoint; run the same train command "
                        "again to resume the run", file=path,
                        reason="missing checkpoint")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        size = os.path.getsize(path)
        raise DataError(
            f"the checkpoint is corrupt or truncated ({size} bytes, not a "
            "valid .keras zip archive; a full disk or a kill during an "
            "older, non-atomic write leaves such a file); delete it and run "
            "the same train command again", file=path,
            reason="corrupt checkpoint")


def load_model(path, spec=None):
    """A one-device copy of a `.keras` checkpoint, compiled for evaluation."""
    from keras_mm.builder import compile_model, model_spec

    check_checkpoint(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise DataError(f"cannot read the checkpoint ({type(error).__name__}"
                        f": {error}); delete it and run the same train "
                        "command again", file=path,
                        reason="corrupt checkpoint") from None
    compile_model(model, spec or model_spec(model), optimizer="adam",
                  jit_compile=False)
    return model


def evaluate_splits(model, recipe, spec, preprocessors, splits, batch_size,
                    report_dir=None, plot_dir=None, pipelines=None):
    """Metrics of `model` on each split; confusion PNGs into `plot_dir`."""
    heads = list(spec["heads"])
    input_names = model_input_names(model)
    metrics = {}
    for split in splits:
        pipe = (pipelines or {}).get(split) or run_data.make_pipeline(
            recipe, split, preprocessors, spec, input_names=input_names,
            report_dir=report_dir)
        dataset = run_data.eval_dataset(pipe, batch_size)
        results = model.evaluate(dataset, return_dict=True, verbose=0)
        entry = run_artifacts.split_metrics(results, heads)
        confusions, baselines = run_artifacts.head_outputs(model, dataset,
                                                           spec)
        count = None
        for head, baseline in baselines.items():
            count = baseline["num_examples"]
            entry["heads"][head]["baseline"] = baseline
        for head, values in retrieval_eval.retrieval_metrics(
                model, dataset, spec).items():
            count = next(iter(values["retrieval"].values()))["n"]
            entry["heads"][head].update(values)
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


def first_split(recipe, order=("test", "val", "train")):
    """The recipe's first split of `order` (the one exports check on)."""
    splits = recipe["data"]["splits"]
    return next(s for s in order if s in splits)


def recipe_golden_examples(recipe, preprocessors, spec, report_dir=None):
    """The export's golden examples: `export.golden_examples` raw rows of
    the recipe's test split (or val, or train)."""
    pipe = run_data.make_pipeline(recipe, first_split(recipe), preprocessors,
                                  spec, report_dir=report_dir,
                                  with_labels=False)
    return run_data.golden_examples(pipe, recipe["export"]["golden_examples"])


def export_model(model, preprocessors, recipe, spec, name=None,
                 base_dir=None, version=None, verify=True, report_dir=None,
                 golden=None, **options):
    """Exports `model` with golden examples of the recipe's test split (or
    val, or train; `golden`: those already drawn by
    `recipe_golden_examples`); returns `(version folder, verify report or
    None)`. `options`: more `keras_mm.serving.export` arguments."""
    from keras_mm.serving import export as export_saved_model

    settings = recipe["export"]
    if golden is None:
        golden = recipe_golden_examples(recipe, preprocessors, spec,
                                        report_dir)
    path = export_saved_model(
        model, preprocessors, name or settings["name"],
        golden_examples=golden,
        base_dir=base_dir or settings["base_dir"],
        version=version if version is not None else settings["version"],
        verify=verify, explain=bool(settings.get("explain", False)),
        **options)
    return path, verify_report(path) if verify else None


def verify_report(path):
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
    preprocessors = run_preprocessors.load_preprocessors(
        os.path.join(run_dir, run_preprocessors.PREPROCESSORS_FILE),
        order=list(recipe["inputs"]))
    model = load_model(checkpoint)
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

    run_dir = find_run_dir(run_dir_or_recipe)
    recipe, model, preprocessors = load_run(run_dir, checkpoint)
    if isinstance(splits, str):
        splits = (splits,)
    return evaluate_splits(model, recipe, model_spec(model), preprocessors,
                           list(splits), recipe["training"]["batch_size"])


def untrained_check(run_dir, recipe, model, preprocessors, spec):
    """Why a finished run's model looks untrained (`baseline_check`), or
    None: from its `history.csv` and `metrics.json`, or, where the run
    has no metrics, from evaluating the model on the recipe's splits."""
    from keras_mm.training.baseline_check import untrained_reason

    history_path = os.path.join(run_dir, HISTORY_FILE)
    history = run_artifacts.read_history_csv(history_path) \
        if os.path.exists(history_path) else {}
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    if os.path.exists(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)
    else:
        metrics = evaluate_splits(model, recipe, spec, preprocessors,
                                  list(recipe["data"]["splits"]),
                                  recipe["training"]["batch_size"])
    return untrained_reason(history, metrics, spec)


def load_trained_run(run_dir, allow_untrained=None):
    """`load_run` of a run folder (or its recipe) for export: `(run_dir,
    recipe, model, preprocessors, spec)`; refuses (`ExportError`) a model
    that looks untrained unless `allow_untrained` (default the recipe's
    `export.allow_untrained`), and warns when it is allowed."""
    import warnings

    from keras_mm.builder import model_spec
    from keras_mm.errors import ExportError
    from keras_mm.training.baseline_check import (export_refusal,
                                                  untrained_message)

    run_dir = find_run_dir(run_dir)
    recipe, model, preprocessors = load_run(run_dir)
    spec = model_spec(model)
    if allow_untrained is None:
        allow_untrained = recipe["export"]["allow_untrained"]
    reason = untrained_check(run_dir, recipe, model, preprocessors, spec)
    if reason is not None:
        message = untrained_message(run_dir, reason)
        if not allow_untrained:
            raise ExportError(export_refusal(
                message, "", " and train again, or pass --allow-untrained "
                "(allow_untrained=True)"))
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return run_dir, recipe, model, preprocessors, spec


def export_run(run_dir, name=None, base_dir=None, version=None,
               verify=True, allow_untrained=None):
    """Exports a finished run's best model with its fitted preprocessors.

    Args:
        run_dir: the run folder (or the recipe it was trained from).
        name: served model name (default `export.name`).
        base_dir: default `export.base_dir`.
        version: default the next free version.
        verify: verify before publishing.
        allow_untrained: export a model that looks untrained (its loss
            went non-finite, or a head never beat the trivial baseline);
            default the recipe's `export.allow_untrained`.

    Returns:
        The published version folder.

    Raises:
        ExportError: the model looks untrained and not `allow_untrained`;
            nothing is published.
    """
    run_dir, recipe, model, preprocessors, spec = load_trained_run(
        run_dir, allow_untrained)
    path, _ = export_model(model, preprocessors, recipe, spec,
                           name=name, base_dir=base_dir, version=version,
                           verify=verify)
    return path


__all__ = ["evaluate", "export_run", "load_run"]
