"""A distributed training loop with `model.fit`'s callbacks and outputs.

Keras 3.15's `model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585). `fit_distributed` runs the model's own
`train_step` / `test_step` through `strategy.run`, so losses, loss scaling,
metrics and optimizer updates are exactly those of `fit`; it drives the
same `keras.callbacks` (history, progress bar, checkpoints, early stopping,
backup-and-restore, TensorBoard, CSV logs) and returns a `History`.
"""

import keras
import tensorflow as tf


def _distribute(strategy, dataset):
    if isinstance(dataset, tf.distribute.DistributedDataset) or \
            hasattr(dataset, "_strategy"):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(
        dataset.with_options(options))


def _reduce(strategy, outputs):
    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in outputs.items()}


def fit_distributed(model, x, *, epochs=1, validation_data=None,
                    callbacks=None, strategy=None, initial_epoch=0,
                    steps_per_epoch=None, verbose="auto"):
    """Trains a compiled model under `strategy` like `model.fit`.

    Args:
        model: a compiled Keras model whose variables were created under
            `strategy.scope()`.
        x: a `tf.data.Dataset` of `(features, labels)` batches (global batch
            size), or a distributed dataset.
        epochs, initial_epoch, steps_per_epoch: as in `model.fit` (with
            `steps_per_epoch`, one iterator of `x` runs across epochs).
        validation_data: optional dataset evaluated at each epoch end.
        callbacks: list of `keras.callbacks.Callback`.
        strategy: default `model.distribute_strategy`.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.

    Returns:
        A `keras.callbacks.History`.
    """
    strategy = strategy or model.distribute_strategy
    if verbose == "auto":
        verbose = 1
    if isinstance(x, tf.data.Dataset):
        # Create the optimizer, loss and metric variables now, in the
        # strategy's scope, from the batch signature (as `fit` does): created
        # lazily inside the distributed step they fail under
        # MirroredStrategy ("You must feed a value for placeholder ...").
        with strategy.scope():
            model._symbolic_build(data_batch=x.element_spec)
    train = _distribute(strategy, x)
    val = _distribute(strategy, validation_data) \
        if validation_data is not None else None

    @tf.function
    def train_step(batch):
        return _reduce(strategy, strategy.run(model.train_step,
                                              args=(batch,)))

    @tf.function
    def test_step(batch):
        return _reduce(strategy, strategy.run(model.test_step,
                                              args=(batch,)))

    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    model._initial_epoch = initial_epoch
    callback_list.on_train_begin()
    initial_epoch = model._initial_epoch or initial_epoch
    logs = {}
    iterator = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        step = 0
        # Like `fit`: with `steps_per_epoch` one iterator runs across epochs
        # (a repeated or epoch-keyed dataset); without it, one pass each.
        if iterator is None or steps_per_epoch is None:
            iterator = iter(train)
        while steps_per_epoch is None or step < steps_per_epoch:
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = None
                break
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_step(batch).items()}
            callback_list.on_train_batch_end(step, logs)
            step += 1
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        if val is not None:
            model.reset_metrics()
            callback_list.on_test_begin()
            val_logs = {}
            for i, batch in enumerate(val):
                callback_list.on_test_batch_begin(i)
                val_logs = {k: float(v)
                            for k, v in test_step(batch).items()}
                callback_list.on_test_batch_end(i, val_logs)
            callback_list.on_test_end(val_logs)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
