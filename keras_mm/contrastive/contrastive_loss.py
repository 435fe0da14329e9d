import keras
from keras import ops

from keras_mm.contrastive.replicas import gather_replicas


class ContrastiveLoss(keras.layers.Layer):
    """Shared body of the contrastive endpoint layers (`ClipLoss`,
    `SigLipLoss`): L2-normalises both embeddings in float32, gathers the
    global batch under a distribution strategy, adds the loss of the local
    rows against every global column (`add_loss`, in training and in
    evaluation) and returns each pair's logit.

    The scalars are float32 variables read without autocasting, so the
    logits and the loss are float32 under a mixed policy (bfloat16 logits
    at scale 14-100 would round the loss).

    Subclasses create their learnable scalars in `build()` and implement
    `logit_scale()`, `logit_bias()` and `matrix_loss(a, b)` on the
    normalised local rows, using `self.global_columns(x)` (the global batch
    of `x` and each local row's own column in it) and `self.logits(rows,
    columns)` for the scaled similarities.
    """

    def call(self, inputs, training=None, mask=None):
        a, b = (ops.normalize(ops.cast(x, "float32"), axis=-1, order=2)
                for x in inputs)
        self.add_loss(self.matrix_loss(a, b))
        return self.logit_scale() * ops.sum(a * b, axis=-1) + \
            self.logit_bias()

    def global_columns(self, x):
        """`(global_x, targets)`: `x` over every replica, and `targets[i]`,
        the global row of local row i."""
        global_x, offset = gather_replicas(x)
        return global_x, offset + ops.arange(ops.shape(x)[0], dtype="int32")

    def logits(self, rows, columns):
        """`logits[i, j]` of local row i against global column j."""
        return self.logit_scale() * ops.matmul(rows, ops.transpose(columns)) \
            + self.logit_bias()

    def logit_scale(self):
        raise NotImplementedError

    def logit_bias(self):
        return ops.zeros((), "float32")

    def matrix_loss(self, a, b):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])[:1]

    def compute_output_spec(self, inputs, training=None, mask=None):
        return keras.KerasTensor(self.compute_output_shape(
            [inputs[0].shape, inputs[1].shape]), dtype="float32")

    def build(self, input_shape):
        a, b = (tuple(s) for s in input_shape)
        if a[-1] != b[-1]:
            raise ValueError(
                f"{self.__class__.__name__}: the two embeddings have widths "
                f"{a[-1]} and {b[-1]}; project both towers to one "
                "embedding_dim")
        self.built = True


def diagonal_sign(logits, targets):
    """+1 where column j is row i's own pair (`targets[i]`), -1 elsewhere."""
    columns = ops.arange(ops.shape(logits)[1], dtype="int32")
    match = ops.equal(columns[None, :], ops.expand_dims(targets, 1))
    return ops.where(match, 1.0, -1.0)
