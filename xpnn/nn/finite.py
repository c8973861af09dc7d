"""Where a NaN or inf came from, for the public forward paths.

The inputs of ``MLP.predict`` / ``loss`` / ``accuracy`` / ``gradient`` /
``numerical_gradient`` are checked finite, so a NaN or inf in their result comes from
the parameters: a NaN/inf entry, or finite values so large that a layer overflows. The
methods check their result with one reduction (``all_finite``); only when that fails
does ``explain`` walk the network again, block by block, to name the first one whose
output is not finite. ``all_finite`` is also the training step's divergence check (the
step re-exports it); ``explain`` never runs inside the step.
"""

from __future__ import annotations

import math

from ..backend import device_of

__all__ = ["NonFiniteError", "all_finite", "explain", "zero_vectors"]


class NonFiniteError(ValueError):
    """A NaN or inf computed from finite inputs; the message names where (``where``)."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.where = where


def all_finite(xp, value, zeros: dict | None = None):
    """0-d boolean array: the array (or every array of a dict) is free of NaN/inf.

    ``a * 0`` is 0 for finite a and NaN for NaN/inf, so the sum of those products is
    NaN exactly when some element is not finite (it is 0 otherwise: it cannot overflow
    for large finite values, and ``total == total`` is the whole test, one comparison
    where ``isfinite`` is four kernels on PyTorch). With ``zeros`` (a flat zero vector
    per key of a dict, see ``zero_vectors``) the products and their sum are one
    ``vecdot`` per array: one pass, no temporary array. The training step's divergence
    check and the public methods' result check (``require_finite``) both use it."""
    total = None
    for key, a in (value.items() if isinstance(value, dict) else ((None, value),)):
        if zeros is None:
            s = xp.sum(a * 0.0)
        else:
            s = xp.vecdot(a if a.ndim == 1 else xp.reshape(a, (-1,)), zeros[key])
        total = s if total is None else total + s
    return total == total


def zero_vectors(xp, params: dict) -> dict:
    """A flat zero vector per parameter (its size, dtype and device), for ``all_finite``."""
    return {
        key: xp.zeros((math.prod(p.shape),), dtype=p.dtype, device=device_of(p))
        for key, p in params.items()
    }


def _bad(xp, a) -> bool:
    return not bool(xp.all(xp.isfinite(a)))


def _largest(xp, a) -> str:
    """max |a| over its finite entries, for the message."""
    finite = xp.where(xp.isfinite(a), xp.abs(a), xp.zeros_like(a))
    return f"{float(xp.max(finite)):.3g}"


def explain(arch, params: dict, x, T=None, backward: bool = False) -> str | None:
    """The first block that turns finite values into NaN/inf, as a sentence, or None.

    Walks the forward pass (each parameter, each affine output, each activation), then
    the loss (with ``T``) or the output (without), then, with ``backward``, the backward
    pass layer by layer from the top."""
    xp = arch.affine.xp
    n = arch.n_layers
    h, cache = x, []
    for i in range(n):
        W, b = params[f"W{i + 1}"], params[f"b{i + 1}"]
        for name, p in ((f"W{i + 1}", W), (f"b{i + 1}", b)):
            if _bad(xp, p):
                return f"parameter {name} contains NaN or inf"
        a, x_in = arch.affine.forward(W, b, h)
        src = "x" if i == 0 else "h"
        if _bad(xp, a):
            return (f"layer {i + 1} (Affine W{i + 1} @ {src} + b{i + 1}) produced inf/NaN "
                    f"from finite inputs: parameters too large? (max |W{i + 1}| = "
                    f"{_largest(xp, W)}, max |{src}| = {_largest(xp, h)})")
        act_cache = None
        if i < n - 1:
            act = arch.activations[i]
            h, act_cache = act.forward(a)
            if _bad(xp, h):
                return (f"layer {i + 1}'s activation ({getattr(act, 'name', type(act).__name__)}) "
                        f"produced inf/NaN from finite inputs (max |pre-activation| = "
                        f"{_largest(xp, a)}): parameters too large?")
        cache.append((x_in, act_cache))
    logits = a
    loss = arch.loss
    if T is None:
        if _bad(xp, loss.output(logits)):
            return (f"the output ({type(loss).__name__}) is inf/NaN from finite logits "
                    f"(max |logit| = {_largest(xp, logits)}): parameters too large?")
    else:
        if _bad(xp, loss.value(logits, T)):
            return (f"the loss ({type(loss).__name__}) is inf/NaN from finite logits "
                    f"(max |logit| = {_largest(xp, logits)}): parameters too large?")
        if arch.weight_decay:
            for i in range(1, n + 1):
                W = params[f"W{i}"]
                if _bad(xp, 0.5 * arch.weight_decay * xp.sum(W * W)):
                    return (f"the weight-decay term of W{i} (0.5 * {arch.weight_decay:g} * "
                            f"sum W{i}^2) overflows: parameters too large? (max |W{i}| = "
                            f"{_largest(xp, W)})")
    if not backward or T is None:
        return None
    dout = loss.gradient(logits, T)
    if _bad(xp, dout):
        return (f"the loss gradient ({type(loss).__name__}) is inf/NaN from finite logits "
                f"(max |logit| = {_largest(xp, logits)})")
    for i in range(n - 1, -1, -1):
        W = params[f"W{i + 1}"]
        dx, dW, db = arch.affine.backward(W, cache[i][0], dout, input_grad=i > 0)
        if arch.weight_decay:
            dW = dW + arch.weight_decay * W
        for name, g in ((f"W{i + 1}", dW), (f"b{i + 1}", db)):
            if _bad(xp, g):
                return (f"the backward pass through layer {i + 1} (Affine) gives an inf/NaN "
                        f"gradient of {name} from finite inputs: parameters too large? "
                        f"(max |W{i + 1}| = {_largest(xp, W)})")
        if i > 0:
            if _bad(xp, dx):
                return (f"the backward pass through layer {i + 1} (Affine, dout @ W{i + 1}.T) "
                        f"produced inf/NaN from finite inputs: parameters too large? "
                        f"(max |W{i + 1}| = {_largest(xp, W)})")
            dout = arch.activations[i - 1].backward(cache[i - 1][1], dx)
            if _bad(xp, dout):
                return (f"the backward pass through layer {i}'s activation produced "
                        f"inf/NaN from finite inputs: parameters too large?")
    return None


def locate(arch, params: dict, x, T=None, backward: bool = False) -> str | None:
    """``explain`` with NumPy's overflow warnings off (the overflow is known)."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return explain(arch, params, x, T, backward=backward)


def require_finite(arch, params: dict, x, value, T=None, what: str = "output"):
    """``value`` when it is free of NaN/inf (one reduction), else NonFiniteError naming
    the first block that overflowed (or the parameter that holds a NaN/inf)."""
    if bool(all_finite(arch.affine.xp, value)):
        return value
    where = locate(arch, params, x, T, backward=isinstance(value, dict))
    if where is None:
        where = "no single block gives NaN/inf when recomputed alone (non-deterministic?)"
    raise NonFiniteError(f"the {what} is NaN or inf: {where}", where)
