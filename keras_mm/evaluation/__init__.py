"""Evaluating trained models beyond their metrics: presence subsets,
robustness to missing and noisy modalities, attribution."""

from keras_mm.evaluation.explain import explain_run
from keras_mm.evaluation.integrated_gradients import (
    integrated_gradients, token_occlusion)
from keras_mm.evaluation.presence_subsets import (subset_masks,
                                                  subset_outputs)
from keras_mm.evaluation.robustness import robustness_report

__all__ = ["explain_run", "integrated_gradients", "token_occlusion",
           "subset_masks", "subset_outputs", "robustness_report"]
