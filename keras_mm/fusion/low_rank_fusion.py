import keras
from keras import ops

from keras_mm.fusion.base_fusion import BaseFusion
from keras_mm.layers.utils import (check_bool, check_positive_int,
                                   clone_initializer)
from keras_mm.registry import FUSIONS


@keras.saving.register_keras_serializable(package="keras_mm")
@FUSIONS.register("low_rank")
class LowRankFusion(BaseFusion):
    """Low-rank Multimodal Fusion (Liu et al., 2018): a rank-r factorized
    Tensor Fusion Network.

    Each modality has `rank` factors `W_m^(i)` of shape `[dim_m + 1, units]`
    applied to `[1; x_m]` (stored as one `Dense(rank * units)` per modality:
    the kernel holds the `x_m` rows of all factors, the bias their "1" row).
    The factor outputs are multiplied elementwise over the modalities, and
    the ranks are combined with learned weights `lambda_i`:

        f_m^(i) = [1; x_m] W_m^(i)                         # [batch, units]
        out = activation(sum_i lambda_i * prod_m f_m^(i) + b)

    This equals a TFN whose weight tensor has rank `rank`, without ever
    forming the `prod_m (dim_m + 1)` outer product. The factor biases (the
    "1" rows) start at ones (`factor_bias_initializer`), so at the start
    each product expands to `1 + sum_m W_m x_m + (pairwise) + ...`: the
    lower-order terms are there from the first step.

    Args:
        units: output width.
        rank: number of rank-one terms.
        activation: output activation (default: none).
        normalize: layer-normalize each modality's input before its
            projection (default True: a product of projections multiplies
            the towers' output scales, which differ ~10x between an audio
            and an image tower; a config saved without this key loads with
            False, the layer it was saved from).
        kernel_initializer: initializer of the factor kernels.
        factor_bias_initializer: initializer of the factors' "1" rows.
        rank_weights_initializer: initializer of `lambda` (`[rank]`).
        modalities: modality names in presence-mask column order
            (default: sorted input keys).

    Call arguments:
        inputs: dict `{modality: [batch, dim_m]}`.
        presence: optional `[batch, num_modalities]`, 1 = present.
        training: Python bool (unused).
        mask: ignored (vector inputs have no tokens).

    Masking: an absent modality's factor outputs are replaced by exactly 1
    (for every rank and unit), the identity of the elementwise product. Its
    input is also zeroed first. So a row lacking modality `k` computes the
    LMF of the present modalities with the same factors and rank weights:
    `sum_i lambda_i * prod_{m present} f_m^(i) + b`. A row with no modality
    present gives `sum_i lambda_i + b`.

    Example:

    >>> fusion = LowRankFusion(units=16, rank=4)
    >>> out = fusion({"audio": keras.ops.ones((2, 8)),
    ...               "image": keras.ops.ones((2, 4)),
    ...               "text": keras.ops.ones((2, 6))})
    >>> tuple(out.shape)
    (2, 16)
    """

    input_kind = "vector"

    def __init__(self, units=64, rank=4, activation=None, normalize=True,
                 kernel_initializer="glorot_uniform",
                 factor_bias_initializer="ones",
                 rank_weights_initializer="glorot_uniform", modalities=None,
                 **kwargs):
        super().__init__(modalities=modalities, **kwargs)
        owner = "LowRankFusion"
        self.units = check_positive_int(owner, "units", units)
        self.rank = check_positive_int(owner, "rank", rank)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.factor_bias_initializer = keras.initializers.get(
            factor_bias_initializer)
        self.normalize = check_bool(owner, "normalize", normalize)
        self.rank_weights_initializer = keras.initializers.get(
            rank_weights_initializer)

    def build(self, input_shape):
        shapes = self.resolve_modalities(input_shape)
        widths = self.vector_widths(shapes)
        batch = shapes[0][0]
        self.factors, self.input_norms = [], []
        for name, width in zip(self.modalities, widths):
            factor = keras.layers.Dense(
                self.rank * self.units,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                bias_initializer=clone_initializer(
                    self.factor_bias_initializer),
                dtype=self.dtype_policy, name=f"{name}_factor")
            factor.build((batch, width))
            self.factors.append(factor)
            if self.normalize:
                norm = keras.layers.LayerNormalization(
                    dtype=self.dtype_policy, name=f"{name}_norm")
                norm.build((batch, width))
                self.input_norms.append(norm)
        self.rank_weights = self.add_weight(
            name="rank_weights", shape=(self.rank, 1),
            initializer=clone_initializer(self.rank_weights_initializer))
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer="zeros")
        self.built = True

    def call(self, inputs, presence=None, training=None, mask=None):
        self.check_call_inputs(inputs, presence)
        features, present, _ = self.split_inputs(inputs, presence)
        flags = self.presence_flags(present)
        dtype = self.compute_dtype
        product = None
        for j, (factor, x, f) in enumerate(zip(self.factors, features,
                                               flags)):
            x = ops.cast(x, dtype)
            if self.normalize:
                x = self.input_norms[j](x)
            out = factor(self.zero_absent(x, f))
            out = self.zero_absent(out, f, fill=1)  # identity when absent
            product = out if product is None else product * out
        product = ops.reshape(product, (-1, self.rank, self.units))
        weights = ops.cast(self.rank_weights, dtype)  # [rank, 1]
        fused = ops.sum(product * weights, axis=1) + ops.cast(self.bias, dtype)
        return self.activation(fused)

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0]
        return (batch, self.units)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "rank": self.rank,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "normalize": self.normalize,
            "factor_bias_initializer": keras.initializers.serialize(
                self.factor_bias_initializer),
            "rank_weights_initializer": keras.initializers.serialize(
                self.rank_weights_initializer),
        })
        return config

    @classmethod
    def from_config(cls, config):
        # Saved before `normalize` existed: those layers had none.
        config = dict(config)
        config.setdefault("normalize", False)
        return super().from_config(config)
