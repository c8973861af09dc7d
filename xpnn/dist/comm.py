"""Communicators for data-parallel training: the interface, the single-process
default, deterministic data shards, and the flat-buffer packing every implementation
shares.

A communicator has ``rank`` and ``size`` and four collectives:

``allreduce_mean(grads, weight) -> grads``
    the weighted mean ``sum_r w_r g_r / sum_r w_r`` of a dict of backend arrays, with
    one flat buffer (and one reduction) per dtype. With ``w_r`` the rank's number of
    rows and ``g_r`` its batch-mean gradient this is exactly the full-batch mean
    gradient, also when the shards are uneven.
``allreduce_sum(values) -> values``
    element-wise sum of a list of Python floats (evaluation totals).
``allgatherv(local) -> array``
    the ranks' 1-d host arrays (different lengths allowed) concatenated in rank order.
``bcast(obj) -> obj``
    rank 0's Python object on every rank.
"""

from __future__ import annotations

import numbers
from collections import defaultdict

import numpy as np

from ..backend import device_of, get_namespace, to_numpy

__all__ = ["Comm", "SingleProcessComm", "check_same", "pack", "shard", "shard_range", "unpack"]


class Comm:
    """Interface; subclasses implement the collectives. ``is_root``: rank 0, the one
    rank that writes files and shows progress."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_mean(self, grads: dict, weight) -> dict:
        """The weighted mean of ``grads`` over the ranks: one ``_sum`` of a flat buffer
        per dtype (see ``pack``)."""
        out = {}
        for keys, flat in pack(grads, weight):
            out.update(unpack(grads, keys, self._sum(flat)))
        return {k: out[k] for k in grads}

    def _sum(self, flat):
        """For ``allreduce_mean``: the element-wise sum over the ranks of the 1-d backend
        array ``flat``, on its backend and device (``flat`` may be reduced in place)."""
        raise NotImplementedError

    def allreduce_sum(self, values):
        raise NotImplementedError

    def allgatherv(self, local: np.ndarray) -> np.ndarray:
        local = np.ascontiguousarray(local)
        if local.ndim != 1:
            raise ValueError(f"allgatherv takes 1-d arrays, got shape {local.shape}")
        return self._allgatherv(local)

    def _allgatherv(self, local: np.ndarray) -> np.ndarray:
        """For ``allgatherv``: the ranks' contiguous 1-d ``local`` in rank order."""
        raise NotImplementedError

    def bcast(self, obj):
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait for every rank (a no-op on one process)."""

    def check_replicas(self, net) -> None:
        """Raise ValueError on every rank unless all ranks hold the same xpnn version,
        architecture, dtype and bitwise-identical parameters (call before training)."""
        from .. import __version__

        mine = {"xpnn": __version__, "config": net.to_config(),
                "params": _params_digest(net)}
        root = self.bcast(mine)
        diff = [k for k in mine if mine[k] != root[k]]
        n_bad = int(self.allreduce_sum([float(bool(diff))])[0])
        if n_bad:
            where = (f"rank {self.rank} differs from rank 0 in {', '.join(diff)}" if diff
                     else f"{n_bad} rank(s) differ from rank 0")
            raise ValueError(
                f"the replicas are not identical: {where} (xpnn version, architecture and "
                f"dtype, parameters); build the same network from the same seed on every rank"
            )


def check_same(comm, values: dict, hint: str = "") -> None:
    """Raise the same ValueError on every rank unless every rank passed the same
    integers in ``values`` ({name: int}, exact below 2**26). Ranks that disagree on,
    say, the number of iterations would pair one rank's gradient Allreduce with
    another's evaluation sum. Uses only ``allreduce_sum`` (one call): all equal exactly
    when size * sum(v**2) == sum(v)**2, which every rank sees alike."""
    if comm is None or comm.size == 1:
        return
    names = list(values)
    mine = [float(values[k]) for k in names]
    sums = comm.allreduce_sum(mine + [v * v for v in mine])
    n = comm.size
    differ = [k for i, k in enumerate(names)
              if sums[len(names) + i] * n != sums[i] * sums[i]]
    if differ:
        here = ", ".join(f"{k}={values[k]}" for k in differ)
        raise ValueError(
            f"the ranks disagree on {', '.join(differ)} (rank {comm.rank}: {here}; the "
            f"mean over {n} ranks: "
            f"{', '.join(f'{k}={sums[names.index(k)] / n:g}' for k in differ)})"
            + (f": {hint}" if hint else "")
        )


def _params_digest(net) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key, value in net.params.items():
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(to_numpy(value)).tobytes())
    return digest.hexdigest()


def _check_weight(weight) -> float:
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise TypeError(f"weight must be a number (the rank's row count), got {weight!r}")
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight!r}")
    return float(weight)


class SingleProcessComm(Comm):
    """One process: every collective is the identity (what ``train(comm=None)`` does)."""

    rank, size = 0, 1

    def allreduce_mean(self, grads: dict, weight) -> dict:
        if _check_weight(weight) == 0:
            raise ValueError("the total weight is 0: no rank had any rows")
        return dict(grads)

    def allreduce_sum(self, values):
        return [float(v) for v in values]

    def _allgatherv(self, local: np.ndarray) -> np.ndarray:
        return local

    def bcast(self, obj):
        return obj

    def __repr__(self):
        return "SingleProcessComm()"


# -- flat buffers ----------------------------------------------------------------------


def pack(grads: dict, weight: float) -> list:
    """Group ``grads`` by dtype; for each group one flat 1-d device array holding
    ``weight * g`` for every g in order, followed by ``weight`` itself.

    Returns ``[(keys, flat), ...]`` in a deterministic order (first appearance). The
    trailing weight lets one reduction sum the weights too."""
    weight = _check_weight(weight)
    groups = defaultdict(list)
    for key, g in grads.items():
        groups[str(g.dtype)].append(key)
    out = []
    for keys in groups.values():
        first = grads[keys[0]]
        xp = get_namespace(first)
        dev = device_of(first)
        w = xp.asarray([weight], dtype=first.dtype, device=dev)
        flat = xp.concat([xp.reshape(grads[k] * w[0], (-1,)) for k in keys] + [w])
        out.append((keys, flat))
    return out


def unpack(grads: dict, keys, flat) -> dict:
    """Inverse of one ``pack`` group after the reduction: divide by the summed weight
    (the last entry) and cut ``flat`` back into ``grads``' shapes."""
    xp = get_namespace(flat)
    total = flat[-1]
    if float(total) == 0:
        raise ValueError("the total weight is 0: no rank had any rows")
    out, start = {}, 0
    for k in keys:
        shape = tuple(grads[k].shape)
        n = int(np.prod(shape))
        out[k] = xp.reshape(flat[start : start + n] / total, shape)
        start += n
    return out


def host_buffer(flat) -> np.ndarray:
    """A writable, contiguous host copy (or view, for NumPy) of a device array. JAX
    exports read-only buffers through DLPack (and MPI's in-place Allreduce refuses
    them), so those are copied."""
    return np.require(to_numpy(flat), requirements=("C", "W"))


def to_device_like(host: np.ndarray, like):
    """``host`` on ``like``'s backend and device."""
    xp = get_namespace(like)
    if isinstance(like, np.ndarray):
        return host
    return xp.asarray(host, device=device_of(like))


# -- shards ----------------------------------------------------------------------------


def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows [start, stop) of rank ``rank`` of ``size`` in a contiguous split of ``n``
    rows: the first ``n % size`` ranks get one row more."""
    for name, value in (("n", n), ("rank", rank), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    if n < size:
        raise ValueError(f"cannot split {n} rows over {size} ranks: every rank needs a row")
    base, extra = divmod(int(n), int(size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(x, t, rank: int, size: int):
    """Rank ``rank``'s contiguous shard ``(x[a:b], t[a:b])`` (see ``shard_range``);
    the shards of all ranks partition the rows in order. Works on any backend."""
    if x.shape[0] != t.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but t has {t.shape[0]}")
    start, stop = shard_range(int(x.shape[0]), rank, size)
    return x[start:stop, ...], t[start:stop, ...]
