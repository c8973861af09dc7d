"""The pure training step (``xpnn.training.step``) and its compiled forms: eager equals
the book's update on every backend; jax.jit and torch.compile equal eager (float64,
1e-12) for every optimiser; torch.compile traces the step as one graph."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import counting_update, host_leaves

import xpnn
from xpnn.compile import compile_step
from xpnn.training import make_step, train

OPTIMIZERS = sorted(xpnn.OPTIMIZERS)
LR = {"sgd": 0.1, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.1, "rmsprop": 0.01,
      "adam": 0.01}
ALL_ACTIVATIONS = ["sigmoid", "relu", "tanh", "elu", "identity"]


def _host_problem(n=12, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, d)), rng.integers(0, k, n)) for _ in range(3)]


def _net(backend, device=None, activation="tanh", sizes=(4, 6, 5, 3), **kw):
    return xpnn.MLP(list(sizes), activation=activation, weight_init=0.5, seed=0,
                    backend=backend, device=device, dtype="float64", **kw)


def _batches(net, to_array):
    return [(to_array(x), net.prepare_targets(to_array(y))) for x, y in _host_problem()]


def _leaves(tree):
    return {key: a.astype(np.float64) for key, a in host_leaves(tree).items()}


def _assert_same_state(a, b, tol=1e-12):
    la, lb = _leaves(a), _leaves(b)
    assert la.keys() == lb.keys()
    for key in la:
        np.testing.assert_allclose(la[key], lb[key], rtol=tol, atol=tol, err_msg=key)


def _three_steps(step, batches):
    state = step.init()
    for xb, Tb in batches:
        state = step(state, xb, Tb)
    return state


# -- eager: the step is the book's update ----------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_equals_the_book_update(backend, to_backend, name):
    net, ref = _net(*backend), _net(*backend)
    batches = _batches(net, lambda a: to_backend(a, "float64" if a.dtype.kind == "f" else None))
    state = _three_steps(make_step(net, xpnn.make_optimizer(name, lr=LR[name])), batches)
    opt = xpnn.make_optimizer(name, lr=LR[name])
    for xb, Tb in batches:
        opt.update(ref.params, ref.gradient_prepared(xb, Tb))
    _assert_same_state(state["params"], ref.params)
    assert int(state["iteration"]) == 3 and int(state["first_bad"]) == -1
    assert net.params is not state["params"]  # the net itself was not touched


def test_first_bad_flag_marks_the_first_non_finite_step():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3))
    t = x @ rng.standard_normal((3, 1))
    net = xpnn.MLP([3, 4, 1], activation="identity", loss="mse", weight_init=0.5, seed=0,
                   dtype="float64")
    T = net.prepare_targets(t)
    step = make_step(net, xpnn.SGD(lr=1e30))
    state, first = step.init(), None
    with np.errstate(all="ignore"):
        for k in range(1, 12):
            state = step(state, x, T)
            finite = all(np.all(np.isfinite(p)) for p in state["params"].values())
            if first is None and not finite:
                first = k
            assert int(state["first_bad"]) == (-1 if first is None else first)
    assert first is not None and first > 1


def test_lr_lives_in_the_state():
    net = _net("numpy")
    (xb, Tb), *_ = _batches(net, np.asarray)
    step = make_step(net, xpnn.SGD(lr=0.1))
    state = step.init()
    slow = step(state, xb, Tb)
    fast = step({**state, "lr": np.asarray(0.2)}, xb, Tb)
    g = net.gradient_prepared(xb, Tb)
    np.testing.assert_allclose(slow["params"]["W1"], net.params["W1"] - 0.1 * g["W1"])
    np.testing.assert_allclose(fast["params"]["W1"], net.params["W1"] - 0.2 * g["W1"])


def test_eager_step_validates_a_layout_once_and_any_other_state_in_full():
    """The eager step skips the optimiser's checks only for a state it returned itself:
    init's state, a new lr, rebound params or a foreign optimiser state are checked."""
    net = _net("numpy")
    batches = _batches(net, np.asarray)
    opt = xpnn.Momentum(lr=0.1)
    calls = counting_update(opt)
    step = make_step(net, opt)
    state = _three_steps(step, batches * 2)
    assert len(calls) == 1
    state = step({**state, "lr": np.asarray(0.05)}, *batches[0])  # what set_lr does
    state = step({**state, "params": dict(state["params"])}, *batches[0])  # a callback's
    assert len(calls) == 3
    other = _net("numpy", sizes=(4, 7, 3))
    foreign = xpnn.Momentum(lr=0.1).transform.init(other.params)
    with pytest.raises(ValueError, match="built for the parameters W1, W2, b1, b2 but params "
                                         "has W1, W2, W3"):
        step({**state, "opt": foreign}, *batches[0])
    with pytest.raises(TypeError, match="lr has dtype"):
        step({**state, "lr": np.asarray(0.1, dtype=np.float32)}, *batches[0])
    # the trusted path computes what the checked one does
    ref = make_step(_net("numpy"), xpnn.Momentum(lr=0.1))
    slow = ref.init()
    for xb, Tb in batches * 2:
        slow = ref.pure(slow, xb, Tb)
    fast = _three_steps(make_step(_net("numpy"), xpnn.Momentum(lr=0.1)), batches * 2)
    _assert_same_state(fast, slow, tol=0)


# -- the flat update -------------------------------------------------------------------


def test_state_arrays_are_views_of_one_flat_vector_per_kind():
    """params and each optimiser slot are per-layer views of one vector (one update for
    all of them); the state stays a nest of dicts of the documented arrays."""
    net = _net("numpy")
    batches = _batches(net, np.asarray)
    state = _three_steps(make_step(net, xpnn.Adam(lr=0.01)), batches)
    params, opt = state["params"], state["opt"]
    assert list(params) == list(net.params)
    for key, p in net.params.items():
        assert params[key].shape == p.shape and opt[key]["m"].shape == p.shape
    flat = params["W1"].base
    assert flat is not None and flat.ndim == 1
    assert all(a.base is flat for a in params.values())
    assert all(opt[k]["v"].base is opt["W1"]["v"].base for k in params)
    assert opt["W1"]["v"].base is not flat and opt["W1"]["m"].base is not opt["W1"]["v"].base
    assert int(opt["count"]) == int(state["iteration"]) == 3


@pytest.mark.parametrize("where", ["params", "opt"])
def test_an_array_rebound_in_place_is_used_not_the_kept_flat_vector(where):
    """The eager step keeps the flat vectors of the state it returned; a state whose
    dict has an entry rebound in place is not that state (its new array is used)."""
    net = _net("numpy")
    batches = _batches(net, np.asarray)
    step, ref = make_step(net, xpnn.Momentum(lr=0.1)), make_step(net, xpnn.Momentum(lr=0.1))
    state = step(step.init(), *batches[0])
    if where == "params":
        rebound = {**state, "params": {**state["params"], "W1": state["params"]["W1"] * 0.5}}
        state["params"]["W1"] = rebound["params"]["W1"]
    else:
        rebound = {**state, "opt": {**state["opt"], "b2": {"v": state["opt"]["b2"]["v"] + 1}}}
        state["opt"]["b2"] = rebound["opt"]["b2"]
    _assert_same_state(step(state, *batches[1]), ref(rebound, *batches[1]), tol=0)


def test_counters_carry_on_across_the_counter_table(monkeypatch):
    """The eager step reads iteration and update count from a table made every
    COUNTER_ROWS steps; across tables (and a rebound state) they count on, and the
    first-bad flag is what the compiled-style step (``pure``) gives."""
    from xpnn.training import step as step_module

    monkeypatch.setattr(step_module, "COUNTER_ROWS", 3)
    net = _net("numpy")
    batches = _batches(net, np.asarray) * 3
    step, ref = make_step(net, xpnn.Adam(lr=0.01)), make_step(net, xpnn.Adam(lr=0.01))
    fast, slow = step.init(), ref.init()
    for i, (xb, Tb) in enumerate(batches):
        if i == 4:
            fast = {**fast, "params": dict(fast["params"])}  # a callback's new dict
        fast, slow = step(fast, xb, Tb), ref.pure(slow, xb, Tb)
        _assert_same_state(fast, slow, tol=0)
        assert int(fast["iteration"]) == int(fast["opt"]["count"]) == i + 1
        assert fast["iteration"].dtype == slow["iteration"].dtype


def test_first_bad_is_kept_while_the_parameters_stay_bad():
    """first_bad names the first step after which a parameter was not finite, also
    when the parameters are made finite again and go bad a second time."""
    net = _net("numpy")
    (xb, Tb), *_ = _batches(net, np.asarray)
    step = make_step(net, xpnn.SGD(lr=0.1))
    state = step(step.init(), xb, Tb)
    nan = {**state["params"], "b2": state["params"]["b2"] * np.nan}
    with np.errstate(invalid="ignore"):
        state = step({**state, "params": nan}, xb, Tb)
        assert int(state["first_bad"]) == 2
        state = step(step(state, xb, Tb), xb, Tb)
        assert int(state["first_bad"]) == 2 and int(state["iteration"]) == 4
        state = step({**state, "params": dict(net.params)}, xb, Tb)  # finite again
        assert int(state["first_bad"]) == 2
        state = step({**state, "params": nan}, xb, Tb)
    assert int(state["first_bad"]) == 2 and int(state["iteration"]) == 6


def test_a_rebound_first_bad_is_read_not_the_kept_flag():
    """The eager step keeps the flag vector behind the first_bad it returned; a state
    that is otherwise the one returned but carries another first_bad (a resumed run's)
    goes on from that one."""
    net = _net("numpy")
    (xb, Tb), *_ = _batches(net, np.asarray)
    step = make_step(net, xpnn.SGD(lr=0.1))
    state = step(step(step.init(), xb, Tb), xb, Tb)
    state = step({**state, "first_bad": np.asarray(1, dtype=state["first_bad"].dtype)}, xb, Tb)
    assert int(state["first_bad"]) == 1 and int(state["iteration"]) == 3
    state = step(state, xb, Tb)
    assert int(state["first_bad"]) == 1 and state["first_bad"].shape == ()


def test_all_finite_is_one_flag_that_cannot_overflow():
    from xpnn.training.step import all_finite, zero_vectors

    big = {"W": np.full((3, 2), np.finfo(np.float64).max), "b": np.ones(2)}
    for zeros in (None, zero_vectors(np, big)):
        assert bool(all_finite(np, big, zeros))
        for bad in (np.inf, -np.inf, np.nan):
            params = {**big, "b": np.asarray([1.0, bad])}
            with np.errstate(invalid="ignore"):
                assert not bool(all_finite(np, params, zeros))


def test_compile_is_the_plain_step_on_host_array_libraries():
    def fn(state, xb, Tb):
        return state

    for name in ("numpy", "array_api_strict"):
        assert compile_step(fn, xpnn.get_namespace(name)) == (fn, False)


def test_compile_needs_a_pure_optimizer():
    class BookSGD:
        lr = 0.1

        def update(self, params, grads):
            for k in params:
                params[k] = params[k] - self.lr * grads[k]

    net = _net("numpy")
    with pytest.raises(TypeError, match="compile=True needs an optimizer with a pure"):
        make_step(net, BookSGD(), compile=True)
    with pytest.raises(TypeError, match="compile must be True or False"):
        make_step(net, xpnn.SGD(), compile="yes")


def test_overridden_update_is_what_runs():
    """A subclass of an xpnn optimiser that overrides update() keeps its override."""
    calls = []

    class Spy(xpnn.SGD):
        def update(self, params, grads):
            calls.append(self.lr)
            super().update(params, grads)

    net = _net("numpy")
    step = make_step(net, Spy(lr=0.25))
    assert not step.pure_optimizer
    _three_steps(step, _batches(net, np.asarray))
    assert calls == [0.25] * 3


def test_book_style_step_reads_the_rate_only_when_it_changes():
    """float() of a device lr waits for the device: a book-style step converts the
    state's lr once per lr array, not once per step."""
    reads = []

    class Rate:
        def __init__(self, value):
            self.value = value

        def __float__(self):
            reads.append(self.value)
            return self.value

    seen = []

    class BookSGD:
        lr = 0.1

        def update(self, params, grads):
            seen.append(self.lr)
            for k in params:
                params[k] = params[k] - self.lr * grads[k]

    net = _net("numpy")
    step = make_step(net, BookSGD())
    state = step.init()
    batches = _batches(net, np.asarray)
    state = {**state, "lr": Rate(0.25)}
    for xb, Tb in batches:
        state = step(state, xb, Tb)
    state = {**state, "lr": Rate(0.5)}
    state = step(state, *batches[0])
    assert reads == [0.25, 0.5]
    assert seen == [0.25] * len(batches) + [0.5]


# -- torch.compile -----------------------------------------------------------------------


@pytest.fixture
def torch_cpu():
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dynamo's notes on lru_cache etc.
        yield torch


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_compile_equals_eager(torch_cpu, name):
    net = _net("torch", activation=ALL_ACTIVATIONS[:2])
    batches = _batches(net, torch_cpu.as_tensor)
    opt = xpnn.make_optimizer
    eager = _three_steps(make_step(net, opt(name, lr=LR[name])), batches)
    compiled_step = make_step(net, opt(name, lr=LR[name]), compile=True)
    compiled = _three_steps(compiled_step, batches)
    assert compiled_step.compiled and not compiled_step.donates
    _assert_same_state(compiled, eager)


def test_torch_step_is_one_graph(torch_cpu):
    """torch._dynamo.explain: no graph break anywhere in the step, for every activation
    and the optimiser with the most state."""
    net = _net("torch", sizes=(4, 6, 6, 6, 6, 6, 3), activation=ALL_ACTIVATIONS,
               weight_decay=0.01)
    (xb, Tb), *_ = _batches(net, torch_cpu.as_tensor)
    step = make_step(net, xpnn.Adam(lr=0.01))
    explanation = torch_cpu._dynamo.explain(step.pure)(step.init(), xb, Tb)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_train_with_compile_matches_eager_torch(torch_cpu):
    x, y = _host_problem(n=40)[0]
    tr = (torch_cpu.as_tensor(x), torch_cpu.as_tensor(y))
    runs = []
    for compile in (False, True):
        net = _net("torch")
        h = train(net, tr, tr, optimizer=xpnn.Adam(lr=0.01), batch_size=8, iters=12,
                  eval_every=5, seed=0, lr_schedule=xpnn.StepLR(4, 0.5), compile=compile,
                  progress=False)
        runs.append((h, _leaves(net.params)))
    (h1, p1), (h2, p2) = runs
    assert h2.meta["compile"] and h1.iteration == h2.iteration == [0, 5, 10, 12]
    np.testing.assert_allclose(h2.train_loss, h1.train_loss, rtol=1e-12)
    _assert_same_state(p2, p1)


# -- jax.jit -----------------------------------------------------------------------------


@pytest.fixture
def jnp():
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax.numpy
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_jax_jit_equals_eager(jnp, name):
    net = _net(jnp, activation=ALL_ACTIVATIONS[:2])
    batches = _batches(net, jnp.asarray)
    eager = _three_steps(make_step(net, xpnn.make_optimizer(name, lr=LR[name])), batches)
    jitted_step = make_step(net, xpnn.make_optimizer(name, lr=LR[name]), compile=True)
    jitted = _three_steps(jitted_step, batches)
    assert jitted_step.donates
    _assert_same_state(jitted, eager)


def test_jax_schedule_does_not_retrace(jnp):
    net = _net(jnp)
    batches = _batches(net, jnp.asarray)
    step = make_step(net, xpnn.SGD(lr=0.1), compile=True)
    traces, gradient = [], step._gradient

    def counting(*args):  # runs once per trace, not per call
        traces.append(1)
        return gradient(*args)

    step._gradient = counting
    state = step.init()
    for i, (xb, Tb) in enumerate(batches):
        state = step({**state, "lr": jnp.asarray(0.1 / (i + 1), dtype=net.dtype)}, xb, Tb)
    assert len(traces) == 1


def test_jax_step_compiles_once(jnp):
    """init's state is placed on the device as the step's results are: jax.jit keys
    its compiled code on that placement and compiled the step twice (traced once)."""
    import jax

    compiles, listening = [], [True]

    def listener(name, secs, **kwargs):
        if listening[0] and "backend_compile" in name:
            compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        net = _net(jnp)
        batches = _batches(net, jnp.asarray)
        step = make_step(net, xpnn.Momentum(lr=0.1), compile=True)
        state = step.init()
        xb, Tb = batches[0]
        compiles.clear()
        for _ in range(3):
            state = step(state, xb, Tb)
        assert len(compiles) == 1
    finally:
        listening[0] = False


def test_train_with_compile_matches_eager_jax(jnp):
    x, y = _host_problem(n=40)[0]
    tr = (jnp.asarray(x), jnp.asarray(y))
    runs = []
    for compile in (False, True):
        net = _net(jnp)
        h = train(net, tr, optimizer=xpnn.Momentum(lr=0.05), batch_size=8, iters=9,
                  eval_every=4, seed=0, compile=compile, progress=False)
        runs.append((h, _leaves(net.params)))
    (h1, p1), (h2, p2) = runs
    np.testing.assert_allclose(h2.train_loss, h1.train_loss, rtol=1e-12)
    _assert_same_state(p2, p1)
    assert all(math.isfinite(v) for v in h2.train_loss)
