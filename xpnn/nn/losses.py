"""Output losses, as stateless objects that own everything that differs between
them: how user targets are encoded, the output (probabilities or raw values), the
loss value, its gradient with respect to the logits and the accuracy.

Each takes the last affine layer's output ``z`` (logits, or raw values for ``mse``)
and encoded targets ``T`` of the same shape (N, C), and returns the batch mean.
``value`` also works on stacks ``z`` of shape (..., N, C) with one ``T`` (N, C),
returning one loss per leading index, and ``rank1_value`` takes the stack as an
(N, C) array and P rank-1 updates of it: that is what the batched numerical gradient
evaluates. Every product goes through ``self.matmul`` (2-D), which a compiled CuPy
step swaps for a capturable GEMM, as ``xpnn.nn.Affine.matmul``.

The plain functions ``softmax_cross_entropy``, ``binary_cross_entropy`` and ``mse``
take (z, t) arrays directly.
"""

from __future__ import annotations

import math
import operator

import array_api_compat

from .._validation import check_floating, prepare_targets
from ..backend import device_of


class Loss:
    """Base: ``forward(z, T) -> (loss, cache)`` and ``backward(cache) -> dL/dz`` in the
    book's style, ``gradient(z, T)`` for dL/dz without the loss value."""

    name = "loss"
    min_outputs = 1
    max_outputs = None
    has_accuracy = False

    def __init__(self, xp, zero=0.0):
        self.xp = xp
        # a 0-d zero of the network's dtype on its device, as the activations get
        # (xpnn.nn.layers): comparing with or taking maxima against a Python 0.0
        # builds a tensor per call on some backends
        self.zero = zero
        # every matrix product of a loss goes through ``self.matmul`` (2-D operands),
        # the seam where a compiled step swaps in a capturable GEMM (xpnn.compile's
        # CuPy route), as ``xpnn.nn.Affine.matmul``
        self.matmul = operator.matmul

    @classmethod
    def check_outputs(cls, n_out: int) -> None:
        if n_out < cls.min_outputs or (cls.max_outputs is not None and n_out > cls.max_outputs):
            need = ("exactly 1 output" if cls.max_outputs == 1
                    else f"at least {cls.min_outputs} outputs")
            raise ValueError(f"loss {cls.name!r} needs {need}, but sizes ends in {n_out}")

    def forward(self, z, T):
        return self.value(z, T), (z, T)

    def rank1_value(self, base, left, right, T, row_max=None, scratch=None):
        """Loss of each ``z[p] = base + left[p][:, None] * right[p][None, :]`` (the
        logits of perturbation p: base (N, C), left (P, N), right (P, C)): (P,).
        ``row_max`` (N,): max(base, axis=1) when known. ``scratch``: a
        ``xpnn.nn.numerical.Workspace`` for the (P, N, C) stacks. This default builds
        the stack and takes ``value``; a loss may compute it with fewer passes."""
        return self.value(rank1(self.xp, base, left, right, scratch), T, scratch=scratch)

    def _sum_last(self, a):
        """Sums over the last axis of ``a`` (..., K) as one 2-D product with ones
        through ``self.matmul``: (...,). One BLAS call, not a strided reduction per
        row."""
        xp = self.xp
        k = a.shape[-1]
        ones = xp.ones((k, 1), dtype=a.dtype, device=device_of(a))
        flat = self.matmul(xp.reshape(a, (math.prod(a.shape[:-1]), k)), ones)
        return xp.reshape(flat, a.shape[:-1])

    def backward(self, cache):
        return self.gradient(*cache)

    def accuracy(self, z, T):
        raise ValueError(f"accuracy is not defined for the regression loss {self.name!r}")

    def labels(self, z):
        """Predicted class labels (N,) from logits (N, n_out): integers of the
        namespace's default index dtype (what ``argmax`` returns)."""
        raise ValueError(f"class labels are not defined for the regression loss "
                         f"{self.name!r}; use predict() for its outputs")


class _LogitLoss(Loss):
    """Shared by the two classification losses: dL/dz = (output(z) - T) / N."""

    has_accuracy = True

    def gradient(self, z, T):
        return (self.output(z) - T) / T.shape[0]


class SoftmaxCrossEntropy(_LogitLoss):
    """mean over the batch of -sum_k T[n, k] * log softmax(z[n])_k.

    Exact log-softmax (shift by the row maximum), so logits of +-1e4 give a finite
    loss; there is no ``+ 1e-7`` fudge. Gradient: (softmax(z) - T) / N. Targets:
    integer labels (N,) in [0, C) or rows (N, C) of a probability distribution
    (one-hot, or soft labels: entries >= 0 summing to 1).
    """

    name = "softmax_cross_entropy"
    min_outputs = 2

    def output(self, z):
        """Probabilities softmax(z), (N, C)."""
        xp = self.xp
        e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def value(self, z, T, row_max=None, scratch=None):
        """Loss of z (N, C) or of each z[p] in a stack (P, N, C).

        ``row_max`` (..., N), if given, replaces max(z, axis=-1) as the log-sum-exp
        shift; any value within a few hundred of the true maximum is exact. With
        ``scratch`` (an ``xpnn.nn.numerical.Workspace`` holding z) the shifted stack
        and its exponential overwrite z; the values are the same.
        """
        xp = self.xp
        n, c = z.shape[-2], z.shape[-1]
        m = xp.max(z, axis=-1, keepdims=True) if row_max is None else row_max[..., None]
        s = z - m if scratch is None else scratch("subtract", z, m)
        lead = z.shape[:-2]
        # sum_k T[n, k] * s[..., n, k] over (n, k): one product with the flattened T
        flat_T = xp.reshape(T, (n * c, 1))
        target = xp.reshape(
            self.matmul(xp.reshape(s, (math.prod(lead), n * c)), flat_T), lead)
        e = xp.exp(s) if scratch is None else scratch("exp", s)
        lse = xp.log(self._sum_last(e))  # log-sum-exp of each shifted row, (..., N)
        return (self._sum_last(lse) - target) / n

    def rank1_value(self, base, left, right, T, row_max=None, scratch=None):
        """``Loss.rank1_value`` in four passes over the (P, N, C) stack (the rank-1
        update's multiply and add, exp, row sums); ``value`` on the built stack takes
        six (the same two, shift, target, exp, row sums).

        * The shift is the unperturbed row maximum m (N,), folded into base before
          the rank-1 update: s = (base - m) + left * right, so no pass subtracts it.
        * The target term needs no pass: sum_k T[n, k] s[p, n, k] =
          sum_k T[n, k] (base - m)[n, k] + left[p, n] * (right @ T.T)[p, n].

        Overflow: with B[p, n] = |left[p, n]| * max_k |right[p, k]|, every s is at
        most B (base - m <= 0) and each row's largest s is at least -B (the unperturbed
        arg max has base - m = 0). So exp neither overflows nor underflows a whole row
        (log(0)) while B < log(finfo.max): 709 in float64, 88 in float32. The per-(p, n)
        bound m + B that ``value`` was given before was exact only while the whole row
        stayed within the smallest subnormal's exponent of it, 2B < 744 (float64) /
        103 (float32): B < 372 / 51. Folding the shift is safe over a wider range
        (tests/test_numerical_passes.py checks it)."""
        xp = self.xp
        n = base.shape[0]
        m = xp.max(base, axis=1) if row_max is None else row_max
        shifted = base - m[:, None]  # (N, C), <= 0
        s = rank1(xp, shifted, left, right, scratch)  # (P, N, C) logits less m
        e = xp.exp(s) if scratch is None else scratch("exp", s)
        lse = xp.log(self._sum_last(e))  # (P, N)
        # sum_k T (z - m): (N,) shared by every p, plus the rank-1 part (P, C) @ (C, N)
        target = (xp.sum(shifted * T, axis=1)[None, :]
                  + left * self.matmul(right, xp.permute_dims(T, (1, 0))))
        return self._sum_last(lse - target) / n

    def accuracy(self, z, T):
        xp = self.xp
        hit = xp.argmax(z, axis=-1) == xp.argmax(T, axis=-1)
        return xp.mean(xp.astype(hit, z.dtype))

    def labels(self, z):
        return self.xp.argmax(z, axis=-1)

    def encode_targets(self, t, n_out: int, dtype):
        xp = self.xp
        if t.ndim == 1:
            if not xp.isdtype(t.dtype, "integral"):
                raise TypeError(
                    f"class labels must be integers, got dtype {t.dtype}; pass int labels "
                    f"or one-hot rows of width {n_out}"
                )
            labels = xp.astype(t, xp.int64)
            lo, hi = int(xp.min(labels)), int(xp.max(labels))
            if lo < 0 or hi >= n_out:
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
        check_floating(xp, T, "t")
        # one-hot or soft labels: a probability distribution per row
        sums = xp.sum(T, axis=1)
        tol = 1e-3 if dtype == xp.float32 else 1e-6
        bad = xp.logical_or(xp.any(T < 0, axis=1), xp.abs(sums - 1.0) > tol)
        if bool(xp.any(bad)):
            row = int(xp.argmax(xp.astype(bad, xp.int32)))
            raise ValueError(
                f"2-D targets must be one-hot (or probability) rows: entries >= 0 summing "
                f"to 1, but row {row} sums to {float(sums[row]):g}"
                + (" and has negative entries" if bool(xp.any(T[row, :] < 0)) else "")
                + "; pass integer labels (N,) or one-hot rows"
            )
        return T


class BinaryCrossEntropy(_LogitLoss):
    """Logistic loss of one sigmoid output unit, computed from its logit:
    mean of max(z, 0) - z * t + log1p(exp(-|z|)). Gradient: (sigmoid(z) - t) / N.
    Targets: 0/1 labels (N,) or (N, 1), integer or floating.
    """

    name = "binary_cross_entropy"
    min_outputs = 1
    max_outputs = 1

    def output(self, z):
        """Probability of class 1, sigmoid(z), (N, 1)."""
        xp = self.xp
        e = xp.exp(-xp.abs(z))
        return xp.where(z >= self.zero, 1.0 / (1.0 + e), e / (1.0 + e))

    def value(self, z, T, row_max=None, scratch=None):
        xp = self.xp
        per = xp.maximum(z, self.zero) - z * T + xp.log1p(xp.exp(-xp.abs(z)))
        return xp.sum(per, axis=(-2, -1)) / z.shape[-2]

    def accuracy(self, z, T):
        xp = self.xp
        hit = xp.astype(z[..., 0] > self.zero, z.dtype) == T[..., 0]
        return xp.mean(xp.astype(hit, z.dtype))

    def labels(self, z):
        xp = self.xp
        index = xp.__array_namespace_info__().default_dtypes()["indexing"]
        return xp.astype(z[..., 0] > self.zero, index)

    def encode_targets(self, t, n_out: int, dtype):
        xp = self.xp
        if t.ndim == 2 and t.shape[1] != 1:
            raise ValueError(f"binary labels must have shape (N,) or (N, 1), got {tuple(t.shape)}")
        T = xp.reshape(xp.astype(t, dtype), (t.shape[0], 1))
        if not bool(xp.all((T == 0) | (T == 1))):
            raise ValueError("binary_cross_entropy labels must be 0 or 1")
        return T


class MeanSquaredError(Loss):
    """mean over all elements of (z - T)^2, as torch.nn.MSELoss. Gradient: 2 (z - T) / (N * C).
    Targets: floating (N, C), or (N,) when C == 1."""

    name = "mse"

    def output(self, z):
        return z

    def value(self, z, T, row_max=None, scratch=None):
        d = z - T
        return self.xp.sum(d * d, axis=(-2, -1)) / (T.shape[0] * T.shape[1])

    def gradient(self, z, T):
        return 2.0 * (z - T) / (T.shape[0] * T.shape[1])

    def encode_targets(self, t, n_out: int, dtype):
        xp = self.xp
        if t.ndim == 1:
            if n_out != 1:
                raise ValueError(f"mse targets must have shape (N, {n_out}), got {tuple(t.shape)}")
            t = xp.reshape(t, (t.shape[0], 1))
        if t.shape[1] != n_out:
            raise ValueError(
                f"mse targets have width {t.shape[1]} but the network has {n_out} outputs"
            )
        T = xp.astype(t, dtype)
        check_floating(xp, T, "t")
        return T


#: loss name -> loss class
LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "mse": MeanSquaredError,
}


def check_loss(name) -> str:
    """The registry key for ``name``, or an error listing the choices."""
    if not isinstance(name, str) or name.lower() not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(sorted(LOSSES))}")
    return name.lower()


def rank1(xp, base, left, right, scratch=None):
    """``base[None] + left[:, :, None] * right[:, None, :]``: (P, N) x (P, d) onto
    (N, d), in ``scratch``'s buffer (an ``xpnn.nn.numerical.Workspace``) when given:
    the stack of P rank-1 updates of one (N, d) array. Two passes over the stack."""
    if scratch is None:
        return base[None, :, :] + left[:, :, None] * right[:, None, :]
    z = scratch("multiply", left[:, :, None], right[:, None, :])
    return scratch("add", z, base[None, :, :])


def make_loss(name: str, xp, zero=0.0):
    return LOSSES[check_loss(name)](xp, zero)


def _plain(cls, z, t):
    """Validate (z, t) as the network does, then evaluate the loss."""
    xp = array_api_compat.array_namespace(z, t)
    if z.ndim != 2 or z.shape[0] == 0 or not xp.isdtype(z.dtype, "real floating"):
        raise ValueError(f"z must be a non-empty floating (N, C) array, got shape "
                         f"{tuple(z.shape)} and dtype {z.dtype}")
    check_floating(xp, z, "z")
    loss = cls(xp)
    loss.check_outputs(z.shape[1])
    T = prepare_targets(xp, device_of(z), z.dtype, loss, z.shape[1], t, z.shape[0])
    return loss.value(z, T)


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
