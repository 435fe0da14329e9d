"""Evaluating trained models beyond their metrics: presence subsets,
robustness to missing and noisy modalities, attribution."""

from keras_mm.evaluation.presence_subsets import (subset_masks,
                                                  subset_outputs)

__all__ = ["subset_masks", "subset_outputs"]
