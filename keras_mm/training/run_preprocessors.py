"""A training run's preprocessors: made from the recipe, fitted on the
train split, saved with the run and loaded back.

- `make_preprocessors(recipe)` / `adapt_preprocessors(...)`: one
  preprocessor per input (`keras_mm.registry.PREPROCESSORS`, the input's
  `preprocess` arguments), fitted on raw examples of the TRAIN split only
  (after the bad-input check, whose result the train pipeline keeps);
- `save_preprocessors` / `load_preprocessors`: `preprocessors.json`.
"""

import contextlib
import json
import logging

import tensorflow as tf

from keras_mm.errors import ConfigError, DataError
from keras_mm.registry import preprocessor_class
from keras_mm.training.run_data import _source, input_columns, make_pipeline

log = logging.getLogger("keras_mm")

PREPROCESSORS_FILE = "preprocessors.json"


def make_preprocessors(recipe, names=None):
    """`{input name: unfitted preprocessor}` in recipe input order."""
    out = {}
    for name, entry in recipe["inputs"].items():
        if names is not None and name not in names:
            continue
        cls, kwargs = preprocessor_class(name, entry)
        owned = sorted(set(kwargs) & set(entry.get("preprocess") or {}))
        if owned:
            source = "preset" if "preset" in kwargs else "hub"
            raise ConfigError(f"inputs.{name}.preprocess.{owned[0]}",
                              f"set by the input's {source} key; remove it "
                              "here")
        kwargs.update(entry.get("preprocess") or {})
        try:
            out[name] = cls(name, **kwargs)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"inputs.{name}.preprocess", str(error)) \
                from None
    return out


def _needs_adapt(preprocessor):
    from keras_mm.data import Preprocessor
    return type(preprocessor).adapt is not Preprocessor.adapt


def raw_examples(source, name, preprocessor, column=None, decisions=None,
                 allow_paths_outside=True):
    """A `tf.data.Dataset` of the raw values of one input, one per example.

    Reads only the columns (files) this input uses. With `decisions` (the
    `_decisions` of a checked `Pipeline` over the same source), the
    examples that check skips are left out and the values it marks
    missing read as empty; without, unreadable examples are left out.
    """
    from keras_mm.data import Pipeline

    pipe = Pipeline(_source(source), {name: preprocessor},
                    columns=None if column is None else {name: column},
                    validate=False, allow_paths_outside=allow_paths_outside)
    (inp,) = pipe.inputs
    if decisions is None:
        ds = pipe.raw_dataset().map(lambda key, raw, labels: inp.raw(raw))
        return ds.ignore_errors()
    blank = {c: k for c, k in decisions["blank"].items()
             if c in pipe.wanted}
    ds, load = pipe.source.elements({"skip": decisions["skip"],
                                     "blank": blank}, cycle_length=1)
    if pipe.manifest is None:
        ds = ds.map(lambda key, serialized: load((key, serialized)))
    else:
        ds = ds.map(load)
    return ds.map(lambda key, raw, labels: inp.raw(raw))


def _parses_unfitted(preprocessor):
    """Whether `parse` traces before `adapt` (it uses no fitted state)."""
    try:
        tf.function(lambda raw: preprocessor.parse(raw)) \
            .get_concrete_function(preprocessor.example_signature())
    except (ValueError, TypeError, NotImplementedError):
        return False
    return True


def adapt_preprocessors(preprocessors, recipe, clock=None, fitted=()):
    """Fits each preprocessor on the raw TRAIN examples of its input that
    pass the bad-input check.

    The check (`data.bad_records`: error / skip / missing) runs first,
    over the inputs whose `parse` works before `adapt` (a sensor file that
    does not decode is a bad record, not a tf.data error in `adapt`):
    under `error` it raises the `DataError` naming the row; otherwise
    `adapt` sees neither the skipped examples nor the values marked
    missing (they read as empty). When every input took part, the check's
    result is kept for the train split's pipeline (`parse` of an input
    that traces unfitted does not use the fitted state), so the data is
    not decoded twice. `clock` (a `PhaseClock`) gets the seconds of the
    check (`validate`) and of the fitting (`adapt`). `fitted`: inputs
    whose preprocessor is fitted already (another run's, `init_from`).
    """
    from keras_mm.data import validation

    def phase(name):
        return contextlib.nullcontext() if clock is None else \
            clock.phase(name)

    todo = [n for n, p in preprocessors.items()
            if _needs_adapt(p) and n not in fitted]
    if not todo:
        return preprocessors
    source = recipe["data"]["splits"]["train"]
    columns = input_columns(recipe)
    outside = bool(recipe["data"].get("allow_paths_outside", False))
    checked = {n: p for n, p in preprocessors.items()
               if n not in todo or _parses_unfitted(p)}
    decisions = pipe = None
    if any(n in checked for n in todo):
        pipe = make_pipeline(recipe, "train", checked, {})
        log.info("data: bad-input check of the train split before adapt "
                 "(inputs %s)", ", ".join(checked))
        with phase("validate"):
            pipe.validate()     # raises under data.bad_records: error
        decisions = pipe._decisions
        key = validation.fingerprint(pipe)
    for name in todo:
        pre = preprocessors[name]
        log.info("data: adapting the %s preprocessor of %r on the train "
                 "split", pre.modality, name)
        with phase("adapt"):
            pre.adapt(raw_examples(source, name, pre, columns.get(name),
                                   decisions, outside))
    if pipe is not None and len(checked) == len(preprocessors):
        validation.carry_over(key, pipe)
    return preprocessors


def save_preprocessors(preprocessors, path):
    """Writes `{input name: {"modality", "config"}}` (fitted state incl.)."""
    from keras_mm.data import serialize_preprocessor
    from keras_mm.serving.atomic import atomic_write_text

    # Keys in model input order (also the presence-mask column order).
    data = {name: serialize_preprocessor(p)
            for name, p in preprocessors.items()}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def load_preprocessors(path, order=None):
    """Reads `preprocessors.json` back into fitted preprocessors.

    Args:
        path: the file.
        order: input names in model order (default: the file's order).
    """
    import keras_mm.pretrained  # noqa: F401  (fills PREPROCESSORS)
    from keras_mm.data import deserialize_preprocessor

    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    names = list(order) if order is not None else list(data)
    missing = [n for n in names if n not in data]
    if missing:
        raise DataError(f"holds no preprocessor for inputs {missing}; it "
                        f"has {sorted(data)}", file=path)
    return {name: deserialize_preprocessor(data[name]) for name in names}
