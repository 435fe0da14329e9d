"""Choosing a distribution strategy, its precision and its loop.

`resolve_strategy("auto")` picks, in order:
- several workers (`TF_CONFIG` names more than one task):
  `MultiWorkerMirroredStrategy`;
- a TPU (`TPUClusterResolver` finds one): `TPUStrategy`, `mixed_bfloat16`,
  `steps_per_execution` > 1 and `drop_remainder` batches;
- several GPUs: `MirroredStrategy`, `mixed_float16` (Keras wraps the
  optimizer in a `LossScaleOptimizer` at compile time);
- otherwise the default (one device) strategy.

Two Keras 3.15 defects are handled here rather than documented:
- `steps_per_execution > 1` fails under `MirroredStrategy` with more than
  one replica: the plan forces it to 1 there;
- `model.fit` fails under `MultiWorkerMirroredStrategy`
  (keras-team/keras#20585, "Attempt to convert a value (PerReplica...)"):
  the plan selects the custom distributed loop
  (`keras_mm.training.distributed_loop.fit_distributed`).
"""

import contextlib
import dataclasses
import json
import logging
import os

import keras
import tensorflow as tf

from keras_mm.errors import ConfigError, not_one_of

log = logging.getLogger("keras_mm")

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


@dataclasses.dataclass
class StrategyPlan:
    """What `resolve_strategy` chose, and the settings that go with it."""

    strategy: tf.distribute.Strategy
    kind: str
    num_replicas: int
    precision: str
    steps_per_execution: int
    drop_remainder: bool
    use_custom_loop: bool
    is_chief: bool = True
    notes: tuple = ()


def _tf_config_workers():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as e:
        raise ConfigError("TF_CONFIG", f"is not valid JSON ({e})") from e
    return sum(len(v) for k, v in cluster.items() if k in ("worker", "chief"))


def _tf_config_is_chief():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    task = json.loads(raw).get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0 and not any(
        k == "chief" for k in json.loads(raw).get("cluster", {})))


def _find_tpu(tpu):
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, tf.errors.NotFoundError, RuntimeError):
        if tpu:
            raise
        return None


def _mirrored_devices():
    """All GPUs; without GPUs, all logical CPU devices (None: TF's default).

    `MirroredStrategy()` alone takes only `/cpu:0` on a machine without
    GPUs; CPU replicas come from `tf.config.set_logical_device_configuration`
    (e.g. to test multi-replica training on a laptop or CI).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        return [d.name for d in cpus]
    return None


def resolve_strategy(name="auto", precision="auto", steps_per_execution=None,
                     tpu=None):
    """Builds the strategy and its plan.

    Args:
        name: one of `auto`, `default`, `mirrored`, `multi_worker`, `tpu`.
        precision: `auto` (by device), `float32`, `mixed_float16` or
            `mixed_bfloat16`.
        steps_per_execution: requested value; `None` picks one per device.
        tpu: TPU name or address for `TPUClusterResolver`.
    """
    if name not in STRATEGIES:
        raise not_one_of("training.strategy", name, STRATEGIES)
    notes = []
    kind = name
    resolver = None
    if name == "auto":
        if _tf_config_workers() > 1:
            kind = "multi_worker"
        else:
            resolver = _find_tpu(tpu)
            if resolver is not None:
                kind = "tpu"
            elif len(tf.config.list_logical_devices("GPU")) > 1:
                kind = "mirrored"
            else:
                kind = "default"
    if kind == "tpu":
        resolver = resolver or _find_tpu(tpu)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif kind == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=_mirrored_devices())
    else:
        strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync

    if precision == "auto":
        precision = {"tpu": "mixed_bfloat16"}.get(kind, "float32")
        if kind == "mirrored" and tf.config.list_logical_devices("GPU"):
            precision = "mixed_float16"
    if steps_per_execution is None:
        steps_per_execution = 32 if kind == "tpu" else 1
    if kind in ("mirrored", "multi_worker") and replicas > 1 \
            and steps_per_execution > 1:
        notes.append(
            f"steps_per_execution={steps_per_execution} fails under "
            f"{type(strategy).__name__} with {replicas} replicas in Keras "
            "3.15; using 1")
        steps_per_execution = 1
    use_custom_loop = kind == "multi_worker"
    if use_custom_loop:
        notes.append("model.fit fails under MultiWorkerMirroredStrategy in "
                     "Keras 3.15 (keras-team/keras#20585); using the "
                     "keras_mm distributed loop")
    for note in notes:
        log.info(note)
    return StrategyPlan(
        strategy=strategy, kind=kind, num_replicas=replicas,
        precision=precision, steps_per_execution=int(steps_per_execution),
        drop_remainder=kind == "tpu", use_custom_loop=use_custom_loop,
        is_chief=_tf_config_is_chief() if kind == "multi_worker" else True,
        notes=tuple(notes))


@contextlib.contextmanager
def global_state(precision, deterministic):
    """Sets the dtype policy (a `StrategyPlan`'s `precision`) and op
    determinism for one run; restores both after it."""
    from tensorflow.python.framework import config as tf_config

    policy = keras.config.dtype_policy()
    was_deterministic = tf_config.is_op_determinism_enabled()
    keras.config.set_dtype_policy(precision)
    if deterministic and not was_deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)
        if deterministic and not was_deterministic:
            tf_config.disable_op_determinism()


