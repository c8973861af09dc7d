"""The two seams xpnn.dist codes against, with stand-ins until they land on main.

* the numerical-gradient chunk API of ``xpnn.nn.numerical``: ``plan``,
  ``forward_cache``, ``chunk_gradient``, ``assemble``;
* ``net.to_config()`` / ``MLP.from_config(config, params=...)``.

Each name is taken from xpnn.nn when it is there; the stand-ins below compute exactly
what the announced functions compute, from the functions main already has. Delete
them once main has the real ones.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from ..nn import numerical as _numerical
from ..nn.mlp import MLP

Chunk = getattr(_numerical, "Chunk", None) or namedtuple("Chunk", "key start stop")


def _plan(net, n_rows: int, memory_budget=None) -> list:
    budget = _numerical._budget(net, memory_budget)
    chunks = []
    for key, value in net.params.items():
        n = math.prod(value.shape)
        step = _numerical._chunk_size(net, int(key[1:]) - 1, n_rows, budget)
        chunks += [Chunk(key, s, min(n, s + step)) for s in range(0, n, step)]
    return chunks


def _forward_cache(net, x):
    return _numerical._Cache(net, x)


def _chunk_gradient(net, x, T, chunk, h: float, cache):
    xp = net.xp
    dev = net.device
    n = chunk.stop - chunk.start
    idx = xp.arange(chunk.start, chunk.stop, device=dev)
    deltas = xp.concat([xp.full((n,), h, dtype=net.dtype, device=dev),
                        xp.full((n,), -h, dtype=net.dtype, device=dev)])
    losses = _numerical.perturbed_losses(net, x, T, chunk.key, xp.concat([idx, idx]),
                                         deltas, cache)
    return (losses[:n] - losses[n:]) / (2 * h)


def _assemble(net, parts: dict) -> dict:
    xp = net.xp
    grads = {}
    for key, value in net.params.items():
        g = xp.reshape(xp.concat(parts[key]) if len(parts[key]) > 1 else parts[key][0],
                       value.shape)
        if key[0] == "W" and net.weight_decay:
            g = g + net.weight_decay * value
        grads[key] = g
    return grads


def _to_config(net) -> dict:
    init = net.weight_init
    return {"sizes": list(net.sizes), "activation": list(net.activations),
            "loss": net.loss_name, "weight_decay": net.weight_decay,
            "weight_init": init if isinstance(init, (str, int, float)) else 0.01,
            "dtype": net.dtype_name}


def _from_config(config: dict, params=None, backend=None, device=None, dtype=None):
    net = MLP(config["sizes"], activation=config["activation"], loss=config["loss"],
              weight_init=config["weight_init"], weight_decay=config["weight_decay"],
              backend=backend, device=device, dtype=dtype or config["dtype"])
    if params is not None:
        for key, value in net.params.items():
            host = np.asarray(params[key])
            if host.shape != tuple(value.shape) or host.dtype.name != net.dtype_name:
                raise ValueError(f"parameter {key}: got {host.dtype.name} {host.shape}, the "
                                 f"config needs {net.dtype_name} {tuple(value.shape)}")
            if not np.all(np.isfinite(host)):
                raise ValueError(f"parameter {key} contains NaN or inf")
            net.params[key] = net._to_device(host, net.device)
    return net


plan = getattr(_numerical, "plan", _plan)
forward_cache = getattr(_numerical, "forward_cache", _forward_cache)
chunk_gradient = getattr(_numerical, "chunk_gradient", _chunk_gradient)
assemble = getattr(_numerical, "assemble", _assemble)


def to_config(net) -> dict:
    return net.to_config() if hasattr(net, "to_config") else _to_config(net)


def from_config(config, params=None, backend=None, device=None, dtype=None):
    build = getattr(MLP, "from_config", _from_config)
    return build(config, params=params, backend=backend, device=device, dtype=dtype)
