"""The `embed_<input>` and `score` signatures of a dual-encoder export.

Added by `keras_mm.export` to models with a contrastive head
(`keras_mm.heads.ContrastiveHead`, recipe `fusion: none`):

- `embed_<input>`: that input's raw values only (the keys of its
  preprocessor's `serving_default` inputs) -> `embedding`, float32
  `[batch, embedding_dim]`, L2-normalised: the preprocessor, the input's
  tower and the head's projection, the same code as training. An empty
  value (no bytes, no text) is refused: it has no embedding.
- `score` (one pair of modalities) or `score_<a>_<b>` (several): the raw
  values of both inputs -> `similarity` (cosine, float32 `[batch]`) and
  `logit` (the trained loss layer's scale x cosine + bias: SigLIP's is a
  calibrated log-odds that the two match).

With several contrastive heads the signatures are `embed_<head>_<input>`
and `score_<head>_<a>_<b>`. The export metadata's `embed` record lists
them with their golden outputs, which the verifier replays in a fresh
TensorFlow-only process.
"""

import tensorflow as tf

from keras_mm.errors import ExportError


def contrastive_layers(model):
    """`{head name: layer}` of the model's contrastive heads."""
    return {name: model.get_layer(name) for name in model.output_names
            if _has_layer(model, name)
            and getattr(model.get_layer(name), "takes_modalities", False)}


def _has_layer(model, name):
    try:
        model.get_layer(name)
    except ValueError:
        return False
    return True


def tower_call(model, inputs, name):
    """Runs input `name`'s tower on preprocessed `inputs` (model-input
    keys: `<name>`, `<name>_mask`, or tabular `<name>_numeric` /
    `<name>_categorical`)."""
    tower = model.get_layer(f"{name}_tower")
    parts = {part: inputs[f"{name}_{part}"] for part in
             ("numeric", "categorical") if f"{name}_{part}" in inputs}
    if parts:
        return tower(parts, training=False)
    if f"{name}_mask" in inputs:
        return tower(inputs[name], mask=inputs[f"{name}_mask"],
                     training=False)
    return tower(inputs[name], training=False)


class EmbedSignatures:
    """Builds the `embed_*` and `score*` endpoints of an export.

    Args:
        functions: the export's `ServingFunctions`.

    Example:

    >>> signatures = EmbedSignatures(functions)          # doctest: +SKIP
    >>> for name, fn, spec in signatures.endpoints():    # doctest: +SKIP
    ...     archive.add_endpoint(name, fn, input_signature=[spec])
    """

    def __init__(self, functions):
        self.functions = functions
        self.model = functions.model
        self.heads = contrastive_layers(self.model)
        several = len(self.heads) > 1
        self.embeds, self.scores = {}, {}
        for head_name, head in self.heads.items():
            prefix = f"{head_name}_" if several else ""
            for modality in head.modalities:
                if modality not in functions.preprocessors:
                    raise ExportError(
                        f"the contrastive head {head_name!r} aligns input "
                        f"{modality!r}, which has no preprocessor")
                self.embeds[f"embed_{prefix}{modality}"] = (head_name,
                                                            modality)
            pairs = [tuple(p) for p in head.pairs]
            for index, (a, b) in enumerate(pairs):
                name = f"score_{prefix}{a}_{b}" if (
                    several or len(pairs) > 1) else "score"
                self.scores[name] = (head_name, index, a, b)

    def raw_keys(self, *modalities):
        keys = []
        for modality in modalities:
            keys += list(self.functions.preprocessors[modality]
                         .raw_signature())
        return keys

    def input_signature(self, *modalities):
        specs = self.functions.raw_signature()
        return {k: specs[k] for k in self.raw_keys(*modalities)}

    def preprocess(self, raw, modalities):
        """Raw values of `modalities` -> their preprocessed model inputs;
        an empty value is refused, naming the input."""
        raw = self.functions.check_request(raw, keys=self.raw_keys(
            *modalities))
        features, checks = {}, []
        for modality in modalities:
            features.update(self.functions.preprocessors[modality](
                raw, training=False))
            present = features.get(f"{modality}_present")
            if present is not None:
                keys = ", ".join(f"`{k}`" for k in self.raw_keys(modality))
                checks.append(tf.debugging.assert_equal(
                    tf.reduce_min(tf.concat(
                        [tf.cast(present, tf.float32), [1.0]], 0)), 1.0,
                    message=f"input {keys} is empty in an example: an "
                            "embedding needs a value"))
        with tf.control_dependencies(checks):
            return {k: tf.identity(v) for k, v in features.items()}

    def embedding(self, inputs, head_name, modality):
        """Preprocessed inputs -> the head's normalised embedding."""
        head = self.heads[head_name]
        return head.embed(modality, tower_call(self.model, inputs, modality))

    def similarity(self, inputs, head_name, index, a, b):
        """Preprocessed inputs of a pair -> `{similarity, logit}`."""
        ea = self.embedding(inputs, head_name, a)
        eb = self.embedding(inputs, head_name, b)
        cosine = tf.reduce_sum(ea * eb, axis=-1)
        layer = self.heads[head_name].loss_layers[index]
        return {"similarity": cosine,
                "logit": layer.logit_scale() * cosine + layer.logit_bias()}

    def endpoints(self):
        """`[(signature name, function, input signature)]`."""
        out = []
        for name, (head_name, modality) in self.embeds.items():
            def embed(raw, head_name=head_name, modality=modality):
                inputs = self.preprocess(raw, [modality])
                return {"embedding": self.embedding(inputs, head_name,
                                                    modality)}
            out.append((name, embed, self.input_signature(modality)))
        for name, (head_name, index, a, b) in self.scores.items():
            def score(raw, head_name=head_name, index=index, a=a, b=b):
                inputs = self.preprocess(raw, [a, b])
                return self.similarity(inputs, head_name, index, a, b)
            out.append((name, score, self.input_signature(a, b)))
        return out

    def reference(self, model_inputs):
        """Each signature's outputs on the golden examples' preprocessed
        inputs, taken from the whole Keras model's output (the stacked
        embeddings of its contrastive heads), not from the signatures' own
        tower calls: the golden values the verifier compares the
        SavedModel with."""
        if not self.heads:
            return {}
        outputs = self.model(model_inputs, training=False)
        stacked = {h: tf.cast(outputs[h], tf.float32) for h in self.heads}

        def column(head_name, modality):
            index = self.heads[head_name].modalities.index(modality)
            return stacked[head_name][:, index]

        result = {}
        for name, (head_name, modality) in self.embeds.items():
            result[name] = {"embedding": column(head_name, modality)}
        for name, (head_name, index, a, b) in self.scores.items():
            cosine = tf.reduce_sum(column(head_name, a) *
                                   column(head_name, b), axis=-1)
            layer = self.heads[head_name].loss_layers[index]
            result[name] = {"similarity": cosine,
                            "logit": layer.logit_scale() * cosine
                            + layer.logit_bias()}
        return result

    def metadata(self, golden, encode):
        """The export metadata's `embed` record: per signature its raw
        inputs and golden outputs (`encode`: the exporter's tensor
        encoder)."""
        record = {}
        for name, (head_name, modality) in self.embeds.items():
            record[name] = {"head": head_name, "modalities": [modality],
                            "inputs": self.raw_keys(modality)}
        for name, (head_name, _, a, b) in self.scores.items():
            record[name] = {"head": head_name, "modalities": [a, b],
                            "inputs": self.raw_keys(a, b)}
        for name, outputs in golden.items():
            record[name]["golden"] = {k: encode(v)
                                      for k, v in outputs.items()}
        return record
