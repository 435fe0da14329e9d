"""The robustness report of a finished run: missing and noisy modalities.

`robustness_report(run_dir)` writes `robustness.json` and
`robustness_<head>_noise.png` / `robustness_<head>_subsets.png` into the
run folder. Per head, with the head's main metric (accuracy for
classification / binary / multilabel heads; mean squared error for
regression, where LOWER is better):

- `full`: every modality present;
- `subsets`: every subset of the modalities present (the model's
  `presence` input, `keras_mm.evaluation.presence_subsets`; up to 6
  inputs), keyed `"image+audio"`, ..., `"none"`;
- `removed`: each modality removed in turn (the others present);
- `noise`: per modality, the metric at noise levels 0 (clean) to `levels`
  (`keras_mm.evaluation.corruptions`), with MultiBench's summary numbers.

MultiBench (Liang et al. 2021, "MultiBench: Multiscale Benchmarks for
Multimodal Representation Learning", `eval_scripts/robustness.py`):

- relative robustness: the area under the metric-vs-noise curve, by the
  trapezoidal rule; MultiBench spaces its levels 0.1 apart, here level
  `k` sits at `k / levels` (the curve spans [0, 1]), so
  `sum((f[k] + f[k+1]) / 2) / levels`;
- effective robustness: `sum(f - (r + f[0] - r[0]))`, the curve `f`
  against a reference curve `r` shifted to start at the same clean value
  (MultiBench's reference is late fusion). Give `reference` (another
  run's `robustness.json` or run folder) for that; without it the
  reference is a flat curve (a model noise does not affect) and the
  number is `sum(f - f[0])`, minus the total degradation.
  MultiBench then max-min normalizes both over the methods of a table;
  the numbers here are the unnormalized ones.
"""

import json
import os

import numpy as np

ROBUSTNESS_FILE = "robustness.json"
_METRICS = {"classification": ("accuracy", True), "binary": ("accuracy", True),
            "multilabel": ("accuracy", True), "regression": ("mse", False)}


def head_metric(kind, labels, predictions):
    """The head's main metric from NumPy labels / predictions."""
    y, p = np.asarray(labels), np.asarray(predictions, np.float64)
    if kind == "classification":
        return float(np.mean(p.reshape(len(p), -1).argmax(-1)
                             == y.reshape(-1).astype(int)))
    if kind in ("binary", "multilabel"):
        return float(np.mean((p.reshape(len(p), -1) > 0.5)
                             == (y.reshape(len(y), -1) > 0.5)))
    if kind == "regression":
        return float(np.mean((p.reshape(len(p), -1)
                              - y.reshape(len(y), -1)) ** 2))
    raise ValueError(f"no main metric for a {kind!r} head")


def relative_robustness(curve):
    """Trapezoidal area under `curve` (levels 0..L at x = k / L)."""
    f = np.asarray(curve, np.float64)
    if len(f) < 2:
        return float(f[0]) if len(f) else float("nan")
    return float(np.sum((f[:-1] + f[1:]) / 2) / (len(f) - 1))


def effective_robustness(curve, reference=None):
    """`sum(f - (r + f[0] - r[0]))`; a flat reference when None."""
    f = np.asarray(curve, np.float64)
    r = np.full_like(f, f[0]) if reference is None else \
        np.asarray(reference, np.float64)
    if r.shape != f.shape:
        raise ValueError(f"reference curve has {len(r)} levels, the curve "
                         f"{len(f)}: evaluate both with the same levels")
    return float(np.sum(f - (r + f[0] - r[0])))


def _pass(model, dataset, heads, subsets=None):
    """`(labels, outputs, subset outputs)` over one pass of `dataset`; with
    `subsets`, the all-present outputs are its all-ones row when it has
    one (not a second forward pass)."""
    from keras_mm.evaluation.presence_subsets import (model_outputs,
                                                      subset_outputs)

    full_row = None
    if subsets is not None:
        rows = np.flatnonzero(np.all(np.asarray(subsets) > 0, axis=1))
        full_row = int(rows[0]) if len(rows) else None
    labels = {h: [] for h in heads}
    preds = {h: [] for h in heads}
    per_subset = {h: [] for h in heads}
    for features, batch_labels in dataset:
        sub = None if subsets is None else \
            subset_outputs(model, features, subsets)
        outputs = model_outputs(model, features) if full_row is None else \
            {h: sub[h][full_row] for h in heads}
        for h in heads:
            labels[h].append(np.asarray(batch_labels[h]))
            preds[h].append(outputs[h])
            if sub is not None:
                per_subset[h].append(sub[h])
    labels = {h: np.concatenate(v) for h, v in labels.items()}
    preds = {h: np.concatenate(v) for h, v in preds.items()}
    if subsets is not None:
        per_subset = {h: np.concatenate(v, axis=1)
                      for h, v in per_subset.items()}
    return labels, preds, per_subset


def _load_reference(reference):
    if reference is None or isinstance(reference, dict):
        return reference
    path = os.fspath(reference)
    if os.path.isdir(path):
        path = os.path.join(path, ROBUSTNESS_FILE)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def robustness_report(run_dir, split="test", levels=5, seed=0,
                      batch_size=None, reference=None):
    """Metrics of a finished run with modalities missing and noisy.

    Args:
        run_dir: the run folder (or the recipe trained into it).
        split: the split evaluated.
        levels: noise severity levels per modality (plus level 0, clean).
        seed: the corruptions' seed (same seed: the same noisy inputs for
            every model).
        batch_size: default the recipe's `training.batch_size`.
        reference: a reference run's `robustness.json` (path, run folder
            or loaded dict) for MultiBench's effective robustness.

    Returns:
        The report (also written to `<run_dir>/robustness.json`), with
        `path` and `plots`.

    Example:

    >>> report = robustness_report("runs/demo")        # doctest: +SKIP
    >>> report["heads"]["label"]["removed"]            # doctest: +SKIP
    {'text': 0.61, 'sensor': 0.45}
    """
    from keras_mm.builder import model_spec
    from keras_mm.errors import ConfigError
    from keras_mm.evaluation import corruptions, robustness_plots
    from keras_mm.evaluation.presence_subsets import (MAX_MODALITIES,
                                                      presence_order,
                                                      subset_masks,
                                                      subset_name)
    from keras_mm.training import run_data
    from keras_mm.training.finished_run import load_run, model_input_names
    from keras_mm.training.run_folder import find_run_dir

    run_dir = find_run_dir(run_dir)
    recipe, model, preprocessors = load_run(run_dir)
    spec = model_spec(model)
    heads = {h: e["type"] for h, e in spec["heads"].items()}
    names = model_input_names(model)
    batch_size = int(batch_size or recipe["training"]["batch_size"])
    inputs = list(preprocessors)
    notes = []
    masks = modalities = None
    if len(inputs) > 1:
        if "presence" not in names:
            raise ConfigError(
                "fusion.presence_mask",
                f"the model of {run_dir} has no `presence` input, so its "
                "modalities cannot be removed: train it with `fusion: "
                "{presence_mask: true}` (the default with two or more "
                "inputs)")
        modalities = presence_order(model)
        num = len(modalities)
        if num <= MAX_MODALITIES:
            masks = subset_masks(num)
        else:
            masks = 1.0 - np.eye(num, dtype="float32")
            notes.append(f"{num} modalities: more than {MAX_MODALITIES}, "
                         "so only `removed` (no `subsets`)")
    else:
        notes.append("one input: only the noise curves")
    pipe = run_data.make_pipeline(recipe, split, preprocessors, spec,
                                  input_names=names)

    def dataset(corrupt=None):
        return pipe.dataset(batch_size, training=False, shuffle=False,
                            corrupt=corrupt)

    labels, clean, per_subset = _pass(model, dataset(), heads, masks)
    reference = _load_reference(reference)
    out_heads = {}
    for head, kind in heads.items():
        metric, higher = _METRICS[kind]
        entry = {"type": kind, "metric": metric,
                 "higher_is_better": higher,
                 "full": head_metric(kind, labels[head], clean[head])}
        if masks is not None:
            scores = [head_metric(kind, labels[head], per_subset[head][s])
                      for s in range(len(masks))]
            if len(masks) == 2 ** len(modalities):
                entry["subsets"] = {subset_name(m, modalities): v
                                    for m, v in zip(masks, scores)}
                entry["removed"] = {
                    mod: entry["subsets"][subset_name(
                        [0.0 if i == j else 1.0
                         for i in range(len(modalities))], modalities)]
                    for j, mod in enumerate(modalities)}
            else:
                entry["removed"] = dict(zip(modalities, scores))
        entry["noise"] = {}
        out_heads[head] = entry
    skipped = {}
    for name in inputs:
        kind, why = corruptions.corruption_kind(preprocessors[name])
        if kind is None:
            skipped[name] = why
            continue
        curves = {h: [out_heads[h]["full"]] for h in heads}
        for level in range(1, int(levels) + 1):
            corrupt = corruptions.make_corrupt(preprocessors, name, level,
                                               levels, seed)
            y, p, _ = _pass(model, dataset(corrupt), heads)
            for h, kind_h in heads.items():
                curves[h].append(head_metric(kind_h, y[h], p[h]))
        for h in heads:
            ref = None
            if reference is not None:
                ref = (reference["heads"].get(h, {}).get("noise", {})
                       .get(name, {}).get("metric"))
            out_heads[h]["noise"][name] = {
                "kind": kind,
                "levels": list(range(int(levels) + 1)),
                "severity": [corruptions.severity(kind, k, levels)
                             for k in range(int(levels) + 1)],
                "metric": curves[h],
                "relative_robustness": relative_robustness(curves[h]),
                "effective_robustness": effective_robustness(curves[h], ref),
                "effective_reference": "reference run" if ref is not None
                else "flat (no reference run)"}
    report = {"run_dir": os.path.abspath(run_dir), "split": split,
              "seed": int(seed), "levels": int(levels),
              "num_examples": int(len(next(iter(labels.values())))),
              "modalities": modalities or inputs, "heads": out_heads,
              "skipped": skipped, "notes": notes,
              "definitions": {
                  "relative_robustness": "MultiBench (Liang et al. 2021): "
                  "trapezoidal area under the metric-vs-noise curve, "
                  "levels at k/levels in [0, 1]",
                  "effective_robustness": "MultiBench: sum(f - (r + f[0] - "
                  "r[0])), r = the reference run's curve (flat when none)",
                  "mse": "lower is better"}}
    plots = []
    for head, entry in out_heads.items():
        plots.extend(robustness_plots.plot_head(entry, head, run_dir))
    report["plots"] = plots
    path = os.path.join(run_dir, ROBUSTNESS_FILE)
    from keras_mm.serving.atomic import atomic_write_text
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    report["path"] = path
    return report


def format_table(report):
    """A short text table of a report (one block per head)."""
    lines = []
    for head, entry in report["heads"].items():
        better = "higher" if entry["higher_is_better"] else "lower"
        lines.append(f"head {head}: {entry['metric']} ({better} is better)"
                     f", split {report['split']}")
        lines.append(f"  full            {entry['full']:.4f}")
        for mod, value in entry.get("removed", {}).items():
            lines.append(f"  without {mod:<8s} {value:.4f}")
        for mod, noise in entry["noise"].items():
            curve = " ".join(f"{v:.3f}" for v in noise["metric"])
            lines.append(f"  noise {mod:<10s} {curve}  (relative "
                         f"{noise['relative_robustness']:.3f}, effective "
                         f"{noise['effective_robustness']:+.3f})")
    for name, why in report["skipped"].items():
        lines.append(f"  skipped {name}: {why}")
    return "\n".join(lines)
