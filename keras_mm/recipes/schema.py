"""Pydantic v2 schema of a recipe's static sections.

`data`, `training`, `evaluation` and `export` are checked here (strict
types, `extra="forbid"`, `Literal` choices); the model sections (`inputs`,
`fusion`, `trunk`, `heads`) by `keras_mm.builder.spec.normalize_spec`. The
keyword arguments of a data generator, optimizer or schedule are open-ended:
they stay in `model_extra` and `keras_mm.recipes.recipe` checks them
against the function's / class's signature. Errors go through
`keras_mm.builder.schema.validate` (file, key path, bad value, allowed
values).
"""

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from keras_mm.builder.schema import (PRETRAINED_KEYS, NonNegativeFloat,
                                     NonNegativeInt, OpenSection, PositiveInt,
                                     Section, bounded_int, choice, fail,
                                     is_int)
from keras_mm.recipes.tune_schema import TuneSection

DATA_FORMATS = ("manifest", "tfrecord")
SPLITS = ("train", "val", "test")
BAD_RECORD_POLICIES = ("error", "skip", "missing")
# export.quantize (a SavedModel, beside "none") and export.litert modes
# (keras_mm.compression).
QUANTIZE_MODES = ("int8", "float8")
LITERT_MODES = ("none", "float16", "dynamic", "int8")
# generate.type -> "module:function" building that data set.
GENERATORS = {
    "demo": "keras_mm.datasets.demo:ensure_demo_dataset",
    "av_mnist": "keras_mm.datasets.av_mnist:build_av_mnist",
    "basicmotions": "keras_mm.datasets.basicmotions:build_basicmotions",
}
OPTIMIZERS = {
    "adadelta": "Adadelta", "adafactor": "Adafactor", "adagrad": "Adagrad",
    "adam": "Adam", "adamax": "Adamax", "adamw": "AdamW", "ftrl": "Ftrl",
    "lamb": "Lamb", "lion": "Lion", "nadam": "Nadam", "rmsprop": "RMSprop",
    "sgd": "SGD",
}
SCHEDULES = {
    "constant": None,
    "cosine": "CosineDecay",
    "cosine_restarts": "CosineDecayRestarts",
    "exponential": "ExponentialDecay",
    "inverse_time": "InverseTimeDecay",
    "piecewise": "PiecewiseConstantDecay",
    "polynomial": "PolynomialDecay",
}
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
MONITOR_MODES = ("auto", "min", "max")
# Bounds on values that validate and then never end or exhaust memory
# (`epochs: 1000000000000000000`, `batch_size: 1000000000000`).
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_STEPS = 1_000_000
MAX_SHUFFLE_BUFFER = 10_000_000
MAX_GOLDEN_EXAMPLES = 1_000
Epochs = bounded_int(1, MAX_EPOCHS, "a bound against runs that never end")
BatchSize = bounded_int(1, MAX_BATCH_SIZE,
                        "a bound against batches that exhaust memory")


def _shorthand(off=(None, False), on=None):
    """`x: name` means `{type: name}`; `off` values mean "none"; `true`
    means `on` (the section with its defaults)."""

    def convert(value):
        if any(value is v for v in off):
            return None
        if value is True and on is not None:
            return dict(on)
        return {"type": value} if isinstance(value, str) else value

    return BeforeValidator(convert)


def _text(what):
    return Annotated[str, Field(min_length=1, description=what)]


def _split_paths(value):
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(
            isinstance(v, str) and v for v in value):
        return list(value)
    raise fail(f"{value!r} is not a path (or a list of paths / TFRecord "
               "patterns)")


def _cache(value):
    if value is None or value is False:
        return False
    if not isinstance(value, str) or not value:
        raise fail(f"{value!r} is not one of false, memory, or a cache file "
                   "prefix")
    return value


def _plain_name(value):
    if not isinstance(value, str) or not re.match(
            r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", value):
        raise fail(f"{value!r} is not a plain name (letters, digits, '_', "
                   "'-', '.'); it names the run and export folders")
    return value


PlainName = Annotated[Any, AfterValidator(_plain_name)]
FolderPath = _text("a folder path")
Address = _text("a dispatcher address")
TPUAddress = _text("a TPU name or address")
MetricName = _text("a metric name such as val_loss")
TeacherRun = _text("the teacher's run folder (runs/<name>)")
JitChoice = choice("auto", True, False)
VerboseChoice = choice("auto", 0, 1, 2)


class GenerateSection(OpenSection):
    """`data.generate`: the builder of a data set and its arguments."""

    type: Literal[tuple(sorted(GENERATORS))]


class DataSection(Section):
    format: Literal[DATA_FORMATS] = "manifest"
    splits: dict[Literal[SPLITS],
                 Optional[Annotated[Any, AfterValidator(_split_paths)]]] = \
        Field(description="split -> manifest file or TFRecord pattern; "
              "train is required")
    generate: Annotated[Optional[GenerateSection], _shorthand()] = None
    bad_records: Literal[BAD_RECORD_POLICIES] = "error"
    cache: Annotated[Any, AfterValidator(_cache)] = False
    shuffle_buffer: bounded_int(0, MAX_SHUFFLE_BUFFER) = 1024
    deterministic: bool = False
    data_service: Optional[Address] = None
    allow_paths_outside: bool = False


class OptimizerSection(OpenSection):
    """`training.optimizer`: a Keras optimizer and its arguments."""

    type: Literal[tuple(sorted(OPTIMIZERS))]
    learning_rate: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = \
        1e-3


class ScheduleSection(OpenSection):
    """`training.schedule`: a Keras learning-rate schedule."""

    type: Literal[tuple(sorted(SCHEDULES))]
    decay_steps: Optional[bounded_int(1, 1 << 40)] = None
    first_decay_steps: Optional[bounded_int(1, 1 << 40)] = None
    warmup_steps: Optional[bounded_int(0, 1 << 40)] = None


class CheckpointSection(Section):
    monitor: MetricName = "val_loss"
    mode: Literal[MONITOR_MODES] = "auto"


class EarlyStoppingSection(CheckpointSection):
    patience: NonNegativeInt = 5
    min_delta: NonNegativeFloat = 0.0
    restore_best_weights: bool = True


def _save_freq(value):
    if value != "epoch" and not (is_int(value) and value >= 1):
        raise fail(f"{value!r} is not an integer >= 1 (or epoch)")
    if value != "epoch" and value > MAX_STEPS:
        raise fail(f"{value!r} is above the limit of {MAX_STEPS}")
    return value


class BackupSection(Section):
    save_freq: Annotated[Any, AfterValidator(_save_freq)] = "epoch"


def _name_list(value):
    """`towers: text` means `[text]`; null means "the default"."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(
            isinstance(v, str) and v for v in value):
        raise fail(f"{value!r} is not a list of input names")
    return list(dict.fromkeys(value))


Multiplier = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class FineTuningSection(Section):
    """`training.fine_tuning`: a frozen warm-up and per-tower learning-rate
    multipliers (`keras_mm.training.fine_tuning`).

    `frozen_epochs`: the towers of `towers` are frozen for the first N
    epochs, then train. `towers`: input names (default: the pretrained
    inputs, those with a `preset` or `hub` key). `learning_rate_multipliers`:
    `{input: m}`, the variables of that input's tower use the learning rate
    times m in every epoch (0 freezes it).
    """

    frozen_epochs: bounded_int(0, MAX_EPOCHS) = 0
    towers: Annotated[Any, AfterValidator(_name_list)] = None
    learning_rate_multipliers: dict[str, Multiplier] = Field(
        default_factory=dict)


def pretrained_inputs(inputs):
    """The names of the inputs whose entry has a `preset` or `hub` key."""
    return [name for name, entry in (inputs or {}).items()
            if isinstance(entry, dict) and any(
                entry.get(key) is not None for key in PRETRAINED_KEYS)]


def warmup_towers(fine_tuning, inputs):
    """The inputs whose towers `fine_tuning.frozen_epochs` freezes: its
    `towers` (those among `inputs`), else the pretrained inputs."""
    towers = (fine_tuning or {}).get("towers")
    if towers is None:
        return pretrained_inputs(inputs)
    return [name for name in towers if name in (inputs or {})]


def _check_fine_tuning(sections):
    """`training.fine_tuning` names inputs of the recipe; a warm-up has a
    tower to freeze."""
    section = sections.training.fine_tuning
    inputs = sections.inputs if isinstance(sections.inputs, dict) else {}
    if section is None or not inputs:
        return sections
    known = ", ".join(map(str, inputs))
    path = "training.fine_tuning"
    for i, name in enumerate(section.towers or ()):
        if name not in inputs:
            raise fail(f"{name!r} is not one of the inputs: {known}",
                       f"{path}.towers[{i}]")
    for name in section.learning_rate_multipliers:
        if name not in inputs:
            raise fail(f"{name!r} is not one of the inputs: {known} (a "
                       "multiplier applies to the tower of an input)",
                       f"{path}.learning_rate_multipliers.{name}")
    if section.frozen_epochs and section.towers is None and \
            not pretrained_inputs(inputs):
        raise fail(f"{section.frozen_epochs} epochs of warm-up freeze the "
                   "pretrained towers by default, and no input has a preset "
                   "or hub key; name the inputs to freeze in "
                   f"{path}.towers (one of {known})",
                   f"{path}.frozen_epochs")
    return sections


def _optimizer_shorthand(value):
    value = "adam" if value is None else value
    return {"type": value} if isinstance(value, str) else value


def _dropout_rate(value, suffix=""):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= float(value) < 1.0:
        raise fail(f"{value!r} is not a dropout rate in [0, 1)", suffix)
    return float(value)


def _modality_dropout(value):
    """`training.modality_dropout`: None, one rate for every input, or
    `{input name: rate}` (the names are checked against the inputs by
    `keras_mm.training.run_data.modality_dropout`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return _dropout_rate(value)
    return {name: _dropout_rate(rate, f".{name}")
            for name, rate in value.items()}


class TrainingSection(Section):
    epochs: Epochs = 10
    batch_size: BatchSize = 32
    optimizer: Annotated[OptimizerSection,
                         BeforeValidator(_optimizer_shorthand)] = \
        OptimizerSection(type="adam")
    schedule: Annotated[Optional[ScheduleSection], _shorthand()] = None
    precision: Literal[PRECISIONS] = "auto"
    jit_compile: JitChoice = "auto"
    strategy: Literal[STRATEGIES] = "auto"
    tpu: Optional[TPUAddress] = None
    steps_per_execution: Optional[bounded_int(1, MAX_STEPS)] = None
    seed: bounded_int(0, 2**32 - 1) = 0
    deterministic: bool = False
    early_stopping: Annotated[Optional[EarlyStoppingSection],
                              _shorthand(on={})] = None
    checkpoint: Annotated[Optional[CheckpointSection],
                          _shorthand(on={})] = CheckpointSection()
    backup: Annotated[Optional[BackupSection], _shorthand(on={})] = \
        BackupSection()
    tensorboard: bool = True
    runs_dir: FolderPath = "runs"
    verbose: VerboseChoice = "auto"
    fine_tuning: Annotated[Optional[FineTuningSection], _shorthand()] = None
    # Per example, in training only: mark inputs absent (presence 0).
    modality_dropout: Annotated[Any, AfterValidator(_modality_dropout)] = \
        None


def _split_list(value):
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise fail(f"{value!r} is not a list of split names")
    return value


class EvaluationSection(Section):
    splits: Annotated[Any, AfterValidator(_split_list)] = None
    compare_unimodal: bool = False


class ExportSection(Section):
    name: Optional[PlainName] = None
    base_dir: FolderPath = "saved_models"
    version: Optional[PositiveInt] = None
    verify: bool = True
    golden_examples: bounded_int(1, MAX_GOLDEN_EXAMPLES) = 4
    # Export a run whose loss went non-finite or that never beat the
    # trivial baseline (majority class / prior); refused by default.
    allow_untrained: bool = False
    # Add the `explain` signature (per-modality Shapley values beside the
    # prediction); needs a model with a presence input.
    explain: bool = False
    # A weight-quantized SavedModel written as the next version after the
    # float one (keras_mm.compression), refused when a head's metric drops
    # by more than max_metric_drop (accuracy points).
    quantize: Literal[("none",) + QUANTIZE_MODES] = "none"
    # A LiteRT file of the model on its preprocessed inputs, written to
    # <base_dir>/<name>_litert/<version>/; null: none.
    litert: Optional[Literal[LITERT_MODES]] = None
    max_metric_drop: NonNegativeFloat = 1.0
    # Training batches that calibrate LiteRT int8 activations.
    calibration_batches: PositiveInt = 16


class DistillSection(Section):
    """`distill:`: train this recipe's model (the student) on a finished
    run's soft targets (`keras_mm.compression.distillation`)."""

    teacher: TeacherRun
    # 4, the usual choice: on degraded AV-MNIST (half-width students, one
    # seed each) T = 4 gained -0.50 to +1.45 points over the student alone
    # in four runs (mean +0.38), T = 2 -0.95 to +0.55 in five (mean -0.45),
    # T = 8 -0.10 / -0.35; the run-to-run spread is about 0.5-1 point.
    temperature: Annotated[float, Field(gt=0.0, le=100.0)] = 4.0
    # The weight of the label loss; 1 - alpha weights the soft targets.
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    # Also train the same student without the teacher (scoreboard rows).
    compare_alone: bool = True


def _none_as_empty(value):
    return {} if value is None else value


class RecipeSections(Section):
    """A whole recipe; the model sections are checked by `normalize_spec`."""

    key_word = "section"
    sorted_keys = False

    name: Optional[PlainName] = None
    data: DataSection
    inputs: dict[Any, Any]
    fusion: Any = None
    trunk: Any = None
    heads: dict[Any, Any]
    training: Annotated[TrainingSection, BeforeValidator(_none_as_empty)] = \
        TrainingSection()
    evaluation: Annotated[EvaluationSection,
                          BeforeValidator(_none_as_empty)] = \
        EvaluationSection()
    export: Annotated[ExportSection, BeforeValidator(_none_as_empty)] = \
        ExportSection()
    distill: Optional[DistillSection] = None
    # `keras-mm tune` (keras_mm.tuning); training ignores it.
    tune: Optional[TuneSection] = None

    @model_validator(mode="after")
    def fine_tuning_inputs(self):
        return _check_fine_tuning(self)


MODEL_KEYS = ("inputs", "fusion", "trunk", "heads")
RECIPE_KEYS = tuple(RecipeSections.model_fields)
