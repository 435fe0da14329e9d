"""Hostile recipes (issue 13 items 4 and 5): errors that name the key and
the expected type, non-UTF-8 files, YAML alias bombs, and sizes that pass
the type checks and then hang or exhaust memory."""

import time

import pytest

from recipe_files import write

from keras_mm.errors import ConfigError
from keras_mm.recipes import load_recipe

RECIPE = """\
name: hostile
data:
  splits:
    train: data/tiny/train.csv
    test: data/tiny/test.csv
inputs:
  image:
    modality: image
    preprocess: {size: [8, 8], channels: 1}
    tower: {encoder: cnn, dim: 8, filters: [4]}
  text:
    modality: text
    preprocess: {max_len: 8, max_vocab_size: 50}
    tower: {encoder: bag, dim: 8, embedding_dim: 8}
fusion: {type: concat, units: 8}
heads:
  label: {type: classification, num_classes: 4, source: label}
training: {epochs: 2, batch_size: 8}
"""


@pytest.fixture
def recipe_path(tmp_path):
    return write(tmp_path, RECIPE, "hostile.yaml")


def test_valid_recipe_loads(recipe_path):
    recipe = load_recipe(recipe_path)
    assert recipe["export"]["allow_untrained"] is False
    assert recipe["fusion"]["units"] == 8


# -- item 4: argument errors name the key and the expected type --------------


@pytest.mark.parametrize("override, key, expected", [
    # Preprocessors call int(): "invalid literal for int() with base 10".
    ("inputs.text.preprocess.max_len=abc", "inputs.text.preprocess.max_len",
     "expected an integer, got str 'abc'"),
    ("inputs.text.preprocess.max_len=1e9", "inputs.text.preprocess.max_len",
     "expected an integer, got str '1e9'"),
    ("inputs.image.preprocess.channels=three",
     "inputs.image.preprocess.channels", "expected an integer, got str"),
    ("inputs.image.tower.dim=abc", "inputs.image.tower.dim",
     "expected an integer, got str 'abc'"),
    ("inputs.image.tower.dropout=lots", "inputs.image.tower.dropout",
     "expected a number, got str 'lots'"),
])
def test_argument_errors_name_the_key_and_the_type(recipe_path, override,
                                                   key, expected):
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe_path, overrides=[override])
    error = info.value
    assert error.key_path == key, str(error)
    assert expected in str(error), str(error)
    assert "invalid literal" not in str(error)
    assert str(error).startswith(f"{recipe_path} (with --set {override}): "
                                 f"{key}: ")


def test_non_utf8_recipe_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(RECIPE.replace("hostile", "caf\xe9").encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: the recipe is not UTF-8 text"), \
        message
    assert "byte 0xe9" in message and "save it as UTF-8" in message


# -- item 5: bounded cost -----------------------------------------------------

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_alias_bomb_is_refused_fast(tmp_path):
    assert len(BOMB) < 400
    path = write(tmp_path, BOMB)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"took {elapsed:.1f}s"
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "aliases" in message
    assert "100,000 values" in message


def test_recursive_alias_is_refused(tmp_path):
    path = write(tmp_path, "a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match=r"recursive YAML alias"):
        load_recipe(path)


def test_a_few_aliases_are_fine(tmp_path):
    # Anchors reused a few times expand to a few values: allowed, and each
    # aliased mapping is still checked for duplicate keys once.
    text = RECIPE.replace(
        "    tower: {encoder: cnn, dim: 8, filters: [4]}",
        "    tower: &small {encoder: cnn, dim: 8, filters: [4]}")
    recipe = load_recipe(write(tmp_path, text))
    assert recipe["inputs"]["image"]["tower"]["dim"] == 8
    dup = "x: &m {a: 1, a: 2}\ny: [*m, *m]\n"
    with pytest.raises(ConfigError, match=r"x\.a: key 'a' is given twice"):
        load_recipe(write(tmp_path, dup, "dup.yaml"))


@pytest.mark.parametrize("override, key, expected", [
    ("training.epochs=1000000000000000000", "training.epochs",
     "1000000000000000000 is above the limit of 100000"),
    ("training.batch_size=1000000000000", "training.batch_size",
     "1000000000000 is above the limit of 65536"),
    ("inputs.text.preprocess.max_len=1000000000",
     "inputs.text.preprocess.max_len", "above the limit of 67,108,864"),
    ("fusion.units=1000000000", "fusion.units",
     "1000000000 is above the limit of 16384"),
    ("trunk.hidden_units=[8, 1000000000]", "trunk.hidden_units[1]",
     "1000000000 is above the limit of 16384"),
    ("inputs.image.tower.dim=100000000", "inputs.image.tower.dim",
     "above the limit of 16384"),
    ("inputs.image.preprocess.size=[100000, 100000]",
     "inputs.image.preprocess.size", "above the limit of 67,108,864"),
    ("inputs.image.shape=[100000, 100000, 1]", "inputs.image.shape",
     "above the limit of 67,108,864"),
    ("training.steps_per_execution=1000000000000",
     "training.steps_per_execution", "above the limit of 1000000"),
    ("training.seed=100000000000000000000", "training.seed",
     "above the limit of 4294967295"),
])
def test_sizes_are_bounded_and_name_the_key(recipe_path, override, key,
                                            expected):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe_path, overrides=[override])
    assert time.perf_counter() - start < 5.0
    assert info.value.key_path == key, str(info.value)
    assert expected in str(info.value), str(info.value)


def test_batch_memory_is_bounded(recipe_path):
    # Each size alone is allowed; a batch of them would need 32 GiB.
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe_path, overrides=[
            "inputs.image.preprocess.size=[4096, 2048]",
            "training.batch_size=1024"])
    assert info.value.key_path == "training.batch_size"
    assert "GiB of inputs (most for inputs.image)" in str(info.value)


def test_infinite_learning_rate_is_refused(recipe_path):
    with pytest.raises(ConfigError) as info:
        load_recipe(recipe_path, overrides=[
            "training.optimizer={type: adam, learning_rate: .inf}"])
    assert info.value.key_path == "training.optimizer.learning_rate"
    assert "finite" in str(info.value)


def test_allow_untrained_is_a_bool(recipe_path):
    recipe = load_recipe(recipe_path,
                         overrides=["export.allow_untrained=true"])
    assert recipe["export"]["allow_untrained"] is True
    with pytest.raises(ConfigError,
                       match=r"export\.allow_untrained: 'yes' is not one "
                             r"of true, false"):
        load_recipe(recipe_path, overrides=["export.allow_untrained='yes'"])

