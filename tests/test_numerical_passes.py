"""The batched numerical gradient's passes over its (P, N, C) perturbation stacks
(issue 15): ``Loss.rank1_value`` gives the loss of every rank-1-perturbed logit stack
with as few full passes as the Array API allows (softmax cross-entropy: the update's
multiply and add, exp, row sums; counted here with ``TorchDispatchMode``), equals the
loss of the built stack to rounding, and stays exact over a wider range of
perturbations than the shift bound it replaced."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import host, problem
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnn
from xpnn.nn import losses as L
from xpnn.nn import numerical as N

LOSSES = ["softmax_cross_entropy", "binary_cross_entropy", "mse"]


def _case(rng, P, n, c, spread=3.0):
    base = rng.standard_normal((n, c)) * spread
    left = rng.standard_normal((P, n))
    right = rng.standard_normal((P, c))
    return base, left, right


def _targets(loss, rng, n, c):
    if loss == "softmax_cross_entropy":
        return np.eye(c)[rng.integers(0, c, n)]
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (n, 1)).astype(np.float64)
    return rng.standard_normal((n, c))


@settings(max_examples=60, deadline=None)
@given(P=st.integers(1, 9), n=st.integers(1, 7), c=st.integers(1, 6),
       loss=st.sampled_from(LOSSES), spread=st.sampled_from([0.1, 3.0, 300.0]),
       seed=st.integers(0, 1000), scratch=st.booleans())
def test_rank1_value_equals_the_value_of_the_built_stack(P, n, c, loss, spread, seed,
                                                         scratch):
    if loss == "binary_cross_entropy":
        c = 1
    elif loss == "softmax_cross_entropy":
        c = max(c, 2)
    rng = np.random.default_rng(seed)
    base, left, right = _case(rng, P, n, c, spread)
    T = _targets(loss, rng, n, c)
    xp = xpnn.get_namespace("numpy")
    fn = L.make_loss(loss, xp)
    want = fn.value(L.rank1(xp, base, left, right), T)
    ws = N.Workspace(xp) if scratch else None
    got = fn.rank1_value(base, left, right, T, np.max(base, axis=1), ws)
    assert got.shape == (P,)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * max(1.0, spread))


@pytest.mark.parametrize("dtype, B", [("float32", 80.0), ("float64", 700.0)])
def test_the_folded_shift_is_exact_while_B_stays_below_log_max(dtype, B):
    """One logit column moved by +-B (B = |left| * max|right|), the other columns
    1000 below: the rows' true maxima are B and -B. ``rank1_value`` shifts by the
    unperturbed maximum, so its exponents lie in [-B, B]: exact (to the dtype's
    rounding) up to log(finfo.max), 88 in float32 and 709 in float64. The bound the
    numerical gradient passed before (m + B, per row) put the smaller row 2B below its
    shift, past the smallest subnormal (103 / 744): its exp underflowed to a loss of
    -inf."""
    xp = xpnn.get_namespace("numpy")
    fn = L.make_loss("softmax_cross_entropy", xp)
    base = np.array([[0.0, -1000.0, -1000.0]], dtype=dtype)
    left = np.array([[B], [-B]], dtype=dtype)
    right = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=dtype)
    T = np.array([[0.0, 1.0, 0.0]], dtype=dtype)  # the true class is a low one
    exact = np.array([1000.0 + B, 1000.0 - B])  # lse - z_1 = max(z) - z_1 here
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # exp(-1000) -> 0
        got = fn.rank1_value(base, left, right, T, np.max(base, axis=1), N.Workspace(xp))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, exact, rtol=4 * np.finfo(dtype).eps)
    with np.errstate(all="ignore"):
        old = fn.value(L.rank1(xp, base, left, right), T,
                       row_max=np.max(base, axis=1)[None, :] + np.abs(left) * 1.0)
    assert np.isfinite(old[0]) and not np.isfinite(old[1])


# -- the passes, counted ------------------------------------------------------------------


def _full_stack_ops(net, key, width, workspace):
    """aten operations (no views) of one chunk's central differences that read or
    write a tensor of P*N*C elements (P = 2 * width: both signs)."""
    torch = pytest.importorskip("torch")
    from test_op_budget import NOT_LAUNCHES
    from torch.utils._python_dispatch import TorchDispatchMode

    x = xpnn.asarray(np.random.default_rng(0).standard_normal((12, net.sizes[0])),
                     backend="torch")
    T = net.prepare_targets(xpnn.asarray(np.arange(12) % net.sizes[-1], backend="torch"))
    cache = N.forward_cache(net, x)
    size = 2 * width * 12 * net.sizes[-1]
    chunk = N.Chunk(key, 0, width, width)
    ws = N.Workspace(net.xp) if workspace else None

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            seen = [*args, *(kwargs or {}).values(), out]
            if name not in NOT_LAUNCHES and any(
                    isinstance(a, torch.Tensor) and a.numel() == size for a in seen):
                self.ops.append(name)
            return out

    N.chunk_gradient(net, x, T, chunk, 1e-4, cache, workspace=ws)  # the buffers made
    with Count() as counted:
        g = N.chunk_gradient(net, x, T, chunk, 1e-4, cache, workspace=ws)
    assert g.shape == (width,)
    return counted.ops


@pytest.mark.parametrize("key", ["W1", "b1", "W2", "b2"])
def test_softmax_chunks_pass_over_their_stacks_four_times(key):
    """A chunk of any parameter of a one-hidden-layer net (the seed net's shape): four
    operations touch the (P, N, C) stack in the workspace (multiply, add, exp, the row
    sums' product); before the folded shift and target there were six (also the
    shift's subtract and the target's product), measured with bench/numgrad_passes.py
    on the seed net (README, "Numerical gradient")."""
    pytest.importorskip("torch")  # the count is a torch dispatch mode's
    net = xpnn.MLP([20, 8, 5], activation="sigmoid", backend="torch", dtype="float64",
                   seed=0)
    assert _full_stack_ops(net, key, 6, workspace=True) == ["mul", "add", "exp", "mm"]
    # without a workspace (JAX, array-api-strict, compilers) the same four, and on
    # torch a copy where broadcasting left the stack in a layout reshape cannot view
    plain = _full_stack_ops(net, key, 6, workspace=False)
    assert [op for op in plain if op != "clone"] == ["mul", "add", "exp", "mm"]


def test_numerical_gradient_unchanged_by_the_folded_shift_on_large_logits(backend):
    """Logits in the thousands (weights 1e3): the batched gradient (shift folded into
    the unperturbed logits) against backprop, float64."""
    net, x, t = problem(backend, [3, 4, 3], n=6, weight_init=300.0, activation="tanh")
    fast = host(net.numerical_gradient(x, t, h=1e-6))
    bp = host(net.gradient(x, t))
    for k in bp:
        np.testing.assert_allclose(fast[k], bp[k], rtol=1e-5, atol=1e-5, err_msg=k)
