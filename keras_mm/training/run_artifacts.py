"""What a training run leaves in `runs/<name>/`.

- `recipe.yaml`: the resolved recipe (after `--set` overrides);
- `metrics.json`: per split, per head;
- `history.csv`: one row per epoch (Keras `CSVLogger`);
- `learning_curves.png`: loss and metrics per epoch, train and validation;
- `confusion_<head>_<split>.png`: one per classification head and split.
"""

import csv
import json
import os

import numpy as np

from keras_mm.serving.atomic import atomic_write_text


def write_json(path, data):
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True)
                      + "\n")


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):     # CSVLogger writes "NA" for gaps
        return float("nan")


def read_history_csv(path):
    """Reads `history.csv` into `{column: [values]}`.

    Keras' `CSVLogger` adds `val_*` columns filled with `NA` when there is
    no validation data; such all-empty columns are left out, other gaps
    are NaN.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    history = {k: [_number(r[k]) for r in rows] for k in rows[0]}
    return {k: v for k, v in history.items()
            if not all(np.isnan(x) for x in v)}


def plot_learning_curves(history, path):
    """Plots each metric's train and `val_` curves; writes a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(k for k in history if not k.startswith("val_")
                   and k not in ("epoch", "learning_rate"))
    if not names:
        return None
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows),
                             squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        ax.plot(history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(history[f"val_{name}"], label="validation")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def confusion_matrix(y_true, y_pred, num_classes):
    """Counts `[true, predicted]`."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def plot_confusion_matrix(matrix, class_names, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    size = max(3.5, 0.45 * n + 1.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        top = matrix.max() or 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                        color="white" if matrix[i, j] > top / 2 else "black",
                        fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def run_dir(root, name):
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    return path
