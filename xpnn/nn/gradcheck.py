"""Gradient checking: backprop against central differences, per parameter."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..backend import to_numpy
from .finite import require_finite
from .numerical import check_finite, check_h

#: default pass threshold on the max relative error, by dtype
DEFAULT_THRESHOLD = {"float64": 1e-7, "float32": 5e-2}


@dataclass(frozen=True)
class ParamCheck:
    """One parameter's result; the relative error of an element is
    |g_bp - g_num| / max(|g_bp| + |g_num|, tiny)."""

    name: str
    shape: tuple
    max_rel_error: float
    max_abs_error: float
    passed: bool
    #: elements over the relative threshold (they passed on ``atol`` when ``passed``)
    over_threshold: int = 0


class GradientCheck(dict):
    """name -> ParamCheck, plus ``passed`` (all of them) and ``table()``."""

    def __init__(self, checks, threshold: float, dtype: str, h: float, atol: float = 0.0,
                 net_dtype: str | None = None):
        super().__init__((c.name, c) for c in checks)
        self.threshold, self.dtype, self.h, self.atol = threshold, dtype, h, atol
        #: the checked network's own dtype; ``dtype`` is the one the comparison ran in
        self.net_dtype = dtype if net_dtype is None else net_dtype

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.values())

    @property
    def max_rel_error(self) -> float:
        return max(c.max_rel_error for c in self.values())

    def table(self) -> str:
        where = (self.dtype if self.net_dtype == self.dtype else
                 f"{self.dtype} copy of a {self.net_dtype} network")
        lines = [
            f"gradient check ({where}, h={self.h:g}): an element passes when its "
            f"relative error is <= {self.threshold:g} (rtol) or its absolute error is <= "
            f"{self.atol:.1e} (atol)",
            f"{'param':<6} {'shape':<12} {'max rel error':>14} {'max abs error':>14}  result",
        ]
        for c in self.values():
            lines.append(
                f"{c.name:<6} {str(c.shape):<12} {c.max_rel_error:>14.3e} "
                f"{c.max_abs_error:>14.3e}  {self._verdict(c)}"
            )
        lines.append("all passed" if self.passed else "FAILED")
        return "\n".join(lines)

    __str__ = table

    def _verdict(self, c: ParamCheck) -> str:
        if not c.passed:
            return "FAIL"
        if not c.over_threshold:
            return "ok (rtol)"
        n = c.over_threshold
        return (f"ok (atol: {n} element{'s' if n != 1 else ''} over rtol, within atol)")


def _check_tolerance(value, what: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{what} must be {'positive' if positive else '>= 0'} and finite, "
                         f"got {value!r}")
    return value


def _float64_copy(net):
    """The network with its parameters in float64 (same architecture, backend and
    device); ValueError/TypeError where the backend or device has no float64."""
    from .mlp import MLP

    params = net.check_params()
    return MLP(net.sizes, activation=net.activations, loss=net.loss_name,
               weight_init=net.weight_init, weight_decay=net.weight_decay, backend=net.xp,
               device=net.device, dtype="float64",
               params={k: to_numpy(v) for k, v in params.items()})


def _comparison_net(net, dtype):
    """The network to compare on: ``net`` itself when it already has ``dtype``, else
    its float64 copy (or a clear refusal where float64 is unavailable)."""
    if not isinstance(dtype, str) or dtype not in ("float64", net.dtype_name):
        raise ValueError(f"dtype must be 'float64' (the default: the comparison in float64) "
                         f"or the network's own dtype {net.dtype_name!r}, got {dtype!r}")
    if dtype == net.dtype_name:
        return net
    try:
        return _float64_copy(net)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"gradient_check compares in float64, which the {net.backend} backend cannot "
            f"give here ({exc}); pass dtype='float32' to check in float32 instead, where a "
            f"derivative wrong by 1% (even 10%) can pass its 5e-2 threshold"
        ) from None


def gradient_check(net, x, t, threshold=None, h=None, method="batched",
                   atol=None, dtype="float64") -> GradientCheck:
    """Compare the backprop gradient with central differences on (x, t), validated once
    (``net.gradient_prepared`` against ``net.numerical_gradient_prepared``).

    The comparison runs in ``dtype``, float64 by default: a float32 network is copied
    to float64 (same architecture, backend and device; x and t are cast), as
    ``torch.autograd.gradcheck`` requires double precision, because float32 central
    differences carry ~1e-3 relative error and a 5e-2 threshold passed a derivative
    10% wrong. Where float64 is unavailable (JAX without 64-bit mode) this is refused;
    ``dtype='float32'`` then checks the network as it is, at the weaker threshold. The
    result's ``dtype`` is the comparison's, ``net_dtype`` the network's. ``h`` is the
    step in the comparison dtype.

    The relative error of each element is |g_bp - g_num| / max(|g_bp| + |g_num|, tiny)
    with tiny the dtype's smallest normal number; ``threshold`` defaults to 1e-7 in
    float64 and 5e-2 in float32 (where central differences carry ~1e-3 relative error).

    An element also passes when its absolute error is within ``atol``, by default the
    rounding noise of the central difference itself, 10 * eps * max(1, |loss|) / h,
    which no numerical gradient can beat (without it an element whose true gradient is
    ~1e-5 fails the float64 threshold on rounding alone), but never more than
    ``threshold`` times the largest backprop gradient element: a tiny ``h`` makes the
    noise estimate huge, and a floor that large would pass any gradient. ``h`` below
    sqrt(eps) is refused. The reported ``max_rel_error`` is the plain relative error.
    """
    net_dtype = net.dtype_name
    net.check_params()
    net = _comparison_net(net, dtype)
    xp = net.xp
    threshold = (DEFAULT_THRESHOLD[net.dtype_name] if threshold is None
                 else _check_tolerance(threshold, "threshold", positive=True))
    if atol is not None:
        atol = _check_tolerance(atol, "atol", positive=False)
    eps = float(xp.finfo(net.dtype).eps)
    h_used = check_h(net, h)  # below sqrt(eps) the check would mean nothing
    x = net.check_x(x)  # validated once for the three evaluations
    T = net.prepare_targets(t, x.shape[0])
    params = net.check_params()
    grad = require_finite(net.arch, params, x, net.gradient_prepared(x, T), T, "gradient")
    num = check_finite(xp, net.numerical_gradient_prepared(x, T, h_used, method), h_used)
    tiny = xp.finfo(net.dtype).smallest_normal
    if atol is None:
        loss = abs(float(net.loss_prepared(x, T)))
        scale = max(float(xp.max(xp.abs(g))) for g in grad.values())
        atol = min(10 * eps * max(1.0, loss) / h_used, threshold * scale)
    checks = []
    for name in net.params:
        diff = xp.abs(grad[name] - num[name])
        scale = xp.abs(grad[name]) + xp.abs(num[name])
        rel = diff / xp.maximum(scale, xp.full_like(scale, tiny))
        over = rel > threshold
        ok = bool(xp.all(~over | (diff <= atol)))
        checks.append(
            ParamCheck(name, tuple(grad[name].shape), float(xp.max(rel)),
                       float(xp.max(diff)), ok, int(xp.sum(xp.astype(over, xp.int64))))
        )
    return GradientCheck(checks, threshold, net.dtype_name, h_used, atol, net_dtype)
