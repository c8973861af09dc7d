"""Dask: executors for parameter-parallel numerical gradients, and out-of-core
evaluation over a ``dask.array`` (``pip install 'xpnn[dask]'``).

    with dask_executor("tcp://scheduler:8786") as ex:      # or n_workers=2: a LocalCluster
        grads = net.numerical_gradient(x, t, executor=ex)

    probs = predict(net, x_big)            # x_big: dask.array (N, d), any row chunks
    acc = accuracy(net, x_big, t_big)      # one pass, block by block

Blocks go through the network's own forward (``map_blocks``); on a distributed
cluster each worker rebuilds the network once from its config and host parameters.
A worker that dies while computing a task is replaced and the task rerun by Dask
(``distributed.scheduler.allowed-failures``); the tasks are pure, so the result is
the same.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..backend import to_numpy
from ..nn import functional as F
from .executor import model_payload, worker_net

__all__ = ["accuracy", "dask_executor", "evaluate", "predict"]


def _dask():
    try:
        import dask.array as da
    except ImportError as exc:
        raise ImportError(f"this needs dask: pip install 'xpnn[dask]' ({exc})") from None
    return da


@contextlib.contextmanager
def dask_executor(address=None, n_workers: int | None = None, threads_per_worker: int = 1,
                  **cluster_kwargs):
    """A ``concurrent.futures.Executor`` backed by a Dask cluster.

    address    a running scheduler ("tcp://host:8786"); None starts a LocalCluster of
               ``n_workers`` worker processes (default: the CPU count) that is closed
               on exit
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError(
            f"Dask executors need dask.distributed: pip install 'xpnn[dask]' ({exc})"
        ) from None
    if address is not None and n_workers is not None:
        raise ValueError("give a scheduler address or n_workers for a local cluster, not both")
    if address is not None:
        with Client(address) as client:
            yield client.get_executor()
        return
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                      processes=True, dashboard_address=":0", **cluster_kwargs) as cluster, \
            Client(cluster) as client:
        yield client.get_executor()


# -- out-of-core evaluation --------------------------------------------------------------

def _rows(x, n_features: int, what: str):
    da = _dask()
    if not isinstance(x, da.Array):
        raise TypeError(f"{what} must be a dask.array, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"{what} must have shape (N, {n_features}), got {x.shape}")
    return x.rechunk({1: -1})  # whole rows per block


def _to_net(net, block):
    return net.xp.asarray(np.asarray(block, dtype=net.dtype_name), device=net.device)


def _predict_block(block, payload):
    net = worker_net(payload)
    return to_numpy(F.predict(net.arch, net.params, _to_net(net, block)))


def predict(net, x):
    """Outputs (probabilities; raw values for mse) for a dask.array ``x`` (N, d), as a
    lazy dask.array (N, n_out) in the network's dtype; ``.compute()`` it or store it."""
    x = _rows(x, net.sizes[0], "x")
    payload = model_payload(net)
    return x.map_blocks(_predict_block, payload, dtype=net.dtype_name,
                        chunks=(x.chunks[0], (net.sizes[-1],)))


def _totals_block(block, t_block, payload):
    """(1, 2): the block's loss (with weight decay) and correct predictions, each
    summed over its rows."""
    net = worker_net(payload)
    xb = _to_net(net, block)
    t_host = np.asarray(t_block)
    t_arg = t_host[:, 0] if t_host.shape[1] == 1 and net.sizes[-1] > 1 else t_host
    T = net.prepare_targets(net.xp.asarray(t_arg, device=net.device), xb.shape[0])
    logits, _ = F.forward(net.arch, net.params, xb)
    n = xb.shape[0]
    loss = float(net.loss_fn.value(logits, T) + F.regularization(net.arch, net.params))
    hits = float(net.loss_fn.accuracy(logits, T)) if net.loss_fn.has_accuracy else 0.0
    return np.array([[loss * n, hits * n]], dtype=np.float64)


def evaluate(net, x, t, compute: bool = True):
    """Mean loss (with weight decay) and accuracy (None for mse) over dask.arrays ``x``
    (N, d) and ``t`` (labels (N,) or targets (N, n_out)) in one pass over the blocks.
    ``compute=False`` returns the lazy (n_blocks, 2) totals instead."""
    da = _dask()
    x = _rows(x, net.sizes[0], "x")
    if not isinstance(t, da.Array):
        raise TypeError(f"t must be a dask.array, got {type(t).__name__}")
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but t has {t.shape[0]}")
    t2 = t[:, None] if t.ndim == 1 else t
    t2 = t2.rechunk((x.chunks[0], -1))
    payload = model_payload(net)
    totals = da.map_blocks(_totals_block, x, t2, payload, dtype=np.float64,
                           chunks=((1,) * len(x.chunks[0]), (2,)))
    if not compute:
        return totals
    loss_sum, hits = to_numpy(totals.sum(axis=0).compute())
    n = x.shape[0]
    return loss_sum / n, (hits / n if net.loss_fn.has_accuracy else None)


def accuracy(net, x, t) -> float:
    """Fraction of correct predictions over dask.arrays ``x`` (N, d) and ``t``."""
    if not net.loss_fn.has_accuracy:
        raise ValueError("accuracy is not defined for the regression loss 'mse'")
    return evaluate(net, x, t)[1]
