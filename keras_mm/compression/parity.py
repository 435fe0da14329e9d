"""The parity report of a compressed artefact against its float32 model.

`parity_report(reference, artefact, dataset, heads)` runs the float
reference and the artefact over the same preprocessed batches (the test
split's `(model inputs, labels)`), and reports:

- `size_bytes`, `reference_size_bytes`, `size_ratio`, and
  `weights_bytes` / `reference_weights_bytes` (a SavedModel's
  `variables/`: its graph is the same size at every precision);
- per head: `max_abs_error` / `mean_abs_error` of the outputs
  (probabilities, scores or values), `top1_agreement` (classification:
  same argmax; binary / multilabel: same side of 0.5), and the task
  metric of both (`accuracy` in %, or `mae` for regression heads) with
  its `drop_points` (accuracy points lost; for `mae`, the relative rise
  in %);
- `latency_ms_p50` of both at batch 1 (after warm-up calls);
- `ok`: every head's drop is at most `max_metric_drop`.

Runners are callables `{model input: array} -> {head: array}`:
`KerasRunner` (the model in a `tf.function`), `SavedModelRunner` (an
export's `serve_tensors` signature) and `LiteRTRunner` (a `.tflite` file
through `ai_edge_litert`, without TensorFlow).
"""

import os
import time

import numpy as np

ACCURACY_KINDS = ("classification", "binary", "multilabel")
LATENCY_CALLS = 50
WARMUP_CALLS = 5


def artefact_bytes(path):
    """Bytes of a file, or of every file under a folder."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def weights_bytes(path):
    """Bytes of a SavedModel's `variables/` (the weights; the rest is the
    graph, the same for every precision), or of a file."""
    variables = os.path.join(path, "variables")
    return artefact_bytes(variables if os.path.isdir(variables) else path)


def _numpy(value):
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


class KerasRunner:
    """A Keras model's `{head: output}` on preprocessed inputs.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((3,), name="x")
    >>> model = keras.Model({"x": inputs},
    ...                     {"y": keras.layers.Dense(2)(inputs)})
    >>> KerasRunner(model)({"x": np.ones((4, 3), "float32")})["y"].shape
    (4, 2)
    """

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self._call = tf.function(lambda x: model(x, training=False),
                                 jit_compile=False, autograph=False)

    def __call__(self, inputs):
        outputs = self._call(dict(inputs))
        if not isinstance(outputs, dict):
            outputs = dict(zip(self.model.output_names,
                               [outputs] if not isinstance(
                                   outputs, (list, tuple)) else outputs))
        return {k: _numpy(v) for k, v in outputs.items()}


# The serving signatures' output of each head kind (serving_functions).
_SIGNATURE_OUTPUT = {"classification": "probabilities",
                     "binary": "probability", "multilabel": "scores"}


class SavedModelRunner:
    """An export's `serve_tensors` signature, as `{head: output}`.

    `heads`: `{head: kind}` (`keras_mm.serving.serving_functions`
    `find_heads` kinds)."""

    def __init__(self, path, heads):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(os.fspath(path))
        self.signature = self.loaded.signatures["serve_tensors"]
        self.heads = dict(heads)

    def __call__(self, inputs):
        import tensorflow as tf

        outputs = self.signature(**{k: tf.constant(v)
                                    for k, v in inputs.items()})
        result = {}
        for head, kind in self.heads.items():
            value = _numpy(outputs[
                f"{head}_{_SIGNATURE_OUTPUT.get(kind, 'value')}"])
            result[head] = value.reshape(len(value), -1) \
                if kind == "binary" else value
        return result


class LiteRTRunner:
    """A `.tflite` file's `serving_default` signature through
    `ai_edge_litert` (inputs are resized to each batch)."""

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=os.fspath(path),
                                       num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner(
            "serving_default")
        details = self.runner.get_input_details()
        self.input_dtypes = {k: v["dtype"] for k, v in details.items()}
        # A file converted at a fixed batch (recurrent towers) is run one
        # example at a time.
        self.fixed_batch = any(int(v["shape_signature"][0]) > 0
                               for v in details.values())

    def __call__(self, inputs):
        feed = {k: np.asarray(v).astype(self.input_dtypes[k])
                for k, v in inputs.items()}
        if not self.fixed_batch:
            return {k: np.array(v) for k, v in self.runner(**feed).items()}
        size = len(next(iter(feed.values())))
        rows = [self.runner(**{k: v[i:i + 1] for k, v in feed.items()})
                for i in range(size)]
        return {k: np.concatenate([np.array(r[k]) for r in rows])
                for k in rows[0]}


def latency_ms_p50(runner, example, calls=LATENCY_CALLS,
                   warmup=WARMUP_CALLS):
    """Median wall time in ms of `runner(example)`, after warm-up."""
    for _ in range(warmup):
        runner(example)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        runner(example)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1e3, 4)


def _agree(kind, a, b):
    if kind == "classification":
        return a.argmax(axis=-1) == b.argmax(axis=-1)
    return (a.reshape(len(a), -1) > 0.5) == (b.reshape(len(b), -1) > 0.5)


def _correct(kind, output, label):
    label = np.asarray(label)
    if kind == "classification":
        return output.argmax(axis=-1).reshape(-1) == \
            label.reshape(-1).astype(int)
    if kind == "binary":
        return (output.reshape(-1) > 0.5) == (label.reshape(-1) > 0.5)
    return (output.reshape(len(output), -1) > 0.5) == \
        (label.reshape(len(label), -1) > 0.5)


class _HeadTally:
    def __init__(self, kind):
        self.kind = kind
        self.max_error = 0.0
        self.error_sum = 0.0
        self.values = 0
        self.agree = []
        self.reference_score = []
        self.artefact_score = []

    def add(self, reference, artefact, label):
        reference = reference.astype(np.float64)
        artefact = artefact.astype(np.float64).reshape(reference.shape)
        error = np.abs(reference - artefact)
        self.max_error = max(self.max_error, float(error.max(initial=0)))
        self.error_sum += float(error.sum())
        self.values += error.size
        if self.kind in ACCURACY_KINDS:
            self.agree.append(_agree(self.kind, reference, artefact)
                              .reshape(-1))
        if label is None:
            return
        if self.kind in ACCURACY_KINDS:
            self.reference_score.append(
                _correct(self.kind, reference, label).reshape(-1))
            self.artefact_score.append(
                _correct(self.kind, artefact, label).reshape(-1))
        elif self.kind == "regression":
            label = np.asarray(label, np.float64).reshape(reference.shape)
            self.reference_score.append(np.abs(reference - label).reshape(-1))
            self.artefact_score.append(np.abs(artefact - label).reshape(-1))

    def entry(self):
        entry = {"kind": self.kind,
                 "max_abs_error": self.max_error,
                 "mean_abs_error": self.error_sum / max(self.values, 1)}
        if self.agree:
            entry["top1_agreement"] = float(np.concatenate(self.agree)
                                            .mean())
        if self.reference_score:
            reference = float(np.concatenate(self.reference_score).mean())
            artefact = float(np.concatenate(self.artefact_score).mean())
            if self.kind in ACCURACY_KINDS:
                entry["metric"] = "accuracy"
                entry["reference"] = 100.0 * reference
                entry["compressed"] = 100.0 * artefact
                entry["drop_points"] = 100.0 * (reference - artefact)
            else:
                entry["metric"] = "mae"
                entry["reference"] = reference
                entry["compressed"] = artefact
                entry["drop_points"] = 100.0 * (artefact - reference) / \
                    max(reference, 1e-12)
        return entry


def parity_report(reference, artefact, dataset, heads, *, artefact_path,
                  reference_path, max_metric_drop=1.0, name=None,
                  latency_reference=None):
    """Compares `artefact` with the float `reference` over `dataset`.

    Args:
        reference, artefact: runners (`KerasRunner`, `SavedModelRunner`,
            `LiteRTRunner`): `{model input: array} -> {head: array}`.
        dataset: batches of `(model inputs, {head: label})` or of model
            inputs alone (then no task metric), e.g. the test split.
        heads: `{head: kind}`; kinds other than classification, binary,
            multilabel and regression get output errors only.
        artefact_path, reference_path: the files / folders whose sizes
            are compared (the reference: the float32 artefact of the same
            format).
        max_metric_drop: the largest drop allowed (accuracy points; for
            regression heads, the relative MAE rise in %).
        name: the artefact's label in the report (e.g. `savedmodel-int8`).
        latency_reference: the runner timed as the float32 latency
            (default `reference`; a LiteRT report times the float32
            `.tflite` while its outputs are compared with the Keras model).

    Returns:
        The report (a JSON-serializable dict; see the module docstring).
    """
    tallies = {head: _HeadTally(kind) for head, kind in heads.items()}
    example = None
    count = 0
    for batch in dataset:
        inputs, labels = batch if isinstance(batch, tuple) else (batch, None)
        inputs = {k: _numpy(v) for k, v in inputs.items()}
        if example is None:
            example = {k: v[:1] for k, v in inputs.items()}
        want, got = reference(inputs), artefact(inputs)
        for head, tally in tallies.items():
            label = None if labels is None or head not in labels \
                else _numpy(labels[head])
            tally.add(want[head], got[head], label)
        count += len(next(iter(inputs.values())))
    if example is None:
        raise ValueError("parity_report: the dataset is empty")
    size = artefact_bytes(artefact_path)
    reference_size = artefact_bytes(reference_path)
    head_entries = {head: tally.entry() for head, tally in tallies.items()}
    drops = [e["drop_points"] for e in head_entries.values()
             if "drop_points" in e]
    return {
        "artefact": name,
        "path": os.path.abspath(artefact_path),
        "num_examples": count,
        "size_bytes": size,
        "reference_size_bytes": reference_size,
        "size_ratio": size / reference_size,
        "weights_bytes": weights_bytes(artefact_path),
        "reference_weights_bytes": weights_bytes(reference_path),
        "heads": head_entries,
        "latency_ms_p50": {"reference": latency_ms_p50(
                               latency_reference or reference, example),
                           "compressed": latency_ms_p50(artefact, example)},
        "max_metric_drop": float(max_metric_drop),
        "ok": all(d <= max_metric_drop for d in drops),
    }


def format_report(report):
    """A few printable lines of a parity report."""
    lines = [f"{report['artefact']}: {report['size_bytes']:,} bytes "
             f"({report['size_ratio']:.3f}x of float32 "
             f"{report['reference_size_bytes']:,}; weights "
             f"{report['weights_bytes']:,} against "
             f"{report['reference_weights_bytes']:,}); p50 latency at batch 1 "
             f"{report['latency_ms_p50']['compressed']:.3f} ms (float32 "
             f"{report['latency_ms_p50']['reference']:.3f} ms); "
             f"{report['num_examples']} examples"]
    for head, entry in report["heads"].items():
        line = (f"  {head}: max |error| {entry['max_abs_error']:.3g}, mean "
                f"{entry['mean_abs_error']:.3g}")
        if "top1_agreement" in entry:
            line += f", top-1 agreement {100 * entry['top1_agreement']:.2f}%"
        if "metric" in entry:
            unit = "%" if entry["metric"] == "accuracy" else ""
            line += (f", {entry['metric']} {entry['compressed']:.4g}{unit} "
                     f"(float32 {entry['reference']:.4g}{unit}; drop "
                     f"{entry['drop_points']:.2f})")
        lines.append(line)
    verdict = "within" if report["ok"] else "REFUSED: over"
    lines.append(f"  {verdict} export.max_metric_drop = "
                 f"{report['max_metric_drop']:g}")
    return "\n".join(lines)
