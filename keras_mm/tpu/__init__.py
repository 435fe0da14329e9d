"""Ready for TPU before the TPU bill: `check_model` (XLA on CPU, one real
batch) and `check_recipe` (`keras-mm check RECIPE [--tpu]`)."""

from keras_mm.tpu.readiness import Finding, ReadinessReport, check_model

__all__ = ["Finding", "ReadinessReport", "check_model"]
