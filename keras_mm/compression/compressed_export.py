"""`export_compressed`: a finished run's compressed artefacts, each with its
parity report, published only when its metric holds.

- `format="savedmodel"`, `quantize="int8"` (or `float8`): the run's model
  quantized (`quantize_model`) and exported as the next SavedModel version
  of `<base_dir>/<name>/`, with the same raw-input signatures (the
  preprocessing is untouched), verified in a fresh process like every
  export. `models.config` is rewritten unchanged, so TF Serving serves the
  new version as the latest. The report is in
  `assets.extra/keras_mm_parity.json`; the reference is the float32 model
  exported the same way to a scratch folder.
- `format="litert"`, `quantize` one of `none`, `float16`, `dynamic`,
  `int8`: `<base_dir>/<name>_litert/<version>/` with `model.tflite` (the
  model on its preprocessed inputs), `preprocessing.json` and vocabulary
  files (`keras_mm.compression.litert`), and `parity.json`. int8
  calibrates on `calibration_batches` batches of the training split,
  drawn through the run's own `Pipeline` without augmentation.

Each report compares the artefact with float32 on the recipe's test split
(or val): sizes, output errors, top-1 agreement, each head's metric and
p50 latency at batch 1 (`keras_mm.compression.parity`). When a head's
metric drops by more than `max_metric_drop`, the export is refused with
the report, and no version folder is left.
"""

import functools
import json
import os
import tempfile

from keras_mm.compression.litert import (MODEL_FILE, convert_litert,
                                         preprocessing_manifest)
from keras_mm.compression.parity import (KerasRunner, LiteRTRunner,
                                         SavedModelRunner, format_report,
                                         parity_report)
from keras_mm.compression.quantize import quantize_model
from keras_mm.errors import ExportError
from keras_mm.recipes.schema import LITERT_MODES, QUANTIZE_MODES

FORMATS = ("savedmodel", "litert")
LITERT_SUFFIX = "_litert"
LITERT_REPORT = "parity.json"


def _refuse(report, what):
    error = ExportError(
        f"{what} refused: a head's metric dropped by more than "
        f"export.max_metric_drop = {report['max_metric_drop']:g}; nothing "
        "was published (use a milder mode, or raise max_metric_drop)\n"
        + format_report(report) + "\n" + json.dumps(report, indent=1))
    error.report = report
    return error


def _head_kinds(model):
    from keras_mm.serving.serving_functions import find_heads

    return {head: kind for head, (kind, _) in find_heads(model).items()}


def _check_mode(fmt, quantize):
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt!r}: choose one of "
                          f"{', '.join(FORMATS)}")
    modes = QUANTIZE_MODES if fmt == "savedmodel" else LITERT_MODES
    if quantize not in modes:
        raise ExportError(
            f"quantize={quantize!r} is not a {fmt} mode: choose one of "
            f"{', '.join(modes)}" + (" (float16 and dynamic are LiteRT "
                                     "modes: add --format litert)"
                                     if fmt == "savedmodel" else ""))


def _numpy_batches(dataset):
    """The LiteRT converter's representative data: NumPy batches."""
    for batch in dataset:
        yield {k: v.numpy() for k, v in batch.items()}


def export_compressed(run_dir, quantize="int8", fmt="savedmodel", *,
                      name=None, base_dir=None, version=None, verify=True,
                      max_metric_drop=None, calibration_batches=None,
                      allow_untrained=None):
    """Exports a finished run's model compressed, with a parity report.

    Args:
        run_dir: the run folder (or the recipe it was trained from).
        quantize: `int8` / `float8` (SavedModel); `none`, `float16`,
            `dynamic` or `int8` (LiteRT).
        fmt: `savedmodel` or `litert`.
        name, base_dir, version: as `export_run` (default the recipe's
            `export` section; version: the next free one).
        verify: verify a SavedModel in a fresh process before publishing.
        max_metric_drop: default `export.max_metric_drop` (1 point).
        calibration_batches: LiteRT int8 calibration batches of the
            training split (default `export.calibration_batches`).
        allow_untrained: as `export_run`.

    Returns:
        `(published path, parity report)`.

    Raises:
        ExportError: a bad mode, a failed conversion or verification, or
            a metric drop over `max_metric_drop` (the report is in the
            message); nothing was published.
    """
    from keras_mm.training.finished_run import load_trained_run

    _check_mode(fmt, quantize)
    run_dir, recipe, model, preprocessors, spec = load_trained_run(
        run_dir, allow_untrained)
    return export_compressed_model(
        model, preprocessors, recipe, spec, quantize, fmt, name=name,
        base_dir=base_dir, version=version, verify=verify,
        max_metric_drop=max_metric_drop,
        calibration_batches=calibration_batches)


def compressed_modes(settings):
    """`[(format, mode)]` a recipe's `export` section asks for."""
    modes = []
    if settings.get("quantize", "none") != "none":
        modes.append(("savedmodel", settings["quantize"]))
    if settings.get("litert") is not None:
        modes.append(("litert", settings["litert"]))
    return modes


def export_recipe_modes(model, preprocessors, recipe, spec, *, verify=True,
                        report_dir=None, say=None):
    """The compressed artefacts a recipe's `export.quantize` /
    `export.litert` ask for (the trainer's, after the float export):
    `{"<format>-<mode>": parity report}`; `say(line)` gets each report
    and path."""
    reports = {}
    for fmt, mode in compressed_modes(recipe["export"]):
        path, report = export_compressed_model(
            model, preprocessors, recipe, spec, mode, fmt, verify=verify,
            report_dir=report_dir)
        reports[f"{fmt}-{mode}"] = report
        if say is not None:
            say(format_report(report))
            say(f"exported to {path}")
    return reports


def export_compressed_model(model, preprocessors, recipe, spec, quantize,
                            fmt="savedmodel", *, name=None, base_dir=None,
                            version=None, verify=True, max_metric_drop=None,
                            calibration_batches=None, report_dir=None):
    """`export_compressed` of a model in memory with its recipe (the
    trainer's `export.quantize` / `export.litert`); same arguments and
    result."""
    from keras_mm.training import run_data
    from keras_mm.training.finished_run import (first_split,
                                                model_input_names)

    _check_mode(fmt, quantize)
    settings = recipe["export"]
    if max_metric_drop is None:
        max_metric_drop = settings.get("max_metric_drop", 1.0)
    batch_size = recipe["training"]["batch_size"]
    pipe = run_data.make_pipeline(recipe, first_split(recipe), preprocessors,
                                  spec, input_names=model_input_names(model),
                                  report_dir=report_dir)
    dataset = run_data.eval_dataset(pipe, batch_size)
    options = dict(name=name or settings["name"],
                   base_dir=base_dir or settings["base_dir"],
                   max_metric_drop=float(max_metric_drop))
    if fmt == "savedmodel":
        return _export_saved_model(model, preprocessors, recipe, spec,
                                   dataset, quantize, version=version,
                                   verify=verify, **options)
    representative = None
    if quantize == "int8":      # only int8 calibrates its activations
        if calibration_batches is None:
            calibration_batches = settings.get("calibration_batches", 16)
        train = run_data.make_pipeline(
            recipe, "train", preprocessors, spec,
            input_names=model_input_names(model), with_labels=False,
            report_dir=report_dir)
        calibration = run_data.eval_dataset(train, batch_size).take(
            int(calibration_batches))
        representative = functools.partial(_numpy_batches, calibration)
    return export_litert(model, preprocessors, dataset, quantize,
                         representative=representative, version=version,
                         **options)


def _export_saved_model(model, preprocessors, recipe, spec, dataset,
                        quantize, *, name, base_dir, max_metric_drop,
                        version=None, verify=True):
    from keras_mm.training.finished_run import (export_model,
                                                recipe_golden_examples)

    quantized, summary = quantize_model(model, quantize)
    golden = recipe_golden_examples(recipe, preprocessors, spec)
    kinds = _head_kinds(model)
    label = f"savedmodel-{quantize}"
    with tempfile.TemporaryDirectory(prefix="keras_mm_float_") as scratch:
        reference_dir, _ = export_model(model, preprocessors, recipe, spec,
                                        name=name, base_dir=scratch,
                                        version=1, verify=False,
                                        golden=golden)
        reference = SavedModelRunner(reference_dir, kinds)
        reports = []

        def check(folder, final_folder):
            report = parity_report(
                reference, SavedModelRunner(folder, kinds), dataset, kinds,
                artefact_path=folder, reference_path=reference_dir,
                max_metric_drop=max_metric_drop, name=label)
            report["path"] = final_folder
            report["quantization"] = summary
            if not report["ok"]:
                raise _refuse(report, f"{label} export of {name!r}")
            reports.append(report)
            return report

        path, _ = export_model(
            quantized, preprocessors, recipe, spec, name=name,
            base_dir=base_dir, version=version, verify=verify, golden=golden,
            extra_metadata={"quantization": summary}, before_publish=check)
    return path, reports[0]


def export_litert(model, preprocessors, dataset, quantize="none", *,
                  name, base_dir="saved_models", version=None,
                  representative=None, max_metric_drop=1.0):
    """Writes `<base_dir>/<name>_litert/<version>/` (model.tflite,
    preprocessing.json, vocabularies, parity.json) atomically.

    `dataset`: batches of `(model inputs, labels)` the report is computed
    on; `representative`: the int8 calibration batches (a callable).
    Returns `(version folder, parity report)`.
    """
    from keras_mm.serving import atomic
    from keras_mm.serving.serving_functions import ServingFunctions

    functions = ServingFunctions(model, preprocessors)
    signature = functions.tensor_signature()
    kinds = _head_kinds(model)
    model_dir = os.path.join(os.fspath(base_dir), f"{name}{LITERT_SUFFIX}")
    label = f"litert-{quantize}"
    with atomic.publish_version(model_dir, version) as publication, \
            tempfile.TemporaryDirectory(prefix="keras_mm_litert_") as tmp:
        final_dir = publication.final
        reference_path = os.path.join(tmp, "float32.tflite")
        float_blob, batch_size = convert_litert(model, signature, "none")
        with open(reference_path, "wb") as f:
            f.write(float_blob)
        blob = float_blob if quantize == "none" else convert_litert(
            model, signature, quantize, representative,
            batch_size=batch_size)[0]
        model_path = os.path.join(publication.folder, MODEL_FILE)
        with open(model_path, "wb") as f:
            f.write(blob)
        preprocessing_manifest(functions, publication.folder,
                               batch_size=batch_size)
        report = parity_report(
            KerasRunner(model), LiteRTRunner(model_path), dataset, kinds,
            artefact_path=model_path, reference_path=reference_path,
            latency_reference=LiteRTRunner(reference_path),
            max_metric_drop=max_metric_drop, name=label)
        report["path"] = os.path.abspath(os.path.join(final_dir, MODEL_FILE))
        report["batch_size"] = batch_size
        if not report["ok"]:
            raise _refuse(report, f"{label} export of {name!r}")
        atomic.atomic_write_text(
            os.path.join(publication.folder, LITERT_REPORT),
            json.dumps(report, indent=1))
    return final_dir, report
