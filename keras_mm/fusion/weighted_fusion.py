import keras
from keras import ops

from keras_mm.fusion.base_fusion import BaseFusion
from keras_mm.layers.utils import (check_bool, check_positive_int,
                                   clone_initializer)
from keras_mm.registry import FUSIONS


@keras.saving.register_keras_serializable(package="keras_mm")
@FUSIONS.register("weighted")
class WeightedFusion(BaseFusion):
    """Weighted sum of projected modality vectors, learned softmax weights.

    Each modality vector `[batch, dim_m]` is projected to the shared width
    `units` (`Dense(units, activation)`, one per modality). The layer keeps
    one learned logit per modality; the fusion weights are the softmax of
    those logits over the modalities present in each row, and the output
    is the weighted sum of the projections:

        w = softmax_{present m}(logit_m),   out = sum_m w_m * Dense_m(x_m)

    Args:
        units: shared projection width (= output width).
        activation: activation of the projections (default: none).
        return_weights: also return the fusion weights.
        kernel_initializer: initializer of the projections.
        logits_initializer: initializer of the per-modality logits
            (default zeros: equal weights at the start).
        modalities: modality names in presence-mask column order
            (default: sorted input keys).

    Call arguments:
        inputs: dict `{modality: [batch, dim_m]}`.
        presence: optional `[batch, num_modalities]`, 1 = present.
        training: Python bool (unused).
        mask: ignored (vector inputs have no tokens).

    Returns:
        `[batch, units]`, or with `return_weights=True` a tuple
        `(fused, weights)` with `weights` `[batch, num_modalities]`.

    Masking: the softmax runs over the present modalities only: an absent
    modality gets weight exactly 0 and the present ones' weights sum to 1.
    Its input is zeroed before the projection and its term is dropped. A
    row with no modality present gives zeros (and all-zero weights).

    Internals: `fusion_weights(inputs, presence)` returns `{"weights":
    [batch, num_modalities]}`, the weights above (the same tensor the call
    returns with `return_weights=True`).

    Example:

    >>> fusion = WeightedFusion(units=16)
    >>> out = fusion({"audio": keras.ops.ones((2, 8)),
    ...               "image": keras.ops.ones((2, 4))})
    >>> tuple(out.shape)
    (2, 16)

    The weights of a call (`fusion_weights`); the second row has no image:

    >>> weights = fusion.fusion_weights(
    ...     {"audio": keras.ops.ones((2, 8)), "image": keras.ops.ones((2, 4))},
    ...     presence=keras.ops.array([[1.0, 1.0], [1.0, 0.0]]))
    >>> keras.ops.convert_to_numpy(weights["weights"])
    array([[0.5, 0.5],
           [1. , 0. ]], dtype=float32)
    """

    input_kind = "vector"

    def __init__(self, units=64, activation=None, return_weights=False,
                 kernel_initializer="glorot_uniform",
                 logits_initializer="zeros", modalities=None, **kwargs):
        super().__init__(modalities=modalities, **kwargs)
        owner = "WeightedFusion"
        self.units = check_positive_int(owner, "units", units)
        self.activation = keras.activations.get(activation)
        self.return_weights = check_bool(owner, "return_weights",
                                         return_weights)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.logits_initializer = keras.initializers.get(logits_initializer)

    def build(self, input_shape):
        shapes = self.resolve_modalities(input_shape)
        widths = self.vector_widths(shapes)
        self.projections = []
        for name, width in zip(self.modalities, widths):
            proj = keras.layers.Dense(
                self.units, activation=self.activation,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"{name}_projection")
            proj.build((shapes[0][0], width))
            self.projections.append(proj)
        self.modality_logits = self.add_weight(
            name="modality_logits", shape=(len(self.modalities),),
            initializer=clone_initializer(self.logits_initializer))
        self.built = True

    def call(self, inputs, presence=None, training=None, mask=None):
        internals = {}
        fused = self._fuse(inputs, presence, internals)
        if self.return_weights:
            return fused, internals["weights"]
        return fused

    def fusion_weights(self, inputs, presence=None, mask=None):
        """`{"weights": [batch, num_modalities]}`: the softmax fusion
        weights of the call (0 for an absent modality; the present ones sum
        to 1; all 0 in a row without any present modality)."""
        self.build_from_call(inputs, presence, mask)
        internals = {}
        self._fuse(inputs, presence, internals)
        return internals

    def _fuse(self, inputs, presence, internals):
        """The call: returns the fused vector, puts the weights in
        `internals["weights"]`."""
        self.check_call_inputs(inputs, presence)
        features, present, _ = self.split_inputs(inputs, presence)
        flags = self.presence_flags(present)
        dtype = self.compute_dtype
        projected = [
            proj(self.zero_absent(ops.cast(x, dtype), f))
            for proj, x, f in zip(self.projections, features, flags)]
        valid = self.presence_matrix(flags, projected[0])
        logits = ops.expand_dims(
            ops.cast(self.modality_logits, "float32"), 0)
        weights = ops.cast(self.masked_softmax(logits, valid), dtype)
        fused = None
        for j, (h, f) in enumerate(zip(projected, flags)):
            term = self.zero_absent(weights[:, j:j + 1] * h, f)
            fused = term if fused is None else fused + term
        internals["weights"] = weights
        return fused

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0]
        if self.return_weights:
            return ((batch, self.units), (batch, len(input_shape)))
        return (batch, self.units)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "return_weights": self.return_weights,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "logits_initializer": keras.initializers.serialize(
                self.logits_initializer),
        })
        return config
