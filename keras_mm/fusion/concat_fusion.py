import keras
from keras import ops

from keras_mm.fusion.base_fusion import BaseFusion
from keras_mm.layers.utils import (check_bool, check_positive_int,
                                   clone_initializer)
from keras_mm.registry import FUSIONS


@keras.saving.register_keras_serializable(package="keras_mm")
@FUSIONS.register("concat")
class ConcatFusion(BaseFusion):
    """Late fusion by concatenation of the modality vectors.

    The vectors `[batch, dim_m]` are concatenated in `modalities` order
    (widths may differ). With `append_presence=True` (the default) the
    `num_modalities` presence flags are appended as extra columns, so the
    next layer can tell an absent modality from one whose features happen
    to be zero. With `units` set, a `Dense(units, activation)` projects the
    concatenation; otherwise the concatenation itself is the output.

    Output width (static, whether or not `presence` is passed):
    `units` if set, else `sum(dim_m) + (num_modalities if append_presence
    else 0)`. Without a `presence` argument the flag columns are all 1.

    Args:
        units: optional output width of a projection after the
            concatenation; `None` (default) returns the concatenation.
        activation: activation of the projection (only with `units`).
        append_presence: append the presence flags (float, 1 = present) as
            the last `num_modalities` columns, before the projection.
        missing_embedding: give each modality a learned vector
            (`<name>_missing_embedding`, `[dim_m]`, starting at zeros) that
            fills its slot where it is absent, instead of zeros (default
            False). It is a constant of the layer, so it carries nothing of
            the absent input (the "contributes nothing" rule holds); it lets
            the next layer learn what to assume for a missing modality.
        kernel_initializer: kernel initializer of the projection.
        modalities: modality names in presence-mask column order
            (default: sorted input keys).

    Call arguments:
        inputs: dict `{modality: [batch, dim_m]}`.
        presence: optional `[batch, num_modalities]`, 1 = present.
        training: Python bool (unused).
        mask: ignored (vector inputs have no tokens).

    Masking: an absent modality's slot is set to exactly zero (`ops.where`,
    so its values cannot leak) and, with `append_presence=True`, its flag
    column is 0. With `append_presence=False` the model only sees zeros in
    that slot. With `missing_embedding=True` the slot holds the modality's
    learned missing embedding instead of zeros.

    Example:

    >>> fusion = ConcatFusion()
    >>> out = fusion({"audio": keras.ops.ones((2, 8)),
    ...               "image": keras.ops.ones((2, 4))})
    >>> tuple(out.shape)  # 8 + 4 + 2 presence columns
    (2, 14)
    """

    input_kind = "vector"

    def __init__(self, units=None, activation=None, append_presence=True,
                 missing_embedding=False,
                 kernel_initializer="glorot_uniform", modalities=None,
                 **kwargs):
        super().__init__(modalities=modalities, **kwargs)
        owner = "ConcatFusion"
        self.units = check_positive_int(owner, "units", units,
                                        allow_none=True)
        self.activation = keras.activations.get(activation)
        self.append_presence = check_bool(owner, "append_presence",
                                          append_presence)
        self.missing_embedding = check_bool(owner, "missing_embedding",
                                            missing_embedding)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _concat_width(self, widths):
        extra = len(widths) if self.append_presence else 0
        return sum(widths) + extra

    def build(self, input_shape):
        shapes = self.resolve_modalities(input_shape)
        widths = self.vector_widths(shapes)
        self.missing_embeddings = []
        if self.missing_embedding:
            self.missing_embeddings = [
                self.add_weight(name=f"{name}_missing_embedding",
                                shape=(width,), initializer="zeros")
                for name, width in zip(self.modalities, widths)]
        self.projection = None
        if self.units is not None:
            self.projection = keras.layers.Dense(
                self.units, activation=self.activation,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name="projection")
            self.projection.build((shapes[0][0], self._concat_width(widths)))
        self.built = True

    def call(self, inputs, presence=None, training=None, mask=None):
        self.check_call_inputs(inputs, presence)
        features, present, _ = self.split_inputs(inputs, presence)
        flags = self.presence_flags(present)
        dtype = self.compute_dtype
        if self.missing_embedding:
            # where(): the absent input's values cannot leak into the slot
            parts = [x if f is None else ops.where(
                         f, x, ops.cast(e, dtype)[None, :])
                     for x, f, e in zip(
                         [ops.cast(x, dtype) for x in features], flags,
                         self.missing_embeddings)]
        else:
            parts = [self.zero_absent(ops.cast(x, dtype), f)
                     for x, f in zip(features, flags)]
        if self.append_presence:
            matrix = self.presence_matrix(flags, parts[0])
            parts.append(ops.cast(matrix, dtype))
        out = ops.concatenate(parts, axis=-1)
        if self.projection is not None:
            out = self.projection(out)
        return out

    def compute_output_shape(self, input_shape):
        shapes = [tuple(input_shape[m]) for m in
                  (self.modalities or sorted(input_shape))]
        if self.units is not None:
            return (shapes[0][0], self.units)
        return (shapes[0][0], self._concat_width([s[-1] for s in shapes]))

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "append_presence": self.append_presence,
            "missing_embedding": self.missing_embedding,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
