"""Small generated problems shared by the tests."""

from __future__ import annotations

import numpy as np

import xpnn


def problem(backend, sizes, loss="softmax_cross_entropy", n=5, seed=0, dtype="float64",
            activation="tanh", weight_init=0.7, weight_decay=0.0):
    """A net plus (x, t) on ``backend`` = (name, device), all from ``seed``."""
    name, device = backend
    net = xpnn.MLP(sizes, activation=activation, loss=loss, weight_init=weight_init,
                   weight_decay=weight_decay, backend=name, device=device, dtype=dtype,
                   seed=seed)
    rng = np.random.default_rng(seed + 1000)
    x = rng.standard_normal((n, sizes[0]))
    if loss == "softmax_cross_entropy":
        t = rng.integers(0, sizes[-1], n)
    elif loss == "binary_cross_entropy":
        t = rng.integers(0, 2, n)
    else:
        t = rng.standard_normal((n, sizes[-1]))
    xb = xpnn.asarray(x, backend=name, device=device, dtype=dtype)
    tb = xpnn.asarray(t, backend=name, device=device)
    return net, xb, tb


def host(grads):
    return {k: xpnn.to_numpy(v).astype(np.float64) for k, v in grads.items()}


def host_leaves(tree, prefix: str = "") -> dict:
    """{"opt/W1/v": host copy, ...}: every array of a nest of dicts (a step's state),
    keyed by its path, in sorted-key order, with its dtype kept."""
    if isinstance(tree, dict):
        out = {}
        for key in sorted(tree):
            out.update(host_leaves(tree[key], f"{prefix}{key}/"))
        return out
    return {prefix.rstrip("/"): np.array(xpnn.to_numpy(tree))}


def counting_update(optimizer) -> list:
    """Wrap ``optimizer.transform.update`` (the validating one) to count its calls in
    the returned list; its unchecked half stays what ``checked_parts`` finds."""
    calls = []
    update = optimizer.transform.update

    def counting(*args):
        calls.append(1)
        return update(*args)

    counting.check, counting.apply = update.check, update.apply
    optimizer.transform = optimizer.transform._replace(update=counting)
    return calls
