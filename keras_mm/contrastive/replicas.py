"""The global batch of a per-replica tensor, for in-batch negatives."""

import tensorflow as tf


def gather_replicas(x):
    """`(global_x, offset)`: `x` concatenated along axis 0 over the replicas
    of the current `tf.distribute` replica context, and the row of the
    global batch where this replica's rows start.

    Outside a multi-replica context it is `(x, 0)`. The gradient of the
    gather is TF's (`ReplicaContext.all_gather`: the upstream gradients of
    every replica summed, this replica's slice kept), so a loss over local
    rows against global columns trains as the one-device loss over the
    global batch. Replicas may hold different numbers of rows (the last
    batch of an epoch)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x, 0
    sizes = context.all_gather(tf.shape(x)[:1], axis=0)
    offset = tf.reduce_sum(sizes[:context.replica_id_in_sync_group])
    return context.all_gather(x, axis=0), offset
