"""Did a run learn anything? `untrained_reason(history, metrics, spec)`.

A run whose loss went non-finite, or whose classification / binary heads
never beat the trivial baseline on any evaluated split, is not exported
unless the recipe says `export.allow_untrained: true`
(`learning_rate: 1e30` trains to chance and would otherwise be exported
without a word).

The baseline of a head on a split comes from the split's own labels (the
rows of its confusion matrix in `metrics.json`): the majority-class
accuracy, and the cross-entropy of always predicting the label
distribution (the prior). A head beats it on a split when its accuracy is
above the majority-class accuracy, or its loss below the prior's loss.

Regression and multilabel heads are compared with the best constant
prediction, from the split's label statistics (`metrics.json`'s
`baseline` entry of the head, `run_artifacts.label_baseline`): a
regression head beats it when its mean squared error is below the split's
label variance (predicting the split's own mean); a multilabel head when
its mean binary cross-entropy is below that of predicting each label's
frequency, or its per-label accuracy above each label's majority value.
"""

import logging
import math
import warnings

import numpy as np

log = logging.getLogger("keras_mm")

# Margins so that rounding never counts as learning.
ACCURACY_MARGIN = 1e-6
LOSS_MARGIN = 1e-3
# A regression head must be this much below the label variance.
MSE_MARGIN = 1e-3


def _non_finite(values):
    for i, value in enumerate(values):
        if not math.isfinite(float(value)):
            return i, float(value)
    return None


def prior_loss(counts):
    """Cross-entropy (nats) of predicting the label frequencies `counts`."""
    counts = np.asarray(counts, np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def head_baseline(matrix):
    """`(majority-class accuracy, prior loss, model accuracy)` of a
    confusion matrix `[true, predicted]`."""
    matrix = np.asarray(matrix, np.float64)
    rows = matrix.sum(axis=1)
    total = rows.sum()
    return (float(rows.max() / total), prior_loss(rows),
            float(np.trace(matrix) / total))


def _versus_majority(values):
    matrix = values.get("confusion_matrix")
    if not matrix or not np.asarray(matrix).sum():
        return None
    majority, prior, accuracy = head_baseline(matrix)
    loss = float(values.get("loss", float("nan")))
    return (f"accuracy {accuracy:.3f} vs {majority:.3f} for the majority "
            f"class, loss {loss:.4g} vs {prior:.4g} for the prior",
            accuracy > majority + ACCURACY_MARGIN or (
                math.isfinite(loss) and loss < prior - LOSS_MARGIN))


def _versus_mean(values):
    stats = values.get("baseline")
    if not stats or not stats.get("num_examples") or \
            not stats["baseline_mse"] > 0:
        return None                 # constant labels: nothing to beat
    mse, base = stats["mse"], stats["baseline_mse"]
    return (f"mean squared error {mse:.4g} vs {base:.4g} for predicting "
            "the mean",
            math.isfinite(mse) and mse < base * (1 - MSE_MARGIN))


def _versus_prior(values):
    stats = values.get("baseline")
    if not stats or not stats.get("num_examples") or \
            not stats["prior_bce"] > 0:
        return None                 # every label constant
    bce, prior = stats["bce"], stats["prior_bce"]
    accuracy, majority = stats["accuracy"], stats["majority_accuracy"]
    return (f"per-label accuracy {accuracy:.3f} vs {majority:.3f} for each "
            f"label's majority value, cross-entropy {bce:.4g} vs "
            f"{prior:.4g} for the label frequencies",
            accuracy > majority + ACCURACY_MARGIN or (
                math.isfinite(bce) and bce < prior - LOSS_MARGIN))


# head type -> values of one split -> None (nothing to compare) or
# (what was compared, beaten?)
_COMPARISONS = {"classification": _versus_majority,
                "binary": _versus_majority,
                "regression": _versus_mean,
                "multilabel": _versus_prior}


def untrained_reason(history, metrics, spec):
    """Why the run looks untrained (a sentence), or None when it learned.

    Args:
        history: `{column: [value per epoch]}` (`history.csv`).
        metrics: `{split: {"loss", "heads": {head: {...,
            "confusion_matrix" or "baseline"}}}}` (`metrics.json`).
        spec: the model spec (head types).
    """
    for column in ("loss", "val_loss"):
        bad = _non_finite(history.get(column, ()))
        if bad is not None:
            return (f"the {column.replace('_', ' ')} went non-finite "
                    f"({bad[1]}) at epoch {bad[0] + 1}")
    for split, entry in metrics.items():
        if not math.isfinite(float(entry.get("loss", 0.0))):
            return f"the {split} loss is {entry['loss']}"
    problems = []
    for head, head_spec in spec["heads"].items():
        kind = head_spec["type"]
        compare = _COMPARISONS.get(kind)
        if compare is None:
            continue
        seen, beaten = [], False
        for split, entry in metrics.items():
            result = compare(entry["heads"].get(head, {}))
            if result is None:
                continue
            text, won = result
            seen.append(f"{split}: {text}")
            beaten = beaten or won
        if seen and not beaten:
            problems.append(f"head {head!r} never beats the trivial "
                            f"baseline ({'; '.join(seen)})")
    return "; ".join(problems) or None


def untrained_message(who, reason):
    """The warning of a model that looks untrained (`who`: the run)."""
    return f"{who}: the model looks untrained: {reason}"


def export_refusal(message, kept, allow):
    """The ExportError text refusing to export it: `message`, what is
    `kept`, and how to `allow` the export anyway."""
    return (f"{message}. Not exported{kept}; check training.optimizer."
            f"learning_rate and the data{allow} to export it anyway")


def check_trained(run, result, export):
    """Warns when the run learned nothing (`baseline_check`); returns the
    message refusing the export (None when it may go ahead)."""
    reason = untrained_reason(run.history, result.metrics, run.spec)
    result.untrained = reason
    if reason is None:
        return None
    recipe = run.recipe
    message = untrained_message(recipe["name"], reason)
    warnings.warn(message, RuntimeWarning, stacklevel=4)
    log.warning(message)
    if not export or recipe["export"]["allow_untrained"]:
        return None
    again = " and run the same command again (it exports without " \
        "training again)" if run.training["backup"] else ""
    return export_refusal(
        message, f" (the run folder {run.run_dir} keeps the model and its "
        "metrics)", ", or set export.allow_untrained: true (--set "
        f"export.allow_untrained=true){again}")


__all__ = ["check_trained", "export_refusal", "head_baseline", "prior_loss",
           "untrained_message", "untrained_reason"]
