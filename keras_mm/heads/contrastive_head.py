import itertools

import keras
from keras import ops

from keras_mm.contrastive.clip_loss import ClipLoss
from keras_mm.contrastive.siglip_loss import SigLipLoss
from keras_mm.layers.utils import (check_positive_int, check_unique_strings,
                                   clone_initializer)
from keras_mm.registry import HEADS

CONTRASTIVE_LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss}


def _check_pairs(modalities, pairs):
    if pairs is None:
        return [list(p) for p in itertools.combinations(modalities, 2)]
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise ValueError(f"ContrastiveHead: pairs={pairs!r}; give a list of "
                         "[modality, modality] pairs, or leave it out for "
                         "every pair")
    checked = []
    for i, pair in enumerate(pairs):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or pair[0] == pair[1]
                or any(p not in modalities for p in pair)):
            raise ValueError(
                f"ContrastiveHead: pairs[{i}]={pair!r} is not two different "
                f"names of the modalities {modalities}")
        if sorted(pair) in [sorted(p) for p in checked]:
            raise ValueError(f"ContrastiveHead: pairs[{i}]={pair!r} is "
                             "listed twice")
        checked.append(list(pair))
    return checked


def _check_loss_options(loss, options):
    """The loss layer's arguments, checked by constructing one."""
    options = dict(options or {})
    allowed = {"clip": ("temperature", "max_scale"),
               "siglip": ("scale", "bias")}[loss]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"ContrastiveHead: loss_options {unknown} are not arguments of "
            f"the {loss} loss; they are {', '.join(allowed)}")
    CONTRASTIVE_LOSSES[loss](**options)      # raises on a bad value
    return options


@keras.saving.register_keras_serializable(package="keras_mm")
@HEADS.register("contrastive")
class ContrastiveHead(keras.layers.Layer):
    """Contrastive alignment head of a dual (or multi) encoder.

    Each modality's tower vector is projected to a shared space (a `Dense`
    of `embedding_dim` units per modality, named `<modality>_projection`)
    and L2-normalised; row i of every modality is one paired example. For
    each pair of modalities a `ClipLoss` or `SigLipLoss` layer (named
    `<a>_<b>_loss`, holding its learnable temperature / bias) adds its loss
    with `add_loss`: the head's loss is the sum over the pairs. Under a
    distribution strategy the negatives come from the global batch. The
    head takes no labels; it is built with `fusion: none` (the towers feed
    it directly).

    Args:
        modalities: the input names whose towers are aligned (>= 2), in
            the order of the output's second axis.
        loss: `"clip"` (symmetric InfoNCE, learnable temperature) or
            `"siglip"` (pairwise sigmoid, learnable scale and bias).
        embedding_dim: width of the shared embedding space.
        pairs: the `[a, b]` pairs that get a loss (default: every pair).
        loss_options: arguments of every pair's loss layer: `ClipLoss`'s
            `temperature` (initial, default 0.07) and `max_scale` (100);
            `SigLipLoss`'s initial `scale` (10) and `bias` (-10; the
            paper's value for batches of thousands: `-log(batch size)`
            suits small batches, and a recipe gets that by default).
        kernel_initializer: initializer of the projection kernels.

    Call arguments:
        inputs: `{modality: [batch, dim]}`, the tower vectors (other keys
            are ignored).
        training: unused (the projections have no dropout).

    Returns:
        float32 `[batch, len(modalities), embedding_dim]`: the
        L2-normalised embeddings, modality j at `[:, j]`.

    Example:

    >>> head = ContrastiveHead(["image", "audio"], embedding_dim=8)
    >>> out = head({"image": keras.ops.ones((4, 16)),
    ...             "audio": keras.ops.ones((4, 12))})
    >>> tuple(out.shape)
    (4, 2, 8)
    """

    takes_modalities = True

    def __init__(self, modalities, loss="clip", embedding_dim=128,
                 pairs=None, loss_options=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.modalities = check_unique_strings("ContrastiveHead",
                                               "modalities", modalities)
        if len(self.modalities) < 2:
            raise ValueError(
                f"ContrastiveHead: modalities={list(self.modalities)}; "
                "alignment needs two or more modalities")
        if loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"ContrastiveHead: loss={loss!r} is not one of "
                             f"{', '.join(CONTRASTIVE_LOSSES)}")
        self.loss = loss
        self.embedding_dim = check_positive_int(
            "ContrastiveHead", "embedding_dim", embedding_dim)
        self.pairs = _check_pairs(self.modalities, pairs)
        self.loss_options = _check_loss_options(loss, loss_options)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def default_loss(self):
        return None         # the loss layers add theirs with add_loss

    def default_metrics(self):
        return []

    def build(self, input_shape):
        missing = [m for m in self.modalities if m not in input_shape]
        if missing:
            raise ValueError(
                f"ContrastiveHead: no tower output for {missing}; the towers "
                f"are {sorted(input_shape)}")
        self.projections = {}
        for name in self.modalities:
            dense = keras.layers.Dense(
                self.embedding_dim,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy, name=f"{name}_projection")
            dense.build(tuple(input_shape[name]))
            self.projections[name] = dense
        loss_class = CONTRASTIVE_LOSSES[self.loss]
        self.loss_layers = []
        for a, b in self.pairs:
            layer = loss_class(**self.loss_options, dtype=self.dtype_policy,
                               name=f"{a}_{b}_loss")
            layer.build([(None, self.embedding_dim)] * 2)
            self.loss_layers.append(layer)
        self.built = True

    def embed(self, name, vector):
        """The L2-normalised float32 embedding of modality `name`'s tower
        vector (what the `embed_<name>` serving signature returns)."""
        x = ops.cast(self.projections[name](vector), "float32")
        return ops.normalize(x, axis=-1, order=2)

    def call(self, inputs, training=None):
        embeddings = {m: self.embed(m, inputs[m]) for m in self.modalities}
        for (a, b), layer in zip(self.pairs, self.loss_layers):
            layer([embeddings[a], embeddings[b]])
        return ops.stack([embeddings[m] for m in self.modalities], axis=1)

    def compute_output_shape(self, input_shape):
        batch = tuple(input_shape[self.modalities[0]])[0]
        return (batch, len(self.modalities), self.embedding_dim)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(self.compute_output_shape(
            {k: v.shape for k, v in inputs.items()}), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({
            "modalities": list(self.modalities),
            "loss": self.loss,
            "embedding_dim": self.embedding_dim,
            "pairs": [list(p) for p in self.pairs],
            "loss_options": dict(self.loss_options),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer)})
        return config
