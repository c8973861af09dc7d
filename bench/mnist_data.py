"""MNIST on the host for the end-to-end benchmarks, from ``$XPNN_DATA_DIR/mnist``.

Uses ``xpnn.data.load_mnist`` (checksummed, never downloading here); falls back
to reading the four IDX ``.gz`` files with gzip + NumPy if that loader is missing.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def mnist_dir() -> Path | None:
    root = os.environ.get("XPNN_DATA_DIR")
    if not root:
        return None
    folder = Path(root).expanduser() / "mnist"
    return folder if all((folder / f).is_file() for f in FILES) else None


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_host_mnist():
    """(x_train, t_train, x_test, t_test): float64 (N, 784) in [0, 1], int64 labels;
    None when the files are not there."""
    folder = mnist_dir()
    if folder is None:
        return None
    try:
        from xpnn.data import load_mnist
    except ImportError:
        load_mnist = None
    if load_mnist is not None:
        (xtr, ttr), (xte, tte) = load_mnist(path=folder, download=False, backend="numpy",
                                            dtype="float64")
        return (np.asarray(xtr), np.asarray(ttr, dtype=np.int64),
                np.asarray(xte), np.asarray(tte, dtype=np.int64))
    arrays = [_read_idx(folder / f) for f in FILES]
    xtr = arrays[0].reshape(len(arrays[0]), 784) / 255.0
    xte = arrays[2].reshape(len(arrays[2]), 784) / 255.0
    return xtr, arrays[1].astype(np.int64), xte, arrays[3].astype(np.int64)
