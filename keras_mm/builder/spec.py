"""Validation and normalization of `keras_mm.build_model` specs.

A spec is a plain dict (a YAML recipe maps onto it 1:1):

```yaml
name: demo                                   # optional model name
inputs:                                      # order = presence-mask columns
  image: {modality: image, shape: [28, 28, 1], tower: {encoder: cnn}}
  audio: {modality: audio, shape: [8000], tower: {encoder: cnn, frontend: log_mel}}
  text:  {modality: text, shape: [16], vocab_size: 1000, tower: {encoder: bag}}
  clip:  {modality: video, shape: [8, 32, 32, 3], tower: {encoder: frames}}  # + clip_mask
  tab:   {modality: tabular, numeric: 5, categorical: [10, 4]}
fusion: {type: gated, presence_mask: true, units: 64}  # presence: default
trunk: {hidden_units: [128], dropout: 0.1, activation: relu}   # optional
heads:
  label: {type: classification, num_classes: 10, loss_weight: 1.0,
          metrics: [accuracy]}
```

Keys of each section:

- `inputs.<name>`: `modality` (a registered tower type), `shape` (the
  per-example shape without the batch axis; not for tabular), `tower`
  (keyword arguments of the tower class), `mask` (video/sensor, default
  true: adds a boolean `<name>_mask` input of shape `[shape[0]]`, the step /
  frame mask of the padding; `mask: false` leaves it out), `vocab_size` (text),
  `numeric` / `categorical` (tabular: number of numeric columns, and the
  cardinality of each categorical column), and two keys the model ignores
  but the data pipeline reads: `source` (manifest column(s)) and
  `preprocess` (keyword arguments of the modality's preprocessor).
- `fusion`: `type` (a registered fusion type), `presence_mask` (adds a
  float32 `presence` input `[num_inputs]`, columns in `inputs` order;
  default true with two or more inputs, false with one; the normalized spec
  always says true or false) and the fusion class's keyword arguments.
  Optional with a single input.
- `trunk`: `hidden_units`, `dropout`, `activation` (an MLP after fusion).
- `heads.<name>`: `type` (a registered head type), `loss`, `loss_weight`,
  `metrics` (used by `compile_model`), `source` (the label column, for the
  data pipeline) and the head class's keyword arguments.

The static structure (section keys, types, bounds, choices) is the pydantic
schema `keras_mm.builder.schema.SpecSections`, whose errors read
`inputs.image.shape[1]: 0 is not an integer >= 1`. Tower / fusion / head
keyword arguments are open-ended, so they are checked against the class's
`__init__` signature (`check_class_kwargs`): an unknown key fails at once
with the allowed keys; constructor errors (bad choices) become
`ConfigError`s naming the key path. Checks across sections (shape ranks,
log-mel in one place, FiLM's target, unique layer names) follow.
"""

import copy
import logging
import math

from keras_mm.builder import schema
from keras_mm.builder.argument_checks import (_REQUIRED, _plain,
                                              check_class_kwargs,
                                              check_input_size,
                                              constructor_arguments,
                                              instantiate)
from keras_mm.builder.alignment import aligns_towers, check_alignment
from keras_mm.errors import ConfigError, not_one_of

NAME_PATTERN = schema.NAME_PATTERN
# Rank of the per-example input (without batch) of each modality.
INPUT_RANKS = {"image": (3,), "audio": (1, 2), "text": (1,), "video": (4,),
               "sensor": (2,)}
FEATURE_MAP_MODALITIES = ("image", "video")
log = logging.getLogger(__name__)
HEAD_COMPILE_KEYS = ("loss", "loss_weight", "metrics")
HEAD_DATA_KEYS = ("source",)
# Tower arguments the builder derives from input-level keys.
DERIVED_TOWER_ARGS = {
    "text": {"sequence_length": "shape", "vocab_size": "vocab_size"},
    "tabular": {"num_numeric": "numeric", "cardinalities": "categorical"},
}
PREPROCESSOR_FEATURES_KEY = "features"
# Keys that a recipe may leave out: the pipeline fills them in once the
# preprocessors are fitted (`normalize_spec(..., complete=False)`).
DERIVABLE_INPUT_KEYS = ("shape", "vocab_size", "numeric", "categorical")




def load_registries():
    """Imports the tower, fusion and head packages (fills the registries)."""
    import keras_mm.fusion  # noqa: F401
    import keras_mm.heads  # noqa: F401
    import keras_mm.towers  # noqa: F401
    from keras_mm.registry import FUSIONS, HEADS, TOWERS
    return TOWERS, FUSIONS, HEADS


def pretrained_kind(entry):
    """`"preset"`, `"hub"` or None: where an input's tower comes from
    (`entry`: a normalized input spec dict)."""
    for kind in schema.PRETRAINED_KEYS:
        if entry.get(kind) is not None:
            return kind
    return None


def tower_class(entry, name):
    """The tower class of input `name`: its modality's tower, or for an
    input with a `preset` / `hub` the pretrained tower registered as
    `<modality>_<preset|hub>` (`keras_mm.registry.PRETRAINED_TOWERS`)."""
    kind = pretrained_kind(entry)
    if kind is None:
        return load_registries()[0].get(entry["modality"],
                                        key_path=f"inputs.{name}.modality")
    import keras_mm.pretrained  # noqa: F401  (fills PRETRAINED_TOWERS)
    from keras_mm.registry import PRETRAINED_TOWERS
    key = f"{entry['modality']}_{kind}"
    if key not in PRETRAINED_TOWERS:
        sources = sorted({n.rsplit("_", 1)[0] for n in PRETRAINED_TOWERS
                          if n.endswith(f"_{kind}")})
        raise ConfigError(
            f"inputs.{name}.{kind}",
            f"no pretrained {entry['modality']} tower takes a {kind}; "
            f"modalities with one: {', '.join(sources) or 'none'}")
    return PRETRAINED_TOWERS.get(key)


def pretrained_tower_kwargs(entry):
    """The tower arguments an input's `preset` / `hub` key sets."""
    kind = pretrained_kind(entry)
    if kind == "preset":
        return {"preset": entry["preset"]}
    if kind == "hub":
        return {"handle": entry["hub"]["encoder"]}
    return {}


# -- sections (after the schema check of `keras_mm.builder.schema`) ------------


def _check_shape(path, modality, shape):
    """The modality's rank (INPUT_RANKS) and the size bound of `shape`."""
    ranks = INPUT_RANKS.get(modality)
    if ranks and len(shape) not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ConfigError(
            f"{path}.shape", f"{shape} has {len(shape)} axes; a "
            f"{modality} input has {expected} (without the batch axis)")
    check_input_size(shape, f"{path}.shape")


def _normalize_input(name, section, towers, complete):
    path = f"inputs.{name}"
    modality = section.modality
    spec = {k: copy.deepcopy(v) for k, v in section.model_dump().items()
            if v is not None}
    tower = spec.pop("tower")
    kind = pretrained_kind(spec)
    if kind is not None:
        return _normalize_pretrained(name, spec, tower)
    if modality == "tabular":
        if complete:
            spec.setdefault("numeric", 0)
            spec.setdefault("categorical", [])
            if not spec["numeric"] and not spec["categorical"]:
                raise ConfigError(
                    path, "a tabular input needs numeric columns (numeric: "
                    "N) and/or categorical columns (categorical: "
                    "[cardinality, ...])")
    elif "shape" in spec:
        _check_shape(path, modality, spec["shape"])
    elif complete:
        raise ConfigError(
            f"{path}.shape", "missing required key 'shape' (the "
            "per-example input shape, without the batch axis)")
    derived = DERIVED_TOWER_ARGS.get(modality, {})
    derived_paths = {k: f"{path}.{v}" for k, v in derived.items()}
    tower_cls = towers.get(modality)
    if "init_from" in tower and (not isinstance(tower["init_from"], str)
                                 or not tower["init_from"]):
        raise ConfigError(f"{path}.tower.init_from",
                          f"{tower['init_from']!r} is not a run folder "
                          "(e.g. runs/align)")
    arguments = check_class_kwargs(
        tower, tower_cls, f"{path}.tower",
        extra_allowed=("trainable", "init_from"),
        builder_set=[k for k in derived if k != "vocab_size"],
        derived=derived_paths)
    if modality == "text" and "vocab_size" in tower:
        if "vocab_size" in spec and spec["vocab_size"] != tower["vocab_size"]:
            raise ConfigError(
                f"{path}.tower.vocab_size",
                f"{tower['vocab_size']!r} differs from {path}.vocab_size="
                f"{spec['vocab_size']!r}; set it once, at {path}.vocab_size")
        vocab_size = tower.pop("vocab_size")
        if not schema.is_int(vocab_size) or vocab_size < 2:
            raise ConfigError(f"{path}.tower.vocab_size",
                              f"{vocab_size!r} is not an integer >= 2")
        spec["vocab_size"] = int(vocab_size)
    if modality == "text" and complete and "vocab_size" not in spec:
        raise ConfigError(f"{path}.vocab_size",
                          "missing required key 'vocab_size' (TextTower "
                          "needs it)")
    tower = copy.deepcopy(_plain(tower, f"{path}.tower"))
    _check_audio_features(path, modality, spec, tower, arguments)
    spec["tower"] = tower
    return spec


def _normalize_pretrained(name, spec, tower):
    """An input with a `preset` or `hub`: its tower class comes from
    PRETRAINED_TOWERS; the pretrained model sets the tower's own sizes."""
    path = f"inputs.{name}"
    if all(spec.get(k) is not None for k in schema.PRETRAINED_KEYS):
        raise ConfigError(path, "give either preset (keras-hub) or hub "
                          "(TF-Hub / SavedModel), not both")
    kind = pretrained_kind(spec)
    modality = spec["modality"]
    if spec.get("hub") is not None:
        spec["hub"] = {k: v for k, v in spec["hub"].items()
                       if v is not None}
    if "shape" in spec:
        _check_shape(path, modality, spec["shape"])
    spec.pop("vocab_size", None)        # the pretrained model has its own
    # The tokenizer's padding mask; the frame mask of a video.
    spec.setdefault("mask", modality in ("text", "video"))
    tower_cls = tower_class(spec, name)
    check_class_kwargs(tower, tower_cls, f"{path}.tower",
                       extra_allowed=("trainable",),
                       builder_set=list(pretrained_tower_kwargs(spec)) +
                       ["backbone"],
                       derived={k: f"{path}.{kind}"
                                for k in pretrained_tower_kwargs(spec)})
    spec["tower"] = copy.deepcopy(_plain(tower, f"{path}.tower"))
    return spec


def _check_audio_features(path, modality, spec, tower, arguments):
    """Log-mel lives in the preprocessor or the tower, never both."""
    if modality != "audio" or "frontend" not in arguments:
        return
    features = (spec.get("preprocess") or {}).get(PREPROCESSOR_FEATURES_KEY)
    pre_features = features not in (None, "waveform", "none", "raw")
    frontend = tower.get("frontend", arguments["frontend"])
    shape = spec.get("shape")
    if pre_features and frontend is not None:
        if "frontend" in tower:
            raise ConfigError(
                f"{path}.tower.frontend",
                f"{frontend!r} computes features that {path}.preprocess."
                f"{PREPROCESSOR_FEATURES_KEY}={features!r} already computes; "
                "compute them in one place: set frontend: null, or remove "
                "preprocess.features")
        tower["frontend"] = None
        frontend = None
    if shape is None:
        return
    if len(shape) == 2 and frontend is not None:
        if "frontend" in tower:
            raise ConfigError(
                f"{path}.tower.frontend",
                f"{frontend!r} takes a waveform [samples], but {path}.shape="
                f"{shape} is a spectrogram [frames, bins]; set frontend: "
                "null, or give the waveform shape")
        tower["frontend"] = None
    elif len(shape) == 1 and frontend is None:
        raise ConfigError(
            f"{path}.tower.frontend",
            f"null takes a spectrogram [frames, bins], but {path}.shape="
            f"{shape} is a waveform; set frontend: log_mel (or mfcc), or "
            "give the spectrogram shape")


def _normalize_fusion(section, input_specs, fusions, heads=None):
    path = "fusion"
    if section is None:
        if len(input_specs) > 1 and not any(
                aligns_towers(h) for h in (heads or {}).values()):
            raise ConfigError(
                path, f"missing required key 'fusion' ({len(input_specs)} "
                f"inputs need a fusion layer); type is one of "
                f"{', '.join(fusions.names())}, or none for a dual encoder "
                "with contrastive heads")
        return None
    kwargs = section.extra()
    arguments = check_class_kwargs(kwargs, fusions.get(section.type), path,
                                   extra_allowed=("type", "presence_mask"))
    presence = section.presence_mask
    if presence is None:       # the default: a presence input from 2 inputs
        presence = len(input_specs) > 1
    spec = {"type": section.type, "presence_mask": presence}
    spec.update(copy.deepcopy(_plain(kwargs, path)))
    if "target" in arguments and kwargs.get("target") is None:
        spec["target"] = _default_target(input_specs, path)
    if "target" in arguments and spec["target"] is not None:
        target = spec["target"]
        if target not in input_specs:
            raise not_one_of(f"{path}.target", target, list(input_specs))
        modality = input_specs[target]["modality"]
        if modality not in FEATURE_MAP_MODALITIES:
            candidates = [n for n, s in input_specs.items()
                          if s["modality"] in FEATURE_MAP_MODALITIES]
            raise ConfigError(
                f"{path}.target",
                f"{target!r} is an input of modality {modality}; the target "
                "gives the feature map, so it must be an image or video "
                f"input: one of {', '.join(candidates) or '(none declared)'}")
    return spec


def _default_target(input_specs, path):
    """`fusion.target` left out: the image/video input with the largest
    feature map (H x W, or T x H x W, of its shape; the first on a tie).
    None (decided again once shapes are known) while a candidate's shape is
    still to be derived from its preprocessor."""
    candidates = [n for n, s in input_specs.items()
                  if s["modality"] in FEATURE_MAP_MODALITIES]
    if not candidates:
        raise ConfigError(
            f"{path}.target",
            "not set, and no input has a feature map to modulate (inputs: "
            + ", ".join(f"{n} ({s['modality']})"
                        for n, s in input_specs.items())
            + "); add an image or video input and set fusion.target to it, "
            "or choose another fusion.type")
    if any("shape" not in input_specs[n] for n in candidates):
        if len(candidates) > 1:
            return None
        sizes = {candidates[0]: "shape to be derived"}
    else:
        sizes = {n: math.prod(input_specs[n]["shape"][:-1])
                 for n in candidates}
    target = max(candidates, key=lambda n: (sizes[n]
                                            if isinstance(sizes[n], int)
                                            else 0))
    log.info("%s.target not set: using %r, the input with the largest "
             "feature map (%s)", path, target,
             ", ".join(f"{n}: {sizes[n]}" for n in candidates))
    return target


def _normalize_head(name, section, heads):
    path = f"heads.{name}"
    kwargs = section.extra()
    allowed = ("type",) + HEAD_COMPILE_KEYS + HEAD_DATA_KEYS
    if getattr(heads.get(section.type), "takes_modalities", False):
        # a contrastive head: `modalities` names inputs (checked with them)
        allowed = ("type", "loss", "modalities") + HEAD_DATA_KEYS
    check_class_kwargs(kwargs, heads.get(section.type), path,
                       extra_allowed=allowed)
    spec = section.model_dump()
    if spec["source"] is None:
        del spec["source"]
    spec.update(_plain(kwargs, path))
    return copy.deepcopy(spec)


def _check_layer_names(spec):
    """Model input and layer names must be unique."""
    owners = {}

    def claim(name, owner):
        if name in owners:
            raise ConfigError(
                owner, f"the name {name!r} is also used by {owners[name]}; "
                "rename one of them")
        owners[name] = owner

    for name, entry in spec["inputs"].items():
        path = f"inputs.{name}"
        if entry["modality"] == "tabular":
            claim(f"{name}_numeric", path)
            claim(f"{name}_categorical", path)
        else:
            claim(name, path)
        if entry.get("mask"):
            claim(f"{name}_mask", f"{path}.mask")
        claim(f"{name}_tower", path)
    if spec["fusion"] is not None:
        claim("fusion", "fusion")
        if spec["fusion"]["presence_mask"]:
            claim("presence", "fusion.presence_mask")
    if spec["trunk"] is not None and spec["trunk"]["hidden_units"]:
        claim("trunk", "trunk")
    for name in spec["heads"]:
        claim(name, f"heads.{name}")


def normalize_spec(spec, complete=True):
    """Validates a builder spec; returns a normalized deep copy.

    The static structure is checked by the pydantic schema
    `keras_mm.builder.schema.SpecSections`; tower, fusion and head
    arguments against the classes' constructor signatures. Defaults are
    filled in (`fusion.presence_mask`, each head's `loss_weight`...). The
    result is plain JSON-serializable data.

    Args:
        spec: the spec dict.
        complete: when False, `inputs.<name>.shape`, `vocab_size`,
            `numeric` and `categorical` may be absent (a recipe whose
            pipeline derives them from fitted preprocessors).

    Raises:
        ConfigError: naming the key path, the bad value and what is allowed.
    """
    towers, fusions, heads = load_registries()
    if not isinstance(spec, dict):
        raise ConfigError(None, "expected a mapping with keys inputs, "
                          f"fusion, heads, got {type(spec).__name__} "
                          f"{spec!r}")
    sections = schema.validate(schema.SpecSections, spec)
    if not sections.inputs:
        raise ConfigError("inputs", "no inputs; declare at least one")
    if not sections.heads:
        raise ConfigError("heads", "no heads; declare at least one")
    normalized = {"name": sections.name or "keras_mm_model"}
    normalized["inputs"] = {
        name: _normalize_input(name, section, towers, complete)
        for name, section in sections.inputs.items()}
    normalized["heads"] = {
        name: _normalize_head(name, section, heads)
        for name, section in sections.heads.items()}
    normalized["fusion"] = _normalize_fusion(
        sections.fusion, normalized["inputs"], fusions, normalized["heads"])
    normalized["trunk"] = None if sections.trunk is None else \
        sections.trunk.model_dump()
    check_alignment(normalized)
    _check_layer_names(normalized)
    _check_tower_outputs(normalized, towers, fusions)
    _check_constructors(normalized, towers, fusions, heads, complete)
    return normalized


def tower_output_kind(spec, input_name):
    """The `output` a tower gets: the spec's, else what the fusion takes."""
    entry = spec["inputs"][input_name]
    if "output" in entry["tower"]:
        return entry["tower"]["output"]
    fusion = spec["fusion"]
    if fusion is None:
        return "vector"
    if fusion.get("target") is not None and "target" in constructor_arguments(
            load_registries()[1].get(fusion["type"])):
        return "feature_map" if fusion["target"] == input_name else "vector"
    kind = getattr(load_registries()[1].get(fusion["type"]), "input_kind",
                   "vector")
    return "sequence" if kind == "sequence" else "vector"


def _check_tower_outputs(spec, towers, fusions):
    fusion = spec["fusion"]
    if fusion is None:
        for name, entry in spec["inputs"].items():
            output = entry["tower"].get("output", "vector")
            if output != "vector":
                raise ConfigError(
                    f"inputs.{name}.tower.output",
                    f"{output!r} is not one of vector (without a fusion "
                    "layer the tower output feeds the heads)")
        return
    cls = fusions.get(fusion["type"])
    kind = getattr(cls, "input_kind", "vector")
    for name, entry in spec["inputs"].items():
        output = entry["tower"].get("output")
        if output is None:
            continue
        allowed = ["vector"] if kind == "vector" else ["vector", "sequence"]
        if fusion.get("target") == name:
            allowed = ["feature_map"]
        if output not in allowed:
            raise ConfigError(
                f"inputs.{name}.tower.output",
                f"{output!r} is not one of {', '.join(allowed)} (fusion "
                f"{fusion['type']!r} takes {kind} inputs)")


def _tower_kwargs(spec, input_name, with_output=True):
    entry = spec["inputs"][input_name]
    modality = entry["modality"]
    kwargs = dict(entry["tower"])
    if with_output:
        kwargs["output"] = tower_output_kind(spec, input_name)
    if pretrained_kind(entry) is not None:
        kwargs.update(pretrained_tower_kwargs(entry))
        arguments = constructor_arguments(tower_class(entry, input_name))
        return {k: v for k, v in kwargs.items()
                if k in arguments or k == "trainable"}
    if modality == "text":
        if "vocab_size" in entry:
            kwargs["vocab_size"] = entry["vocab_size"]
        if "shape" in entry:
            kwargs["sequence_length"] = entry["shape"][0]
    if modality == "tabular":
        if "numeric" in entry:
            kwargs["num_numeric"] = entry["numeric"]
        if "categorical" in entry:
            kwargs["cardinalities"] = list(entry["categorical"])
    from keras_mm.registry import TOWERS
    arguments = constructor_arguments(TOWERS.get(modality))
    return {k: v for k, v in kwargs.items()
            if k in arguments or k == "trainable"}


def _fusion_kwargs(spec):
    fusion = spec["fusion"]
    return {k: v for k, v in fusion.items()
            if k not in ("type", "presence_mask")}


def _head_kwargs(spec, head_name):
    head = spec["heads"][head_name]
    reserved = ("type",) + HEAD_COMPILE_KEYS + HEAD_DATA_KEYS
    if aligns_towers(head):
        reserved = tuple(k for k in reserved if k != "loss")
    return {k: v for k, v in head.items() if k not in reserved}


def _check_constructors(spec, towers, fusions, heads, complete):
    """Constructs each layer once (cheap: no weights) to check values."""
    for name, entry in spec["inputs"].items():
        if pretrained_kind(entry) is not None:
            continue    # constructing it loads the pretrained weights
        cls = towers.get(entry["modality"])
        kwargs = _tower_kwargs(spec, name)
        missing = [a for a, d in constructor_arguments(cls).items()
                   if d is _REQUIRED and a not in kwargs]
        if missing and not complete:
            continue
        if not complete and entry["modality"] == "tabular" and not (
                "numeric" in entry or "categorical" in entry):
            continue   # column counts come from the fitted preprocessor
        instantiate(cls, kwargs, f"inputs.{name}.tower")
    if spec["fusion"] is not None:
        instantiate(fusions.get(spec["fusion"]["type"]), _fusion_kwargs(spec),
                    "fusion", modalities=list(spec["inputs"]))
    for name in spec["heads"]:
        instantiate(heads.get(spec["heads"][name]["type"]),
                    _head_kwargs(spec, name), f"heads.{name}")


def unimodal_spec(spec, input_name):
    """A spec with only `input_name`: same tower, trunk and heads, no fusion.

    For the "fused model against each single modality" scoreboard. The
    tower outputs a vector (its `output` key is dropped).
    """
    spec = normalize_spec(spec, complete=False)
    if input_name not in spec["inputs"]:
        raise not_one_of("inputs", input_name, list(spec["inputs"]))
    entry = copy.deepcopy(spec["inputs"][input_name])
    entry["tower"].pop("output", None)
    single = copy.deepcopy(spec)
    single["name"] = f"{spec['name']}_{input_name}_only"
    single["inputs"] = {input_name: entry}
    single["fusion"] = None
    return single


def complete_spec(spec, preprocessors):
    """Fills the keys a recipe may leave out from fitted preprocessors.

    For each input with a preprocessor: `shape` from its `output_shape()`,
    text `vocab_size` from its `vocab_size`, tabular `numeric` /
    `categorical` from its `num_numeric` / `cardinalities`. A value the spec
    already gives must agree with the preprocessor.

    Args:
        spec: a spec (e.g. `recipe_model_spec(recipe)`).
        preprocessors: `{input name: fitted preprocessor}`.

    Returns:
        The normalized, complete spec (ready for `build_model`).
    """
    spec = normalize_spec(spec, complete=False)
    for name, entry in spec["inputs"].items():
        pre = preprocessors.get(name)
        if pre is None:
            continue
        derived = {}
        if entry["modality"] == "tabular":
            derived["numeric"] = int(pre.num_numeric)
            derived["categorical"] = [int(c) for c in pre.cardinalities]
        else:
            derived["shape"] = [int(d) for d in pre.output_shape()]
        if entry["modality"] == "text" and hasattr(pre, "vocab_size"):
            derived["vocab_size"] = int(pre.vocab_size)
        for key, value in derived.items():
            if key in entry and entry[key] != value:
                raise ConfigError(
                    f"inputs.{name}.{key}",
                    f"{entry[key]!r} differs from {value!r}, what the "
                    f"fitted {type(pre).__name__} gives; make them agree or "
                    "leave the key out")
            entry[key] = value
    return normalize_spec(spec, complete=True)
