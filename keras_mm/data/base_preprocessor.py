"""Base class of the per-modality preprocessors.

A preprocessor turns the raw value of one model input (encoded image bytes,
WAV bytes, text, a `[T, C]` series, a dict of table columns...) into
model-ready tensors. It is a plain Python object, not a Keras layer: its graph
code is core TensorFlow / tensorflow-text only, so the *same* code runs in
`tf.data` during training and inside the exported SavedModel's serving
function.
"""

import json

import tensorflow as tf

from keras_mm.registry import PREPROCESSORS


class Preprocessor:
    """Base class: config, adapt, parse, transform and the serving call.

    Subclasses set the class attribute `modality` (the name they are
    registered under in `keras_mm.registry.PREPROCESSORS`) and implement
    `raw_signature`, `parsed_signature`, `parse` and `transform`; stateful
    ones also override `adapt` and `get_config`.

    The two execution paths, which give the same values for the same raw
    bytes:
    - training (`keras_mm.data.Pipeline`): the raw rows are batched, then
      each batch goes through `transform(parse_batch(batch))` in one
      parallel `dataset.map` (with `cache`, parsed examples are cached
      before `transform`);
    - serving: `pre(raw_batch)` = `transform(parse_batch(raw_batch))`
      inside the exported `tf.function`.

    `parse_batch` is `parse` on each example (`tf.map_fn`) unless a
    subclass decodes whole batches at once (`batched_parse = True`, e.g. the
    audio preprocessor's canonical-WAV path), with the same values.

    Output dict keys: `<name>` (model-ready tensor), optionally
    `<name>_mask`, and `<name>_present` (float32 `[B]`, 0 where the raw value
    is empty: the modality is absent in that example and its `<name>` tensor
    is all zeros).

    Args:
        name: the model input name; output keys derive from it.

    Example:

    >>> pre = keras_mm.data.ImagePreprocessor("image", size=(28, 28),
    ...                                      channels=1)
    >>> batch = pre(tf.constant([png_bytes, b""]))   # serving path
    >>> batch["image"].shape, batch["image_present"].numpy()
    (TensorShape([2, 28, 28, 1]), array([1., 0.], dtype=float32))
    """

    modality = None
    # The PREPROCESSORS name (default `modality`; "text_preset" for the
    # keras-hub text preprocessor): what `serialize_preprocessor` records.
    registered_name = None
    # True when `parse_batch` decodes a whole batch at once (see there).
    batched_parse = False

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{self.__class__.__name__}: name={name!r} must be a "
                "non-empty string (the model input name)")
        self.name = name

    # -- config --------------------------------------------------------------

    def get_config(self):
        """JSON-serializable constructor arguments, fitted state included."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{self.__class__.__name__}(name={self.name!r})"

    # -- fitting -------------------------------------------------------------

    def adapt(self, dataset):
        """Fits vocabularies / statistics on raw training examples.

        Args:
            dataset: a `tf.data.Dataset` or an iterable of single raw
                examples of the training split only (the bare raw value, or
                a dict holding this preprocessor's raw keys).

        Returns:
            self.
        """
        del dataset
        return self

    @property
    def is_adapted(self):
        """True when all fitted state needed by `transform` is present."""
        return True

    # -- signatures ----------------------------------------------------------

    def raw_signature(self):
        """`{key: tf.TensorSpec([None, ...])}` of the raw serving inputs."""
        raise NotImplementedError

    def parsed_signature(self):
        """Dict `{key: tf.TensorSpec}` of ONE parsed example (no batch dim)."""
        raise NotImplementedError

    def output_signature(self):
        """`{key: tf.TensorSpec([None, ...])}` of the model-ready batch."""
        raise NotImplementedError

    def output_shape(self):
        """Per-example shape of the `<name>` output (the builder's `shape`)."""
        return tuple(self.output_signature()[self.name].shape[1:])

    # -- graph code ----------------------------------------------------------

    def parse(self, raw, training=False, seed=None):
        """ONE raw example -> dict of fixed-shape tensors (parsed_signature).

        Args:
            raw: the raw value, or a dict holding this preprocessor's raw
                keys.
            training: Python bool; random crops happen only when True.
            seed: None, or an int `[2]` tensor: the random draws of training
                (crops) are then stateless functions of it. `Pipeline` gives
                one per example, so that the draws do not depend on thread
                timing, batching or the number of replicas.
        """
        raise NotImplementedError

    def transform(self, parsed, training=False, seed=None):
        """Batched parsed dict -> model-ready dict (see output_signature).

        `seed`: None, or an int `[2]` tensor for the batch's random
        augmentation draws (stateless), as in `parse`.
        """
        raise NotImplementedError

    def parse_batch(self, raw_batch, training=False, seeds=None):
        """A batch of raw examples -> the batched `parse` outputs.

        The default runs `parse` on each example (`tf.map_fn`). A subclass
        that decodes whole batches at once overrides it and sets
        `batched_parse = True` (the pipeline then hands it the raw batch);
        its values must equal `parse`'s bitwise.

        Args:
            raw_batch: the raw values, batched (or a dict holding them).
            training: as in `parse`.
            seeds: None, or int `[B, 2]`: example i's `parse` seed.
        """
        raw_batch = self.select_raw(raw_batch)
        signature = self.parsed_signature()
        if seeds is None:
            return tf.map_fn(lambda raw: self.parse(raw, training=training),
                             raw_batch, fn_output_signature=signature)
        return tf.map_fn(
            lambda item: self.parse(item[0], training=training,
                                    seed=item[1]),
            (raw_batch, seeds), fn_output_signature=signature)

    def __call__(self, raw_batch, training=False):
        """Serving path: `transform(parse_batch(raw_batch))`."""
        parsed = self.parse_batch(raw_batch, training=training)
        return self.transform(parsed, training=training)

    def resources(self):
        """TF resources (lookup tables) the exporter must track."""
        return []

    # -- helpers -------------------------------------------------------------

    def raw_keys(self):
        return list(self.raw_signature())

    def select_raw(self, raw):
        """Picks this preprocessor's raw value(s) out of `raw`.

        A dict gives its entries under `raw_keys()` (the bare value when there
        is a single key); anything else is taken as the raw value itself.
        """
        keys = self.raw_keys()
        if isinstance(raw, dict):
            missing = [k for k in keys if k not in raw]
            if missing:
                raise KeyError(
                    f"{self.__class__.__name__}({self.name!r}): raw input "
                    f"lacks key(s) {missing}; it has {sorted(raw)}")
            if len(keys) == 1:
                return raw[keys[0]]
            return {k: raw[k] for k in keys}
        if len(keys) != 1:
            raise TypeError(
                f"{self.__class__.__name__}({self.name!r}) takes a dict with "
                f"keys {keys}; got {type(raw).__name__}")
        return raw

    def example_signature(self):
        """`raw_signature()` of one example (no batch dim): what parse takes."""
        specs = {k: tf.TensorSpec(s.shape[1:], s.dtype)
                 for k, s in self.raw_signature().items()}
        if len(specs) == 1:
            return next(iter(specs.values()))
        return specs

    def examples(self, dataset):
        """`dataset` (Dataset or iterable of raw examples) as a tf.data.Dataset
        of this preprocessor's raw values (used by `adapt`)."""
        if not isinstance(dataset, tf.data.Dataset):
            items = list(dataset)
            signature = self.example_signature()
            if isinstance(signature, dict):
                items = [{k: x[k] for k in signature} for x in items]
            else:
                items = [self.select_raw(x) for x in items]
            dataset = tf.data.Dataset.from_generator(
                lambda: iter(items), output_signature=signature)
        return dataset.map(self.select_raw)

    def _not_adapted(self, what):
        return ValueError(
            f"{self.__class__.__name__}({self.name!r}) has no {what}: call "
            f"adapt(train_dataset) first, or pass it to the constructor")

    def _key(self, suffix=""):
        return self.name + suffix


def serialize_preprocessor(preprocessor):
    """`{"modality": ..., "config": ...}` (JSON-serializable)."""
    config = preprocessor.get_config()
    json.dumps(config)  # fails loudly here rather than at export time
    out = {"modality": preprocessor.modality, "config": config}
    kind = preprocessor.registered_name
    if kind and kind != preprocessor.modality:
        out["type"] = kind
    return out


def deserialize_preprocessor(data):
    """Inverse of `serialize_preprocessor` (looks up PREPROCESSORS)."""
    kind = data.get("type", data["modality"])
    cls = PREPROCESSORS.get(kind, key_path="preprocessor.type")
    return cls.from_config(data["config"])
