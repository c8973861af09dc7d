"""Layers as small blocks with ``forward`` and ``backward``, as in the book's
``common/layers.py``, written against an array-API namespace ``xp``.

The blocks are stateless: ``forward`` returns its output and a cache, ``backward``
takes that cache back, so nothing is written to the layer objects and a whole step
is a pure function of its inputs (see ``xpnn.nn.functional``).

Shapes: a batch ``x`` is (N, d). Every block also takes stacks (..., N, d): the
batched numerical gradient forwards (P, N, d) stacks of perturbed activations.

Adding an activation: one small class with ``function`` / ``forward`` / ``backward``
and one line in ``ACTIVATIONS``. ``zero`` is a 0-d array of the network's dtype on
its device, built once: ``xp.maximum(x, 0.0)`` would make some backends build a
tensor from the Python scalar on every call (on CUDA a host-to-device copy, under
``torch.compile`` a graph break). The constants of the sigmoid and tanh (0.5, 1.0)
are 0-d arrays made from it once (``zero + 0.5``; on NumPy scalars of its dtype) for
the same reason: PyTorch wraps a Python scalar operand in a new tensor on every
operation, 1.5 us of host time per operation on the CPU, half the cost of a small
operation (issue 15's host-bound eager step). They are exact in every floating
dtype, so the values do not change; with the default ``zero=0.0`` they stay Python
floats.
"""

from __future__ import annotations

import math
import operator


class Affine:
    """y = x @ W + b.   x: (..., N, d_in), W: (d_in, d_out), b: (d_out,) -> (..., N, d_out).

    ``forward(W, b, x) -> (y, cache)``; ``backward(W, cache, dout) -> (dx, dW, db)``.

    Every product goes through ``self.matmul`` (``a @ b`` unless replaced): the one
    seam where a compiled step swaps in another GEMM (``xpnn.compile``'s CuPy route,
    set only while a CUDA graph is captured).
    """

    def __init__(self, xp):
        self.xp = xp
        self.matmul = operator.matmul

    def forward(self, W, b, x):
        if x.ndim == 2:
            return self.matmul(x, W) + b, x
        # a stack: one (P*N, d_in) @ W product, not P small ones
        lead = tuple(x.shape[:-1])
        flat = self.xp.reshape(x, (math.prod(lead), x.shape[-1]))
        return self.xp.reshape(self.matmul(flat, W) + b, (*lead, W.shape[1])), x

    def backward(self, W, cache, dout, input_grad: bool = True):
        """dx (None when ``input_grad`` is false: the first layer's input needs no
        gradient, and that product costs as much as the forward), dW, db."""
        x = cache
        dW = self.matmul(x.T, dout)
        db = self.xp.sum(dout, axis=0)
        return (self.matmul(dout, W.T) if input_grad else None), dW, db


class Sigmoid:
    """y = 1 / (1 + exp(-x)), evaluated without overflow for any x."""

    name = "sigmoid"

    def __init__(self, xp, zero=0.0):
        self.xp = xp
        self.half, self.one = zero + 0.5, zero + 1.0

    def function(self, x):
        # 1 / (1 + e^-x) = (1 + tanh(x/2)) / 2: one transcendental call and nothing that
        # can overflow; within 1 ulp of 1 of the textbook form (absolute error, which is
        # all a hidden activation needs). Against the overflow-safe exp(min(x, 0)) /
        # (1 + exp(-|x|)) it replaced: 2.4x faster on a NumPy (100, 50) array, 2.9x and
        # 3.7x on NumPy and PyTorch (256, 1024), even on a small PyTorch array.
        half = self.half
        return half * self.xp.tanh(half * x) + half

    def forward(self, x):
        out = self.function(x)
        return out, out

    def backward(self, cache, dout):
        out = cache
        return dout * out * (self.one - out)


class Tanh:
    """y = tanh(x)."""

    name = "tanh"

    def __init__(self, xp, zero=0.0):
        self.xp = xp
        self.one = zero + 1.0

    def function(self, x):
        return self.xp.tanh(x)

    def forward(self, x):
        out = self.function(x)
        return out, out

    def backward(self, cache, dout):
        out = cache
        return dout * (self.one - out * out)


class ReLU:
    """y = max(x, 0); the derivative at 0 is taken as 0."""

    name = "relu"

    def __init__(self, xp, zero=0.0):
        self.xp, self.zero = xp, zero

    # maximum / a multiply by a 0-1 mask rather than where(): where() with a
    # data-dependent mask is ~10x slower on large NumPy and PyTorch arrays.
    def function(self, x):
        return self.xp.maximum(x, self.zero)

    def forward(self, x):
        mask = self.xp.astype(x > self.zero, x.dtype)  # 1.0 where x > 0, else 0.0
        return self.function(x), mask

    def backward(self, cache, dout):
        return dout * cache


class ELU:
    """y = x for x > 0, alpha * (exp(x) - 1) otherwise (alpha = 1)."""

    name = "elu"

    def __init__(self, xp, zero=0.0, alpha: float = 1.0):
        self.xp, self.zero, self.alpha = xp, zero, alpha

    def function(self, x):
        xp = self.xp
        # expm1 of min(x, 0) so large positive x never overflows the unused branch
        return xp.where(x > self.zero, x, self.alpha * xp.expm1(xp.minimum(x, self.zero)))

    def forward(self, x):
        out = self.function(x)
        return out, (x, out)

    def backward(self, cache, dout):
        x, out = cache
        # d/dx alpha*(e^x - 1) = alpha*e^x = out + alpha
        return self.xp.where(x > self.zero, dout, dout * (out + self.alpha))


class Identity:
    """y = x (a linear hidden layer)."""

    name = "identity"

    def __init__(self, xp, zero=0.0):
        self.xp = xp

    def function(self, x):
        return x

    def forward(self, x):
        return x, None

    def backward(self, cache, dout):
        return dout


#: activation name -> layer class
ACTIVATIONS = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "elu": ELU,
    "identity": Identity,
}


def check_activation(name) -> str:
    """The registry key for ``name``, or a ValueError/TypeError listing the choices."""
    if not isinstance(name, str):
        raise TypeError(
            f"an activation is a name ({', '.join(sorted(ACTIVATIONS))}), got {name!r}"
        )
    if name.lower() not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; choose from {', '.join(sorted(ACTIVATIONS))}"
        )
    return name.lower()


def make_activation(name: str, xp, zero=0.0):
    """Build the activation layer called ``name`` (see ``ACTIVATIONS``); ``zero`` is the
    network's 0-d zero (see the module docstring)."""
    return ACTIVATIONS[check_activation(name)](xp, zero)
