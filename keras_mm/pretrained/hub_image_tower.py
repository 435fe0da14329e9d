"""`HubImageTower`: a TF-Hub image feature-vector SavedModel as a keras_mm
tower."""

import keras
from keras import ops

from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_positive_int)
from keras_mm.pretrained import hub_loading
from keras_mm.pretrained.hub_text_tower import check_whole_module
from keras_mm.registry import PRETRAINED_TOWERS

OUTPUTS = ("vector",)


@keras.saving.register_keras_serializable(package="keras_mm")
@PRETRAINED_TOWERS.register("image_hub")
class HubImageTower(keras.layers.Layer):
    """Image tower over a TF-Hub image feature-vector SavedModel.

    The module follows TF-Hub's image convention: callable on float32
    `[B, H, W, 3]` RGB images with values in **[0, 1]**, it returns the
    feature vectors `[B, D]` (a dict output uses its `"default"` entry).
    So the image preprocessor must give RGB in [0, 1] at the module's
    size: `ImagePreprocessor(name, size=(H, W), channels=3)` with its
    default `scale=1/255` and no `mean` / `std` (a module with a fixed
    input size, e.g. 224x224, refuses other sizes at build time).

    The module is loaded with `tf.saved_model.load`; its variables become
    this layer's weights (the same variables, not copies): they train when
    the layer is trainable, are saved in `.keras` files and go into the
    exported SavedModel. The module gets `training=True` only when the
    layer is trainable and called in training (its batch norm then updates
    its statistics), as with TF-Hub's `hub.KerasLayer`.

    `dim=None` keeps the module's width D; an int adds a Dense projection
    (after `dropout`).

    Masking: none (an absent image is all zeros and the fusion layers
    ignore it through the presence mask).

    Fine-tuning: `trainable` (the Keras layer argument) trains the whole
    module or freezes it (its variables then stay bitwise unchanged);
    `trainable_blocks` and `lora_rank` are accepted only as `None` (a
    SavedModel has no blocks or dense layers to reach; a keras-hub preset
    tower has both). Every variable path starts with `<tower name>/`
    (per-tower learning-rate multipliers match on it).

    Saving: as `HubTextTower`: the `.keras` file holds the handle and the
    fine-tuned weights (the module is loaded from its handle again on
    load); the exported SavedModel needs no handle.

    Args:
        handle: the module: a TF-Hub URL (downloaded once into TF-Hub's
            cache; offline, a one-line error says how to use a local copy)
            or a local SavedModel folder.
        output: `"vector"` (the only output of a feature-vector module).
        dim: output width; `None` = the module's width D.
        dropout: dropout rate on the feature vectors.
        trainable_blocks: must be `None`.
        lora_rank: must be `None`.
        **kwargs: Keras layer arguments (`trainable`, `name`, `dtype`).

    Call arguments:
        inputs: float32 `[B, H, W, 3]` in [0, 1].
        training: Python bool.
        mask: ignored.

    Example:

    >>> tower = HubImageTower("/models/efficientnet_v2_b0_feature_vector",
    ...                       dim=64, trainable=False)  # doctest: +SKIP
    >>> tower(tf.zeros([2, 224, 224, 3])).shape  # doctest: +SKIP
    TensorShape([2, 64])
    """

    input_dtype = "float32"

    def __init__(self, handle, output="vector", dim=None, dropout=0.0,
                 trainable_blocks=None, lora_rank=None, **kwargs):
        super().__init__(**kwargs)
        owner = "HubImageTower"
        self.handle = hub_loading.check_handle(handle, owner)
        self.output_mode = check_choice(owner, "output", output, OUTPUTS)
        self.dim = check_positive_int(owner, "dim", dim, allow_none=True)
        self.dropout = check_fraction(owner, "dropout", dropout)
        check_whole_module(owner, trainable_blocks, lora_rank)
        self.trainable_blocks = trainable_blocks
        self.lora_rank = lora_rank

        module, _ = hub_loading.load(self.handle, owner)
        self._module = module
        self._fn = hub_loading.module_function(module, owner, self.handle)
        self.image_size = self._input_size(owner)
        self.feature_size = self._feature_width(owner)
        # Under the tower's own name scope, so that a per-tower
        # learning-rate multiplier finds the module's variables by path.
        with keras.name_scope(self.name, caller=self):
            self.module_weights = hub_loading.wrap_variables(
                self._fn.variables())
        if not self.trainable:   # as Layer._track_variable does it
            for variable in self.module_weights:
                variable.trainable = False

    def _input_size(self, owner):
        """(H, W) the module requires (None where it takes any)."""
        spec = self._fn.input_signature()
        if isinstance(spec, dict) and len(spec) == 1:
            spec = next(iter(spec.values()))
        shape = getattr(spec, "shape", None)
        dtype = getattr(getattr(spec, "dtype", None), "name", None)
        if shape is None or shape.rank != 4 or dtype != "float32":
            raise ValueError(
                f"{owner}: handle {self.handle!r} is not a TF-Hub image "
                f"feature-vector module: it takes {spec}, not float32 "
                "images [B, H, W, 3]")
        if shape[-1] not in (None, 3):
            raise ValueError(f"{owner}: handle {self.handle!r} takes "
                             f"{shape[-1]}-channel images; keras_mm gives "
                             "it RGB (3 channels)")
        return (shape[1], shape[2])

    def _feature_width(self, owner):
        outputs = self._fn.output_signature()
        if isinstance(outputs, dict):
            outputs = outputs.get("default")
        shape = getattr(outputs, "shape", None)
        if shape is None or shape.rank != 2 or shape[-1] is None:
            raise ValueError(
                f"{owner}: handle {self.handle!r} does not return feature "
                f"vectors [B, D] (it returns {outputs}); use a "
                "feature_vector module, not a classification one with "
                "spatial outputs")
        return int(shape[-1])

    def build(self, input_shape):
        owner = "HubImageTower"
        if len(input_shape) != 4 or input_shape[-1] != 3:
            raise ValueError(f"{owner}: inputs of shape {input_shape}; the "
                             "module takes RGB images [B, H, W, 3] in "
                             "[0, 1] (ImagePreprocessor channels=3)")
        for axis, (need, got) in enumerate(zip(self.image_size,
                                               input_shape[1:3])):
            if need is not None and got is not None and need != got:
                raise ValueError(
                    f"{owner}: images of {tuple(input_shape[1:3])} but the "
                    f"module of handle {self.handle!r} takes "
                    f"{self.image_size}; set the image preprocessor's size "
                    f"to {self.image_size}")
        self.dropout_layer = keras.layers.Dropout(self.dropout,
                                                  dtype=self.dtype_policy)
        if self.dim is not None:
            self.projection = keras.layers.Dense(
                self.dim, dtype=self.dtype_policy, name="projection")
            self.projection.build((None, self.feature_size))
        else:
            self.projection = None

    def call(self, inputs, training=None, mask=None):
        del mask
        images = ops.cast(inputs, "float32")
        features = self._fn(images, training=bool(training) and
                            self.trainable)
        if isinstance(features, dict):
            features = features["default"]
        x = ops.cast(features, self.compute_dtype)
        x = self.dropout_layer(x, training=training)
        if self.projection is not None:
            x = self.projection(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim or self.feature_size)

    def get_config(self):
        config = super().get_config()
        config.update({"handle": self.handle, "output": self.output_mode,
                       "dim": self.dim, "dropout": self.dropout,
                       "trainable_blocks": self.trainable_blocks,
                       "lora_rank": self.lora_rank})
        return config


__all__ = ["HubImageTower"]
