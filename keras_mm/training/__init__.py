"""Training: strategies, the trainer, the distributed loop, run folders.

- `train(recipe, overrides=(), export=True, verify=True, runs_dir=None,
  verbose=None)` -> `TrainResult`: the whole job of `keras-mm train`;
- `evaluate(run_dir_or_recipe, splits=("test",), checkpoint=None)`;
- `export_run(run_dir, name=None, base_dir=None, version=None, verify=True)`;
- `load_run(run_dir)` -> `(recipe, model, preprocessors)`;
- `resolve_strategy(...)` -> `StrategyPlan`; `fit_distributed(...)`: the
  `model.fit`-equivalent loop used under `MultiWorkerMirroredStrategy`.
"""

from keras_mm.training.distributed_loop import fit_distributed
from keras_mm.training.finished_run import evaluate, export_run, load_run
from keras_mm.training.resumable_early_stopping import ResumableEarlyStopping
from keras_mm.training.run_artifacts import (format_scoreboard,
                                             scoreboard_rows)
from keras_mm.training.run_backup import RunBackup
from keras_mm.training.strategy import StrategyPlan, resolve_strategy
from keras_mm.training.train_result import TrainResult
from keras_mm.training.trainer import train

__all__ = ["ResumableEarlyStopping", "RunBackup", "StrategyPlan", "TrainResult",
           "evaluate", "export_run", "fit_distributed", "format_scoreboard",
           "load_run", "resolve_strategy", "scoreboard_rows", "train"]
