"""Does the trained model agree with itself in inference and training mode?

Batch normalization evaluates with its moving statistics. When those lag
behind the weights (Keras' default momentum 0.99 over a run of a few hundred
steps), the model is right in training mode and wrong in inference mode, and
so is every checkpoint, metric and export made from it, while the training
curves look fine (issue 12: 23% instead of 94% on MNIST digits).

`mode_check(model, dataset)` computes each head's metric on a batch or two
of validation data twice: in inference mode, and with every
`BatchNormalization` layer in training mode (batch statistics; dropout and
everything else still in inference mode). It warns, once, naming the towers
that hold batch norm, when the two disagree by more than `ACCURACY_GAP`
(accuracy of classification / binary / multilabel heads) or when a
regression head's mean squared error differs by more than a factor
`MSE_RATIO`.

`recalibrate_batch_norm(model, train_dataset)` replaces the moving
statistics by the average batch statistics of one pass over the training
data with the final weights.

The trainer (`run_mode_check`) recalibrates the checkpoint it evaluates
and exports (and saves it again), then runs the check; its figures go into
`run.json`'s `notes`.

Measured (issue 12's first try: 3,000 three-digits examples, 8 epochs,
batch 64, Adam 1e-3 constant; test accuracy of the best checkpoint in
inference / BN training mode): momentum 0.99, two conv blocks: MNIST
29.2% / 39.9%, photo 15.2% / 18.5% (validation accuracy 11-31% while the
training accuracy rose to 79%); momentum 0.9: MNIST 75.7% / 76.7%;
GroupNorm: MNIST 65% validation (11 points under batch norm); three
blocks, 0.9: MNIST 96.0% / 95.8%, photo 43.3% / 49.4%, recalibrated
50.8%; 0.5: photo 46.8% / 50.0%, recalibrated 50.4%. Chosen (the
defaults): three blocks, momentum 0.9, recalibration before evaluation:
MNIST 96.0%, photo 50.2% (tests/test_first_try.py, slow).

Example:

>>> report = mode_check(model, val_dataset)         # doctest: +SKIP
>>> report["heads"]["label"]                        # doctest: +SKIP
{'metric': 'accuracy', 'inference': 0.23, 'training_mode': 0.94, ...}
"""

import contextlib
import logging
import warnings

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger("keras_mm.training")

# A disagreement above this (a fraction: 0.05 = 5 points) is reported.
ACCURACY_GAP = 0.05
# Regression heads: reported when one mode's MSE is this many times the other's.
MSE_RATIO = 1.5
# Examples checked: `MAX_BATCHES` batches of at least `MIN_BATCH` examples
# (batch statistics of tiny batches are noise).
MAX_BATCHES = 2
MIN_BATCH = 32
# Batches of the training split that `recalibrate_batch_norm` reads.
RECALIBRATION_BATCHES = 200


def batch_norm_layers(model):
    """`{top-level layer name: [its trainable BatchNormalization layers]}`.

    The top-level layers of a keras_mm model are `<input>_tower`,
    `fusion`, `trunk` and the heads, so the keys name the towers. Frozen
    batch norms (`trainable=False`, e.g. in a frozen pretrained backbone)
    always normalize with their own moving statistics, which are left
    alone.
    """
    out = {}
    for layer in model.layers:
        found = [sub for sub in layer._flatten_layers(include_self=True)
                 if isinstance(sub, keras.layers.BatchNormalization)
                 and sub.trainable]
        if found:
            out[layer.name] = found
    return out


@contextlib.contextmanager
def batch_norm_training_mode(model, restore=True):
    """Runs every `BatchNormalization` layer of `model` in training mode.

    Inside the block, an (eager) call of the model normalizes with batch
    statistics while every other layer sees the `training` flag of the
    call. The moving statistics those calls update are restored on exit
    (unless `restore=False`), so the model leaves the block unchanged.
    """
    layers = [sub for subs in batch_norm_layers(model).values()
              for sub in subs]
    saved = [[v.numpy() for v in layer.non_trainable_variables]
             for layer in layers]
    for layer in layers:
        original = type(layer).call.__get__(layer)

        def call(inputs, training=None, mask=None, _original=original):
            return _original(inputs, training=True, mask=mask)

        # Set on the instance (bypassing Keras' attribute tracking):
        # `Layer.__call__` calls `self.call`.
        object.__setattr__(layer, "call", call)
    try:
        yield layers
    finally:
        for layer, values in zip(layers, saved):
            layer.__dict__.pop("call", None)
            if not restore:
                continue
            for variable, value in zip(layer.non_trainable_variables,
                                       values):
                variable.assign(value)


def recalibrate_batch_norm(model, dataset, max_batches=RECALIBRATION_BATCHES):
    """Sets every batch norm's moving statistics from the training data.

    One pass (at most `max_batches` batches) in inference mode, with batch
    norm in training mode: each layer's moving mean and variance become
    the average of its batch means and variances over the pass, computed
    with the final weights (the lag of the moving averages is gone).

    Returns:
        The number of batches used (0 when the model has no batch norm).
    """
    layers = [sub for subs in batch_norm_layers(model).values()
              for sub in subs]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        with batch_norm_training_mode(model, restore=False):
            for features, _ in dataset.take(max_batches):
                count += 1
                for layer in layers:       # a running average of batches
                    layer.momentum = 1.0 - 1.0 / count
                model(features, training=False)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return count


def _head_kinds(model, spec):
    if spec is not None:
        return {h: s.get("type", "classification")
                for h, s in spec["heads"].items()}
    kinds = {}
    for name, tensor in _named_outputs(model).items():
        kinds[name] = "classification" if tensor.shape[-1] > 1 else "binary"
    return kinds


def _named_outputs(model):
    outputs = model.outputs
    names = getattr(model, "output_names", None) or \
        [f"output_{i}" for i in range(len(outputs))]
    return dict(zip(names, outputs))


def _as_dict(outputs, labels, names):
    if isinstance(outputs, dict):
        return outputs, labels
    if isinstance(outputs, (list, tuple)):
        return dict(zip(names, outputs)), dict(zip(names, labels))
    return {names[0]: outputs}, {names[0]: labels}


def _score(kind, y, p):
    """(metric name, value) of one batch of one head."""
    y = np.asarray(y, np.float64)
    p = np.asarray(keras.ops.convert_to_numpy(p), np.float64)
    if kind == "classification":
        correct = p.argmax(axis=-1).reshape(-1) == y.reshape(-1)
        return "accuracy", float(correct.mean())
    if kind in ("binary", "multilabel"):
        correct = (p.reshape(-1) > 0.5) == (y.reshape(-1) > 0.5)
        return "accuracy", float(correct.mean())
    return "mse", float(np.mean((p.reshape(-1) - y.reshape(-1)) ** 2))


def _rebatch(dataset, batch_size, max_batches):
    if batch_size is None:
        for features, labels in dataset:
            batch_size = int(tf.shape(tf.nest.flatten(features)[0])[0])
            break
    batch_size = max(int(batch_size or MIN_BATCH), MIN_BATCH)
    return dataset.unbatch().batch(batch_size).take(max_batches), batch_size


def mode_check(model, dataset, spec=None, batch_size=None,
               gap=ACCURACY_GAP, warn=True, name=None,
               max_batches=MAX_BATCHES):
    """Compares inference mode with batch-norm training mode.

    Args:
        model: a trained model (a keras_mm model, or any model whose
            outputs are class probabilities / sigmoid scores).
        dataset: batches of `(features, labels)` of validation data.
        spec: the model spec (head types); None infers classification
            (`[B, C]` outputs) and binary (`[B, 1]`) heads.
        batch_size: the training batch size (at least `MIN_BATCH` is used);
            None keeps the dataset's.
        gap: the accuracy difference (a fraction) that counts as a
            disagreement.
        warn: warn (`warnings.warn` + `log.warning`) on a disagreement.
        name: the run name, for the message.
        max_batches: number of batches compared.

    Returns:
        None when the model holds no batch norm; else a dict with
        `batch_norm` (`{tower: [layer names]}`), `examples`, `batch_size`,
        `heads` (`{head: {metric, inference, training_mode}}`), `disagree`
        (the heads that disagree) and `message` (the warning, or None).
    """
    towers = batch_norm_layers(model)
    if not towers:
        return None
    kinds = _head_kinds(model, spec)
    names = list(kinds)
    check_ds, size = _rebatch(dataset, batch_size, max_batches)
    batches = list(check_ds)
    sums = {mode: {h: 0.0 for h in names} for mode in ("inference",
                                                         "training_mode")}
    metric_names, count = {}, 0
    for features, labels in batches:
        n = int(tf.shape(tf.nest.flatten(features)[0])[0])
        outputs = {"inference": model(features, training=False)}
        with batch_norm_training_mode(model):
            outputs["training_mode"] = model(features, training=False)
        for mode, out in outputs.items():
            out, lab = _as_dict(out, labels, names)
            for head in names:
                metric, value = _score(kinds[head], lab[head], out[head])
                metric_names[head] = metric
                sums[mode][head] += value * n
        count += n
    if count == 0:
        return None
    heads, disagree = {}, []
    for head in names:
        inf = sums["inference"][head] / count
        trn = sums["training_mode"][head] / count
        heads[head] = {"metric": metric_names[head], "inference": inf,
                       "training_mode": trn}
        if metric_names[head] == "accuracy":
            bad = abs(inf - trn) > gap
        else:
            lo, hi = sorted((inf, trn))
            bad = hi > MSE_RATIO * max(lo, 1e-12)
        if bad:
            disagree.append(head)
    report = {"batch_norm": {t: [layer.name for layer in layers]
                             for t, layers in towers.items()},
              "examples": count, "batch_size": size, "heads": heads,
              "disagree": disagree, "message": None}
    if disagree:
        figures = "; ".join(
            f"{h} {heads[h]['metric']} {heads[h]['inference']:.3f} in "
            f"inference mode vs {heads[h]['training_mode']:.3f} with batch "
            "norm in training mode" for h in disagree)
        who = f"{name}: " if name else ""
        report["message"] = (
            f"{who}the trained model disagrees with itself on {count} "
            f"validation examples: {figures}. The batch-norm moving "
            "statistics of " + ", ".join(sorted(towers)) + " do not match "
            "their weights, so the evaluation, the checkpoints and the "
            "export are worse than training suggests. Train longer, lower "
            "the towers' norm_momentum, or use normalization: group / layer "
            "in those towers")
        if warn:
            warnings.warn(report["message"], RuntimeWarning, stacklevel=2)
            log.warning(report["message"])
    return report


def run_recalibration(model, pipelines, batch_size, checkpoint=None):
    """The trainer's step before evaluation: `recalibrate_batch_norm` on
    the `train` split (no augmentation); saves `model` to `checkpoint`
    again when given. Returns the `run.json` note lines."""
    from keras_mm.training import run_data
    from keras_mm.serving.atomic import atomic_save_model

    if "train" not in pipelines or not batch_norm_layers(model):
        return []
    dataset = run_data.eval_dataset(pipelines["train"], batch_size)
    batches = recalibrate_batch_norm(model, dataset)
    if checkpoint is not None:
        atomic_save_model(model, checkpoint)
    return [f"batch-norm statistics recalibrated on {batches} train "
            f"batches of {batch_size}"]


def run_mode_check(model, pipelines, spec, batch_size, name=None):
    """The trainer's check after evaluation: `mode_check` on the `val`
    split (else `test`); returns the `run.json` note lines."""
    from keras_mm.training import run_data

    split = "val" if "val" in pipelines else \
        "test" if "test" in pipelines else None
    if split is None or not batch_norm_layers(model):
        return []
    dataset = run_data.eval_dataset(pipelines[split], batch_size)
    report = mode_check(model, dataset, spec, batch_size=batch_size,
                        name=name)
    if report is None:
        return []
    figures = ", ".join(
        f"{h} {r['metric']} {r['inference']:.4f} inference / "
        f"{r['training_mode']:.4f} batch-norm training mode"
        for h, r in report["heads"].items())
    note = (f"mode check on {report['examples']} {split} examples "
            f"(batch {report['batch_size']}): {figures}")
    notes = [note]
    if report["message"]:
        notes.append(report["message"])
    return notes
