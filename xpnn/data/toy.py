"""Toy data: two moons, the cs231n spirals and the book's car prices."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..backend import asarray
from ._common import _check_int, _check_target, _rng

__all__ = ["make_moons", "make_spirals", "load_car_prices"]

def _check_noise(noise):
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0, got {noise!r}")
    if not math.isfinite(noise):
        raise ValueError(f"noise must be finite, got {noise!r}")
    return float(noise)


def make_moons(n_samples=200, noise=0.2, seed=None, backend=None, device=None, dtype="float32"):
    """Two interleaving half circles (like scikit-learn's ``make_moons``).

    Returns ``x`` ``(n_samples, 2)`` floats and ``t`` ``int64 (n_samples,)``: class 0 is
    the upper moon ``(cos θ, sin θ)``, class 1 the lower ``(1 - cos θ, 0.5 - sin θ)``,
    θ evenly spaced in [0, π], plus Gaussian noise of std ``noise``; shuffled by ``seed``.
    """
    n_samples = _check_int("n_samples", n_samples, 2)
    noise = _check_noise(noise)
    dtype_name = _check_target(backend, device, dtype)
    rng = _rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    theta_out = np.linspace(0.0, np.pi, n_out)
    theta_in = np.linspace(0.0, np.pi, n_in)
    x = np.concatenate([
        np.stack([np.cos(theta_out), np.sin(theta_out)], axis=1),
        np.stack([1.0 - np.cos(theta_in), 1.0 - np.sin(theta_in) - 0.5], axis=1),
    ])
    t = np.concatenate([np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)])
    if noise:
        x = x + rng.normal(scale=noise, size=x.shape)
    order = rng.permutation(n_samples)
    return (
        asarray(x[order], backend=backend, device=device, dtype=dtype_name),
        asarray(t[order], backend=backend, device=device),
    )


def make_spirals(
    n_samples=300, n_classes=3, noise=0.2, seed=None, backend=None, device=None,
    dtype="float32",
):
    """The cs231n spiral: ``n_classes`` arms, ``n_samples`` points in all.

    For class k with n points: r = linspace(0, 1, n), θ = linspace(4k, 4(k+1), n) plus
    Gaussian noise of std ``noise``; the point is ``r * (sin θ, cos θ)``. (When
    ``n_samples`` is not a multiple of ``n_classes`` the first classes get one more.)
    Returns ``x`` ``(n_samples, 2)`` floats and ``t`` ``int64 (n_samples,)``, shuffled.
    """
    n_classes = _check_int("n_classes", n_classes, 1)
    n_samples = _check_int("n_samples", n_samples, n_classes)
    noise = _check_noise(noise)
    dtype_name = _check_target(backend, device, dtype)
    rng = _rng(seed)
    xs, ts = [], []
    for k in range(n_classes):
        n = n_samples // n_classes + (1 if k < n_samples % n_classes else 0)
        r = np.linspace(0.0, 1.0, n)
        theta = np.linspace(4.0 * k, 4.0 * (k + 1), n)
        if noise:
            theta = theta + rng.normal(scale=noise, size=n)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ts.append(np.full(n, k, dtype=np.int64))
    x, t = np.concatenate(xs), np.concatenate(ts)
    order = rng.permutation(n_samples)
    return (
        asarray(x[order], backend=backend, device=device, dtype=dtype_name),
        asarray(t[order], backend=backend, device=device),
    )


def load_car_prices(backend=None, device=None, dtype="float32"):
    """The linear-regression demo: ``x`` price 3..9 and ``t`` sales, both ``(7, 1)``.

    Sales lie exactly on ``9 - 0.5 * price`` (7.5, 7.0, ..., 4.5).
    """
    dtype_name = _check_target(backend, device, dtype)
    price = np.arange(3.0, 10.0).reshape(7, 1)
    sales = 9.0 - 0.5 * price
    return (
        asarray(price, backend=backend, device=device, dtype=dtype_name),
        asarray(sales, backend=backend, device=device, dtype=dtype_name),
    )


