import json
import os

import keras
import numpy as np

_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "mape", "msle",
                    "crossentropy", "hinge", "divergence", "poisson")
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou",
                     "top_k", "r2", "score")


def resolve_mode(monitor, mode="auto"):
    """`"min"` or `"max"` for a monitored metric name (`mode` if not auto).

    Returns None when the direction cannot be told from the name.
    """
    if mode in ("min", "max"):
        return mode
    name = monitor.lower()
    if name.startswith("val_"):
        name = name[4:]
    if any(word in name for word in _LOWER_IS_BETTER):
        return "min"
    if any(word in name for word in _HIGHER_IS_BETTER):
        return "max"
    return None


def replay_best(rows, monitor, mode):
    """The best value of `monitor` in `rows` (`[(epoch, logs)]`), or None.

    Uses `keras.callbacks.ModelCheckpoint`'s rule (strict improvement, no
    `min_delta`): the `initial_value_threshold` of a resumed run.
    """
    best = None
    for _, logs in rows:
        value = logs.get(monitor)
        if value is None:
            continue
        if best is None or (value < best if mode == "min" else value > best):
            best = value
    return best


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` whose state survives a restart.

    `BackupAndRestore` brings back the weights, the optimizer and the epoch
    of a killed run, but a new `EarlyStopping` would forget the best value,
    the epochs waited and the best weights. This one rebuilds them at
    `on_train_begin` by replaying the finished epochs' logs (`history`,
    e.g. the rows of `history.csv` before the resumed epoch) through the
    same rule, and, with `restore_best_weights`, keeps the best weights in
    `weights_path` (a NumPy `.npz` of `model.get_weights()`, written at each
    improvement) to load them back. A resumed run therefore stops at the
    same epoch and restores the same weights as an uninterrupted one.

    Args:
        monitor, mode, min_delta, patience, baseline, restore_best_weights,
            start_from_epoch, verbose: as for `keras.callbacks.EarlyStopping`;
            `mode` must be `min` or `max` when the direction cannot be told
            from the metric name (see `resolve_mode`).
        history: `[(epoch, logs dict)]` of the epochs already run (empty for
            a fresh run).
        weights_path: `.npz` file for the best weights (needed to restore
            them after a restart; None keeps them in memory only).

    Example:

    >>> stop = ResumableEarlyStopping(monitor="val_loss", patience=3,
    ...                               restore_best_weights=True,
    ...                               history=[(0, {"val_loss": 0.9})],
    ...                               weights_path="runs/x/backup/es.npz")
    >>> stop.replay().best
    0.9
    """

    def __init__(self, monitor="val_loss", mode="auto", *, history=(),
                 weights_path=None, **kwargs):
        resolved = resolve_mode(monitor, mode)
        super().__init__(monitor=monitor, mode=resolved or mode, **kwargs)
        self.history = [(int(e), dict(logs)) for e, logs in history]
        self.weights_path = None if weights_path is None else \
            os.fspath(weights_path)

    # -- state ---------------------------------------------------------------

    def _reset(self):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0
        self.min_delta = abs(self.min_delta)
        self.monitor_op = None

    def replay(self):
        """Rebuilds `best`, `best_epoch`, `wait`, `stopped_epoch` from
        `history` (no model needed when the mode is min or max)."""
        self._reset()
        if not self.history:
            return self
        self._set_monitor_op()
        for epoch, logs in self.history:
            current = logs.get(self.monitor)
            if current is None or epoch < self.start_from_epoch:
                continue
            if self.best is None:
                self.best_epoch = epoch
            self.wait += 1
            if self._is_improvement(current, self.best):
                self.best = current
                self.best_epoch = epoch
                if self.baseline is None or self._is_improvement(
                        current, self.baseline):
                    self.wait = 0
                continue
            if self.wait >= self.patience and epoch > 0:
                self.stopped_epoch = epoch
        return self

    @property
    def stopped(self):
        """True when the replayed history already stopped the run."""
        return self.stopped_epoch > 0

    def _meta_path(self):
        return self.weights_path + ".json"

    def _load_best_weights(self):
        if not (self.restore_best_weights and self.weights_path and
                self.best is not None and os.path.exists(self._meta_path())):
            return
        with open(self._meta_path(), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("best_epoch") != self.best_epoch:
            return
        with np.load(self.weights_path) as data:
            self.best_weights = [data[f"arr_{i}"]
                                 for i in range(len(data.files))]

    def _save_best_weights(self, epoch):
        if not (self.restore_best_weights and self.weights_path and
                self.best_weights is not None):
            return
        folder = os.path.dirname(self.weights_path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        tmp = self.weights_path + ".tmp.npz"
        np.savez(tmp, *self.best_weights)
        os.replace(tmp, self.weights_path)
        with open(self._meta_path() + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"best_epoch": int(epoch)}, f)
        os.replace(self._meta_path() + ".tmp", self._meta_path())

    # -- callback ------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self.replay()
        self._load_best_weights()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.best_epoch == epoch:
            self._save_best_weights(epoch)

