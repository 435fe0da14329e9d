"""`build_model(spec)` and `compile_model(model, spec)`."""

import json

import keras

from keras_mm.builder.alignment import aligns_towers
from keras_mm.builder.multimodal_model import MultimodalModel
from keras_mm.builder.spec import (_fusion_kwargs, _head_kwargs,
                                   _tower_kwargs, instantiate,
                                   load_registries, normalize_spec,
                                   tower_class, unimodal_spec)
from keras_mm.errors import ConfigError


def _keras_mask(tensor):
    """The Keras mask a layer attached to a symbolic output (or None)."""
    mask = getattr(tensor, "_keras_mask", None)
    if mask is None:
        try:
            from keras.src.backend.common.masking import get_keras_mask
            mask = get_keras_mask(tensor)
        except ImportError:  # pragma: no cover - older/newer Keras layouts
            mask = None
    return mask


def _call(layer, key_path, *args, **kwargs):
    """Calls a layer on symbolic inputs; a ValueError from its `build`
    (e.g. an input shape it cannot take) becomes a ConfigError naming
    the spec key that made the layer."""
    try:
        return layer(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(key_path, str(error)) from error


def _frozen(tower, output):
    """Freezes a `trainable: false` tower's variables once it is built:
    Keras 3 leaves the sub-layers a layer creates in `build()` trainable
    even when the layer was constructed with `trainable=False` (and
    setting False again is then a no-op), so a frozen scratch tower would
    train."""
    if not tower.trainable:
        tower.trainable = True
        tower.trainable = False
    return output


def _build_tower(spec, name, model_inputs):
    tower, output = _tower_output(spec, name, model_inputs)
    return _frozen(tower, output)


def _tower_output(spec, name, model_inputs):
    entry = spec["inputs"][name]
    modality = entry["modality"]
    cls = tower_class(entry, name)
    tower = instantiate(cls, _tower_kwargs(spec, name),
                        f"inputs.{name}.tower", name=f"{name}_tower")
    if modality == "tabular":
        features = {}
        if entry["numeric"]:
            features["numeric"] = keras.Input(
                (entry["numeric"],), dtype="float32", name=f"{name}_numeric")
            model_inputs[f"{name}_numeric"] = features["numeric"]
        if entry["categorical"]:
            features["categorical"] = keras.Input(
                (len(entry["categorical"]),), dtype="int32",
                name=f"{name}_categorical")
            model_inputs[f"{name}_categorical"] = features["categorical"]
        return tower, _call(tower, f"inputs.{name}", features)
    dtype = getattr(cls, "input_dtype", "float32")
    x = keras.Input(tuple(entry["shape"]), dtype=dtype, name=name)
    model_inputs[name] = x
    if entry.get("mask"):
        mask = keras.Input((entry["shape"][0],), dtype="bool",
                           name=f"{name}_mask")
        model_inputs[f"{name}_mask"] = mask
        return tower, _call(tower, f"inputs.{name}", x, mask=mask)
    return tower, _call(tower, f"inputs.{name}", x)


def _build_trunk(trunk):
    if trunk is None or not trunk["hidden_units"]:
        return None
    layers = []
    for i, units in enumerate(trunk["hidden_units"]):
        layers.append(keras.layers.Dense(units,
                                         activation=trunk["activation"],
                                         name=f"trunk_dense{i}"))
        if trunk["dropout"]:
            layers.append(keras.layers.Dropout(trunk["dropout"],
                                               name=f"trunk_dropout{i}"))
    return keras.Sequential(layers, name="trunk")


def build_model(spec):
    """Builds a functional multimodal `keras.Model` from a plain-dict spec.

    The spec format is described in `keras_mm.builder.spec` (and in
    CONTRIBUTING.md, "Builder spec").

    The model's inputs (a dict, keyed by name) are one `keras.Input` per
    spec input, named by its key (dtype from the tower class's
    `input_dtype`: int32 for text, float32 otherwise), plus a boolean
    `<name>_mask` `[T]` where `mask: true` (video, sensor),
    `<name>_numeric` / `<name>_categorical` for tabular inputs, and a
    float32 `presence` `[num_inputs]` (columns in spec `inputs` order)
    where `fusion.presence_mask: true`. Its outputs are a dict keyed by
    head name; each head layer is named after its head, so
    `model.compile(loss={head: ...})` and the metric names (`label_accuracy`)
    use the head names.

    Layers: `<name>_tower` per input, `fusion`, `trunk` (a
    `keras.Sequential` MLP, when `trunk.hidden_units` is not empty), then
    one head layer per head. Each tower's `output` (vector / sequence /
    feature_map) follows what the fusion class takes (`input_kind`; FiLM's
    `target` gets a feature map) unless the spec sets it.

    The normalized spec is kept by the model (`model_spec(model)`), also
    through `.keras` save and load.

    Args:
        spec: the spec dict.

    Returns:
        A `MultimodalModel` (a functional `keras.Model`).

    Raises:
        ConfigError: an unknown key or type, a missing key or a bad value,
            naming its key path and the allowed values.

    Example:

    >>> model = build_model({
    ...     "inputs": {"image": {"modality": "image", "shape": [28, 28, 1],
    ...                          "tower": {"encoder": "cnn"}},
    ...                "text": {"modality": "text", "shape": [16],
    ...                         "vocab_size": 1000,
    ...                         "tower": {"encoder": "bag"}}},
    ...     "fusion": {"type": "gated"},
    ...     "heads": {"label": {"type": "classification",
    ...                         "num_classes": 10}}})
    >>> sorted(model.output_names)
    ['label']
    """
    spec = normalize_spec(spec, complete=True)
    towers, fusions, heads = load_registries()
    model_inputs = {}
    features = {}
    for name in spec["inputs"]:
        features[name] = _build_tower(spec, name, model_inputs)

    fusion_spec = spec["fusion"]
    if fusion_spec is None and len(features) > 1:
        hidden = features      # a dual encoder: the heads align the towers
    elif fusion_spec is None:
        (hidden,) = features.values()
    else:
        cls = fusions.get(fusion_spec["type"])
        fusion = instantiate(cls, _fusion_kwargs(spec), "fusion",
                             name="fusion", modalities=list(spec["inputs"]))
        call_kwargs = {}
        if fusion_spec["presence_mask"]:
            presence = keras.Input((len(spec["inputs"]),), dtype="float32",
                                   name="presence")
            model_inputs["presence"] = presence
            call_kwargs["presence"] = presence
        if getattr(cls, "input_kind", "vector") != "vector":
            # Keras fills `mask` itself only for a single tensor argument.
            masks = {n: _keras_mask(f) for n, f in features.items()}
            masks = {n: m for n, m in masks.items() if m is not None}
            if masks:
                call_kwargs["mask"] = masks
        hidden = _call(fusion, "fusion", features, **call_kwargs)
        if isinstance(hidden, (tuple, list)):
            hidden = hidden[0]

    trunk = _build_trunk(spec["trunk"])
    if trunk is not None:
        hidden = _call(trunk, "trunk", hidden)

    outputs = {}
    for head_name, head_spec in spec["heads"].items():
        head = instantiate(heads.get(head_spec["type"]),
                           _head_kwargs(spec, head_name),
                           f"heads.{head_name}", name=head_name)
        outputs[head_name] = _call(head, f"heads.{head_name}", hidden)

    return MultimodalModel(inputs=model_inputs, outputs=outputs,
                           name=spec["name"],
                           spec_json=json.dumps(spec, sort_keys=False))


def model_spec(model):
    """The normalized spec `build_model` used for `model` (a dict).

    Works on a model reloaded from a `.keras` file too.

    Raises:
        ValueError: the model was not built by `build_model`.
    """
    spec_json = getattr(model, "spec_json", None)
    if spec_json is None:
        raise ValueError(
            f"model {model.name!r} carries no keras_mm spec; it was not "
            "built by keras_mm.build_model (keep the recipe with the run)")
    return json.loads(spec_json)


def build_unimodal_spec(spec, input_name):
    """The spec of the single-modality baseline of `spec` on `input_name`.

    Same tower, trunk and heads; no fusion layer (nor presence input); the
    tower outputs a vector. Used by the "fused vs each single modality"
    scoreboard.

    Example:

    >>> single = build_unimodal_spec(spec, "image")   # doctest: +SKIP
    >>> model = build_model(single)                    # doctest: +SKIP
    """
    return unimodal_spec(spec, input_name)


def _loss_object(value, head):
    if value is None:
        return head.default_loss()
    if isinstance(value, dict):
        return keras.losses.deserialize(value)
    return keras.losses.get(value)


def _metric_objects(value, head):
    if value is None:
        return list(head.default_metrics())
    return [keras.metrics.deserialize(m) if isinstance(m, dict) else m
            for m in value]


def compile_model(model, spec=None, optimizer="adam", jit_compile="auto",
                  steps_per_execution=1, **compile_kwargs):
    """Compiles `model` with one loss, loss weight and metric list per head.

    Each head's `loss` (default: the head class's `default_loss()`),
    `loss_weight` (default 1.0) and `metrics` (default: its
    `default_metrics()`) come from the spec's `heads` section.

    Args:
        model: a model from `build_model`.
        spec: the spec (default: `model_spec(model)`).
        optimizer: a Keras optimizer (name or object).
        jit_compile: passed to `model.compile` ("auto", True or False).
        steps_per_execution: passed to `model.compile`.
        **compile_kwargs: other `model.compile` arguments.

    Returns:
        The model, compiled.

    Example:

    >>> model = compile_model(build_model(spec), optimizer="adam")  # doctest: +SKIP
    """
    spec = model_spec(model) if spec is None else normalize_spec(
        spec, complete=False)
    losses, loss_weights, metrics = {}, {}, {}
    for head_name, head_spec in spec["heads"].items():
        try:
            head = model.get_layer(head_name)
        except ValueError:
            raise ConfigError(
                f"heads.{head_name}", f"the model has no head layer "
                f"{head_name!r}; its outputs are {model.output_names}") \
                from None
        if aligns_towers(head_spec):     # its loss layers add_loss
            losses[head_name], metrics[head_name] = None, []
            loss_weights[head_name] = 1.0    # unused: no compiled loss
            continue
        losses[head_name] = _loss_object(head_spec["loss"], head)
        loss_weights[head_name] = head_spec["loss_weight"]
        metrics[head_name] = _metric_objects(head_spec["metrics"], head)
    model.compile(optimizer=optimizer, loss=losses, loss_weights=loss_weights,
                  metrics=metrics, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution, **compile_kwargs)
    return model
