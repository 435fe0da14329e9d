import numpy as np
import keras
import tensorflow as tf
from keras import ops

from keras_mm.layers.utils import (check_choice, check_fraction,
                                   check_non_negative_int,
                                   check_positive_int, check_positive_ints,
                                   clone_initializer)
from keras_mm.registry import TOWERS

OUTPUTS = ("vector", "sequence")
INPUT_KEYS = ("numeric", "categorical")


@keras.saving.register_keras_serializable(package="keras_mm")
@TOWERS.register("tabular")
class TabularTower(keras.layers.Layer):
    """Tabular tower: encodes numeric and categorical columns of a table.

    Numeric columns are standardized inside the tower, `(x - mean) /
    sqrt(variance)`, in float32 with non-trainable `mean` / `variance`
    weights, which come from the `mean` / `variance` arguments or from
    `adapt()`. Each categorical column gets its own `Embedding` of
    `cardinality + 1` rows (`embedding_dim` wide): ids are already mapped
    by the preprocessor to `1..cardinality`, 0 is OOV; ids outside
    `0..cardinality` are treated as OOV too.

    - `output="vector"`: the normalized numerics and the embeddings are
      concatenated and go through an MLP (`hidden_units`, `activation`,
      dropout) and a final dense layer to `[batch, dim]`;
    - `output="sequence"`: one token per column (a feature tokenizer, as in
      FT-Transformer): numeric column j gives `x_j * w_j + b_j` (learned
      `w_j`, `b_j` of width `dim`), a categorical column its embedding
      projected to `dim`; `[batch, num_numeric + len(cardinalities), dim]`,
      numeric columns first. `hidden_units` is unused; `compute_mask`
      returns None (every column is always present).

    Masking: none; `compute_mask` returns None.

    Args:
        num_numeric: number of numeric columns F.
        cardinalities: number of known values of each categorical column
            (one embedding per entry).
        embedding_dim: width of each categorical embedding.
        hidden_units: widths of the MLP hidden layers (`output="vector"`).
        dim: output width.
        dropout: dropout rate after each hidden layer (and on the tokens of
            the sequence output).
        output: `"vector"` or `"sequence"`.
        activation: activation of the hidden layers.
        mean: optional per-column means of the numerics (F numbers).
        variance: optional per-column variances (F numbers); passed
            together with `mean`. Without them the tower starts with mean 0
            and variance 1 until `adapt()` is called.
        kernel_initializer: initializer of the dense kernels.
        embeddings_initializer: initializer of the embedding tables.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: a dict with `"numeric"` (float `[batch, num_numeric]`,
            absent when `num_numeric == 0`) and `"categorical"` (int
            `[batch, len(cardinalities)]`, absent when there are no
            categorical columns).
        training: Python bool, dropout on or off.
        mask: ignored (there is no token mask).

    Example:

    >>> tower = TabularTower(num_numeric=3, cardinalities=(10, 4), dim=8)
    >>> tower.adapt(np.random.normal(5.0, 2.0, size=(100, 3)))
    >>> out = tower({"numeric": np.ones((2, 3), "float32"),
    ...              "categorical": np.array([[1, 4], [0, 2]])})
    >>> tuple(out.shape)
    (2, 8)
    """

    input_dtype = "float32"

    def __init__(self, num_numeric=0, cardinalities=(), embedding_dim=8,
                 hidden_units=(64,), dim=64, dropout=0.0, output="vector",
                 activation="relu", mean=None, variance=None,
                 kernel_initializer="glorot_uniform",
                 embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        name = "TabularTower"
        self.num_numeric = check_non_negative_int(name, "num_numeric",
                                                  num_numeric)
        self.cardinalities = check_positive_ints(name, "cardinalities",
                                                 cardinalities)
        if not self.num_numeric and not self.cardinalities:
            raise ValueError(
                f"{name}: no columns; set num_numeric > 0 and/or list the "
                "categorical cardinalities, e.g. cardinalities=(10, 4)")
        self.embedding_dim = check_positive_int(name, "embedding_dim",
                                                embedding_dim)
        self.hidden_units = check_positive_ints(name, "hidden_units",
                                                hidden_units)
        self.dim = check_positive_int(name, "dim", dim)
        self.dropout = check_fraction(name, "dropout", dropout)
        # `output` is a Keras Layer property: stored as `output_mode`.
        self.output_mode = check_choice(name, "output", output, OUTPUTS)
        self.activation = keras.activations.get(activation)
        if (mean is None) != (variance is None):
            raise ValueError(
                f"{name}: pass mean and variance together (or neither, and "
                "call adapt())")
        self.mean = self._check_stats("mean", mean)
        self.variance = self._check_stats("variance", variance)
        if self.variance is not None and min(self.variance, default=0) < 0:
            raise ValueError(f"{name}: variance={self.variance} has a "
                             "negative entry; variances must be >= 0")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer)

    def _check_stats(self, argument, values):
        if values is None:
            return None
        values = np.asarray(values, dtype="float64").reshape(-1)
        if values.shape[0] != self.num_numeric:
            raise ValueError(
                f"TabularTower: {argument} has {values.shape[0]} entries but "
                f"num_numeric={self.num_numeric}; give one per numeric column")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"TabularTower: {argument} has a non-finite "
                             "entry (NaN or inf)")
        return [float(v) for v in values]

    # -- shapes -------------------------------------------------------------

    def _check_input_shapes(self, input_shape):
        if not isinstance(input_shape, dict):
            raise ValueError(
                "TabularTower takes a dict {'numeric': float [batch, F], "
                "'categorical': int [batch, K]}; got a "
                f"{type(input_shape).__name__} of shape {input_shape}")
        unknown = sorted(set(input_shape) - set(INPUT_KEYS))
        if unknown:
            raise ValueError(
                f"TabularTower: unknown input key(s) {unknown}; the keys are "
                "'numeric' and 'categorical'")
        expected = {"numeric": self.num_numeric,
                    "categorical": len(self.cardinalities)}
        for key, width in expected.items():
            if width == 0:
                if key in input_shape and tuple(input_shape[key])[-1] != 0:
                    raise ValueError(
                        f"TabularTower: input {key!r} was given but the "
                        f"tower has no {key} columns; drop the key or set "
                        + ("num_numeric" if key == "numeric"
                           else "cardinalities"))
                continue
            if key not in input_shape:
                raise ValueError(
                    f"TabularTower: input {key!r} is missing; the tower has "
                    f"{width} {key} column(s)")
            shape = tuple(input_shape[key])
            if len(shape) != 2 or shape[1] != width:
                raise ValueError(
                    f"TabularTower: input {key!r} has shape {shape}; "
                    f"expected [batch, {width}]")

    def _num_tokens(self):
        return self.num_numeric + len(self.cardinalities)

    # -- building -----------------------------------------------------------

    def build(self, input_shape):
        self._check_input_shapes(input_shape)
        policy = self.dtype_policy
        f = self.num_numeric
        if f:
            self.numeric_mean = self.add_weight(
                name="numeric_mean", shape=(f,), dtype="float32",
                initializer="zeros", trainable=False, autocast=False)
            self.numeric_variance = self.add_weight(
                name="numeric_variance", shape=(f,), dtype="float32",
                initializer="ones", trainable=False, autocast=False)
            if self.mean is not None:
                self.numeric_mean.assign(np.asarray(self.mean, "float32"))
                self.numeric_variance.assign(
                    np.asarray(self.variance, "float32"))
        self.embeddings = []
        for j, cardinality in enumerate(self.cardinalities):
            embedding = keras.layers.Embedding(
                cardinality + 1, self.embedding_dim,
                embeddings_initializer=clone_initializer(
                    self.embeddings_initializer),
                dtype=policy, name=f"categorical{j}_embedding")
            embedding.build((None,))
            self.embeddings.append(embedding)
        init = clone_initializer
        if self.output_mode == "vector":
            width = f + self.embedding_dim * len(self.cardinalities)
            self.hidden_layers = []
            for i, units in enumerate(self.hidden_units):
                dense = keras.layers.Dense(
                    units, activation=self.activation,
                    kernel_initializer=init(self.kernel_initializer),
                    dtype=policy, name=f"hidden{i}")
                dense.build((None, width))
                width = units
                self.hidden_layers.append(dense)
            self.projection = keras.layers.Dense(
                self.dim, kernel_initializer=init(self.kernel_initializer),
                dtype=policy, name="projection")
            self.projection.build((None, width))
        else:
            if f:
                self.numeric_token_kernel = self.add_weight(
                    name="numeric_token_kernel", shape=(f, self.dim),
                    initializer=init(self.kernel_initializer))
                self.numeric_token_bias = self.add_weight(
                    name="numeric_token_bias", shape=(f, self.dim),
                    initializer="zeros")
            if self.cardinalities:
                self.categorical_projection = keras.layers.Dense(
                    self.dim,
                    kernel_initializer=init(self.kernel_initializer),
                    dtype=policy, name="categorical_projection")
                self.categorical_projection.build(
                    (None, len(self.cardinalities), self.embedding_dim))
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy)
        self.built = True

    # -- adapting -----------------------------------------------------------

    def adapt(self, data):
        """Sets the numeric mean and variance from training data.

        Args:
            data: the numeric columns of the training split: an array
                `[rows, num_numeric]`, a dict with a `"numeric"` entry, or a
                `tf.data.Dataset` of batches `[batch, num_numeric]` (or of
                dicts with a `"numeric"` entry; `(x, y)` pairs use `x`).

        The statistics also go into `mean` / `variance` (so `get_config`
        carries them) and, once built, into the tower's weights.
        """
        if not self.num_numeric:
            raise ValueError("TabularTower.adapt: the tower has no numeric "
                             "columns (num_numeric=0); nothing to adapt")
        if isinstance(data, dict):
            data = _numeric_entry(data)
        if isinstance(data, tf.data.Dataset):
            spec = data.element_spec
            if isinstance(spec, tuple):
                data = data.map(lambda *x: x[0])
                spec = data.element_spec
            if isinstance(spec, dict):
                data = data.map(_numeric_entry)
                spec = data.element_spec
            shape = tuple(spec.shape)
        else:
            data = np.asarray(data, dtype="float32")
            shape = data.shape
        if not shape or shape[-1] != self.num_numeric:
            raise ValueError(
                f"TabularTower.adapt: numeric data of shape {shape}; "
                f"expected [rows, {self.num_numeric}] (num_numeric)")
        if isinstance(data, np.ndarray) and not np.all(np.isfinite(data)):
            raise ValueError(
                "TabularTower.adapt: the numeric data holds NaN or inf; "
                "impute missing values before adapting")
        stats = keras.layers.Normalization(axis=-1, dtype="float32")
        stats.adapt(data)
        mean = ops.convert_to_numpy(stats.adapt_mean)
        variance = ops.convert_to_numpy(stats.adapt_variance)
        self.mean = self._check_stats("mean", mean)
        self.variance = self._check_stats("variance", variance)
        if self.built:
            self.numeric_mean.assign(np.asarray(self.mean, "float32"))
            self.numeric_variance.assign(np.asarray(self.variance, "float32"))

    # -- calling ------------------------------------------------------------

    def _normalized_numeric(self, inputs):
        x = ops.cast(inputs["numeric"], "float32")
        scale = ops.maximum(ops.sqrt(self.numeric_variance),
                            keras.config.epsilon())
        return ops.cast((x - self.numeric_mean) / scale, self.compute_dtype)

    def _embedded_columns(self, inputs):
        ids = ops.cast(inputs["categorical"], "int32")
        columns = []
        for j, (embedding, cardinality) in enumerate(
                zip(self.embeddings, self.cardinalities)):
            col = ids[:, j]
            col = ops.where(ops.logical_and(col >= 0, col <= cardinality),
                            col, ops.zeros_like(col))
            columns.append(embedding(col))
        return columns

    def call(self, inputs, training=None, mask=None):
        if not isinstance(inputs, dict):
            raise ValueError(
                "TabularTower takes a dict {'numeric': float [batch, F], "
                f"'categorical': int [batch, K]}}; got {type(inputs)}")
        if self.output_mode == "vector":
            parts = []
            if self.num_numeric:
                parts.append(self._normalized_numeric(inputs))
            if self.cardinalities:
                parts.extend(self._embedded_columns(inputs))
            x = parts[0] if len(parts) == 1 else ops.concatenate(parts, -1)
            for dense in self.hidden_layers:
                x = self.dropout_layer(dense(x), training=training)
            return self.projection(x)
        tokens = []
        if self.num_numeric:
            x = self._normalized_numeric(inputs)[:, :, None]
            kernel = ops.cast(self.numeric_token_kernel, x.dtype)
            bias = ops.cast(self.numeric_token_bias, x.dtype)
            tokens.append(x * kernel[None] + bias[None])
        if self.cardinalities:
            columns = ops.stack(self._embedded_columns(inputs), axis=1)
            tokens.append(self.categorical_projection(columns))
        x = tokens[0] if len(tokens) == 1 else ops.concatenate(tokens, 1)
        return self.dropout_layer(x, training=training)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0] \
            if isinstance(input_shape, dict) and input_shape else None
        if self.output_mode == "vector":
            return (batch, self.dim)
        return (batch, self._num_tokens(), self.dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_numeric": self.num_numeric,
            "cardinalities": list(self.cardinalities),
            "embedding_dim": self.embedding_dim,
            "hidden_units": list(self.hidden_units),
            "dim": self.dim,
            "dropout": self.dropout,
            "output": self.output_mode,
            "activation": keras.activations.serialize(self.activation),
            "mean": None if self.mean is None else list(self.mean),
            "variance": None if self.variance is None else list(
                self.variance),
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer),
        })
        return config


def _numeric_entry(data):
    if "numeric" not in data:
        raise ValueError(
            "TabularTower.adapt: the data is a dict without a 'numeric' "
            f"entry (keys: {sorted(data)})")
    return data["numeric"]
