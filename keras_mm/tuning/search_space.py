"""A `tune.space` as KerasTuner hyperparameters, and trial values as
recipe overrides.

- `check_space(raw, space)`: every key path and every value it can take
  make a valid recipe (each choice, and each range's ends), checked by the
  same normalization as `keras-mm train`; the error names
  `tune.space.<key path>` and the value;
- `hyperparameters(space)`: the `keras_tuner.HyperParameters`;
- `overrides(values)`: `--set` strings of a trial's values;
- `recipe_values(raw, recipe, space)`: the recipe's own value at each key
  (the search's reference trial), or the reason it cannot be one.
"""

import json
import math

from keras_mm.errors import ConfigError


def overrides(values):
    """`{key path: value}` -> `["key.path=<JSON>", ...]` (JSON is YAML, so
    `parse_override` reads each value back as it was)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def _candidates(entry):
    if entry["kind"] == "choice":
        return list(entry["values"])
    return [entry["low"], entry["high"]]


def check_space(raw, space):
    """Raises `ConfigError` at `tune.space.<key>` when a value of the space
    makes the recipe `raw` (its YAML data, overrides applied) invalid."""
    from keras_mm.recipes import apply_overrides
    from keras_mm.recipes.recipe import normalize_recipe

    base = {k: v for k, v in raw.items() if k != "tune"}
    for key, entry in space.items():
        for value in _candidates(entry):
            try:
                candidate, _ = apply_overrides(base, overrides({key: value}))
                normalize_recipe(candidate)
            except ConfigError as error:
                raise ConfigError(
                    f"tune.space.{key}",
                    f"the value {value!r} makes an invalid recipe: "
                    f"{error}") from None


def hyperparameters(space):
    """The `keras_tuner.HyperParameters` of a normalized `tune.space`."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for key, entry in space.items():
        kind = entry["kind"]
        if kind == "choice":
            hp.Choice(key, entry["values"], ordered=False)
        elif kind == "int":
            hp.Int(key, entry["low"], entry["high"], step=entry["step"])
        else:
            hp.Float(key, float(entry["low"]), float(entry["high"]),
                     sampling="log" if kind == "log_uniform" else "linear")
    return hp


def _lookup(node, parts):
    for part in parts:
        if isinstance(node, list) and part.isdigit() and \
                int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None, False
    return node, True


def _inside(entry, value):
    if entry["kind"] == "choice":
        return any(type(value) is type(v) and value == v
                   for v in entry["values"])
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        return False
    if entry["kind"] == "int" and (not isinstance(value, int) or (
            value - entry["low"]) % entry["step"]):
        return False
    return entry["low"] <= value <= entry["high"]


def recipe_values(raw, recipe, space):
    """`(values, None)`: the recipe's value of every key (from its YAML,
    else its normalized defaults), or `(None, why)` when one is unset or
    outside its search space."""
    values = {}
    for key, entry in space.items():
        parts = key.split(".")
        value, found = _lookup(raw, parts)
        if not found:
            value, found = _lookup(recipe, parts)
        if not found:
            return None, f"{key} is unset in the recipe"
        if entry["kind"] != "choice" and isinstance(value, int) and \
                not isinstance(value, bool) and entry["kind"] != "int":
            value = float(value)
        if not _inside(entry, value):
            return None, (f"the recipe's {key}: {value!r} lies outside its "
                          "search space")
        values[key] = value
    return values, None
