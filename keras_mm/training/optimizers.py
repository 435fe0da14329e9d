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
"""

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
    """
    from keras_mm.recipes.recipe import OPTIMIZERS

    spec = dict(training["optimizer"])
    cls = getattr(keras.optimizers, OPTIMIZERS[spec.pop("type")])
    learning_rate = spec.pop("learning_rate", 1e-3)
    total = int(training["epochs"]) * int(steps_per_epoch)
    spec["learning_rate"] = build_schedule(training.get("schedule"),
                                           learning_rate, total)
    try:
        return cls(**spec)
    except (TypeError, ValueError) as error:
        raise ConfigError("training.optimizer", str(error)) from None
