"""The optimizer and learning-rate schedule of a recipe's `training` section.

`training.optimizer` is `{type, learning_rate, ...Keras optimizer
arguments}`; `training.schedule` is `{type, ...}` with `type` one of
`constant`, `cosine`, `cosine_restarts`, `exponential`, `inverse_time`,
`piecewise`, `polynomial` (a `keras.optimizers.schedules` class). The
schedule starts from the optimizer's `learning_rate`; its `decay_steps`
(`first_decay_steps` for restarts) default to the whole run, `epochs x
steps per epoch` (less the warm-up for `cosine`). `cosine` with
`warmup_steps` and no `warmup_target` warms up linearly from 0 to the
learning rate, then decays.

`training.fine_tuning.learning_rate_multipliers` (`{input: m}`) makes the
optimizer a `<Name>WithMultipliers` class (`LearningRateMultipliers`): the
variables of `<input>_tower` use `learning_rate x m`, every epoch. These
classes are registered Keras serializables (package `keras_mm`), so a
`.keras` file saved with one loads with `compile=True` in a new process
once this module is imported.
"""

import math

import keras

from keras_mm.errors import ConfigError


def build_schedule(schedule, learning_rate, total_steps):
    """A `keras.optimizers.schedules.LearningRateSchedule`, or the float
    `learning_rate` for no / a constant schedule."""
    from keras_mm.recipes.recipe import SCHEDULES

    if not schedule or SCHEDULES[schedule["type"]] is None:
        return float(learning_rate)
    kind = schedule["type"]
    cls = getattr(keras.optimizers.schedules, SCHEDULES[kind])
    kwargs = {k: v for k, v in schedule.items() if k != "type"}
    total_steps = max(int(total_steps), 1)
    if kind == "piecewise":
        for key in ("boundaries", "values"):
            if key not in kwargs:
                raise ConfigError(
                    f"training.schedule.{key}", "missing required key "
                    f"{key!r} for the piecewise schedule (boundaries in "
                    "steps, one more value than boundaries)")
        return cls(**kwargs)
    kwargs["initial_learning_rate"] = float(learning_rate)
    if kind == "cosine":
        warmup = int(kwargs.get("warmup_steps", 0))
        kwargs.setdefault("decay_steps", max(total_steps - warmup, 1))
        if warmup and kwargs.get("warmup_target") is None:
            kwargs["initial_learning_rate"] = 0.0
            kwargs["warmup_target"] = float(learning_rate)
    elif kind == "cosine_restarts":
        kwargs.setdefault("first_decay_steps", total_steps)
    else:
        kwargs.setdefault("decay_steps", total_steps)
    if kind in ("exponential", "inverse_time") and "decay_rate" not in kwargs:
        raise ConfigError(
            "training.schedule.decay_rate",
            f"missing required key 'decay_rate' for the {kind} schedule "
            "(e.g. 0.5: the rate is multiplied by it every decay_steps)")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError("training.schedule", str(error)) from None


def build_optimizer(training, steps_per_epoch):
    """The Keras optimizer of `training` (the recipe section).

    Args:
        training: the normalized `training` section.
        steps_per_epoch: batches per epoch (sets the schedule's length).

    Returns:
        The optimizer; a `<Name>WithMultipliers` one where
        `training.fine_tuning.learning_rate_multipliers` is set.
    """
    from keras_mm.recipes.recipe import OPTIMIZERS
    from keras_mm.training.fine_tuning import multiplier_prefixes

    spec = dict(training["optimizer"])
    cls = getattr(keras.optimizers, OPTIMIZERS[spec.pop("type")])
    multipliers = multiplier_prefixes(training.get("fine_tuning"))
    if multipliers:
        cls = with_multipliers(cls)
        spec["learning_rate_multipliers"] = multipliers
    learning_rate = spec.pop("learning_rate", 1e-3)
    total = int(training["epochs"]) * int(steps_per_epoch)
    spec["learning_rate"] = build_schedule(training.get("schedule"),
                                           learning_rate, total)
    try:
        return cls(**spec)
    except (TypeError, ValueError) as error:
        raise ConfigError("training.optimizer", str(error)) from None


# -- per-tower learning-rate multipliers --------------------------------------


def _multiplier_items(owner, multipliers):
    """`multipliers` checked: `((prefix, float), ...)`, longest prefix
    first (the most specific wins)."""
    if multipliers is None:
        return ()
    if not isinstance(multipliers, dict):
        raise ValueError(
            f"{owner}: learning_rate_multipliers={multipliers!r} is not a "
            "mapping; give {variable path prefix: multiplier}, e.g. "
            "{'text_tower/': 0.1}")
    items = []
    for prefix, value in multipliers.items():
        if not isinstance(prefix, str) or not prefix.strip("/"):
            raise ValueError(
                f"{owner}: learning_rate_multipliers key {prefix!r} is not a "
                "variable path prefix; use e.g. 'text_tower/'")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(
                f"{owner}: learning_rate_multipliers[{prefix!r}]={value!r} "
                "is not a finite number >= 0; use e.g. 0.1 (0 freezes the "
                "matched variables)")
        items.append((prefix, float(value)))
    items.sort(key=lambda item: -len(item[0].rstrip("/")))
    return tuple(items)


def _matches(path, prefix):
    stem = prefix.rstrip("/")
    return path == stem or path.startswith(stem + "/")


class LearningRateMultipliers:
    """Mixin: per-variable learning-rate multipliers for a Keras optimizer.

    Keras 3 optimizers have one learning rate. This mixin overrides
    `_backend_update_step(grads, trainable_variables, learning_rate)`: the
    variables are grouped by multiplier and the optimizer's own update runs
    once per group with `learning_rate * m` (`learning_rate` is the current
    rate: a schedule's value or the rate variable). So it works for every
    optimizer whose `update_step` takes the rate it is given (all those of
    `OPTIMIZERS`), for schedules, gradient accumulation, EMA, loss scaling
    (`LossScaleOptimizer` wraps this optimizer) and `tf.distribute` (the
    TensorFlow backend's own update, with its all-reduce and merge call,
    runs per group).

    A variable takes the multiplier of the longest key that is a prefix of
    its `path` at a `/` boundary (`"text_tower/"` matches
    `text_tower/embedding/embeddings`); the others keep the base rate. The
    keras_mm trainer keys them `<input>_tower/`. A group with multiplier 0
    is skipped: its variables and their slots (moments) stay bitwise
    unchanged. Multipliers scale the step size only: the slots of Adam-like
    optimizers see the same gradients.

    Weight decay (`weight_decay=...`, AdamW's decoupled decay): Keras
    applies `variable -= variable * weight_decay * learning_rate`; here the
    decay of a variable uses its group's `learning_rate * m` too (a
    frozen group, m = 0, is not decayed).

    Args:
        learning_rate_multipliers: `{variable path prefix: multiplier >= 0}`.
        *args, **kwargs: those of the Keras optimizer.

    Example:

    >>> optimizer = AdamWithMultipliers(
    ...     learning_rate=1e-3,
    ...     learning_rate_multipliers={"text_tower/": 0.1})
    >>> optimizer.get_config()["learning_rate_multipliers"]
    {'text_tower/': 0.1}
    """

    def __init__(self, *args, learning_rate_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._multipliers = _multiplier_items(type(self).__name__,
                                              learning_rate_multipliers)
        self._decay_scale = None

    @property
    def learning_rate_multipliers(self):
        """`{prefix: multiplier}` (a copy)."""
        return {prefix: m for prefix, m in self._multipliers}

    def multiplier_of(self, variable):
        """The multiplier of `variable` (1.0 when no key matches)."""
        path = getattr(variable, "path", None) or variable.name
        for prefix, m in self._multipliers:
            if _matches(path, prefix):
                return m
        return 1.0

    def _groups(self, variables):
        """`[(multiplier, [indices])]` in first-appearance order."""
        groups = {}
        for i, variable in enumerate(variables):
            groups.setdefault(self.multiplier_of(variable), []).append(i)
        return list(groups.items())

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        grads, trainable_variables = list(grads), list(trainable_variables)
        for m, indices in self._groups(trainable_variables):
            if m == 0.0:
                continue
            rate = learning_rate if m == 1.0 else learning_rate * m
            super()._backend_update_step(
                [grads[i] for i in indices],
                [trainable_variables[i] for i in indices], rate)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        variables = list(variables)
        for m, indices in self._groups(variables):
            if m == 0.0:
                continue
            self._decay_scale = None if m == 1.0 else m
            try:
                super()._apply_weight_decay([variables[i] for i in indices])
            finally:
                self._decay_scale = None

    def _get_current_learning_rate(self):
        rate = super()._get_current_learning_rate()
        # Only while `_apply_weight_decay` runs a scaled group.
        if getattr(self, "_decay_scale", None) is not None:
            rate = rate * self._decay_scale
        return rate

    def get_config(self):
        config = super().get_config()
        config["learning_rate_multipliers"] = self.learning_rate_multipliers
        return config


def _with_multipliers(base):
    name = f"{base.__name__}WithMultipliers"
    cls = type(name, (LearningRateMultipliers, base), {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": (f"`keras.optimizers.{base.__name__}` with per-variable "
                    "learning-rate multipliers (`LearningRateMultipliers`)."
                    "\n\n    Args:\n        learning_rate_multipliers: "
                    "`{variable path prefix: multiplier >= 0}`.\n        "
                    f"**kwargs: those of `keras.optimizers.{base.__name__}`."
                    "\n\n    Example:\n\n    >>> optimizer = "
                    f"{name}(\n    ...     learning_rate_multipliers="
                    "{'text_tower/': 0.1})\n"),
    })
    return keras.saving.register_keras_serializable(package="keras_mm")(cls)


def _multiplier_classes():
    from keras_mm.recipes.schema import OPTIMIZERS

    classes = {}
    for class_name in sorted(set(OPTIMIZERS.values())):
        base = getattr(keras.optimizers, class_name, None)
        if base is not None:
            classes[class_name] = _with_multipliers(base)
    return classes


# `AdamWithMultipliers`, `SGDWithMultipliers`, ...: one registered class per
# optimizer type a recipe allows (module attributes, so that a `.keras` file
# saved with one loads with compile=True once this module is imported).
MULTIPLIER_CLASSES = _multiplier_classes()
globals().update({cls.__name__: cls for cls in MULTIPLIER_CLASSES.values()})


def with_multipliers(optimizer_class):
    """The registered `<Name>WithMultipliers` class of a Keras optimizer
    class (one of `OPTIMIZERS`)."""
    try:
        return MULTIPLIER_CLASSES[optimizer_class.__name__]
    except KeyError:
        raise ValueError(
            f"with_multipliers: {optimizer_class.__name__} has no "
            "learning-rate multiplier class; use one of "
            f"{', '.join(sorted(MULTIPLIER_CLASSES))}") from None
