"""The data side of a training run: generation, columns, pipelines.

- `generate_data(recipe)`: builds the recipe's data set (`data.generate`)
  when one of its split files is absent;
- `input_columns(recipe)` / `head_labels(recipe)`: the manifest columns of
  the inputs and heads (the preprocessors themselves, made, fitted, saved
  and loaded: `keras_mm.training.run_preprocessors`);
- `make_pipeline(...)`: a `keras_mm.data.Pipeline` for one split;
- `epoch_dataset(...)`: the training batches of epochs `initial_epoch..`,
  where epoch `k`'s shuffle order and augmentation draws depend only on
  `(seed, k)` - so a run resumed from a backup at epoch `k` sees the
  batches an uninterrupted run sees; with `cache="memory"` the examples
  are read and parsed once (`cached_parse`) and only the seeded draws are
  redone each epoch, with the same batches;
- `golden_examples(pipeline, n)`: raw request values of `n` examples, for
  the export.

Relative data paths in a recipe are taken relative to the current
directory (the repository root for `keras-mm train recipes/demo.yaml`);
`resolve_paths` makes them absolute so that the run folder's `recipe.yaml`
works from anywhere.
"""

import copy
import importlib
import logging
import os
import warnings

import tensorflow as tf

from keras_mm.errors import ConfigError, DataError

log = logging.getLogger("keras_mm")

# Large prime multiplier: per-epoch shuffle seeds of nearby base seeds differ.
_EPOCH_SEED_STRIDE = 1000003
# Log lines already given once in this process (`epoch_dataset`).
_SAID = set()


def _is_remote(path):
    return "://" in str(path)


def _absolute(path):
    if _is_remote(path) or os.path.isabs(path):
        return path
    return os.path.abspath(path)


def resolve_paths(recipe):
    """A copy of `recipe` whose data paths are absolute (from the cwd)."""
    recipe = copy.deepcopy(recipe)
    data = recipe["data"]
    data["splits"] = {
        split: [_absolute(p) for p in value] if isinstance(value, list)
        else _absolute(value)
        for split, value in data["splits"].items()}
    generate = data.get("generate")
    if generate:
        for key in ("out_dir", "output_dir", "out", "root", "data_dir"):
            if isinstance(generate.get(key), str):
                generate[key] = _absolute(generate[key])
    cache = data.get("cache")
    if cache and cache != "memory":
        data["cache"] = _absolute(cache)
    return recipe


def _split_present(value):
    paths = value if isinstance(value, list) else [value]
    for path in paths:
        if any(c in path for c in "*?["):
            if not tf.io.gfile.glob(path):
                return False
        elif not tf.io.gfile.exists(path):
            return False
    return True


def generate_data(recipe):
    """Builds the data set named by `data.generate` when a split is absent.

    Returns:
        The generator's return value, or None when nothing was built.
    """
    data = recipe["data"]
    missing = [s for s, v in data["splits"].items() if not _split_present(v)]
    if not missing:
        return None
    generate = data.get("generate")
    if not generate:
        split = missing[0]
        raise DataError(
            f"data.splits.{split} does not exist; build the data set first "
            "or add data.generate to the recipe (e.g. {type: demo, "
            "out_dir: data/demo})", file=data["splits"][split])
    from keras_mm.recipes.recipe import GENERATORS
    module_name, function_name = GENERATORS[generate["type"]].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    kwargs = {k: v for k, v in generate.items() if k != "type"}
    log.info("data: building the %s data set (%s missing)", generate["type"],
             ", ".join(missing))
    result = function(**kwargs)
    still = [s for s, v in data["splits"].items() if not _split_present(v)]
    if still:
        raise ConfigError(
            f"data.splits.{still[0]}",
            f"{data['splits'][still[0]]} is still absent after building the "
            f"{generate['type']} data set with {kwargs}; make data.splits "
            "point into the folder data.generate writes")
    return result


# -- columns ------------------------------------------------------------------


def input_columns(recipe):
    """`{input name: manifest column(s)}` from each input's `source`."""
    return {name: entry["source"] for name, entry in recipe["inputs"].items()
            if entry.get("source") is not None}


def head_labels(recipe):
    """The Pipeline `labels` of the recipe's heads (`source` -> column)."""
    labels = {}
    for head, spec in recipe["heads"].items():
        spec = dict(spec)
        if spec["type"] == "contrastive":
            # no training label: `source` (optional) holds the classes that
            # class-level retrieval and zero-shot accuracy are scored on
            if spec.get("source") is None:
                continue
            spec = {"type": "key", "source": spec["source"]}
        spec["column"] = spec.pop("source", None) or head
        labels[head] = spec
    return labels


def _source(value):
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


# -- pipelines ----------------------------------------------------------------


def modality_dropout(recipe):
    """`training.modality_dropout` (None, one rate or `{input: rate}`),
    checked against the inputs and the presence input (ConfigError)."""
    value = (recipe.get("training") or {}).get("modality_dropout")
    if value is None:
        return None
    path, inputs = "training.modality_dropout", list(recipe["inputs"])
    for name in value if isinstance(value, dict) else ():
        if name not in inputs:
            raise ConfigError(f"{path}.{name}", f"{name!r} is not one of the "
                              f"inputs: {', '.join(inputs)}")
    if len(inputs) < 2 or not (recipe.get("fusion") or {}).get(
            "presence_mask"):
        why = ("the model has one input" if len(inputs) < 2 else
               "fusion.presence_mask is false")
        raise ConfigError(path, f"modality dropout marks inputs absent "
                          f"through the model's presence input, and {why}; "
                          "remove training.modality_dropout, or set "
                          "fusion.presence_mask: true (two or more inputs)")
    return value


def make_pipeline(recipe, split, preprocessors, spec, input_names=None,
                  report_dir=None, with_labels=True):
    """The `keras_mm.data.Pipeline` of one split.

    The train split's pipeline gets `training.modality_dropout` (applied
    only to its `training=True` datasets); the others never do.

    Args:
        recipe: the normalized recipe.
        split: `train`, `val` or `test`.
        preprocessors: fitted `{input name: preprocessor}` (model order).
        spec: the complete model spec (for `fusion.presence_mask`).
        input_names: the model's input names (features kept).
        report_dir: folder of `bad_input_<split>.json`.
    """
    from keras_mm.data import Pipeline

    data = recipe["data"]
    if split not in data["splits"]:
        raise ConfigError(f"data.splits.{split}",
                          f"the recipe has no {split!r} split; it has "
                          f"{', '.join(data['splits'])}")
    columns = {n: c for n, c in input_columns(recipe).items()
               if n in preprocessors}
    fusion = spec.get("fusion") or {}
    presence = bool(fusion.get("presence_mask"))
    dropout = modality_dropout(recipe) if split == "train" else None
    if not presence:      # the bad-input check before adapt (spec {})
        dropout = None
    return Pipeline(
        _source(data["splits"][split]), preprocessors, columns=columns,
        labels=head_labels(recipe) if with_labels else None,
        bad_input=data["bad_records"],
        report_path=None if report_dir is None else os.path.join(
            report_dir, f"bad_input_{split}.json"),
        presence_mask=presence, input_names=input_names,
        allow_paths_outside=bool(data.get("allow_paths_outside", False)),
        modality_dropout=dropout)


def share_check(pipe, checked):
    """Gives `pipe` the bad-input check of `checked`, a pipeline of the
    same split read by more inputs (the fused run's, for a single-input run
    of the scoreboard): its problems restricted to `pipe`'s inputs and
    labels - what `pipe`'s own check finds - without a second pass over
    the files. `pipe.validate()` then applies the policy (report, errors)
    as usual."""
    from keras_mm.data import validation

    checked.validate()
    found = validation._VALIDATION_CACHE.get(validation.fingerprint(checked))
    if found is None:
        return
    names = {inp.name for inp in pipe.inputs} | {
        lab.head for lab in pipe.labels}
    problems = {}
    for key, items in found["problems"].items():
        kept = [p for p in items if p.input in names]
        if kept:
            problems[key] = kept
    truncated = {}
    for key, items in found.get("truncated", {}).items():
        kept = [t for t in items if t[0] in names]
        if kept:
            truncated[key] = kept
    validation._VALIDATION_CACHE[validation.fingerprint(pipe)] = dict(
        found, problems=problems, truncated=truncated)


def count_batches(dataset, pipeline=None, batch_size=None,
                  drop_remainder=False):
    """Number of batches of one pass: the dataset's cardinality when
    known, else from the pipeline's example count (TFRecords with their
    `features.json`), else by reading one pass."""
    n = int(dataset.cardinality())
    if n >= 0:
        return n
    total = pipeline.num_examples() if pipeline is not None else None
    if total is not None and batch_size:
        decisions = getattr(pipeline, "_decisions", None) or {}
        total -= len(decisions.get("skip", ()))
        return total // batch_size if drop_remainder else \
            -(-total // batch_size)
    return int(dataset.reduce(tf.constant(0, tf.int64),
                              lambda count, _: count + 1))


def epoch_seed(seed, epoch):
    """The seed of epoch `epoch`: shuffle order and augmentation draws."""
    return int(seed) * _EPOCH_SEED_STRIDE + int(epoch)


def _concatenate(parts):
    """`parts[0].concatenate(parts[1])...` as a balanced tree (shallow)."""
    while len(parts) > 1:
        parts = [parts[i].concatenate(parts[i + 1]) if i + 1 < len(parts)
                 else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _one_epoch(pipeline, batch_size, seed, steps, options):
    """One epoch's pass, built inside a one-element `flat_map`.

    The shuffle's seed generator is then created inside a function, so a
    distribution strategy that clones the dataset (rebatching for its
    replicas) keeps the order; a top-level `shuffle(...,
    reshuffle_each_iteration=True)` gets another order in the clone.
    """
    @tf.autograph.experimental.do_not_convert
    def build(_):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*from outer graph")
            return pipeline.dataset(batch_size, seed=seed,
                                    **options).take(steps)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*from outer graph")
        return tf.data.Dataset.from_tensors(
            tf.constant(0, tf.int64)).flat_map(build)


def epoch_dataset(pipeline, batch_size, *, seed, epochs, initial_epoch=0,
                  shuffle_buffer=1024, drop_remainder=False, cache=None,
                  deterministic=True, cached=None):
    """Training batches of epochs `initial_epoch .. epochs - 1`, in order.

    Epoch `k` is its own pass of `pipeline.dataset(..., training=True,
    shuffle=..., seed=epoch_seed(seed, k))`, built under
    `tf.random.set_seed(epoch_seed(seed, k))`: its shuffle order AND the
    draws of the preprocessors' random augmentations (crops, flips...)
    depend only on `(seed, k)`, not on how many epochs this process ran
    before. A run resumed at epoch `k` thus gets exactly the batches of an
    uninterrupted run. (One dataset re-iterated by `fit` would repeat the
    same augmentation draws every epoch and restart its shuffle sequence
    after a restart; one `flat_map` over the epochs carries the random
    state of the augmentations from epoch to epoch.) Give the returned
    `steps_per_epoch` to `fit`.

    With `cache="memory"` the examples are read and parsed once
    (`cached_parse`: decode, resize, crop or pad - kept in memory after the
    first epoch's pass) and each epoch only shuffles them, redoes the
    seeded parses of the inputs whose `parse` draws random numbers
    (random crops of audio / series) from the cached raw values, and runs
    `transform` (normalization, features such as log-mel, augmentation).
    The batches are those of the uncached pass, value for value. A file
    `cache` path is the Pipeline's own (parsed once, crops frozen).
    `cached` is a `cached_parse(...)` to reuse (else one is made).

    Returns:
        `(dataset, steps_per_epoch)`.
    """
    options = dict(training=True, shuffle=max(int(shuffle_buffer), 1),
                   drop_remainder=drop_remainder, prefetch=False,
                   deterministic=deterministic,
                   cache=None if cache in (None, False, "memory") else cache)
    pipeline.validate()
    total = pipeline.num_examples() if pipeline.manifest is not None \
        else None
    if cache == "memory" and total is not None:
        # The manifest's row count: no uncached dataset built (or traced)
        # to ask for its cardinality.
        total -= len(pipeline._decisions["skip"])
        steps = total // batch_size if drop_remainder else \
            -(-total // batch_size)
    else:
        steps = count_batches(pipeline.dataset(batch_size, seed=seed,
                                               **options),
                              pipeline, batch_size, drop_remainder)
    if steps == 0:
        raise DataError(
            f"the train split gives no batch of {batch_size} examples "
            f"(drop_remainder={drop_remainder}); lower training.batch_size",
            file=pipeline.source_name)
    if cache == "memory" and cached is None:
        cached = cached_parse(pipeline, batch_size, deterministic)
        redone = cached.drawn_inputs
        message = ("data.cache: memory: the train split is read and parsed "
                   "once" + (f"; parsed again each epoch (random crops in "
                             f"parse): {', '.join(redone)}" if redone else ""))
        # Once per process: the scoreboard's single-input runs say the same.
        log.log(logging.DEBUG if message in _SAID else logging.INFO, message)
        _SAID.add(message)
    parts = []
    for epoch in range(int(initial_epoch), int(epochs)):
        tf.random.set_seed(epoch_seed(seed, epoch))
        if cache == "memory":
            parts.append(cached.epoch(batch_size, epoch_seed(seed, epoch),
                                      steps, options))
            continue
        parts.append(_one_epoch(pipeline, batch_size, epoch_seed(seed, epoch),
                                steps, options))
    tf.random.set_seed(seed)
    if not parts:            # nothing left to train: an empty pass
        parts = [cached.epoch(batch_size, seed, 0, options)
                 if cache == "memory" else
                 pipeline.dataset(batch_size, **options).take(0)]
    dataset = _concatenate(parts).prefetch(tf.data.AUTOTUNE)
    dataset_options = tf.data.Options()
    dataset_options.deterministic = bool(deterministic)
    return dataset.with_options(dataset_options), steps


def parse_draws(preprocessor):
    """Whether `preprocessor.parse` draws random numbers in training: its
    graph (traced with a seed; nested functions included) holds a random
    op. Such parses are redone every epoch under `data.cache: memory`."""
    try:
        function = tf.function(
            lambda raw, seed: preprocessor.parse(raw, training=True,
                                                 seed=seed))
        graph = function.get_concrete_function(
            preprocessor.example_signature(),
            tf.TensorSpec([2], tf.int32)).graph.as_graph_def()
    except (ValueError, TypeError, NotImplementedError):
        return True                     # unknown: never cache its parse
    ops = [n.op for n in graph.node] + [
        n.op for f in graph.library.function for n in f.node_def]
    return any("Random" in op for op in ops)


def cached_parse(pipeline, batch_size, deterministic=True):
    """The train split read and parsed once, in memory (`data.cache:
    memory`; see `epoch_dataset` and `keras_mm.training.cached_parse`)."""
    from keras_mm.training.cached_parse import CachedParse

    return CachedParse(pipeline, batch_size, deterministic)


def eval_dataset(pipeline, batch_size, drop_remainder=False):
    """Batches of a split in file order, without augmentation (with its
    number of batches known where the files tell it, so that Keras does
    not warn of data running out)."""
    dataset = pipeline.dataset(batch_size, training=False, shuffle=False,
                               drop_remainder=drop_remainder)
    if int(dataset.cardinality()) < 0 and pipeline.num_examples() is not None:
        batches = count_batches(dataset, pipeline, batch_size,
                                drop_remainder)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(
            batches))
    return dataset


def numeric_labels(dataset):
    """`dataset` without its string labels (a contrastive head's `key`
    labels, read for the retrieval metrics only): `fit` gets numbers
    alone, which a TPU needs (a string tensor cannot go to the device)."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2
            and isinstance(spec[1], dict)):
        return dataset
    strings = [k for k, v in spec[1].items() if v.dtype == tf.string]
    if not strings:
        return dataset
    if len(strings) == len(spec[1]):    # a dual encoder: add_loss alone
        return dataset.map(lambda x, y: x)
    return dataset.map(lambda x, y: (x, {k: v for k, v in y.items()
                                         if k not in strings}))


def golden_examples(pipeline, count):
    """Raw request values of the first `count` usable examples.

    Returns:
        `{raw input key: list of values}` (bytes for files, str for text,
        floats for numeric columns), as `keras_mm.serving.export` takes.
    """
    skipped = pipeline.skipped_keys()
    values = {}
    taken = 0
    total = pipeline.num_examples()
    index = 0
    while taken < count and (total is None or index < total):
        if pipeline.manifest is not None:
            key = index
            if key in skipped:
                index += 1
                continue
            raw, problems = pipeline.raw_example(key)
            if problems:
                index += 1
                continue
        else:
            key = index  # first file: keys 0, 1, ... are its records
            if key in skipped:
                index += 1
                continue
            try:
                raw, _ = pipeline.raw_example(key)
            except (StopIteration, tf.errors.OpError):
                break
        for inp in pipeline.inputs:
            for raw_key, column in inp.columns.items():
                value = raw[column]
                value = value.numpy() if hasattr(value, "numpy") else value
                if isinstance(value, bytes) and inp.kinds[raw_key] in (
                        "string", "key"):
                    value = value.decode("utf-8")
                values.setdefault(raw_key, []).append(value)
        taken += 1
        index += 1
    if not taken:
        raise DataError("no usable example for the export's golden "
                        "requests", file=pipeline.source_name)
    return values

