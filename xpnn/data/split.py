"""``train_test_split``: a seeded (optionally stratified) shuffle split of host arrays."""

from __future__ import annotations

import math
import numbers

import array_api_compat
import numpy as np

from ._common import _rng

__all__ = ["train_test_split"]



def _as_host(name, a):
    if isinstance(a, np.ndarray):
        return a
    if array_api_compat.is_array_api_obj(a):
        raise TypeError(
            f"train_test_split works on host NumPy arrays; {name} is a "
            f"{type(a).__module__}.{type(a).__name__}. Split before moving the data to a "
            f"backend, or copy it with xpnn.backend.to_numpy first."
        )
    return np.asarray(a)


def train_test_split(x, t, test_size=0.25, seed=None, stratify=False):
    """Shuffle and split host NumPy arrays: ``(x_train, t_train), (x_test, t_test)``.

    Host-side only (NumPy in, NumPy out): split first, then move the parts to a backend.
    ``test_size`` is a fraction in (0, 1) (the test part gets ``ceil(test_size * N)``
    rows) or a row count in [1, N-1]. ``stratify=True`` keeps each class's share of
    ``t`` (labels of shape ``(N,)``) the same in both parts. Both parts are shuffled;
    ``seed`` (None, an int or a ``numpy.random.Generator``) makes it repeatable.
    """
    x = _as_host("x", x)
    t = _as_host("t", t)
    if x.ndim == 0 or t.ndim == 0:
        raise ValueError("x and t must be arrays with a first (sample) axis, not scalars")
    n = len(x)
    if len(t) != n:
        raise ValueError(f"x and t have different lengths: {n} and {len(t)}")
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got {n}")
    if isinstance(test_size, bool):
        raise ValueError(f"test_size must be a fraction in (0, 1) or a count, not {test_size!r}")
    if isinstance(test_size, numbers.Integral):
        n_test = int(test_size)
        if not 1 <= n_test <= n - 1:
            raise ValueError(f"test_size={n_test} must be a count in [1, {n - 1}] for {n} samples")
    elif isinstance(test_size, numbers.Real):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size={test_size!r} must be a fraction in (0, 1) or a count")
        n_test = math.ceil(float(test_size) * n)
        if n_test >= n:
            raise ValueError(f"test_size={test_size!r} leaves no training samples out of {n}")
    else:
        raise ValueError(f"test_size must be a fraction in (0, 1) or a count, not {test_size!r}")
    rng = _rng(seed)

    if stratify:
        if t.ndim != 1:
            raise ValueError(f"stratify=True needs class labels of shape (N,), got {t.shape}")
        classes, inverse = np.unique(t, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(classes))
        share = counts * (n_test / n)
        per_class = np.floor(share).astype(np.int64)
        remainder = n_test - int(per_class.sum())
        if remainder:
            # Largest fractional parts get the leftover rows (ties broken at random).
            frac = share - per_class
            order = np.lexsort((rng.random(len(classes)), -frac))
            per_class[order[:remainder]] += 1
        test_parts, train_parts = [], []
        for c in range(len(classes)):
            members = rng.permutation(np.flatnonzero(inverse == c))
            test_parts.append(members[: per_class[c]])
            train_parts.append(members[per_class[c]:])
        test_idx = rng.permutation(np.concatenate(test_parts))
        train_idx = rng.permutation(np.concatenate(train_parts))
    else:
        order = rng.permutation(n)
        test_idx, train_idx = order[:n_test], order[n_test:]
    return (x[train_idx], t[train_idx]), (x[test_idx], t[test_idx])
