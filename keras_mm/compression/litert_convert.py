"""The LiteRT converter as a child process (`keras_mm.compression.litert`
runs it so): `python -m keras_mm.compression.litert_convert SAVED_MODEL
MODE OUT [CALIBRATION.npz]`.

MODE: `none`, `float16`, `dynamic` or `int8`; CALIBRATION holds the int8
representative batches as `<batch index>/<input name>` arrays. Exit 0
with OUT written, else the converter's error on stderr.
"""

import sys


def _batches(path):
    import numpy as np

    data = np.load(path)
    batches = {}
    for key in data.files:
        index, name = key.split("/", 1)
        batches.setdefault(int(index), {})[name] = data[key]
    return [batches[i] for i in sorted(batches)]


def convert(saved_model, mode, out, calibration=None):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if mode != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        batches = _batches(calibration)
        converter.representative_dataset = lambda: iter(batches)
    blob = converter.convert()
    with open(out, "wb") as f:
        f.write(blob)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    convert(*argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
