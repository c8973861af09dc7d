"""A real Dask LocalCluster with 2 worker processes: exact parameter-parallel
gradients, a worker killed mid-gradient (Dask reruns its task, the result is still
exact), a worker with another xpnn version refused, out-of-core evaluation on the
workers. Skipped without dask.distributed (``pip install 'xpnn[dask]'``)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from helpers import host, problem

pytest.importorskip("distributed")

import xpnn  # noqa: E402
from xpnn.dist import WorkerMismatchError, numerical_gradient  # noqa: E402
from xpnn.dist.dask import accuracy, dask_executor, evaluate, predict  # noqa: E402

TIMEOUT = 60


@pytest.fixture(scope="module")
def executor():
    with dask_executor(n_workers=2, threads_per_worker=1) as ex:
        yield ex


def _max_rel(a, b):
    a, b = host(a), host(b)
    return max(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k])) for k in b)


def _gradient_problem():
    net, x, t = problem(("numpy", None), [12, 9, 6, 4], n=17, weight_decay=0.01)
    x = net.check_x(x)
    return net, x, t, net.prepare_targets(t, x.shape[0])


def _timed(fn):
    """Run ``fn`` in a thread, failing the test after TIMEOUT seconds instead of hanging."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=TIMEOUT)


def test_gradient_on_two_worker_processes_is_exact(executor):
    net, x, t, T = _gradient_problem()
    pids = executor._client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    want = net.numerical_gradient(x, t, memory_budget=4096)
    got = _timed(lambda: numerical_gradient(net, x, T, executor=executor, memory_budget=4096,
                                            tasks=4))
    assert _max_rel(got, want) <= 1e-12


def test_a_client_is_an_executor_too(executor, monkeypatch):
    """A dask.distributed Client works as passed: its workers' threads (not this
    machine's CPU count) set the task count, the payload is scattered once per
    gradient instead of pickled into every task, and the gradient is exact."""
    from xpnn.dist.executor import dask_client, executor_workers

    client = executor._client
    assert dask_client(client) is client and dask_client(executor) is client
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert executor_workers(client) == 2
    scattered = []
    real_scatter = client.scatter

    def spy(data, **kwargs):
        scattered.append(kwargs)
        return real_scatter(data, **kwargs)

    monkeypatch.setattr(client, "scatter", spy)
    net, x, t, T = _gradient_problem()
    got = _timed(lambda: numerical_gradient(net, x, T, executor=client, memory_budget=4096))
    assert _max_rel(got, net.numerical_gradient(x, t, memory_budget=4096)) <= 1e-12
    again = _timed(lambda: numerical_gradient(net, x, T, executor=client, memory_budget=4096))
    assert _max_rel(again, got) == 0.0
    assert len(scattered) == 2 and all(k.get("broadcast") for k in scattered)


class KillFirstAttempt:
    """Wraps a Dask executor so that the first attempt of the first task kills its
    worker process (os._exit: no cleanup, like a crash); the marker file makes the
    retry run normally."""

    def __init__(self, executor, marker):
        self._inner, self._client, self.marker = executor, executor._client, str(marker)

    def submit(self, fn, *args):
        first = not getattr(self, "_submitted", False)
        self._submitted = True
        return self._inner.submit(_maybe_die, self.marker if first else None, fn, *args)


def _maybe_die(marker, fn, *args):
    if marker is not None and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return fn(*args)


def test_worker_killed_mid_gradient_is_retried_and_exact(executor, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on workers
    net, x, t, T = _gradient_problem()
    before = set(executor._client.run(os.getpid).values())
    marker = tmp_path / "killed-once"
    got = _timed(lambda: numerical_gradient(net, x, T, executor=KillFirstAttempt(executor, marker),
                                            memory_budget=4096, tasks=4))
    assert marker.exists()  # the first attempt did die
    assert _max_rel(got, net.numerical_gradient(x, t, memory_budget=4096)) <= 1e-12
    executor._client.wait_for_workers(2, timeout=TIMEOUT)  # the nanny restarted it
    assert set(executor._client.run(os.getpid).values()) != before


def test_worker_with_another_xpnn_version_is_refused(executor):
    net, x, t, T = _gradient_problem()
    client = executor._client

    def set_version(v):
        import xpnn

        old, xpnn.__version__ = xpnn.__version__, v
        return old

    client.run(set_version, "0.0.0-other")
    try:
        with pytest.raises(WorkerMismatchError, match=r"runs xpnn 0\.0\.0-other but the task "
                                                      r"comes from xpnn " + xpnn.__version__):
            _timed(lambda: numerical_gradient(net, x, T, executor=executor))
    finally:
        client.run(set_version, xpnn.__version__)
    got = numerical_gradient(net, x, T, executor=executor)  # accepted again
    assert _max_rel(got, net.numerical_gradient(x, t)) <= 1e-12


def test_out_of_core_evaluation_on_the_workers(executor):
    da = pytest.importorskip("dask.array")
    net, x, t = problem(("numpy", None), [5, 7, 3], n=50)
    xd = da.from_array(xpnn.to_numpy(x), chunks=(8, 5))
    td = da.from_array(xpnn.to_numpy(t), chunks=8)
    client = executor._client
    probs = client.compute(predict(net, xd)).result(timeout=TIMEOUT)
    np.testing.assert_allclose(probs, xpnn.to_numpy(net.predict(x)), rtol=1e-13)
    # the default scheduler is now this client (the cluster's worker processes)
    loss, acc = _timed(lambda: evaluate(net, xd, td))
    assert loss == pytest.approx(float(net.loss(x, t)), rel=1e-12)
    assert acc == pytest.approx(net.accuracy(x, t), abs=1e-12)
    assert _timed(lambda: accuracy(net, xd, td)) == acc


def test_cli_scheduler_flag_connects_to_a_running_cluster(executor):
    import argparse

    from xpnn.dist.cli import add_dist_flags, dist_setup

    parser = argparse.ArgumentParser()
    add_dist_flags(parser)
    address = executor._client.scheduler.address
    args = parser.parse_args(["--scheduler", address])
    net, x, t, T = _gradient_problem()
    with dist_setup(args, gradient="numerical") as setup:
        assert setup.executor._client.scheduler.address == address
        got = _timed(lambda: numerical_gradient(net, x, T, executor=setup.executor))
    assert _max_rel(got, net.numerical_gradient(x, t)) <= 1e-12
