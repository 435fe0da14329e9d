"""Declarative model building: spec validation, `build_model`, `compile_model`.

See `keras_mm.builder.spec` for the spec format.
"""

from keras_mm.builder.model_builder import (build_model, build_unimodal_spec,
                                            compile_model, model_spec)
from keras_mm.builder.multimodal_model import MultimodalModel
from keras_mm.builder.spec import (complete_spec, normalize_spec,
                                   unimodal_spec)

__all__ = ["MultimodalModel", "build_model", "build_unimodal_spec",
           "compile_model", "complete_spec", "model_spec", "normalize_spec",
           "unimodal_spec"]
