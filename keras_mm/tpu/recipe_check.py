"""`check_recipe`: the TPU readiness check of a recipe's model, on one
batch of its real training pipeline (`keras-mm check RECIPE [--tpu]`)."""

import os

from keras_mm.tpu.readiness import Finding, check_model


def _recipe(recipe, overrides):
    from keras_mm.recipes import load_recipe, normalize_recipe

    if isinstance(recipe, (str, os.PathLike)):
        return load_recipe(recipe, overrides)
    if overrides:
        from keras_mm.recipes.recipe import apply_overrides

        recipe = apply_overrides(recipe, overrides)
    return normalize_recipe(recipe)


def check_recipe(recipe, *, tpu=False, overrides=(), atol=None, rtol=None):
    """Builds a recipe's model and one training batch, and checks them.

    The data is generated where the recipe says so, the preprocessors are
    fitted on the training split as `train` fits them (nothing is written
    to a run folder), and the batch comes from the training pipeline with
    `drop_remainder=True`, as keras_mm batches on TPU, and without string
    labels, as `fit` gets it (`run_data.numeric_labels`). The model is built
    under the precision the run would use: `mixed_bfloat16` with `tpu`
    (what `training.precision: auto` picks on a TPU), else the recipe's,
    with the recipe's op determinism.

    Args:
        recipe: a recipe file or dict.
        tpu: check as on a TPU (bfloat16, `steps_per_execution` 32 unless
            the recipe sets it, the advice for 8 cores).
        overrides: `"key.path=value"` strings, as `train --set`.
        atol, rtol: check d's tolerance (default `readiness.ATOL/RTOL`;
            looser under bfloat16: 2e-2).

    Returns:
        A `ReadinessReport` (`report.table()`, `report.exit_code`).

    Raises:
        ConfigError, DataError: as `train` would, before any check.
    """
    import keras

    from keras_mm.builder import build_model, compile_model
    from keras_mm.builder.spec import complete_spec
    from keras_mm.recipes import recipe_model_spec
    from keras_mm.training import run_data, run_preprocessors, tower_init
    from keras_mm.training.finished_run import model_input_names
    from keras_mm.training.optimizers import build_optimizer
    from keras_mm.training.strategy import global_state

    recipe = _recipe(recipe, overrides)
    training = recipe["training"]
    batch_size = int(training["batch_size"])
    precision = training["precision"]
    if precision == "auto":
        precision = "mixed_bfloat16" if tpu else "float32"
    steps = training.get("steps_per_execution")
    if steps is None and tpu:
        steps = 32
    bfloat16 = "bfloat16" in precision or "float16" in precision
    atol = atol if atol is not None else (2e-2 if bfloat16 else None)
    rtol = rtol if rtol is not None else (2e-2 if bfloat16 else None)
    run_data.generate_data(recipe)
    sources = tower_init.check_sources(recipe)
    preprocessors = run_preprocessors.make_preprocessors(recipe)
    preprocessors.update(tower_init.source_preprocessors(sources))
    preprocessors = run_preprocessors.adapt_preprocessors(
        preprocessors, recipe, fitted=sources)
    spec = complete_spec(recipe_model_spec(recipe), preprocessors)
    with global_state(precision, bool(training["deterministic"])):
        keras.utils.set_random_seed(training["seed"])
        model = build_model(spec)
        tower_init.initialize_towers(model, tower_init.source_weights(
            sources), sources)
        compile_model(model, spec, optimizer=build_optimizer(training, 1),
                      jit_compile=False)
        pipe = run_data.make_pipeline(recipe, "train", preprocessors, spec,
                                      input_names=model_input_names(model))
        dataset = run_data.numeric_labels(pipe.dataset(
            batch_size, training=True, shuffle=False, drop_remainder=True))
        batch = next(iter(dataset), None)
        if batch is None:
            raise ValueError(
                f"the training split has fewer than {batch_size} examples "
                "(training.batch_size): no full batch to check")
        options = {k: v for k, v in (("atol", atol), ("rtol", rtol))
                   if v is not None}
        report = check_model(
            model, batch, dataset=dataset, batch_size=batch_size,
            replicas=8 if tpu else 1, steps_per_execution=steps if tpu
            else None, precision=precision if tpu else None, **options)
    count = pipe.num_examples()     # batch_size is the global batch
    if count is not None and count % batch_size:
        report.findings.append(Finding(
            "f", False, f"{count % batch_size} of the {count} training "
            f"examples are a partial last batch: dropped every epoch on TPU"
            " (drop_remainder; a smaller batch would be a new XLA program)",
            f"a batch size that divides {count}, or accept the loss",
            severity="warning"))
    return report


def require_ready(recipe, say=None):
    """The check `train` runs first under `training.strategy: tpu`.

    Raises `ConfigError` (key `training.strategy`) naming the failed
    checks a / b, before any TPU time is spent; `say(text)` gets the
    table of a passing check (its warnings are advice). Returns the
    report."""
    from keras_mm.errors import ConfigError

    report = check_recipe(recipe, tpu=True)
    if not report.ok:
        failures = "; ".join(f"{f['check']}. {f['what']} ({f['fix']})"
                             for f in report.failed()
                             if f["severity"] == "error")
        raise ConfigError("training.strategy",
                          f"the TPU readiness check failed: {failures}; "
                          "`keras-mm check RECIPE --tpu` prints the whole "
                          "report")
    if say is not None:
        say("TPU readiness check (XLA on CPU):\n" + report.table())
    return report
