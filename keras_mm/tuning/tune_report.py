"""A search's results: the table (`trials.csv`), the plot (`trials.png`)
and `best.yaml`."""

import copy
import csv
import io
import json
import math

import yaml

from keras_mm.serving.atomic import atomic_file, atomic_write_text

TABLE_FILE = "trials.csv"
PLOT_FILE = "trials.png"
BEST_FILE = "best.yaml"


def cell(value):
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 and value else \
            f"{value:.4f}"
    return "" if value is None else str(value)


def table_text(rows, keys, objective, extra):
    """Fixed-width text of the trial rows, best marked `*` and the
    recipe's own values `r`."""
    header = ["trial", ""] + list(keys) + [f"val {objective}"] + \
        [f"{split} {objective}" for split in extra] + ["seconds", "status"]
    lines = [header]
    for row in rows:
        mark = ("*" if row["best"] else "") + ("r" if row["recipe"] else "")
        lines.append([row["trial"], mark]
                     + [cell(row["values"].get(k)) for k in keys]
                     + [cell(row["score"])]
                     + [cell(row["splits"].get(s)) for s in extra]
                     + [cell(row["seconds"] and round(row["seconds"])),
                        row["status"].lower()])
    widths = [max(len(str(line[i])) for line in lines)
              for i in range(len(header))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
            for line in lines]
    text.append("* best (on val)" + ("   r the recipe's own values" if any(
        r["recipe"] for r in rows) else ""))
    return "\n".join(text)


def write_table(rows, keys, extra, path):
    fields = ["trial", "status", "best", "recipe"] + list(keys) + \
        ["val"] + list(extra) + ["seconds"]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({
            "trial": row["trial"], "status": row["status"],
            "best": int(row["best"]), "recipe": int(row["recipe"]),
            **{k: json.dumps(row["values"].get(k)) for k in keys},
            "val": row["score"], "seconds": row["seconds"],
            **{s: row["splits"].get(s) for s in extra}})
    atomic_write_text(path, buffer.getvalue())
    return path


def plot_trials(rows, space, objective, path):
    """One scatter panel per searched key: the val objective against the
    key's value (log axis for log_uniform, categories for choice); the
    best trial is a star, the recipe's own values a square."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["score"] is not None
              and math.isfinite(r["score"])]
    keys = list(space)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2),
                             squeeze=False)
    for ax, key in zip(axes[0], keys):
        entry = space[key]
        if entry["kind"] == "choice":
            labels = [str(v) for v in entry["values"]]
            position = {json.dumps(v): i for i, v in
                        enumerate(entry["values"])}
            xs = [position.get(json.dumps(r["values"].get(key)), -1)
                  for r in scored]
            ax.set_xticks(range(len(labels)), labels, rotation=30)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            xs = [r["values"].get(key) for r in scored]
            if entry["kind"] == "log_uniform":
                ax.set_xscale("log")
        for x, row in zip(xs, scored):
            marker = "*" if row["best"] else ("s" if row["recipe"] else "o")
            ax.scatter([x], [row["score"]], marker=marker,
                       s=140 if row["best"] else 36,
                       color="tab:red" if row["best"] else (
                           "tab:green" if row["recipe"] else "tab:blue"))
        ax.set_xlabel(key)
        ax.set_ylabel(f"val {objective}")
        ax.grid(alpha=0.3)
    fig.suptitle("trials (star: best, square: the recipe's values)")
    fig.tight_layout()
    with atomic_file(path) as tmp:      # keeps the .png suffix
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


def best_recipe(raw, values, data, evaluation, name, trial, score,
                objective, path):
    """`(text, recipe)`: the recipe `raw` (its YAML data) with the best
    trial's values, the search's data splits and evaluation, ready for
    `keras-mm train`; its header says where it came from."""
    from keras_mm.recipes import apply_overrides
    from keras_mm.tuning.search_space import overrides

    recipe = {k: copy.deepcopy(v) for k, v in raw.items() if k != "tune"}
    recipe, _ = apply_overrides(recipe, overrides(values))
    recipe["name"] = name
    if isinstance(recipe.get("export"), dict) and \
            recipe["export"].get("name") not in (None, name):
        recipe["export"] = dict(recipe["export"], name=name)
    recipe["data"] = data
    recipe["evaluation"] = evaluation
    header = [
        f"# The best trial ({trial}) of `keras-mm tune`: val {objective} "
        f"{score:.4f}.",
        "# The searched keys hold its values; data.splits are the "
        "search's (its",
        "# held-out val split, if it made one). Train it with the same "
        "seed:",
        f"#   keras-mm train {path}",
    ]
    body = yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)
    return "\n".join(header) + "\n" + body, recipe
