"""Careless and hostile inputs to the public API: every call either works (and then
gives finite results) or raises one of the documented errors with a message. Never a
NaN passed on, another exception class, a hang or a runaway allocation.

Each attempt is tallied by category; with ``XPNN_RELIABILITY_REPORT=path`` the tally
is written there as JSON (the README's reliability table comes from it).
"""

from __future__ import annotations

import json
import math
import os
import time
import tracemalloc
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xpnn

#: the errors the API documents for bad input
DOCUMENTED = (TypeError, ValueError, MemoryError, ImportError)
TIME_LIMIT_S = 20.0  # generous: a shared 2-core machine; a hang or a huge loop exceeds it
MEMORY_LIMIT = 64 * 2**20  # bytes traced by tracemalloc for one small call

TALLY: Counter = Counter()
FAILURES: list = []


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("XPNN_RELIABILITY_REPORT")
    if path:
        tried = {k[0]: 0 for k in TALLY}
        for (cat, _), n in TALLY.items():
            tried[cat] += n
        data = {"tried": tried, "failures": len(FAILURES), "failed": FAILURES[:50]}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (float, int)):
        return math.isfinite(value)
    if hasattr(value, "shape"):
        return bool(np.all(np.isfinite(xpnn.to_numpy(value))))
    return True


def attempt(category: str, fn, *args, finite=True, **kwargs):
    """Call fn; it must return finite results (unless ``finite`` is false) or raise a
    documented error with a message, within the time and memory limits. Returns the
    result or None."""
    tracemalloc.start()
    start = time.perf_counter()
    outcome, result = "ok", None
    try:
        result = fn(*args, **kwargs)
        if finite and not _finite(result):
            outcome = f"returned non-finite {result!r}"[:200]
    except DOCUMENTED as exc:
        outcome = "refused" if str(exc).strip() else f"{type(exc).__name__} without a message"
    except Exception as exc:  # noqa: BLE001 - anything else is a failure to report
        outcome = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    if outcome in ("ok", "refused"):
        if elapsed > TIME_LIMIT_S:
            outcome = f"took {elapsed:.1f} s"
        elif peak > MEMORY_LIMIT:
            outcome = f"allocated {peak / 2**20:.0f} MiB"
    TALLY[(category, outcome in ("ok", "refused"))] += 1
    if outcome not in ("ok", "refused"):
        FAILURES.append(f"{category}: {fn.__name__}{args!r:.120}{kwargs!r:.120} -> {outcome}")
        pytest.fail(FAILURES[-1])
    return result


# -- values a careless user passes ---------------------------------------------------------

WEIRD = [None, True, 0, -1, 1.5, float("nan"), float("inf"), -float("inf"), "", "abc", "1",
         b"x", [], [1], (2,), {}, {"a": 1}, object(), 10**30, -(10**30), 1e-300, 3 + 1j,
         np.float64(2.0), np.int64(3), np.array([2, 3]), np.bool_(True)]


def _small_net_case(n=4):
    """A small float64 net and host data; tiny steps only warn (the warning is the point
    of another test)."""
    warnings.simplefilter("ignore", xpnn.nn.numerical.StepTooSmallWarning)
    return xpnn.MLP([3, 4, 3], dtype="float64", seed=0), *_host_case(n, 3)


def _host_case(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 3, n)


@pytest.mark.parametrize("arg", ["sizes", "activation", "loss", "weight_init", "weight_decay",
                                 "backend", "device", "dtype", "seed"])
@pytest.mark.parametrize("value", WEIRD, ids=[repr(v)[:20] for v in WEIRD])
def test_mlp_constructor_arguments(arg, value):
    kwargs = {"sizes": [3, 4, 3]}
    kwargs[arg] = value
    net = attempt("MLP(...) arguments", xpnn.MLP, **kwargs)
    if net is not None:
        x, t = _host_case(5, net.sizes[0])
        if net.sizes[-1] == 3 and net.loss_name == "softmax_cross_entropy":
            xb = xpnn.asarray(x, backend=net.xp, device=net.device, dtype=net.dtype_name)
            attempt("MLP(...) arguments", net.loss, xb, xpnn.asarray(t, backend=net.xp))


@st.composite
def arrays_of_any_shape(draw):
    shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=3))
    kind = draw(st.sampled_from(["float64", "float32", "int64", "bool", "float16"]))
    special = draw(st.sampled_from([None, np.nan, np.inf, -np.inf, 1e39, -1e300]))
    a = np.asarray(np.random.default_rng(len(shape)).standard_normal(shape) * 3)
    if special is not None and a.size:
        a.flat[0] = special
    with np.errstate(all="ignore"):
        return a.astype(kind)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=arrays_of_any_shape(), t=arrays_of_any_shape(),
       method=st.sampled_from(["predict", "loss", "accuracy", "gradient", "numerical_gradient"]))
def test_network_methods_with_any_arrays(x, t, method):
    net = xpnn.MLP([3, 4, 3], dtype="float32", seed=0)
    fn = getattr(net, method)
    with np.errstate(all="ignore"):
        if method == "predict":
            attempt("network methods, any arrays", fn, x)
        else:
            attempt("network methods, any arrays", fn, x, t)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy", "mse"])
@settings(max_examples=40, deadline=None)
@given(z=arrays_of_any_shape(), t=arrays_of_any_shape())
def test_plain_loss_functions_with_any_arrays(loss, z, t):
    fn = getattr(xpnn, loss)
    with np.errstate(all="ignore"):
        attempt("plain loss functions", fn, z, t)


@pytest.mark.parametrize("arg", ["h", "method", "memory_budget"])
@pytest.mark.parametrize("value", WEIRD, ids=[repr(v)[:20] for v in WEIRD])
def test_numerical_gradient_arguments(arg, value):
    with warnings.catch_warnings():
        net, x, t = _small_net_case()
        attempt("numerical_gradient arguments", net.numerical_gradient, x, t, **{arg: value})


@pytest.mark.parametrize("arg", ["threshold", "h", "method", "atol"])
@pytest.mark.parametrize("value", WEIRD, ids=[repr(v)[:20] for v in WEIRD])
def test_gradient_check_arguments(arg, value):
    with warnings.catch_warnings():
        net, x, t = _small_net_case()
        result = attempt("gradient_check arguments", xpnn.gradient_check, net, x, t,
                         **{arg: value})
    if result is not None and arg in ("h", "method"):
        assert result.passed  # a right gradient passes at any accepted step or method


@pytest.mark.parametrize("arg", ["optimizer", "batch_size", "iters", "epochs", "gradient",
                                 "eval_every", "seed", "callbacks", "lr_schedule",
                                 "early_stopping", "h", "eval_batch_size"])
@pytest.mark.parametrize("value", WEIRD, ids=[repr(v)[:20] for v in WEIRD])
def test_train_arguments(arg, value):
    net = xpnn.MLP([3, 4, 3], dtype="float64", seed=0)
    x, t = _host_case(20, 3)
    kwargs = {"iters": 3, "batch_size": 5, "progress": False, arg: value}
    if arg == "epochs":
        kwargs.pop("iters")
    if arg == "early_stopping":
        kwargs["test"] = (x, t)
    attempt("train arguments", xpnn.train, net, (x, t), **kwargs)
    assert all(_finite(v) for v in net.params.values())  # never left with NaN weights


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
@pytest.mark.parametrize("lr", [-0.1, 0.0, float("nan"), float("inf"), "0.1", None, 1e300])
def test_optimizer_learning_rates(name, lr):
    opt = attempt("optimizer learning rates", xpnn.make_optimizer, name, lr=lr)
    if opt is not None:  # a huge lr is legal; training must then stop cleanly
        net = xpnn.MLP([3, 4, 3], dtype="float64", seed=0)
        x, t = _host_case(20, 3)
        try:
            xpnn.train(net, (x, t), optimizer=opt, iters=5, batch_size=5, progress=False)
        except xpnn.TrainingDivergedError:
            pass
        assert all(_finite(v) for v in net.params.values())


@pytest.mark.parametrize("value", WEIRD, ids=[repr(v)[:20] for v in WEIRD])
def test_asarray_and_get_namespace(value):
    attempt("backend helpers", xpnn.asarray, value, finite=False)  # it moves data, NaN too
    attempt("backend helpers", xpnn.get_namespace, value)


# -- issue 16: generators per class ---------------------------------------------------------
# Not the exact inputs: each class draws its own cases (backend, dtype, shape,
# magnitude, step, callable kind) and checks an oracle, not just "no crash".

from conftest import _PARAMS  # noqa: E402  (the backends this run covers)

from xpnn.nn import layers as _layers  # noqa: E402
from xpnn.nn.finite import NonFiniteError  # noqa: E402

BACKENDS = [(name, device) for name, device, _ in _PARAMS]
PUBLIC = ["predict", "loss", "accuracy", "gradient", "numerical_gradient", "train"]


def _call(net, method, x, t):
    if method == "predict":
        return net.predict(x)
    if method == "train":
        xpnn.train(net, (x, t), iters=2, batch_size=x.shape[0], progress=False)
        return dict(net.params)
    return getattr(net, method)(x, t)


_WARM: set = set()


def _warm(backend, dtype, method, activation="tanh"):
    """Run ``method`` once on a healthy net outside attempt()'s time limit: JAX compiles
    each new operation on its first call (tens of seconds on a busy machine)."""
    key = (backend, dtype, method, activation)
    if key not in _WARM:
        _WARM.add(key)
        _call(*_net_on(backend, dtype, activation=activation)[:1], method,
              *_net_on(backend, dtype, activation=activation)[1:])


def _net_on(backend, dtype, sizes=(3, 4, 3), activation="tanh", seed=0):
    name, device = backend
    net = xpnn.MLP(list(sizes), activation=activation, backend=name, device=device,
                   dtype=dtype, seed=seed)
    x, t = _host_case(5, sizes[0], seed)
    return (net, xpnn.asarray(x, backend=name, device=device, dtype=dtype),
            xpnn.asarray(t, backend=name, device=device))


def _dtypes(backend):
    return ["float32", "float64"]  # conftest switches JAX's 64-bit mode on


MIXES = ["numpy", "other_dtype", "int", "transposed", "flat", "extra_dim", "list", "scalar",
         "other_device", "requires_grad", "nan", "missing", "extra_key"]


def _mix(net, key, kind):
    """net.params with params[key] replaced by a wrong (or, for requires_grad, merely
    unusual) value; None when this backend has no such value."""
    xp, p = net.xp, net.params[key]
    host = xpnn.to_numpy(p)
    params = dict(net.params)
    if kind == "numpy":
        if net.backend == "numpy":
            return None
        params[key] = host
    elif kind == "other_dtype":
        params[key] = xp.astype(p, xp.float32 if net.dtype_name == "float64" else xp.float64)
    elif kind == "int":
        params[key] = xp.astype(p, xp.int64)
    elif kind == "transposed":
        if p.ndim < 2 or p.shape[0] == p.shape[1]:
            return None
        params[key] = p.T
    elif kind == "flat":
        params[key] = xp.reshape(p, (-1,)) if p.ndim == 2 else xp.reshape(p, (1, -1))
    elif kind == "extra_dim":
        params[key] = p[None, ...]
    elif kind == "list":
        params[key] = host.tolist()
    elif kind == "scalar":
        params[key] = 0.5
    elif kind == "other_device":
        if net.backend == "array_api_strict":
            other = "device1" if "device1" not in str(net.device) else "CPU_DEVICE"
            params[key] = xp.asarray(host, device=xp.Device(other))
        elif net.backend == "torch":
            import torch

            params[key] = torch.empty(tuple(p.shape), dtype=p.dtype, device="meta")
        else:
            return None
    elif kind == "requires_grad":
        if net.backend != "torch":
            return None
        import torch

        params[key] = torch.nn.Parameter(p.clone())
    elif kind == "nan":
        params[key] = p * float("nan")
    elif kind == "missing":
        del params[key]
    elif kind == "extra_key":
        params["W0"] = p
    return params


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(backend=st.sampled_from(BACKENDS), dtype=st.sampled_from(["float32", "float64"]),
       key=st.sampled_from(["W1", "b1", "W2", "b2"]), kind=st.sampled_from(MIXES),
       method=st.sampled_from(PUBLIC))
def test_parameter_mixes(backend, dtype, key, kind, method):
    """A wrong parameter is refused by name; a torch Parameter is used, detached."""
    _warm(backend, dtype, method)
    net, x, t = _net_on(backend, dtype)
    params = _mix(net, key, kind)
    if params is None:
        return
    net.params = params
    with np.errstate(all="ignore"):
        result = attempt("parameter mixes", _call, net, method, x, t)
    if kind == "requires_grad":
        assert result is not None  # accepted
        values = result.values() if isinstance(result, dict) else [result]
        assert all(getattr(v, "grad_fn", None) is None for v in values)
        assert all(not getattr(v, "requires_grad", False) for v in net.params.values())
    else:
        assert result is None  # refused


def _probe(fn, seen: list):
    """fn, recording in ``seen`` the documented error it raises (attempt() tallies it)."""
    def probe(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DOCUMENTED as exc:
            seen.append(exc)
            raise

    probe.__name__ = getattr(fn, "__name__", "probe")
    return probe


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(backend=st.sampled_from(BACKENDS), dtype=st.sampled_from(["float32", "float64"]),
       layer=st.integers(1, 2), exponent=st.integers(0, 308),
       sign=st.sampled_from(["+", "-", "alternating"]),
       activation=st.sampled_from(["sigmoid", "tanh", "relu", "identity", "elu"]),
       method=st.sampled_from(PUBLIC[:5]))
def test_huge_finite_parameters(backend, dtype, layer, exponent, sign, activation, method):
    """Finite parameters of any magnitude (up to the dtype's range): a finite result,
    or a NonFiniteError naming where the NaN/inf appeared; never a NaN passed on."""
    _warm(backend, dtype, method, activation)
    net, x, t = _net_on(backend, dtype, activation=activation)
    big = float(np.finfo(dtype).max)
    value = min(10.0 ** exponent, big)
    W = xpnn.to_numpy(net.params[f"W{layer}"])
    pattern = {"+": np.ones(W.shape), "-": -np.ones(W.shape),
               "alternating": np.where(np.indices(W.shape).sum(0) % 2, 1.0, -1.0)}[sign]
    net.params[f"W{layer}"] = xpnn.asarray(pattern * value, backend=net.xp,
                                           device=net.device, dtype=dtype)
    seen = []
    with np.errstate(all="ignore"):
        attempt("huge finite parameters", _probe(_call, seen), net, method, x, t)
    exc = seen[0] if seen else None
    if isinstance(exc, NonFiniteError):
        assert exc.where and ("layer" in exc.where or "loss" in exc.where
                              or "output" in exc.where or "parameter" in exc.where), str(exc)


def _scaled(base, factor):
    class Scaled(base):
        def backward(self, cache, dout):
            return base.backward(self, cache, dout) * factor

    return Scaled


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(backend=st.sampled_from(BACKENDS), dtype=st.sampled_from(["float32", "float64"]),
       base=st.sampled_from(["sigmoid", "tanh"]),  # smooth: no kink within h of a point
       error=st.sampled_from([0.0, 0.0, 0.01, -0.01, 0.03, 0.1, -0.1, 0.5]),
       hidden=st.integers(2, 6), n=st.integers(2, 8), seed=st.integers(0, 50))
def test_wrong_derivatives(backend, dtype, base, error, hidden, n, seed):
    """An activation whose backward is off by a factor (1 + error) fails the gradient
    check, in float32 (compared in float64) and float64; the right one passes."""
    bname, device = backend
    if bname == "jax":  # JAX compiles every op again for each new shape (~30 s here)
        hidden, n = 4, 6
        if ("gradcheck", dtype) not in _WARM:
            _WARM.add(("gradcheck", dtype))
            xpnn.gradient_check(*_net_on(backend, dtype, (3, 4, 3))[:1],
                                *[xpnn.asarray(a, backend=bname) for a in _host_case(6, 3)])
    name = f"fuzz_{base}_{error}"
    _layers.ACTIVATIONS[name] = _scaled(_layers.ACTIVATIONS[base], 1.0 + error)
    try:
        net = xpnn.MLP([3, hidden, 3], activation=name, backend=bname, device=device,
                       dtype=dtype, seed=seed, weight_init=1.0)
        x, t = _host_case(n, 3, seed)
        x = xpnn.asarray(x, backend=bname, device=device, dtype=dtype)
        t = xpnn.asarray(t, backend=bname, device=device)
        report = attempt("wrong derivatives", xpnn.gradient_check, net, x, t)
    finally:
        del _layers.ACTIVATIONS[name]
    assert report.dtype == "float64"
    assert report.passed is (error == 0.0), report.table()


def _h_oracle(h, eps: float) -> str:
    """'ok', 'type' or 'value': what a step h must give for a dtype of machine eps."""
    if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)):
        return "type"
    if not (math.sqrt(eps) <= float(h) <= 1):
        return "value"
    return "ok"


STEPS = st.one_of(
    st.floats(min_value=-10, max_value=10),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e-300, 5e-324, 1.5e-8, 3.5e-4]),
    st.floats(min_value=1e-320, max_value=1e-2).map(float),
    st.sampled_from([0, 1, -1, 2, True, None, "1e-4", 1 + 1j, [1e-4], np.float32(1e-3),
                     np.float64(1e-9), np.float32(1e-30), np.int64(1)]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=STEPS, dtype=st.sampled_from(["float32", "float64"]),
       where=st.sampled_from(["net", "train", "generic", "gradient_check"]))
def test_step_sizes(h, dtype, where):
    """Every entry point takes exactly the steps with sqrt(eps) <= h <= 1 (None: the
    default) and refuses the others with TypeError/ValueError."""
    net, x, t = _net_on(("numpy", None), dtype)
    eps = float(np.finfo("float64" if where == "gradient_check" else dtype).eps)
    want = "ok" if h is None else _h_oracle(h, eps)
    if where == "net":
        fn, args = net.numerical_gradient, (x, t)
    elif where == "train":
        def fn(x, t, h):
            xpnn.train(net, (x, t), gradient="numerical", h=h, iters=1, batch_size=5,
                       progress=False)
            return dict(net.params)
        args = (x, t)
    elif where == "generic":
        def fn(a, h):
            return xpnn.numerical_gradient(lambda v: np.sum(v * v), a, h=h)
        args = (x[0],)
    else:
        def fn(x, t, h):
            return xpnn.gradient_check(net, x, t, h=h).passed
        args = (x, t)
    seen = []
    with np.errstate(all="ignore"):
        attempt("step sizes", _probe(fn, seen), *args, h=h)
    got = "ok" if not seen else ("type" if isinstance(seen[0], TypeError) else "value")
    assert got == want, f"h={h!r} ({where}, {dtype}): {got}, expected {want}: {seen}"


def _returns(kind):
    return {
        "float": lambda a: float(np.sum(a * a)),
        "numpy_scalar": lambda a: np.sum(a * a),
        "0d_array": lambda a: np.asarray(np.sum(a * a)),
        "int": lambda a: 3,
        "1_element": lambda a: np.sum(a * a).reshape(1),
        "vector": lambda a: a * a,
        "str": lambda a: "loss",
        "none": lambda a: None,
        "complex": lambda a: complex(np.sum(a), 1.0),
        "bool": lambda a: True,
        "list": lambda a: [float(np.sum(a))],
        "nan": lambda a: float("nan"),
        "inf": lambda a: float("inf"),
    }[kind]


F_KINDS = ["float", "numpy_scalar", "0d_array", "int", "1_element", "vector", "str", "none",
           "complex", "bool", "list", "nan", "inf"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(F_KINDS),
       shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
       dtype=st.sampled_from(["float64", "float32", "int64", "bool"]))
def test_numerical_gradient_callable_kinds(kind, shape, dtype):
    """xpnn.numerical_gradient(f, x) works exactly for a real-scalar f on a non-empty
    floating x (giving x's shape), and refuses everything else by name."""
    x = np.asarray(np.ones(shape, dtype=dtype) * (0.5 if dtype.startswith("float") else 1))
    scalar = kind in ("float", "numpy_scalar", "0d_array", "int") or (
        kind == "vector" and x.ndim == 0)  # a * a of a 0-d array is a 0-d array
    ok = scalar and x.size > 0 and dtype.startswith("float")
    g = attempt("numerical_gradient callables", xpnn.numerical_gradient, _returns(kind), x)
    if ok:
        assert g is not None and tuple(g.shape) == tuple(shape) and g.dtype == x.dtype
    else:
        assert g is None
