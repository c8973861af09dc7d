"""Optimisers (the book's formulas, on every backend) and learning-rate schedules."""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest
from helpers import counting_update
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnn
from xpnn import optim
from xpnn.optim import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    CosineLR,
    Momentum,
    Nesterov,
    RMSprop,
    StepLR,
    make_optimizer,
)


def blobs(n=60, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((k, d))
    y = rng.integers(0, k, n)
    return centers[y] + rng.standard_normal((n, d)), y


def _net(backend, dtype="float64", **kw):
    name, device = backend
    return xpnn.MLP([4, 5, 3], activation="tanh", weight_init=0.5, backend=name,
                    device=device, dtype=dtype, seed=0, **kw)


def _host(d):
    return {k: xpnn.to_numpy(v).copy() for k, v in d.items()}


class Reference:
    """The book's common/optimizer.py, in NumPy, in place on host arrays."""

    def __init__(self, name, lr, **kw):
        self.name, self.lr, self.kw = name, lr, kw
        self.s1, self.s2, self.t = {}, {}, 0

    def update(self, p, g):
        kw, lr = self.kw, self.lr
        self.t += 1
        for k in p:
            s1 = self.s1.setdefault(k, np.zeros_like(p[k]))
            s2 = self.s2.setdefault(k, np.zeros_like(p[k]))
            if self.name == "sgd":
                p[k] -= lr * g[k]
            elif self.name == "momentum":
                s1[...] = kw["momentum"] * s1 - lr * g[k]
                p[k] += s1
            elif self.name == "nesterov":
                # Bengio et al. 2012 (arXiv 1212.0901, the paper the book cites), eq. 7:
                # v_t = mu v_{t-1} - lr g;  W_t = W_{t-1} - mu v_{t-1} + (1 + mu) v_t
                mu = kw["momentum"]
                v_old = s1.copy()
                s1[...] = mu * v_old - lr * g[k]
                p[k] += -mu * v_old + (1 + mu) * s1
            elif self.name == "adagrad":
                s1 += g[k] * g[k]
                p[k] -= lr * g[k] / (np.sqrt(s1) + 1e-7)
            elif self.name == "rmsprop":
                s1 *= kw["decay_rate"]
                s1 += (1 - kw["decay_rate"]) * g[k] * g[k]
                p[k] -= lr * g[k] / (np.sqrt(s1) + 1e-7)
            elif self.name == "adam":
                b1, b2 = kw["beta1"], kw["beta2"]
                lr_t = lr * np.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
                s1 += (1 - b1) * (g[k] - s1)
                s2 += (1 - b2) * (g[k] ** 2 - s2)
                p[k] -= lr_t * s1 / (np.sqrt(s2) + 1e-7)


CASES = {
    "sgd": {"lr": 0.3},
    "momentum": {"lr": 0.1, "momentum": 0.8},
    "nesterov": {"lr": 0.1, "momentum": 0.7},
    "adagrad": {"lr": 0.2},
    "rmsprop": {"lr": 0.02, "decay_rate": 0.9},
    "adam": {"lr": 0.01, "beta1": 0.8, "beta2": 0.99},
}


def _coefficients(kw):
    return {k: v for k, v in kw.items() if k != "lr"}


@pytest.mark.parametrize("api", ["object", "pure"])
@pytest.mark.parametrize("name", list(CASES))
def test_first_steps_match_the_books_formulas(backend, to_backend, name, api):
    """Three steps with changing gradients (the params move, so the gradients do): the
    state (velocity, averages, t) matters too. The pure pair gets lr as a 0-d array."""
    x, y = blobs()
    xb, tb = to_backend(x, "float64"), to_backend(y)
    net = _net(backend)
    kw = CASES[name]
    ref = Reference(name, kw["lr"], **_coefficients(kw))
    expected = _host(net.params)
    if api == "object":
        opt = make_optimizer(name, **kw)
    else:
        tx = getattr(optim, name)(**_coefficients(kw))
        state = tx.init(net.params)
        lr = to_backend(kw["lr"], "float64")
    for _ in range(3):
        grads = net.gradient(xb, tb)
        ref.update(expected, _host(grads))
        if api == "object":
            opt.update(net.params, grads)
        else:
            new_params, state = tx.update(grads, state, net.params, lr)
            net.params.update(new_params)
        got = _host(net.params)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(list(CASES)),
    shape=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple),
    lr=st.floats(1e-4, 1.0),
    coefficient=st.floats(0.0, 0.999),
    seed=st.integers(0, 2**32 - 1),
)
def test_pure_pairs_match_the_books_formulas(name, shape, lr, coefficient, seed):
    """Any shape, lr and coefficient in [0, 1) (beta2 = the coefficient, beta1 = 0.9),
    gradients drawn afresh each step, including exact zeros."""
    coefficients = {"momentum": {"momentum": coefficient},
                    "nesterov": {"momentum": coefficient},
                    "rmsprop": {"decay_rate": coefficient},
                    "adam": {"beta1": 0.9, "beta2": coefficient}}.get(name, {})
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal(shape)}
    tx = getattr(optim, name)(**coefficients)
    state = tx.init(params)
    ref = Reference(name, lr, **coefficients)
    expected = _host(params)
    for _ in range(3):
        g = rng.standard_normal(shape) * rng.integers(0, 2, shape)
        ref.update(expected, {"W": g})
        params, state = tx.update({"W": g}, state, params, lr)
        np.testing.assert_allclose(params["W"], expected["W"], rtol=1e-12, atol=1e-12)


def test_nesterov_first_steps_by_hand():
    """Issue 8: step 1 from v = 0 moves W by -(1 + mu) lr g = -0.019 (lr 0.01, mu 0.9, g 1),
    not -(1 + mu + mu^2) lr g = -0.0271; step 2 adds mu^2 v_1 - (1 + mu) lr g = -0.0271."""
    opt = Nesterov(lr=0.01, momentum=0.9)
    params, grads = {"W": np.zeros(1)}, {"W": np.ones(1)}
    opt.update(params, grads)
    np.testing.assert_allclose(params["W"], [-0.019], rtol=0, atol=1e-15)
    opt.update(params, grads)
    np.testing.assert_allclose(params["W"], [-0.019 - 0.0271], rtol=0, atol=1e-15)


LRS = {"sgd": 0.5, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.1, "rmsprop": 0.01,
       "adam": 0.01}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_reduces_the_loss(backend, to_backend, name):
    x, y = blobs()
    xb, tb = to_backend(x, "float32"), to_backend(y)
    net = _net(backend, dtype="float32")
    opt = OPTIMIZERS[name](lr=LRS[name])
    before = float(net.loss(xb, tb))
    for _ in range(50):
        opt.update(net.params, net.gradient(xb, tb))
    after = float(net.loss(xb, tb))
    assert after < 0.7 * before, (name, before, after)
    assert all(p.dtype == net.xp.float32 for p in net.params.values())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_updates_rebind_and_never_write(name):
    p = {"W": np.arange(6.0).reshape(2, 3), "b": np.ones(3)}
    g = {"W": np.full((2, 3), 0.5), "b": np.full(3, -0.25)}
    for a in (*p.values(), *g.values()):
        a.flags.writeable = False
    originals = dict(p)
    copies = {k: v.copy() for k, v in p.items()}
    opt = make_optimizer(name, lr=0.1)
    opt.update(p, g)
    opt.update(p, g)
    for k in p:
        assert p[k] is not originals[k]
        np.testing.assert_array_equal(originals[k], copies[k])
        assert not np.array_equal(p[k], copies[k])


def test_registry_and_defaults():
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}
    assert isinstance(make_optimizer("ADAM"), Adam)
    assert SGD().lr == 0.01 and Adam().lr == 0.001
    assert (Momentum().momentum, Nesterov().momentum) == (0.9, 0.9)
    assert RMSprop().decay_rate == 0.99
    assert (Adam().beta1, Adam().beta2) == (0.9, 0.999)
    assert AdaGrad(lr=0.5).hyperparams() == {"lr": 0.5}
    assert "lr=0.5" in repr(AdaGrad(lr=0.5))


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf])
def test_bad_learning_rates(lr):
    with pytest.raises(ValueError, match="lr must be positive"):
        make_optimizer("sgd", lr=lr)
    with pytest.raises(ValueError, match="lr must be positive"):
        Adam(lr=lr)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'.*sgd"):
        make_optimizer("adamw")
    with pytest.raises(TypeError, match="lr must be a number"):
        make_optimizer("sgd", lr="0.1")
    with pytest.raises(TypeError, match="lr must be a number"):
        SGD(lr=True)
    with pytest.raises(TypeError, match="takes the arguments lr, momentum"):
        make_optimizer("momentum", beta1=0.9)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        Momentum(momentum=1.0)
    with pytest.raises(ValueError, match="beta2"):
        Adam(beta2=-0.1)
    with pytest.raises(ValueError, match="grads has no entry for b"):
        SGD().update({"W": np.ones(2), "b": np.ones(2)}, {"W": np.ones(2)})
    with pytest.raises(TypeError, match="two dicts"):
        SGD().update([np.ones(2)], [np.ones(2)])


SLOTS = {"sgd": set(), "momentum": {"v"}, "nesterov": {"v"}, "adagrad": {"h"},
         "rmsprop": {"h"}, "adam": {"m", "v"}}


@pytest.mark.parametrize("name", list(CASES))
def test_pure_pair_state_and_count(backend, to_backend, xp, name):
    """init: zero slots like each parameter and a 0-d int64 count on the params' device;
    update: new dicts of new arrays, inputs and the old state untouched, count + 1."""
    rng = np.random.default_rng(1)
    params = {"W": to_backend(rng.standard_normal((3, 2))), "b": to_backend(np.zeros(2))}
    tx = getattr(optim, name)()
    state = tx.init(params)
    assert set(state) == {"W", "b", "count"}
    device = array_api_compat.device(params["W"])
    count = state["count"]
    assert count.shape == () and count.dtype == xp.int64
    assert array_api_compat.device(count) == device
    for k, p in params.items():
        assert set(state[k]) == SLOTS[name]
        for slot in state[k].values():
            assert slot.shape == p.shape and slot.dtype == p.dtype
            assert not np.any(xpnn.to_numpy(slot))
    before = {"params": _host(params), "state": _host(state["W"]), "ids": dict(state["W"])}
    for step in (1, 2):
        grads = {k: to_backend(rng.standard_normal(p.shape)) for k, p in params.items()}
        grads_before = _host(grads)
        new_params, new_state = tx.update(grads, state, params, 0.1)
        assert new_params is not params and new_state is not state
        for k in params:
            np.testing.assert_array_equal(xpnn.to_numpy(params[k]), before["params"][k])
            np.testing.assert_array_equal(xpnn.to_numpy(grads[k]), grads_before[k])
            assert not np.array_equal(xpnn.to_numpy(new_params[k]), before["params"][k])
        assert all(state["W"][s] is before["ids"][s] for s in SLOTS[name])
        for s in SLOTS[name]:
            np.testing.assert_array_equal(xpnn.to_numpy(state["W"][s]), before["state"][s])
        assert int(new_state["count"]) == step and int(state["count"]) == step - 1
        assert array_api_compat.device(new_state["count"]) == device
        assert new_state["count"].dtype == xp.int64
        params, state = new_params, new_state
        before = {"params": _host(params), "state": _host(state["W"]), "ids": dict(state["W"])}


@pytest.mark.parametrize("name", list(CASES))
def test_float32_stays_float32(backend, to_backend, xp, name):
    """Adam's bias correction is cast to the params' dtype, not promoted to float64."""
    params = {"W": to_backend(np.ones((2, 2)), "float32")}
    tx = getattr(optim, name)()
    state = tx.init(params)
    for _ in range(2):
        params, state = tx.update({"W": to_backend(np.full((2, 2), 0.5), "float32")}, state,
                                  params, to_backend(0.01, "float32"))
    assert params["W"].dtype == xp.float32
    assert all(s.dtype == xp.float32 for s in state["W"].values())


def test_adam_with_params_of_two_dtypes_corrects_each_in_its_own():
    """The bias-corrected rate is computed once per update and dtype: a float32 and a
    float64 parameter each get the rate in their dtype, as when it was per parameter."""
    b1, b2, lr = 0.8, 0.99, 0.01
    params = {"a": np.ones((2, 2), np.float32), "b": np.ones(3), "c": np.ones(2, np.float32)}
    tx = optim.adam(b1, b2)
    state = tx.init(params)
    m = {k: np.zeros_like(p) for k, p in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    want = dict(params)
    for t in (1, 2, 3):
        grads = {k: np.full_like(p, 0.5 * t) for k, p in params.items()}
        params, state = tx.update(grads, state, params, lr)
        for k, p in want.items():
            tt = np.asarray(t).astype(p.dtype)
            lr_t = lr * np.sqrt(1.0 - b2**tt) / (1.0 - b1**tt)
            m[k] = m[k] + (1 - b1) * (grads[k] - m[k])
            v[k] = v[k] + (1 - b2) * (grads[k] * grads[k] - v[k])
            want[k] = p - lr_t * m[k] / (np.sqrt(v[k]) + 1e-7)
        for k in want:
            assert params[k].dtype == want[k].dtype
            np.testing.assert_array_equal(params[k], want[k])


def test_pure_update_rejects_bad_learning_rates(to_backend):
    tx = optim.sgd()
    params = {"W": to_backend(np.ones(2), "float64")}
    grads, state = {"W": to_backend(np.ones(2), "float64")}, tx.init(params)
    for lr in (-1.0, -1e-300, math.nan, math.inf):
        with pytest.raises(ValueError, match="lr must be positive"):
            tx.update(grads, state, params, lr)
    unchanged, _ = tx.update(grads, state, params, 0.0)  # a schedule annealed to 0
    np.testing.assert_array_equal(xpnn.to_numpy(unchanged["W"]), np.ones(2))
    with pytest.raises(TypeError, match="0-d array"):
        tx.update(grads, state, params, to_backend([0.1, 0.1], "float64"))
    with pytest.raises(TypeError, match=r"lr has dtype .*float32.* params\['W'\]"):
        tx.update(grads, state, params, to_backend(0.1, "float32"))
    with pytest.raises(TypeError, match="lr must be"):
        tx.update(grads, state, params, "0.1")


def test_pure_update_rejects_mismatched_inputs():
    tx = optim.momentum()
    params = {"W": np.ones((2, 3))}
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"grads\['W'\] has shape \(3,\) but params\['W'\] has "
                                         r"shape \(2, 3\)"):
        tx.update({"W": np.ones(3)}, state, params, 0.1)
    with pytest.raises(ValueError, match="grads has no entry for W"):
        tx.update({}, state, params, 0.1)
    with pytest.raises(ValueError, match=r"holds \['m', 'v'\], expected \['v'\]"):
        tx.update({"W": np.ones((2, 3))}, optim.adam().init(params), params, 0.1)
    with pytest.raises(TypeError, match="made by this optimizer's init"):
        tx.update({"W": np.ones((2, 3))}, {}, params, 0.1)
    with pytest.raises(ValueError, match="parameter called 'count'"):
        tx.init({"count": np.ones(2)})
    with pytest.raises(TypeError, match="non-empty dict"):
        tx.init({})


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_state_from_another_network_is_refused(name):
    """Issue 9 point 7: a clear ValueError naming the parameter and both shapes, not a
    broadcasting error (or, worse, a silent broadcast); reset() starts afresh."""
    opt = make_optimizer(name, lr=0.1)
    small = {"W1": np.ones((4, 5)), "b1": np.ones(5)}
    opt.update(small, {k: np.ones_like(v) for k, v in small.items()})
    big = {"W1": np.ones((784, 5)), "b1": np.ones(5)}
    grads = {k: np.ones_like(v) for k, v in big.items()}
    with pytest.raises(ValueError, match=r"'W1' has shape \(4, 5\).*params\['W1'\] has shape "
                                         r"\(784, 5\).*reset\(\)"):
        opt.update(big, grads)
    with pytest.raises(ValueError, match="built for the parameters W1, b1 but params has W1, "
                                         "W2, b1"):
        opt.update({**small, "W2": np.ones(2)}, {**grads, "W2": np.ones(2)})
    assert int(opt.state["count"]) == 1  # failed updates leave the state alone
    opt.reset()
    assert opt.state is None
    opt.update(big, grads)
    assert int(opt.state["count"]) == 1 and opt.state["W1"]["v"].shape == (784, 5)


def test_update_checks_in_full_only_when_the_layout_changes():
    """Optimizer.update reuses a validated layout (keys, types, shapes, dtypes) and
    checks again when it changes or when the state was replaced."""
    opt = Momentum(lr=0.1)
    calls = counting_update(opt)
    params = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    grads = {"W": np.full((2, 3), 0.5), "b": np.ones(3)}
    for _ in range(4):
        opt.update(params, grads)
    assert len(calls) == 1 and int(opt.state["count"]) == 4
    # the unchecked path is the same maths: v = 0.9 v - 0.1 g, four times from v = 0
    v = sum(-0.1 * 0.9**k for k in range(4))
    np.testing.assert_allclose(opt.state["W"]["v"], np.full((2, 3), 0.5 * v))
    with pytest.raises(ValueError, match=r"'W' has shape \(2, 3\) \(float64\) but "
                                         r"params\['W'\] has shape \(2, 3\) \(float32\)"):
        opt.update({k: p.astype(np.float32) for k, p in params.items()},
                   {k: g.astype(np.float32) for k, g in grads.items()})
    with pytest.raises(ValueError, match=r"grads\['b'\] has shape \(2,\)"):
        opt.update(params, {**grads, "b": np.ones(2)})
    with pytest.raises(ValueError, match="grads has no entry for b"):
        opt.update(params, {"W": grads["W"]})
    opt.state = Momentum(lr=0.1).transform.init({"W": np.ones((5, 3)), "b": np.zeros(3)})
    with pytest.raises(ValueError, match=r"'W' has shape \(5, 3\)"):
        opt.update(params, grads)
    assert len(calls) == 5


def test_checked_parts_only_for_xpnn_transforms():
    assert optim.transforms.checked_parts(optim.sgd()) is not None
    tx = optim.GradientTransformation(lambda p: {}, lambda g, s, p, lr: (p, s))
    assert optim.transforms.checked_parts(tx) is None


@pytest.mark.parametrize("lr", [-0.1, math.nan, math.inf, -math.inf, "0.1", None, True])
def test_setting_a_bad_lr_raises_at_once(lr):
    opt = Adam(lr=0.01)
    with pytest.raises((ValueError, TypeError), match="lr must be"):
        opt.lr = lr
    assert opt.lr == 0.01
    opt.lr = 0.5
    assert opt.lr == 0.5 and opt.hyperparams()["lr"] == 0.5


def test_a_schedule_may_anneal_lr_to_zero():
    """The trainer sets opt.lr = base_lr * factor and allows factor 0 (CosineLR past
    total_iters, min_factor 0): that step must not move the params (nor raise)."""
    opt = SGD(lr=0.1)
    params = {"W": np.ones(2)}
    opt.lr = 0.1 * CosineLR(2, min_factor=0.0)(5)
    assert opt.lr == 0.0
    opt.update(params, {"W": np.ones(2)})
    np.testing.assert_array_equal(params["W"], np.ones(2))
    with pytest.raises(ValueError, match="lr must be positive"):
        SGD(lr=0.0)  # a zero base rate would never train


def test_coefficients_are_fixed_at_construction():
    opt = Momentum(momentum=0.5)
    with pytest.raises(AttributeError):
        opt.momentum = 0.9
    assert opt.hyperparams() == {"lr": 0.01, "momentum": 0.5}
    assert isinstance(opt.transform, optim.GradientTransformation)


def test_step_schedule():
    s = StepLR(10, gamma=0.5)
    assert [s(i) for i in (0, 9, 10, 19, 20, 35)] == [1, 1, 0.5, 0.5, 0.25, 0.125]
    assert StepLR(3)(3) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        StepLR(0)
    with pytest.raises(TypeError):
        StepLR(2.5)
    with pytest.raises(ValueError):
        StepLR(5, gamma=0)


def test_cosine_schedule():
    s = CosineLR(100)
    assert s(0) == 1.0
    assert s(50) == pytest.approx(0.5)
    assert s(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert s(100) == pytest.approx(0.0) and s(500) == pytest.approx(0.0)
    m = CosineLR(10, min_factor=0.1)
    assert m(0) == 1.0 and m(10) == pytest.approx(0.1) and m(5) == pytest.approx(0.55)
    factors = [s(i) for i in range(101)]
    assert np.all(np.diff(factors) <= 0)
    with pytest.raises(ValueError):
        CosineLR(10, min_factor=1.5)
    with pytest.raises(ValueError):
        CosineLR(0)
