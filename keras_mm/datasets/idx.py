"""Reader of the IDX format of the MNIST files (optionally gzip-compressed).

IDX: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each
dimension as a big-endian uint32, then the values (big-endian).

Example:

>>> images, labels = load_mnist("../shared/data/mnist")   # doctest: +SKIP
>>> images.shape, labels.shape
((10000, 28, 28), (10000,))
"""

import gzip
import os
import struct

import numpy as np

from keras_mm.errors import DataError

_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """Reads an IDX file (`.gz` is decompressed) into a NumPy array.

    Raises:
        DataError: naming the file when its header or size is wrong.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError("file not found; check the path", file=path,
                        reason="missing_file") from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read ({e})", file=path) from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError("not an IDX file (bad magic number)", file=path,
                        reason="bad_header")
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"IDX shape {shape} needs {expected} data bytes, the "
                        f"file has {len(data) - header}", file=path,
                        reason="bad_size")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise DataError(f"neither {stem}.gz nor {stem} is in this folder",
                    file=folder, reason="missing_file")


def load_mnist(mnist_dir, split="t10k"):
    """Loads MNIST images `[N, 28, 28]` uint8 and labels `[N]` uint8.

    Args:
        mnist_dir: folder with `{split}-images-idx3-ubyte[.gz]` and
            `{split}-labels-idx1-ubyte[.gz]`.
        split: `"t10k"` (test, the one in ../shared/data) or `"train"`.
    """
    images_path = _find(mnist_dir, f"{split}-images-idx3-ubyte")
    labels_path = _find(mnist_dir, f"{split}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"expected images [N, H, W] and labels [N], got "
                        f"{images.shape} and {labels.shape}", file=mnist_dir)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images.shape[0]} images but {labels.shape[0]} "
                        "labels", file=mnist_dir)
    return images, labels
