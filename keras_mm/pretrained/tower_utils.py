"""What the keras-hub preset towers (text, image, audio, video) share:
their argument checks, loading the backbone, the serialized-backbone dtype,
the LoRA freeze and the `trainable` property that re-applies the
fine-tuning rules."""

import copy

import keras

from keras_mm.layers.utils import check_non_negative_int, check_positive_int
from keras_mm.pretrained.preset_loading import from_preset, keras_hub


def with_dtype(config, dtype):
    """A copy of a serialized Keras object with its `dtype` replaced."""
    config = copy.deepcopy(config)
    config["config"]["dtype"] = dtype
    return config


def load_backbone(owner, preset, backbone, dtype, model_class=None,
                  what="a keras-hub Backbone"):
    """The keras-hub model a preset tower wraps, under `dtype`: read from
    `preset` (`backbone=None`; offline errors from `from_preset`), built
    from a serialized config (a dict), or `backbone` itself, which must be
    a `model_class` (default `keras.Model`; `what` names it in the error).
    """
    if backbone is None:
        return from_preset(keras_hub().models.Backbone.from_preset, preset,
                           "backbone", owner, dtype=dtype)
    if isinstance(backbone, dict):
        return keras.saving.deserialize_keras_object(
            with_dtype(backbone, dtype))
    if not isinstance(backbone, model_class or keras.Model):
        raise ValueError(
            f"{owner}: backbone must be {what} or its serialized config (a "
            f"dict); got {type(backbone).__name__}")
    return backbone


def check_fine_tuning(owner, trainable_blocks, lora_rank):
    """`(trainable_blocks, lora_rank)`, each None or checked; not both."""
    if trainable_blocks is not None:
        trainable_blocks = check_non_negative_int(owner, "trainable_blocks",
                                                  trainable_blocks)
    lora_rank = check_positive_int(owner, "lora_rank", lora_rank,
                                   allow_none=True)
    if trainable_blocks is not None and lora_rank is not None:
        raise ValueError(
            f"{owner}: trainable_blocks={trainable_blocks} and lora_rank="
            f"{lora_rank} both set; choose one (LoRA trains only the "
            "adapters; trainable_blocks trains the last blocks whole)")
    return trainable_blocks, lora_rank


def check_source(owner, preset, backbone, kind="", backbone_class="Backbone"):
    """Refuses a tower given neither `preset` nor `backbone`."""
    if preset is None and backbone is None:
        raise ValueError(
            f"{owner}: give preset= (a keras-hub {kind}preset name or local "
            f"preset folder) or backbone= (a keras-hub {kind}"
            f"{backbone_class} or its serialized config); got neither")


def train_only_adapters(layers):
    """Of each LoRA-enabled layer in `layers`, only the adapters
    (`lora_kernel_a`, `lora_kernel_b`) train; its kernel and bias are
    frozen (keras-hub leaves the bias trainable)."""
    for layer in layers:
        layer.trainable = True
        adapters = (id(layer.lora_kernel_a), id(layer.lora_kernel_b))
        for variable in layer.weights:
            if id(variable) not in adapters:
                variable.trainable = False


def _get_trainable(layer):
    return keras.layers.Layer.trainable.fget(layer)


def _set_trainable(layer, value):
    keras.layers.Layer.trainable.fset(layer, value)
    layer._apply_trainability()


#: The `trainable` property of a tower whose setter re-applies its
#: `_apply_trainability()` (`trainable_blocks`, LoRA, unused layers), so
#: that `tower.trainable = True` after a frozen warm-up keeps those rules.
trainable_property = property(_get_trainable, _set_trainable,
                              doc="Keras' `trainable`; setting it re-applies "
                                  "the tower's fine-tuning rules.")


__all__ = ["check_fine_tuning", "check_source", "load_backbone",
           "train_only_adapters",
           "trainable_property", "with_dtype"]
