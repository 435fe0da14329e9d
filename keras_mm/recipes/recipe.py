"""YAML recipes: loading (`yaml.safe_load` only), `--set` overrides, validation.

A recipe is one YAML file with these sections (only `data`, `inputs` and
`heads` are required; everything else has defaults):

```yaml
name: demo                     # run / export name (default: the file stem)
data:
  format: manifest             # manifest (CSV/JSONL) | tfrecord
  splits:                      # split -> manifest file, or TFRecord pattern(s)
    train: data/demo/train.csv
    val: data/demo/val.csv
    test: data/demo/test.csv
  generate: {type: demo, out_dir: data/demo}   # optional: build it when absent
  bad_records: error           # error | skip | missing
  allow_paths_outside: false   # manifest paths outside its folder: bad records
  cache: false                 # false | memory | <file prefix>
  shuffle_buffer: 1024
  deterministic: false
  data_service: null           # tf.data service dispatcher address
inputs:                        # the keras_mm.build_model spec, plus source/preprocess
  image:
    modality: image
    source: image              # manifest column (default: the input name)
    preprocess: {size: [32, 32], channels: 3}   # preprocessor arguments
    shape: [32, 32, 3]         # may be left out: the pipeline derives it
    tower: {encoder: cnn}
fusion: {type: gated, presence_mask: true}   # presence: default true from 2 inputs
trunk: {hidden_units: [64], dropout: 0.1}
heads:
  label: {type: classification, num_classes: 4, source: label}
training:
  epochs: 10
  batch_size: 32
  optimizer: {type: adam, learning_rate: 0.001}   # or just: adam
  schedule: {type: cosine}     # null | constant | cosine | exponential | ...
  precision: auto              # auto | float32 | mixed_float16 | mixed_bfloat16
  jit_compile: auto            # auto | true | false
  strategy: auto               # auto | default | mirrored | multi_worker | tpu
  tpu: null
  steps_per_execution: null    # null: chosen per device
  seed: 0
  deterministic: false
  early_stopping: {monitor: val_loss, patience: 5}   # or false
  checkpoint: {monitor: val_loss, mode: auto}        # best-checkpoint saving
  backup: {save_freq: epoch}   # BackupAndRestore; an int = every N steps; false = off
  tensorboard: true
  runs_dir: runs
  fine_tuning:                 # optional (keras_mm.training.fine_tuning)
    frozen_epochs: 0           # freeze `towers` for the first N epochs
    towers: null               # inputs to freeze; null: those with preset/hub
    learning_rate_multipliers: {}   # {input: m}: its tower uses lr x m
  modality_dropout: null       # 0.3, or {image: 0.3, audio: 0.3}: train without inputs
evaluation:
  splits: [val, test]
  compare_unimodal: false      # scoreboard: fused vs each single modality
export:
  name: demo                   # default: the recipe name
  base_dir: saved_models
  version: null                # null: the next free version
  verify: true
  golden_examples: 4
  allow_untrained: false       # export a run that never beat the baseline
  explain: false               # add the `explain` signature (modality Shapley values)
  quantize: none               # int8 | float8: a weight-quantized next version
  litert: null                 # none | float16 | dynamic | int8: a .tflite too
  max_metric_drop: 1.0         # refuse a compressed export that drops more (points)
  calibration_batches: 16      # LiteRT int8 calibration batches
distill:                       # optional: train on a finished run's soft targets
  teacher: runs/big            # this recipe's inputs are some or all of its, preprocessed alike
  temperature: 4.0
  alpha: 0.5                   # label loss weight; 1 - alpha: the soft targets
  compare_alone: true          # scoreboard: teacher, student, student alone
tune:                          # optional: `keras-mm tune` (training ignores it)
  space: {training.optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}}
  objective: auto              # <head>.<metric> or loss, on the val split
  algorithm: random            # random | bayesian | hyperband
  max_trials: 12
  max_minutes: null
```

Sizes are bounded (`training.epochs` <= 100000, `training.batch_size` <=
65536, layer widths <= 16384, at most 2**26 values per example, a batch
of inputs at most `MAX_BATCH_BYTES`), and so is the file: at most
`MAX_RECIPE_BYTES`, UTF-8, and at most `MAX_RECIPE_VALUES` values once
YAML aliases are expanded.

`load_recipe(path, overrides=["training.epochs=3", ...])` reads the file
with `yaml.safe_load` (a recipe can never build Python objects or run
code), applies the overrides (each value is parsed with `yaml.safe_load`, so
`3` is an int, `[64, 32]` a list, `null` None), validates the whole
recipe and returns it normalized (defaults filled in) as plain data. The
static sections are the pydantic schema of `keras_mm.recipes.schema`; the
model sections go through `keras_mm.builder.normalize_spec`; generator,
optimizer, schedule and preprocessor arguments are checked against their
signatures.
Errors are `ConfigError`s naming the file, the key path, the bad value and
the allowed values, e.g.
`recipes/x.yaml: fusion.type: 'concatt' is not one of attention, concat, ...`.
"""

import copy
import inspect
import math
import os
import re

import yaml

from keras_mm.builder.argument_checks import (MAX_INPUT_ELEMENTS,
                                              check_argument_values,
                                              input_elements)
from keras_mm.builder.schema import is_int as schema_is_int
from keras_mm.builder.schema import validate
from keras_mm.errors import ConfigError, not_one_of
from keras_mm.recipes import schema
from keras_mm.recipes.recipe_yaml import (MAX_RECIPE_BYTES,  # noqa: F401
                                          MAX_RECIPE_VALUES, read_yaml)
from keras_mm.recipes.schema import (BAD_RECORD_POLICIES, DATA_FORMATS,
                                     GENERATORS, MODEL_KEYS, MONITOR_MODES,
                                     OPTIMIZERS, PRECISIONS, RECIPE_KEYS,
                                     SCHEDULES, SPLITS, STRATEGIES)

__all__ = ["BAD_RECORD_POLICIES", "DATA_FORMATS", "GENERATORS",
           "MONITOR_MODES", "OPTIMIZERS", "PRECISIONS", "RECIPE_KEYS",
           "SCHEDULES", "SPLITS", "STRATEGIES", "apply_overrides",
           "load_recipe", "normalize_recipe", "parse_override", "read_yaml",
           "recipe_model_spec", "save_recipe"]

# Schedule arguments the trainer derives (learning rate from the optimizer,
# decay steps from epochs x steps per epoch when absent).
SCHEDULE_DERIVED = ("initial_learning_rate", "name")


# One batch of (float32) model inputs.
MAX_BATCH_BYTES = 16 << 30


# -- overrides ----------------------------------------------------------------


def parse_override(text):
    """`"key.path=value"` -> `(["key", "path"], value)`.

    The value is parsed with `yaml.safe_load` (`3` -> int, `[1, 2]` -> list,
    `null` -> None, `true` -> bool; an empty value is None).
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(
            None, f"--set {text!r}: expected key.path=value, e.g. "
            "training.epochs=3")
    key, value = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(
            None, f"--set {text!r}: {key!r} is not a dotted key path, e.g. "
            "fusion.type")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(
            key, f"--set {text!r}: the value is not valid YAML "
            f"({getattr(error, 'problem', error)})") from None
    return parts, parsed


def apply_overrides(recipe, overrides):
    """Applies `--set key.path=value` strings to a copy of `recipe`.

    Missing intermediate mappings are created; a numeric part indexes a
    list (`trunk.hidden_units.0=32`).

    Returns:
        `(new_recipe, {key path: override text})`.
    """
    recipe = copy.deepcopy(recipe) if recipe is not None else {}
    applied = {}
    for text in overrides or ():
        parts, value = parse_override(text)
        node = recipe
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            here = ".".join(parts[:i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        here, f"--set {text!r}: {'.'.join(parts[:i])} is a "
                        f"list of {len(node)} items; index it with 0.."
                        f"{len(node) - 1}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(
                    ".".join(parts[:i]),
                    f"--set {text!r}: this key holds {node!r}, not a "
                    "mapping; set it as a whole instead")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
        applied[".".join(parts)] = text
    return recipe, applied


# -- signature-driven checks (generators, optimizers, schedules, preprocessors)


def _signature_arguments(function, skip=("self",)):
    """`{name: default}` of a function or class constructor."""
    target = function.__init__ if inspect.isclass(function) else function
    arguments = {}
    for parameter in inspect.signature(target).parameters.values():
        if parameter.name in skip or parameter.kind in (
                parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        arguments[parameter.name] = parameter.default
    return arguments


def _check_kwargs(kwargs, arguments, key_path, owner, skip=()):
    allowed = sorted(a for a in arguments if a not in skip)
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(
                f"{key_path}.{key}", f"unknown key {key!r} for {owner}; "
                f"allowed keys are {', '.join(allowed)}")


def _normalize_generate(section):
    if section is None:
        return None
    kind = section.type
    kwargs = section.extra()
    module_name, function_name = GENERATORS[kind].split(":")
    try:
        import importlib
        function = getattr(importlib.import_module(module_name),
                           function_name)
    except (ImportError, AttributeError):  # builder not importable: no check
        function = None
    if function is not None:
        _check_kwargs(kwargs, _signature_arguments(function), "data.generate",
                      f"generator {kind!r}", skip=("type",))
    return {"type": kind, **copy.deepcopy(kwargs)}


def _normalize_data(section):
    path = "data"
    out = section.model_dump(exclude={"generate"})
    if out["splits"].get("train") is None:
        raise ConfigError(f"{path}.splits.train",
                          "missing required key 'train'")
    out["splits"] = {s: v for s, v in out["splits"].items() if v is not None}
    out = {"format": out.pop("format"), "splits": out.pop("splits"),
           "generate": _normalize_generate(section.generate), **out}
    return copy.deepcopy(out)


def _normalize_optimizer(section):
    import keras
    path = "training.optimizer"
    if not hasattr(keras.optimizers, OPTIMIZERS[section.type]):
        available = sorted(k for k, v in OPTIMIZERS.items()
                           if hasattr(keras.optimizers, v))
        raise not_one_of(f"{path}.type", section.type, available)
    cls = getattr(keras.optimizers, OPTIMIZERS[section.type])
    kwargs = section.extra()
    _check_kwargs(kwargs, _signature_arguments(cls), path, cls.__name__,
                  skip=("name",))
    return {"type": section.type, "learning_rate": section.learning_rate,
            **copy.deepcopy(kwargs)}


def _normalize_schedule(section):
    if section is None:
        return None
    kind = section.type
    kwargs = {k: v for k, v in section.model_dump(exclude={"type"}).items()
              if v is not None}
    kwargs.update(section.extra())
    if SCHEDULES[kind] is None:
        arguments = {}
    else:
        import keras
        cls = getattr(keras.optimizers.schedules, SCHEDULES[kind])
        arguments = _signature_arguments(cls)
    _check_kwargs(kwargs, arguments, "training.schedule",
                  SCHEDULES[kind] or "the constant schedule",
                  skip=SCHEDULE_DERIVED)
    return {"type": kind, **copy.deepcopy(kwargs)}


def _normalize_training(section):
    out = section.model_dump()
    out["optimizer"] = _normalize_optimizer(section.optimizer)
    out["schedule"] = _normalize_schedule(section.schedule)
    return out


def _normalize_evaluation(section, data):
    declared = list(data["splits"])
    splits = section.splits
    if splits is None:
        splits = [s for s in ("val", "test") if s in declared]
    for i, split in enumerate(splits):
        if split not in declared:
            raise ConfigError(
                f"evaluation.splits[{i}]", f"{split!r} is not one of the "
                f"splits in data.splits: {', '.join(declared)}")
    return {"splits": list(splits),
            "compare_unimodal": section.compare_unimodal}


def _check_dual_encoder(recipe):
    """A dual encoder (`fusion: none`, contrastive heads) has no fused
    output for a single-modality baseline, and its pairs are its data: an
    input left out by modality dropout would leave its pair empty."""
    if recipe["fusion"] is not None or len(recipe["inputs"]) < 2:
        return
    if recipe["evaluation"]["compare_unimodal"]:
        raise ConfigError(
            "evaluation.compare_unimodal",
            "a dual encoder (fusion: none) has no fused prediction to "
            "compare single modalities with; set it to false (its metrics "
            "are the retrieval figures of each pair)")
    if recipe["training"].get("modality_dropout"):
        raise ConfigError(
            "training.modality_dropout",
            "a dual encoder (fusion: none) learns from complete pairs; "
            "remove modality_dropout")


def siglip_bias(batch_size):
    """The initial SigLIP bias a recipe gets: `-log(batch_size)`, the
    log-odds of one positive among `batch_size` candidates (rounded to 4
    decimals)."""
    return round(-math.log(batch_size), 4)


def _default_siglip_bias(recipe):
    """A SigLIP head without `loss_options.bias` starts at
    `siglip_bias(training.batch_size)`, not at the layer's -10 (the
    paper's, for batches of 32 k). On AV-MNIST at batch 128 (12 epochs,
    seeds 0 / 1), -log(128) = -4.85 gave class R@1 audio -> image 96.8 /
    93.6% on clean (-10: 92.4 / 90.8%) and 63.6 / 65.6% on degraded (-10:
    52.7 / 57.2%); image -> audio 93.0 / 92.7% and 56.9 / 57.3% (-10:
    91.4 / 91.5% and 56.0 / 55.2%)."""
    for head in recipe["heads"].values():
        if head.get("type") == "contrastive" and head.get("loss") == \
                "siglip":
            options = dict(head.get("loss_options") or {})
            options.setdefault("bias", siglip_bias(
                recipe["training"]["batch_size"]))
            head["loss_options"] = options


def _normalize_export(section, name):
    out = section.model_dump()
    if out["name"] is None:
        out["name"] = validate(schema.ExportSection, {"name": name},
                               "export").name
    return out


def _check_preprocess(spec):
    """Preprocessor arguments: names checked against the class signature,
    values by constructing it when no files are involved.

    Returns:
        `{input name: per-example shape}` of the preprocessors constructed.
    """
    shapes = {}
    from keras_mm.registry import preprocessor_class

    for name, entry in spec["inputs"].items():
        kwargs = entry.get("preprocess") or {}
        path = f"inputs.{name}.preprocess"
        cls, set_by_input = preprocessor_class(name, entry)
        arguments = _signature_arguments(cls)
        _check_kwargs(kwargs, arguments, path, cls.__name__,
                      skip=("self", "name") + tuple(set_by_input))
        check_argument_values(kwargs, arguments, path)
        if set_by_input:
            continue        # constructing it loads the pretrained model
        required = [a for a, d in arguments.items()
                    if d is inspect.Parameter.empty and a != "name"]
        if any(a not in kwargs for a in required) or any(
                "file" in k for k in kwargs):
            continue
        try:
            preprocessor = cls(name, **kwargs)
        except (ValueError, TypeError) as error:
            argument = None
            for match in re.finditer(r"\b([A-Za-z_][A-Za-z0-9_]*)=",
                                     str(error)):
                if match.group(1) in kwargs:
                    argument = match.group(1)
                    break
            message = str(error)
            if argument is None:      # "invalid literal for int(): 'abc'"
                named = [k for k, v in kwargs.items()
                         if isinstance(v, str) and repr(v) in message]
                if len(named) == 1:
                    argument = named[0]
                    message = f"{argument}={kwargs[argument]!r}: {message}"
            raise ConfigError(f"{path}.{argument}" if argument else path,
                              message) from None
        _check_produced_size(path, kwargs, preprocessor)
        _check_shape_agrees(name, entry, preprocessor)
        if _static_shape(preprocessor) is not None:
            shapes[name] = _static_shape(preprocessor)
    return shapes


def _static_shape(preprocessor):
    try:
        return [int(d) for d in preprocessor.output_shape()]
    except Exception:  # noqa: BLE001 - no static shape (or no method)
        return None


def _check_produced_size(path, kwargs, preprocessor):
    """A preprocessor's per-example output within MAX_INPUT_ELEMENTS;
    the error names the argument that sets the offending size."""
    shape = _static_shape(preprocessor)
    if shape is None or input_elements(shape) <= MAX_INPUT_ELEMENTS:
        return
    biggest = max(shape)
    named = [k for k, v in kwargs.items() if schema_is_int(v) and v == biggest
             or isinstance(v, (list, tuple)) and biggest in v]
    key = f"{path}.{named[0]}" if named else path
    raise ConfigError(
        key, f"the preprocessor would produce {shape} = "
        f"{input_elements(shape):,} values per example, above the limit of "
        f"{MAX_INPUT_ELEMENTS:,}; use a smaller size")


def _check_batch_bytes(recipe, spec, produced):
    """One batch of model inputs (float32) within MAX_BATCH_BYTES."""
    batch_size = recipe["training"]["batch_size"]
    total, biggest = 0, None
    for name, entry in spec["inputs"].items():
        shape = entry.get("shape") or produced.get(name)
        if shape is None:
            continue
        size = input_elements(shape) * 4 * batch_size
        total += size
        if biggest is None or size > biggest[1]:
            biggest = (name, size)
    if total > MAX_BATCH_BYTES:
        raise ConfigError(
            "training.batch_size",
            f"{batch_size} examples a batch need {total / 2**30:.1f} GiB of "
            f"inputs (most for inputs.{biggest[0]}), above the limit of "
            f"{MAX_BATCH_BYTES / 2**30:.0f} GiB; use a smaller batch_size or "
            "smaller inputs")


def _check_shape_agrees(name, entry, preprocessor):
    """The input's `shape` must be what its preprocessor produces."""
    if entry.get("shape") is None or not hasattr(preprocessor,
                                                 "output_shape"):
        return
    try:
        produced = [int(d) for d in preprocessor.output_shape()]
    except Exception:  # noqa: BLE001 - no static shape to compare with
        return
    if produced != list(entry["shape"]):
        raise ConfigError(
            f"inputs.{name}.shape",
            f"{list(entry['shape'])} differs from {produced}, the shape "
            f"inputs.{name}.preprocess produces; make them agree (or leave "
            "shape out: it is then taken from the preprocessor)")


def normalize_recipe(recipe, name=None):
    """Validates a recipe dict; returns it normalized (defaults filled in).

    Args:
        recipe: the recipe (plain data).
        name: default recipe name (e.g. the file stem).

    Raises:
        ConfigError: naming the key path (no file; see `load_recipe`).
    """
    from keras_mm.builder.spec import normalize_spec

    if recipe is None:
        raise ConfigError(None, "the recipe is empty; it needs data, inputs "
                          "and heads sections")
    sections = validate(schema.RecipeSections, recipe)
    out = {"name": sections.name or validate(
        schema.ExportSection, {"name": name or "recipe"}).name}
    out["data"] = _normalize_data(sections.data)
    spec = {k: recipe[k] for k in MODEL_KEYS if k in recipe}
    spec["name"] = re.sub(r"[^A-Za-z0-9_]", "_", out["name"])
    if not spec["name"][0].isalpha():
        spec["name"] = f"model_{spec['name']}"
    spec = normalize_spec(spec, complete=False)
    produced = _check_preprocess(spec)
    for key in MODEL_KEYS:
        out[key] = spec[key]
    out["training"] = _normalize_training(sections.training)
    _check_batch_bytes(out, spec, produced)
    out["evaluation"] = _normalize_evaluation(sections.evaluation,
                                              out["data"])
    _check_dual_encoder(out)
    _default_siglip_bias(out)
    out["export"] = _normalize_export(sections.export, out["name"])
    if sections.distill is not None:
        out["distill"] = sections.distill.model_dump()
    if sections.tune is not None:
        out["tune"] = sections.tune.model_dump()
    return out


def _blame(error, applied, path):
    """Names the --set override that produced the bad key, if any."""
    key = error.key_path or ""
    for override_key, text in applied.items():
        if key == override_key or key.startswith(override_key + ".") \
                or key.startswith(override_key + "[") \
                or override_key.startswith(key + ".") and key:
            return f"{path} (with --set {text})"
    return path


def load_recipe(path, overrides=()):
    """Loads, overrides and validates a YAML recipe.

    Args:
        path: the recipe file.
        overrides: `"key.path=value"` strings (the CLI's `--set`), applied
            in order; values are parsed with `yaml.safe_load`.

    Returns:
        The normalized recipe: plain data (dicts, lists, strings, numbers),
        every section present with its defaults; `recipe_model_spec(recipe)`
        is its `keras_mm.build_model` spec.

    Raises:
        ConfigError: the message names the file, the key path, the bad value
            and the allowed values, e.g. `recipes/x.yaml: fusion.type:
            'concatt' is not one of attention, concat, ...`.

    Example:

    >>> recipe = load_recipe("recipes/demo.yaml",
    ...                      overrides=["training.epochs=2"])  # doctest: +SKIP
    >>> recipe["training"]["epochs"]                            # doctest: +SKIP
    2
    """
    path = os.fspath(path)
    raw = read_yaml(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(None, f"the recipe must be a mapping of sections "
                          f"({', '.join(RECIPE_KEYS)}); got "
                          f"{type(raw).__name__}", source=path)
    applied = {}
    try:
        if overrides:
            raw, applied = apply_overrides(raw, overrides)
        return normalize_recipe(raw, name=stem)
    except ConfigError as error:
        raise error.with_source(_blame(error, applied, path)) from None


def recipe_model_spec(recipe):
    """The `keras_mm.build_model` spec part of a (normalized) recipe."""
    spec = {k: copy.deepcopy(recipe.get(k)) for k in MODEL_KEYS}
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(recipe.get("name") or "model"))
    spec["name"] = name if name[:1].isalpha() else f"model_{name}"
    return spec


def save_recipe(recipe, path):
    """Writes a (resolved) recipe as YAML with `yaml.safe_dump`."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(recipe, f, sort_keys=False, default_flow_style=None)
    return path
