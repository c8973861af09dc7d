"""The CUDA-graph step's buffer handling (``xpnn.compile.cuda_graph.CudaGraphStep``),
run on the CPU. ``FakeCapture`` (tests/helpers.py) keeps everything of the real class
(buffers cloned from the first state, arguments copied in unless they are the
buffers, the step's result copied back into them in place, the buffers returned) and
replaces only the capture: its "graph" re-runs the step on the same buffers. What a
real capture adds (no host synchronisation inside the step, a fixed memory pool)
needs a GPU; the jax.jit and torch.compile tests already show the step has no
host-dependent control flow."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FakeCapture, host_leaves

import xpnn
from xpnn.compile.cuda_graph import CudaGraphStep
from xpnn.training import make_step, train
from xpnn.training import step as step_module

OPTIMIZERS = sorted(xpnn.OPTIMIZERS)
LR = {"sgd": 0.1, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.1, "rmsprop": 0.01,
      "adam": 0.01}


class Captures:
    """The fake captures made by the patched ``compile_step``."""

    made: list = []

    @classmethod
    def count(cls) -> int:
        return sum(c.events.count("end") for c in cls.made)


@pytest.fixture(params=["numpy", "torch"])
def lib(request, monkeypatch):
    """A host library whose arrays support in-place copies, with ``compile=True``
    routed through CudaGraphStep on a FakeCapture (in place, the state donated, as on
    CUDA)."""
    if request.param == "torch":
        torch = pytest.importorskip("torch")
        to_array = torch.as_tensor
    else:
        to_array = np.asarray

    def compile_step(fn, xp, device=None, mode=None, matmul_hooks=()):
        Captures.made.append(FakeCapture(request.param))
        return CudaGraphStep(fn, Captures.made[-1]), True

    monkeypatch.setattr(step_module, "compile_step", compile_step)
    Captures.made = []
    return request.param, to_array


def _net(backend, **kw):
    return xpnn.MLP([4, 6, 5, 3], activation=["tanh", "relu"], weight_init=0.5, seed=0,
                    backend=backend, dtype="float64", **kw)


def _batches(net, to_array, n=12, steps=4):
    rng = np.random.default_rng(0)
    return [(to_array(rng.standard_normal((n, 4))),
             net.prepare_targets(to_array(rng.integers(0, 3, n)))) for _ in range(steps)]


def _assert_same(a, b):
    ha, hb = host_leaves(a), host_leaves(b)
    assert ha.keys() == hb.keys()
    for key in ha:
        assert ha[key].dtype == hb[key].dtype, key  # nothing cast by the in-place copies
        np.testing.assert_array_equal(ha[key], hb[key], err_msg=key)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_replayed_steps_equal_eager_steps(lib, name):
    backend, to_array = lib
    net = _net(backend)
    batches = _batches(net, to_array)
    eager = make_step(net, xpnn.make_optimizer(name, lr=LR[name]))
    graph = make_step(net, xpnn.make_optimizer(name, lr=LR[name]), compile=True)
    assert graph.compiled and graph.donates
    s_eager, s_graph = eager.init(), graph.init()
    buffers = None
    for xb, Tb in batches:
        s_eager = eager(s_eager, xb, Tb)
        s_graph = graph(s_graph, xb, Tb)
        buffers = s_graph if buffers is None else buffers
        assert s_graph is buffers  # every call returns the same buffers, updated in place
        _assert_same(s_graph, s_eager)
    assert Captures.count() == 1
    assert int(s_graph["iteration"]) == len(batches)


def test_a_changed_lr_and_rebound_params_reach_the_buffers(lib):
    """The runner hands back new dicts around the buffers ({**state, "lr": new}, params
    rebound by a callback): the new arrays are copied in, the rest is not touched."""
    backend, to_array = lib
    net = _net(backend)
    (x1, T1), (x2, T2), (x3, T3) = _batches(net, to_array, steps=3)
    eager = make_step(net, xpnn.Momentum(lr=0.1))
    graph = make_step(net, xpnn.Momentum(lr=0.1), compile=True)
    s_eager, s_graph = eager(eager.init(), x1, T1), graph(graph.init(), x1, T1)

    lr = to_array(np.asarray(0.025))
    s_eager = eager({**s_eager, "lr": lr}, x2, T2)
    s_graph = graph({**s_graph, "lr": lr}, x2, T2)
    _assert_same(s_graph, s_eager)
    assert float(s_graph["lr"]) == 0.025

    halved = {k: v * 0.5 for k, v in s_eager["params"].items()}
    s_eager = eager({**s_eager, "params": halved}, x3, T3)
    s_graph = graph({**s_graph, "params": dict(halved)}, x3, T3)
    _assert_same(s_graph, s_eager)
    assert Captures.count() == 1


def test_the_first_bad_flag_survives_in_place_updates(lib):
    """Diverging on purpose: the buffers' flag names the first step after which a
    parameter was not finite, and keeps naming it, as the eager step's does."""
    backend, to_array = lib
    net = _net(backend)
    batches = _batches(net, to_array, steps=8)
    eager = make_step(net, xpnn.SGD(lr=1e30))
    graph = make_step(net, xpnn.SGD(lr=1e30), compile=True)
    s_eager, s_graph = eager.init(), graph.init()
    flags = []
    with np.errstate(all="ignore"):
        for xb, Tb in batches:
            s_eager, s_graph = eager(s_eager, xb, Tb), graph(s_graph, xb, Tb)
            flags.append(int(s_graph["first_bad"]))
            assert flags[-1] == int(s_eager["first_bad"])
    assert flags[0] == -1 and flags[-1] >= 2  # it did diverge, and not at once
    assert flags[flags[-1] - 1:] == [flags[-1]] * (len(flags) - flags[-1] + 1)


def test_train_through_the_replayed_step_matches_eager(lib):
    """The whole runner on the in-place, donated step: an LR schedule, evaluations, and
    early stopping that stops at 30 and restores its copy of iteration 20's parameters,
    which the buffers overwrote since; same history and parameters as eager."""
    backend, to_array = lib
    rng = np.random.default_rng(1)
    x, y = to_array(rng.standard_normal((40, 4))), to_array(rng.integers(0, 3, 40))
    xt, yt = to_array(rng.standard_normal((40, 4))), to_array(rng.integers(0, 3, 40))
    runs = []
    for compile in (False, True):
        net = _net(backend)
        h = train(net, (x, y), (xt, yt), optimizer=xpnn.Adam(lr=0.3), batch_size=8,
                  iters=60, eval_every=5, seed=0, lr_schedule=xpnn.StepLR(10, 0.5),
                  early_stopping=2, compile=compile, progress=False)
        runs.append((h, host_leaves(net.params)))
    (h1, p1), (h2, p2) = runs
    assert h2.meta["compile"] and h1.iteration == h2.iteration == [0, 5, 10, 15, 20, 25, 30]
    assert h2.meta["stopped_early"] and h1.meta["best_iteration"] == h2.meta["best_iteration"] == 20
    assert h2.train_loss == h1.train_loss and h2.test_acc == h1.test_acc
    assert p1.keys() == p2.keys()
    for key in p1:
        np.testing.assert_array_equal(p2[key], p1[key], err_msg=key)
    assert Captures.count() == 1
