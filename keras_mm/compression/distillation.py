"""Knowledge distillation: a student trained on a teacher's soft targets.

The loss of a training batch (Hinton et al., 2015) is

    alpha * L_labels + (1 - alpha) * sum_h T^2 * KL(q_teacher,h || q_student,h)

where `L_labels` is the student's compiled loss (its heads' losses, their
weights, regularizers) and, for each classification or binary head `h`,
`q = softmax(log(p) / T)` are the head's probabilities softened by the
temperature `T` (a binary head's `p` is `[1 - p, p]`). `T^2` keeps the
soft term's gradients at the scale of the label term's. Other heads
(regression, multi-label, contrastive) keep their label loss only.

The teacher is frozen and called in inference mode on the same batch; it
is attached to the student without being tracked, so the student's
checkpoints, exports and weights hold the student only. Evaluation and
validation use the label loss alone.

A student may take fewer inputs than its teacher (the modalities a device
has). Its training batches then carry the teacher's inputs, and each
train step gives the student its own: the batch cut to the student's
input names, with the presence input's columns gathered to the student's
modalities (`Distillation.split`).
"""

import contextlib

import keras
import tensorflow as tf

SOFT_HEAD_TYPES = ("classification", "binary")
_ATTRIBUTE = "_keras_mm_distillation"


def _probabilities(value, kind):
    value = tf.cast(value, tf.float32)
    if kind == "binary":
        value = tf.concat([1.0 - value, value], axis=-1)
    return value


def soft_target_loss(teacher_probs, student_probs, temperature, kind=
                     "classification"):
    """`T^2 * KL(q_teacher || q_student)`, the batch mean, with `q =
    softmax(log(p) / T)`.

    Args:
        teacher_probs, student_probs: `(batch, classes)` probabilities
            (`(batch, 1)` sigmoid outputs for `kind="binary"`).
        temperature: `T` > 0.
        kind: `"classification"` or `"binary"`.
    """
    eps = 1e-7
    t = tf.constant(float(temperature), tf.float32)
    teacher = _probabilities(teacher_probs, kind)
    student = _probabilities(student_probs, kind)
    log_q_t = tf.nn.log_softmax(tf.math.log(teacher + eps) / t, axis=-1)
    log_q_s = tf.nn.log_softmax(tf.math.log(student + eps) / t, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_q_t) * (log_q_t - log_q_s), axis=-1)
    return t * t * tf.reduce_mean(kl)


class Distillation:
    """A frozen teacher and the soft-target settings of a student.

    Args:
        teacher: the teacher `keras.Model` (same input names as the
            student; a dict of outputs named after the heads).
        heads: `{head name: "classification" | "binary"}`: the student's
            heads that learn from the teacher's head of the same name.
        temperature: `T` > 0.
        alpha: weight of the label loss, in [0, 1].
        student_inputs: the student's input names, when its training
            batches carry the teacher's inputs (more modalities, or a
            presence input only one of them takes); None: both take the
            same batch.
        teacher_inputs: the teacher's input names, likewise.
        presence_columns: with `student_inputs`, the columns of the
            batch's presence input that are the student's modalities, in
            the student's presence order.

    Example:

    >>> import numpy as np
    >>> x = keras.Input((3,), name="x")
    >>> def tiny(seed):
    ...     out = keras.layers.Dense(4, activation="softmax", name="y",
    ...         kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    ...     return keras.Model({"x": x}, {"y": out})
    >>> student, teacher = tiny(1), tiny(2)
    >>> student.compile("sgd", {"y": "sparse_categorical_crossentropy"})
    >>> student = Distillation(teacher, {"y": "classification"}, 2.0,
    ...                        0.5).attach(student)
    >>> batch = {"x": np.ones((2, 3), "float32")}
    >>> loss = Distillation.of(student).loss(
    ...     student, batch, student(batch), tf.constant(1.0))
    >>> bool(loss.numpy() > 0.5)
    True
    """

    def __init__(self, teacher, heads, temperature=4.0, alpha=0.5,
                 student_inputs=None, teacher_inputs=None,
                 presence_columns=None):
        if not heads:
            raise ValueError("distillation needs a classification or "
                             "binary head")
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError(f"alpha {alpha} must be in [0, 1] and "
                             f"temperature {temperature} above 0")
        self.teacher = teacher
        self.heads = dict(heads)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.student_inputs = None if student_inputs is None else list(
            student_inputs)
        self.teacher_inputs = None if teacher_inputs is None else list(
            teacher_inputs)
        self.presence_columns = None if presence_columns is None else list(
            presence_columns)
        self._teacher_batch = None
        teacher.trainable = False

    def attach(self, model):
        """Makes `model.compute_loss` (a `MultimodalModel`'s) add the
        soft-target term in training; the teacher is not tracked."""
        object.__setattr__(model, _ATTRIBUTE, self)
        return model

    @staticmethod
    def of(model):
        """The `Distillation` attached to `model`, or None."""
        return model.__dict__.get(_ATTRIBUTE)

    def split(self, x):
        """`(student's inputs, teacher's inputs)` of a training batch `x`
        (a dict); both are `x` when the two take the same inputs."""
        if self.student_inputs is None:
            return x, x
        student = {k: x[k] for k in self.student_inputs}
        if "presence" in student and self.presence_columns is not None:
            student["presence"] = tf.gather(
                x["presence"], self.presence_columns, axis=1)
        teacher = x if self.teacher_inputs is None else {
            k: x[k] for k in self.teacher_inputs}
        return student, teacher

    @contextlib.contextmanager
    def teacher_batch(self, x):
        """Within it, `loss` runs the teacher on `x` (the training batch
        in the teacher's inputs) rather than on the student's."""
        self._teacher_batch = x
        try:
            yield
        finally:
            self._teacher_batch = None

    def soft_loss(self, teacher_pred, y_pred):
        """The sum over the distilled heads of `soft_target_loss`."""
        total = tf.constant(0.0, tf.float32)
        for head, kind in self.heads.items():
            total += soft_target_loss(teacher_pred[head], y_pred[head],
                                      self.temperature, kind)
        return total

    def loss(self, model, x, y_pred, label_loss):
        """`alpha * label_loss + (1 - alpha) * soft_loss` on a batch."""
        if self._teacher_batch is not None:
            x = self._teacher_batch
        teacher_pred = self.teacher(x, training=False)
        teacher_pred = tf.nest.map_structure(tf.stop_gradient, teacher_pred)
        soft = self.soft_loss(teacher_pred, y_pred)
        label_loss = tf.cast(label_loss, tf.float32)
        total = self.alpha * label_loss + (1.0 - self.alpha) * soft
        return keras.ops.cast(total, label_loss.dtype)
