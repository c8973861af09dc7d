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
* where that update lands on the logits (the last two layers' parameters), the loss
  takes it as it is (``Loss.rank1_value``): softmax cross-entropy then makes four
  passes over the (P, N, C) stack (the update's multiply and add, exp, row sums),
  its shift folded into the unperturbed logits and its target logit computed from
  (N, C) and (P, C) arrays.

A bias ``b_l[j]`` is the same with ``x_{l-1}[:, i]`` replaced by ones. The
weight-decay term's central difference is exactly ``weight_decay * W``, so it is
added in closed form.

The work is a deterministic list of chunks (``plan``, a pure function of the layer
sizes, the batch rows, the item size and a memory budget: a few MiB of cache on the
CPU, a fraction of the free memory on an accelerator). All chunks of one parameter
have one width (the last is padded and its padding dropped), so every chunk of a
parameter evaluates stacks of one shape: eagerly they are built in one reused
``Workspace`` (in place where arrays can be written), and a compiler traces one
chunk function per parameter (``compiled_gradient``). Each chunk's central
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

from ..backend import backend_name, device_of, free_memory, in_host_memory
from . import functional as F
from .losses import rank1

__all__ = [
    "Cache",
    "Chunk",
    "StepTooSmallWarning",
    "assemble",
    "check_finite",
    "Workspace",
    "check_h",
    "chunk_budget",
    "chunk_gradient",
    "compiled_gradient",
    "forward_cache",
    "mlp_numerical_gradient",
    "numerical_gradient",
    "perturbed_losses",
    "plan",
    "plan_chunks",
]

#: default bytes of scratch memory for one chunk of perturbations. Small on the CPU on
#: purpose: chunks whose (P, N, d) temporaries outgrow ~1 MB make glibc hand memory back
#: and fault it in again on every chunk (measured, NumPy float32, one core:
#: 784-150-150-150-10 takes 22 s per gradient at 2 MiB against 36 s at the former 16 MiB).
DEFAULT_MEMORY_BUDGET = {"numpy": 2 * 2**20, "torch": 4 * 2**20, "array_api_strict": 2 * 2**20}

#: on an accelerator a chunk may use this fraction of the device's free memory, at
#: most DEVICE_BUDGET_MAX bytes (DEVICE_BUDGET_UNKNOWN when the backend cannot tell)
DEVICE_FRACTION = 0.25
DEVICE_BUDGET_MAX = 4 * 2**30
DEVICE_BUDGET_UNKNOWN = 256 * 2**20


class StepTooSmallWarning(UserWarning):
    """h is below sqrt(eps): the central difference is mostly rounding noise."""


class Chunk(NamedTuple):
    """Elements ``start:stop`` of the flattened parameter ``key``, evaluated as a stack
    of ``width`` perturbations (``start:start + width``, the ones past the parameter's
    end repeating its last element and dropped); ``width`` 0 means ``stop - start``."""

    key: str
    start: int
    stop: int
    width: int = 0


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
            net._numerical_budget = chunk_budget(net.backend, True)
        else:
            net._numerical_budget = _device_budget(net)
    return net._numerical_budget


def _device_budget(net) -> int:
    """``chunk_budget`` of the network's device, from its free memory now."""
    return chunk_budget(net.backend, False, free_memory(net.xp, net.device))


def chunk_budget(backend: str, host: bool, free: int | None = None) -> int:
    """Bytes one chunk may use: in host memory the CPU budget of ``backend``
    (``DEFAULT_MEMORY_BUDGET``: chunks that stay in cache); on an accelerator
    ``DEVICE_FRACTION`` of ``free`` bytes, at most ``DEVICE_BUDGET_MAX``
    (``DEVICE_BUDGET_UNKNOWN`` when ``free`` is None or 0). Pure."""
    if host:
        return DEFAULT_MEMORY_BUDGET.get(backend, 2 * 2**20)
    if not free:
        return DEVICE_BUDGET_UNKNOWN
    return int(min(free * DEVICE_FRACTION, DEVICE_BUDGET_MAX))


def forward_cache(net, x, params=None) -> Cache:
    """The shared unperturbed pass of ``x``, from the network's own forward (at
    ``params``, default the network's)."""
    params = net.params if params is None else params
    logits, cache = F.forward(net.arch, params, x, keep_pre=True)
    return Cache(tuple(c[0] for c in cache), tuple(c[1] for c in cache),
                 net.xp.max(logits, axis=1))


class Workspace:
    """Scratch stacks kept from one chunk to the next: ``ws(op, *args)`` is
    ``xp.<op>(*args)`` (an elementwise function: add, subtract, multiply, exp),
    written into a preallocated buffer of the result's shape and dtype where the
    backend's arrays can be written (NumPy, CuPy, PyTorch: the ``out=`` of their own
    functions), else the plain call (JAX, array-api-strict, anything unknown). All
    chunks of a parameter have one width, so they reuse one buffer; per-chunk
    (P, N, d) temporaries made glibc map, fault in and hand back about 1 MB per
    chunk (~480,000 page faults per seed-net gradient).

    One buffer per shape: a result may overwrite an argument that is that buffer
    (``ws("exp", s)`` with ``s`` from ``ws``), never one another call still needs.
    """

    def __init__(self, xp):
        self.xp = xp
        name = backend_name(xp)
        self._lib = None
        if name in ("numpy", "cupy", "torch"):
            self._lib = __import__(name)
        self._buffers = {}

    @property
    def writes_in_place(self) -> bool:
        return self._lib is not None

    def __call__(self, op: str, *args):
        if self._lib is None:
            return getattr(self.xp, op)(*args)
        shapes = [tuple(a.shape) for a in args if hasattr(a, "shape")]
        shape = _broadcast_shapes(shapes)
        dtype = args[0].dtype
        key = (shape, dtype)
        out = self._buffers.get(key)
        if out is None:
            out = self._buffers[key] = self.xp.empty(shape, dtype=dtype,
                                                     device=device_of(args[0]))
        getattr(self._lib, op)(*args, out=out)
        return out


def _broadcast_shapes(shapes) -> tuple:
    ndim = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (ndim - len(s)) + tuple(s) for s in shapes], strict=True):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def perturbed_losses(net, x, T, key: str, flat_index, deltas, cache=None, params=None,
                     workspace=None):
    """Data losses (no weight decay) with ``params[key].flat[flat_index[p]] += deltas[p]``.

    ``flat_index`` (P,) integer array and ``deltas`` (P,) floats on the network's
    device; ``params`` default the network's. Returns (P,). Each value is computed
    exactly (up to rounding) from the shared unperturbed forward in ``cache``; a
    ``Workspace`` holds the (P, N, d) stacks when given.
    """
    xp = net.xp
    params = net.params if params is None else params
    cache = forward_cache(net, x, params) if cache is None else cache
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
        return net.loss_fn.rank1_value(a, shift, onehot, T, cache.row_max, workspace)
    act = net.arch.activations[layer]
    col = xp.take(a, cols, axis=1).T  # (P, N) unperturbed column of a_l
    dz = act.function(col + shift) - act.function(col)  # change of that column of z_l
    W_next = params[f"W{layer + 2}"]
    w_rows = xp.take(W_next, cols, axis=0)  # (P, d_next)
    if layer + 1 == net.n_layers - 1:  # a_next are the logits
        return net.loss_fn.rank1_value(cache.pre[layer + 1], dz, w_rows, T, cache.row_max,
                                       workspace)
    a_next = rank1(xp, cache.pre[layer + 1], dz, w_rows, workspace)
    return net.loss_fn.value(F.logits_from(net.arch, params, a_next, layer + 1), T)


def _perturbation_bytes(sizes, layer: int, n_rows: int, itemsize: int) -> int:
    # Perturbing layer ``layer`` materialises one column of its pre-activation, (P, N),
    # and full (P, N, d) stacks only for the layers above it (sizes[layer + 2:]); the
    # last layer's perturbations build (P, N, n_out) logits. Sizing chunks by the
    # perturbed layer's own width made them up to 100x too small (784-1024-10: 3
    # perturbations per chunk instead of 43) and the Python loop dominated (15 s per
    # gradient instead of 6 s).
    n_layers = len(sizes) - 1
    above = sizes[layer + 2 :] if layer + 1 < n_layers else sizes[-1:]
    # a few live (N, d) temporaries, for each of the two signs
    return 2 * 6 * n_rows * max(above) * itemsize


def _chunk_size(net, layer: int, n_rows: int, budget: int) -> int:
    """Perturbations per chunk of layer ``layer``'s parameters under ``budget``."""
    itemsize = 8 if net.dtype == net.xp.float64 else 4
    return max(1, budget // _perturbation_bytes(net.sizes, layer, n_rows, itemsize))


def _param_sizes(sizes) -> list[tuple[str, int]]:
    """(key, element count) of every parameter of an MLP of ``sizes``, in order."""
    out = []
    for i in range(1, len(sizes)):
        out += [(f"W{i}", sizes[i - 1] * sizes[i]), (f"b{i}", sizes[i])]
    return out


def plan_chunks(sizes, n_rows: int, itemsize: int, budget: int) -> list[Chunk]:
    """The chunks of one numerical gradient of an MLP of layer ``sizes`` over a batch of
    ``n_rows`` in ``itemsize``-byte floats, under ``budget`` bytes per chunk: every
    parameter element once, in order; all chunks of a parameter of one width (the
    fewest chunks the budget allows, balanced so the last one's padding is less than
    one per chunk), each within the budget unless a single perturbation exceeds it.
    A pure function of its arguments."""
    chunks = []
    for key, n in _param_sizes(sizes):
        layer = int(key[1:]) - 1
        most = max(1, budget // _perturbation_bytes(sizes, layer, n_rows, itemsize))
        count = -(-n // most)
        width = -(-n // count)
        chunks += [Chunk(key, start, min(n, start + width), width)
                   for start in range(0, n, width)]
    return chunks


def plan(net, n_rows: int, memory_budget=None) -> list[Chunk]:
    """The chunks of one numerical gradient of ``net`` over a batch of ``n_rows``
    (``plan_chunks``), under ``memory_budget`` bytes per chunk (default
    ``chunk_budget`` of the network's device, found once). Deterministic."""
    itemsize = 8 if net.dtype == net.xp.float64 else 4
    return plan_chunks(net.sizes, n_rows, itemsize, _budget(net, memory_budget))


def _chunk_losses(net, x, T, key, start, width, n, h, cache, params, workspace):
    """Central differences of the data loss for elements ``start + arange(width)`` of
    the flattened parameter ``key`` (of ``n`` elements; indices past the end repeat
    the last one): (width,). ``start`` an int or a 0-d integer array (traced)."""
    xp = net.xp
    dev = device_of(x)
    # indices past the end repeat the last one; not xp.clip: array-api-compat's CuPy
    # clip is its generic one, whose boolean-mask assignment reads the mask back to
    # the host (a synchronisation, refused inside a CUDA-graph capture)
    i = xp.arange(width, device=dev) + start
    idx = xp.minimum(i, xp.full_like(i, n - 1))
    deltas = xp.concat([xp.full((width,), h, dtype=net.dtype, device=dev),
                        xp.full((width,), -h, dtype=net.dtype, device=dev)])
    losses = perturbed_losses(net, x, T, key, xp.concat([idx, idx]), deltas, cache, params,
                              workspace)
    return (losses[:width] - losses[width:]) / (2 * h)


def chunk_gradient(net, x, T, chunk: Chunk, h: float, cache: Cache | None = None,
                   params=None, workspace=None):
    """Central differences of the data loss (no weight decay) for the elements of one
    chunk: (stop - start,)."""
    params = net.params if params is None else params
    cache = forward_cache(net, x, params) if cache is None else cache
    n_el = chunk.stop - chunk.start
    width = chunk.width or n_el
    if width < n_el:
        raise ValueError(f"{chunk} is wider than its width")
    n = math.prod(params[chunk.key].shape)
    g = _chunk_losses(net, x, T, chunk.key, chunk.start, width, n, h, cache, params,
                      workspace)
    return g if width == n_el else g[:n_el]


def assemble(net, parts: dict, params=None) -> dict:
    """The gradient dict from ``parts`` = {key: [chunk results in plan order]}, with the
    weight-decay term's exact central difference, weight_decay * W, added."""
    xp = net.xp
    params = net.params if params is None else params
    grads = {}
    for key, value in params.items():
        pieces = parts[key]
        g = xp.reshape(xp.concat(pieces) if len(pieces) > 1 else pieces[0], value.shape)
        if key[0] == "W" and net.weight_decay:
            g = g + net.weight_decay * value  # exact central difference of 0.5*wd*W^2
        grads[key] = g
    return grads


def mlp_numerical_gradient(net, x, T, h: float, memory_budget=None, params=None,
                           workspace=None) -> dict:
    """Central-difference gradient of every MLP parameter, batched (see module doc);
    its stacks in ``workspace`` (default: a new one for this call)."""
    params = net.params if params is None else params
    cache = forward_cache(net, x, params)
    parts = {key: [] for key in params}
    workspace = Workspace(net.xp) if workspace is None else workspace
    for chunk in plan(net, x.shape[0], memory_budget):
        parts[chunk.key].append(
            chunk_gradient(net, x, T, chunk, h, cache, params, workspace))
    return assemble(net, parts, params)


def compiled_gradient(net, h: float, compile_fn=None, memory_budget=None):
    """``grad(params, x, T)``: the batched numerical gradient in the form the backend's
    compiler takes, every chunk of a parameter one call of one fixed-shape function.

    * JAX: a pure function whose chunks of a parameter run as one ``jax.lax.map``
      over their start offsets: jit it (``make_step(..., compile=True)`` jits the
      whole step around it) and each parameter's chunk function is traced once.
    * PyTorch with a ``compile_fn`` (``xpnn.compile.function_compiler``: on the CPU,
      and on CUDA under compile mode "fused"): each parameter's chunk function
      compiled once by ``compile_fn`` (``torch.compile``, fixed shapes, the start a
      0-d tensor, so nothing retraces; the starts made once and reused, so a CUDA
      graph around the gradient captures no host-to-device copy); the loop over
      chunks runs eagerly and is hidden from an enclosing ``torch.compile`` (a graph
      break). On CUDA the compiled step's graph captures the chunks' fused kernels.
    * Anything else (NumPy, array-api-strict, CUDA under mode "graph"): the eager
      gradient on one ``Workspace`` kept by the function; on CUDA a compiled step
      captures it whole in its CUDA graph (fixed shapes, no host synchronisation,
      the workspace allocated while warming up).

    The values are those of ``mlp_numerical_gradient`` up to the compiler's rounding.
    """
    xp = net.xp
    plans = {}

    def shapes(params, x):
        # the plan of this batch, by parameter: (key, width, number of chunks, size)
        rows = x.shape[0]
        if rows not in plans:
            chunks = plan(net, rows, memory_budget)
            plans[rows] = [(key, mine[0].width, len(mine), mine[-1].stop)
                           for key in params
                           for mine in [[c for c in chunks if c.key == key]]]
        return plans[rows]

    def differences(key, width, n, h):
        def fn(state, x, T, start):
            params, cache = state
            return _chunk_losses(net, x, T, key, start, width, n, h, cache, params, None)
        return fn

    if net.backend == "jax":
        import jax

        def gradient(params, x, T):
            cache = forward_cache(net, x, params)
            parts = {}
            for key, width, count, n in shapes(params, x):
                fn = differences(key, width, n, h)
                starts = xp.arange(count, device=device_of(x)) * width
                out = jax.lax.map(lambda start, fn=fn: fn((params, cache), x, T, start),
                                  starts)
                parts[key] = [xp.reshape(out, (-1,))[:n]]
            return assemble(net, parts, params)

        return gradient

    if net.backend == "torch" and compile_fn is not None:
        import torch

        compiled = {}  # (key, width, n) -> (compiled chunk function, its start offsets)

        @torch.compiler.disable
        def gradient(params, x, T):
            cache = forward_cache(net, x, params)
            parts = {}
            for key, width, count, n in shapes(params, x):
                fn, starts = compiled.get((key, width, n), (None, None))
                if fn is None:
                    fn = compile_fn(differences(key, width, n, h), xp, net.device)[0]
                    starts = [xp.asarray(k * width, device=device_of(x))
                              for k in range(count)]
                    compiled[(key, width, n)] = fn, starts
                pieces = [fn((params, cache), x, T, start) for start in starts]
                g = xp.concat(pieces) if count > 1 else pieces[0]
                parts[key] = [g[:n]]
            return assemble(net, parts, params)

        return gradient

    workspace = Workspace(xp)  # kept: a CUDA graph replays on the buffers it captured

    def gradient(params, x, T):
        return mlp_numerical_gradient(net, x, T, h, memory_budget, params, workspace)

    return gradient
