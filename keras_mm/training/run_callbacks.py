"""The callbacks of one training run, from the recipe's `training` section.

In order: the caller's first callbacks (the frozen warm-up,
`keras_mm.training.fine_tuning.FrozenWarmup`: it puts the towers' trainable
flags back at each epoch end before the others save the model), early
stopping (`ResumableEarlyStopping`, its state replayed from
the kept history rows), the best checkpoint (`AtomicModelCheckpoint`, its
threshold replayed likewise), `CSVLogger` (`history.csv`), TensorBoard,
the caller's extra callbacks, and the backup (`RunBackup`) last: it marks
an epoch done once the history row, the best checkpoint and the
early-stopping state are written.
"""

import importlib.util
import os

import keras

from keras_mm.errors import ConfigError
from keras_mm.training import run_folder
from keras_mm.training.atomic_model_checkpoint import AtomicModelCheckpoint
from keras_mm.training.run_backup import RunBackup
from keras_mm.training.resumable_early_stopping import (
    ResumableEarlyStopping, replay_best, resolve_mode)


def monitor_config(config, has_val, what, say):
    """A monitor config usable with the data at hand (`val_x` -> `x`
    without a validation split, told through `say`), with its mode
    resolved; None when `config` is empty."""
    if not config:
        return None
    config = dict(config)
    if not has_val and config["monitor"].startswith("val_"):
        say(f"{what}: no val split, monitoring "
            f"{config['monitor'][4:]!r} instead of {config['monitor']!r}")
        config["monitor"] = config["monitor"][4:]
    mode = resolve_mode(config["monitor"], config.get("mode", "auto"))
    if mode is None:
        raise ConfigError(
            f"training.{what}.mode",
            f"cannot tell whether {config['monitor']!r} should go up or down;"
            " set mode to min or max")
    config["mode"] = mode
    return config


def _tensorboard_installed():
    return importlib.util.find_spec("tensorboard") is not None


def make_callbacks(training, work_dir, initial_epoch, has_val, verbose, say,
                   extra_callbacks=(), first_callbacks=()):
    """The callbacks of a run writing to `work_dir` from `initial_epoch`.

    `history.csv` is cut to its first `initial_epoch` rows (those of the
    epochs the backup holds); they seed the early stopper and the
    checkpoint threshold.

    Args:
        training: the recipe's `training` section.
        work_dir: the folder of the run files.
        initial_epoch: the epoch training starts at (0, or the backup's).
        has_val: whether there is a validation split.
        verbose: the run's verbosity (the stopper's messages when not 0).
        say: prints a line for the user.
        extra_callbacks: the caller's, before the backup.
        first_callbacks: the caller's, before all others.

    Returns:
        `(callbacks, early stopper or None, whether a best checkpoint is
        kept)`.
    """
    path = lambda name: os.path.join(work_dir, name)     # noqa: E731
    backup_dir = path(run_folder.BACKUP_DIR)
    rows = run_folder.history_rows(path(run_folder.HISTORY_FILE),
                                   initial_epoch)
    callbacks, stopper = list(first_callbacks or ()), None
    es_config = monitor_config(training["early_stopping"], has_val,
                               "early_stopping", say)
    if es_config:
        stopper = ResumableEarlyStopping(
            monitor=es_config["monitor"], mode=es_config["mode"],
            patience=es_config["patience"],
            min_delta=es_config["min_delta"],
            restore_best_weights=es_config["restore_best_weights"],
            history=rows, verbose=1 if verbose else 0,
            weights_path=os.path.join(backup_dir,
                                      run_folder.EARLY_STOPPING_FILE))
        callbacks.append(stopper)
    ckpt_config = monitor_config(training["checkpoint"], has_val,
                                 "checkpoint", say)
    if ckpt_config:
        callbacks.append(AtomicModelCheckpoint(
            path(run_folder.BEST_FILE), monitor=ckpt_config["monitor"],
            mode=ckpt_config["mode"], save_best_only=True,
            initial_value_threshold=replay_best(
                rows, ckpt_config["monitor"], ckpt_config["mode"])))
    callbacks.append(keras.callbacks.CSVLogger(
        path(run_folder.HISTORY_FILE), append=True))
    if training["tensorboard"]:
        if _tensorboard_installed():
            callbacks.append(keras.callbacks.TensorBoard(
                path(run_folder.TENSORBOARD_DIR), write_graph=False))
        else:
            say("training.tensorboard: the tensorboard package is not "
                "installed (pip install tensorboard); no TensorBoard logs "
                "are written")
    callbacks.extend(extra_callbacks or ())
    if training["backup"]:
        # Kept until the whole command is done (`remove_backups`): a kill
        # during the evaluation, the scoreboard runs or the export resumes
        # there.
        callbacks.append(RunBackup(
            backup_dir, save_freq=training["backup"]["save_freq"],
            delete_checkpoint=False))
    return callbacks, stopper, bool(ckpt_config)
