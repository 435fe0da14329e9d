"""`inputs.<name>.tower.init_from`: start a tower from another run's.

A recipe (typically a classifier) names a finished run (typically a
contrastive dual encoder) whose tower of the same input it starts from:

```yaml
inputs:
  image:
    modality: image
    preprocess: {size: [28, 28], channels: 1}      # as in the source run
    tower: {encoder: cnn, dim: 64, init_from: runs/align, trainable: true}
```

Before any work (`check_sources`), the source run must be finished and
have that input, with the same modality, `preprocess` section and tower
arguments (`init_from` and `trainable` aside): a difference is a
`ConfigError` naming both values. The input then uses the source run's
*fitted* preprocessor (its vocabulary, statistics), so the tower sees the
inputs it was trained on; the other inputs are fitted as usual. After the
model is built (`initialize_towers`) every weight of the tower is copied
from the source checkpoint, in order, checked by count and shape. `trainable: false`
freezes the copied tower.
"""

import os

import numpy as np

from keras_mm.errors import ConfigError

IGNORED_TOWER_KEYS = ("init_from", "trainable", "output")


def init_sources(recipe):
    """`{input name: init_from value}` of the recipe's inputs."""
    return {name: entry["tower"]["init_from"]
            for name, entry in recipe["inputs"].items()
            if (entry.get("tower") or {}).get("init_from")}


def resolve_run(value, recipe, path):
    """The run folder `value` names: a path, else a run name under
    `training.runs_dir`."""
    from keras_mm.training.run_folder import RECIPE_FILE

    candidates = [os.fspath(value),
                  os.path.join(recipe["training"]["runs_dir"], str(value))]
    for candidate in candidates:
        if os.path.exists(os.path.join(candidate, RECIPE_FILE)):
            return candidate
    raise ConfigError(path, f"{value!r} is not a finished run folder (no "
                      f"{RECIPE_FILE} in {' or '.join(candidates)}); train "
                      "the source run first, or give its folder runs/<name>")


def _differences(here, there):
    keys = sorted(set(here) | set(there))
    return [f"{k}: {there.get(k, '(unset)')!r} there, "
            f"{here.get(k, '(unset)')!r} here"
            for k in keys if here.get(k) != there.get(k)]


def _tower_section(entry):
    return {k: v for k, v in (entry.get("tower") or {}).items()
            if k not in IGNORED_TOWER_KEYS}


def check_sources(recipe):
    """`{input: (run folder, source recipe)}`; raises a ConfigError naming
    the key where a source run is missing or does not match."""
    from keras_mm.recipes import load_recipe
    from keras_mm.training.run_folder import RECIPE_FILE

    found = {}
    for name, value in init_sources(recipe).items():
        path = f"inputs.{name}.tower.init_from"
        run_dir = resolve_run(value, recipe, path)
        source = load_recipe(os.path.join(run_dir, RECIPE_FILE))
        entry = recipe["inputs"][name]
        theirs = source["inputs"].get(name)
        if theirs is None:
            raise ConfigError(path, f"the run {run_dir} has no input {name!r}"
                              f"; its inputs are "
                              f"{', '.join(source['inputs'])}")
        if theirs["modality"] != entry["modality"]:
            raise ConfigError(
                f"inputs.{name}.modality", f"{entry['modality']!r} here, "
                f"{theirs['modality']!r} in {run_dir}")
        for key, here, there in (
                ("preprocess", entry.get("preprocess") or {},
                 theirs.get("preprocess") or {}),
                ("tower", _tower_section(entry), _tower_section(theirs))):
            differences = _differences(here, there)
            if differences:
                raise ConfigError(
                    f"inputs.{name}.{key}",
                    f"differs from input {name!r} of {run_dir} ("
                    + "; ".join(differences) + "); a tower started from "
                    "another run needs that run's preprocessing and tower "
                    "arguments: make them the same, or remove init_from")
        found[name] = (run_dir, source)
    return found


def source_preprocessors(sources):
    """`{input: the source run's fitted preprocessor}`."""
    from keras_mm.training import run_preprocessors

    out = {}
    for name, (run_dir, _) in sources.items():
        loaded = run_preprocessors.load_preprocessors(
            os.path.join(run_dir, run_preprocessors.PREPROCESSORS_FILE),
            order=[name])
        out[name] = loaded[name]
    return out


def source_weights(sources):
    """`{input: [(path, array)]}` of each source run's tower weights, read
    from its best (else final) checkpoint."""
    from keras_mm.training.finished_run import load_run

    out, models = {}, {}
    for name, (run_dir, _) in sources.items():
        if run_dir not in models:       # one load per source run
            models[run_dir] = load_run(run_dir)[1]
        tower = models[run_dir].get_layer(f"{name}_tower")
        out[name] = [(w.path, np.asarray(w.numpy())) for w in tower.weights]
    return out


def initialize_towers(model, weights, sources):
    """Copies `weights` (`source_weights`) into the model's towers, weight
    by weight in the tower's (deterministic) order, checking the count and
    each shape."""
    for name, saved in weights.items():
        tower = model.get_layer(f"{name}_tower")
        run_dir = sources[name][0]
        mine = list(tower.weights)
        if len(mine) != len(saved):
            raise ConfigError(
                f"inputs.{name}.tower.init_from",
                f"the {name} tower has {len(mine)} weights here and "
                f"{len(saved)} in {run_dir}; build the same tower")
        for variable, (path, value) in zip(mine, saved):
            if tuple(variable.shape) != value.shape:
                raise ConfigError(
                    f"inputs.{name}.tower.init_from",
                    f"weight {variable.path} is {tuple(variable.shape)} here "
                    f"and {path} is {value.shape} in {run_dir}; build the "
                    "same tower")
            variable.assign(value.astype(variable.dtype))
