"""Input checks with errors that name the problem. They run once per public call
(and once per data set in the trainer), never inside the hot loop."""

from __future__ import annotations

import array_api_compat

from .backend import backend_name, device_of


def check_array(xp, device, a, what: str):
    """``a`` must be an array of backend ``xp`` on ``device``."""
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
    if device is not None and device_of(a) != device:
        raise ValueError(
            f"{what} is on device {device_of(a)} but the network is on {device}; "
            f"move it explicitly with xpnn.asarray(..., device=...)"
        )


def _all_finite(xp, a) -> bool:
    return bool(xp.all(xp.isfinite(a)))


def check_inputs(xp, device, dtype, n_features: int, x):
    """Validate a batch x (N, n_features) and return it in the network's dtype."""
    check_array(xp, device, x, "x")
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
    if x.dtype != dtype:
        x = xp.astype(x, dtype)
    if not _all_finite(xp, x):
        raise ValueError("x contains NaN or inf")
    return x


def prepare_targets(xp, device, dtype, loss_name: str, n_out: int, t, n_rows: int | None = None):
    """Turn user targets into the (N, n_out) floating array the loss consumes.

    softmax_cross_entropy: integer labels (N,) in [0, n_out) or one-hot (N, n_out).
    binary_cross_entropy: 0/1 labels (N,) or (N, 1), integer or floating.
    mse: floating targets (N, n_out), or (N,) when n_out == 1.
    """
    check_array(xp, device, t, "t")
    if t.ndim == 0 or t.ndim > 2:
        raise ValueError(f"t must be 1-D labels or a 2-D array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError("t is empty (0 rows)")
    if n_rows is not None and t.shape[0] != n_rows:
        raise ValueError(f"x has {n_rows} rows but t has {t.shape[0]}")
    integral = xp.isdtype(t.dtype, "integral")
    floating = xp.isdtype(t.dtype, "real floating")
    if not (integral or floating):
        raise TypeError(f"t must be integer labels or a floating array, got dtype {t.dtype}")

    if loss_name == "softmax_cross_entropy":
        if t.ndim == 1:
            if not integral:
                raise TypeError(
                    f"class labels must be integers, got dtype {t.dtype}; pass int labels "
                    f"or one-hot rows of width {n_out}"
                )
            labels = xp.astype(t, xp.int64)
            if bool(xp.any(labels < 0)) or bool(xp.any(labels >= n_out)):
                lo, hi = int(xp.min(labels)), int(xp.max(labels))
                raise ValueError(
                    f"labels must lie in [0, {n_out - 1}] for {n_out} outputs, "
                    f"got values in [{lo}, {hi}]"
                )
            classes = xp.arange(n_out, device=device_of(t))
            return xp.astype(labels[:, None] == classes[None, :], dtype)
        if t.shape[1] != n_out:
            raise ValueError(
                f"one-hot labels have width {t.shape[1]} but the network has {n_out} outputs"
            )
        T = xp.astype(t, dtype)
    elif loss_name == "binary_cross_entropy":
        if t.ndim == 2 and t.shape[1] != 1:
            raise ValueError(f"binary labels must have shape (N,) or (N, 1), got {tuple(t.shape)}")
        T = xp.reshape(xp.astype(t, dtype), (t.shape[0], 1))
        if not bool(xp.all((T == 0) | (T == 1))):
            raise ValueError("binary_cross_entropy labels must be 0 or 1")
    else:  # mse
        if t.ndim == 1:
            if n_out != 1:
                raise ValueError(
                    f"mse targets must have shape (N, {n_out}), got {tuple(t.shape)}"
                )
            t = xp.reshape(t, (t.shape[0], 1))
        if t.shape[1] != n_out:
            raise ValueError(
                f"mse targets have width {t.shape[1]} but the network has {n_out} outputs"
            )
        T = xp.astype(t, dtype)
    if floating and not _all_finite(xp, T):
        raise ValueError("t contains NaN or inf")
    return T
