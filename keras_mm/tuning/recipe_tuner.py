"""A KerasTuner `Tuner` whose trials are keras_mm recipe runs.

The oracles are KerasTuner's own (random search, Bayesian optimization,
Hyperband); they keep every trial's values, status and score in
`<folder>/keras_tuner/`, so a search killed at any point reloads them: a
finished trial is never run again, and the trial that was running is
retried with the same values (its run folder resumes from its last epoch
backup). `RecipeTuner.search_within` is KerasTuner's `search` loop with a
wall-clock budget that counts the minutes of earlier sessions too.
"""

import time

import keras_tuner

_ORACLES = {
    "random": keras_tuner.oracles.RandomSearchOracle,
    "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
    "hyperband": keras_tuner.oracles.HyperbandOracle,
}


class _RecipeFirst:
    """An oracle whose first trial is the recipe's own values (the search's
    reference row), when `recipe_values` is set."""

    recipe_values = None

    def populate_space(self, trial_id):
        if self.recipe_values is not None and not self.trials:
            values = self.hyperparameters.copy().values
            values.update(self.recipe_values)
            return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING,
                    "values": values}
        return super().populate_space(trial_id)


class _RandomOracle(_RecipeFirst, _ORACLES["random"]):
    pass


class _BayesianOracle(_RecipeFirst, _ORACLES["bayesian"]):
    pass


def make_oracle(algorithm, objective, direction, hyperparameters,
                max_trials, seed, max_epochs, factor, recipe_values=None):
    """The KerasTuner oracle of `tune.algorithm`."""
    goal = keras_tuner.Objective(objective, direction=direction)
    common = dict(objective=goal, hyperparameters=hyperparameters,
                  seed=seed, allow_new_entries=False,
                  tune_new_entries=False)
    if algorithm == "hyperband":
        oracle = _ORACLES["hyperband"](max_epochs=max_epochs, factor=factor,
                                       **common)
    else:
        cls = _RandomOracle if algorithm == "random" else _BayesianOracle
        oracle = cls(max_trials=max_trials, **common)
        oracle.recipe_values = recipe_values
    return oracle


class RecipeTuner(keras_tuner.Tuner):
    """Runs each trial with `run_trial_fn(trial) -> {objective: value}`.

    Args:
        oracle: a KerasTuner oracle (`make_oracle`).
        run_trial_fn: trains the trial's recipe and returns its score.
        directory: the search's folder (KerasTuner's project goes to
            `<directory>/keras_tuner`).
    """

    def __init__(self, oracle, run_trial_fn, directory, **kwargs):
        self.run_trial_fn = run_trial_fn
        super().__init__(oracle=oracle, hypermodel=None, directory=directory,
                         project_name="keras_tuner", overwrite=False,
                         **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        return self.run_trial_fn(trial)

    def search_within(self, max_trials, budget_s, spent_s, on_trial=None):
        """KerasTuner's search loop, stopping before a new trial once
        `max_trials` trials exist or `spent_s() >= budget_s`.

        Returns:
            Why it stopped: `"max_trials"`, `"max_minutes"` or `"oracle"`
            (the oracle has no trial left, e.g. Hyperband's brackets).
        """
        self.on_search_begin()
        stopped = "oracle"
        while True:
            retry = bool(self.oracle._retry_queue)
            if not retry and len(self.oracle.trials) >= max_trials:
                stopped = "max_trials"
                break
            if not retry and budget_s is not None and spent_s() >= budget_s:
                stopped = "max_minutes"
                break
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == keras_tuner.engine.trial.TrialStatus.STOPPED:
                break
            if trial.status == keras_tuner.engine.trial.TrialStatus.IDLE:
                time.sleep(0.1)
                continue
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial)
            self.on_trial_end(trial)
            if on_trial is not None:
                on_trial(self.oracle.get_trial(trial.trial_id))
        self.on_search_end()
        return stopped
