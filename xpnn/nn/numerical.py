"""Numerical gradients by central differences, two ways.

``numerical_gradient(f, x, h)`` is the book's reference: one perturbed element at
a time, two calls of ``f`` per element. It never assigns into an array, so it runs
on backends without item assignment.

``mlp_numerical_gradient(net, x, T, h)`` computes the same central differences for
every parameter of an MLP, but evaluates many perturbed losses at once. Perturbing
``W_l[i, j]`` by ``s`` changes only column ``j`` of layer l's pre-activation
``a_l`` (by ``s * x_{l-1}[:, i]``), so

* the forward pass below layer l is shared by all its perturbations;
* the activation is re-evaluated on that one column only; its change ``dz`` (N,)
  reaches the next pre-activation as the rank-1 update ``a_{l+1} + dz W_{l+1}[j, :]``;
* only the layers above are recomputed, for a stack of P perturbations at once
  ((P*N, d) @ W: one large product instead of P small forwards).

A bias ``b_l[j]`` is the same with ``x_{l-1}[:, i]`` replaced by ones. The
weight-decay term's central difference is exactly ``weight_decay * W``, so it is
added in closed form. Chunks of perturbations are sized by a memory budget.

The work is a deterministic list of chunks (``plan``); each chunk's central
differences come from ``chunk_gradient`` and ``assemble`` puts them together, so
the chunks can be farmed out to other processes or machines (``xpnn.dist``) with
the same result, to rounding.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import NamedTuple

import array_api_compat

from ..backend import device_of, free_memory, in_host_memory
from . import functional as F

__all__ = [
    "Cache",
    "Chunk",
    "StepTooSmallWarning",
    "assemble",
    "check_finite",
    "check_h",
    "chunk_gradient",
    "forward_cache",
    "mlp_numerical_gradient",
    "numerical_gradient",
    "perturbed_losses",
    "plan",
]

#: default bytes of scratch memory for one chunk of perturbations. Small on the CPU on
#: purpose: chunks whose (P, N, d) temporaries outgrow ~1 MB make glibc hand memory back
#: and fault it in again on every chunk (measured, NumPy float32, one core:
#: 784-150-150-150-10 takes 22 s per gradient at 2 MiB against 36 s at the former 16 MiB).
DEFAULT_MEMORY_BUDGET = {"numpy": 2 * 2**20, "torch": 4 * 2**20, "array_api_strict": 2 * 2**20}



class StepTooSmallWarning(UserWarning):
    """h is below sqrt(eps): the central difference is mostly rounding noise."""


class Chunk(NamedTuple):
    """Elements ``start:stop`` of the flattened parameter ``key``."""

    key: str
    start: int
    stop: int


class Cache(NamedTuple):
    """The unperturbed forward pass: each affine layer's input and pre-activation, and
    the row maxima of the logits (N,)."""

    inputs: tuple
    pre: tuple
    row_max: object


def numerical_gradient(f, x, h=None):
    """Central-difference gradient of the scalar function ``f`` at array ``x``.

    ``f(x_perturbed)`` is called twice per element (x + h e_i and x - h e_i) and must
    return a real scalar (a number or a 0-d array); the result has x's shape and dtype.
    ``x`` is a non-empty floating array. ``h`` defaults to the book's 1e-4 in float64
    and about eps**(1/3) in narrower dtypes (5e-3 in float32); a step below sqrt(eps)
    (mostly rounding noise), h <= 0, NaN, inf or a non-real h is refused. A NaN/inf
    result (f overflowing near x) raises ValueError. Slow by design: it is the
    reference the fast paths are checked against.
    """
    if not callable(f):
        raise TypeError(f"f must be a callable f(x) -> scalar, got {type(f).__name__}")
    if not array_api_compat.is_array_api_obj(x) or isinstance(x, numbers.Number):
        raise TypeError(f"x must be an array (NumPy or another array-API backend), got "
                        f"{type(x).__name__}; convert with xpnn.asarray(x)")
    xp = array_api_compat.array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be a floating array, got dtype {x.dtype}")
    n = math.prod(x.shape)
    if n == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}): there is nothing to "
                         f"differentiate")
    info = xp.finfo(x.dtype)
    eps = float(info.eps)
    default = max(1e-4, float(f"{eps ** (1 / 3):.0e}"))  # 1e-4 float64, 5e-3 float32
    h = check_step(h, eps, str(x.dtype), default)
    flat = xp.reshape(x, (-1,))
    index = xp.arange(n, device=device_of(x))
    plus, minus = flat + h, flat - h
    out = []
    for i in range(n):
        at_i = index == i  # a perturbation without item assignment
        fp = _scalar(f(xp.reshape(xp.where(at_i, plus, flat), x.shape)))
        fm = _scalar(f(xp.reshape(xp.where(at_i, minus, flat), x.shape)))
        out.append(xp.asarray((fp - fm) / (2 * h), dtype=x.dtype, device=device_of(x)))
    g = xp.reshape(xp.stack(out), x.shape)
    if not bool(xp.all(xp.isfinite(g))):
        raise ValueError(f"the numerical gradient is NaN or inf: f is not finite at x +- h "
                         f"(h={h:g}) for some element")
    return g


def _scalar(value):
    """f's value, which must be a real scalar: a real number or a 0-d real array."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value
    if array_api_compat.is_array_api_obj(value) and not isinstance(value, (bool, complex)):
        shape = tuple(value.shape)
        if shape != ():
            raise TypeError(f"f must return a scalar (a number or a 0-d array), got an "
                            f"array of shape {shape}; reduce it (e.g. sum) first")
        xp = array_api_compat.array_namespace(value)
        if xp.isdtype(value.dtype, ("real floating", "integral")):
            return value
    raise TypeError(f"f must return a real scalar (a number or a 0-d array), got "
                    f"{type(value).__name__}" + (f" {value!r}"[:60] if isinstance(
                        value, (str, bytes, complex)) else ""))


def check_step(h, eps: float, dtype: str, default: float) -> float:
    """The central-difference step ``h`` (None: ``default``) for arrays of machine
    epsilon ``eps``: a real number with sqrt(eps) <= h <= 1, else TypeError/ValueError.
    Below sqrt(eps) the central difference is mostly rounding noise (h=1e-300 gave
    zeros), so it is refused, as are h <= 0, NaN and inf."""
    if h is None:
        return default
    if isinstance(h, bool) or not isinstance(h, numbers.Real):
        raise TypeError(f"h must be a number, got {h!r}")
    if not (0 < h <= 1):
        raise ValueError(f"h must be a small positive step (0 < h <= 1), got {h!r}")
    if h < math.sqrt(eps):
        raise ValueError(
            f"h={h:g} is below sqrt(eps)={math.sqrt(eps):.1e} for {dtype}: the central "
            f"difference would be mostly rounding noise (a gradient of zeros or garbage); "
            f"use h near eps**(1/3) (default {default:g})"
        )
    return float(h)


def check_h(net, h, strict: bool = True) -> float:
    """The finite-difference step of a network: ``net.default_h()`` for None, else a
    real number with sqrt(eps) <= h <= 1 for the net's dtype (``check_step``). With
    ``strict=False`` a step below sqrt(eps) only warns (StepTooSmallWarning); no caller
    in xpnn does that any more: it is an error everywhere."""
    eps = float(net.xp.finfo(net.dtype).eps)
    if not strict and h is not None and not isinstance(h, bool) and isinstance(
            h, numbers.Real) and 0 < h < math.sqrt(eps):
        warnings.warn(
            f"h={h:g} is below sqrt(eps)={math.sqrt(eps):.1e} for {net.dtype_name}: the "
            f"central difference is dominated by rounding error; use h near eps**(1/3) "
            f"(the default, {net.default_h():g})",
            StepTooSmallWarning,
            stacklevel=3,
        )
        return float(h)
    return check_step(h, eps, net.dtype_name, net.default_h())


def check_finite(xp, grads: dict, h: float) -> dict:
    """``grads``, a numerical gradient, or ValueError naming the parameters where it is
    not finite (the loss overflows at the perturbed parameters)."""
    bad = [k for k, g in grads.items() if not bool(xp.all(xp.isfinite(g)))]
    if bad:
        raise ValueError(
            f"the numerical gradient of {', '.join(bad)} is not finite: the loss "
            f"overflows at the perturbed parameters (h={h:g})"
        )
    return grads


def _budget(net, memory_budget) -> int:
    if memory_budget is not None:
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, numbers.Real):
            raise TypeError(f"memory_budget must be a number of bytes, got {memory_budget!r}")
        if not (memory_budget > 0 and math.isfinite(memory_budget)):
            raise ValueError(f"memory_budget must be positive, got {memory_budget!r}")
        return int(memory_budget)
    if net._numerical_budget is None:  # found once per net: a GPU query is not free
        if in_host_memory(net.xp, net.device):
            net._numerical_budget = DEFAULT_MEMORY_BUDGET.get(net.backend, 2 * 2**20)
        else:
            net._numerical_budget = _device_budget(net)
    return net._numerical_budget


def _device_budget(net) -> int:
    """A quarter of the device's free memory, at most 4 GiB (256 MiB when unknown)."""
    free = free_memory(net.xp, net.device)
    return 256 * 2**20 if not free else int(min(free // 4, 4 * 2**30))


def forward_cache(net, x) -> Cache:
    """The shared unperturbed pass of ``x``, from the network's own forward."""
    logits, cache = F.forward(net.arch, net.params, x, keep_pre=True)
    return Cache(tuple(c[0] for c in cache), tuple(c[1] for c in cache),
                 net.xp.max(logits, axis=1))


def perturbed_losses(net, x, T, key: str, flat_index, deltas, cache=None):
    """Data losses (no weight decay) with ``params[key].flat[flat_index[p]] += deltas[p]``.

    ``flat_index`` (P,) integer array and ``deltas`` (P,) floats on the network's
    device. Returns (P,). Each value is computed exactly (up to rounding) from the
    shared unperturbed forward in ``cache``.
    """
    xp = net.xp
    cache = forward_cache(net, x) if cache is None else cache
    layer = int(key[1:]) - 1
    width = net.sizes[layer + 1]
    a = cache.pre[layer]  # (N, width)
    if key[0] == "W":
        rows, cols = flat_index // width, flat_index % width
        col_in = xp.take(cache.inputs[layer], rows, axis=1).T  # (P, N)
        shift = deltas[:, None] * col_in
    else:
        cols = flat_index
        shift = xp.broadcast_to(deltas[:, None], (deltas.shape[0], a.shape[0]))
    if layer == net.n_layers - 1:
        # the perturbed column is a logit column: change it, keep the others bit-exact
        onehot = xp.astype(
            cols[:, None] == xp.arange(width, device=device_of(a))[None, :], a.dtype
        )
        logits = a[None, :, :] + shift[:, :, None] * onehot[:, None, :]
        return net.loss_fn.value(logits, T, row_max=cache.row_max[None, :] + xp.abs(shift))
    act = net.arch.activations[layer]
    col = xp.take(a, cols, axis=1).T  # (P, N) unperturbed column of a_l
    dz = act.function(col + shift) - act.function(col)  # change of that column of z_l
    W_next = net.params[f"W{layer + 2}"]
    w_rows = xp.take(W_next, cols, axis=0)  # (P, d_next)
    a_next = cache.pre[layer + 1][None, :, :] + dz[:, :, None] * w_rows[:, None, :]
    if layer + 1 == net.n_layers - 1:  # a_next are the logits: bound their row maximum
        bound = xp.max(xp.abs(w_rows), axis=1)  # (P,)
        row_max = cache.row_max[None, :] + xp.abs(dz) * bound[:, None]
        return net.loss_fn.value(a_next, T, row_max=row_max)
    return net.loss_fn.value(F.logits_from(net.arch, net.params, a_next, layer + 1), T)


def _chunk_size(net, layer: int, n_rows: int, budget: int) -> int:
    # Perturbing layer ``layer`` materialises one column of its pre-activation, (P, N),
    # and full (P, N, d) stacks only for the layers above it (sizes[layer + 2:]); the
    # last layer's perturbations build (P, N, n_out) logits. Sizing chunks by the
    # perturbed layer's own width made them up to 100x too small (784-1024-10: 3
    # perturbations per chunk instead of 43) and the Python loop dominated (15 s per
    # gradient instead of 6 s).
    above = net.sizes[layer + 2 :] if layer + 1 < net.n_layers else net.sizes[-1:]
    widest = max(above)
    itemsize = 8 if net.dtype == net.xp.float64 else 4
    per_perturbation = 6 * n_rows * widest * itemsize  # a few live (N, d) temporaries
    return max(1, budget // (2 * per_perturbation))



def plan(net, n_rows: int, memory_budget=None) -> list[Chunk]:
    """The chunks of one numerical gradient over a batch of ``n_rows``, in order: every
    parameter element once, each chunk sized to the memory budget. Deterministic."""
    budget = _budget(net, memory_budget)
    chunks = []
    for key, value in net.params.items():
        n = math.prod(value.shape)
        step = _chunk_size(net, int(key[1:]) - 1, n_rows, budget)
        chunks += [Chunk(key, start, min(n, start + step)) for start in range(0, n, step)]
    return chunks


def chunk_gradient(net, x, T, chunk: Chunk, h: float, cache: Cache | None = None):
    """Central differences of the data loss (no weight decay) for the elements of one
    chunk: (stop - start,)."""
    xp = net.xp
    dev = device_of(x)
    n = chunk.stop - chunk.start
    idx = xp.arange(chunk.start, chunk.stop, device=dev)
    deltas = xp.concat([xp.full((n,), h, dtype=net.dtype, device=dev),
                        xp.full((n,), -h, dtype=net.dtype, device=dev)])
    losses = perturbed_losses(net, x, T, chunk.key, xp.concat([idx, idx]), deltas, cache)
    return (losses[:n] - losses[n:]) / (2 * h)


def assemble(net, parts: dict) -> dict:
    """The gradient dict from ``parts`` = {key: [chunk results in plan order]}, with the
    weight-decay term's exact central difference, weight_decay * W, added."""
    xp = net.xp
    grads = {}
    for key, value in net.params.items():
        pieces = parts[key]
        g = xp.reshape(xp.concat(pieces) if len(pieces) > 1 else pieces[0], value.shape)
        if key[0] == "W" and net.weight_decay:
            g = g + net.weight_decay * value  # exact central difference of 0.5*wd*W^2
        grads[key] = g
    return grads


def mlp_numerical_gradient(net, x, T, h: float, memory_budget=None) -> dict:
    """Central-difference gradient of every MLP parameter, batched (see module doc)."""
    cache = forward_cache(net, x)
    parts = {key: [] for key in net.params}
    for chunk in plan(net, x.shape[0], memory_budget):
        parts[chunk.key].append(chunk_gradient(net, x, T, chunk, h, cache))
    return assemble(net, parts)
