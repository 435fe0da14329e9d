"""The per-batch parse step of the input pipeline.

`batch_parser(...)` gives the function a `Pipeline` maps over each batch of
unparsed elements: ONE `tf.map_fn` reads (`load`) and `parse`s each example
(a while loop costs far less per example than a tf.data function call per
example), preprocessors with `batched_parse` then decode the raw batch, and
the labels are encoded batched. It is the serving composition's
`parse_batch(raw)`; `Pipeline._transform` does the rest.
"""

import tensorflow as tf


def input_seed(seed, index):
    """Input `index`'s own stateless seed, derived from `seed` (or None)."""
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(seed, index)


def loop_signature(inputs, labels, training):
    """What the per-example loop (`tf.map_fn`) gives for ONE example:
    `parse`'s outputs, or the raw value (and, in training, the seed) of
    inputs whose preprocessor parses whole batches; the raw labels."""
    features = {}
    for inp in inputs:
        if inp.pre.batched_parse:
            features[inp.name] = {"raw": inp.pre.example_signature()}
            if training:
                features[inp.name]["seed"] = tf.TensorSpec([2], tf.int32)
        else:
            features[inp.name] = inp.pre.parsed_signature()
    if not labels:
        return features
    return features, {lab.head: lab.raw_spec() for lab in labels}


def batch_parser(inputs, labels, load, training):
    """`parse_batch(*batched elements) -> (features, labels)`:
    each example read and parsed in ONE `tf.map_fn` (a while loop costs
    far less per example than a tf.data function call per example);
    preprocessors that decode whole batches get the raw batch; the
    labels are encoded batched."""
    signature = loop_signature(inputs, labels, training)

    def parse_one(item):
        # In training each element comes with a random int64 (see
        # `Pipeline._batched`): the example's random draws are stateless
        # functions of (that number, its key), whatever the thread
        # timing, batching or number of replicas.
        element, draw = item if training else (item, None)
        key, raw, raw_labels = load(element)
        seed = None if draw is None else tf.stack(
            [draw, tf.cast(key, tf.int64)])
        features = {}
        for i, inp in enumerate(inputs):
            seed_i = input_seed(seed, i)
            if inp.pre.batched_parse:   # parsed after the loop
                features[inp.name] = {"raw": inp.raw(raw)}
                if seed_i is not None:
                    features[inp.name]["seed"] = seed_i
            else:
                features[inp.name] = inp.pre.parse(
                    inp.raw(raw), training=training, seed=seed_i)
        if not labels:
            return features
        return features, raw_labels   # encoded after the loop, batched

    def parse_batch(*items):
        item = items[0] if len(items) == 1 else items
        parsed = tf.map_fn(parse_one, item,
                           fn_output_signature=signature)
        parsed = parsed if isinstance(parsed, tuple) else (parsed,)
        features = dict(parsed[0])
        for inp in inputs:
            if inp.pre.batched_parse:
                loop = features[inp.name]
                features[inp.name] = inp.pre.parse_batch(
                    loop["raw"], training=training,
                    seeds=loop.get("seed"))
        if not labels:
            return (features,)
        return features, {lab.head: lab.encode(parsed[1][lab.head])
                          for lab in labels}

    return parse_batch
