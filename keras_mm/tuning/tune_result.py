import dataclasses
import typing


@dataclasses.dataclass
class TuneResult:
    """What `keras_mm.tuning.tune` returns.

    Attributes:
        folder: the search's folder (`<runs_dir>/<name>_tune`).
        objective: the val metric selected on, e.g. `digit.accuracy`.
        direction: `max` or `min`.
        trials: one row per trial, in trial order: `{"trial", "status",
            "values" {key path: value}, "score" (val objective or None),
            "splits" {split: objective on it}, "seconds", "run_dir",
            "best", "recipe"}` (`recipe`: the recipe's own values). Trials
            are scored on val only; `splits` (test) is filled for the best
            row and the recipe's row, evaluated after the search.
        best: the best row (on val), or None when no trial finished.
        best_recipe: the path of `best.yaml`, or None.
        table: the trials as fixed-width text (also `trials.csv`).
        plot: the path of `trials.png`, or None.
        stopped: why the search stopped: `max_trials`, `max_minutes` or
            `oracle` (no trial left).
        notes: what the search decided for the user (a held-out val
            split, the recipe's row left out, ...).
    """

    folder: str
    objective: str
    direction: str
    trials: list
    best: typing.Optional[dict] = None
    best_recipe: typing.Optional[str] = None
    table: str = ""
    plot: typing.Optional[str] = None
    stopped: str = "max_trials"
    notes: list = dataclasses.field(default_factory=list)
