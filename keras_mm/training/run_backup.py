import glob
import json
import os

import keras
import numpy as np

METADATA_FILE = "training_metadata.json"
_SEED_STATE = "seed_generator_state"


def _atomic_json(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_backup_metadata(backup_dir):
    """The metadata of the backup in `backup_dir`, or None."""
    path = os.path.join(os.fspath(backup_dir), METADATA_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class RunBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that makes a resumed run exact.

    On top of Keras' backup (model and optimizer weights, epoch) it
    - keeps the state of every `keras.random.SeedGenerator` of the model
      (dropout masks and other in-model randomness), which `save_weights`
      leaves out: without it a resumed run draws other dropout masks;
    - writes each backup atomically: the weights go to a new file
      (`weights-<epoch>-<batch>.weights.h5`), then the metadata naming
      that file replaces the old one in one `os.replace`; a kill at any
      moment leaves the previous complete backup (Keras' fixed file names
      leave a half-written one).

    The metadata (`training_metadata.json`) holds `epoch` (the epoch to
    start at), `batch`, `weights` (file name) and `seed_generators` (the
    states in `model.variables` order).

    Args:
        backup_dir: folder of the backup (used by nothing else).
        save_freq: `"epoch"` or a number of batches (as in Keras).
        delete_checkpoint: remove the backup when training ends.

    Example:

    >>> backup = RunBackup("runs/demo/backup")
    >>> model.fit(ds, epochs=10, callbacks=[backup])   # doctest: +SKIP
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(os.fspath(backup_dir), save_freq=save_freq,
                         double_checkpoint=False,
                         delete_checkpoint=delete_checkpoint)

    def _seed_variables(self):
        return [v for v in self.model.variables
                if v.path.endswith(_SEED_STATE)]

    def _load_model(self):
        if not self.model.built:
            raise ValueError("RunBackup: build the model before fit()")
        metadata = read_backup_metadata(self.backup_dir)
        if metadata is None:
            return
        weights = os.path.join(self.backup_dir,
                               metadata.get("weights", "latest.weights.h5"))
        if self.model.optimizer is not None and \
                not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        states = metadata.get("seed_generators")
        variables = self._seed_variables()
        if states is not None:
            if len(states) != len(variables):
                raise ValueError(
                    f"the backup in {self.backup_dir} holds {len(states)} "
                    f"random-seed states but the model has {len(variables)}"
                    "; it comes from another model - delete the folder to "
                    "start over")
            for variable, state in zip(variables, states):
                variable.assign(np.asarray(state, dtype=variable.dtype))
        self.model._initial_epoch = int(metadata["epoch"])

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = (f"weights-{self._current_epoch}-{self._last_batch_seen}"
                ".weights.h5")
        path = os.path.join(self.backup_dir, name)
        self.model.save_weights(path, overwrite=True)
        _atomic_json(os.path.join(self.backup_dir, METADATA_FILE), {
            "epoch": int(self._current_epoch),
            "batch": int(self._last_batch_seen),
            "weights": name,
            "seed_generators": [
                np.asarray(keras.ops.convert_to_numpy(v)).tolist()
                for v in self._seed_variables()],
        })
        for old in glob.glob(os.path.join(self.backup_dir,
                                          "weights-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)
