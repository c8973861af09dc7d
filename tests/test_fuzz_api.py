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
