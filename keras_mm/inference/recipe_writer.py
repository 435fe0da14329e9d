"""An inference (`keras_mm.inference.infer_dataset`) -> a recipe, and the
text that shows the user what was inferred.

`recipe_from_inference(inference, splits, name)` gives the recipe as plain
data: one input per file / text column (named after the column), one
`tabular` input holding every numeric and categorical column, a concat
fusion with a presence mask (a missing cell = an absent modality), and a
head from the label's values. Sizes are those the inference chose; the
training section fits small data sets (batch size and epochs from the
number of training examples).
"""

import math
import re

import yaml

# The builder's input-name pattern (keras_mm.builder.schema.NAME_PATTERN,
# checked again when the recipe is validated); not imported, so that
# `keras-mm --help` does not load TensorFlow.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

#: Training steps a first run aims at, and the epochs' bounds.
TARGET_STEPS = 200
MIN_EPOCHS, MAX_EPOCHS = 5, 20
TOWER_DIM = 32
FILE_MODALITIES = ("image", "audio", "video", "sensor")


def input_name(column, taken):
    """A model input name (letters, digits, `_`, starting with a letter)
    for a column, unique among `taken`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", column).strip("_") or "input"
    if not name[0].isalpha():
        name = f"x_{name}"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _input(column, info):
    modality = info["modality"]
    entry = {"modality": modality, "source": column}
    if modality == "image":
        entry["preprocess"] = {"size": info["size"],
                               "channels": info["channels"]}
    elif modality == "video":
        entry["preprocess"] = {"num_frames": info["frames"]["chosen"],
                               "size": info["size"],
                               "channels": info["channels"],
                               "source": info["source"]}
        entry["mask"] = True
    elif modality == "audio":
        entry["preprocess"] = {"sample_rate": info["sample_rate"],
                               "duration": info["seconds"]["chosen"],
                               "features": "log_mel"}
        entry["tower"] = {"frontend": None}
    elif modality == "sensor":
        entry["preprocess"] = {"channels": info["channels"],
                               "length": info["length"]["chosen"],
                               "source": info["source"]}
        entry["mask"] = True
    elif modality == "text":
        entry["preprocess"] = {"max_len": info["max_len"]}
    entry.setdefault("tower", {})["dim"] = TOWER_DIM
    return entry


def training_section(num_train, seed=0):
    """Batch size and epochs for `num_train` examples: about
    `TARGET_STEPS` steps, within `MIN_EPOCHS`..`MAX_EPOCHS` epochs."""
    batch = max(8, min(32, num_train // 8))
    steps = max(1, math.ceil(num_train / batch))
    epochs = max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(TARGET_STEPS /
                                                       steps)))
    # The optimizer and schedule are the toolkit's defaults.
    return {"epochs": epochs, "batch_size": batch, "seed": seed,
            "early_stopping": {"monitor": "val_loss", "patience": 5,
                               "restore_best_weights": True}}


def recipe_from_inference(inference, splits, name, allow_paths_outside=False,
                          seed=0):
    """The recipe (plain data) for an inference.

    Args:
        inference: `infer_dataset(...)`'s result.
        splits: `{split: manifest path}` as the recipe should name them.
        name: the recipe / run / export name.
        allow_paths_outside: set `data.allow_paths_outside` (the manifests
            name files outside their folder).
        seed: the training seed.
    """
    inputs, numeric, categorical = {}, [], []
    for column, info in inference["columns"].items():
        modality = info["modality"]
        if modality == "numeric":
            numeric.append(column)
        elif modality == "categorical":
            categorical.append(column)
        elif modality in FILE_MODALITIES + ("text",):
            inputs[input_name(column, inputs)] = _input(column, info)
    if numeric or categorical:
        preprocess = {}
        if numeric:
            preprocess["numeric"] = numeric
        if categorical:
            preprocess["categorical"] = categorical
        inputs[input_name("tabular", inputs)] = {
            "modality": "tabular", "preprocess": preprocess,
            "tower": {"dim": TOWER_DIM, "hidden_units": [TOWER_DIM]}}
    for entry in inputs.values():
        if entry.get("source") and NAME_PATTERN.match(entry["source"]) and \
                entry["source"] in inputs and inputs[entry["source"]] is entry:
            del entry["source"]
    label, head = inference["label"], inference["head"]
    head_name = input_name(label if NAME_PATTERN.match(label) else "label",
                           inputs)
    if head["type"] == "classification":
        head_spec = {"type": "classification",
                     "num_classes": head["num_classes"],
                     "class_names": head["class_names"], "source": label}
    else:
        head_spec = {"type": "regression", "source": label}
    data = {"format": "manifest", "splits": dict(splits),
            "bad_records": "error"}
    if allow_paths_outside:
        data["allow_paths_outside"] = True
    recipe = {"name": name, "data": data, "inputs": inputs}
    if len(inputs) > 1:
        recipe["fusion"] = {"type": "concat", "presence_mask": True}
    recipe["trunk"] = {"hidden_units": [64], "dropout": 0.1}
    recipe["heads"] = {head_name: head_spec}
    recipe["training"] = training_section(
        inference["splits"].get("train", inference["rows"]), seed)
    recipe["evaluation"] = {"splits": [s for s in ("val", "test")
                                       if s in splits]}
    recipe["export"] = {"name": name}
    return recipe


def _describe(column, info):
    modality = info["modality"]
    if modality == "image":
        sizes = info["sampled_sizes"]
        return (f"image {info['formats']}, {info['channels']} channel(s); "
                f"sampled {info['files_probed']} files: sizes "
                f"{sizes['smallest']}..{sizes['largest']} (median "
                f"{sizes['median']}) -> size {info['size']}")
    if modality == "video":
        frames = info["frames"]
        return (f"video ({info['source']}), frames {frames['min']}.."
                f"{frames['max']} (median {frames['median']}) -> num_frames "
                f"{frames['chosen']} ({frames['truncated']} of "
                f"{frames['of']} sampled clips longer), size {info['size']}")
    if modality == "audio":
        s = info["seconds"]
        return (f"audio WAV {info['sample_rate']} Hz, channels "
                f"{info['channels']}; {info['files_probed']} files: "
                f"{s['min']}..{s['max']} s (median {s['median']}) -> "
                f"duration {s['chosen']} s ({s['truncated']} of {s['of']} "
                "sampled clips cut)")
    if modality == "sensor":
        n = info["length"]
        return (f"sensor {info['source']} series {info['shape']}, T "
                f"{n['min']}..{n['max']} (median {n['median']}) -> length "
                f"{n['chosen']} ({n['truncated']} of {n['of']} sampled "
                "series truncated)")
    if modality == "text":
        t = info["tokens"]
        return (f"text, {t['min']}..{t['max']} words (median "
                f"{t['median']}) -> max_len {t['chosen']} "
                f"({t['truncated']} of {t['of']} training texts truncated)")
    if modality == "categorical":
        return f"categorical ({info['categories']} values) -> tabular"
    if modality == "numeric":
        return "numeric -> tabular"
    if modality == "split":
        return "split names (train/val/test), kept"
    return f"ignored: {info.get('reason')}"


def summary_lines(inference):
    """Human-readable lines: source, splits, each column, the label."""
    lines = [f"data: {inference['source']} ({inference['layout']}, "
             f"{inference['rows']} examples; splits " + ", ".join(
                 f"{s} {n}" for s, n in inference["splits"].items())
             + f"{' kept' if inference.get('kept_splits') else ''})"]
    for column, info in inference["columns"].items():
        extra = f", {info['empty_cells']} empty" if info.get(
            "empty_cells") else ""
        lines.append(f"  {column}: {_describe(column, info)}{extra}")
        for note in info.get("notes", ()):
            lines.append(f"    note: {note}")
    head = inference["head"]
    if head["type"] == "classification":
        kind = (f"classification, {head['num_classes']} classes "
                f"({', '.join(head['class_names'][:10])}"
                f"{', ...' if head['num_classes'] > 10 else ''})")
    else:
        kind = f"regression ({head['min']}..{head['max']})"
    lines.append(f"  {inference['label']}: label -> {kind}")
    if inference.get("skipped"):
        skipped = inference["skipped"]
        lines.append(f"  skipped {len(skipped)} file(s) of no readable kind, "
                     f"e.g. {skipped[0]}")
    return lines


def recipe_text(recipe, inference):
    """The recipe as YAML, headed by comments showing the inference."""
    header = ["# Written by `keras-mm init`: what was inferred from the data",
              "# (edit any value; `keras-mm data inspect` shows it again)."]
    header += [f"# {line}" for line in summary_lines(inference)]
    body = yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None,
                          width=80)
    return "\n".join(header) + "\n" + body
