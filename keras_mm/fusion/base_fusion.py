import keras
from keras import ops

from keras_mm.layers.utils import check_unique_strings


class BaseFusion(keras.layers.Layer):
    """Base class of the fusion layers: dict inputs and a presence mask.

    A fusion layer takes a dict `{modality name: tower output}` and an
    optional presence mask `[batch, num_modalities]` (1 = present, 0 =
    absent). Column `j` of the presence mask refers to `modalities[j]`.
    A modality marked absent must contribute nothing to the output: each
    subclass removes it (masked softmax, masked attention keys, identity
    factors...), never feeds zeros as if they were data.

    Subclasses set the class attribute `input_kind` to what they expect
    from the towers: `"vector"` (`[batch, dim]`), `"sequence"`
    (`[batch, tokens, dim]` with a token mask) or `"feature_map"`.

    Args:
        modalities: the modality names in presence-mask column order. `None`
            takes the sorted keys of the first input dict.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict of tower outputs.
        presence: optional float or bool `[batch, num_modalities]`.
        training: Python bool.
        mask: optional dict `{modality: boolean [batch, tokens] or None}`
            (token masks of sequence inputs).

    Internals: `fusion_weights(inputs, presence=None, mask=None)` returns
    a dict `{name: tensor}` of what the layer computed to mix the
    modalities (gates, softmax weights, attention), from the same code path
    as the call; a layer without such internals returns `{}` (this base
    class). See each subclass for its names and shapes.

    Missing embeddings: a subclass may offer `missing_embedding=True`, a
    learned vector standing in for an absent modality. It is a constant of
    the layer, so it carries no data of the absent input and the rule
    above still holds (changing an absent input changes nothing).

    Masking: see the subclasses; the helpers below (`token_validity`,
    `masked_token_mean`, `zero_absent`, `masked_softmax`) give an invalid
    entry exactly zero weight.

    Example:

    A subclass is called like any fusion layer; its helpers can be tried
    on their own. `masked_softmax` gives an absent entry exactly 0:

    >>> logits = keras.ops.array([[1.0, 2.0, 3.0]])
    >>> valid = keras.ops.array([[True, False, True]])
    >>> weights = BaseFusion.masked_softmax(logits, valid)
    >>> keras.ops.convert_to_numpy(weights).round(3)
    array([[0.119, 0.   , 0.881]], dtype=float32)
    """

    input_kind = "vector"

    def __init__(self, modalities=None, **kwargs):
        super().__init__(**kwargs)
        self.modalities = check_unique_strings(
            self.__class__.__name__, "modalities", modalities,
            allow_none=True)
        self.supports_masking = True

    def fusion_weights(self, inputs, presence=None, mask=None):
        """The gates / weights / attention the layer computed, as a dict
        `{name: tensor}` (inference mode). `{}` for a layer without any:
        this default. The layer is built on `inputs` if it is not yet."""
        self.build_from_call(inputs, presence, mask)
        return {}

    def build_from_call(self, inputs, presence=None, mask=None):
        """Builds the layer by calling it once on `inputs` when it is not
        built yet (for methods that run its code path directly)."""
        if not self.built:
            self(inputs, presence=presence, mask=mask)

    # -- helpers for subclasses -------------------------------------------

    def resolve_modalities(self, input_shape):
        """Fixes the modality order from the input dict; returns shapes.

        Returns the list of input shapes in `self.modalities` order.
        """
        if not isinstance(input_shape, dict):
            raise TypeError(
                f"{self.__class__.__name__} takes a dict "
                "{modality name: tower output}; got "
                f"{type(input_shape).__name__}"
            )
        names = sorted(input_shape)
        if self.modalities is None:
            self.modalities = names
        elif sorted(self.modalities) != names:
            raise ValueError(
                f"{self.__class__.__name__}({self.name!r}): input keys "
                f"{names} do not match modalities={self.modalities}; pass "
                "one tower output per listed modality"
            )
        if len(self.modalities) < 1:
            raise ValueError(f"{self.__class__.__name__}: no modalities")
        return [tuple(input_shape[m]) for m in self.modalities]

    def split_inputs(self, inputs, presence=None, mask=None):
        """Orders the call arguments by `self.modalities`.

        Returns:
            `(features, present, masks)`: lists with one entry per modality.
            `present[j]` is a `[batch, 1]` tensor in the compute dtype (or
            `None` when no presence mask was given); `masks[j]` is a boolean
            `[batch, tokens]` or `None`.
        """
        features = [inputs[m] for m in self.modalities]
        if presence is None:
            present = [None] * len(features)
        else:
            presence = ops.cast(presence, self.compute_dtype)
            present = [presence[:, j:j + 1] for j in range(len(features))]
        if isinstance(mask, dict):
            masks = [mask.get(m) for m in self.modalities]
        else:
            masks = [None] * len(features)
        masks = [None if m is None else ops.cast(m, "bool") for m in masks]
        return features, present, masks

    # -- helpers for sequence fusions --------------------------------------

    @staticmethod
    def as_sequence(x):
        """Returns `x` as a token sequence: a vector `[B, d]` becomes one
        token `[B, 1, d]`; a sequence `[B, T, d]` is returned unchanged."""
        if len(x.shape) == 2:
            return ops.expand_dims(x, 1)
        return x

    @staticmethod
    def token_validity(sequence, present=None, mask=None):
        """Boolean `[B, T]` key mask of a `[B, T, d]` sequence.

        A token is valid when its token mask is True (all tokens when `mask`
        is None) and its modality is present (`present` is `[B, 1]`, > 0
        means present; None means present). An absent modality therefore
        has all its tokens masked.
        """
        if mask is None:
            valid = ops.ones_like(sequence[:, :, 0], dtype="bool")
        else:
            valid = ops.cast(mask, "bool")
            if len(valid.shape) == 1:
                valid = ops.expand_dims(valid, 1)
        if present is not None:
            valid = ops.logical_and(valid, ops.greater(present, 0))
        return valid

    @staticmethod
    def masked_token_mean(sequence, valid):
        """Mean of `[B, T, d]` over its valid tokens (`valid`: bool `[B, T]`).

        Rows without any valid token give zeros (never NaN). Invalid tokens
        get exactly zero weight, so their values cannot leak into the mean.
        """
        weights = ops.expand_dims(ops.cast(valid, sequence.dtype), -1)
        total = ops.sum(ops.where(weights > 0, sequence, 0), axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), 1)
        return total / count

    # -- helpers for vector fusions (concat, weighted, gated, attention,
    #    tensor, low_rank) ------------------------------------------------

    def vector_widths(self, shapes):
        """Checks that every input is a vector `[batch, dim]` with a known
        `dim`; returns the widths in `self.modalities` order."""
        widths = []
        for name, shape in zip(self.modalities, shapes):
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(
                    f"{self.__class__.__name__}: input {name!r} has shape "
                    f"{tuple(shape)}; expected a vector [batch, dim] with a "
                    "known dim (build its tower with output='vector')")
            widths.append(int(shape[-1]))
        return widths

    def check_call_inputs(self, inputs, presence=None):
        """Raises a ValueError when the call's dict keys are not exactly
        `self.modalities` (no input is silently ignored), or when
        `presence` is not `[batch, num_modalities]`."""
        if not isinstance(inputs, dict):
            raise TypeError(
                f"{self.__class__.__name__} takes a dict "
                "{modality name: tower output}; got "
                f"{type(inputs).__name__}")
        if sorted(inputs) != sorted(self.modalities):
            raise ValueError(
                f"{self.__class__.__name__}({self.name!r}): input keys "
                f"{sorted(inputs)} do not match modalities="
                f"{self.modalities}; pass one tower output per listed "
                "modality")
        if presence is not None:
            shape = tuple(presence.shape)
            if len(shape) != 2 or shape[-1] not in (None,
                                                     len(self.modalities)):
                raise ValueError(
                    f"{self.__class__.__name__}({self.name!r}): presence "
                    f"has shape {shape}; expected [batch, "
                    f"{len(self.modalities)}], one column per modality in "
                    f"the order {self.modalities}")

    @staticmethod
    def presence_flags(present):
        """`split_inputs`'s `present` list -> boolean `[batch, 1]` flags
        (`> 0` is present), `None` entries kept."""
        return [None if p is None else ops.greater(p, 0) for p in present]

    @staticmethod
    def zero_absent(x, flag, fill=0):
        """`x` with the rows whose `flag` (`[batch, 1]` bool) is False set
        to `fill`; `x` unchanged when `flag` is None. `ops.where` (not a
        product) so even a non-finite absent value cannot leak."""
        if flag is None:
            return x
        return ops.where(flag, x, ops.cast(fill, x.dtype))

    @staticmethod
    def presence_matrix(flags, reference):
        """Boolean `[batch, M]` from per-modality `[batch, 1]` flags (None
        = present; `reference` is any `[batch, ...]` tensor for the batch
        size)."""
        ones = ops.ones_like(reference[:, :1], dtype="bool")
        return ops.concatenate(
            [ones if f is None else ops.logical_and(ones, f) for f in flags],
            axis=-1)

    @staticmethod
    def masked_softmax(logits, valid, axis=-1):
        """Softmax over the `valid` entries only, computed in float32.

        Invalid entries get exactly 0; a slice without any valid entry gives
        all zeros (never NaN, never a uniform weight on absent entries).
        Returns float32.
        """
        logits = ops.cast(logits, "float32")
        # where() broadcasts `logits` and `valid` against each other
        logits = ops.where(valid, logits, -1e9)
        weights = ops.softmax(logits, axis=axis)
        return ops.where(valid, weights, 0.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update({"modalities": self.modalities})
        return config
