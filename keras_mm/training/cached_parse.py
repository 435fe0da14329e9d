import warnings

import tensorflow as tf

from keras_mm.data.batch_parser import input_seed

AUTOTUNE = tf.data.AUTOTUNE


def _with_draws(ds, seed):
    """As `keras_mm.data.pipeline`: one random int64 per element from
    tf.data's seeded stream (the same draws as the uncached pass)."""
    return tf.data.Dataset.zip((ds, tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True)))


class CachedParse:
    """A training split read and parsed ONCE, kept in memory
    (`data.cache: memory`); each epoch redoes only the seeded draws.

    The deterministic part of the preprocessing - reading the files and
    `parse` (decode, resize, crop or pad) of every input whose `parse`
    draws no random number (`run_data.parse_draws`) - runs in the first
    pass and is cached (`Dataset.cache()`). The inputs whose `parse` does
    draw in training (random crops of audio clips and series) keep their
    raw values in the cache and are parsed again each epoch with the seeds
    of the uncached pipeline; `transform` (normalization, features such as
    log-mel, augmentation) runs each epoch, batched, as there. An epoch
    (`epoch(...)`) therefore yields the batches `Pipeline.dataset(...,
    training=True, seed=...)` yields, value for value, with the same
    shuffle order and augmentation draws (tests compare them), at the cost
    of holding the parsed split in memory.

    Args:
        pipeline: the train split's `keras_mm.data.Pipeline` (with labels).
        batch_size: examples per batch of the parse pass.
        deterministic: keep element order in the parallel maps.

    Example:

    >>> cached = CachedParse(pipe, 32)                  # doctest: +SKIP
    >>> ds = cached.epoch(32, seed=7, steps=10,
    ...                   options={"shuffle": 1024})    # doctest: +SKIP
    """

    def __init__(self, pipeline, batch_size, deterministic=True):
        from keras_mm.training.run_data import parse_draws

        pipeline.validate()
        self.pipeline = pipeline
        self.deterministic = bool(deterministic)
        self.drawn = [i for i, inp in enumerate(pipeline.inputs)
                      if parse_draws(inp.pre)]
        elements, self._load = pipeline.source.elements(
            pipeline._decisions, None, None, self.deterministic)
        self.dataset = elements.batch(int(batch_size)).map(
            self._parse_fixed, num_parallel_calls=AUTOTUNE,
            deterministic=self.deterministic).unbatch().cache()
        # Traced once for all the epochs (each epoch's map calls it).
        self._finish_function = tf.function(self._finish,
                                            autograph=False)

    @property
    def drawn_inputs(self):
        """Names of the inputs parsed again each epoch."""
        return [self.pipeline.inputs[i].name for i in self.drawn]

    def _signature(self):
        features = {}
        for i, inp in enumerate(self.pipeline.inputs):
            if i in self.drawn or inp.pre.batched_parse:
                features[inp.name] = inp.pre.example_signature()
            else:
                features[inp.name] = inp.pre.parsed_signature()
        labels = {lab.head: lab.raw_spec() for lab in self.pipeline.labels}
        return tf.TensorSpec([], tf.int64), features, labels

    def _parse_fixed(self, elements):
        """A batch of source elements -> `(key, features, raw labels)`:
        deterministic inputs parsed, drawn ones raw."""
        inputs = self.pipeline.inputs
        zero = tf.zeros([2], tf.int32)   # unused: these parses draw nothing

        def one(element):
            key, raw, raw_labels = self._load(element)
            features = {}
            for i, inp in enumerate(inputs):
                if i in self.drawn or inp.pre.batched_parse:
                    features[inp.name] = inp.raw(raw)
                else:
                    features[inp.name] = inp.pre.parse(
                        inp.raw(raw), training=True, seed=zero)
            return tf.cast(key, tf.int64), features, raw_labels

        keys, features, raw_labels = tf.map_fn(
            one, elements, fn_output_signature=self._signature())
        features = dict(features)
        for i, inp in enumerate(inputs):
            if inp.pre.batched_parse and i not in self.drawn:
                seeds = tf.zeros([tf.shape(keys)[0], 2], tf.int32)
                features[inp.name] = inp.pre.parse_batch(
                    features[inp.name], training=True, seeds=seeds)
        return keys, features, raw_labels

    def _finish(self, cached, draws):
        """A batch of cached examples -> `(features, labels)`: the drawn
        parses (seeds as in `keras_mm.data.batch_parser`), the labels,
        `transform` with the batch's seed (as `Pipeline._batched`)."""
        keys, features, raw_labels = cached
        features = dict(features)
        seeds = tf.stack([draws, keys], axis=1)
        for i in self.drawn:
            inp = self.pipeline.inputs[i]
            seeds_i = tf.map_fn(lambda s, i=i: input_seed(s, i), seeds,
                                fn_output_signature=tf.TensorSpec(
                                    [2], tf.int32))
            features[inp.name] = inp.pre.parse_batch(
                features[inp.name], training=True, seeds=seeds_i)
        labels = {lab.head: lab.encode(raw_labels[lab.head])
                  for lab in self.pipeline.labels}
        batch = (features, labels) if self.pipeline.labels else (features,)
        seed = tf.stack([draws[0], tf.reduce_sum(draws)])
        return self.pipeline._transform(batch, True, seed, draws=draws)

    def epoch(self, batch_size, seed, steps, options):
        """One epoch's batches (built inside a one-element `flat_map`, as
        `run_data._one_epoch`, so a strategy's clone keeps the order).

        Args:
            batch_size: examples per batch.
            seed: the epoch's seed (`run_data.epoch_seed`); also set it as
                the global seed while building, as for the uncached pass.
            steps: batches to take.
            options: `shuffle` (buffer), `drop_remainder`.
        """
        shuffle = options.get("shuffle")
        drop_remainder = bool(options.get("drop_remainder", False))

        @tf.autograph.experimental.do_not_convert
        def build(_):
            ds = _with_draws(self.dataset, seed)
            if shuffle:
                ds = ds.shuffle(max(int(shuffle), 1), seed=seed,
                                reshuffle_each_iteration=True)
            ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
            return ds.map(
                lambda cached, draws: self._finish_function(cached, draws),
                num_parallel_calls=AUTOTUNE,
                deterministic=self.deterministic).take(steps)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*from outer graph")
            return tf.data.Dataset.from_tensors(
                tf.constant(0, tf.int64)).flat_map(build)
