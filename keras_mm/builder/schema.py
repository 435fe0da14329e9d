"""Pydantic v2 schemas of the static spec sections, and the error formatter.

The static parts of a spec (and of a recipe, `keras_mm.recipes.schema`) are
pydantic models: `extra="forbid"`, strict types, `Literal` choices, and a
discriminated union where the keys of a section depend on a tag (an input's
`modality`). Tower / fusion / head keyword arguments are open-ended (any
registered class), so `keras_mm.builder.spec` checks them against the class
constructor signatures instead; the models keep them as `model_extra`.

`validate(model, value, key_path)` turns the first pydantic error into the
project's `ConfigError`, in the same words the hand-written checks used:
`fusion.presence_mask: 'yes' is not one of true, false`,
`trunk.units: unknown key 'units'; allowed keys are activation, dropout,
hidden_units`, `training.epochs: 0 is not an integer >= 1`.
"""

import json
import numbers
import re
import types
import typing
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import annotated_types
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict,
                      Discriminator, Field, Tag, ValidationError)
from pydantic_core import PydanticCustomError

from keras_mm.errors import ConfigError

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class Section(BaseModel):
    """Base of every schema section: unknown keys and loose types fail.

    `key_word` names the keys in messages ("key", or "section" at a recipe's
    top level); `sorted_keys` lists the allowed keys sorted (else in field
    order).
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    key_word: ClassVar[str] = "key"
    sorted_keys: ClassVar[bool] = True


class OpenSection(Section):
    """A section whose other keys are a class's keyword arguments (checked
    against its signature by the caller): they stay in `model_extra`."""

    model_config = ConfigDict(extra="allow", strict=True)

    def extra(self):
        return dict(self.model_extra or {})


def fail(message, suffix=""):
    """The error a validator raises: `message` verbatim, at the field's
    key path plus `suffix` (e.g. `"[0]"` for a list item)."""
    return PydanticCustomError("config", "{message}",
                               {"message": message, "suffix": suffix})


# -- field types ----------------------------------------------------------------


def _type_name(value):
    return type(value).__name__


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_list(minimum=1, allow_empty=True, maximum=None):
    """A list of integers >= `minimum` (and <= `maximum` when given; a
    single integer is a 1-list)."""

    def check(value):
        if is_int(value):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise fail(f"expected a list of integers, got {value!r}")
        if not value and not allow_empty:
            raise fail("expected a non-empty list of integers")
        for i, item in enumerate(value):
            if not is_int(item) or item < minimum:
                raise fail(f"{item!r} is not an integer >= {minimum}",
                           f"[{i}]")
            if maximum is not None and item > maximum:
                raise fail(f"{item!r} is above the limit of {maximum}; use "
                           "a smaller value", f"[{i}]")
        return [int(v) for v in value]

    return Annotated[Any, AfterValidator(check)]


def plain(value):
    """JSON-like data only (numbers, strings, lists, mappings)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise fail(f"value {value!r} is not plain data (numbers, strings, "
                   f"lists, mappings): {error}") from None
    return value


def choice(*allowed):
    """One of `allowed`, compared by type too (`1` is not `True`)."""

    def check(value):
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise fail(f"{value!r} is not one of "
                       f"{', '.join(str(a) for a in allowed)}")
        return value

    return Annotated[Any, AfterValidator(check)]


def _check_name(name):
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise fail(f"name {name!r} is not valid; use letters, digits and "
                   "'_', starting with a letter (it names model inputs and "
                   "layers)")
    return name


Name = Annotated[Any, AfterValidator(_check_name)]
PositiveInts = int_list()
# Layer widths: the bound of keras_mm.builder.argument_checks.MAX_WIDTH.
Widths = int_list(maximum=16384)
Shape = int_list(allow_empty=False)
PositiveInt = Annotated[int, Field(ge=1)]


def bounded_int(low, high, why=None):
    """An integer in `[low, high]`; `why` explains the bound in messages."""
    return Annotated[int, Field(ge=low, le=high, description=why)]


NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
PlainMapping = Annotated[dict[str, Any], AfterValidator(plain)]


class Registered:
    """Field metadata: the value must name a type of a registry."""

    def __init__(self, registry):
        self.registry = registry  # "towers", "fusions" or "heads"

    def names(self):
        from keras_mm.builder.spec import load_registries
        towers, fusions, heads = load_registries()
        return {"towers": towers, "fusions": fusions,
                "heads": heads}[self.registry].names()


def registered(registry):
    marker = Registered(registry)

    def check(value):
        names = marker.names()
        if not isinstance(value, str) or value not in names:
            raise fail(f"{value!r} is not one of {', '.join(names)}")
        return value

    return Annotated[Any, marker, AfterValidator(check)]


TowerType = registered("towers")
FusionType = registered("fusions")
HeadType = registered("heads")


def _none_as_empty(value):
    return {} if value is None else value


def _type_shorthand(value):
    """`fusion: gated` means `fusion: {type: gated}`; `fusion: none` and
    `fusion: {type: none}` mean no fusion layer (a dual encoder)."""
    if isinstance(value, str):
        value = {"type": value}
    if isinstance(value, dict) and value.get("type") == "none":
        others = sorted(k for k in value if k != "type")
        if others:
            raise fail(f"type none (no fusion layer) takes no other keys; "
                       f"remove {', '.join(others)}")
        return None
    return value


# -- spec sections --------------------------------------------------------------


def _source(value):
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    if isinstance(value, dict):
        return plain(value)
    raise fail(f"{value!r} is not a column name, a list of column names or "
               "a mapping")


class InputSection(Section):
    """`inputs.<name>` keys every modality has."""

    modality: TowerType
    tower: Annotated[dict[str, Any], BeforeValidator(_none_as_empty)] = {}
    source: Optional[Annotated[Any, AfterValidator(_source)]] = None
    preprocess: Optional[PlainMapping] = None


class ShapedInput(InputSection):
    shape: Optional[Shape] = Field(
        None, description="the per-example input shape, without the batch "
        "axis")


class TextInput(ShapedInput):
    vocab_size: Optional[Annotated[int, Field(ge=2)]] = None


class MaskedInput(ShapedInput):
    """Video and sensor inputs: `mask: true` (the default) adds a
    `<name>_mask` input (the preprocessor's step / frame mask); `mask: false`
    leaves it out (padding then reaches the tower as zeros)."""

    mask: bool = True


class TabularInput(InputSection):
    numeric: Optional[NonNegativeInt] = None
    categorical: Optional[PositiveInts] = None


def _handle(value):
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{value!r} is not a preset name, handle or folder")
    return value


Handle = Annotated[Any, AfterValidator(_handle)]


class HubSection(Section):
    """`inputs.<name>.hub` as a mapping: the encoder module and, for text,
    its preprocessing module (TF-Hub's pair)."""

    encoder: Handle
    preprocessor: Optional[Handle] = None


def _hub(value):
    return {"encoder": value} if isinstance(value, str) else value


class PretrainedInput(ShapedInput):
    """An input whose tower and preprocessor come from a pretrained model:
    `preset` (a keras-hub preset name, kaggle:// / hf:// handle or local
    preset folder) or `hub` (a TF-Hub handle or SavedModel folder: a string,
    or `{encoder, preprocessor}`). `mask` (default true for text and
    video, false otherwise) adds the `<name>_mask` input (the tokenizer's
    padding mask, the frame mask)."""

    preset: Optional[Handle] = None
    hub: Optional[Annotated[HubSection, BeforeValidator(_hub)]] = None
    mask: Optional[bool] = None
    vocab_size: Optional[Annotated[int, Field(ge=2)]] = None


PRETRAINED_KEYS = ("preset", "hub")

_INPUT_TAGS = {"text": "text", "video": "masked", "sensor": "masked",
               "tabular": "tabular"}


def _input_tag(value):
    if isinstance(value, dict) and any(value.get(k) is not None
                                       for k in PRETRAINED_KEYS):
        return "pretrained"
    modality = value.get("modality") if isinstance(value, dict) else None
    return _INPUT_TAGS.get(modality, "shaped") if isinstance(
        modality, str) else "shaped"


AnyInput = Annotated[Union[Annotated[ShapedInput, Tag("shaped")],
                           Annotated[TextInput, Tag("text")],
                           Annotated[MaskedInput, Tag("masked")],
                           Annotated[TabularInput, Tag("tabular")],
                           Annotated[PretrainedInput, Tag("pretrained")]],
                     Discriminator(_input_tag)]


class FusionSection(OpenSection):
    """`fusion`: type, presence_mask, and the fusion class's arguments.

    `presence_mask` left out (None) means true with two or more inputs and
    false with one; `keras_mm.builder.spec` writes the resolved value.
    """

    type: FusionType
    presence_mask: Optional[bool] = None


def _activation(value):
    import keras
    if not isinstance(value, str):
        raise fail(f"{value!r} is not an activation name")
    try:
        keras.activations.get(value)
    except (ValueError, TypeError):
        raise fail(f"{value!r} is not a Keras activation (e.g. relu, gelu, "
                   "tanh, swish)") from None
    return value


class TrunkSection(Section):
    """`trunk`: the MLP after the fusion layer."""

    hidden_units: Widths = []
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    activation: Annotated[Any, AfterValidator(_activation)] = "relu"


_COMPILE_METRIC_ALIASES = ("accuracy", "acc", "crossentropy", "ce")


def _keras_object(module, value):
    """True when `value` (a name or a serialized dict) names an object of
    `module` (`keras.losses` / `keras.metrics`)."""
    try:
        if isinstance(value, dict):
            module.deserialize(value)
        elif isinstance(value, str):
            module.get(value)
        else:
            return False
    except (ValueError, TypeError):
        return False
    return True


def _loss(value):
    import keras
    if value is None:
        return None
    plain(value)
    if not _keras_object(keras.losses, value):
        raise fail(f"{value!r} is not a Keras loss name (e.g. "
                   "sparse_categorical_crossentropy, binary_crossentropy, "
                   "mse) or a serialized loss")
    return value


def _metrics(value):
    import keras
    if value is None:
        return None
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise fail(f"expected a list of metric names, got {value!r}")
    for i, metric in enumerate(value):
        plain(metric)
        if isinstance(metric, str) and metric in _COMPILE_METRIC_ALIASES:
            continue
        if not _keras_object(keras.metrics, metric):
            raise fail(f"{metric!r} is not a Keras metric name (e.g. "
                       "accuracy, auc, mae) or a serialized metric",
                       f"[{i}]")
    return value


def _no_metrics(value):
    if value is not None:
        raise fail("a contrastive head takes no Keras metrics; its retrieval "
                   "metrics (Recall@k, median rank) are computed on the "
                   "evaluation splits")
    return value


class HeadSection(OpenSection):
    """`heads.<name>`: type, compile and data keys, and the head class's
    arguments."""

    type: HeadType
    loss: Annotated[Any, AfterValidator(_loss)] = None
    loss_weight: NonNegativeFloat = 1.0
    metrics: Annotated[Any, AfterValidator(_metrics)] = None
    source: Optional[str] = Field(None, description="a column name")


class ContrastiveHeadSection(OpenSection):
    """`heads.<name>` of type contrastive: `loss` names the alignment loss
    (a constructor argument, not a Keras loss); `source` an optional label
    column, read for class-level retrieval metrics only."""

    type: HeadType
    loss: Literal["clip", "siglip"] = "clip"
    metrics: Annotated[Any, AfterValidator(_no_metrics)] = None
    source: Optional[str] = Field(None, description="a column name")


def _head_tag(value):
    if isinstance(value, dict) and value.get("type") == "contrastive":
        return "contrastive"
    return "head"


AnyHead = Annotated[Union[Annotated[HeadSection, Tag("head")],
                          Annotated[ContrastiveHeadSection,
                                    Tag("contrastive")]],
                    Discriminator(_head_tag)]


def _trunk_off(value):
    return None if value is False else value


class SpecSections(Section):
    """A whole `build_model` spec (its static structure)."""

    name: Optional[Name] = None
    inputs: dict[Name, AnyInput]
    fusion: Annotated[Optional[FusionSection],
                      BeforeValidator(_type_shorthand)] = None
    trunk: Annotated[Optional[TrunkSection], BeforeValidator(_trunk_off)] = \
        None
    heads: dict[Name, AnyHead]


# -- validation and error messages ----------------------------------------------


def validate(model, value, key_path=""):
    """`model.model_validate(value)`; the first error becomes a ConfigError
    naming the dotted key path, the bad value and what is allowed."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        errors = error.errors()
        # An unknown key (a typo) first: it often explains a missing one.
        unknown = [e for e in errors if e["type"] == "extra_forbidden"]
        raise _config_error(model, (unknown or errors)[0], key_path) \
            from None


def _unwrap(annotation):
    """`(bare annotation, metadata list)`: strips Annotated and Optional."""
    metadata = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            metadata.extend(annotation.__metadata__)
            annotation = annotation.__origin__
        elif origin in (Union, types.UnionType) and not any(
                isinstance(m, Discriminator) for m in metadata):
            members = [a for a in typing.get_args(annotation)
                       if a is not type(None)]
            if len(members) != 1:
                return annotation, metadata
            annotation = members[0]
        else:
            return annotation, metadata


def _is_model(annotation):
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _walk(model, loc):
    """Follows a pydantic error location through the schema.

    Returns `(key path parts, parent model, field name, annotation,
    metadata, field info)` of the place that failed.
    """
    parts, parent, field_name, info = [], None, None, None
    annotation, metadata = model, []
    loc = list(loc)
    for index, item in enumerate(loc):
        annotation, more = _unwrap(annotation)
        metadata = metadata + more
        if item == "[key]":
            continue
        if any(isinstance(m, Discriminator) for m in metadata) and \
                typing.get_origin(annotation) in (Union, types.UnionType):
            for member in typing.get_args(annotation):
                bare, tags = _unwrap(member)
                if any(isinstance(t, Tag) and t.tag == item for t in tags):
                    annotation, metadata = bare, []
            continue
        if _is_model(annotation):
            parent, field_name = annotation, item
            info = annotation.model_fields.get(item)
            parts.append(f".{item}")
            if info is None:
                annotation, metadata = Any, []
            else:
                annotation, metadata = info.annotation, list(info.metadata)
            continue
        args = typing.get_args(annotation) or (Any, Any)
        if isinstance(item, int) and typing.get_origin(annotation) is list:
            parts.append(f"[{item}]")
            annotation = args[0]
        else:  # a mapping: the value, or the key itself when "[key]" follows
            parts.append(f".{item}")
            key_failed = loc[index + 1:index + 2] == ["[key]"]
            annotation = args[0] if key_failed else args[-1]
        metadata, info = [], None
    annotation, more = _unwrap(annotation)
    return parts, parent, field_name, annotation, metadata + more, info


def _join(key_path, parts):
    path = key_path + "".join(parts)
    return path[1:] if path.startswith(".") else path


def _bound(metadata, ctx, kind):
    if ctx and kind in ctx:
        return ctx[kind]
    for item in metadata:
        if isinstance(item, getattr(annotated_types, kind.capitalize())):
            return getattr(item, kind)
    return None


def _config_error(model, error, key_path):
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx")
    parts, parent, field_name, annotation, metadata, info = _walk(
        model, error["loc"])
    word = parent.key_word if parent is not None else "key"
    path = _join(key_path, parts)
    description = info.description if info is not None else None
    if kind == "config":
        return ConfigError(path + ctx.get("suffix", ""), ctx["message"])
    if kind == "extra_forbidden":
        allowed = list(parent.model_fields)
        if parent.sorted_keys:
            allowed.sort()
        return ConfigError(path, f"unknown {word} {field_name!r}; allowed "
                           f"{word}s are {', '.join(allowed)}")
    if kind == "missing" or (value is None and info is not None
                             and info.is_required()):
        note = ""
        registry = [m for m in metadata if isinstance(m, Registered)]
        if registry:
            note = f"; one of {', '.join(registry[0].names())}"
        elif typing.get_origin(annotation) is Literal:
            note = f"; one of {', '.join(map(str, typing.get_args(annotation)))}"
        elif description:
            note = f" ({description})"
        return ConfigError(path, f"missing required {word} {field_name!r}"
                           f"{note}")
    if kind == "literal_error":
        allowed = ", ".join(str(a) for a in typing.get_args(annotation))
        return ConfigError(path, f"{value!r} is not one of {allowed}")
    if kind == "bool_type":
        return ConfigError(path, f"{value!r} is not one of true, false")
    if kind == "less_than_equal":
        why = f" ({description})" if description else ""
        return ConfigError(path, f"{value!r} is above the limit of "
                           f"{ctx['le']}; use at most {ctx['le']}{why}")
    if annotation is int or kind.startswith("int_"):
        low = _bound(metadata, ctx, "ge")
        low = "" if low is None else f" >= {low}"
        return ConfigError(path, f"{value!r} is not an integer{low}")
    if kind in ("float_type", "float_parsing"):
        return ConfigError(path, f"{value!r} is not a number")
    if kind == "greater_than_equal":
        return ConfigError(path, f"{value!r} is below {ctx['ge']}")
    if kind == "less_than":
        return ConfigError(path, f"{value!r} must be < {ctx['lt']}")
    if kind in ("string_type", "string_too_short"):
        return ConfigError(path, f"{value!r} is not "
                           f"{description or 'a string'}")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return ConfigError(path, f"expected a mapping, got "
                           f"{_type_name(value)} {value!r}")
    return ConfigError(path, f"{value!r}: {error['msg']}")
