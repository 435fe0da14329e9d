"""Pydantic schema of a recipe's `tune:` section (`keras-mm tune`).

```yaml
tune:
  objective: auto           # <head>.<metric> or loss, on the val split
  algorithm: random         # random, bayesian or hyperband
  max_trials: 12
  max_minutes: null         # a wall-clock budget over all sessions
  space:
    training.optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}
    fusion.type: {choice: [concat, gated, film]}
    inputs.image.tower.dim: {choice: [32, 64, 128]}
```

Each `space` key is a recipe key path, as `--set` writes it; its search
space is one of `choice: [values]`, `uniform: [low, high]`,
`log_uniform: [low, high]` (low > 0) or `int: [low, high]` (with an
optional `step`). Whether each value makes a valid recipe is checked by
`keras_mm.tuning.search_space` against the whole recipe.
"""

import math
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, Field

from keras_mm.builder.schema import (NonNegativeFloat, Section, bounded_int,
                                     fail, is_int, plain)

ALGORITHMS = ("random", "bayesian", "hyperband")
DIRECTIONS = ("auto", "max", "min")
SPACE_KINDS = ("choice", "uniform", "log_uniform", "int")
MAX_TRIALS = 10_000
MAX_CHOICES = 1_000


def _number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _bounds(kind, value):
    if not (isinstance(value, list) and len(value) == 2
            and all(_number(v) for v in value)):
        raise fail(f"{kind}: {value!r} is not [low, high] (two finite "
                   "numbers)")
    low, high = value
    if kind == "int" and not (is_int(low) and is_int(high)):
        raise fail(f"int: {value!r} is not two integers")
    if not low < high:
        raise fail(f"{kind}: low {low!r} is not below high {high!r}; for "
                   "a single value set the key in the recipe instead")
    if kind == "log_uniform" and low <= 0:
        raise fail(f"log_uniform: low {low!r} must be above 0")
    return [low, high]


def _as_written(value):
    """A normalized entry (`{"kind", ...}`, as a run's recipe.yaml keeps
    it) back in the written form, so normalizing is idempotent."""
    kind = value.get("kind")
    if kind == "choice":
        return {"choice": value.get("values")}
    out = {kind: [value.get("low"), value.get("high")]}
    if "step" in value:
        out["step"] = value["step"]
    return out


def _space_entry(value):
    """`{kind: spec}` -> `{"kind", "values"}` or `{"kind", "low", "high"
    [, "step"]}`."""
    if isinstance(value, dict) and value.get("kind") in SPACE_KINDS:
        value = _as_written(value)
    if not isinstance(value, dict):
        raise fail(f"{value!r} is not a search space; write one of "
                   "{choice: [...]}, {uniform: [low, high]}, "
                   "{log_uniform: [low, high]}, {int: [low, high]}")
    kinds = [k for k in value if k in SPACE_KINDS]
    other = sorted(set(value) - set(SPACE_KINDS) - {"step"})
    if other or len(kinds) != 1:
        raise fail(f"{sorted(value)} is not one of the search spaces "
                   f"{', '.join(SPACE_KINDS)} (one of them, and step with "
                   "int)")
    kind = kinds[0]
    if "step" in value and kind != "int":
        raise fail("step goes with int only")
    if kind == "choice":
        values = plain(value["choice"])
        if not isinstance(values, list) or not values:
            raise fail(f"choice: {values!r} is not a non-empty list")
        if len(values) > MAX_CHOICES:
            raise fail(f"choice: {len(values)} values, above the limit of "
                       f"{MAX_CHOICES}")
        kinds_of = {type(v) for v in values}
        if not kinds_of <= {str, int, float, bool} or len(kinds_of) > 1:
            raise fail(f"choice: {values!r} must be all integers, all "
                       "floats, all strings or all booleans (a KerasTuner "
                       "Choice; write 1.0, not 1, beside floats)")
        if len({repr(v) for v in values}) != len(values):
            raise fail(f"choice: {values!r} repeats a value")
        return {"kind": "choice", "values": values}
    low, high = _bounds(kind, value[kind])
    out = {"kind": kind, "low": low, "high": high}
    if kind == "int":
        step = value.get("step", 1)
        if not is_int(step) or step < 1:
            raise fail(f"step: {step!r} is not an integer >= 1")
        out["step"] = int(step)
    return out


def _space(value):
    if not isinstance(value, dict) or not value:
        raise fail(f"{value!r} is not a mapping of recipe key paths to "
                   "search spaces, e.g. {fusion.type: {choice: [concat, "
                   "film]}}")
    out = {}
    for key, entry in value.items():
        if not isinstance(key, str) or not key or any(
                not part for part in key.split(".")):
            raise fail(f"{key!r} is not a dotted recipe key path such as "
                       "training.optimizer.learning_rate")
        if key.split(".")[0] in ("tune", "name"):
            raise fail(f"{key!r}: the tune section and the run name are not "
                       "searchable")
        try:
            out[key] = _space_entry(entry)
        except Exception as error:          # name the key in the message
            message = getattr(error, "context", None) or {}
            raise fail(str(message.get("message", error)),
                       f".{key}") from None
    return out


class TuneSection(Section):
    space: Annotated[Any, AfterValidator(_space)] = Field(
        description="recipe key path -> search space")
    objective: str = "auto"
    direction: Literal[DIRECTIONS] = "auto"
    algorithm: Literal[ALGORITHMS] = "random"
    max_trials: bounded_int(1, MAX_TRIALS) = 12
    max_minutes: Optional[NonNegativeFloat] = None
    seed: bounded_int(0, 2**32 - 1) = 0
    # Rows of the train split held out for validation when data.splits has
    # no val split (stratified by the first classification head).
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.9)] = 0.15
    # Run the recipe's own values first (random / bayesian): the table's
    # reference row.
    include_recipe: bool = True
    # hyperband: the epoch-budget reduction factor.
    hyperband_factor: bounded_int(2, 100) = 3
    # The search's folder; default <training.runs_dir>/<name>_tune.
    folder: Optional[Annotated[str, Field(min_length=1)]] = None
