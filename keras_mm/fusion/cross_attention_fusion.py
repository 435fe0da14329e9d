import keras
from keras import ops

from keras_mm.fusion.base_fusion import BaseFusion
from keras_mm.layers.utils import (check_fraction, check_positive_float,
                                   check_positive_int, clone_initializer)
from keras_mm.registry import FUSIONS


@keras.saving.register_keras_serializable(package="keras_mm")
@FUSIONS.register("cross_attention")
class CrossAttentionFusion(BaseFusion):
    """MulT-style crossmodal attention fusion (Tsai et al., 2019).

    Every modality's tokens (a vector `[batch, dim]` counts as one token)
    are projected to `units`. Then, for each ordered pair (target, source)
    of different modalities, a stack of `num_layers` crossmodal blocks lets
    the target sequence attend to the source sequence:

        z = z + MHA(query=LN(z), key=value=LN(source))
        z = z + MLP(LN(z))

    (pre-norm, separate weights per pair and layer, then a final layer
    norm). A learned "null" key/value token is prepended to every source
    (as PyTorch's `add_bias_kv`): attention can then prefer "nothing" and
    is never a constant softmax over a single key (a vector source is one
    token), so the query/key projections always learn. Each pair's output
    is averaged over the target's valid tokens; per target the pair vectors
    are concatenated (as MulT concatenates the crossmodal streams), the
    blocks of all targets and one presence flag per target are concatenated
    and projected to `units`.

    Args:
        units: width of the crossmodal streams and of the output.
        num_layers: crossmodal blocks per (target, source) pair.
        num_heads: attention heads; must divide `units`.
        intermediate_dim: MLP width (`None`: 4 x `units`).
        dropout: dropout on attention weights and residual branches.
        activation: MLP activation.
        layer_norm_epsilon: epsilon of the layer norms.
        kernel_initializer: initializer of every kernel.
        modalities: modality names in presence-mask column order
            (default: sorted input keys). At least two are needed.

    Call arguments:
        inputs: dict `{modality: [batch, tokens, dim] or [batch, dim]}`.
        presence: optional `[batch, num_modalities]`, 1 = present.
        training: Python bool.
        mask: optional dict `{modality: bool [batch, tokens] or None}`.

    Masking: a source's keys are masked by its token mask AND its presence
    (the null token is always valid, so no softmax row is empty). When a
    source has no valid key in a row (absent, or all padding) its attention
    update is zeroed in that row, so the block reduces to the target's own
    residual path and the source contributes nothing. Padded target tokens are left out of the pooling.
    An absent target's block is zeroed and its flag (an input of the output
    projection) is 0, so the projection can tell "absent" from data.

    Example:

    >>> fusion = CrossAttentionFusion(units=16, num_heads=2)
    >>> out = fusion({"text": keras.ops.ones((2, 7, 8)),
    ...               "audio": keras.ops.ones((2, 5, 12))})
    >>> tuple(out.shape)
    (2, 16)
    """

    input_kind = "sequence"

    def __init__(self, units=64, num_layers=1, num_heads=4,
                 intermediate_dim=None, dropout=0.1, activation="gelu",
                 layer_norm_epsilon=1e-6, kernel_initializer="glorot_uniform",
                 modalities=None, **kwargs):
        super().__init__(modalities=modalities, **kwargs)
        owner = "CrossAttentionFusion"
        self.units = check_positive_int(owner, "units", units)
        self.num_layers = check_positive_int(owner, "num_layers", num_layers)
        self.num_heads = check_positive_int(owner, "num_heads", num_heads)
        self.intermediate_dim = check_positive_int(
            owner, "intermediate_dim", intermediate_dim, allow_none=True)
        self.dropout = check_fraction(owner, "dropout", dropout)
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = check_positive_float(
            owner, "layer_norm_epsilon", layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if self.units % self.num_heads:
            raise ValueError(
                f"{owner}: units={self.units} is not divisible "
                f"by num_heads={self.num_heads}; change one of them")

    def _pairs(self):
        m = len(self.modalities)
        return [(t, s) for t in range(m) for s in range(m) if s != t]

    def build(self, input_shape):
        shapes = self.resolve_modalities(input_shape)
        if len(self.modalities) < 2:
            raise ValueError(
                "CrossAttentionFusion needs at least two modalities; got "
                f"{self.modalities}. Use a vector fusion such as 'concat' "
                "for one modality")
        init = clone_initializer
        seq_shapes = []
        self.projections = []
        for name, shape in zip(self.modalities, shapes):
            if len(shape) not in (2, 3):
                raise ValueError(
                    f"CrossAttentionFusion: input {name!r} has shape {shape};"
                    " expected [batch, dim] or [batch, tokens, dim]")
            seq_shape = (shape[0], 1, shape[1]) if len(shape) == 2 else shape
            proj = keras.layers.Dense(
                self.units, kernel_initializer=init(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"{name}_projection")
            proj.build(seq_shape)
            self.projections.append(proj)
            seq_shapes.append(tuple(seq_shape[:2]) + (self.units,))
        hidden = self.intermediate_dim or 4 * self.units
        eps = self.layer_norm_epsilon
        self.query_norms, self.source_norms, self.attns = [], [], []
        self.mlp_norms, self.fc1s, self.fc2s, self.final_norms = [], [], [], []
        for t, s in self._pairs():
            pair = f"{self.modalities[s]}_to_{self.modalities[t]}"
            q_shape = seq_shapes[t]
            tokens = seq_shapes[s][1]
            kv_shape = (seq_shapes[s][0],
                        None if tokens is None else tokens + 1, self.units)
            for i in range(self.num_layers):
                q_norm = keras.layers.LayerNormalization(
                    epsilon=eps, dtype=self.dtype_policy,
                    name=f"{pair}_layer{i}_query_norm")
                kv_norm = keras.layers.LayerNormalization(
                    epsilon=eps, dtype=self.dtype_policy,
                    name=f"{pair}_layer{i}_source_norm")
                attn = keras.layers.MultiHeadAttention(
                    num_heads=self.num_heads,
                    key_dim=self.units // self.num_heads,
                    dropout=self.dropout,
                    kernel_initializer=init(self.kernel_initializer),
                    dtype=self.dtype_policy, name=f"{pair}_layer{i}_attn")
                mlp_norm = keras.layers.LayerNormalization(
                    epsilon=eps, dtype=self.dtype_policy,
                    name=f"{pair}_layer{i}_mlp_norm")
                fc1 = keras.layers.Dense(
                    hidden, activation=self.activation,
                    kernel_initializer=init(self.kernel_initializer),
                    dtype=self.dtype_policy, name=f"{pair}_layer{i}_mlp_fc1")
                fc2 = keras.layers.Dense(
                    self.units,
                    kernel_initializer=init(self.kernel_initializer),
                    dtype=self.dtype_policy, name=f"{pair}_layer{i}_mlp_fc2")
                q_norm.build(q_shape)
                kv_norm.build(seq_shapes[s])
                attn.build(q_shape, kv_shape)
                mlp_norm.build(q_shape)
                fc1.build(q_shape)
                fc2.build(q_shape[:-1] + (hidden,))
                self.query_norms.append(q_norm)
                self.source_norms.append(kv_norm)
                self.attns.append(attn)
                self.mlp_norms.append(mlp_norm)
                self.fc1s.append(fc1)
                self.fc2s.append(fc2)
            final = keras.layers.LayerNormalization(
                epsilon=eps, dtype=self.dtype_policy, name=f"{pair}_norm")
            final.build(q_shape)
            self.final_norms.append(final)
        self.null_tokens = self.add_weight(
            name="null_tokens",
            shape=(len(self._pairs()) * self.num_layers, self.units),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.residual_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy)
        m = len(self.modalities)
        self.output_projection = keras.layers.Dense(
            self.units, kernel_initializer=init(self.kernel_initializer),
            dtype=self.dtype_policy, name="output_projection")
        self.output_projection.build(
            (shapes[0][0], m * (m - 1) * self.units + m))
        self.built = True

    def call(self, inputs, presence=None, training=None, mask=None):
        return self._fuse(inputs, presence, training, mask)

    def fusion_weights(self, inputs, presence=None, mask=None):
        """The crossmodal attention of the call (inference mode):
        `{"<source>_to_<target>/layer<i>": [batch, heads, target tokens,
        1 + source tokens]}`, key 0 being the learned null token; an
        invalid key (absent source, padding) has weight exactly 0."""
        self.build_from_call(inputs, presence, mask)
        internals = {}
        self._fuse(inputs, presence, False, mask, internals)
        return internals

    def _fuse(self, inputs, presence, training, mask, internals=None):
        """The call; fills `internals` (a dict) when given."""
        features, present, masks = self.split_inputs(inputs, presence, mask)
        sequences, valids = [], []
        for j, (x, p, m) in enumerate(zip(features, present, masks)):
            x = self.as_sequence(ops.cast(x, self.compute_dtype))
            valid = self.token_validity(x, p, m)
            x = ops.where(ops.expand_dims(valid, -1), x, 0)
            sequences.append(self.projections[j](x))
            valids.append(valid)
        # A modality is "on" in a row when it has at least one valid token.
        on = [ops.any(v, axis=1) for v in valids]
        drop = self.residual_dropout
        pooled = [[] for _ in self.modalities]
        for k, (t, s) in enumerate(self._pairs()):
            z = sequences[t]
            key_valid = ops.concatenate(
                [ops.expand_dims(ops.ones_like(on[s]), 1), valids[s]],
                axis=1)  # the null key, valid even for a 0-token source
            attention_mask = ops.logical_and(
                ops.expand_dims(ops.ones_like(valids[t]), 2),
                ops.expand_dims(key_valid, 1))
            source_on = ops.cast(on[s], z.dtype)[:, None, None]
            for i in range(self.num_layers):
                idx = k * self.num_layers + i
                query = self.query_norms[idx](z)
                source = self.source_norms[idx](sequences[s])
                null = ops.cast(self.null_tokens[idx], source.dtype)
                null = ops.broadcast_to(
                    null[None, None, :],
                    (ops.shape(source)[0], 1, self.units))
                source = ops.concatenate([null, source], axis=1)
                if internals is None:
                    h = self.attns[idx](query, source,
                                        attention_mask=attention_mask,
                                        training=training)
                else:
                    h, scores = self.attns[idx](
                        query, source, attention_mask=attention_mask,
                        return_attention_scores=True, training=training)
                    name = (f"{self.modalities[s]}_to_"
                            f"{self.modalities[t]}/layer{i}")
                    internals[name] = ops.where(
                        ops.expand_dims(attention_mask, 1), scores,
                        ops.cast(0, scores.dtype))
                z = z + drop(h * source_on, training=training)
                h = self.fc2s[idx](self.fc1s[idx](self.mlp_norms[idx](z)))
                z = z + drop(h, training=training)
            z = self.final_norms[k](z)
            pooled[t].append(self.masked_token_mean(z, valids[t]))
        blocks = []
        for t in range(len(self.modalities)):
            block = ops.concatenate(pooled[t], axis=-1)
            blocks.append(ops.where(ops.expand_dims(on[t], -1), block, 0))
        flags = ops.cast(ops.stack(on, axis=1), blocks[0].dtype)
        return self.output_projection(
            ops.concatenate(blocks + [flags], axis=-1))

    def compute_output_shape(self, input_shape):
        first = next(iter(input_shape.values()))
        return (first[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
