"""`AtomicModelCheckpoint`: Keras' `ModelCheckpoint`, written atomically."""

import keras

from keras_mm.serving.atomic import atomic_save_model


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """A `keras.callbacks.ModelCheckpoint` whose file is written through a
    temporary file beside it and a rename (`atomic_save_model`).

    Keras writes `best.keras` in place: a full disk or a kill during the
    write leaves a truncated zip that later reads as "File not found".
    Here the previous checkpoint stays whole until the new one is complete,
    and a write error (`[Errno 28]`) names the checkpoint's path.

    Args: those of `keras.callbacks.ModelCheckpoint` (full-model saving:
    `save_weights_only` must stay False).

    Example:

    >>> checkpoint = AtomicModelCheckpoint(
    ...     "runs/x/best.keras", save_best_only=True)  # doctest: +SKIP
    """

    def __init__(self, filepath, **kwargs):
        if kwargs.get("save_weights_only"):
            raise ValueError("AtomicModelCheckpoint: save_weights_only=True "
                             "is not supported; use ModelCheckpoint")
        super().__init__(filepath, **kwargs)

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):
            atomic_save_model(self.model, filepath)
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: finished saving model to "
                      f"{filepath}", flush=True)
