import keras
from keras import ops

from keras_mm.fusion.base_fusion import BaseFusion
from keras_mm.layers.utils import (check_bool, check_fraction,
                                   check_positive_int, clone_initializer)
from keras_mm.registry import FUSIONS

# Largest flattened fusion tensor (per example) TensorFusion accepts.
MAX_TENSOR_SIZE = 2 ** 20


@keras.saving.register_keras_serializable(package="keras_mm")
@FUSIONS.register("tensor")
class TensorFusion(BaseFusion):
    """Tensor Fusion Network (Zadeh et al., 2017).

    Each modality vector is first projected to a small `projection_dim`
    (`z_m = projection_activation(Dense(x_m))`), extended with a constant
    1 to `[1; z_m]`, and the outer product of these over all modalities is
    flattened:

        T = [1; z_1] (x) [1; z_2] (x) ... (x) [1; z_M]   # (projection_dim + 1)^M

    The constant 1 keeps every lower-order term (the unimodal `z_m`, the
    bimodal `z_i z_j^T`, ...) in the tensor besides the M-way interactions.
    Then (dropout and) `Dense(units, activation)` maps `T` to the output.
    Keep `projection_dim` small: the tensor has `(projection_dim + 1)^M`
    entries (a ValueError is raised above 2^20; use `LowRankFusion` for
    larger settings).

    Args:
        units: output width.
        projection_dim: width of each `z_m`.
        projection_activation: activation of the projections (default: none).
        activation: activation of the output layer (default: none).
        dropout: dropout rate on the flattened tensor.
        normalize: layer-normalize each modality's input before its
            projection (default True: a product of projections multiplies
            the towers' output scales, which differ ~10x between an audio
            and an image tower; a config saved without this key loads with
            False, the layer it was saved from).
        kernel_initializer: initializer of the projections and output layer.
        modalities: modality names in presence-mask column order
            (default: sorted input keys).

    Call arguments:
        inputs: dict `{modality: [batch, dim_m]}`.
        presence: optional `[batch, num_modalities]`, 1 = present.
        training: Python bool (dropout).
        mask: ignored (vector inputs have no tokens).

    Masking: an absent modality gets `z_m = 0` (its input is zeroed before
    the projection and the projection, bias included, after), so its factor
    is `[1; 0]`, the identity of the outer product: `T` then holds exactly
    the tensor of the present modalities (every entry that involves
    `z_m` is 0) and the absent input cannot change the output.

    Example:

    >>> fusion = TensorFusion(units=16, projection_dim=4)
    >>> out = fusion({"audio": keras.ops.ones((2, 8)),
    ...               "image": keras.ops.ones((2, 4)),
    ...               "text": keras.ops.ones((2, 6))})
    >>> tuple(out.shape)  # through a 5 x 5 x 5 = 125 entry tensor
    (2, 16)
    """

    input_kind = "vector"

    def __init__(self, units=64, projection_dim=8, projection_activation=None,
                 activation=None, dropout=0.0, normalize=True,
                 kernel_initializer="glorot_uniform", modalities=None,
                 **kwargs):
        super().__init__(modalities=modalities, **kwargs)
        owner = "TensorFusion"
        self.units = check_positive_int(owner, "units", units)
        self.projection_dim = check_positive_int(owner, "projection_dim",
                                                 projection_dim)
        self.projection_activation = keras.activations.get(
            projection_activation)
        self.activation = keras.activations.get(activation)
        self.dropout = check_fraction(owner, "dropout", dropout)
        self.normalize = check_bool(owner, "normalize", normalize)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shapes = self.resolve_modalities(input_shape)
        widths = self.vector_widths(shapes)
        batch = shapes[0][0]
        self.tensor_size = (self.projection_dim + 1) ** len(self.modalities)
        if self.tensor_size > MAX_TENSOR_SIZE:
            raise ValueError(
                f"TensorFusion: (projection_dim + 1) ** num_modalities = "
                f"{self.projection_dim + 1} ** {len(self.modalities)} = "
                f"{self.tensor_size} entries per example, over the limit "
                f"{MAX_TENSOR_SIZE}; lower projection_dim or use "
                "LowRankFusion (type 'low_rank')")
        self.projections, self.input_norms = [], []
        for name, width in zip(self.modalities, widths):
            if self.normalize:
                norm = keras.layers.LayerNormalization(
                    dtype=self.dtype_policy, name=f"{name}_norm")
                norm.build((batch, width))
                self.input_norms.append(norm)
            proj = keras.layers.Dense(
                self.projection_dim, activation=self.projection_activation,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"{name}_projection")
            proj.build((batch, width))
            self.projections.append(proj)
        self.tensor_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="tensor_dropout")
        self.output_layer = keras.layers.Dense(
            self.units, activation=self.activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy, name="output_layer")
        self.output_layer.build((batch, self.tensor_size))
        self.built = True

    def call(self, inputs, presence=None, training=None, mask=None):
        self.check_call_inputs(inputs, presence)
        features, present, _ = self.split_inputs(inputs, presence)
        flags = self.presence_flags(present)
        dtype = self.compute_dtype
        tensor = None
        for j, (proj, x, f) in enumerate(zip(self.projections, features,
                                             flags)):
            x = ops.cast(x, dtype)
            if self.normalize:
                x = self.input_norms[j](x)
            z = proj(self.zero_absent(x, f))
            z = self.zero_absent(z, f)
            factor = ops.concatenate([ops.ones_like(z[:, :1]), z], axis=-1)
            if tensor is None:
                tensor = factor
            else:
                size = tensor.shape[-1] * (self.projection_dim + 1)
                tensor = ops.reshape(
                    ops.expand_dims(tensor, -1) * ops.expand_dims(factor, 1),
                    (-1, size))
        tensor = self.tensor_dropout(tensor, training=training)
        return self.output_layer(tensor)

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0]
        return (batch, self.units)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "projection_dim": self.projection_dim,
            "projection_activation": keras.activations.serialize(
                self.projection_activation),
            "activation": keras.activations.serialize(self.activation),
            "dropout": self.dropout,
            "normalize": self.normalize,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config

    @classmethod
    def from_config(cls, config):
        # Saved before `normalize` existed: those layers had none.
        config = dict(config)
        config.setdefault("normalize", False)
        return super().from_config(config)
