"""One MPI rank of bench/dist_bench.py: ``mpiexec -n K python bench/dist_rank.py
MODE REPS OUT.json``.

numerical  the parameter-parallel numerical gradient of the seed net (784-50-10
           sigmoid, float64, a batch of 100): the whole call
           (``xpnn.dist.numerical_gradient(..., executor=comm)``), and its parts on
           this rank: forward cache + own chunks (compute: wall and CPU seconds),
           Allgatherv (comm)
allreduce  data-parallel backprop: each rank's batch-100 gradient, one
           ``allreduce_mean`` of it (pack, Allreduce, unpack), and a whole step
           (gradient, allreduce_mean, SGD update)

Rank 0 writes the medians (seconds) of every rank to OUT.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

import xpnn
from xpnn.dist import MPIComm, abort_on_error, numerical_gradient, partition
from xpnn.dist.executor import compute_flat
from xpnn.nn import numerical as xnum


def seed_problem(batch=100, seed=0):
    """The post's TwoLayerNet (784-50-10 sigmoid, std 0.01) in float64 and an
    MNIST-shaped batch (pixels in [0, 1], random labels)."""
    net = xpnn.MLP([784, 50, 10], activation="sigmoid", weight_init=0.01, dtype="float64",
                   seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = net.check_x(xpnn.asarray(rng.random((batch, 784))))
    T = net.prepare_targets(xpnn.asarray(rng.integers(0, 10, batch)), batch)
    return net, x, T


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def numerical(comm, reps):
    net, x, T = seed_problem()
    h = net.default_h()
    chunks = xnum.plan(net, x.shape[0])
    mine = partition(net, chunks, comm.size)[comm.rank]
    numerical_gradient(net, x, T, executor=comm)  # warm-up
    total, compute, cpu, gather = [], [], [], []
    for _ in range(reps):
        comm.barrier()
        total.append(_timed(lambda: numerical_gradient(net, x, T, executor=comm)))
        comm.barrier()
        box = {}

        def work(box=box):
            box["flat"] = compute_flat(net, x, T, mine, h, xnum.forward_cache(net, x))

        cpu_start = time.process_time()
        compute.append(_timed(work))
        cpu.append(time.process_time() - cpu_start)
        comm.barrier()
        gather.append(_timed(lambda box=box: comm.allgatherv(box["flat"])))
    return {"step": total, "compute": compute, "compute_cpu": cpu, "allgatherv": gather,
            "chunks": len(mine), "values": int(sum(c.stop - c.start for c in mine))}


def allreduce(comm, reps):
    net, x, T = seed_problem(seed=0)
    xb, Tb = x, T  # every rank its own batch of 100 (the data does not matter)
    grads = net.gradient_prepared(xb, Tb)
    comm.allreduce_mean(grads, xb.shape[0])  # warm-up
    gradient, reduce_, step = [], [], []
    for _ in range(reps):
        comm.barrier()
        gradient.append(_timed(lambda: net.gradient_prepared(xb, Tb)))
        comm.barrier()
        reduce_.append(_timed(lambda: comm.allreduce_mean(grads, xb.shape[0])))
        comm.barrier()

        def one_step():
            g = comm.allreduce_mean(net.gradient_prepared(xb, Tb), xb.shape[0])
            net.params = {k: v - 0.1 * g[k] for k, v in net.params.items()}

        step.append(_timed(one_step))
    return {"gradient": gradient, "allreduce_mean": reduce_, "step": step,
            "bytes": int(sum(v.size for v in grads.values()) * 8 + 8)}


def main():
    mode, reps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # no keep_freed_memory() here: numerical_gradient(executor=comm) sets it on each
    # rank itself (as for `mpiexec xpnn train --mpi-split parameters`), and the
    # allreduce mode runs with glibc's defaults, as train(comm=MPIComm()) does
    comm = MPIComm()
    with abort_on_error(comm):
        raw = {"numerical": numerical, "allreduce": allreduce}[mode](comm, reps)
        med = {k: (statistics.median(v) if isinstance(v, list) else v) for k, v in raw.items()}
        med["step_all"] = raw["step"]
        every = comm.comm.gather(med, root=0)
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump({"ranks": comm.size, "reps": reps, "per_rank": every}, f, indent=1)


if __name__ == "__main__":
    main()
