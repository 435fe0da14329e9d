"""What a training run leaves in `runs/<name>/`.

- `recipe.yaml`: the resolved recipe (after `--set` overrides);
- `metrics.json`: per split, per head;
- `history.csv`: one row per epoch (Keras `CSVLogger`);
- `learning_curves.png`: loss and metrics per epoch, train and validation;
- `confusion_<head>_<split>.png`: one per classification or binary head
  and split;
- `scoreboard.json`: the fused model and each single-modality model per
  split (`evaluation.compare_unimodal`).

Also the pieces of `metrics.json`: `split_metrics` (Keras `evaluate`
results per head) and `confusions` (confusion matrices of a model on a
data set).
"""

import csv
import json
import os

import keras
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


def confusion_heads(spec):
    """`{head: (kind, class names)}` of classification and binary heads."""
    out = {}
    for head, entry in spec["heads"].items():
        if entry["type"] == "classification":
            names = entry.get("class_names") or [
                str(i) for i in range(int(entry["num_classes"]))]
            out[head] = ("classification", [str(n) for n in names])
        elif entry["type"] == "binary":
            names = entry.get("class_names") or ["0", "1"]
            out[head] = ("binary", [str(n) for n in names])
    return out


def baseline_heads(spec):
    """`{head: kind}` of the regression and multilabel heads, whose trivial
    baselines come from label statistics (`head_outputs`)."""
    return {head: entry["type"] for head, entry in spec["heads"].items()
            if entry["type"] in ("regression", "multilabel")}


def _binary_entropy(p):
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def label_baseline(kind, labels, predictions):
    """The model against the best constant prediction on one split.

    Args:
        kind: "regression" or "multilabel".
        labels, predictions: `[examples, units]` arrays.

    Returns:
        regression: `{"mse", "baseline_mse", "num_examples"}`: the model's
        mean squared error and the split's label variance (the MSE of
        predicting the split's own mean, the best a constant can do);
        multilabel: `{"bce", "prior_bce", "accuracy", "majority_accuracy",
        "num_examples"}`: the model's mean binary cross-entropy and
        per-label accuracy, against predicting each label's frequency (the
        prior) and each label's majority value.
    """
    y = np.asarray(labels, np.float64).reshape(len(labels), -1)
    p = np.asarray(predictions, np.float64).reshape(len(predictions), -1)
    out = {"num_examples": int(len(y))}
    if kind == "regression":
        out["mse"] = float(np.mean((p - y) ** 2))
        out["baseline_mse"] = float(np.mean(y.var(axis=0)))
        return out
    q = np.clip(p, 1e-7, 1 - 1e-7)
    freq = y.mean(axis=0)
    out["bce"] = float(np.mean(-(y * np.log(q) + (1 - y) * np.log(1 - q))))
    out["prior_bce"] = float(np.mean(_binary_entropy(freq)))
    out["accuracy"] = float(np.mean((p > 0.5) == (y > 0.5)))
    out["majority_accuracy"] = float(np.mean(np.maximum(freq, 1 - freq)))
    return out


def head_outputs(model, dataset, spec):
    """One pass of `model` over `dataset` (batches of `(features,
    labels)`): `(confusions, baselines)`.

    `confusions` is `{head: (matrix, class names)}` for the
    classification and binary heads; `baselines` is `{head:
    label_baseline(...)}` for the regression and multilabel heads.
    """
    heads = confusion_heads(spec)
    others = baseline_heads(spec)
    if not heads and not others:
        return {}, {}
    truth = {h: [] for h in list(heads) + list(others)}
    guess = {h: [] for h in truth}
    for features, labels in dataset:
        outputs = model(features, training=False)
        for head in truth:
            y = np.asarray(labels[head])
            p = np.asarray(keras.ops.convert_to_numpy(outputs[head]),
                           np.float32)
            kind = heads[head][0] if head in heads else others[head]
            if kind == "classification":
                truth[head].append(y.reshape(-1).astype(int))
                guess[head].append(p.argmax(axis=-1).reshape(-1))
            elif kind == "binary":
                truth[head].append((y.reshape(-1) > 0.5).astype(int))
                guess[head].append((p.reshape(-1) > 0.5).astype(int))
            else:
                truth[head].append(y.reshape(len(y), -1))
                guess[head].append(p.reshape(len(p), -1))
    matrices, baselines = {}, {}
    for head in truth:
        if not truth[head]:
            continue
        y, p = np.concatenate(truth[head]), np.concatenate(guess[head])
        if head in heads:
            names = heads[head][1]
            matrices[head] = (confusion_matrix(y, p, len(names)), names)
        else:
            baselines[head] = label_baseline(others[head], y, p)
    return matrices, baselines


def confusions(model, dataset, spec):
    """`{head: (matrix, class names)}` of `model` on `dataset` (batches of
    `(features, labels)`) for the classification and binary heads."""
    return head_outputs(model, dataset, spec)[0]


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


# -- metrics.json and the scoreboard ------------------------------------------


def split_metrics(results, heads):
    """Keras `evaluate` results -> `{"loss", "heads": {head: {metric}}}`."""
    out = {"loss": float(results.get("loss", float("nan"))),
           "heads": {h: {} for h in heads}}
    single = len(heads) == 1
    for key, value in results.items():
        if key == "loss":
            continue
        for head in sorted(heads, key=len, reverse=True):
            if key.startswith(head + "_"):
                out["heads"][head][key[len(head) + 1:]] = float(value)
                break
        else:
            if single:
                out["heads"][heads[0]][key] = float(value)
            else:
                out.setdefault("other", {})[key] = float(value)
    if single and "loss" not in out["heads"][heads[0]]:
        out["heads"][heads[0]]["loss"] = out["loss"]
    return out


def scoreboard_rows(metrics, label="fused"):
    """Rows `{"model", "split", "loss", "<head>_<metric>": value}`."""
    rows = []
    for split, entry in metrics.items():
        row = {"model": label, "split": split, "loss": entry["loss"]}
        for head, values in entry["heads"].items():
            for name, value in values.items():
                if name in ("loss", "confusion_matrix", "baseline",
                            "retrieval"):
                    continue
                row[f"{head}_{name}"] = value
        rows.append(row)
    return rows


def format_scoreboard(rows):
    """The scoreboard as a plain-text table."""
    if not rows:
        return ""
    columns = ["model", "split", "loss"]
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    table = [columns] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table)
              for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def publish_scoreboard(rows, path, verbose):
    """Writes the scoreboard rows to `path` (scoreboard.json) and prints
    their table when `verbose` (nothing without rows)."""
    if not rows:
        return
    write_json(path, rows)
    if verbose:
        print("\n" + format_scoreboard(rows) + "\n", flush=True)
