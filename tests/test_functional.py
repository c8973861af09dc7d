"""The functional core: pure forward/backward, stateless blocks and losses, the
numerical-gradient chunk API, configs, and the input checks around them."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import host, problem

import xpnn
from xpnn.nn import functional as F
from xpnn.nn import numerical as N
from xpnn.nn.layers import ACTIVATIONS

SIZES = [4, 6, 5, 3]


def _snapshot(obj):
    return {k: v for k, v in vars(obj).items()}


def test_forward_backward_are_pure(backend):
    net, x, t = problem(backend, SIZES, activation=["relu", "elu"], weight_decay=0.1)
    T = net.prepare_targets(t)
    params = dict(net.params)
    blocks = [net.arch.affine, *net.arch.activations, net.loss_fn]
    before = [_snapshot(b) for b in blocks]
    logits, cache = F.forward(net.arch, params, x)
    grads = F.backward(net.arch, params, cache, net.loss_fn.gradient(logits, T))
    assert [_snapshot(b) for b in blocks] == before  # nothing written to the blocks
    assert all(params[k] is net.params[k] for k in params)  # the dict is untouched
    assert list(grads) == list(params)
    ref = host(net.gradient(x, t))
    for k, g in host(grads).items():
        np.testing.assert_allclose(g, ref[k], rtol=1e-13, atol=1e-15)


def test_interleaved_passes_do_not_share_state(backend, to_backend):
    """Two forwards before two backwards: with caches kept on the layer objects (the
    old design) the first backward would use the second batch's activations."""
    net, x1, t1 = problem(backend, SIZES, activation="sigmoid", seed=1)
    _, x2, t2 = problem(backend, SIZES, activation="sigmoid", seed=2)
    T1, T2 = net.prepare_targets(t1), net.prepare_targets(t2)
    z1, c1 = F.forward(net.arch, net.params, x1)
    z2, c2 = F.forward(net.arch, net.params, x2)
    g1 = host(F.backward(net.arch, net.params, c1, net.loss_fn.gradient(z1, T1)))
    F.backward(net.arch, net.params, c2, net.loss_fn.gradient(z2, T2))
    ref = host(net.gradient(x1, t1))
    for k in ref:
        np.testing.assert_allclose(g1[k], ref[k], rtol=1e-13, atol=1e-15)


def test_value_and_gradient_matches_loss_and_gradient(backend):
    net, x, t = problem(backend, SIZES, weight_decay=0.05)
    T = net.prepare_targets(t)
    value, grads = F.value_and_gradient(net.arch, net.params, x, T)
    assert float(value) == pytest.approx(float(net.loss(x, t)), rel=1e-14)
    ref = host(net.gradient(x, t))
    for k, g in host(grads).items():
        np.testing.assert_allclose(g, ref[k], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("loss,sizes", [("softmax_cross_entropy", SIZES),
                                         ("binary_cross_entropy", [4, 6, 1]),
                                         ("mse", [4, 6, 2])])
def test_loss_and_accuracy_is_loss_and_accuracy_from_one_pass(backend, loss, sizes):
    net, x, t = problem(backend, sizes, loss=loss, weight_decay=0.05, dtype="float32")
    T = net.prepare_targets(t)
    value, acc = F.loss_and_accuracy(net.arch, net.params, x, T)
    assert float(value) == float(F.loss(net.arch, net.params, x, T))  # exactly
    if loss == "mse":
        assert acc is None
    else:
        assert float(acc) == float(F.accuracy(net.arch, net.params, x, T))
    other = {k: v * 0.5 for k, v in net.params.items()}
    value, _ = net.loss_and_accuracy_prepared(x, T, params=other)
    assert float(value) == float(net.loss_prepared(x, T, params=other))


def test_params_argument_is_used_not_net_params(backend):
    net, x, t = problem(backend, SIZES)
    T = net.prepare_targets(t)
    other = {k: v * 0.5 for k, v in net.params.items()}
    g_other = host(net.gradient_prepared(x, T, params=other))
    g_own = host(net.gradient_prepared(x, T))
    assert not np.allclose(g_other["W1"], g_own["W1"])
    assert float(net.loss_prepared(x, T, params=other)) != float(net.loss_prepared(x, T))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_matches_the_textbook_formula_without_overflow(backend, xp, to_backend, dtype):
    """The tanh form agrees with 1 / (1 + exp(-x)) to 2 ulp of 1 everywhere, is exactly
    0 and 1 far out, never warns, and keeps sigma' = y (1 - y) >= 0."""
    x = np.concatenate([np.linspace(-60.0, 60.0, 2001), [-1e30, -1e4, 1e4, 1e30]])
    x = x.astype(dtype)
    with np.errstate(over="ignore"):
        want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = xpnn.to_numpy(ACTIVATIONS["sigmoid"](xp).function(to_backend(x)))
    eps = np.finfo(dtype).eps
    assert y.dtype == np.dtype(dtype)
    assert np.max(np.abs(y - want)) <= 2 * eps
    assert np.all((y >= 0.0) & (y <= 1.0))
    # monotone, to within 1 ulp of 1 (XLA's float32 tanh itself steps back by half an
    # ulp near saturation)
    assert np.all(np.diff(y[:2001]) >= -eps)
    assert y[-4] == 0.0 and y[-1] == 1.0
    assert abs(y[1000] - 0.5) == 0.0  # sigmoid(0) is exactly 1/2

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_activation_constants_are_arrays_that_change_nothing(backend, xp, to_backend, name,
                                                             dtype):
    """The network's sigmoid/tanh keep their constants as 0-d arrays of its dtype on its
    device (PyTorch wraps a Python scalar operand in a new tensor on every operation:
    host time per step, issue 15), and compute exactly what Python constants give."""
    net = xpnn.MLP([3, 4, 2], activation=name, backend=backend[0], device=backend[1],
                   dtype=dtype, seed=0)
    act = net.arch.activations[0]
    constants = [act.one] + ([act.half] if name == "sigmoid" else [])
    for c in constants:
        assert type(c) is not float and c.shape == () and c.dtype == net.params["W1"].dtype
    plain = ACTIVATIONS[name](xp)  # zero=0.0: Python float constants
    assert type(plain.one) is float
    rng = np.random.default_rng(0)
    x, dout = to_backend(rng.normal(size=(5, 4)), dtype), to_backend(rng.normal(size=(5, 4)),
                                                                     dtype)
    y, cache = act.forward(x)
    y0, cache0 = plain.forward(x)
    assert np.array_equal(xpnn.to_numpy(y), xpnn.to_numpy(y0))
    assert np.array_equal(xpnn.to_numpy(act.backward(cache, dout)),
                          xpnn.to_numpy(plain.backward(cache0, dout)))


def test_a_new_activation_is_one_class_and_one_registry_line(backend, monkeypatch):
    class Softplus:
        """y = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|)."""

        name = "softplus"

        def __init__(self, xp, zero=0.0):
            self.xp, self.zero = xp, zero

        def function(self, x):
            xp = self.xp
            return xp.maximum(x, self.zero) + xp.log1p(xp.exp(-xp.abs(x)))

        def forward(self, x):
            return self.function(x), x

        def backward(self, cache, dout):
            xp = self.xp
            e = xp.exp(-xp.abs(cache))
            sig = xp.where(cache >= self.zero, 1.0 / (1.0 + e), e / (1.0 + e))
            return dout * sig

    monkeypatch.setitem(ACTIVATIONS, "softplus", Softplus)
    net, x, t = problem(backend, [3, 5, 2], activation="softplus")
    assert xpnn.gradient_check(net, x, t).passed


# -- numerical gradient chunks -----------------------------------------------------------


@pytest.mark.parametrize("budget", [None, 3000, 10**9])
def test_plan_covers_every_element_once(backend, budget):
    net, x, _ = problem(backend, SIZES)
    chunks = N.plan(net, x.shape[0], budget)
    assert chunks == N.plan(net, x.shape[0], budget)  # deterministic
    for key, value in net.params.items():
        spans = [(c.start, c.stop) for c in chunks if c.key == key]
        assert spans[0][0] == 0 and spans[-1][1] == math.prod(value.shape)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_chunks_assemble_to_the_numerical_gradient(backend):
    net, x, t = problem(backend, SIZES, weight_decay=0.02)
    T = net.prepare_targets(t)
    cache = N.forward_cache(net, x)
    parts = {k: [] for k in net.params}
    for chunk in reversed(N.plan(net, x.shape[0], 2000)):  # any order of evaluation
        parts[chunk.key].insert(0, N.chunk_gradient(net, x, T, chunk, 1e-5, cache))
    got = host(N.assemble(net, parts))
    ref = host(net.numerical_gradient(x, t, memory_budget=2000))
    for k in ref:  # the same chunks: the same floating-point operations
        np.testing.assert_array_equal(got[k], ref[k])


def test_memory_budget_must_be_a_number(backend):
    net, x, t = problem(backend, SIZES)
    with pytest.raises(TypeError, match="memory_budget"):
        net.numerical_gradient(x, t, memory_budget="abc")
    with pytest.raises(ValueError, match="memory_budget"):
        net.numerical_gradient(x, t, memory_budget=float("nan"))


def test_tiny_h_is_refused_in_numerical_gradient(backend):
    """Issue 16 item 13: a step below sqrt(eps) is an error everywhere (it warned here,
    and h=1e-300 returned zeros)."""
    net, x, t = problem(backend, [3, 2])
    with pytest.raises(ValueError, match="sqrt"):
        net.numerical_gradient(x, t, h=1e-12)


# -- gradient check cannot be fooled by h ----------------------------------------------


def _wrong_gradient(net, factor=1.01):
    """Make the backprop gradient (gradient_prepared, which net.gradient and
    gradient_check call) off by ``factor``."""
    right = net.gradient_prepared
    net.gradient_prepared = lambda x, T, params=None: {
        k: v * factor for k, v in right(x, T, params).items()}


@pytest.mark.parametrize("h", [1e-300, 1e-20, 1e-9])
def test_gradcheck_refuses_h_below_sqrt_eps(backend, h):
    net, x, t = problem(backend, SIZES)
    with pytest.raises(ValueError, match="sqrt"):
        xpnn.gradient_check(net, x, t, h=h)


@pytest.mark.parametrize("h", [np.float32(1e-12), np.float32(1e-9), np.float64(1e-12)])
def test_gradcheck_refuses_numpy_scalar_h_below_sqrt_eps(h):
    """A NumPy scalar that is not a Python float (np.float32) is refused too, not just
    warned about."""
    net, x, t = problem(("numpy", None), SIZES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="sqrt"):
            xpnn.gradient_check(net, x, t, h=h)


def test_gradcheck_validates_x_and_t_once(monkeypatch):
    net, x, t = problem(("numpy", None), SIZES)
    calls = []
    for name in ("check_x", "prepare_targets"):
        real = getattr(net, name)
        monkeypatch.setattr(net, name, lambda *a, real=real, name=name: (
            calls.append(name), real(*a))[1])
    assert xpnn.gradient_check(net, x, t).passed
    assert calls == ["check_x", "prepare_targets"]


@pytest.mark.parametrize("h", [2e-8, 1e-7, 1e-5])
def test_gradcheck_fails_a_wrong_gradient_at_any_accepted_h(backend, h):
    net, x, t = problem(backend, SIZES)
    assert xpnn.gradient_check(net, x, t, h=h).passed or h < 1e-7  # right gradient passes
    _wrong_gradient(net)
    check = xpnn.gradient_check(net, x, t, h=h)
    assert not check.passed
    scale = max(float(np.max(np.abs(g))) for g in host(net.gradient(x, t)).values())
    assert check.atol <= check.threshold * scale


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf"), "x"])
def test_gradcheck_validates_atol_and_threshold(backend, bad):
    net, x, t = problem(backend, [3, 2])
    with pytest.raises((TypeError, ValueError), match="atol"):
        xpnn.gradient_check(net, x, t, atol=bad)
    with pytest.raises((TypeError, ValueError), match="threshold"):
        xpnn.gradient_check(net, x, t, threshold=bad)


# -- targets and inputs ------------------------------------------------------------------


@pytest.mark.parametrize("rows", [[[5.0, -3.0]], [[0.0, 0.0]], [[0.7, 0.7]]],
                         ids=["negative", "all-zero", "sums-to-1.4"])
def test_two_d_targets_must_be_distributions(backend, to_backend, rows):
    net = xpnn.MLP([2, 2], backend=backend[0], device=backend[1], dtype="float64", seed=0)
    x = to_backend(np.ones((1, 2)), dtype="float64")
    with pytest.raises(ValueError, match="one-hot"):
        net.loss(x, to_backend(np.asarray(rows), dtype="float64"))


def test_soft_labels_are_accepted(backend, to_backend):
    net = xpnn.MLP([2, 3], backend=backend[0], device=backend[1], dtype="float64", seed=0)
    x = to_backend(np.ones((2, 2)), dtype="float64")
    t = to_backend(np.asarray([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]]), dtype="float64")
    assert math.isfinite(float(net.loss(x, t)))


def test_float64_data_beyond_float32_is_named(backend, to_backend):
    net = xpnn.MLP([2, 2], backend=backend[0], device=backend[1], seed=0)  # float32
    x = to_backend(np.asarray([[1e39, 0.0]]), dtype="float64")
    with pytest.raises(ValueError, match="range of the network's"):
        net.predict(x)


@pytest.mark.parametrize("fn", [xpnn.softmax_cross_entropy, xpnn.mse])
def test_plain_losses_refuse_nan_logits(backend, to_backend, fn):
    z = to_backend(np.asarray([[np.nan, 1.0], [0.0, 1.0]]), dtype="float64")
    t = to_backend(np.asarray([[0.0, 1.0], [1.0, 0.0]]), dtype="float64")
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(z, t)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"activation": None}, TypeError, "activation"),
        ({"activation": 3}, TypeError, "activation"),
        ({"seed": "abc"}, TypeError, "seed"),
        ({"seed": -1}, TypeError, "seed"),
        ({"weight_init": 1e300}, ValueError, "weight_init"),
    ],
)
def test_constructor_errors_name_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        xpnn.MLP([3, 4, 2], **kwargs)


def test_torch_data_that_requires_grad_is_detached():
    torch = pytest.importorskip("torch")
    net = xpnn.MLP([3, 4, 2], backend="torch", dtype="float64", seed=0)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 1, 0, 1])
    grads = net.gradient(x, t)
    assert not any(g.requires_grad for g in grads.values())
    assert net.loss(x, t).grad_fn is None


# -- configs ---------------------------------------------------------------------------------


def test_config_round_trip_keeps_architecture_and_given_params(backend):
    net, x, t = problem(backend, SIZES, activation=["tanh", "relu"], weight_decay=0.01)
    cfg = net.to_config()
    params = {k: xpnn.to_numpy(v) for k, v in net.params.items()}
    back = xpnn.MLP.from_config(cfg, params=params, backend=backend[0], device=backend[1])
    assert back.to_config() == cfg
    assert float(back.loss(x, t)) == float(net.loss(x, t))


@pytest.mark.parametrize("change, match", [
    (lambda p: p.update(W1=np.zeros((5, 6))), "W1 has shape"),
    (lambda p: p.pop("b2"), "missing parameters b2"),
    (lambda p: p.update(W9=np.zeros(1)), "unexpected entries W9"),
    (lambda p: p.update(b1=np.full(6, np.nan)), "NaN or inf"),
    (lambda p: p.update(b1=np.arange(6)), "not floating"),
])
def test_from_config_checks_params(change, match):
    net = xpnn.MLP(SIZES, seed=0)
    params = {k: xpnn.to_numpy(v) for k, v in net.params.items()}
    change(params)
    with pytest.raises(ValueError, match=match):
        xpnn.MLP.from_config(net.to_config(), params=params)


def test_from_config_with_params_draws_no_random_weights(monkeypatch):
    net = xpnn.MLP(SIZES, seed=0)
    params = {k: xpnn.to_numpy(v) for k, v in net.params.items()}

    def refuse(*args, **kwargs):
        raise AssertionError("random weights drawn")

    monkeypatch.setattr(xpnn.MLP, "_initial_params", refuse)
    xpnn.MLP.from_config(net.to_config(), params=params)
    with pytest.raises(AssertionError):
        xpnn.MLP.from_config(net.to_config())


def test_numerical_gradient_memory_budget_is_found_once(backend, monkeypatch):
    net, x, t = problem(backend, SIZES)
    net.numerical_gradient(x, t)
    assert net._numerical_budget is not None
    monkeypatch.setattr(N, "_device_budget", lambda net: pytest.fail("queried again"))
    monkeypatch.setattr(N, "in_host_memory", lambda xp, device: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.numerical_gradient(x, t)
