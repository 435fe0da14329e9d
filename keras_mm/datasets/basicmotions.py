"""BasicMotions (UEA/UCR archive): accelerometer and gyroscope as two inputs.

Reads `BasicMotions_TRAIN.ts` and `BasicMotions_TEST.ts` (40 + 40 examples,
6 dimensions x 100 steps at 10 Hz, classes Standing, Running, Walking,
Badminton) with `keras_mm.data.ts_format.read_ts` and writes each
example as two sensor arrays `[100, 3]`:

- `accelerometer`: dimensions 0-2 (3-axis accelerometer);
- `gyroscope`: dimensions 3-5 (3-axis gyroscope).

Dimension order: the `.ts` header does not name its dimensions; the archive
describes the data as "3D accelerometer and 3D gyroscope", in that order,
and the values agree: dimensions 0-2 have class-dependent non-zero means
(e.g. about 4.8 on dimension 0 when running, a linear acceleration), while
dimensions 3-5 have means near 0 in every class, as angular velocities of a
swinging wrist do (`test_basicmotions_dimension_order` checks this).

Files (`file_format="npy"`, the default): `.npy` arrays, float32
little-endian (`<f4`), shape `[100, 3]` (time first, channels last), written
with `np.save` (NumPy format version 1.0, a 128-byte header). With
`file_format="csv"`: headerless CSV, one row per time step, 3
comma-separated values (`%.6f`, the precision of the `.ts` file).

Output (`out_dir`):
```
train.csv, test.csv     columns: accelerometer, gyroscope, label, ts_row
basicmotions.json       sizes, classes, channels, file format
train/accelerometer/000.npy, train/gyroscope/000.npy, ...
```
`label` is the class name; `ts_row` the example's row in the `.ts` file
(1 = first). Paths are relative to the manifest's folder. The build is
deterministic: the same input gives byte-identical files.

Example:

>>> info = build_basicmotions("../shared/data/basicmotions",
...                           "data/basicmotions")       # doctest: +SKIP
>>> info["sizes"]                                        # doctest: +SKIP
{'train': 40, 'test': 40}
"""

import argparse
import os
import sys

import numpy as np

from keras_mm.datasets import _io
from keras_mm.data.ts_format import read_ts
from keras_mm.errors import DataError, KerasMMError

INPUTS = (("accelerometer", (0, 1, 2)), ("gyroscope", (3, 4, 5)))
FILE_FORMATS = ("npy", "csv")
COLUMNS = ("accelerometer", "gyroscope", "label", "ts_row")


def _write_array(path, array, file_format):
    array = np.ascontiguousarray(array, dtype="<f4")
    if file_format == "npy":
        with open(path, "wb") as f:
            np.save(f, array, allow_pickle=False)
    else:
        np.savetxt(path, array, fmt="%.6f", delimiter=",", newline="\n")


def build_basicmotions(ts_dir, out_dir, file_format="npy", overwrite=False,
                       problem="BasicMotions"):
    """Builds the BasicMotions manifests and sensor arrays.

    Args:
        ts_dir: folder with `{problem}_TRAIN.ts` and `{problem}_TEST.ts`.
        out_dir: output folder; written atomically (temporary sibling folder
            renamed into place at the end).
        file_format: `"npy"` (float32 little-endian) or `"csv"`.
        overwrite: replace an existing non-empty `out_dir`.
        problem: the file-name stem of the `.ts` files.

    Returns:
        The dict written to `basicmotions.json`, plus `"out_dir"`.
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format={file_format!r} is not one of "
                         f"{', '.join(FILE_FORMATS)}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    _io.check_output_dir(out_dir, overwrite)
    data = {}
    for split in ("train", "test"):
        path = os.path.join(os.fspath(ts_dir), f"{problem}_{split.upper()}.ts")
        ts = read_ts(path)
        if ts.num_channels != 6:
            raise DataError(f"expected 6 dimensions (3 accelerometer + 3 "
                            f"gyroscope), got {ts.num_channels}", file=path,
                            reason="bad_shape")
        if ts.labels is None:
            raise DataError("the file has no class labels (@classLabel "
                            "false)", file=path, reason="bad_label")
        data[split] = ts
    class_names = data["train"].class_labels
    info = {"name": "basicmotions", "problem": problem,
            "sizes": {}, "class_names": list(class_names),
            "num_classes": len(class_names),
            "inputs": {name: {"dimensions": list(dims), "channels": 3}
                       for name, dims in INPUTS},
            "file_format": file_format,
            "dtype": "float32 little-endian" if file_format == "npy"
            else "CSV %.6f, no header",
            "columns": list(COLUMNS),
            "source": os.path.abspath(os.fspath(ts_dir))}
    with _io.staging_dir(out_dir, overwrite=overwrite) as tmp:
        for split, ts in data.items():
            x = ts.to_numpy(np.float32)
            info.setdefault("series_length", int(x.shape[1]))
            width = max(3, len(str(len(ts) - 1)))
            rows = []
            for name, _ in INPUTS:
                os.makedirs(os.path.join(tmp, split, name))
            for i in range(len(ts)):
                row = {"label": ts.labels[i], "ts_row": i + 1}
                for name, dims in INPUTS:
                    rel = f"{split}/{name}/{i:0{width}d}.{file_format}"
                    _write_array(os.path.join(tmp, rel), x[i][:, list(dims)],
                                 file_format)
                    row[name] = rel
                rows.append(row)
            _io.write_manifest(os.path.join(tmp, f"{split}.csv"), COLUMNS,
                               rows)
            info["sizes"][split] = len(rows)
        _io.write_json(os.path.join(tmp, "basicmotions.json"), info)
    info["out_dir"] = out_dir
    return info


def main(argv=None):
    """`python -m keras_mm.datasets.basicmotions --ts DIR --out DIR`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ts", required=True, help="folder of the .ts files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=FILE_FORMATS, default="npy")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        info = build_basicmotions(a.ts, a.out, file_format=a.format,
                                  overwrite=a.overwrite)
    except (KerasMMError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"BasicMotions: {info['sizes']['train']} train / "
          f"{info['sizes']['test']} test examples in {info['out_dir']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
