"""The fresh-process half of the pretrained preprocessors' train == serve
tests: `serve` exported with `keras.export.ExportArchive` (the model and the
preprocessor's resources tracked) and called on raw bytes in a new Python
that imports only tensorflow and tensorflow_text."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

EXPORT_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401
    folder = sys.argv[2]
    raws = [open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))]
    loaded = tf.saved_model.load(sys.argv[1])
    out = loaded.serve(tf.constant(raws, tf.string))
    np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})
    print("MODULES " + json.dumps(sorted(
        m for m in sys.modules if m.split(".")[0] in
        ("keras", "keras_hub", "keras_mm", "tf_keras"))))
""")


def serve_in_fresh_process(model, resources, serve, raws, tmp_path, suffix):
    """`serve` (a function of a string batch) exported as the endpoint
    `serve` and called in a fresh process on `raws` (written as
    `NNN<suffix>` files); returns its outputs (an `np.load` of them).
    Asserts the process loaded neither keras_hub nor keras_mm."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for resource in resources:
        archive.track(resource)
    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec([None], tf.string)])
    export = str(tmp_path / "export")
    archive.write_out(export, verbose=False)
    folder = tmp_path / "raws"
    folder.mkdir()
    for i, raw in enumerate(raws):
        (folder / f"{i:03d}{suffix}").write_bytes(raw)
    result = tmp_path / "out.npz"
    run_fresh_script(EXPORT_SCRIPT, export, folder, result, timeout=180)
    return np.load(result)


def run_fresh_script(script, *args, timeout=240):
    """Runs `script` (which ends by printing `MODULES <json list>`, as
    `EXPORT_SCRIPT` does) in a new Python with `args`; asserts it exited
    0 and imported neither keras_hub nor keras_mm. Returns its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = json.loads(proc.stdout.split("MODULES ")[-1])
    assert not [m for m in modules if m.split(".")[0] in
                ("keras_hub", "keras_mm")], modules
    return proc.stdout
