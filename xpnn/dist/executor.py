"""Parameter-parallel numerical gradients.

The batched numerical gradient is a deterministic list of parameter chunks
(``xpnn.nn.numerical.plan``), each an independent set of central differences. Here
the list is cut into contiguous groups of about equal cost and the groups are
computed elsewhere:

* on the workers of any ``concurrent.futures.Executor`` (``ProcessPoolExecutor``,
  Dask's ``Client.get_executor()``, mpi4py's ``MPIPoolExecutor``): each task gets the
  network's config, host parameters, host x/T and h, rebuilds the network (checking
  the worker's xpnn version and dtype) and returns its chunks' differences;
* on the ranks of an ``xpnn.dist.Comm`` (all ranks call together, SPMD): rank r
  computes group r and one ``Allgatherv`` gives every rank every chunk.

Either way the chunks are the single-process ones, computed by the same code, so the
result equals ``net.numerical_gradient`` up to rounding (bitwise, on the same BLAS).
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import uuid

import numpy as np

from ..backend import to_numpy
from ..nn import numerical as _numerical
from ..nn.mlp import MLP
from .comm import Comm, SingleProcessComm

__all__ = ["numerical_gradient", "partition", "WorkerMismatchError"]


class WorkerMismatchError(RuntimeError):
    """A worker cannot compute a task as asked (other xpnn version, other dtype)."""


def _unit_cost(sizes, key: str) -> int:
    """Multiply-adds per row of one perturbation of an element of parameter ``key``:
    the rank-1 update of the next pre-activation, the full layers above it, the loss."""
    layer = int(key[1:]) - 1
    above = sum(sizes[i] * sizes[i + 1] for i in range(layer + 2, len(sizes) - 1))
    return sizes[min(layer + 2, len(sizes) - 1)] + above + 2 * sizes[-1]


def _cost(net, chunk) -> float:
    """Relative cost of a chunk: ``_unit_cost`` of its parameter times its length."""
    return (chunk.stop - chunk.start) * _unit_cost(net.sizes, chunk.key)


def partition(net, chunks, n_parts: int) -> list[list]:
    """Cut ``chunks`` (in order) into ``n_parts`` contiguous groups of about equal
    ``_cost``; deterministic. Groups may be empty when there are fewer chunks than
    parts."""
    if n_parts < 1:
        raise ValueError(f"the number of parts must be >= 1, got {n_parts}")
    unit = {key: _unit_cost(net.sizes, key) for key in {c.key for c in chunks}}
    each = np.fromiter(((c.stop - c.start) * unit[c.key] for c in chunks),
                       dtype=np.float64, count=len(chunks))
    ends = np.cumsum(each)
    total = ends[-1] if len(ends) else 0.0
    # a chunk goes to the part its cost midpoint falls in; the midpoints increase, so
    # the owners never decrease (the running maximum only makes that explicit) and
    # each part is the run of chunks between two cut points
    mids = ends - each / 2
    owner = np.minimum((mids * n_parts / max(total, 1e-300)).astype(int), n_parts - 1)
    owner = np.maximum.accumulate(owner) if len(owner) else owner
    cuts = [0, *np.searchsorted(owner, np.arange(1, n_parts), side="left").tolist(),
            len(chunks)]
    return [list(chunks[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


# -- the worker side -------------------------------------------------------------------

_WORKER_CACHE: dict = {}


def model_payload(net) -> dict:
    """What a worker needs to rebuild ``net``: config, host parameters, and the
    caller's xpnn version, backend and dtype (checked on the worker). ``token``
    identifies this state of the parameters (workers cache the rebuilt network)."""
    from .. import __version__

    return {
        "token": uuid.uuid4().hex,
        "xpnn": __version__,
        "backend": net.backend,
        "dtype": net.dtype_name,
        "config": net.to_config(),
        "params": {k: to_numpy(v) for k, v in net.params.items()},
    }


def _payload(net, x, T, h: float) -> dict:
    return {**model_payload(net), "x": to_numpy(x), "T": to_numpy(T), "h": float(h)}


def _check_worker(payload: dict) -> None:
    from .. import __version__

    if payload["xpnn"] != __version__:
        raise WorkerMismatchError(
            f"worker pid {os.getpid()} runs xpnn {__version__} but the task comes from xpnn "
            f"{payload['xpnn']}: install the same xpnn version on every worker"
        )
    wanted = payload["dtype"]
    arrays = [*payload["params"].items()] + [(k, payload[k]) for k in ("x", "T") if k in payload]
    for name, value in arrays:
        if np.asarray(value).dtype.name != wanted:
            raise WorkerMismatchError(
                f"worker pid {os.getpid()}: {name} arrived as {np.asarray(value).dtype.name} "
                f"but the network computes in {wanted}; refusing to mix dtypes"
            )


def _cached(kind: str, payload: dict, build):
    """``build()`` once per worker process, kind and payload token."""
    got = _WORKER_CACHE.get(kind)
    if got is not None and got[0] == payload["token"]:
        return got[1]
    value = build()
    _WORKER_CACHE[kind] = (payload["token"], value)
    return value


def keep_freed_memory() -> bool:
    """Stop glibc from handing freed memory back to the system after every chunk
    (M_TRIM_THRESHOLD 256 MiB, M_MMAP_THRESHOLD 32 MiB); True if it took effect.

    By default glibc trims the heap top whenever more than ~128 KiB-2x the largest
    freed block is free. The batched numerical gradient no longer depends on this (its
    chunks write into one reused workspace: on the seed net, 784-50-10 float64 batch
    100, a fresh process's direct call faults in ~460 pages, not ~490,000, see
    bench/results/numgrad-fresh-20261204.json); the setting still spares the other
    per-chunk temporaries of worker processes (pickled payloads, deeper layers'
    stacks), where it costs nothing. Dask
    workers are worse off: they start with MALLOC_TRIM_THRESHOLD_=65536, which also
    fixes the mmap threshold at 128 KiB. Applied in processes that exist to compute
    chunks only: executor workers, and the ranks of a multi-process ``Comm`` (MPI or
    torch.distributed processes started for the run), not in the caller's own process
    (``net.numerical_gradient``, ``SingleProcessComm``); a no-op off glibc."""
    if _WORKER_CACHE.get("malloc") is not None:
        return _WORKER_CACHE["malloc"]
    ok = False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = bool(libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)) and bool(
            libc.mallopt(M_MMAP_THRESHOLD, 32 << 20))
    except (OSError, AttributeError):
        ok = False
    _WORKER_CACHE["malloc"] = ok
    return ok


def worker_net(payload: dict):
    """The network of ``payload``, rebuilt on this worker after checking its xpnn
    version and dtype."""

    def build():
        _check_worker(payload)
        keep_freed_memory()
        net = MLP.from_config(payload["config"], params=payload["params"],
                                 backend=payload["backend"], dtype=payload["dtype"])
        if net.dtype_name != payload["dtype"]:
            raise WorkerMismatchError(
                f"worker pid {os.getpid()} built a {net.dtype_name} network for a "
                f"{payload['dtype']} task; refusing"
            )
        return net

    return _cached("net", payload, build)


def _worker_state(payload: dict):
    """The rebuilt network, x, T and forward cache of a gradient payload."""

    def build():
        net = worker_net(payload)
        x = net.xp.asarray(payload["x"], device=net.device)
        T = net.xp.asarray(payload["T"], device=net.device)
        return net, x, T, _numerical.forward_cache(net, x)

    return _cached("gradient", payload, build)


def compute_flat(net, x, T, chunks, h: float, cache) -> np.ndarray:
    """The central differences of ``chunks``, concatenated in order: one 1-d host
    array in the network's dtype (one device-to-host copy)."""
    if not chunks:
        return np.empty(0, dtype=net.dtype_name)
    parts = [_numerical.chunk_gradient(net, x, T, c, h, cache) for c in chunks]
    flat = net.xp.concat(parts) if len(parts) > 1 else parts[0]
    return np.ascontiguousarray(to_numpy(flat), dtype=net.dtype_name)


def chunk_task(payload: dict, chunks) -> np.ndarray:
    """Run on a worker: ``compute_flat`` of ``chunks`` for the payload's network."""
    net, x, T, cache = _worker_state(payload)
    return compute_flat(net, x, T, chunks, payload["h"], cache)


# -- the caller side -------------------------------------------------------------------


def dask_client(executor):
    """The ``dask.distributed.Client`` behind ``executor``, or None: the executor itself
    when it is a Client (anything with ``submit``, ``scatter`` and ``nthreads``), else
    the client of a ``Client.get_executor()`` executor, which distributed keeps in its
    ``_client`` attribute (it has no public accessor)."""
    if all(callable(getattr(executor, name, None)) for name in ("submit", "scatter", "nthreads")):
        return executor
    return getattr(executor, "_client", None)


def executor_workers(executor) -> int:
    """How many tasks ``executor`` runs at once (best effort; os.cpu_count() if it
    does not say)."""
    client = dask_client(executor)
    if client is not None:  # dask.distributed: the threads of all its workers
        return max(1, sum(client.nthreads().values()))
    for attr in ("num_workers", "_max_workers"):  # MPIPoolExecutor; concurrent.futures
        n = getattr(executor, attr, None)
        if isinstance(n, int) and n > 0:
            return n
    return os.cpu_count() or 1


def _assemble(net, chunks, flat: np.ndarray) -> dict:
    """The gradient from the concatenated differences ``flat`` of ``chunks``, which
    cover the parameters in order (a plan, or its groups concatenated): one host to
    device copy of ``flat``, then one slice per parameter (not one copy per chunk)."""
    sizes = {k: math.prod(v.shape) for k, v in net.params.items()}
    reached: dict | None = {}  # key -> end of its chunks so far, in order of appearance
    last = None
    for c in chunks:
        if (c.key != last and c.key in reached) or reached.get(c.key, 0) != c.start:
            reached = None  # a parameter resumed after another one, a gap or an overlap
            break
        reached[c.key], last = c.stop, c.key
    if reached is None or list(reached.items()) != list(sizes.items()):
        raise RuntimeError("the chunks do not cover the parameters once each, in order")
    n = sum(sizes.values())
    if flat.shape != (n,):
        raise RuntimeError(f"the chunks came back with shape {flat.shape}, expected ({n},)")
    whole = net.xp.asarray(np.ascontiguousarray(flat, dtype=net.dtype_name), device=net.device)
    parts, start = {}, 0
    for k, size in sizes.items():
        parts[k] = [whole[start : start + size]]
        start += size
    return _numerical.assemble(net, parts)


def _share(executor, payload):
    """Dask: put the payload on every worker once (every task then refers to it)
    instead of pickling it into each task; a copy on every worker survives the loss
    of any one of them. It goes as one object under a fresh key: scattering the dict
    itself makes one future per entry under the entry's name ("params", "x", ...),
    and a later call reusing those names while the scheduler releases the old ones
    lost the data when a worker died ("computation on lost data", a cancelled
    future instead of a retried task)."""
    client = dask_client(executor)
    if client is None:
        return payload
    return client.scatter([payload], broadcast=True, hash=False)[0]


def _by_executor(net, x, T, h, executor, chunks, tasks) -> dict:
    groups = [g for g in partition(net, chunks, tasks) if g]
    shared = _share(executor, _payload(net, x, T, h))
    submit = executor.submit
    if dask_client(executor) is executor:
        # a Client's submit is pure by default (equal arguments share one key and one
        # cached result); here every call is a fresh task
        submit = functools.partial(executor.submit, pure=False)
    futures = [submit(chunk_task, shared, g) for g in groups]
    try:
        flats = [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return _assemble(net, [c for g in groups for c in g], np.concatenate(flats))


def _by_comm(net, x, T, h, comm: Comm, chunks) -> dict:
    if not isinstance(comm, SingleProcessComm):
        keep_freed_memory()  # a rank is a dedicated process, like a pool worker
    mine = partition(net, chunks, comm.size)[comm.rank]
    flat = compute_flat(net, x, T, mine, h, _numerical.forward_cache(net, x))
    # the groups are contiguous and in rank order: the gathered values are in chunk order
    return _assemble(net, chunks, comm.allgatherv(flat))


def numerical_gradient(net, x, T, h=None, executor=None, memory_budget=None, tasks=None):
    """Central-difference gradient of ``net``'s loss at validated ``x`` (N, d) and
    prepared targets ``T`` (N, n_out), parameter chunks computed in parallel.

    executor       a ``concurrent.futures.Executor`` or a ``dask.distributed.Client``
                   (tasks go to its workers), an
                   ``xpnn.dist.Comm`` (SPMD: every rank calls this with the same
                   arguments and gets the whole gradient), or None (this process)
    h              step (default ``net.default_h()``)
    memory_budget  bytes per chunk, as for ``net.numerical_gradient``
    tasks          groups of chunks to submit (executor only; default: the executor's
                   worker count)

    Returns a dict like ``net.params`` of backend arrays.
    """
    h = _numerical.check_h(net, h)
    if executor is None:
        return _numerical.mlp_numerical_gradient(net, x, T, h, memory_budget)
    chunks = _numerical.plan(net, int(x.shape[0]), memory_budget)
    if isinstance(executor, Comm):
        return _by_comm(net, x, T, h, executor, chunks)
    if isinstance(executor, concurrent.futures.Executor) or callable(
        getattr(executor, "submit", None)
    ):
        if tasks is None:
            tasks = executor_workers(executor)
        if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
            raise ValueError(f"tasks must be a positive integer, got {tasks!r}")
        return _by_executor(net, x, T, h, executor, chunks, tasks)
    raise TypeError(
        f"executor must be a concurrent.futures.Executor, an xpnn.dist.Comm or None, "
        f"got {type(executor).__name__}"
    )
