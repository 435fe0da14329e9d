"""Stand-alone verifier of a keras_mm SavedModel export.

Run as a script in a fresh interpreter (`python -I verify_savedmodel.py
PATH`): it imports only `tensorflow`, tensorflow-text's ops and the
standard library, so it sees the SavedModel the way TF Serving (C++, core
TF kernels + tensorflow-text kernels, no Python) does. `keras`, `tf_keras`
and `keras_mm` are hidden from the import system: a SavedModel that needs
them fails here. The `tensorflow_text` Python package imports Keras (its
Keras layers), so its op libraries (`tensorflow_text/python/ops/_*.so`,
the kernels TF Serving links) are loaded with `tf.load_op_library`
instead; only where they cannot be found is the package imported (the
report says which). It prints one JSON report on stdout and exits 1 on
any failure (2 on bad usage). Steps:

1. load the SavedModel and list its signatures (each must use the
   `tensorflow/serving/predict` method);
2. audit every op in the graph and in its function library: each must be
   registered by core TensorFlow or tensorflow-text (TF Serving links
   both), and PyFunc / EagerPyFunc (which need a Python interpreter) are
   refused;
3. run the golden requests stored at export time
   (`assets.extra/keras_mm.json`: raw bytes of real examples) through
   `serving_default` - as one batch and one example at a time - and
   through `serve_examples`, and compare them with the Keras model's
   outputs recorded at export (`atol`, default 1e-5);
4. send malformed requests (corrupt image bytes, wrong dtype, wrong rank,
   empty batch, an oversized WAV, ...) and check that each one is refused
   with an error (INVALID_ARGUMENT, or the signature's dtype/shape check),
   and that the model still answers the golden request afterwards;
5. with an `explain` signature (`export.explain`): the golden requests
   through it must give the golden predictions and the per-modality
   Shapley values computed in-process at export (`atol`), and the values
   of each example must sum to `full - empty` (efficiency, 1e-4);
6. with `embed_*` / `score` signatures (a contrastive head): the golden
   raw inputs of each signature's own modalities must give the embeddings
   and similarities the towers gave in-process at export (`atol`), and
   every embedding must be unit-norm.

A crash (the process dies) or a hang (the caller's timeout) is a failure
too: progress lines go to stderr (`verify: step ...`), so the parent
process (`keras_mm.serving.verify`) names the step it happened in.
"""

import base64
import glob
import importlib.abc
import importlib.util
import io
import json
import os
import sys
import wave

HIDDEN_PACKAGES = ("keras", "tf_keras", "keras_mm")
FORBIDDEN_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")
METADATA = os.path.join("assets.extra", "keras_mm.json")
PREDICT_METHOD = "tensorflow/serving/predict"


class _HidePackages(importlib.abc.MetaPathFinder):
    """Makes `HIDDEN_PACKAGES` look uninstalled (find_spec gives None)."""

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in HIDDEN_PACKAGES:
            return None
        for finder in self.finders:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, path, target) if find_spec else None
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self):
        for finder in self.finders:
            if hasattr(finder, "invalidate_caches"):
                finder.invalidate_caches()


def hide_keras():
    """Hides keras / tf_keras / keras_mm from every later import."""
    if not any(isinstance(f, _HidePackages) for f in sys.meta_path):
        sys.meta_path[:] = [_HidePackages(list(sys.meta_path))]


def load_text_ops(tf):
    """Registers tensorflow-text's ops; returns where they came from."""
    spec = importlib.util.find_spec("tensorflow_text")
    folders = list(spec.submodule_search_locations or []) if spec else []
    libraries = sorted(glob.glob(os.path.join(folders[0], "python", "ops",
                                              "_*.so"))) if folders else []
    if libraries:
        for library in libraries:
            tf.load_op_library(library)
        return [os.path.basename(lib) for lib in libraries]
    import tensorflow_text  # noqa: F401  (fallback: the whole package)
    return "tensorflow_text package"


def _progress(message):
    print(f"verify: {message}", file=sys.stderr, flush=True)


def decode_tensor(tf, spec):
    """Turns a JSON tensor record from keras_mm.json into a tf.Tensor."""
    shape = spec["shape"]
    if spec["dtype"] == "string":
        flat = [base64.b64decode(v) for v in spec["b64"]]
        return tf.reshape(tf.constant(flat, dtype=tf.string), shape)
    values = [float("nan") if v is None else v for v in spec["values"]]
    return tf.reshape(tf.constant(values, dtype=spec["dtype"]), shape)


def audit_ops(tf, path):
    """Returns `(ops, forbidden, unknown, text_ops)` of the SavedModel.

    `ops`: every op type in the meta graphs and their function libraries
    (calls to library functions excluded); `forbidden`: Python-callback
    ops; `unknown`: ops neither core TensorFlow nor tensorflow-text
    registers (custom ops TF Serving does not link); `text_ops`: the
    tensorflow-text ops used (TF Serving links them since 2.0).
    """
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    functions = set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        ops.update(node.op for node in graph.node)
        for function in graph.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    ops -= functions
    forbidden = sorted(ops & set(FORBIDDEN_OPS))
    unknown = sorted(op for op in ops - set(FORBIDDEN_OPS)
                     if op_def_registry.get(op) is None)
    core = set(dir(tf.raw_ops))
    text_ops = sorted(op for op in ops if op not in core
                      and op not in unknown and op not in forbidden)
    return sorted(ops), forbidden, unknown, text_ops


def compare_outputs(tf, outputs, expected, atol, where="", rows=None):
    problems = []
    for key, spec in expected.items():
        if key not in outputs:
            problems.append(f"{where}output {key!r} missing")
            continue
        got = outputs[key].numpy()
        want = decode_tensor(tf, spec).numpy()
        if rows is not None:
            want = want[rows]
        if got.shape != want.shape:
            problems.append(
                f"{where}output {key!r}: shape {got.shape} != {want.shape}")
        elif spec["dtype"] == "string" or spec["dtype"].startswith(
                ("int", "bool")):
            if got.tolist() != want.tolist():
                problems.append(f"{where}output {key!r}: {got.tolist()!r} "
                                f"!= {want.tolist()!r}")
        else:
            diff = float(abs(got.astype("float64")
                             - want.astype("float64")).max()) \
                if got.size else 0.0
            if not diff <= atol:
                problems.append(
                    f"{where}output {key!r}: max abs difference {diff:.3g} "
                    f"> atol {atol}")
    return problems


def wav_bytes(seconds, rate, channels=1):
    """A 16-bit PCM WAV of `seconds` of a quiet tone (stdlib `wave`)."""
    buf = io.BytesIO()
    frames = int(seconds * rate)
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * frames * channels)
    return buf.getvalue()


def malformed_requests(tf, metadata, golden):
    """Yields (case name, request dict) pairs that must each be refused."""
    inputs = metadata["inputs"]
    good = {k: decode_tensor(tf, v) for k, v in golden.items()}
    one = {k: v[:1] for k, v in good.items()}
    yield "empty batch", {k: v[:0] for k, v in good.items()}
    names = sorted(inputs)
    if len(names) > 1:
        yield "batch sizes differ between inputs", {
            **one, names[0]: tf.concat([one[names[0]]] * 2, 0)}
    for name in names:
        info = inputs[name]
        value = one[name]
        if info["dtype"] == "string":
            wrong = tf.zeros(tf.shape(value), tf.float32)
        else:
            wrong = tf.fill(tf.shape(value), "x")
        yield f"{name}: wrong dtype", {**one, name: wrong}
        yield f"{name}: wrong rank", {**one, name: tf.expand_dims(value, -1)}
        modality = info.get("modality")
        limit = info.get("max_bytes")
        if modality in ("image", "video") and info["dtype"] == "string":
            corrupt = tf.fill(tf.shape(value),
                              b"\x89PNG\r\n\x1a\n this is not an image")
            yield f"{name}: corrupt image bytes", {**one, name: corrupt}
        if modality == "audio":
            rate = int(info.get("sample_rate") or 16000)
            seconds = (limit or 1 << 22) / (2.0 * rate) + 1.0
            big = tf.constant([wav_bytes(seconds, rate)])
            yield f"{name}: oversized WAV", {**one, name: big}
            yield f"{name}: corrupt WAV bytes", {
                **one, name: tf.constant([b"RIFF\x10\x00\x00\x00WAVEjunk"])}
            yield f"{name}: WAV at another sample rate", {
                **one, name: tf.constant([wav_bytes(0.25, rate * 2)])}
        if limit and modality not in ("audio",) and \
                info["dtype"] == "string" and len(info["shape"]) == 1:
            big = tf.constant([b" " * (int(limit) + 1)])
            yield f"{name}: oversized value", {**one, name: big}


def tensor_requests(tf, fn, metadata):
    """`serve_tensors`' requests: `(base, cases)`. `base` is one example of
    zeros (presence 1, masks True), which the signature accepts; each case
    `(name, request)` must be refused: an empty batch, a wrong rank, dtype
    or static dimension, a NaN in a float input, an id past the vocabulary
    of an id input (`metadata["id_bounds"]`), a presence value that is not
    0 or 1."""
    specs = fn.structured_input_signature[1]
    base = {}
    for name, spec in specs.items():
        shape = [1] + [1 if d is None else d for d in spec.shape[1:]]
        if spec.dtype == tf.bool:
            base[name] = tf.ones(shape, tf.bool)
        elif name == "presence":
            base[name] = tf.ones(shape, spec.dtype)
        else:
            base[name] = tf.zeros(shape, spec.dtype)
    cases = [("empty batch", {k: v[:0] for k, v in base.items()})]
    bounds = metadata.get("id_bounds") or {}
    for name in sorted(specs):
        spec, value = specs[name], base[name]
        cases.append((f"{name}: wrong rank",
                      {**base, name: tf.expand_dims(value, -1)}))
        cases.append((f"{name}: wrong dtype",
                      {**base, name: tf.fill(tf.shape(value), "x")}))
        static = [i for i, d in enumerate(spec.shape) if i and d is not None]
        if static:
            shape = value.shape.as_list()
            shape[static[0]] += 1
            cases.append((f"{name}: wrong dimension {static[0]}",
                          {**base, name: tf.zeros(shape, spec.dtype)}))
        if spec.dtype.is_floating:
            flat = tf.reshape(value, [-1])
            nan = tf.tensor_scatter_nd_update(
                flat, [[0]], tf.constant([float("nan")], spec.dtype))
            cases.append((f"{name}: NaN", {**base, name: tf.reshape(
                nan, tf.shape(value))}))
        if name in bounds and spec.dtype.is_integer:
            cases.append((f"{name}: id past the vocabulary", {
                **base, name: tf.fill(tf.shape(value), tf.constant(
                    max(bounds[name]) if isinstance(bounds[name], list)
                    else bounds[name], spec.dtype))}))
        if name == "presence":
            cases.append(("presence: a value other than 0 or 1",
                          {**base, name: tf.fill(tf.shape(value), tf.constant(
                              0.5, spec.dtype))}))
    return base, cases


def error_summary(error, limit=300):
    """The informative line of a TensorFlow error message."""
    message = (getattr(error, "message", None) or str(error)).strip()
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    noise = ("Graph execution error", "Detected at node",
             "<stack traces unavailable>", "[[", "File ", "Traceback")
    useful = [line for line in lines if not line.startswith(noise)]
    for line in useful:
        if line.startswith("assertion failed:"):
            return line[:limit]
    return (useful or lines or [""])[0][:limit]


def _run_malformed(tf, serve, requests, signature="serving_default"):
    cases = []
    expected_errors = (tf.errors.InvalidArgumentError, TypeError, ValueError)
    for case, request in requests:
        if signature != "serving_default":
            case = f"{signature}: {case}"
        _progress(f"malformed request: {case}")
        try:
            serve(**request)
            cases.append({"case": case, "ok": False,
                          "error": "the request was accepted"})
        except expected_errors as e:
            cases.append({"case": case, "ok": True,
                          "error": f"{type(e).__name__}: {error_summary(e)}"})
        except Exception as e:  # another error class: not INVALID_ARGUMENT
            cases.append({"case": case, "ok": False,
                          "error": f"{type(e).__name__} (expected "
                                   f"INVALID_ARGUMENT): {str(e)[:300]}"})
    return cases


def verify(path):
    hide_keras()
    _progress("import tensorflow")
    import tensorflow as tf

    report = {"path": os.path.abspath(path), "ok": False, "checks": {},
              "tensorflow": tf.__version__}
    checks = report["checks"]
    report["text_ops_from"] = load_text_ops(tf)

    _progress("op audit")
    try:
        ops, forbidden, unknown, text_ops = audit_ops(tf, path)
        checks["op_audit"] = {"ok": not forbidden and not unknown,
                              "num_ops": len(ops), "forbidden": forbidden,
                              "unknown": unknown, "text_ops": text_ops}
    except Exception as e:  # an unreadable saved_model.pb
        checks["op_audit"] = {"ok": False, "error": _describe(e)}

    _progress("load")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        checks["load"] = {"ok": False, "error": _describe(e)}
        loaded = None
    signatures = {}
    if loaded is not None:
        for key, fn in loaded.signatures.items():
            args = fn.structured_input_signature[1]
            signatures[key] = {
                "inputs": {k: [v.dtype.name, v.shape.as_list()]
                           for k, v in sorted(args.items())},
                "outputs": sorted(fn.structured_outputs),
            }
        methods = _signature_methods(path)
        wrong = {k: m for k, m in methods.items() if m != PREDICT_METHOD}
        checks["load"] = {
            "ok": "serving_default" in signatures and not wrong,
            "methods": methods}
        if wrong:
            checks["load"]["error"] = (
                f"signatures {sorted(wrong)} do not use {PREDICT_METHOD}")
    report["signatures"] = signatures

    meta_path = os.path.join(path, METADATA)
    if not os.path.exists(meta_path) or "serving_default" not in signatures:
        checks["golden"] = {"ok": False,
                            "error": f"{METADATA} or a loadable "
                                     "serving_default is missing"}
    else:
        with open(meta_path) as f:
            metadata = json.load(f)
        try:
            _check_golden(tf, loaded, metadata, checks)
        except Exception as e:  # a request that fails outright
            checks.setdefault("golden", {"ok": False})
            checks["golden"].update(ok=False, error=_describe(e))
        if "golden" in checks and "error" in checks["golden"]:
            checks["malformed"] = {"ok": False,
                                   "error": "not run: the golden requests "
                                            "failed"}
        if "embed" in metadata:
            try:
                _check_embed(tf, loaded, metadata, checks)
            except Exception as e:
                checks["embed"] = {"ok": False, "error": _describe(e)}
        if "explain" in metadata or "explain" in signatures:
            try:
                _check_explain(tf, loaded, metadata, checks)
            except Exception as e:
                checks["explain"] = {"ok": False, "error": _describe(e)}
    report["imported_keras"] = sorted(
        m for m in sys.modules if m.partition(".")[0] in HIDDEN_PACKAGES)
    checks["no_keras"] = {"ok": not report["imported_keras"]}
    report["ok"] = all(c["ok"] for c in checks.values())
    return report


def _describe(error):
    return f"{type(error).__name__}: {error_summary(error, limit=1000)}"


def _check_golden(tf, loaded, metadata, checks):
    signatures = loaded.signatures
    serve = signatures["serving_default"]
    golden = metadata["golden"]
    atol = float(metadata.get("atol", 1e-5))
    inputs = {k: decode_tensor(tf, v) for k, v in golden["inputs"].items()}
    n = int(golden["num_examples"])
    checks["golden"] = {"ok": False, "examples": n, "atol": atol}
    _progress("golden requests (batch)")
    problems = compare_outputs(tf, serve(**inputs), golden["outputs"], atol,
                               "batch: ")
    for i in range(n):
        _progress(f"golden request {i} (alone)")
        outputs = serve(**{k: v[i:i + 1] for k, v in inputs.items()})
        problems += compare_outputs(tf, outputs, golden["outputs"], atol,
                                    f"example {i}: ", rows=slice(i, i + 1))
    if golden.get("examples") and "serve_examples" in signatures:
        _progress("golden requests (serve_examples)")
        examples = tf.constant([base64.b64decode(s)
                                for s in golden["examples"]])
        outputs = signatures["serve_examples"](examples=examples)
        problems += compare_outputs(tf, outputs, golden["outputs"], atol,
                                    "serve_examples: ")
    checks["golden"].update(ok=not problems, problems=problems)

    cases = _run_malformed(tf, serve, malformed_requests(
        tf, metadata, golden["inputs"]))
    refused = []
    if "serve_tensors" in signatures:
        tensors = signatures["serve_tensors"]
        base, requests = tensor_requests(tf, tensors, metadata)
        _progress("serve_tensors: a request of zeros")
        try:
            tensors(**base)
        except tf.errors.InvalidArgumentError as e:
            refused.append("serve_tensors refused a valid request of zeros "
                           f"(presence 1, masks True): {error_summary(e)}")
        cases += _run_malformed(tf, tensors, requests, "serve_tensors")
    _progress("golden request after the malformed ones")
    again = compare_outputs(tf, serve(**inputs), golden["outputs"], atol,
                            "after malformed requests: ")
    again += refused
    checks["malformed"] = {"ok": all(c["ok"] for c in cases) and not again,
                           "cases": cases, "problems": again}


def _check_explain(tf, loaded, metadata, checks):
    info = metadata.get("explain")
    if info is None or "explain" not in loaded.signatures:
        checks["explain"] = {
            "ok": False, "error": "the metadata and the signatures disagree "
                                  "on the `explain` signature"}
        return
    _progress("explain: golden requests")
    golden = metadata["golden"]
    atol = float(metadata.get("atol", 1e-5))
    inputs = {k: decode_tensor(tf, v) for k, v in golden["inputs"].items()}
    outputs = loaded.signatures["explain"](**inputs)
    problems = compare_outputs(tf, outputs, golden["outputs"], atol,
                               "explain: ")
    problems += compare_outputs(tf, outputs, info["golden"], atol,
                                "explain: ")
    for head in info["heads"]:
        if not all(f"{head}{s}" in outputs
                   for s in ("_shapley", "_full", "_empty")):
            continue
        gap = outputs[f"{head}_shapley"].numpy().sum(axis=-1) - (
            outputs[f"{head}_full"].numpy() - outputs[f"{head}_empty"].numpy())
        worst = float(abs(gap).max()) if gap.size else 0.0
        if not worst <= 1e-4:
            problems.append(f"explain: {head}_shapley sums differ from "
                            f"full - empty by {worst:.3g} (> 1e-4)")
    checks["explain"] = {"ok": not problems, "problems": problems,
                         "presence_order": info.get("presence_order")}


def _check_embed(tf, loaded, metadata, checks):
    """Each `embed_*` / `score*` signature on the golden raw inputs of its
    own modalities reproduces the in-process towers' outputs; an
    embedding is unit-norm."""
    golden = metadata["golden"]
    atol = float(metadata.get("atol", 1e-5))
    inputs = {k: decode_tensor(tf, v) for k, v in golden["inputs"].items()}
    problems = []
    for name, info in metadata["embed"].items():
        _progress(f"{name}: golden requests")
        if name not in loaded.signatures:
            problems.append(f"{name}: no such signature")
            continue
        outputs = loaded.signatures[name](
            **{k: inputs[k] for k in info["inputs"]})
        problems += compare_outputs(tf, outputs, info["golden"], atol,
                                    f"{name}: ")
        if "embedding" in outputs:
            norms = tf.norm(outputs["embedding"], axis=-1).numpy()
            if norms.size and abs(norms - 1).max() > 1e-4:
                problems.append(f"{name}: embeddings are not unit-norm "
                                f"(norms {norms.min():.4g}..{norms.max():.4g})")
    checks["embed"] = {"ok": not problems, "problems": problems,
                       "signatures": sorted(metadata["embed"])}


def _signature_methods(path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    methods = {}
    for meta_graph in proto.meta_graphs:
        for key, signature in meta_graph.signature_def.items():
            if not key.startswith("__"):
                methods[key] = signature.method_name
    return methods


def main(argv):
    if len(argv) != 2:
        print("usage: verify_savedmodel.py SAVEDMODEL_DIR", file=sys.stderr)
        return 2
    try:
        report = verify(argv[1])
    except Exception as e:  # the report must say what broke
        report = {"path": argv[1], "ok": False,
                  "error": f"{type(e).__name__}: {str(e)[:2000]}"}
    print(json.dumps(report, indent=2, sort_keys=True), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
