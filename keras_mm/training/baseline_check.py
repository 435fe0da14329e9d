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
Regression and multilabel heads are only checked for finite losses.
"""

import math

import numpy as np

# Margins so that rounding never counts as learning.
ACCURACY_MARGIN = 1e-6
LOSS_MARGIN = 1e-3


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


def untrained_reason(history, metrics, spec):
    """Why the run looks untrained (a sentence), or None when it learned.

    Args:
        history: `{column: [value per epoch]}` (`history.csv`).
        metrics: `{split: {"loss", "heads": {head: {...,
            "confusion_matrix"}}}}` (`metrics.json`).
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
        if head_spec["type"] not in ("classification", "binary"):
            continue
        seen, beaten = [], False
        for split, entry in metrics.items():
            values = entry["heads"].get(head, {})
            matrix = values.get("confusion_matrix")
            if not matrix or not np.asarray(matrix).sum():
                continue
            majority, prior, accuracy = head_baseline(matrix)
            loss = float(values.get("loss", float("nan")))
            seen.append(f"{split}: accuracy {accuracy:.3f} vs "
                        f"{majority:.3f} for the majority class, loss "
                        f"{loss:.4g} vs {prior:.4g} for the prior")
            if accuracy > majority + ACCURACY_MARGIN or (
                    math.isfinite(loss) and loss < prior - LOSS_MARGIN):
                beaten = True
        if seen and not beaten:
            problems.append(f"head {head!r} never beats the trivial "
                            f"baseline ({'; '.join(seen)})")
    return "; ".join(problems) or None


__all__ = ["head_baseline", "prior_loss", "untrained_reason"]
