"""The compile seam (``xpnn.compile``) on the CPU: a capture that fails cannot poison
the process (the capture is ended, one warning, the step runs eagerly), the CuPy GEMM
route (planned ``Matmul`` objects, here a fake that computes with NumPy) and the
compile modes' validation. The real captures and nvmath need a GPU
(bench/gpu_check.py)."""

from __future__ import annotations

import math
import operator
import sys
import warnings

import numpy as np
import pytest
from helpers import FakeCapture, host_leaves

import xpnn
from xpnn.compile import (
    MODES,
    CaptureNotEndedError,
    CompileFallbackWarning,
    compile_step,
    cupy_graph_step,
)
from xpnn.compile.cuda_graph import CudaGraphStep
from xpnn.compile.cupy_gemm import PlannedMatmuls
from xpnn.nn import functional
from xpnn.training import make_step
from xpnn.training import step as step_module

REFUSED = "calling cuBLAS API during stream capture is currently unsupported"


def _net(backend="numpy", sizes=(4, 6, 6, 6, 3)):
    return xpnn.MLP(list(sizes), activation=["tanh", "relu", "sigmoid"][:len(sizes) - 2],
                    weight_init=0.5, seed=0, backend=backend, dtype="float64")


def _batches(net, steps=4, n=12):
    rng = np.random.default_rng(0)
    d, k = net.sizes[0], net.sizes[-1]
    return [(xpnn.asarray(rng.standard_normal((n, d)), backend=net.xp),
             net.prepare_targets(xpnn.asarray(rng.integers(0, k, n), backend=net.xp)))
            for _ in range(steps)]


def _assert_close(a, b, rtol=0.0, atol=0.0):
    ha, hb = host_leaves(a), host_leaves(b)
    assert ha.keys() == hb.keys()
    for key in ha:
        np.testing.assert_allclose(ha[key], hb[key], rtol=rtol, atol=atol, err_msg=key)


def _refusing_matmul(capture):
    """CuPy's matmul as it behaves under capture: it raises while the stream captures."""

    def matmul(a, b):
        if capture.capturing():
            raise NotImplementedError(REFUSED)
        return a @ b

    return matmul


def _patch_compile(monkeypatch, make):
    """``make_step(compile=True)`` gets ``make(fn, matmul_hooks)`` as its compiled step."""
    made = []

    def compile_step(fn, xp, device=None, mode=None, matmul_hooks=()):
        made.append(make(fn, matmul_hooks))
        return made[-1], True

    monkeypatch.setattr(step_module, "compile_step", compile_step)
    return made


# -- a failed capture cannot poison the process ------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_capture_that_raises_midway_is_ended_and_the_step_runs_eagerly(monkeypatch,
                                                                          optimizer):
    """The capture raises inside the step (CuPy's refusal of cuBLAS, at the first
    product): the capture is ended before the error leaves, one warning names the
    backend and the cause, and every step (the failed first one included) equals the
    plain eager step exactly, with the Affine's own matmul back in place."""
    capture = FakeCapture("numpy")
    made = _patch_compile(monkeypatch, lambda fn, hooks: CudaGraphStep(
        fn, capture, (hooks, _refusing_matmul(capture))))
    net = _net()
    eager = make_step(net, xpnn.make_optimizer(optimizer, lr=0.05))
    compiled = make_step(net, xpnn.make_optimizer(optimizer, lr=0.05), compile=True)
    s_eager, s_comp = eager.init(), compiled.init()
    with pytest.warns(CompileFallbackWarning) as record:
        for xb, Tb in _batches(net):
            s_eager, s_comp = eager(s_eager, xb, Tb), compiled(s_comp, xb, Tb)
            _assert_close(s_comp, s_eager)
    fallbacks = [w for w in record if issubclass(w.category, CompileFallbackWarning)]
    assert len(fallbacks) == 1
    message = str(fallbacks[0].message)
    assert "fake-numpy" in message and REFUSED in message and "NotImplementedError" in message
    step = made[0]
    assert capture.warm_ups == 2  # the warm-up ran (uncaptured), then the capture began
    assert capture.events == ["begin", "discard"] and not capture.capturing()
    assert step.eager and isinstance(step.fallback, NotImplementedError)
    assert step.graph is None and step.state is None  # the buffers are let go
    assert net.arch.affine.matmul is operator.matmul
    assert int(s_comp["iteration"]) == 4


def test_a_failure_in_the_warm_up_falls_back_without_beginning_a_capture(monkeypatch):
    capture = FakeCapture("numpy")

    def broken(a, b):
        raise ValueError("the GEMM route cannot plan this product")

    _patch_compile(monkeypatch, lambda fn, hooks: CudaGraphStep(fn, capture, (hooks, broken)))
    net = _net()
    (xb, Tb), = _batches(net, steps=1)
    eager = make_step(net, xpnn.SGD(lr=0.1))
    compiled = make_step(net, xpnn.SGD(lr=0.1), compile=True)
    with pytest.warns(CompileFallbackWarning, match="cannot plan this product"):
        out = compiled(compiled.init(), xb, Tb)
    _assert_close(out, eager(eager.init(), xb, Tb))
    assert capture.events == [] and net.arch.affine.matmul is operator.matmul


def test_ending_the_capture_can_fail_too(monkeypatch):
    """``end`` raises (CUDA reports an invalidated capture there): discarded, fallback."""
    capture = FakeCapture("numpy")

    def end():
        capture.events.append("end")
        raise RuntimeError("cudaErrorStreamCaptureInvalidated")

    capture.end = end
    _patch_compile(monkeypatch, lambda fn, hooks: CudaGraphStep(fn, capture))
    net = _net()
    (xb, Tb), = _batches(net, steps=1)
    compiled = make_step(net, xpnn.SGD(lr=0.1), compile=True)
    with pytest.warns(CompileFallbackWarning, match="StreamCaptureInvalidated"):
        compiled(compiled.init(), xb, Tb)
    assert capture.events == ["begin", "end", "discard"] and not capture.capturing()


def test_an_interrupt_during_capture_ends_it_and_propagates(monkeypatch):
    capture = FakeCapture("numpy")

    def interrupt(a, b):
        if capture.capturing():
            raise KeyboardInterrupt
        return a @ b

    made = _patch_compile(monkeypatch,
                          lambda fn, hooks: CudaGraphStep(fn, capture, (hooks, interrupt)))
    net = _net()
    (xb, Tb), = _batches(net, steps=1)
    compiled = make_step(net, xpnn.SGD(lr=0.1), compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        with pytest.raises(KeyboardInterrupt):
            compiled(compiled.init(), xb, Tb)
    assert capture.events == ["begin", "discard"] and not made[0].eager
    assert net.arch.affine.matmul is operator.matmul


def test_a_capture_that_cannot_be_ended_is_a_clear_error(monkeypatch):
    """Only when even discarding leaves the stream capturing does the step raise: the
    process's CUDA state is gone then, and the message says so."""
    capture = FakeCapture("numpy")
    capture.discard = lambda: capture.events.append("discard")  # leaves it capturing
    _patch_compile(monkeypatch, lambda fn, hooks: CudaGraphStep(
        fn, capture, (hooks, _refusing_matmul(capture))))
    net = _net()
    (xb, Tb), = _batches(net, steps=1)
    compiled = make_step(net, xpnn.SGD(lr=0.1), compile=True)
    with pytest.raises(CaptureNotEndedError, match="could not be ended.*restart"):
        compiled(compiled.init(), xb, Tb)


def test_the_fallback_warning_can_be_made_an_error(monkeypatch):
    capture = FakeCapture("numpy", fail_on_begin=RuntimeError("no capture today"))
    _patch_compile(monkeypatch, lambda fn, hooks: CudaGraphStep(fn, capture))
    net = _net()
    (xb, Tb), = _batches(net, steps=1)
    compiled = make_step(net, xpnn.SGD(lr=0.1), compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        with pytest.raises(CompileFallbackWarning, match="no capture today"):
            compiled(compiled.init(), xb, Tb)


# -- the CuPy GEMM route -----------------------------------------------------------------


class FakeMatmul:
    """nvmath's stateful ``Matmul`` API, computing with NumPy from the operands it
    holds (so a missed ``reset_operands`` gives a wrong product). ``log`` records
    (event, key) for every plan and execute, and whether a capture was running."""

    log: list = []
    capture = None

    def __init__(self, a, b, *, stream=None):
        assert stream == "capture-stream"
        self.key = PlannedMatmuls.key(a, b)
        self.a, self.b, self.planned = a, b, False

    def _event(self, name):
        capturing = FakeMatmul.capture is not None and FakeMatmul.capture.capturing()
        FakeMatmul.log.append((name, self.key, capturing))

    def plan(self, *, stream=None):
        assert stream == "capture-stream" and not self.planned
        self.planned = True
        self._event("plan")

    def reset_operands(self, *, a=None, b=None, stream=None):
        assert stream == "capture-stream"
        assert PlannedMatmuls.key(a, b) == self.key  # nvmath checks shapes, strides, dtypes
        self.a, self.b = a, b

    def execute(self, *, stream=None):
        assert stream == "capture-stream" and self.planned
        self._event("execute")
        return np.matmul(self.a, self.b)

    def free(self):
        self._event("free")


def _products_per_step(net):
    """The keys of the products one backprop step takes, in order (plain path)."""
    keys = []

    def recording(a, b):
        keys.append(PlannedMatmuls.key(a, b))
        return a @ b

    net.arch.affine.matmul = recording
    try:
        (xb, Tb), = _batches(net, steps=1)
        functional.gradient(net.arch, net.params, xb, Tb)
    finally:
        net.arch.affine.matmul = operator.matmul
    return keys


def test_the_route_plans_each_product_once_and_executes_every_product():
    """Through ``functional.gradient``: 11 products on the 4-6-6-6-3 net's step (4
    forward, 4 dW, 3 dx), 8 kinds (the two 6x6 layers share three): 8 plans, 11
    executions per gradient, and the gradient equals the plain one to 1e-12."""
    net = _net()
    keys = _products_per_step(net)
    assert len(keys) == 11 and len(set(keys)) == 8
    FakeMatmul.log, FakeMatmul.capture = [], None
    route = PlannedMatmuls(FakeMatmul, stream=lambda: "capture-stream")
    batches = _batches(net, steps=3)
    for xb, Tb in batches:
        want = functional.gradient(net.arch, net.params, xb, Tb)
        net.arch.affine.matmul = route
        try:
            got = functional.gradient(net.arch, net.params, xb, Tb)
        finally:
            net.arch.affine.matmul = operator.matmul
        _assert_close(got, want, rtol=1e-12, atol=1e-15)
    assert route.planned == len(route) == 8
    assert route.executed == 11 * len(batches)
    assert [k for e, k, _ in FakeMatmul.log if e == "plan"] == list(dict.fromkeys(keys))


@pytest.mark.parametrize("optimizer", sorted(xpnn.OPTIMIZERS))
def test_the_compiled_cupy_path_plans_outside_the_capture_and_equals_eager(monkeypatch,
                                                                           optimizer):
    """``cupy_graph_step`` (CuPy's compiled step) on a fake capture and ``FakeMatmul``:
    the Affine's products go through the route while warming up and capturing (every
    plan during the warm-up, none in the capture, one execution per product in it),
    the "graph" replays the routed products, and every step equals eager to 1e-12
    (float64)."""
    net = _net()
    capture = FakeCapture("numpy")
    FakeMatmul.log, FakeMatmul.capture = [], capture
    made = _patch_compile(monkeypatch, lambda fn, hooks: cupy_graph_step(
        fn, hooks, capture=capture, matmul_class=FakeMatmul,
        stream=lambda: "capture-stream")[0])
    lr = {"rmsprop": 0.01, "adam": 0.01}.get(optimizer, 0.1)
    eager = make_step(net, xpnn.make_optimizer(optimizer, lr=lr))
    compiled = make_step(net, xpnn.make_optimizer(optimizer, lr=lr), compile=True)
    step = made[0]
    assert isinstance(step, CudaGraphStep) and step.hooks[0] == (net.arch.affine, net.loss_fn)
    route = step.hooks[1]
    capture.replay_hooks = step.hooks  # the fake graph replays what was captured
    s_eager, s_comp = eager.init(), compiled.init()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        for xb, Tb in _batches(net):
            s_eager, s_comp = eager(s_eager, xb, Tb), compiled(s_comp, xb, Tb)
            _assert_close(s_comp, s_eager, rtol=1e-12, atol=1e-15)
    assert capture.events == ["begin", "end"] and capture.replays == 4
    plans = [(k, c) for e, k, c in FakeMatmul.log if e == "plan"]
    captured = [k for e, k, c in FakeMatmul.log if e == "execute" and c]
    # the gradient's 11 products (8 kinds) and the step's finiteness check, a (1, P)
    # by (P, 1) product of the flat parameters with zeros
    n = sum(math.prod(p.shape) for p in net.params.values())
    assert len(plans) == 8 + 1 and not any(c for _, c in plans)
    flag = PlannedMatmuls.key(np.zeros((1, n)), np.zeros((n, 1)))
    assert captured == _products_per_step(net) + [flag]
    assert route.executed == 12 * (2 + 1 + 4)  # warm-up x2, capture, 4 replays
    assert net.arch.affine.matmul is operator.matmul


def test_without_nvmath_a_cupy_step_runs_eagerly_with_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvmath", None)  # import nvmath raises ImportError
    fn = object()
    with pytest.warns(CompileFallbackWarning, match=r"nvmath-python.*xpnn\[cuda-graph\]"):
        assert cupy_graph_step(fn, ()) == (fn, False)


def test_the_route_refuses_stacks():
    route = PlannedMatmuls(FakeMatmul, stream=lambda: "capture-stream")
    with pytest.raises(ValueError, match="2-D"):
        route(np.ones((2, 3, 4)), np.ones((4, 5)))


# -- modes -------------------------------------------------------------------------------


def test_modes_are_refused_where_they_do_not_apply():
    net = _net()
    assert MODES == ("graph", "fused", "reduce-overhead")
    for mode in MODES:
        with pytest.raises(ValueError, match="CUDA"):
            make_step(net, xpnn.SGD(lr=0.1), compile=mode)
        with pytest.raises(ValueError, match="CUDA"):
            compile_step(lambda s: s, net.xp, mode=mode)
    with pytest.raises(TypeError, match="compile must be"):
        make_step(net, xpnn.SGD(lr=0.1), compile="fast")
    with pytest.raises(ValueError, match="unknown compile mode"):
        compile_step(lambda s: s, net.xp, mode="fast")


def test_reduce_overhead_marks_each_step_and_returns_copies(monkeypatch):
    """``ReduceOverheadStep`` around a stand-in for the compiled function that, like
    cudagraph trees, returns the same output tensors every call: the caller gets
    clones (they survive the next call) and each call begins a new step."""
    torch = pytest.importorskip("torch")
    from xpnn.compile.torch_modes import ReduceOverheadStep

    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    out = {"w": torch.zeros(3), "opt": {"n": torch.zeros(())}}

    def replay(state, x):  # writes into its one set of outputs, as a replay does
        out["w"].copy_(state["w"] + x)
        out["opt"]["n"].copy_(state["opt"]["n"] + 1)
        return out

    step = ReduceOverheadStep(None, compiled=replay)
    s1 = step({"w": torch.zeros(3), "opt": {"n": torch.zeros(())}}, torch.ones(3))
    s2 = step(s1, torch.ones(3))
    assert marks == [1, 1]
    assert s1["w"].tolist() == [1.0, 1.0, 1.0] and float(s1["opt"]["n"]) == 1.0
    assert s2["w"].tolist() == [2.0, 2.0, 2.0] and float(s2["opt"]["n"]) == 2.0
    assert s2["w"] is not out["w"]


def test_the_old_import_paths_still_resolve():
    from xpnn import backend, tree

    assert backend.compile_step is compile_step and backend.map_tree is tree.map_tree
    with pytest.raises(AttributeError):
        backend.no_such_name  # noqa: B018
