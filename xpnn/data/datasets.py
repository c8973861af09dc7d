"""Datasets for the examples: MNIST, Fashion-MNIST, Sign Language Digits and toy data.

The code lives in one module per source, and this module gathers their public names
(``from xpnn.data.datasets import load_mnist`` keeps working):

* :mod:`xpnn.data.idx`: MNIST and Fashion-MNIST (IDX files; downloads with pooch);
* :mod:`xpnn.data.images`: Sign Language Digits (JPEGs in a local folder, Pillow);
* :mod:`xpnn.data.toy`: moons, spirals and the car-prices regression demo;
* :mod:`xpnn.data.split`: ``train_test_split``.

Everything reads and decodes on the host with NumPy (and Pillow for JPEGs); only the
finished arrays are moved to the chosen backend/device with
:func:`xpnn.backend.asarray`. Images come back as floats (``dtype``, default
``"float32"``), class labels as ``int64`` of shape ``(N,)`` (or one-hot floats).

Errors about the data itself (missing, corrupt, malformed, oversized files,
decompression-bomb images) are :class:`DatasetError`, a :class:`ValueError`; bad
arguments are ValueErrors naming the parameter.
"""

from __future__ import annotations

# The limits (KNOWN_SIZES, MAX_IDX_BYTES, MAX_SIGN_*) are read by the loaders from their
# own modules: change them there (``xpnn.data.images.MAX_SIGN_BYTES = ...``), not here.
from ._common import DatasetError, DatasetNotFoundError
from .idx import (  # noqa: F401 - KNOWN_SIZES, MAX_IDX_BYTES, _read_idx: for reading
    FASHION_MNIST_MIRRORS,
    FASHION_MNIST_SHA256,
    KNOWN_SIZES,
    MAX_IDX_BYTES,
    MNIST_MIRRORS,
    MNIST_SHA256,
    _read_idx,
    load_fashion_mnist,
    load_mnist,
)
from .images import (  # noqa: F401
    MAX_SIGN_BYTES,
    MAX_SIGN_SIZE,
    clear_cache,
    load_sign_language_digits,
)
from .split import train_test_split
from .toy import load_car_prices, make_moons, make_spirals

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "MNIST_MIRRORS",
    "FASHION_MNIST_MIRRORS",
    "MNIST_SHA256",
    "FASHION_MNIST_SHA256",
    "load_mnist",
    "load_fashion_mnist",
    "load_sign_language_digits",
    "make_moons",
    "make_spirals",
    "load_car_prices",
    "train_test_split",
    "clear_cache",
]
