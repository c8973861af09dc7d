"""Issue 8: the pure optimiser pairs trace. Three steps of every optimiser's ``update``
under ``jax.jit`` and under ``torch.compile`` equal the eager steps (float64, 1e-12).

jax is not an xpnn backend yet, so jax.numpy arrays go to the pure pair directly. Each
test is skipped when its library is not importable. One compile per optimiser: the
traced function is built once and must be reused for all three steps (a retrace means
the state's structure changed between steps, which would cost a compile per step).
"""

from __future__ import annotations

import numpy as np
import pytest

from xpnn import optim

COEFFICIENTS = {
    "sgd": {},
    "momentum": {"momentum": 0.8},
    "nesterov": {"momentum": 0.7},
    "adagrad": {},
    "rmsprop": {"decay_rate": 0.9},
    "adam": {"beta1": 0.8, "beta2": 0.99},
}
LR = 0.05


def _problem(seed=0):
    """Host params and three different host gradient dicts, float64."""
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal(3),
              "W2": rng.standard_normal((3, 2))}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(3)]
    return params, grads


def _three_steps_agree(name, convert, compile_fn):
    """Run eager and compiled updates side by side from the same start."""
    tx = getattr(optim, name)(**COEFFICIENTS[name])
    host_params, host_grads = _problem()
    params = {k: convert(v) for k, v in host_params.items()}
    lr = convert(np.asarray(LR, dtype=np.float64))
    compiled = compile_fn(tx.update)
    eager_params, eager_state = params, tx.init(params)
    traced_params, traced_state = params, tx.init(params)
    for step, host_g in enumerate(host_grads, start=1):
        grads = {k: convert(v) for k, v in host_g.items()}
        eager_params, eager_state = tx.update(grads, eager_state, eager_params, lr)
        traced_params, traced_state = compiled(grads, traced_state, traced_params, lr)
        assert int(traced_state["count"]) == int(eager_state["count"]) == step
        for k in host_params:
            eager, traced = np.asarray(eager_params[k]), np.asarray(traced_params[k])
            assert traced.dtype == np.float64
            np.testing.assert_allclose(traced, eager, rtol=1e-12, atol=1e-12)
            for slot in eager_state[k]:
                np.testing.assert_allclose(np.asarray(traced_state[k][slot]),
                                           np.asarray(eager_state[k][slot]),
                                           rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(COEFFICIENTS))
def test_jax_jit_equals_eager(name):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    traces = []

    def jit_counting_traces(update):
        def traced(*args):
            traces.append(1)  # Python runs only while jax traces
            return update(*args)

        return jax.jit(traced)

    with jax.enable_x64(True):
        _three_steps_agree(name, jnp.asarray, jit_counting_traces)
    assert len(traces) == 1


# array_api_compat.array_namespace memoises with functools.lru_cache, which dynamo
# traces through (a class -> namespace lookup, so safe) and warns about.
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
@pytest.mark.parametrize("name", list(COEFFICIENTS))
def test_torch_compile_equals_eager(name):
    torch = pytest.importorskip("torch")

    def convert(a):
        return torch.asarray(a, dtype=torch.float64)

    def compile_whole(fn):
        # fullgraph: the update must trace as one graph, no fallback to eager Python
        return torch.compile(fn, fullgraph=True)

    # a fresh dynamo cache per optimiser (all pairs share one update code object, and
    # dynamo allows 8 compiles of a code object); then any recompile is an error
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        _three_steps_agree(name, convert, compile_whole)
