"""Scaling past one process on existing engines (MPI, Dask, concurrent.futures).

* ``Comm`` / ``SingleProcessComm`` / ``MPIComm`` / ``TorchDistComm``: data-parallel
  training (``xpnn.train(..., comm=MPIComm())`` under ``mpiexec -n K``; NCCL or Gloo
  under ``torchrun``), each rank on its ``shard`` of the data;
* ``numerical_gradient(net, x, T, h, executor=...)``: parameter-parallel numerical
  gradients over any ``concurrent.futures.Executor`` or over MPI ranks;
* ``xpnn.dist.dask``: Dask executors and out-of-core ``predict`` / ``accuracy`` over
  a ``dask.array``;
* ``xpnn.dist.cli``: the ``--workers`` / ``--scheduler`` flags.

mpi4py, dask and torch.distributed are imported only when used.
"""

from .comm import Comm, SingleProcessComm, check_same, shard, shard_range
from .executor import WorkerMismatchError, numerical_gradient, partition
from .mpi import MPIComm, abort_on_error, mpi_world_size
from .torch_dist import TorchDistComm

__all__ = [
    "Comm",
    "MPIComm",
    "SingleProcessComm",
    "TorchDistComm",
    "WorkerMismatchError",
    "abort_on_error",
    "check_same",
    "mpi_world_size",
    "numerical_gradient",
    "partition",
    "shard",
    "shard_range",
]
