"""``xpnn.dist.Comm`` over ``torch.distributed``: NCCL between GPUs (CuPy or PyTorch
arrays, through DLPack without a host copy), Gloo between CPU processes.

    torchrun --nproc-per-node 2 train.py     # each process:
                                             #   with TorchDistComm() as comm: train(...)

The process group is initialised from torchrun's environment (``env://``) unless
it already is. Each reduction is one ``all_reduce`` on a flat buffer per dtype.
"""

from __future__ import annotations

import os

import numpy as np

from .comm import Comm

__all__ = ["TorchDistComm"]


def _torch():
    try:
        import torch
        import torch.distributed as dist
    except ImportError as exc:
        raise ImportError(f"TorchDistComm needs PyTorch: pip install 'xpnn[torch]' ({exc})") \
            from None
    if not dist.is_available():
        raise ImportError("this PyTorch build has no torch.distributed")
    return torch, dist


class TorchDistComm(Comm):
    """backend  'nccl' or 'gloo' for a process group created here (default: nccl when
                 torch sees a GPU, else gloo); ignored if one exists already
    group    a torch.distributed process group (default: the world)
    """

    def __init__(self, backend: str | None = None, group=None):
        torch, dist = _torch()
        self._torch, self._dist, self.group = torch, dist, group
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            if backend is None:
                backend = "nccl" if torch.cuda.is_available() else "gloo"
            if "nccl" in backend.lower() and os.environ.get("LOCAL_RANK", "").isdigit():
                # torchrun sets LOCAL_RANK but no device: without this every process
                # on a node would use cuda:0 (the NCCL device is current_device())
                torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            dist.init_process_group(backend=backend)
        self.backend = dist.get_backend(group)
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        if self.backend == "nccl":
            self._device = torch.device("cuda", torch.cuda.current_device())
        else:
            self._device = torch.device("cpu")

    def __repr__(self):
        return f"TorchDistComm(backend={self.backend!r}, rank={self.rank}, size={self.size})"

    def _as_tensor(self, array):
        """A torch tensor for ``array`` on the communication device; shares memory
        where it can (NumPy on gloo, CuPy/torch CUDA on nccl)."""
        torch = self._torch
        if isinstance(array, np.ndarray):
            t = torch.from_numpy(array)
        elif isinstance(array, torch.Tensor):
            t = array
        else:  # CuPy and other DLPack producers
            t = torch.from_dlpack(array)
        return t if t.device == self._device else t.to(self._device)

    def _sum(self, array):
        """All-reduce ``array`` (a 1-d array of any backend); returns the sum in the
        same backend and device."""
        t = self._as_tensor(array)
        if t.is_cuda:
            self._torch.cuda.current_stream(t.device).synchronize()
        self._dist.all_reduce(t, op=self._dist.ReduceOp.SUM, group=self.group)
        if isinstance(array, np.ndarray):
            return t.cpu().numpy() if t.device.type != "cpu" else array
        if isinstance(array, self._torch.Tensor):
            return t.to(array.device)
        if t.is_cuda:  # CuPy: the tensor shares the array's memory
            self._torch.cuda.current_stream(t.device).synchronize()
            return array
        from ..backend import get_namespace

        return get_namespace(array).asarray(t.cpu().numpy())

    def allreduce_sum(self, values):
        return self._sum(np.array([float(v) for v in values], dtype=np.float64)).tolist()

    def _allgatherv(self, local: np.ndarray) -> np.ndarray:
        torch, dist = self._torch, self._dist
        counts = self._sum(np.eye(self.size, dtype=np.float64)[self.rank] * local.shape[0])
        counts = [int(c) for c in counts]
        padded = np.zeros(max(counts), dtype=local.dtype)
        padded[: local.shape[0]] = local
        mine = self._as_tensor(padded)
        parts = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(parts, mine, group=self.group)
        return np.concatenate([p.cpu().numpy()[:n] for p, n in zip(parts, counts, strict=True)])

    def bcast(self, obj):
        box = [obj]
        self._dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        self._dist.barrier(group=self.group)

    def close(self) -> None:
        """Destroy the process group if this object created it. Call it before the
        process exits: a Gloo group left to interpreter shutdown can end in
        "terminate called without an active exception" (SIGABRT)."""
        if self._owns_group and self._dist.is_initialized():
            self._dist.destroy_process_group()
        self._owns_group = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
