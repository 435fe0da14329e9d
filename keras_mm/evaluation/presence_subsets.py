"""A model's outputs with every subset of its modalities present.

A keras_mm model built with `fusion.presence_mask` takes a float32
`presence` input `[batch, M]` (column j = the j-th input of the recipe,
the fusion layer's `modalities` order). A modality marked absent contributes
nothing to the fused features, so the output with the subset `S` present is
the model evaluated with `presence * mask_S`; the towers' inputs are left as
they are. The robustness report (accuracy per subset) and the modality
Shapley values (`keras_mm.evaluation.shapley`) both read these outputs.

- `subset_masks(M)`: float32 `[2**M, M]`, row `s` = the bits of `s`
  (bit j set = modality j present); row 0 is "none present", the last row
  "all present";
- `subset_outputs(model, features, masks=None)`: `{output name: array
  [S, batch, ...]}`, all subsets of one batch in batched forward passes.
"""

import numpy as np

MAX_MODALITIES = 6


def presence_order(model):
    """The modality names in `presence` column order (the fusion layer's
    `modalities`); raises a ValueError when the model has no presence
    input."""
    names = [t.name.split(":")[0] for t in model.inputs]
    if "presence" not in names:
        raise ValueError(
            f"model {model.name!r} has no `presence` input: build it with "
            "`fusion: {presence_mask: true}` (the default with two or more "
            "inputs) to evaluate it with modalities removed")
    fusion = model.get_layer("fusion")
    return list(fusion.modalities)


def subset_masks(num_modalities):
    """Float32 `[2**M, M]`: row `s` has column j = bit j of `s`."""
    num = int(num_modalities)
    if not 1 <= num <= MAX_MODALITIES:
        raise ValueError(f"{num} modalities: subsets are enumerated for 1 "
                         f"to {MAX_MODALITIES} inputs ({2 ** MAX_MODALITIES} "
                         "subsets at most)")
    rows = np.arange(2 ** num)[:, None]
    return ((rows >> np.arange(num)[None, :]) & 1).astype("float32")


def subset_name(mask, modalities):
    """`"image+audio"` for a mask row; `"none"` when nothing is present."""
    names = [m for m, bit in zip(modalities, mask) if bit > 0]
    return "+".join(names) if names else "none"


def model_outputs(model, features):
    """`{output name: np.ndarray}` of one inference-mode call (a model with
    a single, unnamed output gets its output name as the key)."""
    outputs = model(features, training=False)
    if not isinstance(outputs, dict):
        outputs = {model.output_names[0]: outputs}
    return {k: np.asarray(v) for k, v in outputs.items()}


def subset_outputs(model, features, masks=None, max_rows=4096):
    """The model's outputs for one batch under every presence subset.

    Args:
        model: a keras_mm model with a `presence` input.
        features: one batch of model inputs (a dict of arrays / tensors
            keyed by model input name, `presence` included: an example's
            own absent modalities stay absent in every subset).
        masks: `[S, M]` 0/1 rows (default `subset_masks(M)`).
        max_rows: rows per forward pass (the batch is tiled `S` times and
            run in chunks of at most this many rows).

    Returns:
        `{output name: np.ndarray [S, batch, ...]}` (inference mode).
    """
    presence_order(model)
    features = {k: np.asarray(v) for k, v in features.items()}
    presence = features["presence"].astype("float32")
    batch, num = presence.shape
    masks = subset_masks(num) if masks is None else \
        np.asarray(masks, dtype="float32")
    if masks.ndim != 2 or masks.shape[1] != num:
        raise ValueError(f"masks has shape {masks.shape}; expected "
                         f"[subsets, {num}]")
    per_pass = max(1, int(max_rows) // max(batch, 1))
    collected = {}
    for start in range(0, len(masks), per_pass):
        chunk = masks[start:start + per_pass]
        tiled = {k: np.concatenate([v] * len(chunk), axis=0)
                 for k, v in features.items() if k != "presence"}
        tiled["presence"] = (presence[None, :, :] * chunk[:, None, :]
                             ).reshape(-1, num)
        for key, value in model_outputs(model, tiled).items():
            collected.setdefault(key, []).append(
                value.reshape((len(chunk), batch) + value.shape[1:]))
    return {k: np.concatenate(v, axis=0) for k, v in collected.items()}
