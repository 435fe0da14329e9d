"""Modality dropout (`keras_mm.data.modality_dropout`), the `corrupt` hook
of `Pipeline.dataset`, and the presence-mask default of the builder spec.

The data are the generated manifest of test_pipeline.py (Pillow PNGs, `wave`
WAVs, CSV sensor files); dropout decisions are checked on real pipeline
batches, per example (the `score` label column carries the row index).
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mm.data.modality_dropout import example_seeds
from keras_mm.data.modality_dropout import modality_keep_mask
from keras_mm.data.pipeline import Pipeline
from test_pipeline import LABELS
from test_pipeline import collect
from test_pipeline import make_manifest
from test_pipeline import make_preprocessors


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dropout")
    make_manifest(str(folder))
    return folder


def three_inputs():
    pre = make_preprocessors()
    return {n: pre[n] for n in ("image", "caption", "tab")}


# ------------------------------------------------------------ corrupt hook
def blank_image(parsed):
    parsed = dict(parsed)
    image = dict(parsed["image"])
    image["image"] = tf.zeros_like(image["image"])
    parsed["image"] = image
    return parsed


def test_corrupt_hook_equals_a_pipeline_over_blank_images(data_dir, tmp_path):
    """Zeroing the parsed image gives the batches of a manifest whose PNGs
    are black; the other inputs and the labels are untouched."""
    black = tmp_path / "black"
    make_manifest(str(black))
    for name in os.listdir(black / "files"):
        if name.endswith(".png"):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
                black / "files" / name)
    pre = three_inputs
    got = collect(Pipeline(str(data_dir / "train.csv"), pre(),
                           labels=LABELS, presence_mask=True).dataset(
        batch_size=4, corrupt=blank_image))
    want = collect(Pipeline(str(black / "train.csv"), pre(), labels=LABELS,
                            presence_mask=True).dataset(batch_size=4))
    plain = collect(Pipeline(str(data_dir / "train.csv"), pre(),
                             labels=LABELS,
                             presence_mask=True).dataset(batch_size=4))
    assert not np.array_equal(plain[0]["image"], want[0]["image"])
    for k in want[0]:
        np.testing.assert_array_equal(got[0][k], want[0][k], err_msg=k)
    for k in want[1]:
        np.testing.assert_array_equal(got[1][k], want[1][k], err_msg=k)
    # With the cache and in training too (parse has no random draw here).
    cached = collect(Pipeline(str(data_dir / "train.csv"), pre(),
                              labels=LABELS, presence_mask=True).dataset(
        batch_size=3, cache="memory", corrupt=blank_image))
    np.testing.assert_array_equal(cached[0]["image"], want[0]["image"])
    trained = collect(Pipeline(str(data_dir / "train.csv"), pre(),
                               labels=LABELS, presence_mask=True).dataset(
        batch_size=5, training=True, seed=1, corrupt=blank_image))
    np.testing.assert_array_equal(trained[0]["image"], want[0]["image"])


def test_corrupt_must_return_the_parsed_structure(data_dir):
    pipe = Pipeline(str(data_dir / "train.csv"), three_inputs())
    with pytest.raises(ValueError, match="keyed by the inputs"):
        pipe.dataset(batch_size=4, corrupt=lambda parsed: {"image":
                                                           parsed["image"]})
    with pytest.raises(TypeError, match="callable"):
        pipe.dataset(batch_size=4, corrupt="noise")


# ------------------------------------------------------- the pure draw
def numpy_keep(presence, rates, u):
    """The rule, written again in NumPy on the same uniforms."""
    keep = u >= rates
    for b in range(len(u)):
        present = presence[b] > 0
        if present.any() and not (keep[b] & present).any():
            margin = np.where(present, u[b] - rates, -2.0)
            keep[b] = np.arange(len(rates)) == np.argmax(margin)
    return keep.astype("float32")


def test_keep_mask_is_seeded_and_follows_the_rule():
    from keras_mm.data.modality_dropout import modality_uniforms

    rates = np.array([0.5, 0.2, 0.7], "float32")
    presence = np.ones([64, 3], "float32")
    presence[::4, 1] = 0.0
    seeds = example_seeds(tf.range(64, dtype=tf.int64) * 7919)
    keep = modality_keep_mask(presence, rates, seeds).numpy()
    np.testing.assert_array_equal(
        keep, modality_keep_mask(presence, rates, seeds).numpy())
    other = modality_keep_mask(presence, rates, example_seeds(
        tf.range(64, dtype=tf.int64) * 7919 + 1)).numpy()
    assert not np.array_equal(keep, other)
    u = modality_uniforms(seeds, 3).numpy()
    np.testing.assert_array_equal(keep, numpy_keep(presence, rates, u))
    # Row b depends on seeds[b] only: a sub-batch gives the same rows.
    np.testing.assert_array_equal(
        keep[10:20], modality_keep_mask(presence[10:20], rates,
                                        seeds[10:20]).numpy())


def test_never_all_dropped_absent_stays_absent_and_empirical_rate():
    n = 20000
    seeds = example_seeds(tf.range(n, dtype=tf.int64))
    presence = np.ones([n, 3], "float32")
    kept = presence * modality_keep_mask(presence, [0.99] * 3, seeds).numpy()
    assert kept.sum(axis=1).min() == 1.0           # one kept, always
    assert (kept.sum(axis=1) == 1).mean() > 0.95   # and mostly only one
    # Already absent: stays absent; a lone present modality is kept.
    partial = presence.copy()
    partial[:, 0] = 0.0
    partial[: n // 2, 2] = 0.0
    got = partial * modality_keep_mask(partial, [0.99] * 3, seeds).numpy()
    assert np.all(got[:, 0] == 0.0)
    assert np.all(got[: n // 2, 1] == 1.0)
    assert got.sum(axis=1).min() == 1.0
    # Rate 0.3 each: P(drop j) = 0.3 - 0.3**3 / 3 (the all-dropped
    # examples keep one of three); within 5 binomial standard deviations.
    kept = presence * modality_keep_mask(presence, [0.3] * 3, seeds).numpy()
    expected = 0.3 - 0.3 ** 3 / 3
    bound = 5 * np.sqrt(expected * (1 - expected) / n)
    for j in range(3):
        assert abs((1 - kept[:, j]).mean() - expected) < bound, j
    # Per-modality rates, zero included.
    kept = presence * modality_keep_mask(presence, [0.0, 0.5, 0.5],
                                         seeds).numpy()
    assert np.all(kept[:, 0] == 1.0)
    assert abs((1 - kept[:, 1]).mean() - 0.5) < 5 * np.sqrt(0.25 / n)


def test_rates_are_checked():
    from keras_mm.data.modality_dropout import dropout_rates

    assert dropout_rates(0.3, ["a", "b"]) == [0.3, 0.3]
    assert dropout_rates({"b": 0.5}, ["a", "b"]) == [0.0, 0.5]
    with pytest.raises(ValueError, match=r"modality_dropout\.c: no input"):
        dropout_rates({"c": 0.5}, ["a", "b"])
    with pytest.raises(ValueError, match=r"modality_dropout\.a: .*\[0, 1\)"):
        dropout_rates({"a": 1.0}, ["a", "b"])
    with pytest.raises(ValueError, match="one rate in"):
        dropout_rates("high", ["a", "b"])


# ---------------------------------------------------------- in Pipeline
M = 24


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory):
    """M examples; rows 0, 5, 10, ... have an empty caption (absent)."""
    from test_pipeline import manifest_rows

    folder = tmp_path_factory.mktemp("dropout_big")
    rows = manifest_rows(M)
    for i in range(0, M, 5):
        rows[i]["caption"] = ""
    make_manifest(str(folder), n=M, rows=rows)
    return folder


def presence_by_row(dataset):
    """`[M, 3]` presence, rows in manifest order (the `score` label is
    row / 4), and the other features in that order."""
    features, labels = collect(dataset)
    order = np.argsort(labels["score"][:, 0])
    np.testing.assert_allclose(labels["score"][order, 0],
                               np.arange(M) / 4, atol=1e-6)
    return ({k: v[order] for k, v in features.items()})


def pipe(folder, **kwargs):
    return Pipeline(str(folder / "train.csv"), three_inputs(), labels=LABELS,
                    presence_mask=True, bad_input="missing", **kwargs)


@pytest.mark.parametrize("cache", [None, "memory"])
def test_pipeline_dropout_is_per_example(big_dir, cache):
    """Same seed: the same examples lose the same inputs, whatever the
    batch size (and shuffle order); another seed or pass: others."""
    dropped = pipe(big_dir, modality_dropout={"image": 0.5, "caption": 0.5,
                                              "tab": 0.5})

    def run(batch_size, seed, ds=None):
        ds = ds or dropped.dataset(batch_size, training=True, seed=seed,
                                   shuffle=True, cache=cache)
        return presence_by_row(ds)

    small = run(4, 3)
    presence = small["presence"]
    np.testing.assert_array_equal(presence, run(16, 3)["presence"])
    assert not np.array_equal(presence, run(4, 4)["presence"])
    ds = dropped.dataset(5, training=True, seed=3, shuffle=True, cache=cache)
    assert not np.array_equal(run(0, 0, ds)["presence"],
                              run(0, 0, ds)["presence"])     # each pass
    absent = np.arange(M) % 5 == 0
    assert np.all(presence[absent, 1] == 0.0)         # stays absent
    assert presence.sum(axis=1).min() >= 1.0          # never all dropped
    assert 0 < (presence == 0).sum() < presence.size - M
    # Only the presence column changes: the other features are those of
    # the same pipeline without dropout, same seed.
    plain = presence_by_row(pipe(big_dir).dataset(
        4, training=True, seed=3, shuffle=True, cache=cache))
    np.testing.assert_array_equal(plain["presence"][:, 1], ~absent)
    for k in plain:
        if k != "presence":
            np.testing.assert_array_equal(small[k], plain[k], err_msg=k)


def test_eval_datasets_are_untouched(big_dir):
    dropped = pipe(big_dir, modality_dropout=0.9)
    for options in ({}, {"cache": "memory"}):
        got = collect(dropped.dataset(4, **options))
        want = collect(pipe(big_dir).dataset(4, **options))
        for k in want[0]:
            np.testing.assert_array_equal(got[0][k], want[0][k], err_msg=k)


def test_pipeline_dropout_needs_the_presence_input(big_dir):
    with pytest.raises(ValueError, match="presence_mask=True"):
        Pipeline(str(big_dir / "train.csv"), three_inputs(),
                 modality_dropout=0.3)
    with pytest.raises(ValueError, match=r"modality_dropout\.audio"):
        pipe(big_dir, modality_dropout={"audio": 0.3})


# ------------------------------------------ spec default, recipe key
def spec(n_inputs, **fusion):
    inputs = {f"t{i}": {"modality": "tabular", "numeric": 2}
              for i in range(n_inputs)}
    return {"inputs": inputs, "fusion": {"type": "concat", **fusion},
            "heads": {"y": {"type": "classification", "num_classes": 2}}}


def test_presence_mask_defaults_to_true_from_two_inputs():
    from keras_mm.builder import build_model
    from keras_mm.builder.spec import normalize_spec

    two = normalize_spec(spec(2))
    assert two["fusion"]["presence_mask"] is True
    assert normalize_spec(two) == two                  # explicit once set
    assert normalize_spec(spec(2, presence_mask=False))["fusion"][
        "presence_mask"] is False
    assert normalize_spec(spec(1))["fusion"]["presence_mask"] is False
    names = lambda s: sorted(i.name for i in build_model(s).inputs)  # noqa
    assert "presence" in names(spec(2))
    assert "presence" not in names(spec(2, presence_mask=False))
    assert "presence" not in names(spec(1))


def test_recipe_key_is_checked(tmp_path):
    from test_training import tiny_recipe

    from keras_mm.errors import ConfigError
    from keras_mm.recipes.recipe import normalize_recipe
    from keras_mm.training import run_data

    def recipe(value, **fusion):
        r = tiny_recipe(tmp_path / "demo", modality_dropout=value)
        r["fusion"] = {"type": "concat", **fusion}
        return normalize_recipe(r)

    assert run_data.modality_dropout(recipe(0.3)) == 0.3
    assert run_data.modality_dropout(recipe({"text": 0.2})) == {"text": 0.2}
    assert run_data.modality_dropout(recipe(None)) is None
    for value, where in ((1.0, "training.modality_dropout"),
                         ({"text": -0.1}, "training.modality_dropout.text"),
                         (True, "training.modality_dropout")):
        with pytest.raises(ConfigError, match="in \\[0, 1\\)") as error:
            recipe(value)
        assert error.value.key_path == where
    with pytest.raises(ConfigError) as error:
        run_data.modality_dropout(recipe({"image": 0.2}))
    assert error.value.key_path == "training.modality_dropout.image"
    with pytest.raises(ConfigError, match="presence_mask is false") as error:
        run_data.modality_dropout(recipe(0.3, presence_mask=False))
    assert error.value.key_path == "training.modality_dropout"


def test_memory_cache_of_training_runs_drops_like_the_uncached_pass(big_dir):
    """`data.cache: memory` (`training.cached_parse`) gives each example
    the presence of the uncached epoch, value for value."""
    from keras_mm.training import run_data

    dropped = pipe(big_dir, modality_dropout=0.5)

    def epoch(cache):
        ds, _ = run_data.epoch_dataset(dropped, 4, seed=2, epochs=1,
                                       shuffle_buffer=8, cache=cache)
        return presence_by_row(ds)["presence"]

    plain = epoch(None)
    np.testing.assert_array_equal(epoch("memory"), plain)
    assert (plain == 0).sum() > M // 5          # some dropped
