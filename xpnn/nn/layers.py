"""Layers as small blocks with ``forward`` and ``backward``, as in the book's
``common/layers.py``, written against an array-API namespace ``xp``.

Shapes: a batch ``x`` is (N, d). Activations are elementwise, so their
``function`` also works on any leading batch dimensions (the batched numerical
gradient feeds them (P, N, d) stacks of perturbed inputs).

Adding an activation: one small class with ``function``/``forward``/``backward``
and one line in ``ACTIVATIONS``.
"""

from __future__ import annotations


class Affine:
    """y = x @ W + b.   x: (N, d_in), W: (d_in, d_out), b: (d_out,) -> y: (N, d_out).

    ``W`` and ``b`` are attributes the network rebinds before each pass, so an
    optimiser that rebinds ``params["W1"]`` never has to reach into layers.
    """

    def __init__(self, xp, W=None, b=None):
        self.xp, self.W, self.b = xp, W, b
        self.x = self.dW = self.db = None

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout, input_grad: bool = True):
        """Store dW, db; return dx, or None when ``input_grad`` is false (the first
        layer's input needs no gradient, and that product is as big as the forward's)."""
        self.dW = self.x.T @ dout
        self.db = self.xp.sum(dout, axis=0)
        return dout @ self.W.T if input_grad else None


class Sigmoid:
    """y = 1 / (1 + exp(-x)), evaluated without overflow for any finite x."""

    name = "sigmoid"

    def __init__(self, xp):
        self.xp, self.out = xp, None

    def function(self, x):
        xp = self.xp
        # exp(min(x, 0)) / (1 + exp(-|x|)): 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for
        # x < 0. Both exponents are <= 0, so nothing overflows, and it is bit-identical to
        # the two-branch where() form without its data-dependent select (10x slower on
        # large arrays in NumPy and PyTorch).
        return xp.exp(xp.minimum(x, 0.0)) / (1.0 + xp.exp(-xp.abs(x)))

    def forward(self, x):
        self.out = self.function(x)
        return self.out

    def backward(self, dout):
        return dout * self.out * (1.0 - self.out)


class Tanh:
    """y = tanh(x)."""

    name = "tanh"

    def __init__(self, xp):
        self.xp, self.out = xp, None

    def function(self, x):
        return self.xp.tanh(x)

    def forward(self, x):
        self.out = self.function(x)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out * self.out)


class ReLU:
    """y = max(x, 0); the derivative at 0 is taken as 0."""

    name = "relu"

    def __init__(self, xp):
        self.xp, self.mask = xp, None

    # maximum / a multiply by a 0-1 mask rather than where(): where() with a
    # data-dependent mask is ~10x slower on large NumPy and PyTorch arrays.
    def function(self, x):
        return self.xp.maximum(x, 0.0)

    def forward(self, x):
        self.mask = self.xp.astype(x > 0, x.dtype)  # 1.0 where x > 0, else 0.0
        return self.xp.maximum(x, 0.0)

    def backward(self, dout):
        return dout * self.mask


class ELU:
    """y = x for x > 0, alpha * (exp(x) - 1) otherwise (alpha = 1)."""

    name = "elu"

    def __init__(self, xp, alpha: float = 1.0):
        self.xp, self.alpha = xp, alpha
        self.x = self.out = None

    def function(self, x):
        xp = self.xp
        # expm1 of min(x, 0) so large positive x never overflows the unused branch
        neg = self.alpha * xp.expm1(xp.minimum(x, xp.zeros_like(x)))
        return xp.where(x > 0, x, neg)

    def forward(self, x):
        self.x = x
        self.out = self.function(x)
        return self.out

    def backward(self, dout):
        # d/dx alpha*(e^x - 1) = alpha*e^x = out + alpha
        return self.xp.where(self.x > 0, dout, dout * (self.out + self.alpha))


class Identity:
    """y = x (a linear hidden layer)."""

    name = "identity"

    def __init__(self, xp):
        self.xp = xp

    def function(self, x):
        return x

    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


#: activation name -> layer class
ACTIVATIONS = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "elu": ELU,
    "identity": Identity,
}


def make_activation(name: str, xp):
    """Build the activation layer called ``name`` (see ``ACTIVATIONS``)."""
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; choose from {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name.lower()](xp)
