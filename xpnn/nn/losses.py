"""Output losses. Each takes the last affine layer's output ``z`` (logits, or raw
values for ``mse``) and prepared targets ``T`` of the same shape, and returns the
batch mean.

``value`` also works on stacks ``z`` of shape (..., N, C) with one ``T`` of shape
(N, C), returning one loss per leading index: that is what the batched numerical
gradient evaluates.

The plain functions ``softmax_cross_entropy``, ``binary_cross_entropy`` and
``mse`` take (z, T) arrays directly.
"""

from __future__ import annotations

import math

import array_api_compat

from .._validation import prepare_targets
from ..backend import device_of


class _LogitLoss:
    """Shared by the two classification losses: output p = output(z) and, for both,
    dL/dz = (p - T) / N."""

    def __init__(self, xp):
        self.xp = xp
        self.y = self.T = None

    def forward(self, z, T):
        self.y, self.T = self.output(z), T
        return self.value(z, T)

    def backward(self):
        return (self.y - self.T) / self.T.shape[0]

    def gradient(self, z, T):
        """dL/dz straight from the logits, without evaluating the loss (all a training
        step needs); leaves the layer as ``forward`` + ``backward`` would."""
        self.y, self.T = self.output(z), T
        return (self.y - T) / T.shape[0]


class SoftmaxCrossEntropy(_LogitLoss):
    """mean over the batch of -sum_k T[n, k] * log softmax(z[n])_k.

    Exact log-softmax (shift by the row maximum), so logits of +-1e4 give a finite
    loss; there is no ``+ 1e-7`` fudge. Gradient: (softmax(z) - T) / N.
    """

    name = "softmax_cross_entropy"
    min_outputs = 2

    def output(self, z):
        """Probabilities softmax(z), (N, C)."""
        xp = self.xp
        s = z - xp.max(z, axis=-1, keepdims=True)
        e = xp.exp(s)
        return e / xp.sum(e, axis=-1, keepdims=True)

    def value(self, z, T, row_max=None):
        """Loss of z (N, C) or of each z[p] in a stack (P, N, C).

        ``row_max`` (..., N), if given, replaces max(z, axis=-1) as the log-sum-exp
        shift; any value within a few hundred of the true maximum is exact, and the
        batched numerical gradient passes one it knows, saving a reduction.
        """
        xp = self.xp
        n, c = z.shape[-2], z.shape[-1]
        m = xp.max(z, axis=-1, keepdims=True) if row_max is None else row_max[..., None]
        s = z - m
        # sums over the short class axis as products with ones: one BLAS call, not a
        # strided reduction per row
        ones_c = xp.ones((c,), dtype=z.dtype, device=device_of(z))
        ones_n = xp.ones((n,), dtype=z.dtype, device=device_of(z))
        lse = xp.log(xp.exp(s) @ ones_c)  # log-sum-exp of each shifted row, (..., N)
        if z.ndim == 2:
            target = xp.sum(s * T)
        else:
            stack = xp.reshape(s, (math.prod(z.shape[:-2]), n * c))
            target = xp.reshape(stack @ xp.reshape(T, (n * c,)), z.shape[:-2])
        return (lse @ ones_n - target) / n


class BinaryCrossEntropy(_LogitLoss):
    """Logistic loss of one sigmoid output unit, computed from its logit:
    mean of max(z, 0) - z * t + log1p(exp(-|z|)). Gradient: (sigmoid(z) - t) / N.
    """

    name = "binary_cross_entropy"
    min_outputs = 1
    max_outputs = 1

    def output(self, z):
        """Probability of class 1, sigmoid(z), (N, 1)."""
        xp = self.xp
        e = xp.exp(-xp.abs(z))
        return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def value(self, z, T):
        xp = self.xp
        per = xp.maximum(z, xp.zeros_like(z)) - z * T + xp.log1p(xp.exp(-xp.abs(z)))
        return xp.sum(per, axis=(-2, -1)) / z.shape[-2]


class MeanSquaredError:
    """mean over all elements of (z - T)^2, as torch.nn.MSELoss. Gradient: 2 (z - T) / (N * C)."""

    name = "mse"
    min_outputs = 1

    def __init__(self, xp):
        self.xp = xp
        self.diff = None

    def output(self, z):
        return z

    def value(self, z, T):
        d = z - T
        return self.xp.sum(d * d, axis=(-2, -1)) / (T.shape[0] * T.shape[1])

    def forward(self, z, T):
        self.diff = z - T
        return self.xp.sum(self.diff * self.diff) / (T.shape[0] * T.shape[1])

    def backward(self):
        return 2.0 * self.diff / (self.diff.shape[0] * self.diff.shape[1])

    def gradient(self, z, T):
        """dL/dz without evaluating the loss."""
        self.diff = z - T
        return 2.0 * self.diff / (T.shape[0] * T.shape[1])


#: loss name -> loss class
LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "mse": MeanSquaredError,
}


def make_loss(name: str, xp):
    if not isinstance(name, str) or name.lower() not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(sorted(LOSSES))}")
    return LOSSES[name.lower()](xp)


def _plain(cls, z, t):
    """Validate (z, t) as the network does, then evaluate the loss."""
    xp = array_api_compat.array_namespace(z, t)
    if z.ndim != 2 or z.shape[0] == 0 or not xp.isdtype(z.dtype, "real floating"):
        raise ValueError(f"z must be a non-empty floating (N, C) array, got shape "
                         f"{tuple(z.shape)} and dtype {z.dtype}")
    T = prepare_targets(xp, device_of(z), z.dtype, cls.name, z.shape[1], t, z.shape[0])
    return cls(xp).value(z, T)


def softmax_cross_entropy(z, t):
    """Batch-mean softmax cross-entropy of logits z (N, C) against integer labels
    t (N,) or one-hot rows t (N, C)."""
    return _plain(SoftmaxCrossEntropy, z, t)


def binary_cross_entropy(z, t):
    """Batch-mean logistic loss of logits z (N, 1) against 0/1 labels t (N,) or (N, 1)."""
    return _plain(BinaryCrossEntropy, z, t)


def mse(y, t):
    """Mean over all elements of (y - t)^2; y: (N, C), t: (N, C) or (N,) when C == 1."""
    return _plain(MeanSquaredError, y, t)
