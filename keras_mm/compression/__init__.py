"""Smaller models from a trained one: quantized SavedModels, LiteRT files,
and a parity report for each.

- `quantize_model(model, "int8")`: a weight-quantized copy (Keras' own
  int8 Dense / EinsumDense / Embedding, plus int8 convolution kernels);
- `convert_litert(functions, mode, representative)`: a `.tflite` file of
  the model on its preprocessed inputs (no string ops), float32, float16,
  dynamic-range or full int8;
- `parity_report(...)`: size, output errors, top-1 agreement, the task
  metric and p50 latency of a compressed artefact against float32;
- `export_compressed(run_dir, ...)`: all of it for a finished run
  (`keras-mm export RUN --quantize int8 [--format litert]`), refused
  without a trace when the metric drops by more than
  `export.max_metric_drop`;
- `Distillation(teacher, heads, temperature, alpha)`: a student's loss
  mixed with a teacher's soft targets (the recipe's `distill:` section).
"""

from keras_mm.compression.distillation import Distillation
from keras_mm.compression.int8_kernel_conv import quantize_conv_kernels
from keras_mm.compression.quantize import quantize_model

__all__ = ["Distillation", "quantize_conv_kernels", "quantize_model"]
