"""Compile mode "fused" (PyTorch on CUDA): ``torch.compile(step)`` (inductor's default
mode) compiled during ``CudaGraphStep``'s warm-up, then captured by xpnn's own CUDA
graph, so a replay runs inductor's fused kernels with no Python or guards. On the CPU:
the real ``fused_graph_step`` and inductor (its C++ kernels instead of Triton's) with a
``FakeCapture`` whose "graph" re-runs the captured body; compile calls and calls of
the compiled step are recorded with whether the capture was running. The real capture
needs a GPU (bench/gpu_check.py times and checks the mode there)."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
from helpers import FakeCapture, host_leaves

import xpnn
from xpnn import compile as xcompile
from xpnn.compile import (
    CompileFallbackWarning,
    check_mode,
    compile_step,
    function_compiler,
)
from xpnn.compile.cuda_graph import CudaGraphStep
from xpnn.compile.torch_modes import (
    fused_function_compiler,
    fused_graph_step,
    torch_compile,
)
from xpnn.nn import numerical as N
from xpnn.training import make_step
from xpnn.training import step as step_module
from xpnn.training.step import Step, numerical_gradient_fn

torch = pytest.importorskip("torch")
CUDA = torch.device("cuda")  # a device object only: nothing here touches a GPU
OPTIMIZERS = sorted(xpnn.OPTIMIZERS)
LR = {"rmsprop": 0.01, "adam": 0.01}


@pytest.fixture(autouse=True)
def _quiet_dynamo():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dynamo's notes (lru_cache etc.)
        warnings.simplefilter("error", CompileFallbackWarning)
        yield


def _net(sizes=(4, 6, 5, 3), activation=("tanh", "relu")):
    return xpnn.MLP(list(sizes), activation=list(activation)[:len(sizes) - 2],
                    weight_init=0.5, seed=0, backend="torch", dtype="float64")


def _batches(net, steps=4, n=12):
    rng = np.random.default_rng(0)
    d, k = net.sizes[0], net.sizes[-1]
    return [(torch.as_tensor(rng.standard_normal((n, d))),
             net.prepare_targets(torch.as_tensor(rng.integers(0, k, n))))
            for _ in range(steps)]


def _max_rel(a, b) -> float:
    ha, hb = host_leaves(a), host_leaves(b)
    assert ha.keys() == hb.keys()
    return max(float(np.max(np.abs(ha[k] - hb[k]), initial=0.0))
               / max(float(np.max(np.abs(hb[k]), initial=0.0)), 1e-300) for k in ha)


class Recorded:
    """A fused step on a ``FakeCapture("torch")`` whose compiler is the real
    ``torch_compile`` with an inductor backend that records, per graph compiled,
    (whether the capture was running, which call of the compiled step compiled it);
    every call of the compiled step records whether the capture was running. (With
    a cold inductor cache dynamo may hand one graph to the backend twice, in one
    call.)"""

    def __init__(self, fn, backend=None):
        from torch._inductor.compile_fx import compile_fx

        self.capture = FakeCapture("torch")
        self.compiles, self.calls = [], []

        def inductor(gm, example_inputs):
            self.compiles.append((self.capture.capturing(), len(self.calls)))
            return compile_fx(gm, example_inputs)

        def compiler(f):
            compiled = torch_compile(f, backend=inductor if backend is None else backend)

            def counted(*args):
                self.calls.append(self.capture.capturing())
                return compiled(*args)

            return counted

        self.step, self.donates = fused_graph_step(fn, capture=self.capture,
                                                   compiler=compiler)


def _patch(monkeypatch, **kw):
    made = []

    def compile_step(fn, xp, device=None, mode=None, matmul_hooks=()):
        made.append(Recorded(fn, **kw))
        return made[-1].step, made[-1].donates

    monkeypatch.setattr(step_module, "compile_step", compile_step)
    return made


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_step_is_compiled_in_the_warm_up_captured_and_equals_eager(monkeypatch,
                                                                        optimizer):
    """The step compiles (one graph) on the warm-up's first call, before the capture
    begins; the capture records the compiled step, which is what every replay runs
    (no recompilation); four steps equal eager to 1e-12 (float64)."""
    made = _patch(monkeypatch)
    net = _net()
    lr = LR.get(optimizer, 0.1)
    eager = make_step(net, xpnn.make_optimizer(optimizer, lr=lr))
    fused = make_step(net, xpnn.make_optimizer(optimizer, lr=lr), compile=True)
    (rec,) = made
    assert fused.donates and isinstance(rec.step, CudaGraphStep)
    s_eager, s_fused = eager.init(), fused.init()
    start = host_leaves(s_eager["params"])
    for xb, Tb in _batches(net):
        s_eager, s_fused = eager(s_eager, xb, Tb), fused(s_fused, xb, Tb)
    # compiled on the warm-up's first call, before the capture began, never again
    assert rec.compiles and set(rec.compiles) == {(False, 1)}
    assert rec.capture.warm_ups == 2 and rec.capture.events == ["begin", "end"]
    assert rec.calls == [False, False, True] + [False] * 4  # warm-up, capture, replays
    assert rec.capture.replays == 4 and not rec.step.eager
    # absolute, as in test_numerical_compile.py: the biases are ~0.02, and a central
    # difference turns inductor's reordered sums (an ulp of the loss) into 5e-14 here
    a, b = host_leaves(s_fused), host_leaves(s_eager)
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) <= 1e-12
    moved = host_leaves(s_fused["params"])
    assert max(float(np.max(np.abs(moved[k] - start[k]))) for k in start) > 1e-3
    assert int(s_fused["iteration"]) == 4


def _numerical_steps(monkeypatch, fused_fn, steps=3):
    """Eager and fused numerical SGD steps (h=1e-3) of a small net, ``steps`` batches;
    the chunk functions compiled by ``fused_fn`` (a "fused" ``compile_fn``), each
    compilation and call recorded with whether the step's capture was running."""
    made = _patch(monkeypatch)
    chunk_compiles, chunk_calls = [], []

    def compile_fn(fn, xp, device):
        capture = made[0].capture
        chunk_compiles.append(capture.capturing())
        compiled = fused_fn(fn, xp, device)[0]

        def counted(state, x, T, start):
            chunk_calls.append((capture.capturing(), start))  # kept alive: ids stay unique
            return compiled(state, x, T, start)

        return counted, False

    net = _net((6, 5, 3), ("tanh",))
    h = 1e-3
    eager = Step(net, xpnn.SGD(lr=0.1), gradient=numerical_gradient_fn(net, h))
    fused = Step(net, xpnn.SGD(lr=0.1), compile=True,
                 gradient=N.compiled_gradient(net, h, compile_fn, memory_budget=8000))
    s_eager, s_fused = eager.init(), fused.init()
    start = host_leaves(s_eager["params"])
    for xb, Tb in _batches(net, steps=steps):
        s_eager, s_fused = eager(s_eager, xb, Tb), fused(s_fused, xb, Tb)
    (rec,) = made
    # absolute, as in test_numerical_compile.py: the biases are ~0.02, and a central
    # difference turns inductor's reordered sums (an ulp of the loss) into 5e-14 here
    a, b = host_leaves(s_fused), host_leaves(s_eager)
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) <= 1e-12
    moved = host_leaves(s_fused["params"])
    assert max(float(np.max(np.abs(moved[k] - start[k]))) for k in start) > 1e-3
    return rec, N.plan(net, 12, 8000), chunk_compiles, chunk_calls


def test_the_numerical_step_runs_compiled_chunks_inside_the_capture(monkeypatch):
    """``train(gradient="numerical", compile="fused")`` on CUDA: the numerical
    gradient's chunk functions compiled by ``function_compiler(..., "fused")``
    (``torch.compile`` alone) and called inside the step's capture. All compilation
    happens in the warm-up; the capture calls them with the start offsets made in the
    warm-up (no host-to-device copy in a capture), the replays too; the steps equal
    eager (SGD, h=1e-3) to 1e-12 (absolute)."""
    rec, chunks, chunk_compiles, chunk_calls = _numerical_steps(
        monkeypatch, function_compiler(torch, CUDA, "fused"))
    assert len(chunks) > 4  # several chunks for some parameter
    assert rec.capture.events == ["begin", "end"] and not rec.step.eager
    # the step's graphs (around the gradient's graph break), in the first call
    assert rec.compiles and {c for c, _ in rec.compiles} == {False}
    assert {i for _, i in rec.compiles} == {1}
    assert chunk_compiles == [False] * 4  # one per parameter, in the warm-up
    warm = {id(s) for capturing, s in chunk_calls[:2 * len(chunks)] if not capturing}
    captured = chunk_calls[2 * len(chunks):3 * len(chunks)]
    assert len(warm) == len(chunks) and all(c for c, _ in captured)
    assert {id(s) for _, s in captured} == warm  # the warm-up's offsets, reused
    assert {id(s) for _, s in chunk_calls} == warm
    assert len(chunk_calls) == 6 * len(chunks)  # 2 warm-ups, the capture, 3 replays


def test_a_chunk_function_that_fails_to_compile_runs_eagerly_in_the_graph(monkeypatch):
    """The chunk functions' compiler raises: one CompileFallbackWarning for all of
    them, they run eagerly, and the step is still compiled and captured (the step's
    own fallback would call them again and fail again); equal to eager."""

    def broken(gm, example_inputs):
        raise RuntimeError("inductor cannot fuse this today")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompileFallbackWarning)
        rec, chunks, _, chunk_calls = _numerical_steps(monkeypatch, fused_function_compiler(
            compiler=lambda f: torch_compile(f, backend=broken)))
    fallbacks = [w for w in caught if issubclass(w.category, CompileFallbackWarning)]
    assert len(fallbacks) == 1
    assert "inductor cannot fuse this today" in str(fallbacks[0].message)
    assert rec.capture.events == ["begin", "end"] and not rec.step.eager
    assert sum(c for c, _ in chunk_calls) == len(chunks)  # called in the capture


def test_a_compile_failure_in_the_warm_up_falls_back_with_one_warning(monkeypatch):
    """The compiler raises at the warm-up's first call: no capture is begun, one
    CompileFallbackWarning names the mode and the cause, and every step runs the
    plain (uncompiled) step: equal to eager exactly."""

    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler for inductor today")

    made = _patch(monkeypatch, backend=broken)
    net = _net()
    eager = make_step(net, xpnn.Momentum(lr=0.1))
    fused = make_step(net, xpnn.Momentum(lr=0.1), compile=True)
    s_eager, s_fused = eager.init(), fused.init()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompileFallbackWarning)
        for xb, Tb in _batches(net):
            s_eager, s_fused = eager(s_eager, xb, Tb), fused(s_fused, xb, Tb)
    fallbacks = [w for w in caught if issubclass(w.category, CompileFallbackWarning)]
    assert len(fallbacks) == 1
    message = str(fallbacks[0].message)
    assert "mode 'fused'" in message and "no C++ compiler for inductor today" in message
    (rec,) = made
    assert rec.step.eager and rec.capture.events == [] and not rec.capture.capturing()
    assert rec.calls == [False]  # the first warm-up call raised; none after
    assert _max_rel(s_fused, s_eager) == 0.0


def test_torch_compile_refusing_the_function_falls_back_at_once():
    def refuse(fn):
        raise RuntimeError("torch.compile is not supported on this Python")

    fn = object()
    with pytest.warns(CompileFallbackWarning, match="not supported on this Python"):
        assert fused_graph_step(fn, capture=FakeCapture("torch"), compiler=refuse) == (
            fn, False)


def test_compile_step_builds_the_fused_step_on_cuda(monkeypatch):
    """``compile_step(mode="fused")`` for a CUDA device: ``torch.compile(fn)`` in a
    ``CudaGraphStep`` on a ``TorchCapture`` (faked: no GPU here), the plain ``fn``
    kept for a fallback; nothing compiles until the first call."""
    monkeypatch.setattr("xpnn.compile.cuda_graph.TorchCapture",
                        lambda: FakeCapture("torch"))

    def fn(state, x):
        return state

    step, donates = compile_step(fn, torch, CUDA, mode="fused")
    assert donates and isinstance(step, CudaGraphStep)
    assert step.plain is fn and step.fn is not fn and "mode 'fused'" in step.label


def test_check_mode_accepts_fused_only_for_torch_on_cuda():
    check_mode("fused", torch, CUDA)
    check_mode("fused", torch, torch.device("cuda:1"))
    cupy = types.ModuleType("cupy")  # named like CuPy: only its name is read
    for xp, device in ((torch, None), (torch, torch.device("cpu")), (np, None),
                       (cupy, None)):
        with pytest.raises(ValueError, match="'fused'.*PyTorch on a CUDA device"):
            check_mode("fused", xp, device)
    with pytest.raises(ValueError, match="CUDA"):
        make_step(_net(), xpnn.SGD(lr=0.1), compile="fused")
    assert "fused" in xcompile.MODES


def test_function_compiler_per_backend_and_mode(monkeypatch):
    """The numerical gradient's chunk functions: compiled by torch.compile on the CPU
    and under "fused" on CUDA (with no capture of their own); left to the enclosing
    capture under "graph" and "reduce-overhead"; not compiled apart on other
    backends. ``numerical_gradient_fn`` passes the step's mode on."""
    assert function_compiler(torch, None) is compile_step
    assert function_compiler(np, None) is None
    for mode in (None, "graph", "reduce-overhead"):
        assert function_compiler(torch, CUDA, mode) is None
    fused = function_compiler(torch, CUDA, "fused")
    compiled, donates = fused(lambda s: s, torch, CUDA)
    assert callable(compiled) and not donates and not isinstance(compiled, CudaGraphStep)

    seen = []
    monkeypatch.setattr(step_module, "function_compiler",
                        lambda xp, device, mode: seen.append(mode))
    net = _net()
    for compile in ("fused", True, "graph"):
        numerical_gradient_fn(net, 1e-3, compile=compile)
    assert seen == ["fused", None, "graph"]
