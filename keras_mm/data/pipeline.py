"""The tf.data input pipeline: manifest or TFRecords -> model-ready batches.

    source (CSV / JSONL manifest, or TFRecord shards; `sources.py`: files
    read, values converted by THE record-value converter)
      -> bad-input check (once, before the graph is built; `validation.py`)
      -> shuffle the rows / records (seeded; cheap: nothing is decoded yet)
      -> batch (`drop_remainder` for static shapes)
      -> one parallel map per batch: read the files and `parse` each
         example (`tf.map_fn`; preprocessors that decode whole batches get
         the raw batch, `parse_batch`), encode the labels (`labels.py`),
         then `transform` the batch (`training` flag) -> presence mask
         (times the modality-dropout keep mask in training datasets;
         `modality_dropout.py`)
      -> tf.data service (optional) -> prefetch

This is the serving function's composition, `transform(parse_batch(raw))`.
Looping over the examples of a batch inside the graph costs far less per
example than one tf.data function call per example, and the expensive
feature maps (the STFT of log-mel, image augmentation) run batched. With
`cache`, parsed examples are cached (the batches are split again), then
shuffled, batched and transformed.

A dataset yields `(features, labels)`: `features` keyed like the inputs of
`keras_mm.build_model` (`<name>`, `<name>_mask`, `<name>_numeric`,
`<name>_categorical`, and `presence` `[B, M]` when `presence_mask=True`),
`labels` keyed by head name. Manifests and the TFRecord shards converted from
them (`keras_mm.data.tfrecords`) give bitwise-equal batches.
"""

import logging
import os

import tensorflow as tf

from keras_mm.data import bad_input as bad_input_lib
from keras_mm.data import modality_dropout as modality_dropout_lib
from keras_mm.data import tfrecords
from keras_mm.data import validation
from keras_mm.data.batch_parser import batch_parser
from keras_mm.data.batch_parser import input_seed
from keras_mm.data.input_columns import InputColumns
from keras_mm.data.labels import LABEL_TYPES  # noqa: F401
from keras_mm.data.labels import HeadLabel
from keras_mm.data.manifest import Manifest
from keras_mm.data.sources import AUTOTUNE
from keras_mm.data.sources import MANIFEST_SUFFIXES
from keras_mm.data.sources import ManifestSource
from keras_mm.data.sources import TFRecordSource
from keras_mm.data.record_values import key_string  # noqa: F401

logger = logging.getLogger("keras_mm.data")


def _with_draws(ds, seed):
    """`ds` zipped with one random int64 per element, new on each iteration
    and reproducible from `seed` (tf.data's own seeded stream)."""
    return tf.data.Dataset.zip((ds, tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True)))


class Pipeline:
    """Builds tf.data datasets from a manifest or TFRecord shards.

    Args:
        source: a `Manifest`, a `.csv`/`.tsv`/`.jsonl` manifest path, or
            TFRecord shards (a file, folder, glob or list; any
            `tf.io.gfile` path, `gs://` included) written by
            `convert_manifest_to_tfrecords` (their `features.json` says the
            column kinds; otherwise pass `column_kinds`).
        preprocessors: `{model input name: preprocessor}`, in model input
            order (also the column order of `presence`).
        columns: `{input name: column}` (default: the column named like the
            input); for a tabular preprocessor `{raw key: column}`, default
            its column names.
        labels: `{head name: spec}` (see `keras_mm.data.labels.HeadLabel`;
            a builder spec's `heads` dict works as it is): classification
            labels are int32 `[B]`, binary float32 `[B, 1]`, multilabel
            float32 `[B, L]` (multi-hot), regression float32 `[B, units]`.
            None: the dataset yields features only.
        bad_input: `"error"`, `"skip"` or `"missing"` (see
            `keras_mm.data.bad_input`).
        report_path: where the bad-input report JSON is written (each time
            the check runs); None: only logged.
        max_report_rows: offending rows kept in the report.
        presence_mask: add `features["presence"]` float32 `[B, M]`, column
            j = `presence_order[j]` (default the preprocessors' order).
        input_names: keep only these feature keys (e.g. the model's input
            names); by default every output except `<name>_present`.
        keep_present: also keep the `<name>_present` keys.
        validate: run the bad-input check (strongly advised). Without it a
            bad example stops the pass with a tf error; `iterate` turns it
            into a DataError naming what it can.
        column_types: `{column: type}` for the manifest (see `Manifest`).
        column_kinds: `{column: kind}` of TFRecords without `features.json`.
        allow_paths_outside: read manifest file paths that resolve
            (symlinks followed) outside the manifest's folder. False (the
            default, as for the recipe key `data.allow_paths_outside` and
            `convert`): such a path is a bad record (`path_outside`, its
            file never read), handled by the `bad_input` policy. Set True
            only for manifests you trust.
        modality_dropout: None, one rate in [0, 1) for every input, or
            `{input name: rate}` (others 0). In training datasets only
            (`training=True`), each example's `presence` column j is set to
            0 with probability `rate_j` (needs `presence_mask=True`). The
            draws are stateless per example (seed, pass, example), whatever
            the batch size, threads or replicas; absent modalities stay
            absent, and at least one present modality of each example is
            kept. Evaluation datasets are untouched.

    Bad input: the check runs once per `Pipeline` (and again whenever the
    manifest, its files or the preprocessor configs change), before any
    dataset is built; it decodes every example once in a parallel tf.data
    pass and diagnoses the failures eagerly. Skipped and marked examples are
    the same in every pass; the report is logged at the check and again at
    the end of each pass of `iterate()`. Files changed after the check make
    the pass fail: `iterate()` raises a DataError naming the row when it
    can.

    Example:

    >>> pre = {"image": ImagePreprocessor("image", size=(28, 28), channels=1),
    ...        "audio": AudioPreprocessor("audio", sample_rate=8000)}
    ...                                                   # doctest: +SKIP
    >>> pipe = Pipeline("train.csv", pre, columns={"image": "png"},
    ...                 labels={"digit": {"num_classes": 10}},
    ...                 bad_input="skip",
    ...                 report_path="bad_input.json")    # doctest: +SKIP
    >>> ds = pipe.dataset(batch_size=32, shuffle=True, seed=0,
    ...                   training=True)                 # doctest: +SKIP
    >>> model.fit(ds, epochs=3)                           # doctest: +SKIP
    """

    def __init__(self, source, preprocessors, columns=None, labels=None, *,
                 bad_input="error", report_path=None, max_report_rows=10,
                 presence_mask=False, presence_order=None, input_names=None,
                 keep_present=False, validate=True, column_types=None,
                 column_kinds=None, allow_paths_outside=False,
                 modality_dropout=None):
        self.policy = bad_input_lib.check_policy(bad_input)
        self.report_path = None if report_path is None else \
            os.fspath(report_path)
        self.max_report_rows = int(max_report_rows)
        self.presence_mask = bool(presence_mask)
        self.input_names = None if input_names is None else list(input_names)
        self.keep_present = bool(keep_present)
        self.validate_data = bool(validate)
        if not preprocessors:
            raise ValueError("Pipeline: give at least one preprocessor")
        columns = dict(columns or {})
        unknown = sorted(set(columns) - set(preprocessors))
        if unknown:
            raise ValueError(f"Pipeline: columns names {unknown}, which are "
                             f"not preprocessors ({list(preprocessors)})")
        self.inputs = [InputColumns(n, p, columns.get(n))
                       for n, p in preprocessors.items()]
        self.preprocessors = dict(preprocessors)
        self.presence_order = list(presence_order or preprocessors)
        missing = [n for n in self.presence_order if n not in preprocessors]
        if missing:
            raise ValueError(f"Pipeline: presence_order names {missing}, "
                             "which are not preprocessors")
        self.modality_dropout = modality_dropout
        self.dropout_rates = None
        if modality_dropout is not None:
            if not self.presence_mask or len(self.presence_order) < 2:
                raise ValueError(
                    "Pipeline: modality_dropout needs presence_mask=True and "
                    "two or more inputs (the model's presence input)")
            self.dropout_rates = modality_dropout_lib.dropout_rates(
                modality_dropout, self.presence_order,
                where="Pipeline: modality_dropout")
        self.labels = [HeadLabel(h, s) for h, s in (labels or {}).items()]
        self.wanted = self._wanted_kinds()

        self.manifest = None
        self.files = None
        if isinstance(source, (str, os.PathLike)) and os.fspath(
                source).lower().endswith(MANIFEST_SUFFIXES):
            source = Manifest.read(source, column_types=column_types)
        if isinstance(source, Manifest):
            self.manifest = source
            self.source = ManifestSource(source, self.wanted, self.labels,
                                         allow_paths_outside)
        else:
            self.files = tfrecords.list_shards(source)
            self.source = TFRecordSource(self.files, self.wanted,
                                         self.labels, column_kinds)
        self.source_name = self.source.name()
        self.report = None
        self._decisions = None

    def _wanted_kinds(self):
        """`{column: kind}` the inputs and labels read."""
        wanted = {}
        reads = [(inp.columns[key], kind, f"input {inp.name!r}")
                 for inp in self.inputs for key, kind in inp.kinds.items()]
        reads += [(c, label.wanted_kind, f"head {label.head!r}")
                  for label in self.labels for c in label.columns]
        for column, kind, name in reads:
            old = wanted.get(column)
            if old is not None and old != kind:
                raise ValueError(f"Pipeline: column {column!r} is read as "
                                 f"{old!r} and as {kind!r} ({name})")
            wanted[column] = kind
        return wanted

    def readers(self, column):
        """Names of the inputs that read `column`."""
        return [inp.name for inp in self.inputs
                if column in inp.columns.values()]

    # ----------------------------------------------------------- validation
    def validate(self, force=False):
        """Runs the bad-input check (once) and applies the policy.

        Returns the `BadInputReport`; raises `DataError` under
        `bad_input="error"` when something is wrong (after logging the
        report and writing its JSON file). See `keras_mm.data.validation`.
        """
        if self._decisions is not None and not force:
            return self.report
        return validation.validate(self, force)

    def num_examples(self):
        """Examples in the source (None for TFRecords without a count)."""
        return self.source.num_examples()

    def explain_error(self, error):
        """A DataError for a tf error raised while reading this pipeline."""
        return validation.explain_error(self, error)

    # ------------------------------------------------------------ raw access
    def raw_dataset(self):
        """`(key, raw, labels)` per example, in source order, unchecked.

        Files are read, nothing is parsed and the bad-input check is not
        applied: for `adapt` and inspection. `raw` is keyed by column.
        """
        return self.source.raw_dataset()

    def skipped_keys(self):
        """Keys (manifest row indices) the bad-input check skips."""
        self.validate()
        return set(self._decisions["skip"])

    def raw_example(self, key):
        """`(raw, problems)` of ONE example, read eagerly.

        `raw` is keyed by column; `problems` lists the manifest files that
        could not be read (their cells are then empty). For TFRecords the
        key is `file index * 2**32 + record index`, and a missing record
        raises `StopIteration`.
        """
        if self.manifest is not None:
            return self.source.eager_raw(key, self.readers)
        raw, _, _ = self.source.eager_record(key)
        return raw, []

    # -------------------------------------------------------------- datasets
    def dataset(self, batch_size=32, *, training=False, shuffle=False,
                seed=None, cache=None, deterministic=True,
                drop_remainder=False, prefetch=True, cycle_length=None,
                service=None, service_mode="parallel_epochs",
                service_job_name=None, input_context=None, corrupt=None):
        """A `tf.data.Dataset` of `(features, labels)` batches.

        Args:
            batch_size: examples per batch (per replica under
                `distribute`).
            training: passed to `parse` / `transform` (random crops and
                augmentation only when True).
            shuffle: False, True (buffer of the whole set, at most 10000) or
                a buffer size; the rows (or TFRecord records) are shuffled
                before they are read, or the parsed examples after the
                cache.
            seed: the shuffle's seed (same seed + `deterministic` = same
                order in every run) and, with `training`, that of the random
                draws: each example's crops are stateless functions of
                (seed, pass, example), whatever the batch size, threads or
                replicas; batch augmentations of (seed, pass, batch). Each
                pass over the dataset draws anew.
            cache: None, `"memory"` or a file path prefix (cached after
                parsing, before shuffling; random crops of `parse` are then
                frozen at their first-epoch values).
            deterministic: keep the element order of the parallel
                map/interleave (False is faster, order may vary).
            drop_remainder: drop a last partial batch so the batch dimension
                is static (TPU / XLA).
            prefetch: prefetch batches (AUTOTUNE).
            cycle_length: TFRecord files read at once (default AUTOTUNE;
                1 reads them one after the other, in row order).
            service: tf.data service dispatcher address
                (`"grpc://host:port"`): the batches are produced by its
                workers.
            service_mode: `"parallel_epochs"` or `"distributed_epoch"`.
            service_job_name: shares one job between several consumers.
            input_context: a `tf.distribute.InputContext` (set by
                `distribute`): reads only this input pipeline's shard.
            corrupt: None, or a callable `corrupt(parsed) -> parsed` applied
                to each batch after `parse` (and after the cache) and before
                `transform`, in training and evaluation alike. `parsed` is
                `{input name: that preprocessor's parse outputs}` (batched
                tensors); return the same structure (same keys, dtypes and
                shapes), e.g. with noise added or a modality blanked. It is
                traced once inside the tf.data map: use TF ops.

        Example:

        >>> def blank_image(parsed):
        ...     parsed = dict(parsed)
        ...     parsed["image"] = {k: tf.zeros_like(v)
        ...                        for k, v in parsed["image"].items()}
        ...     return parsed
        >>> ds = pipe.dataset(32, corrupt=blank_image)   # doctest: +SKIP
        """
        self.validate()
        if corrupt is not None and not callable(corrupt):
            raise TypeError(f"Pipeline.dataset: corrupt must be a callable "
                            f"corrupt(parsed) -> parsed, not "
                            f"{type(corrupt).__name__}")
        options = tf.data.Options()
        options.deterministic = bool(deterministic)
        # 1. unparsed elements (sources.py), 2. the per-batch read + parse
        # (batch_parser.py), 3. shuffle / batch / cache / transform, 4. the
        # tf.data service and prefetch.
        ds, load = self.source.elements(self._decisions, input_context,
                                        cycle_length, deterministic)
        parse_batch = batch_parser(self.inputs, self.labels, load, training)
        ds = self._batched(ds, parse_batch, int(batch_size), training=training,
                           shuffle=shuffle, seed=seed, cache=cache,
                           deterministic=deterministic,
                           drop_remainder=drop_remainder,
                           input_context=input_context, corrupt=corrupt)
        if service is not None:
            ds = ds.apply(tf.data.experimental.service.distribute(
                processing_mode=service_mode, service=service,
                job_name=service_job_name))
        if prefetch:
            ds = ds.prefetch(AUTOTUNE)
        return ds.with_options(options)

    def _batched(self, ds, parse_batch, batch_size, *, training, shuffle,
                 seed, cache, deterministic, drop_remainder, input_context,
                 corrupt):
        """Shuffle, batch, parse and transform (without `cache`),
        or parse, cache, shuffle, batch and transform (with it).

        In training every element carries its own random int64 (zipped
        before batching): the example's crops and modality dropout are
        stateless functions of it, the batch augmentations of its batch's.
        """
        def batch_seed(draws):
            # The batch's augmentation draws (transform): from its elements'.
            return tf.stack([draws[0], tf.reduce_sum(draws)])

        def finish(batch, draws):
            if draws is None:
                return self._transform(batch, training, corrupt=corrupt)
            return self._transform(batch, training, batch_seed(draws),
                                   draws=draws, corrupt=corrupt)

        if training:
            ds = _with_draws(ds, seed)
        if cache is None:
            ds = self._shuffle(ds, shuffle, seed)
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            return ds.map(
                lambda *e: finish(parse_batch(*e),
                                  e[-1] if training else None),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        ds = ds.batch(batch_size).map(
            parse_batch, num_parallel_calls=AUTOTUNE,
            deterministic=deterministic).unbatch()
        if cache == "memory":
            ds = ds.cache()
        else:
            path = os.fspath(cache)
            if input_context is not None and \
                    input_context.num_input_pipelines > 1:
                path = f"{path}-{input_context.input_pipeline_id}"
            ds = ds.cache(path)
        ds = self._shuffle(ds, shuffle, seed)
        if training:
            # Per-element draws again, after the cache and the shuffle.
            ds = _with_draws(ds, seed).batch(batch_size,
                                             drop_remainder=drop_remainder)
            return ds.map(finish, num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.map(lambda *x: finish(x, None),
                      num_parallel_calls=AUTOTUNE,
                      deterministic=deterministic)

    def _shuffle(self, ds, shuffle, seed):
        if not shuffle:
            return ds
        if shuffle is True:
            n = self.num_examples()
            buffer = min(n if n else 10000, 10000)
        else:
            buffer = int(shuffle)
        return ds.shuffle(max(buffer, 1), seed=seed,
                          reshuffle_each_iteration=True)

    def _transform(self, batch, training, seed=None, draws=None,
                   corrupt=None):
        parsed = batch[0]
        if corrupt is not None:
            parsed = self._corrupted(parsed, corrupt)
        features = {}
        for i, inp in enumerate(self.inputs):
            features.update(inp.pre.transform(parsed[inp.name],
                                              training=training,
                                              seed=input_seed(seed, i)))
        if self.presence_mask:
            features["presence"] = tf.stack(
                [tf.cast(features[n + "_present"], tf.float32)
                 for n in self.presence_order], axis=1)
            if training and self.dropout_rates is not None:
                self._drop_modalities(features, draws)
        if self.input_names is not None:
            unknown = [n for n in self.input_names if n not in features]
            if unknown:
                raise ValueError(
                    f"Pipeline: input_names {unknown} are not produced; the "
                    f"preprocessors give {sorted(features)}")
            features = {n: features[n] for n in self.input_names}
        elif not self.keep_present:
            names = {inp.name + "_present" for inp in self.inputs}
            features = {k: v for k, v in features.items() if k not in names}
        if len(batch) == 1:
            return features
        return features, batch[1]

    def _corrupted(self, parsed, corrupt):
        out = corrupt(dict(parsed))
        if not isinstance(out, dict) or set(out) != set(parsed):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise ValueError(f"Pipeline.dataset: corrupt(parsed) must return "
                             f"a dict keyed by the inputs {sorted(parsed)}; "
                             f"got {got}")
        return out

    def _drop_modalities(self, features, draws):
        """Modality dropout on a training batch (`modality_dropout.py`):
        `presence` (and the `<name>_present` keys) times the keep mask."""
        if draws is None:
            raise ValueError("Pipeline: modality dropout needs the "
                             "per-example draws of a training dataset")
        presence = features["presence"]
        keep = modality_dropout_lib.modality_keep_mask(
            presence, self.dropout_rates,
            modality_dropout_lib.example_seeds(draws))
        features["presence"] = presence * keep
        for j, n in enumerate(self.presence_order):
            key = n + "_present"
            features[key] = features[key] * tf.cast(keep[:, j],
                                                    features[key].dtype)

    def distribute(self, strategy, global_batch_size, **options):
        """A distributed dataset: one input pipeline per worker, sharded.

        Uses `strategy.distribute_datasets_from_function`; each input
        pipeline reads its shard (`InputContext.input_pipeline_id`: TFRecord
        files, else examples) and batches `global_batch_size /
        num_replicas_in_sync` examples per replica. `options` are those of
        `dataset`.
        """
        self.validate()

        def dataset_fn(context):
            per_replica = context.get_per_replica_batch_size(
                global_batch_size)
            return self.dataset(per_replica, input_context=context,
                                **options)

        return strategy.distribute_datasets_from_function(dataset_fn)

    # -------------------------------------------------------------- iterate
    def iterate(self, **options):
        """Iterates one pass of `dataset(**options)` in Python.

        A tf error during the pass (e.g. a file removed after the bad-input
        check) is raised as a `DataError` naming the row and column when the
        message allows. The bad-input report is logged at the end of the
        pass.
        """
        ds = self.dataset(**options)      # checks now, not at first next()
        return self._iterate(ds)

    def _iterate(self, ds):
        it = iter(ds)
        count = 0
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except tf.errors.OpError as e:
                raise self.explain_error(e) from e
            count += 1
            yield batch
        logger.info("end of pass over %s: %d batch(es)", self.source_name,
                    count)
        if self.report is not None:
            self.report.log(logger)



_PIPELINE_ARGS = ("columns", "labels", "bad_input", "report_path",
                  "max_report_rows", "presence_mask", "presence_order",
                  "input_names", "keep_present", "validate", "column_types",
                  "column_kinds", "allow_paths_outside", "modality_dropout")


def _split(kwargs):
    pipe = {k: kwargs.pop(k) for k in list(kwargs) if k in _PIPELINE_ARGS}
    return pipe, kwargs


def make_dataset(source, preprocessors, batch_size=32, **kwargs):
    """`Pipeline(source, preprocessors, ...).dataset(batch_size, ...)`.

    Keyword arguments go to `Pipeline` (columns, labels, bad_input,
    report_path, presence_mask, ...) or to `Pipeline.dataset` (training,
    shuffle, seed, cache, deterministic, drop_remainder, service, ...).

    Example:

    >>> ds = make_dataset("train.csv", {"image": image_pre}, batch_size=32,
    ...                   labels={"digit": {"num_classes": 10}},
    ...                   shuffle=True, seed=0)          # doctest: +SKIP
    """
    pipe, options = _split(dict(kwargs))
    return Pipeline(source, preprocessors, **pipe).dataset(batch_size,
                                                           **options)


def make_distributed(strategy, source, preprocessors, global_batch_size,
                     **kwargs):
    """A distributed dataset for `strategy` (see `Pipeline.distribute`)."""
    pipe, options = _split(dict(kwargs))
    return Pipeline(source, preprocessors, **pipe).distribute(
        strategy, global_batch_size, **options)
