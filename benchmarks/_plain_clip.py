"""The plain-Keras CLIP dual encoder of `retrieval_av_mnist.py`'s
throughput rounds.

`plain_clip_twin(toolkit, probe, lr)` writes a keras_mm CLIP dual encoder
(`build_model` spec with `fusion: none` and one `contrastive` head named
`align`, CLIP loss) again in plain Keras: the same tower layers
(`ImageTower` / `AudioTower` rebuilt from the keras_mm model's tower
configs), `Dense` projections, L2 normalisation and a hand-written
symmetric InfoNCE loss with CLIP's learnable, clipped temperature in a
`keras.Model.train_step`. It copies every keras_mm weight in (checked by
count), compiles it with Adam, and checks that both models give the same
embeddings and the same loss on `probe` before anything is timed.
"""

import math

MODALITIES = ("image", "audio")


def _plain_dual_encoder(toolkit, modalities):
    """The (unbuilt) plain Keras model of `toolkit`."""
    import keras
    import tensorflow as tf
    from keras import ops

    clip = toolkit.get_layer("align").loss_layers[0]

    class PlainDualEncoder(keras.Model):
        def __init__(self):
            super().__init__(name="plain_keras_dual_encoder")
            self.towers = {}
            self.projections = {}
            for name in modalities:
                tower = toolkit.get_layer(f"{name}_tower")
                self.towers[name] = type(tower).from_config(
                    tower.get_config())
                self.projections[name] = keras.layers.Dense(
                    toolkit.get_layer("align").embedding_dim,
                    name=f"{name}_projection")
            self.log_scale = self.add_weight(
                name="log_scale", shape=(),
                initializer=keras.initializers.Constant(
                    math.log(1.0 / clip.temperature)))
            self.max_log_scale = math.log(clip.max_scale)
            self.loss_tracker = keras.metrics.Mean(name="loss")

        def call(self, x, training=False):
            return ops.stack([ops.normalize(self.projections[name](
                self.towers[name](x[name], training=training)), axis=-1)
                for name in modalities], axis=1)

        def info_nce(self, emb):
            scale = ops.exp(ops.minimum(self.log_scale, self.max_log_scale))
            logits = scale * ops.matmul(emb[:, 0], ops.transpose(emb[:, 1]))
            targets = ops.arange(ops.shape(logits)[0])
            ab = keras.losses.sparse_categorical_crossentropy(
                targets, logits, from_logits=True)
            ba = keras.losses.sparse_categorical_crossentropy(
                targets, ops.transpose(logits), from_logits=True)
            return (ops.mean(ab) + ops.mean(ba)) / 2.0

        def train_step(self, data):
            with tf.GradientTape() as tape:
                loss = self.info_nce(self(data, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}

        def test_step(self, data):
            self.loss_tracker.update_state(
                self.info_nce(self(data, training=False)))
            return {"loss": self.loss_tracker.result()}

        @property
        def metrics(self):
            return [self.loss_tracker]

    return PlainDualEncoder()


def _copy_weights(toolkit, plain, probe, modalities):
    """Builds `plain` on `probe` and copies every `toolkit` weight in."""
    plain(probe)
    head = toolkit.get_layer("align")
    copied = 0
    for name in modalities:
        source = toolkit.get_layer(f"{name}_tower")
        plain.towers[name].set_weights(source.get_weights())
        plain.projections[name].set_weights(
            head.projections[name].get_weights())
        copied += len(source.weights) + len(head.projections[name].weights)
    plain.log_scale.assign(head.loss_layers[0].log_scale)
    copied += 1
    if copied != len(toolkit.weights) or copied != len(plain.weights):
        raise RuntimeError(
            f"weight copy incomplete: copied {copied} of "
            f"{len(toolkit.weights)} keras_mm weights into a model of "
            f"{len(plain.weights)}")


def plain_clip_twin(toolkit, probe, lr, modalities=MODALITIES):
    """The plain Keras twin of the keras_mm CLIP dual encoder `toolkit`,
    with its weights, compiled (Adam `lr`), checked on the batch `probe`.

    Returns `(plain, check)`, `check` holding `embedding_max_diff` (max
    |difference| of the two models' embeddings of `probe`) and
    `toolkit_loss` / `plain_loss` (their losses on it). Raises a
    RuntimeError when a weight is left out or the embeddings differ by
    more than 1e-4 or the losses by more than 1e-4 relative."""
    import keras
    import numpy as np

    plain = _plain_dual_encoder(toolkit, modalities)
    _copy_weights(toolkit, plain, probe, modalities)
    plain.compile(optimizer=keras.optimizers.Adam(lr))
    batch_size = len(next(iter(probe.values())))
    a = np.asarray(toolkit.predict(probe, verbose=0)["align"])
    b = np.asarray(plain.predict(probe, verbose=0))
    emb_diff = float(np.max(np.abs(a - b)))
    loss_a = toolkit.evaluate(probe, batch_size=batch_size, verbose=0)
    loss_b = plain.evaluate(probe, batch_size=batch_size, verbose=0)
    loss_a = float(loss_a[0] if isinstance(loss_a, list) else loss_a)
    loss_b = float(loss_b[0] if isinstance(loss_b, list) else loss_b)
    if emb_diff > 1e-4 or abs(loss_a - loss_b) > 1e-4 * max(1.0, loss_a):
        raise RuntimeError(
            f"the plain Keras dual encoder differs from the keras_mm one "
            f"(embeddings max |diff| {emb_diff:.2e}, loss {loss_a:.5f} vs "
            f"{loss_b:.5f}): not the same model")
    return plain, {"embedding_max_diff": emb_diff, "toolkit_loss": loss_a,
                   "plain_loss": loss_b}
