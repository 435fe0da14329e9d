"""Stand-alone verifier of a keras_mm SavedModel export.

Run as a script in a fresh interpreter (`python -I verify_savedmodel.py
PATH`): it imports only `tensorflow`, `tensorflow_text` and the standard
library - neither keras nor keras_mm - so it sees the SavedModel the way TF
Serving does. It prints one JSON report on stdout and exits non-zero on any
failure. Steps:

1. load the SavedModel and list its signatures;
2. audit every op in the graph and its function library: each must be
   registered by core TensorFlow or tensorflow-text, and PyFunc /
   EagerPyFunc are refused;
3. run the golden requests stored at export time
   (`assets.extra/keras_mm.json`) and compare them with the Keras outputs
   recorded then;
4. send malformed requests (corrupt image bytes, wrong dtype, wrong rank,
   empty batch, oversized WAV) and check that each gives an error.

Progress lines go to stderr (`verify: step ...`), so a parent process can
tell which request was running if this process crashes or hangs.
"""

import base64
import io
import json
import os
import sys
import wave

FORBIDDEN_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
METADATA = os.path.join("assets.extra", "keras_mm.json")


def _progress(message):
    print(f"verify: {message}", file=sys.stderr, flush=True)


def decode_tensor(tf, spec):
    """Turns a JSON tensor record from keras_mm.json into a tf.Tensor."""
    shape = spec["shape"]
    if spec["dtype"] == "string":
        flat = [base64.b64decode(v) for v in spec["b64"]]
        return tf.reshape(tf.constant(flat, dtype=tf.string), shape)
    return tf.reshape(tf.constant(spec["values"], dtype=spec["dtype"]), shape)


def audit_ops(tf, path):
    """Lists the ops of the SavedModel that stock TF Serving cannot run."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        ops.update(node.op for node in graph.node)
        functions = {f.signature.name for f in graph.library.function}
        for function in graph.library.function:
            ops.update(node.op for node in function.node_def)
    ops -= functions  # calls to library functions are not ops
    forbidden = sorted(ops & FORBIDDEN_OPS)
    unknown = sorted(op for op in ops - FORBIDDEN_OPS
                     if op_def_registry.get(op) is None)
    return sorted(ops), forbidden, unknown


def compare_outputs(tf, outputs, expected, atol):
    problems = []
    for key, spec in expected.items():
        if key not in outputs:
            problems.append(f"output {key!r} missing")
            continue
        got = outputs[key].numpy()
        want = decode_tensor(tf, spec).numpy()
        if got.shape != want.shape:
            problems.append(
                f"output {key!r}: shape {got.shape} != {want.shape}")
        elif spec["dtype"] == "string":
            if got.tolist() != want.tolist():
                problems.append(f"output {key!r}: {got!r} != {want!r}")
        else:
            diff = float(abs(got.astype("float64")
                             - want.astype("float64")).max()) \
                if got.size else 0.0
            if diff > atol:
                problems.append(
                    f"output {key!r}: max abs difference {diff:.3g} > "
                    f"atol {atol}")
    return problems


def _wav_bytes(seconds, rate):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x01" * int(seconds * rate))
    return buf.getvalue()


def malformed_requests(tf, metadata, golden):
    """Yields (case name, request dict) pairs that must each fail."""
    inputs = metadata["inputs"]
    good = {k: decode_tensor(tf, v) for k, v in golden.items()}
    one = {k: v[:1] for k, v in good.items()}
    yield "empty batch", {k: v[:0] for k, v in good.items()}
    for name, info in inputs.items():
        value = one[name]
        if info["dtype"] == "string":
            wrong = tf.zeros(tf.shape(value), tf.float32)
        else:
            wrong = tf.fill(tf.shape(value), "x")
        yield f"{name}: wrong dtype", {**one, name: wrong}
        yield f"{name}: wrong rank", {**one, name: tf.expand_dims(value, -1)}
        modality = info.get("modality")
        if modality == "image":
            corrupt = tf.constant([b"\x89PNG\r\n\x1a\n this is not an image"])
            yield f"{name}: corrupt image bytes", {**one, name: corrupt}
        if modality == "audio":
            limit = info.get("max_bytes")
            rate = info.get("sample_rate", 16000)
            seconds = (limit or 1 << 22) / (2.0 * rate) + 1.0
            big = tf.constant([_wav_bytes(seconds, rate)])
            yield f"{name}: oversized WAV", {**one, name: big}
            yield f"{name}: corrupt WAV bytes", {
                **one, name: tf.constant([b"RIFF\x10\x00\x00\x00WAVEjunk"])}


def verify(path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the text ops)

    report = {"path": os.path.abspath(path), "ok": False, "checks": {}}
    checks = report["checks"]
    _progress("load")
    loaded = tf.saved_model.load(path)
    signatures = {}
    for key, fn in loaded.signatures.items():
        args = fn.structured_input_signature[1]
        signatures[key] = {
            "inputs": {k: [str(v.dtype.name), v.shape.as_list()]
                       for k, v in args.items()},
            "outputs": sorted(fn.structured_outputs),
        }
    report["signatures"] = signatures
    checks["load"] = {"ok": "serving_default" in signatures}

    _progress("op audit")
    ops, forbidden, unknown = audit_ops(tf, path)
    checks["op_audit"] = {"ok": not forbidden and not unknown,
                          "num_ops": len(ops), "forbidden": forbidden,
                          "unknown": unknown}

    meta_path = os.path.join(path, METADATA)
    if not os.path.exists(meta_path):
        checks["golden"] = {"ok": False,
                            "error": f"{METADATA} is missing from the export"}
        checks["malformed"] = {"ok": False, "error": "no metadata"}
    else:
        with open(meta_path) as f:
            metadata = json.load(f)
        serve = loaded.signatures["serving_default"]
        golden = metadata["golden"]
        _progress("golden requests")
        outputs = serve(**{k: decode_tensor(tf, v)
                           for k, v in golden["inputs"].items()})
        problems = compare_outputs(tf, outputs, golden["outputs"],
                                   metadata.get("atol", 1e-5))
        checks["golden"] = {"ok": not problems, "problems": problems,
                            "examples": golden.get("num_examples")}
        cases = []
        for case, request in malformed_requests(tf, metadata,
                                                golden["inputs"]):
            _progress(f"malformed request: {case}")
            try:
                serve(**request)
                cases.append({"case": case, "ok": False,
                              "error": "request was accepted"})
            except (tf.errors.InvalidArgumentError, TypeError,
                    ValueError) as e:
                message = str(e).strip().splitlines()
                cases.append({"case": case, "ok": True,
                              "error": type(e).__name__ + ": "
                              + (message[0][:300] if message else "")})
        checks["malformed"] = {"ok": all(c["ok"] for c in cases),
                               "cases": cases}
    report["imported_keras"] = any(
        m == "keras" or m.startswith(("keras.", "keras_mm"))
        for m in sys.modules)
    checks["no_keras"] = {"ok": not report["imported_keras"]}
    report["ok"] = all(c["ok"] for c in checks.values())
    return report


def main(argv):
    if len(argv) != 2:
        print("usage: verify_savedmodel.py SAVEDMODEL_DIR", file=sys.stderr)
        return 2
    try:
        report = verify(argv[1])
    except Exception as e:  # the report must say what broke
        report = {"path": argv[1], "ok": False,
                  "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
