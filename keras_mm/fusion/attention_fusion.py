import keras
from keras import ops

from keras_mm.fusion.base_fusion import BaseFusion
from keras_mm.layers.transformer_encoder import TransformerEncoder
from keras_mm.layers.utils import (check_bool, check_fraction,
                                   check_non_negative_int,
                                   check_positive_int, clone_initializer)
from keras_mm.registry import FUSIONS


@keras.saving.register_keras_serializable(package="keras_mm")
@FUSIONS.register("attention")
class AttentionFusion(BaseFusion):
    """Attention over the modality embeddings, pooled by a learned query.

    Each modality vector `[batch, dim_m]` is projected to `units` (one
    `Dense` per modality), giving `M` modality tokens `[batch, M, units]`.
    Optionally (`num_layers > 0`) a pre-norm `TransformerEncoder` lets the
    modality tokens attend to each other (self-attention). Then a learned
    query attends over the tokens (`keras.layers.MultiHeadAttention`) and
    the attention output is the fused vector `[batch, units]`.

    Default heads: with one head the pooled vector is a single convex
    mix of the modality tokens. It settles on the modality that is useful
    first, and the other one's gradient, scaled by its near-zero weight,
    never brings it back: on degraded AV-MNIST (the accuracy benchmark's
    towers, Adam 5e-3 cosine, 4 epochs, seeds 0-2) one head stayed at the
    image-only accuracy on all three seeds (65.4% against image alone
    65.2%), while four heads, four independent mixes, reached 93.0 / 95.5
    / 95.4% (audio alone 84.8% on average).

    Args:
        units: token width (= output width); must be divisible by
            `num_heads`.
        num_heads: attention heads of the pooling (and of the encoder);
            default 4.
        num_layers: self-attention encoder layers over the modality tokens
            before the pooling (0 = pooling only).
        intermediate_dim: MLP width of the encoder (`None`: 4 x `units`).
        dropout: dropout of the attention weights (and encoder).
        return_attention: also return the pooling weights.
        kernel_initializer: initializer of the projections and attention.
        query_initializer: initializer of the learned query.
        modalities: modality names in presence-mask column order
            (default: sorted input keys).

    Call arguments:
        inputs: dict `{modality: [batch, dim_m]}`.
        presence: optional `[batch, num_modalities]`, 1 = present.
        training: Python bool (dropout).
        mask: ignored (vector inputs have no tokens).

    Returns:
        `[batch, units]`, or with `return_attention=True` a tuple
        `(fused, weights)` where `weights` `[batch, num_modalities]` are the
        pooling attention weights averaged over the heads.

    Masking: absent modalities are masked keys (in the pooling and in the
    encoder), so their attention weight is exactly 0 and the present ones
    sum to 1; their inputs are also zeroed before the projection. A row
    with no modality present gives zeros (and all-zero weights).

    Internals: `fusion_weights(inputs, presence)` returns `{"weights":
    [batch, M], "scores": [batch, heads, M]}`: the pooling attention
    averaged over the heads (what `return_attention=True` returns) and per
    head.

    Example:

    >>> fusion = AttentionFusion(units=16, num_heads=2,
    ...                          return_attention=True)
    >>> inputs = {"audio": keras.ops.ones((2, 8)),
    ...           "image": keras.ops.ones((2, 4))}
    >>> out, weights = fusion(inputs)
    >>> tuple(out.shape), tuple(weights.shape)
    ((2, 16), (2, 2))

    Presence columns follow `fusion.modalities`; the second row has no
    image, so its image weight is 0 and the audio weight 1:

    >>> fusion.modalities
    ['audio', 'image']
    >>> _, weights = fusion(inputs, presence=keras.ops.array([[1.0, 1.0],
    ...                                                       [1.0, 0.0]]))
    >>> keras.ops.convert_to_numpy(weights)[1]
    array([1., 0.], dtype=float32)
    """

    input_kind = "vector"

    def __init__(self, units=64, num_heads=4, num_layers=0,
                 intermediate_dim=None, dropout=0.0, return_attention=False,
                 kernel_initializer="glorot_uniform",
                 query_initializer="truncated_normal", modalities=None,
                 **kwargs):
        super().__init__(modalities=modalities, **kwargs)
        owner = "AttentionFusion"
        self.units = check_positive_int(owner, "units", units)
        self.num_heads = check_positive_int(owner, "num_heads", num_heads)
        self.num_layers = check_non_negative_int(owner, "num_layers",
                                                 num_layers)
        self.intermediate_dim = check_positive_int(
            owner, "intermediate_dim", intermediate_dim, allow_none=True)
        self.dropout = check_fraction(owner, "dropout", dropout)
        self.return_attention = check_bool(owner, "return_attention",
                                           return_attention)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.query_initializer = keras.initializers.get(query_initializer)
        if self.units % self.num_heads:
            raise ValueError(
                f"{owner}: units={self.units} is not divisible by "
                f"num_heads={self.num_heads}; change one of them")

    def build(self, input_shape):
        shapes = self.resolve_modalities(input_shape)
        widths = self.vector_widths(shapes)
        batch = shapes[0][0]
        tokens_shape = (batch, len(self.modalities), self.units)
        self.projections = []
        for name, width in zip(self.modalities, widths):
            proj = keras.layers.Dense(
                self.units,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"{name}_projection")
            proj.build((batch, width))
            self.projections.append(proj)
        self.encoder = None
        if self.num_layers:
            self.encoder = TransformerEncoder(
                num_layers=self.num_layers, num_heads=self.num_heads,
                intermediate_dim=self.intermediate_dim, dropout=self.dropout,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name="encoder")
            self.encoder.build(tokens_shape)
        self.query = self.add_weight(
            name="query", shape=(1, 1, self.units),
            initializer=clone_initializer(self.query_initializer))
        self.pooling = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads, key_dim=self.units // self.num_heads,
            dropout=self.dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy, name="pooling")
        self.pooling.build((batch, 1, self.units), tokens_shape)
        self.built = True

    def call(self, inputs, presence=None, training=None, mask=None):
        internals = {} if self.return_attention else None
        fused = self._fuse(inputs, presence, training, internals)
        if self.return_attention:
            return fused, internals["weights"]
        return fused

    def fusion_weights(self, inputs, presence=None, mask=None):
        """`{"weights": [batch, M], "scores": [batch, heads, M]}`: the
        pooling attention of the learned query over the modality tokens,
        averaged over the heads and per head (inference mode). 0 for an
        absent modality; the present ones sum to 1 (all 0 in a row without
        any present modality)."""
        self.build_from_call(inputs, presence, mask)
        internals = {}
        self._fuse(inputs, presence, False, internals)
        return internals

    def _fuse(self, inputs, presence, training, internals=None):
        """The call: returns the fused vector and, when `internals` is a
        dict, puts the attention weights in it."""
        self.check_call_inputs(inputs, presence)
        features, present, _ = self.split_inputs(inputs, presence)
        flags = self.presence_flags(present)
        dtype = self.compute_dtype
        tokens = ops.stack(
            [proj(self.zero_absent(ops.cast(x, dtype), f))
             for proj, x, f in zip(self.projections, features, flags)],
            axis=1)  # [B, M, units]
        valid = self.presence_matrix(flags, tokens[:, 0])  # [B, M]
        if self.encoder is not None:
            tokens = self.encoder(tokens, training=training, mask=valid)
        query = ops.broadcast_to(
            ops.cast(self.query, dtype),
            (ops.shape(tokens)[0], 1, self.units))
        fused, scores = self.pooling(
            query, tokens, tokens, attention_mask=ops.expand_dims(valid, 1),
            return_attention_scores=True, training=training)
        any_valid = ops.any(valid, axis=-1, keepdims=True)
        fused = ops.where(any_valid, fused[:, 0], ops.cast(0, fused.dtype))
        if internals is not None:
            # [B, heads, 1, M] -> [B, heads, M]; rows without a present
            # modality (where Keras' masked softmax is uniform) get zeros.
            per_head = ops.where(ops.expand_dims(valid, 1),
                                 ops.cast(scores, "float32")[:, :, 0], 0.0)
            internals["scores"] = ops.cast(per_head, dtype)
            internals["weights"] = ops.cast(ops.mean(per_head, axis=1),
                                            dtype)
        return fused

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0]
        if self.return_attention:
            return ((batch, self.units), (batch, len(input_shape)))
        return (batch, self.units)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "return_attention": self.return_attention,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "query_initializer": keras.initializers.serialize(
                self.query_initializer),
        })
        return config
