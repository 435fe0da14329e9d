"""Runs as users bring them (issue 12, "Runs"): a finished run is not
overwritten, one name renames run and export, single-input runs of the
scoreboard are reused while unchanged, `data.cache: memory` parses once and
gives the uncached batches, per-phase times in run.json, and a plain
`keras.models.load_model` after `import keras_mm`.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from test_training import tiny_recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recipe(tmp_path, name="runs_a", **training):
    recipe = tiny_recipe(tmp_path / "demo", name=name, epochs=2,
                         sizes=(24, 8, 8), **training)
    recipe["training"]["runs_dir"] = os.fspath(tmp_path / "runs")
    recipe["export"] = {"base_dir": os.fspath(tmp_path / "saved"),
                        "golden_examples": 2, "verify": False,
                        "allow_untrained": True}
    return recipe


def test_rerun_of_a_finished_run_is_refused(tmp_path):
    from keras_mm.errors import ConfigError
    from keras_mm.training import train

    recipe = _recipe(tmp_path, name="done", generate=False)
    run_dir = tmp_path / "runs" / "done"
    run_dir.mkdir(parents=True)
    info = {"name": "done", "finished": True,
            "finished_at": "2026-12-01T10:00:00Z",
            "export_path": os.fspath(tmp_path / "saved" / "done" / "1")}
    (run_dir / "run.json").write_text(json.dumps(info))
    (run_dir / "best.keras").write_bytes(b"kept")
    with pytest.raises(ConfigError,
                       match=r"already holds the finished run 'done' on "
                       r"2026-12-01T10:00:00Z, exported to .*done.1; .*"
                       r"--set name=done-2.*--overwrite"):
        train(recipe, verbose=0)
    assert (run_dir / "best.keras").read_bytes() == b"kept"
    assert sorted(os.listdir(run_dir)) == ["best.keras", "run.json"]
    assert not (tmp_path / "demo").exists()    # nothing generated either


@pytest.mark.slow
def test_finished_runs_names_and_reused_unimodal_runs(tmp_path, capsys):
    from keras_mm.errors import ConfigError
    from keras_mm.training import train

    recipe = _recipe(tmp_path)
    recipe["evaluation"]["compare_unimodal"] = True
    first = train(recipe, verbose=2)
    out = capsys.readouterr().out
    assert out.count("training the text-only model of the scoreboard") == 1
    assert first.export_path == os.fspath(tmp_path / "saved" / "runs_a" /
                                          "1")
    info = json.load(open(os.path.join(first.run_dir, "run.json")))
    assert info["finished"] is True
    assert info["export_path"] == first.export_path
    phases = info["phases"]
    for phase in ("generate", "validate", "adapt", "build", "tracing", "fit",
                  "evaluate", "scoreboard", "export", "total"):
        assert phase in phases, phases
    assert 0 < phases["tracing"] < phases["fit"] < phases["total"]
    assert phases["scoreboard"] > 0            # two single-input runs
    assert sum(v for k, v in phases.items()
               if k not in ("total", "tracing")) <= phases["total"]

    # The same command again is refused: nothing overwritten or exported.
    mtime = os.path.getmtime(os.path.join(first.run_dir, "best.keras"))
    with pytest.raises(ConfigError,
                       match=r"already holds the finished run 'runs_a'.*"
                       r"--set name=runs_a-2.*--overwrite"):
        train(recipe, verbose=0)
    assert os.path.getmtime(os.path.join(first.run_dir, "best.keras")) == \
        mtime
    assert [v for v in os.listdir(tmp_path / "saved" / "runs_a")
            if v.isdigit()] == ["1"]

    # Another name (and fusion): run folder AND export follow the name; the
    # single-input models (same spec, data, seed) are reused, not trained.
    second = train(recipe, ["name=runs_b", "fusion.type=weighted"],
                   verbose=2)
    out = capsys.readouterr().out
    assert second.run_dir == os.fspath(tmp_path / "runs" / "runs_b")
    assert second.export_path == os.fspath(tmp_path / "saved" / "runs_b" /
                                           "1")
    for name in ("text", "sensor"):
        assert f"reusing the {name}-only model of the scoreboard from " \
            f"{first.run_dir}/unimodal/{name}" in out, out
        assert f"training the {name}-only model" not in out
        assert second.unimodal[name] == first.unimodal[name]
        with open(os.path.join(second.run_dir, "unimodal", name,
                               "best.keras"), "rb") as f, \
                open(os.path.join(first.run_dir, "unimodal", name,
                                  "best.keras"), "rb") as g:
            assert f.read() == g.read()
    assert second.scoreboard[2:] == first.scoreboard[2:]

    # Overwrite with another seed: trained again (the key holds the seed).
    third = train(recipe, ["training.seed=5"], overwrite=True, verbose=2)
    out = capsys.readouterr().out
    assert out.count("training the text-only model of the scoreboard") == 1
    assert "reusing" not in out
    assert third.export_path.endswith(os.path.join("runs_a", "2"))


def test_name_override_and_own_export_name(tmp_path):
    from keras_mm.training.run_folder import load_recipe

    recipe = _recipe(tmp_path, name="base", generate=False)
    recipe["export"]["name"] = "base"          # repeats the run name
    assert load_recipe(recipe, ["name=x"])["export"]["name"] == "x"
    del recipe["export"]["name"]
    assert load_recipe(recipe, ["name=x"])["export"]["name"] == "x"
    recipe["export"]["name"] = "served"        # a name of its own: kept
    assert load_recipe(recipe, ["name=x"])["export"]["name"] == "served"
    assert load_recipe(recipe, ["name=x", "export.name=y"])["export"][
        "name"] == "y"
    path = tmp_path / "file_stem.yaml"
    import yaml
    recipe["export"].pop("name")
    recipe.pop("name")
    path.write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(os.fspath(path), ["name=z"])
    assert (loaded["name"], loaded["export"]["name"]) == ("z", "z")


def test_unimodal_key_follows_recipe_data_and_seed(tmp_path):
    from keras_mm.datasets import make_demo_dataset
    from keras_mm.training import run_preprocessors
    from keras_mm.training.run_folder import load_recipe, unimodal_key
    from keras_mm.training.run_folder import unimodal_recipe as _unimodal_recipe

    make_demo_dataset(tmp_path / "demo", num_train=12, num_val=4,
                      num_test=4)
    recipe = load_recipe(_recipe(tmp_path, generate=False), ())
    pre = run_preprocessors.make_preprocessors(recipe)  # fitted state: config

    def key(changes=(), name="sensor"):
        changed = load_recipe(_recipe(tmp_path, generate=False), changes)
        return unimodal_key(_unimodal_recipe(changed, name), name,
                            pre[name])

    base = key()
    assert key(["fusion.type=gated", "name=other",
                "export.base_dir=/elsewhere"]) == base
    assert key(["training.seed=1"]) != base
    assert key(["training.epochs=3"]) != base
    assert key(name="text") != base
    sensor_file = tmp_path / "demo" / "train" / "sensor" / "0003.csv"
    assert sensor_file.exists()
    stat = os.stat(sensor_file)
    os.utime(sensor_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert key() != base                       # a data file changed


def _batches(dataset):
    import tensorflow as tf

    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset]


def test_memory_cache_parses_once_and_gives_the_uncached_batches(tmp_path):
    from keras_mm.data import Pipeline
    from keras_mm.datasets import make_demo_dataset
    from keras_mm.training import run_data, run_preprocessors
    from keras_mm.training.run_folder import load_recipe
    from keras_mm.builder.spec import complete_spec
    from keras_mm.recipes import recipe_model_spec

    make_demo_dataset(tmp_path / "demo", num_train=20, num_val=4,
                      num_test=4)
    raw = tiny_recipe(tmp_path / "demo", generate=False)
    # Series of 50 steps cut to 24 (random crops in parse) and images
    # flipped at random (in transform): both must vary by epoch. Nothing
    # to adapt (no text, no normalization statistics): cheap.
    del raw["inputs"]["text"]
    raw["inputs"]["sensor"]["preprocess"].update(
        length=24, truncate="allow", normalize=False)
    raw["inputs"]["image"] = {
        "modality": "image",
        "preprocess": {"size": [8, 8], "channels": 3, "random_flip": True},
        "tower": {"encoder": "cnn", "dim": 8}}
    recipe = load_recipe(raw, ())
    pre = run_preprocessors.make_preprocessors(recipe)
    spec = complete_spec(recipe_model_spec(recipe), pre)
    # The bad-input check (tested elsewhere) left out: clean generated data.
    pipe = Pipeline(os.fspath(tmp_path / "demo" / "train.csv"), pre,
                    labels=run_data.head_labels(recipe), validate=False,
                    presence_mask=True, input_names=[
                        "sensor", "sensor_mask", "image", "presence"])
    assert sorted(spec["inputs"]) == ["image", "sensor"]
    assert not run_data.parse_draws(pre["image"])
    assert run_data.parse_draws(pre["sensor"])

    def epochs(cache, initial_epoch=0):
        ds, steps = run_data.epoch_dataset(
            pipe, 8, seed=3, epochs=2, initial_epoch=initial_epoch,
            shuffle_buffer=16, cache=cache)
        batches = _batches(ds)
        return steps, [batches[i:i + steps]
                       for i in range(0, len(batches), steps)]

    steps, plain = epochs(None)
    cached_steps, cached = epochs("memory")
    assert cached_steps == steps == 3 and len(cached) == 2
    for a_epoch, b_epoch in zip(plain, cached):
        for (fa, la), (fb, lb) in zip(a_epoch, b_epoch):
            assert sorted(fa) == sorted(fb)
            for key in fa:
                np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)
            np.testing.assert_array_equal(la["label"], lb["label"])
    # The seeded draws differ by epoch (crops, flips, order)...
    first, second = cached[0][0][0], cached[1][0][0]
    assert not np.array_equal(first["sensor"], second["sensor"])
    assert not np.array_equal(first["image"], second["image"])
    # ... and a resumed run gets the same later epochs.
    resumed_epochs = epochs("memory", initial_epoch=1)[1]
    assert len(resumed_epochs) == 1
    resumed = resumed_epochs[0]
    for (fa, _), (fb, _) in zip(cached[1], resumed):
        for key in fa:
            np.testing.assert_array_equal(fa[key], fb[key])

    # The cache holds parsed images (not their PNG bytes) and raw series.
    cached_parse = run_data.cached_parse(pipe, 8)
    assert cached_parse.drawn_inputs == ["sensor"]
    _, features, _ = next(iter(cached_parse.dataset))
    assert features["image"]["image"].shape == (8, 8, 3)
    assert features["sensor"].dtype.name == "string"


LOAD = textwrap.dedent("""
    import sys
    import numpy as np
    if sys.argv[2] == "keras_first":
        import keras
        import keras_mm
    else:
        import keras_mm
        import keras
    model = keras.models.load_model(sys.argv[1])
    x = {k: np.load(sys.argv[3])[k] for k in np.load(sys.argv[3]).files}
    out = model.predict(x, verbose=0)
    np.save(sys.argv[4], out["label"])
    print(type(model).__name__)
""")


@pytest.mark.parametrize("order", [
    "keras_mm_first", pytest.param("keras_first", marks=pytest.mark.slow)])
def test_plain_keras_load_model_after_import_keras_mm(tmp_path, order):
    import keras

    import keras_mm

    spec = {"inputs": {"series": {"modality": "sensor", "shape": [6, 2],
                                  "tower": {"encoder": "gru", "dim": 4}},
                       "vec": {"modality": "sensor", "shape": [6, 2],
                               "tower": {"encoder": "tcn", "dim": 4}}},
            "fusion": {"type": "gated"},
            "heads": {"label": {"type": "classification",
                                "num_classes": 3}}}
    model = keras_mm.build_model(spec)
    path = os.fspath(tmp_path / "best.keras")
    model.save(path)
    rng = np.random.default_rng(0)
    x = {}
    for tensor in model.inputs:             # series + their step masks
        name = tensor.name.split(":")[0]
        shape = (2,) + tuple(tensor.shape[1:])
        x[name] = np.ones(shape, bool) if tensor.dtype == "bool" else \
            rng.normal(size=shape).astype("float32")
    np.savez(tmp_path / "x.npz", **x)
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, os.fspath(script), path, order,
         os.fspath(tmp_path / "x.npz"), os.fspath(tmp_path / "y.npy")],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "MultimodalModel"
    expected = keras.ops.convert_to_numpy(model(x)["label"])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected,
                               atol=1e-6)
    # keras_mm.load_model: the same model in this process.
    again = keras_mm.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(x)["label"]), expected, atol=1e-6)
