"""One rank of the scenarios in test_dist_mpi.py, run as
``mpiexec -n 2 python tests/dist_rank_script.py SCENARIO OUTDIR`` (MPIComm) or
``torchrun --nproc-per-node 2 tests/dist_rank_script.py SCENARIO OUTDIR torch``
(TorchDistComm). Each rank writes ``OUTDIR/rank<r>.json`` with what it saw; the test
compares them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

import numpy as np

import xpnn
from xpnn.dist import MPIComm, abort_on_error, numerical_gradient, shard
from xpnn.dist.comm import _params_digest, check_same

BACKEND = os.environ.get("XPNN_TEST_BACKEND", "numpy")
DEVICE = os.environ.get("XPNN_TEST_DEVICE") or None


def _problem(n=13, sizes=(6, 5, 3), seed=0, weight_decay=0.01):
    """A float64 net and (x, t) on $XPNN_TEST_BACKEND (default numpy)."""
    net = xpnn.MLP(list(sizes), activation="tanh", weight_init=0.7, dtype="float64",
                   weight_decay=weight_decay, seed=seed, backend=BACKEND, device=DEVICE)
    rng = np.random.default_rng(1)
    x = xpnn.asarray(rng.standard_normal((n, sizes[0])), backend=BACKEND, device=DEVICE)
    t = xpnn.asarray(rng.integers(0, sizes[-1], n), backend=BACKEND, device=DEVICE)
    return net, x, t


def _rel(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(xpnn.to_numpy(a[k]) - xpnn.to_numpy(b[k])))
                     / np.max(np.abs(xpnn.to_numpy(b[k])))) for k in b)


def collectives(comm, out):
    """allreduce_mean of uneven shards against the full batch; allreduce_sum;
    allgatherv of uneven lengths; replicas after manual SGD steps; parameter-parallel
    numerical gradient; check_replicas."""
    net, x, t = _problem()
    comm.check_replicas(net)
    xs, ts = shard(x, t, comm.rank, comm.size)  # 7 and 6 rows
    g = comm.allreduce_mean(net.gradient(xs, ts), xs.shape[0])
    out["mean_rel_err"] = _rel(g, net.gradient(x, t))
    out["sum"] = comm.allreduce_sum([comm.rank + 0.5, 1.0])
    out["gathered"] = comm.allgatherv(np.arange(comm.rank + 2, dtype=np.float64)).tolist()

    # manual data-parallel SGD on shards against single-process full-batch SGD
    single = xpnn.MLP(**_kwargs(net))
    for _ in range(5):
        grads = comm.allreduce_mean(net.gradient(xs, ts), xs.shape[0])
        net.params = {k: v - 0.5 * grads[k] for k, v in net.params.items()}
        full = single.gradient(x, t)
        single.params = {k: v - 0.5 * full[k] for k, v in single.params.items()}
    out["digest"] = _params_digest(net)
    out["sgd_rel_err"] = _rel(net.params, single.params)
    comm.check_replicas(net)

    # the numerical gradient split by parameters over the ranks
    xf, Tf = net.check_x(x), net.prepare_targets(t, x.shape[0])
    want = net.numerical_gradient(x, t, memory_budget=2048)
    got = numerical_gradient(net, xf, Tf, executor=comm, memory_budget=2048)
    out["numerical_rel_err"] = _rel(got, want)
    out["numerical_max_abs_diff"] = max(
        float(np.max(np.abs(xpnn.to_numpy(got[k]) - xpnn.to_numpy(want[k])))) for k in want)
    out["backend"] = net.backend
    out["device"] = str(net.device)


def _kwargs(net):
    return dict(sizes=net.sizes, activation=net.activations, loss=net.loss_name,
                backend=net.backend, device=DEVICE,
                weight_init=0.7, weight_decay=net.weight_decay, dtype=net.dtype_name, seed=0)


def train(comm, out):
    """xpnn.train(..., comm=comm) on uneven shards (full-batch steps) against
    single-process training on all rows."""
    net, x, t = _problem(n=41)
    xs, ts = shard(x, t, comm.rank, comm.size)
    comm.check_replicas(net)
    hist = xpnn.train(net, (xs, ts), optimizer=xpnn.SGD(lr=0.3), batch_size=None, iters=6,
                      progress=True, comm=comm)
    out["digest"] = _params_digest(net)
    single, _, _ = _problem(n=41)
    ref = xpnn.train(single, (x, t), optimizer=xpnn.SGD(lr=0.3), batch_size=None, iters=6,
                     progress=False)
    out["train_rel_err"] = _rel(net.params, single.params)
    out["loss_diff"] = abs(hist.final["train_loss"] - ref.final["train_loss"])
    out["acc_diff"] = abs(hist.final["train_acc"] - ref.final["train_acc"])


class _StopAfter(xpnn.training.Callback):
    def __init__(self, k):
        self.k = k

    def after_step(self, run):
        if run.iteration == self.k:
            raise KeyboardInterrupt


def _bits(tree) -> dict:
    from xpnn.training.resume import flatten

    return {k: xpnn.to_numpy(v).tobytes().hex() for k, v in flatten(tree).items()}


def resume(comm, out):
    """xpnn.train(..., comm=comm) with mini-batches on uneven shards (21 and 20 rows,
    so the ranks' epochs differ), interrupted after step 7 on every rank; rank 0 writes
    the checkpoint, every rank resumes from it: the same parameters, optimizer state and
    history as the uninterrupted run, bit for bit, on each rank."""
    outdir = sys.argv[2]
    net, x, t = _problem(n=41)
    xs, ts = shard(x, t, comm.rank, comm.size)
    kw = dict(batch_size=5, iters=15, eval_every=4, seed=2, progress=False, comm=comm,
              lr_schedule=xpnn.StepLR(4, gamma=0.5))
    opt = xpnn.Adam(lr=0.05)
    ref = xpnn.train(net, (xs, ts), optimizer=opt, **kw)
    want = (_bits(net.params), _bits(opt.state), ref.train_loss, ref.lr)
    stopped, _, _ = _problem(n=41)
    try:
        xpnn.train(stopped, (xs, ts), optimizer=xpnn.Adam(lr=0.05),
                   callbacks=[_StopAfter(7)], **kw)
    except KeyboardInterrupt as exc:
        path = os.path.join(outdir, "ckpt.safetensors")
        if comm.rank == 0:
            xpnn.save_resumable(path, stopped, exc)
    comm.barrier()
    again, _, _ = _problem(n=41, seed=comm.rank + 5)  # other weights: the file's are used
    opt2 = xpnn.Adam(lr=0.05)
    got = xpnn.train(again, (xs, ts), optimizer=opt2, resume=path, **kw)
    out["same_params"] = _bits(again.params) == want[0]
    out["same_optimizer_state"] = _bits(opt2.state) == want[1]
    out["same_history"] = (got.train_loss, got.lr) == want[2:]
    out["resumed_at"] = got.meta["resumed_at"]
    out["shard_rows"] = int(xs.shape[0])
    out["digest"] = _params_digest(again)


def raise_on_one(comm, out):
    """Rank 1 raises while rank 0 waits in a collective: everyone must exit."""
    if comm.rank == 1:
        time.sleep(0.5)
        raise RuntimeError("boom on purpose")
    comm.allreduce_sum([1.0])
    out["rank0_passed_the_collective"] = True


def die_on_one(comm, out):
    """Rank 1 is killed outright (no Python cleanup) while rank 0 waits."""
    if comm.rank == 1:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    comm.allreduce_sum([1.0])
    out["rank0_passed_the_collective"] = True


def disagree(comm, out):
    """check_same passes on equal values and raises on every rank on unequal ones."""
    check_same(comm, {"iterations": 7, "eval_every": 2})
    try:
        check_same(comm, {"iterations": 3 if comm.rank == 0 else 2, "eval_every": 2},
                   hint="give iters=")
    except ValueError as exc:
        out["error"] = str(exc)


def different_replicas(comm, out):
    net, _, _ = _problem(seed=comm.rank)  # a different seed on each rank
    comm.check_replicas(net)


SCENARIOS = {f.__name__: f for f in (collectives, train, raise_on_one, die_on_one,
                                      different_replicas, disagree, resume)}


def pool(outdir):
    """Run by ``mpiexec -n 3 python -m mpi4py.futures``: rank 0 only, with the other
    ranks as MPIPoolExecutor workers."""
    from mpi4py.futures import MPIPoolExecutor

    net, x, t = _problem(n=9, sizes=(6, 5, 4, 3))
    xf, Tf = net.check_x(x), net.prepare_targets(t, x.shape[0])
    with MPIPoolExecutor() as executor:
        got = numerical_gradient(net, xf, Tf, executor=executor, memory_budget=2048)
        out = {"workers": executor.num_workers,
               "numerical_rel_err": _rel(got, net.numerical_gradient(x, t, memory_budget=2048))}
    with open(os.path.join(outdir, "rank0.json"), "w") as f:
        json.dump(out, f)


def main():
    scenario, outdir = sys.argv[1], sys.argv[2]
    if scenario == "pool":
        return pool(outdir)
    if sys.argv[3:] == ["torch"]:
        from xpnn.dist.torch_dist import TorchDistComm

        comm = TorchDistComm(backend=os.environ.get("XPNN_TEST_TORCH_BACKEND", "gloo"))
        guard = contextlib.nullcontext()  # torchrun ends the others when one fails
    else:
        comm = MPIComm()
        guard = abort_on_error(comm)
    out = {"rank": comm.rank, "size": comm.size, "comm": repr(comm)}
    with guard:
        SCENARIOS[scenario](comm, out)
    with open(os.path.join(outdir, f"rank{comm.rank}.json"), "w") as f:
        json.dump(out, f)
    if hasattr(comm, "close"):
        comm.close()


if __name__ == "__main__":
    main()
