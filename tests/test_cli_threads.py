"""Thread pools: the command line sets the BLAS/OpenMP pools with threadpoolctl for the
length of a command (``--threads``, printed in the banner); the library (xpnn.train)
leaves them alone."""

from __future__ import annotations

import importlib
import sys

import numpy as np  # noqa: F401 - loads NumPy's BLAS, so threadpoolctl sees a pool
import pytest

import xpnn
from xpnn.cli import main, threads
from xpnn.training.callbacks import Callback

threadpoolctl = pytest.importorskip("threadpoolctl")
cli_main = importlib.import_module("xpnn.cli.main")  # the module (xpnn.cli.main is the function)

OUTSIDE = 3  # the pools' size around each test: neither auto's 1 nor --threads 2


@pytest.fixture(autouse=True)
def pools_at_three():
    if not threadpoolctl.threadpool_info():
        pytest.skip("threadpoolctl finds no BLAS/OpenMP pool in this process")
    with threadpoolctl.threadpool_limits(limits=OUTSIDE):
        yield


def pool_sizes() -> set:
    return {pool["num_threads"] for pool in threadpoolctl.threadpool_info()}


def spy_on_train(monkeypatch) -> list:
    """Record the pool sizes while the CLI's train runs (then run it for real)."""
    seen = []
    real = cli_main.train

    def train(*args, **kwargs):
        seen.append(pool_sizes())
        return real(*args, **kwargs)

    monkeypatch.setattr(cli_main, "train", train)
    return seen


def moons(tmp_path, *extra):
    return ["train", "--dataset", "moons", "--iters", "3", "--no-progress",
            "--out", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize("flags, inside, banner", [
    ((), {1}, "1 BLAS thread (auto)"),
    (("--threads", "2"), {2}, "2 BLAS threads (--threads)"),
    (("--threads", "0"), {OUTSIDE}, "threads left alone (--threads 0)"),
])
def test_train_sets_the_pools_for_the_run(capsys, tmp_path, monkeypatch, flags, inside,
                                          banner):
    seen = spy_on_train(monkeypatch)
    assert main(moons(tmp_path, *flags)) == 0
    out = capsys.readouterr().out
    assert seen == [inside]
    assert banner in out.splitlines()[0]
    assert pool_sizes() == {OUTSIDE}  # restored after the command


def test_gradcheck_sets_the_pools(capsys, monkeypatch):
    from xpnn.nn import gradcheck

    seen = []
    real = gradcheck.gradient_check

    def spy(*args, **kwargs):
        seen.append(pool_sizes())
        return real(*args, **kwargs)

    monkeypatch.setattr(gradcheck, "gradient_check", spy)
    assert main(["gradcheck"]) == 0
    assert seen == [{1}] and "1 BLAS thread (auto)" in capsys.readouterr().out
    assert main(["gradcheck", "--threads", "2"]) == 0
    assert seen[-1] == {2} and pool_sizes() == {OUTSIDE}


def test_the_api_leaves_the_pools_alone():
    seen = []

    class Watch(Callback):
        def on_train_begin(self, run):
            seen.append(pool_sizes())

        def after_step(self, run):
            seen.append(pool_sizes())

    x, t = xpnn.data.make_moons(40, seed=0)
    net = xpnn.MLP([2, 3, 2], seed=0)
    xpnn.train(net, (x, t), iters=2, batch_size=10, progress=False, callbacks=[Watch()])
    assert seen == [{OUTSIDE}] * 3


def test_auto_threads_small_products_get_one_thread():
    seed_net = threads.gemm_work([784, 50, 10], 100)
    assert seed_net == 100 * 784 * 50 < threads.SMALL_GEMM
    assert threads.auto_threads(seed_net, cores=64, load=0.0) == 1


@pytest.mark.parametrize("cores, load, ranks, want", [
    (8, 0.0, 1, 8),     # idle: every core
    (8, 3.2, 1, 5),     # three cores busy already
    (2, 4.0, 1, 1),     # busier than the machine: still 1
    (8, 0.0, 4, 2),     # four MPI ranks share the cores
    (8, 0.0, 16, 1),
])
def test_auto_threads_large_products_use_the_idle_cores(cores, load, ranks, want):
    work = threads.gemm_work([784, 4096, 10], 1000)
    assert work >= threads.SMALL_GEMM
    assert threads.auto_threads(work, ranks, cores=cores, load=load) == want


def test_without_threadpoolctl_the_pools_are_left_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    assert threads.plan_threads(None, 10) == (None, "threads left alone (no threadpoolctl)")
    with pytest.raises(ImportError, match="--threads needs threadpoolctl"):
        threads.plan_threads(2, 10)


def test_torch_intra_op_threads_follow_and_are_restored():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with threads.limit_threads(1):
        assert torch.get_num_threads() == 1
        assert pool_sizes() == {1}
    assert torch.get_num_threads() == before
