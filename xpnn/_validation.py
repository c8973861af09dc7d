"""Input checks with errors that name the problem. They run once per public call
(and once per data set in the trainer), never inside the hot loop."""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from .backend import backend_name, device_of, dtype_name

#: NumPy array subclasses whose semantics xpnn cannot keep: a masked array's mask would
#: be ignored (its masked entries used as data) and a matrix's * is a matrix product
_REFUSED_SUBCLASSES = (np.ma.MaskedArray, np.matrix)


def _detached(a):
    """``a`` without an autograd history: a torch tensor that requires grad would
    otherwise chain every update onto one growing graph (memory and time grow with
    each iteration)."""
    if getattr(a, "requires_grad", False):
        return a.detach()
    return a


def check_array(xp, device, a, what: str):
    """``a`` must be an array of backend ``xp`` on ``device``; returns it detached from
    any autograd graph."""
    if isinstance(a, _REFUSED_SUBCLASSES):
        raise TypeError(
            f"{what} is a {type(a).__module__}.{type(a).__name__}, whose mask or matrix "
            f"semantics xpnn would not honour; pass a plain array (a masked array: drop "
            f"the masked rows, or {what}.filled(value); a matrix: numpy.asarray({what}))"
        )
    if not array_api_compat.is_array_api_obj(a) or isinstance(a, (int, float, bool)):
        raise TypeError(
            f"{what} must be an array of the network's backend ({backend_name(xp)}), "
            f"got {type(a).__name__}; convert with xpnn.asarray({what}, backend=...)"
        )
    other = backend_name(array_api_compat.array_namespace(a))
    if other != backend_name(xp):
        raise TypeError(
            f"{what} is a {other} array but the network runs on {backend_name(xp)}; "
            f"move it explicitly with xpnn.asarray({what}, backend={backend_name(xp)!r}, "
            f"device=...) (xpnn never copies between backends silently)"
        )
    if device is not None:
        dev = device_of(a)
        if dev != device:
            raise ValueError(
                f"{what} is on device {dev} but the network is on {device}; "
                f"move it explicitly with xpnn.asarray(..., device=...)"
            )
    return _detached(a)


def _all_finite(xp, a) -> bool:
    return bool(xp.all(xp.isfinite(a)))


def check_floating(xp, a, what: str) -> None:
    """A floating array ``a`` must be free of NaN and inf."""
    if not _all_finite(xp, a):
        raise ValueError(f"{what} contains NaN or inf")


def check_inputs(xp, device, dtype, n_features: int, x):
    """Validate a batch x (N, n_features) and return it in the network's dtype."""
    x = check_array(xp, device, x, "x")
    if x.ndim != 2:
        hint = " (a single sample: x.reshape(1, -1))" if x.ndim == 1 else ""
        raise ValueError(f"x must be 2-D (N, {n_features}), got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (0 rows)")
    if x.shape[1] != n_features:
        raise ValueError(
            f"x has {x.shape[1]} features but the network expects {n_features} "
            f"(shape {tuple(x.shape)})"
        )
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"x must be a floating array, got dtype {x.dtype}; convert it "
            f"(images: x / 255) before passing it in"
        )
    big = float(xp.finfo(dtype).max)
    if float(xp.finfo(x.dtype).max) <= big:  # same or wider dtype: the cast cannot overflow
        check_floating(xp, x, "x")
        return x if x.dtype == dtype else xp.astype(x, dtype)
    largest = float(xp.max(xp.abs(x)))  # one reduction: NaN propagates through max
    if not math.isfinite(largest):
        raise ValueError("x contains NaN or inf")
    if largest > big:
        raise ValueError(
            f"x has values beyond the range of the network's {dtype_name(xp, dtype)} "
            f"(|x| > {big:.3g}), which would become inf; scale the data or use "
            f"dtype='float64'"
        )
    return xp.astype(x, dtype)


def prepare_targets(xp, device, dtype, loss, n_out: int, t, n_rows: int | None = None):
    """Turn user targets into the (N, n_out) floating array the loss consumes: the
    checks shared by every loss here, the loss's own encoding in
    ``loss.encode_targets`` (``loss`` is an object of ``xpnn.nn.losses``)."""
    t = check_array(xp, device, t, "t")
    if t.ndim == 0 or t.ndim > 2:
        raise ValueError(f"t must be 1-D labels or a 2-D array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError("t is empty (0 rows)")
    if n_rows is not None and t.shape[0] != n_rows:
        raise ValueError(f"x has {n_rows} rows but t has {t.shape[0]}")
    if not (xp.isdtype(t.dtype, "integral") or xp.isdtype(t.dtype, "real floating")):
        raise TypeError(f"t must be integer labels or a floating array, got dtype {t.dtype}")
    # NaN/inf in floating targets: each loss checks them once, after the cast to dtype
    return loss.encode_targets(t, n_out, dtype)
