"""TPU readiness of a model on one real batch, checked with XLA on CPU.

Most TPU failures come from what a CPU run hides: string or decode ops in
the model, data-dependent shapes, float64, Keras silently giving up on XLA.
`check_model(model, batch)` compiles the predict step and a train step
(forward, loss, gradients) with `jit_compile=True` and reports:

- a. `jit_kept`: whether Keras keeps `jit_compile=True` (it falls back to
  False, with only a warning, when a layer has `supports_jit = False`,
  e.g. `StringLookup`); the layers are named;
- b. `xla_ops`: the ops XLA rejects (string inputs, tokenizers, decoders,
  `py_function`), each with the layer (or input) that put it there;
- c. `hlo`: float64 values and data-dependent (bounded-dynamic) shapes in
  the compiled HLO (`tf.boolean_mask`, `tf.unique`, `tf.where`): XLA on
  CPU compiles both, a TPU rejects them; each with its layer;
- d. `jit_equal`: the jit-compiled outputs against the plain graph's on
  the same batch and weights (shape, and `|a - b| <= atol + rtol |b|`): a
  dynamic-size `TensorArray` returns a wrong result under XLA without an
  error;
- e. `advice`: the Cloud TPU guide's batch and shape advice (a global
  batch divisible by 8 x replicas, dense widths toward multiples of 128,
  `steps_per_execution`, bfloat16);
- f. `input_shapes`: the input pipeline's static shapes (a `None`
  dimension, such as the batch of a partial last batch, is a new XLA
  program on every new size).

a and b are errors (`report.ok` is False); the others are warnings, each
with a fix.
"""

import re
import warnings

import numpy as np
import tensorflow as tf

ATOL = 1e-4
RTOL = 1e-3
# TF ops whose output shape depends on the data: XLA pads them to a
# bound on CPU/GPU; TPUs need static shapes.
DYNAMIC_SHAPE_OPS = ("Where", "Unique", "UniqueV2", "UniqueWithCounts",
                     "DynamicPartition", "BooleanMask", "ListDiff",
                     "NonMaxSuppressionV3", "NonMaxSuppressionV4",
                     "NonMaxSuppressionV5", "DenseToSparseSetOperation")
CHECKS = {"a": "jit_kept", "b": "xla_ops", "c": "hlo", "d": "jit_equal",
          "e": "advice", "f": "input_shapes"}
ERRORS = ("a", "b")


class Finding(dict):
    """One row of the report: `check` (a-f), `name`, `ok`, `severity`
    (`error` / `warning` / `info`), `what` and `fix`."""

    def __init__(self, check, ok, what, fix="", severity=None):
        super().__init__(
            check=check, name=CHECKS[check], ok=bool(ok), what=what,
            fix=fix, severity="info" if ok else (
                severity or ("error" if check in ERRORS else "warning")))


class ReadinessReport:
    """The findings of `check_model`; `ok` when checks a and b pass.

    Example:

    >>> report = ReadinessReport([Finding("a", True, "kept")])
    >>> report.ok, report.exit_code
    (True, 0)
    """

    def __init__(self, findings):
        self.findings = list(findings)

    @property
    def ok(self):
        return all(f["ok"] for f in self.findings if f["check"] in ERRORS)

    @property
    def exit_code(self):
        return 0 if self.ok else 1

    def failed(self, check=None):
        return [f for f in self.findings if not f["ok"]
                and (check is None or f["check"] == check)]

    def as_dict(self):
        return {"ok": self.ok, "findings": [dict(f) for f in self.findings]}

    def table(self):
        """The report as a markdown table, with the verdict below."""
        lines = ["| check | result | finding | fix |", "|---|---|---|---|"]
        for f in self.findings:
            result = "ok" if f["ok"] else f["severity"].upper()
            cells = [f"{f['check']}. {f['name']}", result, f["what"],
                     f["fix"]]
            lines.append("| " + " | ".join(c.replace("|", "/")
                                           for c in cells) + " |")
        lines.append("")
        lines.append("ready for XLA (TPU): checks a and b pass" if self.ok
                     else "NOT ready: a check a or b failed (exit code 1)")
        return "\n".join(lines)


def _layer_paths(model):
    """`[(layer path, op-name pattern)]` of `model`, longest path first (to
    match op names); each pattern is compiled once."""
    paths = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        paths.add(getattr(layer, "path", None) or layer.name)
    return [(path, re.compile(r"(^|/)" + "/".join(
        re.escape(p) + r"(_\d+)?" for p in path.split("/")) + r"(/|$)"))
        for path in sorted(paths, key=len, reverse=True)]


def _owner(op_name, paths, inputs):
    """The layer path (or input) an op name belongs to."""
    for path, pattern in paths:
        if pattern.search(op_name):
            return f"layer {path}"
    base = op_name.split("/")[0]
    for name in inputs:
        if base == name or base.startswith(f"{name}_"):
            return f"input {name}"
    return op_name


def check_jit_kept(model):
    """a. Whether Keras keeps `jit_compile=True` for `model`."""
    blockers = [getattr(layer, "path", None) or layer.name
                for layer in model._flatten_layers()
                if not getattr(layer, "supports_jit", True)]
    before = getattr(model, "_jit_compile", None)   # unresolved "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.jit_compile = True        # Keras' own fallback decides
        kept = bool(model.jit_compile)
        model.jit_compile = before
    if kept:
        return Finding("a", True, "Keras keeps jit_compile=True")
    if blockers:
        return Finding(
            "a", False, "Keras falls back to jit_compile=False (a warning "
            "only): layers without XLA support: " + ", ".join(blockers),
            "move them into the preprocessors (tf.data), outside the model")
    return Finding("a", False, "Keras falls back to jit_compile=False "
                   "(op determinism is enabled)",
                   "call tf.config.experimental.enable_op_determinism only "
                   "off TPU")


_UNSUPPORTED = re.compile(r"(\w+) \(No registered '\w+' OpKernel for "
                          r"\w+ devices compatible with node \{\{node "
                          r"([^}]+)\}\}")


def _xla_error_ops(message, paths, inputs):
    """`{owner: {op}}` of XLA's "unsupported operations" message (the
    placeholders of non-numeric inputs are reported apart)."""
    found = {}
    for op, node in _UNSUPPORTED.findall(message):
        if op != "_Arg":
            found.setdefault(_owner(node, paths, inputs), set()).add(op)
    return found


_OP_META = re.compile(r'op_type="(\w+)" op_name="([^"]+)"')
_BOUNDED_DIM = re.compile(r"\[[^\]]*<=")


def _hlo_findings(hlo, paths, inputs):
    """`(float64 owners, dynamic-shape owners)` of an HLO module text."""
    f64, dynamic = set(), set()
    for line in hlo.splitlines():
        meta = _OP_META.search(line)
        if meta is None:
            continue
        is_f64 = "f64[" in line
        is_dynamic = meta.group(1) in DYNAMIC_SHAPE_OPS or \
            _BOUNDED_DIM.search(line) is not None
        if not (is_f64 or is_dynamic):
            continue                    # most lines: no owner needed
        owner = _owner(meta.group(2), paths, inputs)
        if is_f64:
            f64.add(owner)
        if is_dynamic:
            dynamic.add(owner)
    return f64, dynamic


def _train_step(model, labels=True):
    def step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return loss, tape.gradient(loss, model.trainable_variables)
    return step if labels else (lambda x: step(x, None))


def _compile(function, args):
    """`(hlo text or None, error message or None)` of `function(*args)`
    compiled with XLA."""
    compiled = tf.function(function, jit_compile=True, autograph=False)
    try:
        return compiled.experimental_get_compiler_ir(*args)(stage="hlo"), \
            None
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
            ValueError, TypeError) as e:
        return None, str(e)


def _compare(model, x, atol, rtol):
    """d. jit against plain-graph outputs of `model(x)`."""
    def predict(v):
        return model(v, training=False)

    plain = tf.nest.flatten(tf.function(predict, autograph=False)(x))
    jitted = tf.nest.flatten(tf.function(predict, jit_compile=True,
                                         autograph=False)(x))
    names = list(getattr(model, "output_names", None) or []) or [
        str(i) for i in range(len(plain))]
    bad = []
    worst = 0.0
    for name, a, b in zip(names, jitted, plain):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            bad.append(f"output {name}: shape {list(a.shape)} under XLA, "
                       f"{list(b.shape)} without")
            continue
        error = np.abs(a - b)
        worst = max(worst, float(error.max(initial=0.0)))
        if not np.all(error <= atol + rtol * np.abs(b)):
            bad.append(f"output {name}: max |jit - plain| "
                       f"{float(error.max()):.3g}")
    if bad:
        return Finding(
            "d", False, "XLA computes something else: " + "; ".join(bad),
            "look for dynamic-size TensorArrays or Python-side state in "
            "the model's layers (XLA returns a wrong result for a "
            "dynamic-size TensorArray, without an error)")
    return Finding("d", True, f"jit outputs equal the plain ones (max "
                   f"|diff| {worst:.2g} <= {atol:g} + {rtol:g}|y|)")


def _advice(model, batch_size, replicas, steps_per_execution, precision):
    rows = []
    if batch_size is not None:
        ok = batch_size % (8 * replicas) == 0
        rows.append(Finding(
            "e", ok, f"global batch {batch_size} over {replicas} "
            f"replica(s)" + ("" if ok else f": not a multiple of "
                             f"{8 * replicas} (8 x replicas)"),
            "" if ok else f"use a global batch that is a multiple of "
            f"{8 * replicas} (training.batch_size; 128 or more per replica "
            "fills a TPU core)"))
    narrow = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        units = getattr(layer, "units", None)
        if isinstance(units, int) and units >= 64 and units % 128:
            path = getattr(layer, "path", None) or layer.name
            narrow.append(f"{path} ({units})")
    if narrow:
        rows.append(Finding(
            "e", False, "dense widths that are not multiples of 128 (the "
            "TPU matrix unit's tile): " + ", ".join(narrow[:8]) +
            (" ..." if len(narrow) > 8 else ""),
            "round the widths to multiples of 128 where they are large"))
    if steps_per_execution is not None and steps_per_execution < 8:
        rows.append(Finding(
            "e", False, f"steps_per_execution {steps_per_execution}",
            "set training.steps_per_execution to 32 or more on TPU (the "
            "default with strategy tpu/auto)"))
    if precision is not None and "bfloat16" not in str(precision):
        rows.append(Finding(
            "e", False, f"precision {precision}",
            "use mixed_bfloat16 on TPU (training.precision: auto does)"))
    return rows


def _input_shapes(dataset):
    spec = dataset.element_spec
    features = spec[0] if isinstance(spec, tuple) else spec
    dynamic = [f"{k} {s.shape.as_list()}" for k, s in
               sorted(features.items()) if not s.shape.is_fully_defined()]
    if dynamic:
        return Finding(
            "f", False, "inputs with unknown dimensions: " +
            ", ".join(dynamic),
            "batch with drop_remainder=True (a partial last batch is a new "
            "shape) and give every input a fixed length")
    return Finding("f", True, "every input has a static shape: " + ", ".join(
        f"{k} {s.shape.as_list()}" for k, s in sorted(features.items())))


def check_model(model, batch, *, dataset=None, batch_size=None, replicas=1,
                steps_per_execution=None, precision=None, atol=ATOL,
                rtol=RTOL):
    """Checks that `model` compiles for XLA as a TPU needs it.

    Args:
        model: a built Keras model, compiled with its losses (the train
            step computes `model.compute_loss`).
        batch: one `(inputs, labels)` batch, or inputs alone (a model
            whose losses are `add_loss` ones; an uncompiled model gets the
            predict step only), e.g. from the real pipeline.
        dataset: the input pipeline, for check f (its `element_spec`).
        batch_size, replicas, steps_per_execution, precision: the
            training settings (`batch_size` is the global batch, as
            `training.batch_size`), for the advice of check e.
        atol, rtol: check d's tolerance.

    Returns:
        A `ReadinessReport`.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((4,), name="x")
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> model.compile("sgd", "mse")
    >>> batch = ({"x": np.ones((8, 4), "float32")},
    ...          np.zeros((8, 2), "float32"))
    >>> report = check_model(model, batch)
    >>> report.ok, [f["check"] for f in report.failed()]
    (True, [])
    """
    x, y = batch if isinstance(batch, tuple) else (batch, None)
    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    paths = _layer_paths(model)
    inputs = [t.name.split(":")[0] for t in getattr(model, "inputs", [])]
    findings = [check_jit_kept(model)]
    steps = [("predict", lambda v: model(v, training=False), (x,))]
    if y is not None:
        y = tf.nest.map_structure(tf.convert_to_tensor, y)
        steps.append(("train", _train_step(model), (x, y)))
    elif getattr(model, "compiled", False):    # add_loss alone (contrastive)
        steps.append(("train", _train_step(model, labels=False), (x,)))
    rejected, f64, dynamic, hlos = {}, set(), set(), {}
    for what, values in (("input", x), ("label", y)):
        for name, value in sorted(values.items() if isinstance(values, dict)
                                  else ()):
            if not (value.dtype.is_floating or value.dtype.is_integer
                    or value.dtype.is_bool):
                rejected[f"{what} {name}"] = {f"a {value.dtype.name} "
                                              "tensor"}
    for step, function, args in steps:
        hlo, error = _compile(function, args)
        if error is not None:
            found = _xla_error_ops(error, paths, inputs)
            if not found and not rejected:
                why = error.strip().splitlines()[0]
                why = why.replace("Failed getting HLO text: ", "")[:300]
                found = {f"the {step} step": {f"it ({why})"}}
            for owner, ops in found.items():
                rejected.setdefault(owner, set()).update(ops)
            continue
        hlos[step] = hlo
        a, b = _hlo_findings(hlo, paths, inputs)
        f64 |= a
        dynamic |= b
    if rejected:
        for owner, ops in sorted(rejected.items()):
            fix = ("do string, decode and tokenizer work in the "
                   "preprocessors (tf.data), and no tf.py_function in layers")
            if owner.startswith("the "):
                fix = ("give loops a fixed trip count and TensorArrays a "
                       "fixed size (a dynamic-size TensorArray breaks under "
                       "XLA), and keep shapes independent of the data")
            findings.append(Finding(
                "b", False, f"XLA rejects {', '.join(sorted(ops))} in "
                f"{owner}", fix))
    else:
        names = [step for step, _, _ in steps]
        findings.append(Finding("b", True, "XLA compiles the " + " and ".join(
            names) + (" steps" if len(names) > 1 else " step")))
    if hlos:
        for owner in sorted(f64):
            findings.append(Finding("c", False, f"float64 in {owner}",
                                    "compute in float32 / bfloat16 (TPUs "
                                    "have no float64)"))
        for owner in sorted(dynamic):
            findings.append(Finding(
                "c", False, f"data-dependent shape in {owner}",
                "replace boolean_mask / unique / where by masks of fixed "
                "shape (multiply, or tf.where with three arguments)"))
        if not f64 and not dynamic:
            findings.append(Finding("c", True, "no float64 and no dynamic "
                                    "shape in the HLO"))
        if "predict" in hlos:
            findings.append(_compare(model, x, atol, rtol))
    findings.extend(_advice(model, batch_size, replicas, steps_per_execution,
                            precision))
    if dataset is not None:
        findings.append(_input_shapes(dataset))
    return ReadinessReport(findings)
