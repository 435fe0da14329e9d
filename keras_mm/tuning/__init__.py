"""Hyperparameter search over a recipe's key paths (`keras-mm tune`),
with KerasTuner's oracles; see `keras_mm.tuning.tune`."""

from keras_mm.tuning.tune import tune
from keras_mm.tuning.tune_result import TuneResult

__all__ = ["TuneResult", "tune"]
