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
import sys

from keras_mm.datasets.ts_dataset import FILE_FORMATS, build_ts_dataset
from keras_mm.errors import KerasMMError

INPUTS = (("accelerometer", (0, 1, 2)), ("gyroscope", (3, 4, 5)))
COLUMNS = ("accelerometer", "gyroscope", "label", "ts_row")


def build_basicmotions(ts_dir, out_dir, file_format="npy", overwrite=False,
                       problem="BasicMotions"):
    """Builds the BasicMotions manifests and sensor arrays.

    A thin case of `keras_mm.datasets.ts_dataset.build_ts_dataset` (the
    `keras-mm data ts` converter): 6 dimensions required, split into the
    `accelerometer` and `gyroscope` inputs.

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
    return build_ts_dataset(
        ts_dir, out_dir, problem=problem,
        inputs={name: list(dims) for name, dims in INPUTS},
        file_format=file_format, overwrite=overwrite,
        info_file="basicmotions.json", name="basicmotions", channels=6)


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
