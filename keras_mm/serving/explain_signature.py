"""The `explain` signature of an export: predictions and per-modality
Shapley values, from the same raw inputs as `serving_default`.

Added by `keras_mm.export(..., explain=True)` (recipe `export.explain:
true`) to models with a `presence` input. In-graph, per request:

1. the raw inputs are preprocessed once (`ServingFunctions.preprocess`, the
   same checks and code as `serving_default`);
2. the batch is tiled `2**M` times, the copy `s` with `presence * mask_s`
   (`keras_mm.evaluation.presence_subsets.subset_masks`: row 0 none
   present, the last row all present), and run through the model in one
   call (`batch * 2**M` rows; M is at most 6);
3. `keras_mm.evaluation.shapley.head_scores` and `shapley_values` turn the
   outputs into exact Shapley values.

Outputs: `serving_default`'s outputs (computed from the all-present copy),
and for each classification / binary / regression head:

- `<head>_shapley`: float32 `[batch, M]` (`[batch, units, M]` for a
  regression head with several units); column j = modality
  `presence_order[j]` (the export metadata's `explain.presence_order`);
- `<head>_full`, `<head>_empty`: float32 `[batch]` scores with every
  modality present / none present; the Shapley values of an example sum to
  `full - empty`.

The score: the probability of the class predicted with every modality
present (classification), the probability (binary), the value
(regression). A modality absent from the request itself gets 0.
"""

import numpy as np
import tensorflow as tf

from keras_mm.errors import ExportError
from keras_mm.evaluation.presence_subsets import MAX_MODALITIES, subset_masks
from keras_mm.evaluation.shapley import HEAD_KINDS, head_scores, \
    shapley_values

SIGNATURE = "explain"


class ExplainSignature:
    """Builds the `explain` endpoint of an export.

    Args:
        functions: the export's `ServingFunctions` (its model must have a
            `presence` input).

    Raises:
        ExportError: the model has no presence input, more than
            `MAX_MODALITIES` modalities, or no head with a Shapley score.

    Example:

    >>> functions = ServingFunctions(model, preprocessors)  # doctest: +SKIP
    >>> explainer = ExplainSignature(functions)             # doctest: +SKIP
    >>> archive.add_endpoint("explain", explainer.serve,
    ...     input_signature=[functions.raw_signature()])    # doctest: +SKIP
    """

    def __init__(self, functions):
        self.functions = functions
        if functions.presence_order is None:
            raise ExportError(
                "export.explain: the model has no `presence` input, so its "
                "modalities cannot be removed one by one; build it with "
                "`fusion: {presence_mask: true}` (fusion.presence_mask) or "
                "set export.explain: false")
        self.presence_order = list(functions.presence_order)
        num = len(self.presence_order)
        if num > MAX_MODALITIES:
            raise ExportError(
                f"export.explain: {num} modalities; the explain signature "
                f"enumerates all subsets of at most {MAX_MODALITIES}")
        self.masks = subset_masks(num)
        self.heads = {head: kind for head, (kind, _) in
                      functions.heads.items() if kind in HEAD_KINDS}
        if not self.heads:
            kinds = sorted({k for k, _ in functions.heads.values()})
            raise ExportError(
                f"export.explain: the model's heads are {kinds}; Shapley "
                f"values explain {', '.join(HEAD_KINDS)} heads only")

    def metadata(self):
        """The export metadata's `explain` record."""
        outputs = {}
        for head in self.heads:
            outputs[f"{head}_shapley"] = "float32 [batch, modalities]"
            outputs[f"{head}_full"] = "float32 [batch]"
            outputs[f"{head}_empty"] = "float32 [batch]"
        return {"signature": SIGNATURE,
                "presence_order": self.presence_order,
                "heads": dict(self.heads),
                "score": {"classification": "probability of the class "
                                            "predicted with all present",
                          "binary": "the probability",
                          "regression": "the value"},
                "outputs": outputs}

    def subset_outputs(self, inputs):
        """Model inputs (preprocessed, `presence` included) -> `{output
        name: [S, batch, ...]}` for every presence subset, in one model
        call."""
        masks = tf.constant(self.masks)
        count = int(self.masks.shape[0])
        presence = tf.cast(inputs["presence"], tf.float32)
        batch = tf.shape(presence)[0]
        tiled = {}
        for key, value in inputs.items():
            if key == "presence":
                continue
            rank = len(value.shape)
            tiled[key] = tf.tile(value, [count] + [1] * (rank - 1))
        tiled["presence"] = tf.reshape(
            presence[None, :, :] * masks[:, None, :],
            [-1, len(self.presence_order)])
        model = self.functions.model
        outputs = model(tiled, training=False)
        if not isinstance(outputs, dict):
            outputs = dict(zip(model.output_names, tf.nest.flatten(outputs)))
        result = {}
        for key, value in outputs.items():
            shape = tf.concat([[count, batch], tf.shape(value)[1:]], axis=0)
            result[key] = tf.reshape(value, shape)
        return result

    def explain_inputs(self, inputs):
        """Preprocessed model inputs -> the signature's outputs."""
        per_subset = self.subset_outputs(inputs)
        assert np.all(self.masks[-1] == 1) and np.all(self.masks[0] == 0)
        result = self.functions.postprocess(
            {k: v[-1] for k, v in per_subset.items()})
        for head, kind in self.heads.items():
            outputs = tf.cast(per_subset[head], tf.float32)
            scores = head_scores(kind, outputs, outputs[-1])
            result[f"{head}_shapley"] = tf.cast(
                shapley_values(scores, self.masks), tf.float32)
            result[f"{head}_full"] = scores[-1]
            result[f"{head}_empty"] = scores[0]
        return result

    def reference(self, inputs):
        """The Shapley outputs (`<head>_shapley`, `_full`, `_empty`) on
        preprocessed `inputs`, computed eagerly by the offline path
        (`presence_subsets.subset_outputs` and NumPy `shapley_values`):
        the export's golden values for the `explain` signature."""
        from keras_mm.evaluation.presence_subsets import subset_outputs

        per_subset = subset_outputs(
            self.functions.model, {k: np.asarray(v) for k, v in
                                   inputs.items()}, self.masks)
        result = {}
        for head, kind in self.heads.items():
            outputs = per_subset[head].astype("float32")
            scores = head_scores(kind, outputs, outputs[-1])
            result[f"{head}_shapley"] = shapley_values(
                scores, self.masks).astype("float32")
            result[f"{head}_full"] = scores[-1].astype("float32")
            result[f"{head}_empty"] = scores[0].astype("float32")
        return result

    def serve(self, raw):
        """Raw request dict (as `serving_default`) -> outputs."""
        return self.explain_inputs(self.functions.preprocess(raw))
