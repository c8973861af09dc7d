"""BLAS/OpenMP thread pools for the ``xpnn`` commands that compute, set with threadpoolctl.

The library (``xpnn.train``) never touches the pools: they are the user's. The command
line sets them for the length of the command, because the default (one thread per
core in every pool) is what made the headline MNIST run 10x slower on a busy 2-core
machine (56 s instead of 5.6 s).

``--threads N`` sets every pool to N; ``--threads 0`` leaves the pools alone; without
the flag :func:`auto_threads` picks the count from the work of one matrix product:

* below :data:`SMALL_GEMM` multiply-adds in the largest matrix product of a step
  (the book's 784-50-10 net at batch 100 has 100*784*50 = 3.9e6), 1 thread: splitting
  a product that small costs more in waking and syncing threads than it saves;
* else the cores that are not busy already (usable cores minus the 1-minute load
  average, rounded), shared among the MPI ranks of the run, at least 1.

Measured on the 2-core development machine while other jobs ran on it (load average 3
to 7.5), MNIST, NumPy with OpenBLAS, float32, best of 3: the seed net (batch 100) took
0.74 s per 1000 iterations with 1 thread and 9.45 s with 2; batch 1000 (200 iterations)
2.53 s vs 8.06 s; hidden 1000 at batch 100 (300 iterations) 5.88 s vs 13.32 s; hidden
4000 at batch 1000 (3.1e9 multiply-adds per product, 10 iterations) 20.7 s vs 26.7 s.
So on a busy machine 1 thread won at every size tried, which the load-average rule
gives; the threshold for an idle machine is a choice (not measured here: the
development machine is never idle).
"""

from __future__ import annotations

import contextlib
import os

__all__ = [
    "SMALL_GEMM", "auto_threads", "gemm_work", "limit_threads", "plan_threads", "usable_cores",
]

#: multiply-adds of the largest matrix product below which one thread is used
SMALL_GEMM = 10**8


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return 0.0


def gemm_work(sizes, rows: int) -> int:
    """Multiply-adds of the largest matrix product in a step of an MLP with layer
    ``sizes`` on ``rows`` rows (the batch)."""
    return rows * max(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))


def auto_threads(work: int, ranks: int = 1, *, cores: int | None = None,
                 load: float | None = None) -> int:
    """The thread count the CLI uses for a step whose largest product has ``work``
    multiply-adds, run by ``ranks`` processes on this machine (see the module doc)."""
    if work < SMALL_GEMM:
        return 1
    cores = usable_cores() if cores is None else cores
    load = _load_average() if load is None else load
    free = cores - round(load)
    return max(1, free // max(1, ranks))


def plan_threads(requested: int | None, work: int, ranks: int = 1) -> tuple[int | None, str]:
    """(threads to set, or None to leave the pools alone; the banner's words) for
    ``--threads`` = ``requested`` (None: not given, 0: leave alone). Without
    threadpoolctl the pools are left alone, and ``--threads N`` is an error."""
    if requested == 0:
        return None, "threads left alone (--threads 0)"
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        if requested is not None:
            raise ImportError("--threads needs threadpoolctl: pip install 'xpnn[cli]'") from None
        return None, "threads left alone (no threadpoolctl)"
    if requested is None:
        n, how = auto_threads(work, ranks), "auto"
    else:
        n, how = requested, "--threads"
    return n, f"{n} BLAS thread{'s' if n != 1 else ''} ({how})"


@contextlib.contextmanager
def limit_threads(n: int | None):
    """Every BLAS/OpenMP pool (and torch's, when torch is imported) at ``n`` threads
    for the ``with`` block, restored after; None leaves them alone."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n), _torch_threads(n):
        yield


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op pool too, when torch is already imported (the torch backend):
    threadpoolctl reaches its OpenMP and BLAS libraries but not its own setting."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
