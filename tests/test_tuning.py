"""`keras-mm tune` (`keras_mm.tuning`): the search space checked like every
recipe key, the held-out val split, searches on the demo set (random and
Hyperband), `best.yaml` training to the reported metric, and a search
killed with SIGKILL resuming without repeating finished trials."""

import copy
import csv
import json
import os
import signal
import time

import pytest

from keras_mm.cli.main import main
from keras_mm.data.manifest import Manifest
from keras_mm.errors import ConfigError, DataError
from keras_mm.recipes.recipe import normalize_recipe
from keras_mm.tuning import tune
from keras_mm.tuning.holdout import holdout_splits
from keras_mm.tuning.search_space import check_space, recipe_values
from subprocess_runs import finish, start
from test_training import tiny_recipe, write_recipe

SPACE = {
    "training.optimizer.learning_rate": {"log_uniform": [1e-3, 3e-2]},
    "fusion.type": {"choice": ["concat", "gated"]},
    "inputs.text.tower.dim": {"choice": [8, 16]},
}


def searchable(data_dir, *, val=False, epochs=2, **tune_keys):
    """The tiny demo recipe without a val split (the search holds one out)
    and a `tune:` section over SPACE."""
    recipe = tiny_recipe(data_dir, epochs=epochs, sizes=(48, 16, 16),
                         deterministic=True)     # best.yaml reproduces it
    if not val:
        del recipe["data"]["splits"]["val"]
        recipe["evaluation"] = {"splits": ["test"]}
    recipe["tune"] = {"space": copy.deepcopy(SPACE), "max_trials": 3,
                      **tune_keys}
    return recipe


def config_error(recipe):
    with pytest.raises(ConfigError) as info:
        normalize_recipe(recipe)
    return info.value


# -- the tune: section and its search space ---------------------------------


@pytest.mark.parametrize("entry, key, says", [
    ({"choice": []}, "tune.space.fusion.type", "non-empty list"),
    ({"choice": [1, "a"]}, "tune.space.fusion.type", "all integers"),
    ({"choice": ["a", "a"]}, "tune.space.fusion.type", "repeats"),
    ({"log_uniform": [0, 1]}, "tune.space.fusion.type", "above 0"),
    ({"uniform": [2, 1]}, "tune.space.fusion.type", "not below high"),
    ({"int": [1.5, 4]}, "tune.space.fusion.type", "two integers"),
    ({"int": [1, 4], "step": 0}, "tune.space.fusion.type", "step"),
    ({"normal": [0, 1]}, "tune.space.fusion.type", "search spaces"),
    (5, "tune.space.fusion.type", "not a search space"),
])
def test_a_bad_search_space_names_its_key_path(tmp_path, entry, key, says):
    recipe = searchable(tmp_path / "d")
    recipe["tune"]["space"] = {"fusion.type": entry}
    error = config_error(recipe)
    assert error.key_path == key and says in str(error), str(error)


def test_bad_tune_keys_are_refused(tmp_path):
    recipe = searchable(tmp_path / "d", algorithm="grid")
    assert config_error(recipe).key_path == "tune.algorithm"
    recipe = searchable(tmp_path / "d", trials=3)
    assert "trials" in str(config_error(recipe))
    recipe = searchable(tmp_path / "d")
    recipe["tune"]["space"] = {"tune.max_trials": {"int": [1, 3]}}
    assert "not searchable" in str(config_error(recipe))


@pytest.mark.parametrize("key, entry, value", [
    ("fusion.type", {"choice": ["concat", "concatt"]}, "'concatt'"),
    ("inputs.text.tower.dimm", {"choice": [8, 16]}, "8"),
    ("training.optimizer.learnin_rate", {"log_uniform": [1e-3, 1e-2]},
     "0.001"),
    ("training.batch_size", {"int": [0, 8]}, "0"),
])
def test_each_value_of_the_space_is_checked_as_a_recipe(tmp_path, key,
                                                        entry, value):
    recipe = searchable(tmp_path / "d")
    recipe["tune"]["space"] = {key: entry}
    normalize_recipe(recipe)                # the section itself is valid
    with pytest.raises(ConfigError) as info:
        check_space(recipe, recipe["tune"]["space"] and
                    normalize_recipe(recipe)["tune"]["space"])
    assert info.value.key_path == f"tune.space.{key}"
    assert f"the value {value} makes an invalid recipe" in str(info.value)


def test_the_recipes_own_values_are_its_reference_trial(tmp_path):
    recipe = searchable(tmp_path / "d")
    space = normalize_recipe(recipe)["tune"]["space"]
    values, why = recipe_values(recipe, normalize_recipe(recipe), space)
    assert why is None and values == {
        "training.optimizer.learning_rate": 0.01, "fusion.type": "concat",
        "inputs.text.tower.dim": 8}
    recipe["training"]["optimizer"]["learning_rate"] = 0.5
    values, why = recipe_values(recipe, normalize_recipe(recipe), space)
    assert values is None and "0.5 lies outside" in why


def test_a_normalized_recipe_normalizes_to_itself(tmp_path):
    # a run folder's recipe.yaml is the normalized recipe, read back later
    recipe = searchable(tmp_path / "d")
    recipe["tune"]["space"]["training.batch_size"] = {"int": [8, 32],
                                                      "step": 8}
    recipe["distill"] = {"teacher": "runs/big"}
    once = normalize_recipe(recipe)
    assert normalize_recipe(copy.deepcopy(once)) == once
    assert once["tune"]["space"]["training.batch_size"] == {
        "kind": "int", "low": 8, "high": 32, "step": 8}


def test_tune_without_a_tune_section_says_how_to_add_one(tmp_path):
    recipe = searchable(tmp_path / "d")
    del recipe["tune"]
    with pytest.raises(ConfigError, match="no tune: section"):
        tune(recipe)


# -- the held-out val split ----------------------------------------------------


def test_holdout_is_stratified_disjoint_and_reads_the_same_files(tmp_path):
    from keras_mm.training import run_data, run_folder

    recipe = run_folder.load_recipe(searchable(tmp_path / "d"), ())
    run_data.generate_data(recipe)
    splits, note = holdout_splits(recipe, 0.25, 0, str(tmp_path / "h"))
    assert "held out 12 of 48 train rows" in note
    source = Manifest.read(recipe["data"]["splits"]["train"])
    train, val = (Manifest.read(splits[s]) for s in ("train", "val"))
    key = [(r["text"], r["label"]) for r in source.rows]
    got = [(r["text"], r["label"]) for r in train.rows + val.rows]
    assert sorted(got) == sorted(key) and len(set(got)) == len(got)
    # stratified: each of the 4 classes (12 rows each) gives 3 to val
    assert sorted(r["label"] for r in val.rows) == sorted(
        [c for c in {r["label"] for r in source.rows}] * 3)
    for row in val.rows:
        assert os.path.isabs(row["sensor"])
        original = next(r for r in source.rows if r["text"] == row["text"]
                        and r["label"] == row["label"])
        assert os.path.samefile(row["sensor"], os.path.join(
            source.root, original["sensor"]))
    same, _ = holdout_splits(recipe, 0.25, 0, str(tmp_path / "h2"))
    assert Manifest.read(same["val"]).rows == val.rows      # seeded


def test_holdout_refuses_a_path_outside_the_manifest_folder(tmp_path):
    from keras_mm.training import run_data, run_folder

    recipe = run_folder.load_recipe(searchable(tmp_path / "d"), ())
    run_data.generate_data(recipe)
    path = recipe["data"]["splits"]["train"]
    rows = Manifest.read(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rows.columns)
        writer.writeheader()
        writer.writerows([dict(rows.rows[0], sensor="../../x.csv")]
                         + rows.rows[1:])
    with pytest.raises(DataError, match="outside the manifest's folder") \
            as info:
        holdout_splits(recipe, 0.25, 0, str(tmp_path / "h"))
    assert "row 1" in str(info.value) and path in str(info.value)


# -- searches -------------------------------------------------------------------


def _completed(result):
    return [r for r in result.trials if r["status"] == "COMPLETED"]


def test_random_search_writes_table_plot_and_a_best_yaml_that_trains_to_its_metric(
        tmp_path):
    from keras_mm.training import train

    recipe = searchable(tmp_path / "d", max_trials=2)
    recipe["training"]["runs_dir"] = os.fspath(tmp_path / "runs")
    result = tune(recipe, verbose=0)
    assert result.folder == os.fspath(tmp_path / "runs" / "tiny_tune")
    assert result.objective == "label.accuracy" and \
        result.direction == "max"
    assert [r["trial"] for r in _completed(result)] == ["0", "1"]
    first = result.trials[0]
    assert first["recipe"] and first["values"] == {
        "training.optimizer.learning_rate": 0.01, "fusion.type": "concat",
        "inputs.text.tower.dim": 8}
    # each trial is a normal run folder with those values
    with open(os.path.join(result.trials[1]["run_dir"], "recipe.yaml")) as f:
        import yaml
        ran = yaml.safe_load(f)
    values = result.trials[1]["values"]
    assert ran["fusion"]["type"] == values["fusion.type"]
    assert ran["training"]["optimizer"]["learning_rate"] == pytest.approx(
        values["training.optimizer.learning_rate"])
    assert ran["inputs"]["text"]["tower"]["dim"] == \
        values["inputs.text.tower.dim"]
    assert ran["data"]["splits"]["val"].startswith(result.folder)
    best = max(_completed(result), key=lambda r: (r["score"],
                                                  -int(r["trial"])))
    assert result.best is best and best["best"]
    with open(os.path.join(result.folder, "trials.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val"]) for r in rows] == pytest.approx(
        [r["score"] for r in result.trials])
    assert os.path.getsize(result.plot) > 1000
    assert "val label.accuracy" in result.table and "test" in result.table
    # best.yaml trains, with the same seed, to the reported val metric
    again = train(result.best_recipe, runs_dir=tmp_path / "again",
                  export=False, verbose=0)
    assert again.metrics["val"]["heads"]["label"]["accuracy"] == \
        pytest.approx(best["score"], abs=1e-6)
    assert again.metrics["test"]["heads"]["label"]["accuracy"] == \
        pytest.approx(best["splits"]["test"], abs=1e-6)
    with open(os.path.join(best["run_dir"], "metrics.json")) as f:
        trial_loss = json.load(f)["val"]["loss"]
    assert again.metrics["val"]["loss"] == pytest.approx(trial_loss,
                                                         rel=1e-6)

    # more trials later: the finished ones are not run again
    stamps = {r["trial"]: os.path.getmtime(os.path.join(r["run_dir"],
                                                        "run.json"))
              for r in result.trials}
    more = tune(recipe, max_trials=3, verbose=0)
    assert [r["trial"] for r in _completed(more)] == ["0", "1", "2"]
    for trial, stamp in stamps.items():
        assert os.path.getmtime(os.path.join(
            more.trials[int(trial)]["run_dir"], "run.json")) == stamp
    # another search space in the same folder is refused
    recipe["tune"]["space"]["fusion.type"] = {"choice": ["concat"]}
    with pytest.raises(ConfigError, match="holds a search of another"):
        tune(recipe, verbose=0)
    # a spent time budget starts no trial
    recipe["tune"]["space"]["fusion.type"] = SPACE["fusion.type"]
    spent = tune(recipe, max_trials=5, max_minutes=0, verbose=0)
    assert spent.stopped == "max_minutes" and len(spent.trials) == 3


def test_hyperband_sets_each_trials_epochs(tmp_path):
    recipe = searchable(tmp_path / "d", val=True, epochs=3,
                        algorithm="hyperband", max_trials=3)
    key = "training.optimizer.learning_rate"
    recipe["tune"]["space"] = {key: SPACE[key]}
    recipe["training"]["runs_dir"] = os.fspath(tmp_path / "runs")
    result = tune(recipe, verbose=0)
    assert not result.notes                 # the recipe has a val split
    assert len(result.trials) == 3 and not any(r["recipe"]
                                               for r in result.trials)
    budgets = []
    for row in result.trials:
        with open(os.path.join(row["run_dir"], "run.json")) as f:
            info = json.load(f)
        with open(os.path.join(result.folder, "keras_tuner",
                               f"trial_{row['trial']}", "trial.json")) as f:
            hp = json.load(f)["hyperparameters"]["values"]
        assert info["epochs_run"] == hp["tuner/epochs"], row
        budgets.append(hp["tuner/epochs"])
    assert min(budgets) < 3             # the first bracket's short trials


def test_a_missing_objective_stops_the_search_naming_what_exists(tmp_path):
    recipe = searchable(tmp_path / "d", epochs=1, objective="label.f1")
    recipe["training"]["runs_dir"] = os.fspath(tmp_path / "runs")
    with pytest.raises(ConfigError) as info:
        tune(recipe, verbose=0)
    assert info.value.key_path == "tune.objective"
    assert "label.accuracy" in str(info.value)


def test_cli_tune_prints_the_table_and_the_best_recipe_once(tmp_path,
                                                           capsys):
    recipe = searchable(tmp_path / "d", epochs=1, max_trials=1)
    recipe["training"]["runs_dir"] = os.fspath(tmp_path / "runs")
    path = write_recipe(tmp_path / "tiny.yaml", recipe)
    assert main(["tune", path, "--set", "tune.seed=1"]) == 0
    out = capsys.readouterr().out
    assert out.count("tune: trial 0:") == 1
    assert out.count("best: trial 0") == 1 and "best.yaml" in out
    assert main(["tune", path, "--max-trials", "0"]) == 1
    assert "tune.max_trials" in capsys.readouterr().err


# -- killed and resumed ------------------------------------------------------

KILLED = "import sys; from keras_mm.cli.main import main; " \
    "sys.exit(main(sys.argv[1:]))"


def _start(args, log_path):
    return start(["-c", KILLED, *args], log_path)


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_without_repeating_trials(
        tmp_path):
    recipe = searchable(tmp_path / "d", epochs=6, max_trials=3)
    recipe["training"]["runs_dir"] = os.fspath(tmp_path / "runs")
    path = write_recipe(tmp_path / "tiny.yaml", recipe)
    folder = tmp_path / "runs" / "tiny_tune"
    trial_1 = folder / "trials" / "tiny_trial_1"
    backup = trial_1 / "backup" / "training_metadata.json"
    victim = _start(["tune", path], tmp_path / "killed.log")
    deadline = time.monotonic() + 400
    killed = False
    while time.monotonic() < deadline and victim.poll() is None:
        if backup.exists():
            os.kill(victim.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    output = finish(victim, 30)
    assert killed, "the search ended before it was killed:\n" + output[-3000:]
    assert "tune: trial 0:" in output and "tune: trial 1:" not in output
    stamp = os.path.getmtime(folder / "trials" / "tiny_trial_0" / "run.json")

    resumed = _start(["tune", path], tmp_path / "resumed.log")
    output = finish(resumed, 400)
    assert resumed.returncode == 0, output[-4000:]
    assert "tune: trial 0:" not in output        # not run again
    assert output.count("tune: trial 1:") == 1
    assert output.count("tune: trial 2:") == 1
    assert os.path.getmtime(folder / "trials" / "tiny_trial_0" /
                            "run.json") == stamp
    with open(trial_1 / "run.json") as f:
        assert json.load(f)["resumed_from_epoch"] >= 1    # from its backup
    with open(folder / "trials.csv") as f:
        assert [r["status"] for r in csv.DictReader(f)] == \
            ["COMPLETED"] * 3
