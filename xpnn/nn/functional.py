"""The network as pure functions: ``forward(arch, params, x) -> (logits, cache)`` and
``backward(arch, params, cache, dlogits) -> grads``.

``arch`` (an ``Architecture``) is static configuration: the stateless layer objects,
the loss object and the weight decay. ``params`` is a dict ``W1, b1, W2, b2, ...``.
Nothing is written to any object: every result is returned, so one training step
is a function of (params, batch) and runs eagerly, under ``jax.jit`` or
``torch.compile`` alike. ``xpnn.MLP`` is the book-style shell over these.

The network is the block sequence Affine, activation, Affine, ..., Affine; its
output (the last affine's, "logits") goes to the loss.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

__all__ = [
    "Architecture",
    "accuracy",
    "backward",
    "forward",
    "gradient",
    "logits_from",
    "loss",
    "loss_and_accuracy",
    "predict",
    "predict_labels",
    "regularization",
    "value_and_gradient",
]


class Architecture(NamedTuple):
    """Static description of an MLP: ``affine`` (an ``Affine`` block), ``activations``
    (one activation block per hidden layer), ``loss`` (a loss object) and
    ``weight_decay`` (adds 0.5 * weight_decay * sum ||W||^2)."""

    affine: object
    activations: tuple
    loss: object
    weight_decay: float

    @property
    def n_layers(self) -> int:
        """Number of affine layers."""
        return len(self.activations) + 1


@functools.cache
def _layer_keys(n: int) -> tuple:
    """(("W1", "b1"), ("W2", "b2"), ...) for ``n`` layers, made once per n: the
    parameter names are looked up every step, formatting them is host time."""
    return tuple((f"W{i}", f"b{i}") for i in range(1, n + 1))


def forward(arch: Architecture, params: dict, x, keep_pre: bool = False):
    """Logits (N, n_out) of a batch x (N, d_0), and the cache ``backward`` needs.

    The cache holds, per affine layer i, ``(input_i, pre_activation_i,
    activation_cache_i)``. The pre-activations are kept only with ``keep_pre`` (the
    batched numerical gradient reuses them); backprop does not need them, and holding
    them would keep an extra (N, d) array alive per layer until the backward pass.
    """
    cache = []
    h = x
    keys = _layer_keys(arch.n_layers)
    last = len(keys) - 1
    affine, activations = arch.affine, arch.activations
    for i, (w, b) in enumerate(keys):
        a, x_in = affine.forward(params[w], params[b], h)
        if i < last:
            h, act_cache = activations[i].forward(a)
        else:
            act_cache = None
        cache.append((x_in, a if keep_pre or i == last else None, act_cache))
    return a, tuple(cache)


def logits_from(arch: Architecture, params: dict, a, layer: int):
    """Logits of pre-activations ``a`` (..., N, d) of affine layer ``layer`` (0-based)
    forwarded through the blocks above it; a stack (P, N, d) gives (P, N, n_out)."""
    for i in range(layer, arch.n_layers - 1):
        h = arch.activations[i].function(a)
        a, _ = arch.affine.forward(params[f"W{i + 2}"], params[f"b{i + 2}"], h)
    return a


def backward(arch: Architecture, params: dict, cache, dlogits) -> dict:
    """Gradients of the loss (weight decay included) with the keys of ``params``, from
    the cache of ``forward`` and dL/dlogits (N, n_out)."""
    grads = {}
    dout = dlogits
    keys = _layer_keys(arch.n_layers)
    affine, activations, decay = arch.affine, arch.activations, arch.weight_decay
    for i in range(len(keys) - 1, -1, -1):
        w, b = keys[i]
        W = params[w]
        dx, dW, db = affine.backward(W, cache[i][0], dout, input_grad=i > 0)
        if decay:
            dW = dW + decay * W
        grads[w], grads[b] = dW, db
        if i > 0:
            dout = activations[i - 1].backward(cache[i - 1][2], dx)
    return {k: grads[k] for k in params}  # the order of params


def regularization(arch: Architecture, params: dict):
    """0.5 * weight_decay * sum of ||W||^2 over the weight matrices (0.0 without decay)."""
    if not arch.weight_decay:
        return 0.0
    total = 0.0
    for i in range(1, arch.n_layers + 1):
        W = params[f"W{i}"]
        total = total + arch.affine.xp.sum(W * W)
    return 0.5 * arch.weight_decay * total


def loss(arch: Architecture, params: dict, x, T):
    """Batch-mean loss plus weight decay, a 0-d array. T: encoded targets (N, n_out)."""
    logits, _ = forward(arch, params, x)
    return arch.loss.value(logits, T) + regularization(arch, params)


def gradient(arch: Architecture, params: dict, x, T) -> dict:
    """Backprop gradient of ``loss``; dL/dlogits comes straight from the logits, so the
    loss value itself is never evaluated."""
    logits, cache = forward(arch, params, x)
    return backward(arch, params, cache, arch.loss.gradient(logits, T))


def value_and_gradient(arch: Architecture, params: dict, x, T):
    """(loss, gradient) from one forward pass."""
    logits, cache = forward(arch, params, x)
    value = arch.loss.value(logits, T) + regularization(arch, params)
    return value, backward(arch, params, cache, arch.loss.gradient(logits, T))


def predict(arch: Architecture, params: dict, x):
    """The loss's output: softmax or sigmoid probabilities, raw values for mse."""
    logits, _ = forward(arch, params, x)
    return arch.loss.output(logits)


def predict_labels(arch: Architecture, params: dict, x):
    """Predicted class labels (N,), integers (classification losses only)."""
    logits, _ = forward(arch, params, x)
    return arch.loss.labels(logits)


def accuracy(arch: Architecture, params: dict, x, T):
    """Fraction of correct predictions, a 0-d array (classification losses only)."""
    logits, _ = forward(arch, params, x)
    return arch.loss.accuracy(logits, T)


def loss_and_accuracy(arch: Architecture, params: dict, x, T):
    """(``loss``, ``accuracy``) from one forward pass; the accuracy is None when the loss
    has none (``arch.loss.has_accuracy`` false: mse). Both are 0-d arrays, the same
    values the two functions give separately."""
    logits, _ = forward(arch, params, x)
    value = arch.loss.value(logits, T) + regularization(arch, params)
    return value, (arch.loss.accuracy(logits, T) if arch.loss.has_accuracy else None)
