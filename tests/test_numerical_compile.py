"""The batched numerical gradient's chunk plan, its workspace and its compiled forms
(issue 15): the plan as a pure function of (sizes, rows, item size, memory), the
device's free memory sizing it on an accelerator, one reused buffer per stack shape,
and ``compiled_gradient`` (jax.jit, torch.compile) against the eager gradient, alone
and inside ``train(gradient="numerical", compile=True)``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import host, problem
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnn
from xpnn.backend import available_backends
from xpnn.compile import compile_step
from xpnn.nn import numerical as N
from xpnn.training import step as step_module
from xpnn.training import train

SEED = [784, 50, 10]


def _check_plan(chunks, sizes, n_rows, itemsize, budget):
    """Every parameter element once, in order; one width per parameter; no chunk over
    the budget unless it is a single perturbation."""
    keys = [(f"{k}{i}", n) for i in range(1, len(sizes))
            for k, n in (("W", sizes[i - 1] * sizes[i]), ("b", sizes[i]))]
    order = []
    for key, n in keys:
        mine = [c for c in chunks if c.key == key]
        assert [(c.start, c.stop) for c in mine] == [
            (s, min(n, s + mine[0].width)) for s in range(0, n, mine[0].width)]
        assert mine[-1].stop == n and {c.width for c in mine} == {mine[0].width}
        assert mine[-1].stop - mine[-1].start > mine[0].width - len(mine)  # balanced
        layer = int(key[1:]) - 1
        above = sizes[layer + 2:] if layer + 2 < len(sizes) else sizes[-1:]
        per = 2 * 6 * n_rows * max(above) * itemsize  # both signs, a few (N, d) stacks
        assert mine[0].width * per <= budget or mine[0].width == 1
        # the fewest chunks the budget allows
        assert len(mine) == math.ceil(n / max(1, budget // per))
        order += mine
    assert order == chunks


def test_chunk_plan_from_device_memory(monkeypatch):
    """2 GiB free on a pretend CUDA device: a quarter of it per chunk, the seed net's
    W1 in 8 chunks of 4,900 perturbations (96,000 bytes each with both signs), not the
    1,867 chunks of 21 that the CPU's 2 MiB cache budget gives."""
    free = 2 * 2**30
    budget = N.chunk_budget("torch", host=False, free=free)
    assert budget == free // 4
    chunks = N.plan_chunks(SEED, 100, 8, budget)
    _check_plan(chunks, SEED, 100, 8, budget)
    w1 = [c for c in chunks if c.key == "W1"]
    assert len(w1) == 8 and w1[0].width == 4900 and 4900 * 96_000 <= budget
    assert [c for c in chunks if c.key != "W1"] == [
        N.Chunk("b1", 0, 50, 50), N.Chunk("W2", 0, 500, 500), N.Chunk("b2", 0, 10, 10)]

    # the network's own plan: the device's free memory, asked once, through the seam
    net = xpnn.MLP(SEED, backend="numpy", dtype="float64", seed=0)
    asked = []
    monkeypatch.setattr(N, "in_host_memory", lambda xp, device: False)
    monkeypatch.setattr(N, "free_memory", lambda xp, device: asked.append(1) or free)
    assert N.plan(net, 100) == chunks and N.plan(net, 100) == chunks and asked == [1]

    cpu = N.plan_chunks(SEED, 100, 8, N.chunk_budget("numpy", host=True))
    assert len([c for c in cpu if c.key == "W1"]) == 1867
    assert N.chunk_budget("cupy", host=False, free=None) == N.DEVICE_BUDGET_UNKNOWN
    assert N.chunk_budget("cupy", host=False, free=10**12) == N.DEVICE_BUDGET_MAX


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=4),
       n_rows=st.integers(1, 300), itemsize=st.sampled_from([4, 8]),
       budget=st.integers(1, 2**24))
def test_chunk_plan_covers_every_parameter_within_budget(sizes, n_rows, itemsize, budget):
    _check_plan(N.plan_chunks(sizes, n_rows, itemsize, budget), sizes, n_rows, itemsize,
                budget)


@pytest.mark.parametrize("budget", [3000, None])
def test_workspace_reuses_one_buffer_per_shape(backend, budget):
    """Eagerly, the stacks of all chunks of one width are written into one buffer where
    the backend's arrays can be written (NumPy, PyTorch), and the result is the same,
    bit for bit, as with a fresh array per operation."""
    net, x, t = problem(backend, [7, 6, 5, 4], n=9, weight_decay=0.01)
    T = net.prepare_targets(t)
    cache = N.forward_cache(net, x)
    ws = N.Workspace(net.xp)
    chunks = N.plan(net, 9, budget)
    if not ws.writes_in_place:  # JAX, array-api-strict: the plain operations
        c = chunks[0]
        np.testing.assert_array_equal(
            xpnn.to_numpy(N.chunk_gradient(net, x, T, c, 1e-5, cache, workspace=ws)),
            xpnn.to_numpy(N.chunk_gradient(net, x, T, c, 1e-5, cache)))
        assert backend[0] not in ("numpy", "torch") and not ws._buffers
        return
    plain = {k: [] for k in net.params}
    reused = {k: [] for k in net.params}
    for c in chunks:
        plain[c.key].append(N.chunk_gradient(net, x, T, c, 1e-5, cache))
        reused[c.key].append(N.chunk_gradient(net, x, T, c, 1e-5, cache, workspace=ws))
    a, b = host(N.assemble(net, plain)), host(N.assemble(net, reused))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    whole = host(net.numerical_gradient(x, t, memory_budget=budget))
    for k in a:
        np.testing.assert_array_equal(whole[k], b[k], err_msg=k)
    # one buffer per stack shape: never more than one per (parameter, width)
    assert 0 < len(ws._buffers) <= len({(c.key, c.width) for c in chunks})


def _compiled_backends():
    return [name for name in ("jax", "torch") if name in available_backends()]


def _tolerance(name, net, x, T, h):
    """jax.jit runs XLA's own elementwise kernels, as eager JAX does: 1e-12. Inductor's
    exp/log/tanh differ from ATen's by up to 1 ulp (measured), and a central difference
    turns one ulp of the loss into eps*|L|/(2h): 1.1e-11 on these nets at h=1e-5.
    Allow 8 such ulps there."""
    if name == "jax":
        return 1e-12
    eps = float(np.finfo(np.float64).eps)
    return 8 * eps * abs(float(net.loss_prepared(x, T))) / (2 * h)


@pytest.mark.parametrize("name", _compiled_backends())
def test_compiled_gradient_equals_eager(name):
    """One trace per parameter (fixed-width chunks, padded), equal to the eager batched
    gradient: to 1e-12 at h=1e-3 on both, and at the default h=1e-5 to 1e-12 on JAX
    and to the rounding bound of ``_tolerance`` under torch.compile."""
    net, x, t = problem((name, None), [6, 5, 3], n=8, weight_decay=0.01)
    T = net.prepare_targets(t)
    for h in (1e-5, 1e-3):
        eager = host(N.mlp_numerical_gradient(net, x, T, h, memory_budget=3000))
        fn = N.compiled_gradient(net, h, compile_step, memory_budget=3000)
        if name == "jax":
            import jax

            fn = jax.jit(fn)
        got = host(fn(net.params, x, T))
        tol = _tolerance(name, net, x, T, h) if h == 1e-5 else 1e-12
        for k in eager:
            err = np.max(np.abs(got[k] - eager[k]))
            assert err <= tol, (k, err, tol)
        assert any(np.max(np.abs(v)) > 1e-3 for v in eager.values())


def _problem_data(name, n=24):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, 6))
    t = rng.integers(0, 3, n)
    return (xpnn.asarray(x, backend=name), xpnn.asarray(t, backend=name))


@pytest.mark.parametrize("name", _compiled_backends())
def test_numerical_training_compiled_equals_eager(name):
    """``train(gradient="numerical", compile=True)`` (on JAX the whole step jitted
    around lax.map over the chunks; on torch the chunk functions compiled) takes the
    same steps as eager training.

    A central difference rounds chaotically: parameters one ulp apart give gradients
    eps*|L|/(2h) apart (measured on JAX at h=1e-5: 5.6e-17 after the first jitted
    step, 1.1e-11 after the second). So the runs compare at h=1e-3, where one ulp of
    the loss is 1.1e-13 of gradient, with momentum SGD (Adam's normalisation divides
    such noise by the gradient's own size)."""
    data = _problem_data(name)
    start = host(xpnn.MLP([6, 5, 3], activation="tanh", weight_init=0.7, backend="numpy",
                          dtype="float64", seed=0).params)
    runs = {}
    for compiled in (False, True):
        net = xpnn.MLP([6, 5, 3], activation="tanh", weight_init=0.7, backend=name,
                       dtype="float64", seed=0)
        hist = train(net, data, optimizer=xpnn.Momentum(lr=0.1), batch_size=8, iters=4,
                     gradient="numerical", compile=compiled, h=1e-3, seed=0,
                     progress=False)
        assert hist.meta["compile"] is compiled
        runs[compiled] = host(net.params)
    assert max(np.max(np.abs(runs[True][k] - start[k])) for k in start) > 1e-3  # trained
    for k in runs[False]:
        assert np.max(np.abs(runs[True][k] - runs[False][k])) <= 1e-12, k


def test_numerical_training_in_a_cuda_graph_style_step(monkeypatch):
    """On CUDA a compiled step captures the eager numerical gradient whole over fixed
    buffers (``CudaGraphStep``). On the CPU: the graph-step buffer handling on a
    ``FakeCapture``, as in tests/test_graph_step.py, the network placed "off the
    host" so the device plan and the eager-gradient branch are taken; equal to eager
    training bit for bit."""
    from helpers import FakeCapture

    from xpnn.compile.cuda_graph import CudaGraphStep

    captures = []

    def compile_step(fn, xp, device=None, mode=None, matmul_hooks=()):
        captures.append(FakeCapture("numpy"))
        return CudaGraphStep(fn, captures[-1]), True

    monkeypatch.setattr(step_module, "compile_step", compile_step)
    monkeypatch.setattr(N, "in_host_memory", lambda xp, device: False)
    data = _problem_data("numpy")
    runs = {}
    for compiled in (False, True):
        net = xpnn.MLP([6, 5, 3], activation="tanh", weight_init=0.7, backend="numpy",
                       dtype="float64", seed=0)
        train(net, data, optimizer=xpnn.Momentum(lr=0.1), batch_size=8, iters=5,
              gradient="numerical", compile=compiled, seed=0, progress=False)
        runs[compiled] = host(net.params)
    assert sum(c.events.count("end") for c in captures) == 1  # captured once
    for k in runs[False]:
        np.testing.assert_array_equal(runs[True][k], runs[False][k], err_msg=k)


def test_compile_with_an_executor_is_refused():
    from concurrent.futures import ThreadPoolExecutor

    net, x, t = problem(("numpy", None), [6, 5, 3], n=8)
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="executor"):
        train(net, (x, t), batch_size=4, iters=1, gradient="numerical", compile=True,
              executor=pool, progress=False)


# -- the numerical step on CuPy's capture route, faked on the CPU ------------------------


class _Guarded(np.ndarray):
    """A NumPy array that behaves as a CuPy array inside a CUDA-graph capture: reading
    it on the host (bool, int, float, item, tolist, boolean-mask indexing: a
    device-to-host copy) raises while ``capture`` captures, and so does a matrix
    product that does not go through the GEMM route (``routed``: CuPy refuses cuBLAS
    inside a capture)."""

    capture = None
    routed = False

    @classmethod
    def capturing(cls):
        return cls.capture is not None and cls.capture.capturing()

    @classmethod
    def refuse(cls, what):
        if cls.capturing():
            raise RuntimeError(f"the current stream is capturing, so D2H transfers are "
                               f"disallowed ({what})")

    @staticmethod
    def _has_mask(key):
        keys = key if isinstance(key, tuple) else (key,)
        return any(isinstance(k, np.ndarray) and k.dtype == np.bool_ for k in keys)

    def __getitem__(self, key):
        if self._has_mask(key):
            self.refuse("boolean-mask indexing")
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        if self._has_mask(key):
            self.refuse("boolean-mask assignment")
        super().__setitem__(key, value)

    def __bool__(self):
        self.refuse("bool")
        return super().__bool__()

    def __int__(self):
        self.refuse("int")
        return super().__int__()

    def __float__(self):
        self.refuse("float")
        return super().__float__()

    def __index__(self):
        self.refuse("index")
        return super().__index__()

    def item(self, *args):
        self.refuse("item")
        return super().item(*args)

    def tolist(self):
        self.refuse("tolist")
        return super().tolist()

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if ufunc is np.matmul and _Guarded.capturing() and not _Guarded.routed:
            raise NotImplementedError(
                "calling cuBLAS API during stream capture is currently unsupported")
        plain = [a.view(np.ndarray) if isinstance(a, _Guarded) else a for a in inputs]
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, _Guarded) else o
                                  for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _guard(result)

    def __array_function__(self, func, types, args, kwargs):
        if (func in (np.dot, np.vdot, np.inner, np.tensordot, np.einsum, np.matmul)
                and _Guarded.capturing() and not _Guarded.routed):
            raise NotImplementedError(
                "calling cuBLAS API during stream capture is currently unsupported")
        return super().__array_function__(func, types, args, kwargs)


def _guard(a):
    if isinstance(a, tuple):
        return tuple(_guard(b) for b in a)
    if isinstance(a, np.generic):
        a = np.asarray(a)
    return a.view(_Guarded) if isinstance(a, np.ndarray) else a


_CREATE = ("asarray", "empty", "zeros", "ones", "full", "arange", "eye", "linspace",
           "empty_like", "zeros_like", "ones_like", "full_like")


def _fake_cupy_namespace(monkeypatch, xp):
    """array-api-compat's NumPy namespace turned into what its CuPy namespace is where it
    matters here: the generic implementations of ``array_api_compat.common._aliases``
    where CuPy's module takes them (``clip``, whose boolean-mask assignment reads the
    mask on the host), and arrays that refuse host reads and bare products during a
    capture (``_Guarded``, from every creation function)."""
    from array_api_compat._internal import get_xp
    from array_api_compat.common import _aliases

    monkeypatch.setattr(xp, "clip", get_xp(np)(_aliases.clip))
    for name in _CREATE:
        fn = getattr(xp, name)
        monkeypatch.setattr(xp, name, lambda *a, _fn=fn, **k: _guard(_fn(*a, **k)))


def _routed_matmul_class(monkeypatch, capture):
    """tests/test_compile.py's ``FakeMatmul`` (its log and capture reset), executing with
    the guard's permission: the route's products."""
    from test_compile import FakeMatmul

    monkeypatch.setattr(FakeMatmul, "log", [])
    monkeypatch.setattr(FakeMatmul, "capture", capture)

    class RoutedMatmul(FakeMatmul):
        def execute(self, *, stream=None):
            _Guarded.routed = True
            try:
                return super().execute(stream=stream)
            finally:
                _Guarded.routed = False

    return RoutedMatmul


@pytest.mark.parametrize("sizes", [[6, 5, 3], [6, 5, 4, 3]])
def test_numerical_step_captures_on_the_cupy_route(monkeypatch, sizes):
    """``Step(compile=True, gradient=numerical)`` as CuPy compiles it (a CUDA graph, the
    products of the layers and of the loss through planned ``Matmul`` objects), on a
    fake capture whose arrays refuse host reads and products off the route while it
    captures: the capture is made (no fallback), and three steps equal the eager
    numerical steps to 1e-12 in float64. Before the fix the capture failed at
    ``xp.clip``'s boolean mask (CuPy: "D2H transfers are disallowed") and at the
    loss's bare ``@`` (CuPy: no cuBLAS inside a capture)."""
    import warnings

    from helpers import FakeCapture

    from xpnn.compile import CompileFallbackWarning, cupy_graph_step
    from xpnn.training.step import Step, numerical_gradient_fn

    net = xpnn.MLP(sizes, activation="tanh", weight_init=0.7, backend="numpy",
                   dtype="float64", seed=0)
    _fake_cupy_namespace(monkeypatch, net.xp)
    capture = FakeCapture("numpy")
    monkeypatch.setattr(_Guarded, "capture", capture)
    matmul = _routed_matmul_class(monkeypatch, capture)
    made = []

    def compile_step(fn, xp, device=None, mode=None, matmul_hooks=()):
        made.append(cupy_graph_step(fn, matmul_hooks, capture=capture, matmul_class=matmul,
                                    stream=lambda: "capture-stream")[0])
        capture.replay_hooks = made[-1].hooks  # the "graph" replays the routed products
        return made[-1], True

    monkeypatch.setattr(step_module, "compile_step", compile_step)
    monkeypatch.setattr(N, "in_host_memory", lambda xp, device: False)  # the device plan
    rng = np.random.default_rng(0)
    batches = [(_guard(rng.standard_normal((8, sizes[0]))),
                net.prepare_targets(_guard(rng.integers(0, sizes[-1], 8))))
               for _ in range(3)]
    h = 1e-4
    eager = Step(net, xpnn.Momentum(lr=0.1), gradient=numerical_gradient_fn(net, h))
    compiled = Step(net, xpnn.Momentum(lr=0.1), compile=True,
                    gradient=numerical_gradient_fn(net, h, compile=True))
    s_eager = eager.init()
    s_comp = compiled.init({k: _guard(v.copy()) for k, v in net.params.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        for xb, Tb in batches:
            s_eager, s_comp = eager(s_eager, xb, Tb), compiled(s_comp, xb, Tb)
            for k in net.params:
                a, b = s_comp["params"][k], s_eager["params"][k]
                assert np.max(np.abs(np.asarray(a) - np.asarray(b))) <= 1e-12, k
    assert capture.events == ["begin", "end"] and capture.replays == 3
    captured = [e for e, _, c in matmul.log if e == "execute" and c]
    assert captured and not [e for e, _, c in matmul.log if e == "plan" and c]
    assert made[0].hooks[0] == (net.arch.affine, net.loss_fn)
