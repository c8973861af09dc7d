"""The MLP on every backend: the book's interface, cross-backend parity, numerical
stability, immutability, and clear errors on bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import host, problem
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnn

LOSSES = sorted(xpnn.LOSSES)


def test_book_interface(backend):
    net, x, t = problem(backend, [6, 5, 3], n=7, dtype="float32")
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    assert tuple(net.params["W1"].shape) == (6, 5) and tuple(net.params["b2"].shape) == (3,)
    y = xpnn.to_numpy(net.predict(x))
    assert y.shape == (7, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    loss = net.loss(x, t)
    assert loss.shape == () and math.isfinite(float(loss))
    acc = net.accuracy(x, t)
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    g = net.gradient(x, t)
    assert set(g) == set(net.params)
    for k in g:
        assert tuple(g[k].shape) == tuple(net.params[k].shape)
        assert g[k].dtype == net.params[k].dtype


def test_accuracy_with_labels_and_one_hot(backend):
    net, x, t = problem(backend, [4, 3], n=9)
    labels = xpnn.to_numpy(t)
    pred = np.argmax(xpnn.to_numpy(net.predict(x)), axis=1)
    want = float(np.mean(pred == labels))
    one_hot = np.eye(3)[labels]
    assert net.accuracy(x, t) == pytest.approx(want)
    assert net.accuracy(x, xpnn.asarray(one_hot, backend=net.xp, device=net.device)) == \
        pytest.approx(want)


def test_losses_match_hand_formulas():
    z = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    T = np.eye(3)[[0, 2]]
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    want = -np.mean(np.log(p[[0, 1], [0, 2]]))
    assert float(xpnn.softmax_cross_entropy(z, T)) == pytest.approx(want, rel=1e-14)
    assert float(xpnn.softmax_cross_entropy(z, np.array([0, 2]))) == pytest.approx(want, rel=1e-14)
    with pytest.raises(ValueError, match="labels must lie"):
        xpnn.softmax_cross_entropy(z, np.array([0, 3]))
    zb, tb = np.array([[3.0], [-2.0]]), np.array([[1.0], [0.0]])
    s = 1 / (1 + np.exp(-zb))
    want = -np.mean(tb * np.log(s) + (1 - tb) * np.log(1 - s))
    assert float(xpnn.binary_cross_entropy(zb, tb)) == pytest.approx(want, rel=1e-12)
    assert float(xpnn.binary_cross_entropy(zb, np.array([1, 0]))) == pytest.approx(want, rel=1e-12)
    assert float(xpnn.mse(z, T)) == pytest.approx(np.mean((z - T) ** 2), rel=1e-14)


def test_mse_matches_torch_mseloss():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    y, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    want = torch.nn.MSELoss()(torch.as_tensor(y), torch.as_tensor(t)).item()
    assert float(xpnn.mse(y, t)) == pytest.approx(want, rel=1e-14)


def test_weight_decay_term(backend):
    net, x, t = problem(backend, [3, 4, 2], n=5, weight_decay=0.2)
    plain = xpnn.MLP([3, 4, 2], activation="tanh", weight_init=0.7, backend=backend[0],
                     device=backend[1], dtype="float64", seed=0)
    W = host(net.params)
    reg = 0.5 * 0.2 * (np.sum(W["W1"] ** 2) + np.sum(W["W2"] ** 2))
    assert float(net.loss(x, t)) == pytest.approx(float(plain.loss(x, t)) + reg, rel=1e-13)
    g, g0 = host(net.gradient(x, t)), host(plain.gradient(x, t))
    np.testing.assert_allclose(g["W1"], g0["W1"] + 0.2 * W["W1"], rtol=1e-12)
    np.testing.assert_allclose(g["b1"], g0["b1"], rtol=1e-12)  # biases are not decayed


@pytest.mark.parametrize("init,std", [(0.01, 0.01), ("xavier", 1 / math.sqrt(200)),
                                      ("he", math.sqrt(2 / 200))])
def test_weight_init(init, std):
    net = xpnn.MLP([200, 300, 10], weight_init=init, seed=0, dtype="float64")
    W1 = xpnn.to_numpy(net.params["W1"])
    assert np.std(W1) == pytest.approx(std, rel=0.02)
    assert np.all(xpnn.to_numpy(net.params["b1"]) == 0)


def test_seed_reproducible_and_distinct():
    a, b, c = (xpnn.MLP([5, 4, 3], seed=s, dtype="float64") for s in (1, 1, 2))
    np.testing.assert_array_equal(xpnn.to_numpy(a.params["W1"]), xpnn.to_numpy(b.params["W1"]))
    assert not np.array_equal(xpnn.to_numpy(a.params["W1"]), xpnn.to_numpy(c.params["W1"]))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", sorted(xpnn.ACTIVATIONS))
def test_cross_backend_parity(backend, activation, loss):
    """Same seed: identical initial params; loss and gradients equal NumPy's to 1e-12."""
    sizes = [5, 6, 4, 1 if loss == "binary_cross_entropy" else 3]
    ref, xr, tr = problem(("numpy", None), sizes, loss=loss, n=8, activation=activation)
    net, x, t = problem(backend, sizes, loss=loss, n=8, activation=activation)
    for k in ref.params:
        np.testing.assert_array_equal(xpnn.to_numpy(net.params[k]), xpnn.to_numpy(ref.params[k]))
    assert float(net.loss(x, t)) == pytest.approx(float(ref.loss(xr, tr)), rel=1e-12, abs=1e-12)
    g, gr = host(net.gradient(x, t)), host(ref.gradient(xr, tr))
    for k in gr:
        np.testing.assert_allclose(g[k], gr[k], rtol=1e-12, atol=1e-12)
    gn, gnr = host(net.numerical_gradient(x, t)), host(ref.numerical_gradient(xr, tr))
    for k in gnr:
        np.testing.assert_allclose(gn[k], gnr[k], rtol=1e-6, atol=1e-9)


# -- numerical stability -------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_huge_logits_give_finite_loss_and_gradients(backend, dtype):
    name, device = backend
    net = xpnn.MLP([2, 3], backend=name, device=device, dtype=dtype, seed=0)
    net.params["W1"] = xpnn.asarray([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], backend=name,
                                    device=device, dtype=dtype)
    x = xpnn.asarray([[1.0, 0.0], [0.0, 1.0]], backend=name, device=device, dtype=dtype)
    t = xpnn.asarray([1, 1], backend=name, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = float(net.loss(x, t))
        g = host(net.gradient(x, t))
        y = xpnn.to_numpy(net.predict(x))
    # sample 0 puts 1e4 on class 0 and -1e4 on the true class 1: loss 2e4; sample 1 is ~0
    assert loss == pytest.approx(1e4, rel=1e-6)
    assert all(np.all(np.isfinite(v)) for v in g.values())
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_saturated_sigmoid_is_finite(backend, dtype, loss):
    name, device = backend
    out = 1 if loss == "binary_cross_entropy" else 2
    net = xpnn.MLP([1, 2, out], activation="sigmoid", loss=loss, backend=name,
                   device=device, dtype=dtype, seed=0, weight_init=1.0)
    net.params["W1"] = xpnn.asarray([[1000.0, -1000.0]], backend=name, device=device,
                                    dtype=dtype)
    net.params["W2"] = xpnn.asarray(np.full((2, out), 1000.0), backend=name, device=device,
                                    dtype=dtype)
    x = xpnn.asarray([[1.0], [-1.0]], backend=name, device=device, dtype=dtype)
    t = xpnn.asarray([0, 1], backend=name, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = [float(net.loss(x, t))] + [
            v for g in host(net.gradient(x, t)).values() for v in g.ravel()
        ]
    assert np.all(np.isfinite(values))
    if loss == "binary_cross_entropy":  # logit 1000 for label 0: the loss is 1000/2
        assert values[0] == pytest.approx(500.0, rel=1e-6)


# -- immutability --------------------------------------------------------------------


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("loss", LOSSES)
def test_read_only_arrays_work_and_stay_unchanged(loss):
    sizes = [4, 5, 3, 1 if loss == "binary_cross_entropy" else 2]
    net, x, t = problem(("numpy", None), sizes, loss=loss, n=6, activation="elu",
                        weight_decay=0.1)
    x, t = _read_only(x), _read_only(t)
    net.params = {k: _read_only(v) for k, v in net.params.items()}
    before = {k: v.copy() for k, v in net.params.items()}
    x0, t0 = x.copy(), t.copy()
    net.predict(x)
    float(net.loss(x, t))
    if loss != "mse":
        net.accuracy(x, t)
    for grads in (net.gradient(x, t), net.numerical_gradient(x, t),
                  net.numerical_gradient(x, t, method="loop")):
        for k, v in before.items():
            np.testing.assert_array_equal(net.params[k], v)
        new = {k: net.params[k] - 0.1 * grads[k] for k in net.params}  # the SGD rebinding
        assert all(not np.shares_memory(new[k], before[k]) for k in new)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)
    xpnn.numerical_gradient(lambda a: float(np.sum(a * a)), _read_only(x0))


# -- bad input -----------------------------------------------------------------------


@pytest.fixture
def small():
    return problem(("numpy", None), [4, 3, 3], n=5)


def test_wrong_feature_count(small):
    net, x, t = small
    with pytest.raises(ValueError, match="3 features but the network expects 4"):
        net.predict(x[:, :3])


def test_labels_out_of_range(small):
    net, x, _ = small
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        net.loss(x, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="labels must lie"):
        net.gradient(x, np.array([0, -1, 2, 1, 0]))


def test_non_integer_labels(small):
    net, x, _ = small
    with pytest.raises(TypeError, match="labels must be integers"):
        net.loss(x, np.array([0.0, 1.0, 2.0, 1.0, 0.0]))


def test_one_hot_width_mismatch(small):
    net, x, _ = small
    with pytest.raises(ValueError, match="width 4 but the network has 3 outputs"):
        net.accuracy(x, np.eye(4)[[0, 1, 2, 3, 0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_input(small, bad):
    net, x, t = small
    x = x.copy()
    x[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        net.loss(x, t)


def test_empty_batch(small):
    net, x, t = small
    with pytest.raises(ValueError, match="empty batch"):
        net.predict(x[:0])


def test_row_mismatch_and_shape(small):
    net, x, t = small
    with pytest.raises(ValueError, match="5 rows but t has 4"):
        net.loss(x, t[:4])
    with pytest.raises(ValueError, match="2-D"):
        net.predict(x[0])


def test_integer_input_is_refused(small):
    net, x, t = small
    with pytest.raises(TypeError, match="floating"):
        net.predict(np.ones((2, 4), dtype=np.uint8))


def test_binary_labels_must_be_0_or_1():
    net, x, _ = problem(("numpy", None), [3, 1], loss="binary_cross_entropy", n=3)
    with pytest.raises(ValueError, match="0 or 1"):
        net.loss(x, np.array([0, 2, 1]))


@pytest.mark.parametrize("kwargs,exc,text", [
    ({"activation": "swish"}, ValueError, "unknown activation 'swish'"),
    ({"activation": ["relu"]}, ValueError, "1 activations for 2 hidden layers"),
    ({"loss": "hinge"}, ValueError, "unknown loss 'hinge'"),
    ({"loss": "binary_cross_entropy"}, ValueError, "exactly 1 output"),
    ({"weight_init": -1.0}, ValueError, "positive"),
    ({"weight_init": "glorot"}, ValueError, "xavier"),
    ({"weight_decay": -0.1}, ValueError, ">= 0"),
    ({"dtype": "int32"}, ValueError, "float32"),
])
def test_bad_constructor_arguments(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        xpnn.MLP([4, 3, 3, 2], **kwargs)


@pytest.mark.parametrize("sizes,exc,text", [
    ([784], ValueError, "at least two"),
    ([], ValueError, "at least two"),
    ([784, 0, 10], ValueError, "positive"),
    ([784, -5, 10], ValueError, "positive"),
    ([784, 2.5, 10], TypeError, "integers"),
    (5, TypeError, "list"),
])
def test_bad_sizes(sizes, exc, text):
    with pytest.raises(exc, match=text):
        xpnn.MLP(sizes)


@pytest.mark.parametrize("field,value", [
    ("sizes", [784]), ("sizes", [784, 0, 10]), ("sizes", [784, 2.5, 10]),
    ("weight_init", -1.0), ("weight_init", "glorot"), ("weight_init", True),
    ("weight_decay", -0.1), ("weight_decay", "a"),
])
def test_constructor_and_config_refuse_the_same_values(field, value):
    """One set of checks (xpnn.nn.config): the constructor raises TypeError for a value
    of the wrong type where a config read from a file raises ValueError."""
    from xpnn.nn import config

    kwargs = {"sizes": [4, 3], field: value}
    with pytest.raises((TypeError, ValueError)) as made:
        xpnn.MLP(kwargs.pop("sizes"), **kwargs)
    cfg = {"format": config.FORMAT, "version": config.VERSION, "sizes": [4, 3],
           "activations": [], "loss": "mse", "dtype": "float32", field: value}
    with pytest.raises(ValueError) as read:
        config.check_config(cfg)
    assert str(made.value).replace(f"'{field}'", field) == \
        str(read.value).replace(f"'{field}'", field)


def test_n_params_formula_matches_the_network():
    from xpnn.nn import config

    net = xpnn.MLP([5, 4, 3, 2], seed=0)
    assert config.n_params(net.sizes) == net.n_params


def test_softmax_needs_two_outputs():
    with pytest.raises(ValueError, match="at least 2 outputs"):
        xpnn.MLP([3, 1])


def test_mixed_backends_are_refused():
    net, x, t = problem(("array_api_strict", None), [4, 3], n=5)
    with pytest.raises(TypeError, match="numpy array but the network runs on array_api_strict"):
        net.predict(np.ones((2, 4)))
    with pytest.raises(TypeError, match="t is a numpy array"):
        net.loss(x, np.array([0, 1, 2, 0, 1]))
    with pytest.raises(TypeError, match="got list"):
        net.predict([[1.0, 2.0, 3.0, 4.0]])
    torch = pytest.importorskip("torch")
    numpy_net = xpnn.MLP([4, 3], seed=0)
    with pytest.raises(TypeError, match="torch array"):
        numpy_net.predict(torch.ones((2, 4)))


def test_accuracy_undefined_for_mse():
    net, x, t = problem(("numpy", None), [2, 1], loss="mse", n=3)
    with pytest.raises(ValueError, match="mse"):
        net.accuracy(x, t)


# -- properties over shapes ----------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 6), min_size=0, max_size=3),
    n=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    activation=st.sampled_from(sorted(xpnn.ACTIVATIONS)),
    loss=st.sampled_from(["softmax_cross_entropy", "softmax_cross_entropy",
                          "binary_cross_entropy", "mse"]),
    scale=st.sampled_from([1.0, 1.0, 30.0]),
    budget=st.sampled_from([None, 400]),
)
def test_shapes_and_batched_numerics_property(hidden, n, seed, activation, loss, scale,
                                              budget):
    """The batched numerical gradient against the reference (one element at a time) for
    every loss, depth (the perturbed layer's rank-1 update below the logits, on the
    logits, or under more layers), chunking and logits of any size (``scale``: the
    softmax shift folded into the unperturbed logits must stay exact)."""
    out = 1 if loss == "binary_cross_entropy" else 3
    sizes = [3, *hidden, out]
    net, x, t = problem(("numpy", None), sizes, n=n, seed=seed, activation=activation,
                        loss=loss, weight_init=0.7 * scale)
    y = net.predict(x)
    assert y.shape == (n, out)
    if loss == "softmax_cross_entropy":
        np.testing.assert_allclose(np.sum(y, axis=1), 1.0, rtol=1e-12)
    fast = host(net.numerical_gradient(x, t, memory_budget=budget))
    slow = host(net.numerical_gradient(x, t, method="loop"))
    bp = host(net.gradient(x, t))
    # a central difference rounds to eps * |L| / h: the two orders of evaluation agree
    # to a few such units
    noise = 64 * np.finfo(np.float64).eps * max(1.0, abs(float(net.loss(x, t)))) / 1e-4
    for k in net.params:
        assert fast[k].shape == bp[k].shape == tuple(net.params[k].shape)
        scale_k = max(1.0, float(np.max(np.abs(slow[k]))))
        assert np.max(np.abs(fast[k] - slow[k])) <= max(1e-8 * scale_k, noise)
        if activation != "relu" and scale == 1.0:  # a dead ReLU unit: a kink within h
            assert np.max(np.abs(fast[k] - bp[k])) <= 1e-6 * scale_k
