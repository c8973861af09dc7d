"""MPI through mpi4py (``pip install 'xpnn[mpi]'``; the ``mpich`` wheel brings a
venv-local ``mpiexec``).

    mpiexec -n 2 python train.py       # each rank: comm = MPIComm(); train(..., comm=comm)

``MPIComm`` implements ``xpnn.dist.Comm``: every reduction is one ``Allreduce`` on a
flat host buffer per dtype (or on the device buffer itself with ``cuda_aware=True``
and a CUDA-aware MPI). MPICH's and Open MPI's Allreduce give every rank the same bits,
so replicas that start identical stay identical.

Faults: wrap each rank's work in ``abort_on_error(comm)``; an exception on one rank
prints its traceback and calls ``MPI_Abort``, which ends every rank (nobody waits
forever in a collective). A rank that dies outright is detected by ``mpiexec``
itself, which then kills the others.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

import numpy as np

from .comm import Comm, host_buffer, to_device_like

__all__ = ["MPIComm", "abort_on_error", "mpi_world_size"]

#: seconds between printing a failed rank's error and MPI_Abort
_ABORT_GRACE_S = 0.5

#: environment variables through which launchers announce the world size
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


def mpi_world_size() -> int:
    """The number of ranks ``mpiexec`` started (1 when not started by a launcher),
    read from the launcher's environment without importing MPI."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"MPI needs mpi4py and an MPI library: pip install 'xpnn[mpi]' ({exc})"
        ) from None
    return MPI


def _on_gpu(array) -> bool:
    return hasattr(array, "__cuda_array_interface__") or "cuda" in str(
        getattr(array, "device", "")
    )


class MPIComm(Comm):
    """``xpnn.dist.Comm`` over an mpi4py communicator (default ``MPI.COMM_WORLD``).

    cuda_aware  hand device buffers straight to MPI (needs an MPI built with CUDA
                support); by default GPU buffers are copied to the host for the
                reduction and back.
    """

    def __init__(self, comm=None, cuda_aware: bool = False):
        MPI = _mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.cuda_aware = bool(cuda_aware)

    def __repr__(self):
        return f"MPIComm(rank={self.rank}, size={self.size})"

    def _sum(self, flat):
        """Sum ``flat`` over the ranks; returns the summed array (same backend/device)."""
        if self.cuda_aware and _on_gpu(flat):
            _synchronize(flat)  # MPI reads the buffer outside the backend's stream
            self.comm.Allreduce(self._MPI.IN_PLACE, flat, op=self._MPI.SUM)
            return flat
        buf = host_buffer(flat)
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return to_device_like(buf, flat)

    def allreduce_sum(self, values):
        buf = np.array([float(v) for v in values], dtype=np.float64)
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return buf.tolist()

    def _allgatherv(self, local: np.ndarray) -> np.ndarray:
        meta = self.comm.allgather((local.shape[0], local.dtype.str))
        dtypes = {d for _, d in meta}
        if len(dtypes) != 1:
            raise ValueError(f"allgatherv: the ranks send different dtypes {sorted(dtypes)}")
        counts = [n for n, _ in meta]
        out = np.empty(sum(counts), dtype=local.dtype)
        self.comm.Allgatherv(local, [out, counts])
        return out

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()


def _synchronize(array) -> None:
    if hasattr(array, "__cuda_array_interface__") and type(array).__module__.startswith("cupy"):
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    else:
        import torch

        torch.cuda.synchronize(array.device)


@contextlib.contextmanager
def abort_on_error(comm=None, exit_code: int = 1):
    """Run a rank's work; on an exception print the traceback, say which rank failed,
    and ``MPI_Abort`` so that every rank exits (instead of the others waiting forever
    in the next collective). ``comm``: an ``MPIComm`` or mpi4py communicator (default
    COMM_WORLD). A clean ``SystemExit(0)`` passes through.

    An interrupt (``KeyboardInterrupt``: Ctrl-C, or SIGTERM/SIGHUP under the command
    line) is not a failure: one line, no traceback, and the abort's exit code is
    ``exc.exit_code`` (128 + the signal's number; 130 for a plain Ctrl-C)."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        raw = getattr(comm, "comm", comm)
        if raw is None:
            raw = _mpi().COMM_WORLD
        where = f"rank {raw.Get_rank()} of {raw.Get_size()}"
        if isinstance(exc, KeyboardInterrupt):
            exit_code = getattr(exc, "exit_code", 130)
            signame = getattr(exc, "signame", "SIGINT")
            saved = getattr(exc, "xpnn_saved", None)
            text = (f"xpnn: {where} interrupted" + (f" by {signame}" if signame != "SIGINT"
                                                    else "")
                    + (f": {saved}" if saved else "") + "; ending all ranks\n")
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + (
                f"xpnn: {where} failed ({type(exc).__name__}: {exc}); aborting all ranks\n"
            )
        sys.stdout.flush()
        os.write(2, text.encode(errors="replace"))  # one unbuffered write
        # the launcher forwards stderr through a pipe and MPI_Abort tears everything
        # down at once: without a pause the message was lost in 2 of 6 runs
        time.sleep(_ABORT_GRACE_S)
        if isinstance(exc, KeyboardInterrupt):  # MPI_Abort's own line would be a second
            _silence_stderr()
        raw.Abort(exit_code)
        os._exit(exit_code)  # MPICH's MPI_Abort can return to the caller (seen with 5.0)


def _silence_stderr() -> None:
    """Point descriptor 2 at /dev/null (the MPI library prints its own line on abort)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
    except OSError:
        pass
