"""Command-line flags for distributed runs, for ``xpnn train``:

    xpnn train --gradient numerical --workers 2             # 2 local worker processes
    xpnn train --gradient numerical --scheduler tcp://h:8786  # a Dask cluster
    mpiexec -n 4 xpnn train                                  # data-parallel over 4 ranks
    mpiexec -n 4 xpnn train --gradient numerical --mpi-split parameters

``add_dist_flags(parser)`` adds the flags; ``dist_setup(args)`` is a context manager
that yields a ``DistSetup`` (what to pass to ``train``) and shuts everything down
afterwards. Under ``mpiexec`` an exception on any rank aborts every rank.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass

from ..cli.argtypes import positive_int
from ..cli.errors import CLIError
from ..cli.signals import ignore_stop_signals
from ..cli.threads import usable_cores
from .comm import shard
from .mpi import mpi_world_size

__all__ = ["DistSetup", "add_dist_flags", "dist_setup", "max_workers"]

#: --workers may start at most this many processes per CPU this process may use: each
#: is a fresh interpreter with the backend imported (~60 MiB here; 32 took 2.0 GiB on 2
#: cores), and numerical gradients are CPU-bound, so more than a few per core only costs
WORKERS_PER_CPU = 4


def max_workers() -> int:
    """The largest --workers: WORKERS_PER_CPU x the CPUs this process may run on."""
    return WORKERS_PER_CPU * usable_cores()


def _workers(text: str) -> int:
    """argparse type of --workers: a positive integer up to ``max_workers()``."""
    value = positive_int(text)
    bound = max_workers()
    if value > bound:
        raise argparse.ArgumentTypeError(
            f"must be at most {bound} ({WORKERS_PER_CPU} per CPU, {bound // WORKERS_PER_CPU} "
            f"CPUs here), got {value}")
    return value


def add_dist_flags(parser) -> None:
    """Add --workers, --scheduler and --mpi-split to an argparse parser."""
    group = parser.add_argument_group(
        "distributed",
        "numerical gradients split by parameter chunks over worker processes, or (under "
        "mpiexec -n K) training split over K MPI ranks",
    )
    where = group.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_workers, default=None, metavar="N",
                       help="compute --gradient numerical on N local worker processes "
                            f"(at most {WORKERS_PER_CPU} per CPU: {max_workers()} here)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="compute --gradient numerical on the Dask cluster at ADDRESS, "
                            "e.g. tcp://10.0.0.1:8786 (needs xpnn[dask])")
    group.add_argument("--mpi-split", choices=("data", "parameters"), default="data",
                       help="under mpiexec: 'data' gives each rank a shard of the training "
                            "set and averages gradients; 'parameters' (--gradient numerical "
                            "only) gives each rank a share of the parameters (default: data)")


@dataclass
class DistSetup:
    """What ``train`` needs: ``comm`` (data-parallel, or None), ``executor`` (for
    numerical gradients, or None), and whether this process writes outputs."""

    comm: object = None
    executor: object = None
    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def shard(self, x, t):
        """This rank's rows of (x, t) when training data-parallel, else (x, t)."""
        if self.comm is None:
            return x, t
        return shard(x, t, self.comm.rank, self.comm.size)


def _check(args, gradient: str, ranks: int) -> None:
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    split = getattr(args, "mpi_split", "data")
    if (workers is not None or scheduler is not None) and gradient != "numerical":
        flag = "--workers" if workers is not None else "--scheduler"
        raise CLIError(f"{flag} parallelises numerical gradients: add --gradient numerical")
    if ranks > 1 and (workers is not None or scheduler is not None):
        raise CLIError("under mpiexec the ranks are the workers: drop --workers/--scheduler")
    if split == "parameters" and ranks > 1 and gradient != "numerical":
        raise CLIError("--mpi-split parameters splits numerical gradients: add "
                       "--gradient numerical (or use --mpi-split data)")


@contextlib.contextmanager
def dist_setup(args, gradient: str = "backprop"):
    """Turn parsed flags into a ``DistSetup``; closes worker pools on exit. Raises
    ``CLIError`` (a ValueError; the command line's one-line flag error) naming the flag
    for bad combinations, before starting anything."""
    ranks = mpi_world_size()
    _check(args, gradient, ranks)
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if ranks > 1:
        from .mpi import MPIComm, abort_on_error

        comm = MPIComm()
        with abort_on_error(comm):
            if getattr(args, "mpi_split", "data") == "parameters":
                yield DistSetup(executor=comm, rank=comm.rank, size=comm.size)
            else:
                yield DistSetup(comm=comm, rank=comm.rank, size=comm.size)
    elif workers is not None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter per worker, safe after threads or torch started
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=ignore_stop_signals) as pool:
            yield DistSetup(executor=pool)
    elif scheduler is not None:
        from .dask import dask_executor

        with dask_executor(scheduler) as ex:
            yield DistSetup(executor=ex)
    else:
        yield DistSetup()
