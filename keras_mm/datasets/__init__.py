"""Data sets: the embedded demo set and the AV-MNIST / BasicMotions builders.

Pure Python / NumPy / Pillow / `wave`, except `read_ts` / `parse_ts` /
`TsData` and the BasicMotions builder: they come from
`keras_mm.data.ts_format`, and importing `keras_mm.data` loads TensorFlow.

- `make_demo_dataset` / `ensure_demo_dataset`: the small deterministic demo
  set (PNG, WAV, text, sensor CSV; only fusion classifies it well).
- `build_av_mnist`: MNIST images + FSDD spoken digits, `clean` or `degraded`.
- `build_three_digits` / `three_digits_recipe`: MNIST image + FSDD spoken
  digit + generated RGB JPEG photo per example, `clean` or `degraded`.
- `build_basicmotions`: BasicMotions `.ts` files -> accelerometer and
  gyroscope arrays + manifests.
- `read_ts` / `parse_ts` / `TsData`: THE `.ts` (sktime/UEA) reader,
  re-exported from `keras_mm.data.ts_format`.
- `read_idx` / `load_mnist`: the MNIST IDX reader.
"""

import importlib

# Lazy exports: `python -m keras_mm.datasets.<builder>` then runs cleanly.
_EXPORTS = {
    "build_av_mnist": "av_mnist",
    "build_basicmotions": "basicmotions",
    "build_three_digits": "three_digits",
    "three_digits_recipe": "three_digits",
    "ensure_demo_dataset": "demo",
    "make_demo_dataset": "demo",
    "load_mnist": "idx",
    "read_idx": "idx",
    "TsData": "keras_mm.data.ts_format",
    "parse_ts": "keras_mm.data.ts_format",
    "read_ts": "keras_mm.data.ts_format",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        where = _EXPORTS[name]
        if "." not in where:
            where = f"keras_mm.datasets.{where}"
        module = importlib.import_module(where)
        return getattr(module, name)
    raise AttributeError(f"module 'keras_mm.datasets' has no attribute "
                         f"{name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
