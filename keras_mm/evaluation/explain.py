"""`explain_run`: which modality, and which part of it, drove a prediction.

For a finished run with a `presence` input (`fusion.presence_mask`, the
default with two or more inputs), on one split:

- **per modality**: exact Shapley values over the modalities
  (`keras_mm.evaluation.shapley`) from the model's outputs under all
  `2**M` presence subsets (`subset_outputs`, batched), for every example of
  the split; their mean per class;
- **within a modality**, for the first `examples` examples: integrated
  gradients (`integrated_gradients`, zero baseline = the blank input of an
  absent modality) on the preprocessed float input (image, audio
  spectrogram, sensor series, video, tabular numeric columns), per-token
  occlusion for text ids (`token_occlusion`; ids have no gradient and the
  text tower embeds them inside one layer);
- **inside the fusion layer**: what its `fusion_weights` returns (gates,
  weights, attention; `{}` for a layer without any).

The explained score of a head: classification, the probability of the class
predicted with every modality present (recorded as `predicted`); binary,
the probability; regression, the value (first unit).

Writes into the run folder `attribution.json`, `attribution_arrays.npz`
(the full within-modality maps), one PNG panel per explained example
(`attribution_example_<i>.png`) and `attribution_per_class.png`; heads other
than the first get `_<head>` in their file names.
"""

import os

import numpy as np

from keras_mm.evaluation.integrated_gradients import (DEFAULT_STEPS,
                                                      integrated_gradients,
                                                      token_occlusion)
from keras_mm.evaluation.presence_subsets import (presence_order,
                                                  subset_masks,
                                                  subset_outputs)

ATTRIBUTION_FILE = "attribution.json"
ARRAYS_FILE = "attribution_arrays.npz"
EXPLAINED_KINDS = ("classification", "binary", "regression")
GRADIENT_MODALITIES = ("image", "audio", "sensor", "video")


def _heads(spec, head):
    kinds = {name: entry["type"] for name, entry in spec["heads"].items()}
    if head is not None:
        if head not in kinds:
            raise ValueError(f"--head {head!r}: the model has the heads "
                             f"{', '.join(kinds)}")
        if kinds[head] not in EXPLAINED_KINDS:
            raise ValueError(f"--head {head!r} is a {kinds[head]} head; "
                             "explained head types: "
                             f"{', '.join(EXPLAINED_KINDS)}")
        return {head: kinds[head]}
    chosen = {n: k for n, k in kinds.items() if k in EXPLAINED_KINDS}
    if not chosen:
        raise ValueError(f"no head to explain: the heads are "
                         f"{kinds}; explained head types: "
                         f"{', '.join(EXPLAINED_KINDS)}")
    return chosen


def _class_names(entry, kind):
    if kind == "classification":
        return [str(n) for n in entry.get("class_names") or
                range(int(entry["num_classes"]))]
    if kind == "binary":
        return [str(n) for n in entry.get("class_names") or ("0", "1")]
    return None


def _scores(kind, outputs):
    """`[S, batch]` explained scores from `[S, batch, units]` outputs
    (`shapley.head_scores`; a multi-unit regression head: its first
    unit)."""
    from keras_mm.evaluation.shapley import head_scores

    scores = np.asarray(head_scores(kind, outputs))
    return scores[..., 0] if scores.ndim > 2 else scores


def _target_fn(kind, head, classes):
    """The differentiable score of `head`'s outputs for IG / occlusion."""
    import tensorflow as tf

    def target(outputs, rows):
        out = tf.cast(outputs[head], "float32")
        if kind == "classification":
            picked = tf.constant(np.asarray(classes)[rows], tf.int32)
            return tf.gather(out, picked, axis=1, batch_dims=1)
        return out[:, 0]
    return target


def _row_keys(pipe):
    """Manifest row indices of the examples in split order (bad rows that
    the bad-input check skips left out), or None for TFRecords."""
    if pipe.manifest is None or pipe.num_examples() is None:
        return None
    skipped = pipe.skipped_keys()
    return [i for i in range(pipe.num_examples()) if i not in skipped]


def _fusion_probe(model):
    """`(fusion layer, sub-model)` whose outputs are the fusion layer's
    inputs (towers' outputs, and their masks), or `(layer, None)` where
    the layer has no `fusion_weights`."""
    import keras

    fusion = model.get_layer("fusion")
    if getattr(fusion, "fusion_weights", None) is None:
        return fusion, None
    arguments = fusion._inbound_nodes[0].arguments
    outputs = {"features": arguments.args[0]}
    mask = arguments.kwargs.get("mask")
    if mask is not None:
        outputs["mask"] = mask
    return fusion, keras.Model(model.inputs, outputs,
                               name="fusion_inputs_probe")


def _fusion_internals(fusion, probe, features):
    if probe is None:
        return {}
    import tensorflow as tf

    fed = probe(features, training=False)
    presence = tf.constant(features["presence"], tf.float32)
    values = fusion.fusion_weights(fed["features"], presence=presence,
                                   mask=fed.get("mask"))
    return {k: np.asarray(v, "float32") for k, v in (values or {}).items()}


def _within(model, spec, preprocessors, features, kind, head, classes,
            steps):
    """`{modality: entry}` for one batch of explained examples, and the
    full maps `{modality: array}`."""
    target = _target_fn(kind, head, classes)
    summaries, maps = {}, {}
    for name, entry in spec["inputs"].items():
        modality = entry["modality"]
        if modality == "text":
            scores = token_occlusion(model, features, target, name)
            vocab = getattr(preprocessors.get(name), "vocab", None)
            summaries[name] = {"method": "occlusion", "pad_id": 0,
                               "ids": features[name].tolist(),
                               "scores": scores.tolist()}
            if vocab is not None:
                summaries[name]["tokens"] = [
                    [vocab[i] if 0 <= i < len(vocab) else "[UNK]"
                     for i in row] for row in features[name].tolist()]
            maps[name] = scores
            continue
        input_name = name if modality in GRADIENT_MODALITIES else (
            f"{name}_numeric" if modality == "tabular" and
            f"{name}_numeric" in features else None)
        if input_name is None:
            summaries[name] = {"method": None, "note": (
                f"no float input to attribute for {modality} input "
                f"{name!r} (tabular categorical ids are not attributed)")}
            continue
        attr, f_x, f_0 = integrated_gradients(
            model, features, target, names=[input_name], steps=steps,
            return_scores=True)
        attr = attr[input_name]
        maps[name] = attr
        flat = attr.reshape(len(attr), -1).sum(axis=1)
        summary = {"method": "integrated_gradients", "steps": int(steps),
                   "baseline": "zeros", "input": input_name,
                   "shape": list(attr.shape[1:]),
                   "sum": flat.tolist(),
                   "score_minus_baseline": (f_x - f_0).tolist()}
        if modality == "sensor":
            summary["per_time_step"] = attr.sum(axis=2).tolist()
            summary["per_channel"] = attr.sum(axis=1).tolist()
        elif modality == "tabular":
            summary["per_column"] = attr.tolist()
        else:
            summary["array"] = f"{ARRAYS_FILE}:<example>/{name}"
        summaries[name] = summary
    return summaries, maps


def _suffix(head, first):
    return "" if head == first else f"_{head}"


def explain_run(run_dir, examples=8, split="test", seed=0, head=None,
                steps=DEFAULT_STEPS, plots=True):
    """Attributions of a finished run's predictions; writes them into the
    run folder.

    Args:
        run_dir: the run folder (or the recipe trained into it).
        examples: the first `examples` examples of the split get
            within-modality maps, fusion internals and a PNG panel (the
            Shapley values cover the whole split).
        split: the recipe's split to explain.
        seed: Keras / NumPy seed set first (inference itself is
            deterministic; fixes anything random a custom layer draws).
        head: one head to explain (default: every classification, binary
            and regression head).
        steps: integrated-gradients trapezoid intervals.
        plots: write the PNG panels.

    Returns:
        The `attribution.json` content (first head at the top level; with
        several heads all of them under `"heads"`), plus `"path"` (the JSON
        file) and `"plots"` (the PNG files).

    Example:

    >>> report = explain_run("runs/demo", examples=4)   # doctest: +SKIP
    >>> report["examples"][0]["shapley"]                # doctest: +SKIP
    {'text': 0.31, 'sensor': 0.12}
    """
    import keras

    from keras_mm.builder import model_spec
    from keras_mm.evaluation.shapley import shapley_values
    from keras_mm.training import load_run, run_data
    from keras_mm.training.finished_run import model_input_names
    from keras_mm.training.run_artifacts import write_json
    from keras_mm.training.run_folder import find_run_dir

    examples = int(examples)
    if examples < 0:
        raise ValueError(f"--examples {examples}: give 0 or more")
    run_dir = find_run_dir(run_dir)
    keras.utils.set_random_seed(int(seed))
    recipe, model, preprocessors = load_run(run_dir)
    spec = model_spec(model)
    modalities = presence_order(model)
    heads = _heads(spec, head)
    masks = subset_masks(len(modalities))
    pipe = run_data.make_pipeline(recipe, split, preprocessors, spec,
                                  input_names=model_input_names(model))
    dataset = run_data.eval_dataset(pipe, recipe["training"]["batch_size"])

    rows = {h: {"label": [], "predicted": [], "full": [], "empty": [],
                "shapley": [], "class": []} for h in heads}
    kept = []       # feature batches of the first `examples` examples
    kept_count = 0
    for features, labels in dataset:
        features = {k: np.asarray(v) for k, v in features.items()}
        outputs = subset_outputs(model, features, masks)
        for h, kind in heads.items():
            out = np.asarray(outputs[h], "float64")
            scores = _scores(kind, out)
            phi = shapley_values(scores, masks)
            names = _class_names(spec["heads"][h], kind)
            full = out[-1]
            if kind == "classification":
                cls = full.argmax(axis=-1)
            elif kind == "binary":
                cls = (full[:, 0] > 0.5).astype(int)
            else:
                cls = None
            y = np.asarray(labels[h]) if labels is not None and \
                h in labels else None
            r = rows[h]
            r["full"].extend(scores[-1].tolist())
            r["empty"].extend(scores[0].tolist())
            r["shapley"].extend(phi.tolist())
            r["class"].extend(cls.tolist() if cls is not None
                              else [None] * len(full))
            if cls is None:
                r["predicted"].extend(full[:, 0].tolist())
            else:
                r["predicted"].extend(names[c] for c in cls)
            if y is None:
                r["label"].extend([None] * len(full))
            elif names is not None:
                ids = (y.reshape(-1) > 0.5).astype(int) if kind == "binary" \
                    else y.reshape(-1).astype(int)
                r["label"].extend(names[i] for i in ids)
            else:
                r["label"].extend(y.reshape(len(y), -1)[:, 0].tolist())
        if kept_count < examples:
            take = min(examples - kept_count, len(features["presence"]))
            kept.append({k: v[:take] for k, v in features.items()})
            kept_count += take
    total = len(next(iter(rows.values()))["full"])
    if total == 0:
        raise ValueError(f"split {split!r} of {run_dir} has no usable "
                         "example to explain")
    keys = _row_keys(pipe)
    if keys is not None and len(keys) != total:
        keys = None
    first = next(iter(heads))
    explained = {k: np.concatenate([b[k] for b in kept]) for k in
                 kept[0]} if kept else None
    fusion, probe = _fusion_probe(model)
    internals = _fusion_internals(fusion, probe, explained) \
        if explained is not None else {}

    arrays, reports, plots_written = {}, {}, []
    for h, kind in heads.items():
        r = rows[h]
        entries = []
        within, maps = ({}, {}) if explained is None else _within(
            model, spec, preprocessors, explained, kind, h,
            r["class"][:kept_count], steps)
        for i in range(kept_count):
            entry = {"index": i, "key": keys[i] if keys else i,
                     "label": r["label"][i], "predicted": r["predicted"][i],
                     "full": r["full"][i], "empty": r["empty"][i],
                     "shapley": dict(zip(modalities, r["shapley"][i])),
                     "presence": explained["presence"][i].tolist(),
                     "within": {m: _example_slice(s, i)
                                for m, s in within.items()},
                     "fusion": {k: v[i].tolist()
                                for k, v in internals.items()}}
            entries.append(entry)
            for m, value in maps.items():
                arrays[f"{h}/{i}/{m}"] = value[i]
        report = {"head": h, "head_type": kind, "split": split,
                  "modalities": modalities,
                  "score": _score_text(kind),
                  "fusion_type": type(fusion).__name__,
                  "num_examples": total, "examples": entries,
                  "efficiency_max_gap": float(np.max(np.abs(
                      np.sum(r["shapley"], axis=1) -
                      (np.asarray(r["full"]) - np.asarray(r["empty"]))))),
                  **_per_class(r, modalities, kind)}
        if probe is None:
            report["fusion_note"] = (f"{type(fusion).__name__} has no "
                                     "fusion_weights")
        if plots:
            from keras_mm.evaluation import attribution_plots

            plots_written += attribution_plots.write_plots(
                run_dir, report, explained, maps, spec, _suffix(h, first))
        reports[h] = report

    result = dict(reports[first])
    if len(reports) > 1:
        result["heads"] = reports
    path = os.path.join(run_dir, ATTRIBUTION_FILE)
    write_json(path, result)
    if arrays:
        np.savez_compressed(os.path.join(run_dir, ARRAYS_FILE), **arrays)
    return {**result, "path": path, "plots": plots_written}


def _example_slice(summary, i):
    """Example `i`'s part of a batch summary of `_within`."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, list) and key not in ("shape",):
            out[key] = value[i]
        elif key == "array":
            out[key] = value.replace("<example>", str(i))
        else:
            out[key] = value
    return out


def _score_text(kind):
    return {"classification": "probability of the class predicted with "
                              "every modality present",
            "binary": "probability of the positive class",
            "regression": "predicted value (first unit)"}[kind]


def _per_class(r, modalities, kind):
    """Mean Shapley values per true class (classification / binary heads
    with labels), else over all examples under "all"."""
    phi = np.asarray(r["shapley"])
    groups = {}
    if kind in ("classification", "binary") and None not in r["label"]:
        for label, row in zip(r["label"], phi):
            groups.setdefault(label, []).append(row)
        by = "label"
    else:
        groups["all"] = list(phi)
        by = "all examples"
    return {"per_class": {c: dict(zip(modalities, np.mean(rows, axis=0)
                                      .tolist()))
                          for c, rows in groups.items()},
            "per_class_counts": {c: len(rows) for c, rows in groups.items()},
            "per_class_by": by}
