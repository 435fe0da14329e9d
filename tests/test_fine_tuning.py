"""Fine-tuning controls: per-tower learning-rate multipliers (the
`<Name>WithMultipliers` optimizers) and the frozen warm-up (`FrozenWarmup`,
`training.fine_tuning` in a recipe).

Real optimizer steps on small keras_mm models (a text bag-of-words tower
and a sensor GRU tower) and on a plain Keras model; three tiny training
runs of `tiny_recipe` (test_training.py) for the recipe keys, the run notes
and an interrupted-then-resumed run.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_mm
from keras_mm.errors import ConfigError
from keras_mm.recipes import normalize_recipe
from keras_mm.training import fine_tuning, optimizers, train
from keras_mm.training.fine_tuning import FrozenWarmup
from keras_mm.training.optimizers import (AdamWithMultipliers,
                                          AdamWWithMultipliers,
                                          SGDWithMultipliers)
from test_training import tiny_recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = {
    "inputs": {
        "text": {"modality": "text", "shape": [8], "vocab_size": 40,
                 "tower": {"encoder": "bag", "dim": 8, "embedding_dim": 8}},
        "sensor": {"modality": "sensor", "shape": [12, 3],
                   "tower": {"encoder": "gru", "dim": 8}},
    },
    # Fed by hand below, without a `presence` column.
    "fusion": {"type": "concat", "presence_mask": False},
    "heads": {"label": {"type": "classification", "num_classes": 3}},
}


# -- helpers ------------------------------------------------------------------


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = {"text": rng.integers(1, 40, size=(n, 8)).astype("int32"),
         "sensor": rng.normal(size=(n, 12, 3)).astype("float32"),
         "sensor_mask": np.arange(12)[None, :] < rng.integers(
             4, 13, size=(n, 1))}
    return x, {"label": rng.integers(0, 3, size=(n,)).astype("int32")}


def _model(optimizer, weights=None):
    keras.utils.set_random_seed(0)
    model = keras_mm.build_model(SPEC)
    if weights is not None:
        model.set_weights(weights)
    keras_mm.compile_model(model, SPEC, optimizer=optimizer,
                           jit_compile=False)
    return model


def _values(model):
    return {v.path: np.array(v.numpy()) for v in model.trainable_weights}


def _step(optimizer, weights=None):
    """(weights before, weights after) of one `train_on_batch`."""
    model = _model(optimizer, weights)
    before = _values(model)
    model.train_on_batch(*_batch())
    return model, before, _values(model)


def _tower(path):
    return path.split("/")[0]


# -- learning-rate multipliers ------------------------------------------------


@pytest.mark.parametrize("schedule", [False, True])
def test_sgd_tower_update_is_m_times_the_plain_update(schedule):
    def rate():
        if schedule:                    # the rate reaches the step as a tensor
            return keras.optimizers.schedules.ExponentialDecay(0.5, 10, 0.5)
        return 0.5

    m = 0.25
    _, w0, plain_w1 = _step(keras.optimizers.SGD(rate()))
    _, w0b, scaled_w1 = _step(SGDWithMultipliers(
        rate(), learning_rate_multipliers={"text_tower/": m}))
    moved = 0
    for path, start in w0.items():
        assert np.array_equal(start, w0b[path]), path   # same initial weights
        plain_delta = plain_w1[path].astype("float64") - start
        scaled_delta = scaled_w1[path].astype("float64") - start
        if _tower(path) == "text_tower":
            # Exactly m x the plain update, up to the rounding of w - step.
            tolerance = 3 * np.spacing(np.maximum(np.abs(start),
                                                  np.abs(plain_w1[path])))
            assert np.all(np.abs(scaled_delta - m * plain_delta)
                          <= tolerance), path
            moved += int(np.sum(np.abs(plain_delta) > 10 * tolerance))
        else:                           # the other variables: the plain step
            assert np.array_equal(scaled_w1[path], plain_w1[path]), path
    assert moved > 10, "the text tower hardly moved: the check says nothing"


def test_adam_multiplier_zero_freezes_and_half_halves_the_first_step():
    _, w0, full = _step(keras.optimizers.Adam(0.01))
    _, _, half = _step(AdamWithMultipliers(
        0.01, learning_rate_multipliers={"text_tower/": 0.5}))
    frozen_model, _, frozen = _step(AdamWithMultipliers(
        0.01, learning_rate_multipliers={"text_tower": 0.0}))
    for path, start in w0.items():
        if _tower(path) == "text_tower":
            assert np.array_equal(frozen[path], start), path
            full_delta = full[path].astype("float64") - start
            half_delta = half[path].astype("float64") - start
            tolerance = 3 * np.spacing(np.abs(start)) + 1e-9
            assert np.all(np.abs(half_delta - 0.5 * full_delta)
                          <= tolerance), path
            # Adam's first step is about lr in size: a real step.
            assert np.max(np.abs(full_delta)) > 1e-3, path
        else:
            assert not np.array_equal(frozen[path], start), path
            assert np.array_equal(half[path], full[path]), path
    # m = 0 skips the group: its moments stay zero too.
    optimizer = frozen_model.optimizer
    for variable in optimizer.variables:
        if "text_tower" in variable.path:
            assert not np.any(variable.numpy()), variable.path


def test_weight_decay_uses_the_group_rate():
    with keras.name_scope("a_tower"):
        a = keras.Variable(np.full((3,), 2.0, "float32"), name="w")
    with keras.name_scope("b_tower"):
        b = keras.Variable(np.full((3,), 2.0, "float32"), name="w")
    c = keras.Variable(np.full((3,), 2.0, "float32"), name="c")
    optimizer = AdamWWithMultipliers(
        learning_rate=0.5, weight_decay=0.1,
        learning_rate_multipliers={"a_tower/": 0.5, "b_tower/": 0.0})
    zeros = [keras.ops.zeros((3,))] * 3     # Adam moves nothing: decay only
    optimizer.apply(zeros, [a, b, c])
    np.testing.assert_allclose(c.numpy(), 2.0 - 2.0 * 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(a.numpy(), 2.0 - 2.0 * 0.1 * 0.25, rtol=1e-6)
    assert np.array_equal(b.numpy(), np.full((3,), 2.0, "float32"))
    assert float(optimizer.learning_rate) == 0.5    # the base rate is kept


def test_every_recipe_optimizer_has_a_registered_multiplier_class():
    from keras_mm.recipes.schema import OPTIMIZERS

    for name in OPTIMIZERS.values():
        cls = optimizers.with_multipliers(getattr(keras.optimizers, name))
        assert cls.__name__ == f"{name}WithMultipliers"
        assert getattr(optimizers, cls.__name__) is cls
        registered = keras.saving.get_registered_name(cls)
        assert registered == f"keras_mm>{cls.__name__}"
        assert keras.saving.get_registered_object(registered) is cls
        optimizer = cls(learning_rate_multipliers={"text_tower/": 0.1,
                                                   "sensor_tower/": 2})
        config = optimizer.get_config()
        again = keras.optimizers.deserialize(
            keras.optimizers.serialize(optimizer))
        assert type(again) is cls
        assert again.get_config() == config
        assert config["learning_rate_multipliers"] == {
            "text_tower/": 0.1, "sensor_tower/": 2.0}


def test_bad_multiplier_arguments_name_the_class_and_value():
    with pytest.raises(ValueError, match=r"AdamWithMultipliers: "
                       r"learning_rate_multipliers\['text_tower/'\]=-1"):
        AdamWithMultipliers(learning_rate_multipliers={"text_tower/": -1})
    with pytest.raises(ValueError, match="is not a mapping"):
        AdamWithMultipliers(learning_rate_multipliers=[0.1])


LOAD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras_mm
    import keras_mm.training.optimizers
    model = keras_mm.load_model(sys.argv[1], compile=True)
    optimizer = model.optimizer
    print(json.dumps({
        "class": type(optimizer).__name__,
        "multipliers": optimizer.get_config()["learning_rate_multipliers"],
        "iterations": int(optimizer.iterations.numpy()),
        "slots": float(sum(np.abs(v.numpy()).sum()
                           for v in optimizer.variables)),
    }))
""")


@pytest.mark.slow  # a fresh process / a full run: CI's slow set
def test_keras_file_with_the_optimizer_loads_compiled_in_a_new_process(
        tmp_path):
    model, _, _ = _step(AdamWithMultipliers(
        0.01, learning_rate_multipliers={"text_tower/": 0.5}))
    slots = float(sum(np.abs(v.numpy()).sum()
                      for v in model.optimizer.variables))
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep
               + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", LOAD, path], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["class"] == "AdamWithMultipliers"
    assert loaded["multipliers"] == {"text_tower/": 0.5}
    assert loaded["iterations"] == 1
    assert loaded["slots"] == pytest.approx(slots, rel=1e-6) and slots > 0


# -- recipe keys --------------------------------------------------------------


def _normalized(tmp_path, fine_tuning_section):
    recipe = tiny_recipe(tmp_path / "data", generate=False)
    recipe["training"]["fine_tuning"] = fine_tuning_section
    return normalize_recipe(recipe)


def test_recipe_fine_tuning_keys_are_checked_against_the_inputs(tmp_path):
    with pytest.raises(ConfigError) as error:
        _normalized(tmp_path, {"learning_rate_multipliers": {"txt": 0.1}})
    assert error.value.key_path == \
        "training.fine_tuning.learning_rate_multipliers.txt"
    assert "text, sensor" in str(error.value)
    with pytest.raises(ConfigError) as error:
        _normalized(tmp_path, {"frozen_epochs": 1, "towers": ["photo"]})
    assert error.value.key_path == "training.fine_tuning.towers[0]"
    # No pretrained input: a warm-up must name its towers.
    with pytest.raises(ConfigError) as error:
        _normalized(tmp_path, {"frozen_epochs": 1})
    assert error.value.key_path == "training.fine_tuning.frozen_epochs"
    assert "training.fine_tuning.towers" in str(error.value)
    with pytest.raises(ConfigError, match="learning_rate_multipliers.text"):
        _normalized(tmp_path, {"learning_rate_multipliers": {"text": -1}})
    recipe = _normalized(tmp_path, {"frozen_epochs": 2, "towers": "text",
                                    "learning_rate_multipliers": {"text": 1}})
    assert recipe["training"]["fine_tuning"] == {
        "frozen_epochs": 2, "towers": ["text"],
        "learning_rate_multipliers": {"text": 1.0}}
    assert _normalized(tmp_path, None)["training"]["fine_tuning"] is None


def test_warmup_defaults_to_the_pretrained_inputs():
    from keras_mm.recipes.schema import warmup_towers

    inputs = {"review": {"modality": "text", "preset": "/models/bert"},
              "photo": {"modality": "image", "hub": {"encoder": "/m"}},
              "sensor": {"modality": "sensor"}}
    assert warmup_towers({"frozen_epochs": 1}, inputs) == ["review", "photo"]
    assert warmup_towers({"towers": ["sensor", "gone"]}, inputs) == \
        ["sensor"]


def test_multiplier_paths_of_every_scratch_tower_and_a_misplaced_one():
    spec = {"inputs": {
        "image": {"modality": "image", "shape": [32, 32, 3],
                  "tower": {"encoder": "cnn", "dim": 8}},
        "vit": {"modality": "image", "shape": [32, 32, 3],
                "tower": {"encoder": "vit", "dim": 16, "num_layers": 1}},
        "audio": {"modality": "audio", "shape": [800],
                  "tower": {"encoder": "cnn", "dim": 8}},
        "text": {"modality": "text", "shape": [8], "vocab_size": 40,
                 "tower": {"encoder": "transformer", "dim": 16,
                           "num_layers": 1}},
        "sensor": {"modality": "sensor", "shape": [12, 3],
                   "tower": {"encoder": "gru", "dim": 8}},
        "tab": {"modality": "tabular", "numeric": 3, "categorical": [4]},
    }, "fusion": {"type": "concat"},
        "heads": {"label": {"type": "classification", "num_classes": 3}}}
    model = keras_mm.build_model(spec)
    section = {"learning_rate_multipliers": {n: 0.1 for n in spec["inputs"]}}
    fine_tuning.check_multiplier_paths(model, section)      # no error

    class Misplaced(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(2, name="outside")
            self.inner.build((None, 3))     # built outside this scope

        def call(self, x):
            return self.inner(x)

    x = keras.Input((3,))
    bad = keras.Model(x, Misplaced(name="text_tower")(x))
    with pytest.raises(ConfigError) as error:
        fine_tuning.check_multiplier_paths(
            bad, {"learning_rate_multipliers": {"text": 0.1}})
    assert error.value.key_path == \
        "training.fine_tuning.learning_rate_multipliers.text"
    assert "outside/kernel" in str(error.value)


def test_warmup_is_refused_in_the_distributed_loop():
    warmup = FrozenWarmup(["text_tower"], 1)
    fine_tuning.refuse_custom_loop(warmup, False)
    fine_tuning.refuse_custom_loop(None, True)
    with pytest.raises(ConfigError) as error:
        fine_tuning.refuse_custom_loop(warmup, True, "MultiWorkerMirrored")
    assert error.value.key_path == "training.fine_tuning.frozen_epochs"


# -- the frozen warm-up on a plain Keras model --------------------------------


@keras.saving.register_keras_serializable(package="keras_mm_tests")
class TwoBlocks(keras.layers.Layer):
    """A tower of two Dense blocks (Layer's trainable setter recurses)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d1 = keras.layers.Dense(4, name="d1")
        self.d2 = keras.layers.Dense(4, name="d2")

    def build(self, input_shape):
        self.d1.build(input_shape)
        self.d2.build((input_shape[0], 4))

    def call(self, inputs):
        return self.d2(self.d1(inputs))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4)


def _plain_model(jit_compile):
    keras.utils.set_random_seed(1)
    x = keras.Input((4,), name="x")
    tower = TwoBlocks(name="a_tower")
    other = keras.layers.Dense(4, name="b_tower")
    head = keras.layers.Dense(1, name="head")
    model = keras.Model(x, head(keras.layers.concatenate(
        [tower(x), other(x)])))
    # A tower's own settings the warm-up must give back: a frozen block
    # (trainable_blocks) and a frozen variable (LoRA freezes kernels).
    tower.d2.trainable = False
    tower.d1.bias.trainable = False
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
    return model


class _Record(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start = {v.path: v.numpy().copy() for v in self.model.weights}
        self.epochs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = {v.path: v.numpy().copy()
                              for v in self.model.weights}


def _plain_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_warmup_freezes_then_restores_the_towers_own_flags(tmp_path,
                                                          jit_compile):
    model = _plain_model(jit_compile)
    assert model.jit_compile is jit_compile
    record = _Record()
    warmup = FrozenWarmup(["a_tower"], frozen_epochs=1)
    checkpoint = keras.callbacks.ModelCheckpoint(
        os.fspath(tmp_path / "epoch{epoch}.keras"))
    model.fit(*_plain_data(), batch_size=8, epochs=3, verbose=0,
              callbacks=[warmup, record, checkpoint])
    start, first, last = record.start, record.epochs[0], record.epochs[2]
    d1, d2 = "a_tower/d1/kernel", "a_tower/d2/kernel"
    assert np.array_equal(first[d1], start[d1])         # frozen in epoch 1
    assert not np.array_equal(last[d1], first[d1])      # trains after it
    assert not np.array_equal(first["b_tower/kernel"], start["b_tower/kernel"])
    # Its frozen block and frozen variable stay frozen after the warm-up.
    assert np.array_equal(last[d2], start[d2])
    assert np.array_equal(last["a_tower/d1/bias"], start["a_tower/d1/bias"])
    tower = model.get_layer("a_tower")
    assert tower.trainable and tower.d1.trainable
    assert not tower.d2.trainable and not tower.d1.bias.trainable
    # The checkpoint written in the warm-up keeps the tower's own flag.
    saved = keras.saving.load_model(tmp_path / "epoch1.keras", compile=False)
    assert saved.get_layer("a_tower").trainable
    assert warmup.notes == [
        "fine_tuning: a_tower frozen for epochs 1-1 (warm-up), then trained",
        "fine_tuning: a_tower unfrozen at the start of epoch 2"]


@pytest.mark.parametrize("initial_epoch,frozen", [(1, [True, False]),
                                                  (2, [False])])
def test_warmup_state_follows_the_epoch_on_resume(initial_epoch, frozen):
    model = _plain_model(False)
    record = _Record()
    warmup = FrozenWarmup(["a_tower"], frozen_epochs=2)
    model.fit(*_plain_data(), batch_size=8, epochs=3, verbose=0,
              initial_epoch=initial_epoch, callbacks=[warmup, record])
    previous = record.start
    for epoch, was_frozen in zip(range(initial_epoch, 3), frozen):
        now = record.epochs[epoch]
        same = np.array_equal(now["a_tower/d1/kernel"],
                              previous["a_tower/d1/kernel"])
        assert same is was_frozen, epoch
        previous = now
    if initial_epoch >= 2:
        assert "ended before the resume" in warmup.notes[0]


# -- training runs ------------------------------------------------------------


FINE_TUNING = {"frozen_epochs": 1, "towers": ["text"],
               "learning_rate_multipliers": {"text": 0.5}}


def _recipe(tmp_path):
    recipe = tiny_recipe(tmp_path / "data", epochs=3, sizes=(24, 8, 8),
                         deterministic=True, fine_tuning=dict(FINE_TUNING))
    recipe["evaluation"] = {"splits": []}       # no evaluation: faster
    return recipe


class _Crash(keras.callbacks.Callback):
    """Stops the process-like run at the start of epoch 2 (after the
    backup of epoch 1)."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("killed")


@pytest.fixture(scope="module")
def warmup_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("warmup")
    record = _Record()
    result = train(_recipe(tmp_path), export=False, verbose=0,
                   runs_dir=tmp_path / "runs", callbacks=[record])
    return tmp_path, result, record


@pytest.mark.slow  # a fresh process / a full run: CI's slow set
def test_recipe_warmup_run_freezes_then_trains_the_tower(warmup_run):
    tmp_path, result, record = warmup_run
    assert type(result.model.optimizer).__name__ == "AdamWithMultipliers"
    start, first, last = record.start, record.epochs[0], record.epochs[2]
    text = [p for p in start if p.startswith("text_tower/")]
    sensor = [p for p in start if p.startswith("sensor_tower/")]
    assert text and sensor
    for path in text:
        assert np.array_equal(first[path], start[path]), path
        assert not np.array_equal(last[path], start[path]), path
    for path in sensor:
        assert not np.array_equal(first[path], start[path]), path
    with open(os.path.join(result.run_dir, "run.json")) as f:
        notes = json.load(f)["notes"]
    assert "fine_tuning: text_tower unfrozen at the start of epoch 2" in notes


@pytest.mark.slow  # a fresh process / a full run: CI's slow set
def test_resumed_run_ends_with_the_uninterrupted_weights(warmup_run,
                                                         tmp_path):
    _, uninterrupted, _ = warmup_run
    recipe = _recipe(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, export=False, verbose=0, runs_dir=tmp_path / "runs",
              callbacks=[_Crash()])
    resumed = train(recipe, export=False, verbose=0,
                    runs_dir=tmp_path / "runs")
    assert resumed.resumed_from_epoch == 1
    expected = {v.path: v.numpy() for v in uninterrupted.model.weights}
    for variable in resumed.model.weights:
        np.testing.assert_array_equal(variable.numpy(),
                                      expected[variable.path],
                                      err_msg=variable.path)
    with open(os.path.join(resumed.run_dir, "run.json")) as f:
        notes = json.load(f)["notes"]
    assert any("trained from epoch 2" in note for note in notes), notes


DISTRIBUTED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import keras_mm
    from keras_mm.training import fit_distributed
    from keras_mm.training.optimizers import AdamWithMultipliers
    sys.path.insert(0, sys.argv[1])
    from test_fine_tuning import SPEC, _batch

    def run(strategy, m, policy="float32"):
        keras.config.set_dtype_policy(policy)
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras_mm.build_model(SPEC)
            keras_mm.compile_model(model, SPEC, jit_compile=False,
                                   optimizer=AdamWithMultipliers(
                0.01, learning_rate_multipliers={"text_tower/": m}))
        start = {v.path: v.numpy().copy() for v in model.trainable_weights}
        data = tf.data.Dataset.from_tensor_slices(_batch(16)).batch(16)
        fit_distributed(model, data, epochs=1, strategy=strategy, verbose=0)
        keras.config.set_dtype_policy("float32")
        return type(model.optimizer).__name__, start, {
            v.path: v.numpy() for v in model.trainable_weights}

    def text_frozen(start, end):
        return all(np.array_equal(start[p], end[p]) for p in start
                   if p.startswith("text_tower/"))

    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = tf.distribute.get_strategy()
    _, start, mirrored = run(two, 0.5)
    _, _, single = run(one, 0.5)
    _, start0, mirrored0 = run(two, 0.0)
    name, start16, mixed0 = run(one, 0.0, "mixed_float16")
    print(json.dumps({
        "diff": max(float(np.max(np.abs(mirrored[p] - single[p])))
                    for p in single),
        "moved": not text_frozen(start, mirrored),
        "frozen_mirrored": text_frozen(start0, mirrored0),
        "frozen_mixed": text_frozen(start16, mixed0),
        "mixed_optimizer": name}))
""")


@pytest.mark.slow
def test_multipliers_under_two_replicas_and_mixed_precision():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep
               + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED, os.path.join(REPO, "tests")],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["diff"] < 1e-6 and report["moved"], report
    assert report["frozen_mirrored"] and report["frozen_mixed"], report
    assert report["mixed_optimizer"] == "LossScaleOptimizer"
