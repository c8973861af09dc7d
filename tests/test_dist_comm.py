"""xpnn.dist in one process: shards, flat-buffer packing, weighted gradient means,
chunk partitions, the parameter-parallel numerical gradient on in-process executors,
worker checks, CLI flags and out-of-core evaluation on Dask's local scheduler.

The multi-process tests (real mpiexec, a real Dask cluster) are in test_dist_mpi.py
and test_dist_dask.py."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import host, problem
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnn
from xpnn.dist import (
    SingleProcessComm,
    WorkerMismatchError,
    numerical_gradient,
    partition,
    shard,
    shard_range,
)
from xpnn.dist.cli import add_dist_flags, dist_setup
from xpnn.dist.comm import host_buffer, pack, to_device_like, unpack
from xpnn.dist.executor import _payload, chunk_task
from xpnn.nn.numerical import plan


def _max_rel(a: dict, b: dict) -> float:
    a, b = host(a), host(b)
    return max(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(b[k])), 1e-300) for k in b)


class SummingComm(SingleProcessComm):
    """K simulated ranks in one process: ``allreduce_mean`` of rank r's (grads, weight)
    sums the packed buffers of all K (as Allreduce(SUM) would) and unpacks."""

    def __init__(self, contributions):
        self.contributions = contributions  # [(grads, weight)] of every rank

    def allreduce_mean(self, grads, weight):
        out = {}
        packed = [pack(g, w) for g, w in self.contributions]
        for group, (keys, _) in enumerate(packed[0]):
            total = sum(p[group][1] for p in packed)
            out.update(unpack(grads, keys, total))
        return out


# -- shards ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 9), extra=st.integers(0, 40))
def test_shards_partition_rows_in_order(size, extra):
    n = size + extra
    ranges = [shard_range(n, r, size) for r in range(size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    lengths = [b - a for a, b in ranges]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def test_shard_errors_name_the_argument():
    with pytest.raises(ValueError, match="rank must be in"):
        shard_range(10, 2, 2)
    with pytest.raises(ValueError, match="size must be"):
        shard_range(10, 0, 0)
    with pytest.raises(ValueError, match="every rank needs a row"):
        shard_range(1, 0, 2)
    with pytest.raises(TypeError, match="rank must be an integer"):
        shard_range(10, 0.5, 2)
    x, t = np.zeros((4, 2)), np.zeros(3)
    with pytest.raises(ValueError, match="4 rows but t has 3"):
        shard(x, t, 0, 2)


def test_shard_on_every_backend(backend):
    net, x, t = problem(backend, [3, 4, 2], n=7)
    parts = [shard(x, t, r, 3) for r in range(3)]
    assert [p[0].shape[0] for p in parts] == [3, 2, 2]
    np.testing.assert_array_equal(
        np.concatenate([xpnn.to_numpy(p[0]) for p in parts]), xpnn.to_numpy(x))
    np.testing.assert_array_equal(
        np.concatenate([xpnn.to_numpy(p[1]) for p in parts]), xpnn.to_numpy(t))


# -- weighted means -------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 3])
def test_weighted_mean_of_uneven_shards_is_the_full_batch_gradient(backend, size):
    net, x, t = problem(backend, [5, 4, 3], n=11, weight_decay=0.01)
    shards = [shard(x, t, r, size) for r in range(size)]
    contributions = [(net.gradient(xs, ts), xs.shape[0]) for xs, ts in shards]
    comm = SummingComm(contributions)
    mean = comm.allreduce_mean(*contributions[0])
    assert _max_rel(mean, net.gradient(x, t)) <= 1e-12
    # a plain (unweighted) mean of the uneven shards is visibly different
    plain = {k: sum(xpnn.to_numpy(c[0][k]) for c in contributions) / size for k in mean}
    assert _max_rel(plain, net.gradient(x, t)) > 1e-6


def test_host_buffer_is_writable_and_contiguous_on_every_backend(to_backend):
    """Regression: JAX exports read-only host arrays, and MPI's in-place Allreduce on
    them raised BufferError ("dlpack: buffer is not writable")."""
    flat = to_backend(np.arange(5.0))
    buf = host_buffer(flat)
    assert buf.flags.writeable and buf.flags.c_contiguous
    np.testing.assert_array_equal(buf, np.arange(5.0))
    buf += 1.0  # what an in-place reduction does
    np.testing.assert_array_equal(xpnn.to_numpy(to_device_like(buf, flat)), np.arange(1.0, 6.0))


def test_pack_groups_by_dtype_and_keeps_order():
    g = {"a": np.ones((2, 2)), "b": np.ones(3, dtype=np.float32), "c": np.full(2, 2.0)}
    groups = pack(g, 3.0)
    assert [keys for keys, _ in groups] == [["a", "c"], ["b"]]
    np.testing.assert_array_equal(groups[0][1], [3, 3, 3, 3, 6, 6, 3])
    back = unpack(g, *groups[0])
    np.testing.assert_array_equal(back["a"], g["a"])
    np.testing.assert_array_equal(back["c"], g["c"])


def test_single_process_comm_is_the_identity():
    comm = SingleProcessComm()
    g = {"W1": np.arange(4.0)}
    assert comm.allreduce_mean(g, 5)["W1"] is g["W1"]
    assert comm.allreduce_sum([1, 2.5]) == [1.0, 2.5]
    assert comm.rank == 0 and comm.size == 1 and comm.is_root
    with pytest.raises(ValueError, match="total weight is 0"):
        comm.allreduce_mean(g, 0)
    with pytest.raises(TypeError, match="weight must be a number"):
        comm.allreduce_mean(g, "5")
    net, _, _ = problem(("numpy", None), [3, 2])
    comm.check_replicas(net)  # one replica is always consistent


def test_a_comm_needs_only_the_sum_hook_for_weighted_means():
    from xpnn.dist import Comm

    class TwoAlike(Comm):  # two ranks holding the same gradients
        def _sum(self, flat):
            return flat * 2

    g = {"a": np.arange(3.0), "b": np.ones(2, dtype=np.float32), "c": np.full(2, 2.0)}
    out = TwoAlike().allreduce_mean(g, 3)
    assert list(out) == list(g)
    for k in g:
        assert out[k].dtype == g[k].dtype
        np.testing.assert_array_equal(out[k], g[k])
    with pytest.raises(TypeError, match="weight must be a number"):
        TwoAlike().allreduce_mean(g, "3")
    with pytest.raises(ValueError, match="total weight is 0"):
        TwoAlike().allreduce_mean(g, 0)
    # every communicator takes 1-d arrays only, the single-process one too
    with pytest.raises(ValueError, match=r"allgatherv takes 1-d arrays, got shape \(2, 2\)"):
        SingleProcessComm().allgatherv(np.zeros((2, 2)))
    np.testing.assert_array_equal(SingleProcessComm().allgatherv([1.0, 2.0]), [1.0, 2.0])


# -- partitions -----------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[784, 50, 10], [20, 7, 7, 3], [5, 2]])
@pytest.mark.parametrize("n_parts", [1, 2, 3, 7])
def test_partition_is_contiguous_balanced_and_deterministic(sizes, n_parts):
    net = xpnn.MLP(sizes, dtype="float64", seed=0)
    chunks = plan(net, 100, memory_budget=2**16)
    parts = partition(net, chunks, n_parts)
    assert len(parts) == n_parts
    assert [c for p in parts for c in p] == chunks  # in order, every chunk once
    assert parts == partition(net, chunks, n_parts)
    from xpnn.dist.executor import _cost

    costs = [sum(_cost(net, c) for c in p) for p in parts]
    biggest = max(_cost(net, c) for c in chunks)
    assert max(costs) <= sum(costs) / n_parts + biggest


@pytest.mark.parametrize("sizes", [[784, 50, 10], [3, 200, 1, 50, 4]])
def test_partition_gives_each_chunk_to_the_part_of_its_cost_midpoint(sizes):
    """The searchsorted cut equals the definition (the part p with p <= mid * n / total
    < p + 1), also with more parts than chunks."""
    from xpnn.dist.executor import _cost

    net = xpnn.MLP(sizes, dtype="float64", seed=0)
    chunks = plan(net, 100, memory_budget=2**16)
    each = np.array([_cost(net, c) for c in chunks], dtype=np.float64)
    mids = np.cumsum(each) - each / 2
    for n_parts in (1, 2, 5, 128, len(chunks) + 3):
        owner = np.minimum((mids * n_parts / np.cumsum(each)[-1]).astype(int), n_parts - 1)
        want = [[] for _ in range(n_parts)]
        for c, o in zip(chunks, owner, strict=True):
            want[o].append(c)
        assert partition(net, chunks, n_parts) == want
    assert partition(net, [], 3) == [[], [], []]


# -- parameter-parallel numerical gradients in one process ---------------------------


def _prepared(net, x, t):
    x = net.check_x(x)
    return x, net.prepare_targets(t, x.shape[0])


def test_numerical_gradient_equals_the_single_process_one(backend):
    net, x, t = problem(backend, [6, 5, 4, 3], n=9, weight_decay=0.02)
    x, T = _prepared(net, x, t)
    want = net.numerical_gradient(x, t, memory_budget=4096)
    for executor in (None, SingleProcessComm()):
        got = numerical_gradient(net, x, T, executor=executor, memory_budget=4096)
        assert _max_rel(got, want) <= 1e-12
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for tasks in (1, 3, 50):
            got = numerical_gradient(net, x, T, executor=pool, memory_budget=4096, tasks=tasks)
            assert _max_rel(got, want) <= 1e-12
            assert all(got[k].dtype == net.params[k].dtype for k in got)


def test_assemble_cuts_the_gathered_differences_back_into_parameters(backend):
    from xpnn.backend import device_of
    from xpnn.dist.executor import _assemble
    from xpnn.nn.numerical import Chunk

    net, _, _ = problem(backend, [5, 4, 3], weight_decay=0.02)
    chunks = plan(net, 10, memory_budget=2048)
    flat = np.arange(1.0, 1 + sum(c.stop - c.start for c in chunks))
    got = _assemble(net, chunks, flat)
    assert all(device_of(g) == net.device for g in got.values())
    got = host(got)
    start = 0
    for k, v in host(net.params).items():
        want = flat[start : start + v.size].reshape(v.shape) + (0.02 * v if k[0] == "W" else 0)
        np.testing.assert_array_equal(got[k], want)
        start += v.size
    swapped = [chunks[1], chunks[0], *chunks[2:]]
    gap = [c if c != chunks[3] else Chunk(c.key, c.start + 1, c.stop) for c in chunks]
    for bad in (chunks[1:], chunks[:-1], swapped, gap, chunks + chunks[-1:]):
        with pytest.raises(RuntimeError, match="do not cover the parameters"):
            _assemble(net, bad, flat)


def test_numerical_gradient_argument_errors():
    net, x, t = problem(("numpy", None), [3, 2])
    x, T = _prepared(net, x, t)
    with pytest.raises(TypeError, match="executor must be"):
        numerical_gradient(net, x, T, executor="two")
    with pytest.raises(ValueError, match="h must be"):
        numerical_gradient(net, x, T, h=-1.0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool, \
            pytest.raises(ValueError, match="tasks must be"):
        numerical_gradient(net, x, T, executor=pool, tasks=0)


def test_worker_refuses_another_xpnn_version_or_dtype():
    net, x, t = problem(("numpy", None), [3, 4, 2])
    x, T = _prepared(net, x, t)
    chunks = plan(net, x.shape[0])
    payload = _payload(net, x, T, 1e-5)
    assert chunk_task(payload, chunks).shape == (net.n_params,)
    old = dict(payload, token="v", xpnn="0.0.1")
    with pytest.raises(WorkerMismatchError, match=r"xpnn .* but the task comes from xpnn 0\.0\.1"):
        chunk_task(old, chunks)
    mixed = dict(payload, token="d", x=payload["x"].astype(np.float32))
    with pytest.raises(WorkerMismatchError, match="x arrived as float32 .* float64"):
        chunk_task(mixed, chunks)


# -- CLI flags ------------------------------------------------------------------------


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_dist_flags(parser)
    return parser.parse_args(argv)


def test_cli_flags_parse_and_check():
    assert _parse(["--workers", "2"]).workers == 2
    assert _parse(["--scheduler", "tcp://h:1"]).scheduler == "tcp://h:1"
    with pytest.raises(SystemExit):
        _parse(["--workers", "0"])
    with pytest.raises(SystemExit):
        _parse(["--workers", "2", "--scheduler", "tcp://h:1"])
    with pytest.raises(ValueError, match="--workers parallelises numerical"):
        with dist_setup(_parse(["--workers", "2"]), gradient="backprop"):
            pass
    with dist_setup(_parse([]), gradient="backprop") as setup:
        assert setup.comm is None and setup.executor is None and setup.is_root
        assert setup.shard(1, 2) == (1, 2)


def test_cli_workers_give_a_process_pool_with_exact_results():
    net, x, t = problem(("numpy", None), [4, 3, 2], n=6)
    x, T = _prepared(net, x, t)
    with dist_setup(_parse(["--workers", "2"]), gradient="numerical") as setup:
        assert isinstance(setup.executor, concurrent.futures.ProcessPoolExecutor)
        got = numerical_gradient(net, x, T, executor=setup.executor)
    assert _max_rel(got, net.numerical_gradient(x, t)) <= 1e-12


# -- out-of-core evaluation on the local (threaded) Dask scheduler ---------------------


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy", "mse"])
def test_dask_array_evaluation_matches_the_in_memory_one(loss):
    da = pytest.importorskip("dask.array")
    from xpnn.dist.dask import accuracy, evaluate, predict

    n_out = 1 if loss == "binary_cross_entropy" else 3
    net, x, t = problem(("numpy", None), [4, 5, n_out], loss=loss, n=23, weight_decay=0.01)
    xd = da.from_array(xpnn.to_numpy(x), chunks=(5, 2))  # column chunks are merged
    td = da.from_array(xpnn.to_numpy(t), chunks=7)  # other row chunks than x
    np.testing.assert_allclose(predict(net, xd).compute(), xpnn.to_numpy(net.predict(x)),
                               rtol=1e-13)
    loss_value, acc = evaluate(net, xd, td)
    assert loss_value == pytest.approx(float(net.loss(x, t)), rel=1e-12)
    if loss == "mse":
        assert acc is None
        with pytest.raises(ValueError, match="not defined"):
            accuracy(net, xd, td)
    else:
        assert acc == pytest.approx(net.accuracy(x, t), abs=1e-12)
        assert accuracy(net, xd, td) == acc
    with pytest.raises(TypeError, match="x must be a dask.array"):
        predict(net, xpnn.to_numpy(x))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        predict(net, da.zeros((3, 5)))


# -- the hooks in MLP and train (built by others; skipped until they are there) -------


def _has_param(fn, name):
    import inspect

    return name in inspect.signature(fn).parameters


def test_net_numerical_gradient_takes_an_executor():
    if not _has_param(xpnn.MLP.numerical_gradient, "executor"):
        pytest.skip("MLP.numerical_gradient has no executor= yet")
    net, x, t = problem(("numpy", None), [5, 4, 3], n=6)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        got = net.numerical_gradient(x, t, executor=pool)
    assert _max_rel(got, net.numerical_gradient(x, t)) <= 1e-12


def test_train_numerical_takes_an_executor():
    if not _has_param(xpnn.train, "executor"):
        pytest.skip("xpnn.train has no executor= yet")
    runs = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for executor in (None, pool, SingleProcessComm()):
            net, x, t = problem(("numpy", None), [5, 4, 3], n=12)
            xpnn.train(net, (x, t), batch_size=4, iters=3, gradient="numerical", seed=0,
                       progress=False, executor=executor)
            runs.append(host(net.params))
    assert _max_rel(runs[1], runs[0]) <= 1e-12 and _max_rel(runs[2], runs[0]) <= 1e-12


def test_comm_ranks_keep_freed_memory_but_the_callers_process_does_not(monkeypatch):
    """The ranks of ``mpiexec xpnn train --mpi-split parameters`` get the malloc setting
    the pool workers (and the benchmark's ranks) have; a SingleProcessComm, which runs
    in the user's own process, does not change it."""
    from xpnn.dist import Comm
    from xpnn.dist import executor as ex

    calls = []
    monkeypatch.setattr(ex, "keep_freed_memory", lambda: calls.append(1) or True)

    class OneRank(Comm):  # a multi-process comm's code path, on one rank
        def allgatherv(self, local):
            return np.asarray(local)

    net, x, t = problem(("numpy", None), [5, 4, 3], n=6)
    x, T = _prepared(net, x, t)
    want = numerical_gradient(net, x, T, executor=SingleProcessComm(), memory_budget=2048)
    assert calls == []
    got = numerical_gradient(net, x, T, executor=OneRank(), memory_budget=2048)
    assert calls == [1]
    assert _max_rel(got, want) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_no_memory_is_faulted_in_per_chunk():
    """Regression: with glibc's default trimming every chunk's temporaries were faulted
    in afresh (~440,000 minor faults per seed-net gradient); workers then needed
    keep_freed_memory. Since issue 15 the chunks reuse one workspace, so the plain call
    in a fresh process is as quiet as with the setting."""
    code = """
import resource, sys
import numpy as np, xpnn
from xpnn.dist.executor import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
net = xpnn.MLP([784, 50, 10], dtype="float64", seed=0)
x = xpnn.asarray(np.random.default_rng(0).random((100, 784)))
T = net.prepare_targets(xpnn.asarray(np.arange(100) % 10), 100)
for _ in range(2):  # the second gradient runs on a warm heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net.numerical_gradient_prepared(x, T, memory_budget=2 * 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {}
    for mode in ("default", "keep"):
        proc = subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        faults[mode] = int(proc.stdout.split()[-1])
    assert faults["keep"] < 2_000 and faults["default"] < 2_000, faults
