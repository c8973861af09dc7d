"""One training iteration (gradient + SGD update) per net x backend x dtype x method,
and the peers it is compared with, all from the same initial weights (seed 0).

xpnn methods: ``backprop``, ``numerical`` (batched), ``numerical-loop`` (the
element-by-element reference). Peers: ``torch-eager`` (PyTorch autograd doing the
identical step), ``gemm-floor`` (the step's matrix products alone, plain library
calls) and ``plain-numpy`` (the same maths hand-written in NumPy).

Numerical methods on the big nets are timed on a fixed sample of each parameter
tensor and extrapolated per tensor (``extra_info["sampled"]``, ``sample_plan``,
``estimate_median_s``); the report uses the extrapolated figure.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchcommon import (
    DTYPES,
    NETS,
    TARGETS,
    SampledStep,
    backprop_step,
    base_info,
    gemm_floor_step,
    gradient_update_step,
    jax_target,
    loop_sample,
    measure,
    numerical_step,
    plain_numpy_step,
    problem,
    synchronizer,
    torch_eager_step,
)

import xpnn

CASES = [
    pytest.param(net, target, dtype, id=f"{net}-{target.id}-{dtype}")
    for net in NETS
    for dtype in DTYPES
    for target in TARGETS
    if NETS[net].small or target.id != "array_api_strict"
]

PEER_TARGETS = {  # which peers run where
    "plain-numpy": ("numpy",),
    "gemm-floor": ("numpy", "torch", "cupy", "torch-cuda"),
    "torch-eager": ("torch", "torch-cuda"),
}


def _step_cases():
    """xpnn backprop and its peers, ordered net -> dtype -> who, so the figures that are
    compared with each other are taken minutes apart at most on a shared machine."""
    out = []
    for net in NETS:
        for dtype in DTYPES:
            for target in TARGETS:
                if NETS[net].small or target.id != "array_api_strict":
                    out.append(pytest.param("backprop", net, target, dtype,
                                            id=f"backprop-{net}-{target.id}-{dtype}"))
            for peer, where in PEER_TARGETS.items():
                for target in TARGETS:
                    if target.id in where:
                        out.append(pytest.param(peer, net, target, dtype,
                                                id=f"{peer}-{net}-{target.id}-{dtype}"))
    return out


STEP_CASES = _step_cases()


def _compiled_cases():
    """The compiled steps beside their eager versions and the peers, float32, on the
    seed and wide nets: one ``-m compiled`` run gives every figure side by side."""
    jax = jax_target()
    by_id = {t.id: t for t in TARGETS + ([jax] if jax else [])}
    rows = [("backprop", "numpy"), ("gradient-update", "numpy"), ("gemm-floor", "numpy"),
            ("backprop", "torch"),
            ("backprop-compiled", "torch"), ("torch-eager", "torch"), ("gemm-floor", "torch"),
            ("backprop-compiled", "jax"), ("gemm-floor", "jax")]
    return [
        pytest.param(who, net, by_id[tid], "float32", id=f"{who}-{net}-{tid}-float32")
        for net in ("seed", "wide") for who, tid in rows if tid in by_id
    ]


COMPILED_CASES = _compiled_cases()


def _warmups(target) -> int:
    return 5 if target.gpu else 2


@pytest.mark.step
@pytest.mark.parametrize("who,net_name,target,dtype", STEP_CASES)
def test_step(benchmark, who, net_name, target, dtype):
    """One backprop iteration of xpnn (``who == "backprop"``) or of a peer."""
    benchmark.group = f"step {net_name} {dtype}"
    _step_body(benchmark, who, net_name, target, dtype)


def _step_body(benchmark, who, net_name, target, dtype):
    spec = NETS[net_name]
    if who in ("backprop", "backprop-compiled"):
        net, x, T = problem(spec, target, dtype)
        benchmark.extra_info.update(base_info(spec, target, dtype, who, net=net))
        step = backprop_step(net, x, T, spec.lr, synchronizer(target),
                             compile=who == "backprop-compiled")
        benchmark.extra_info["step"] = "xpnn.training.make_step(net, SGD(lr))" + (
            ", compile=True" if who == "backprop-compiled" else "")
        if who == "backprop-compiled":
            step()  # the compilation, kept out of the warm-up that sizes the rounds
    elif who == "gradient-update":
        net, x, T = problem(spec, target, dtype)
        benchmark.extra_info.update(base_info(spec, target, dtype, who, net=net))
        benchmark.extra_info["step"] = ("grads = net.gradient_prepared(x, T); "
                                        "params[k] = params[k] - lr * grads[k] for each k")
        step = gradient_update_step(net, x, T, spec.lr, synchronizer(target))
    elif who == "torch-eager":
        step, params, _, _ = torch_eager_step(spec, target, dtype)
        _check_same_first_step(spec, target, dtype, step, params)
        benchmark.extra_info.update(base_info(spec, target, dtype, who, impl="peer"))
        benchmark.extra_info["device"] = str(params[0].device)
    elif who == "gemm-floor":
        step, flops = gemm_floor_step(spec, target, dtype)
        benchmark.extra_info.update(base_info(spec, target, dtype, who, impl="peer"))
        benchmark.extra_info["gflop"] = flops / 1e9
        benchmark.extra_info["products"] = (
            "forward h@W per layer; dW = h.T@d per layer; dx = d@W.T for all but layer 1"
        )
    else:  # plain-numpy
        step, _, _, _ = plain_numpy_step(spec, dtype)
        benchmark.extra_info.update(base_info(spec, target, dtype, who, impl="peer"))
    measure(benchmark, step, warmup=_warmups(target))


@pytest.mark.compiled
@pytest.mark.parametrize("who,net_name,target,dtype", COMPILED_CASES)
def test_compiled_step(benchmark, who, net_name, target, dtype):
    """The trainer's step with compile=True (torch.compile, jax.jit) next to the eager
    step, the bare gradient + update it replaced (NumPy), PyTorch eager autograd and the
    GEMM floors (float32)."""
    benchmark.group = f"compiled {net_name} {dtype}"
    if who == "backprop-compiled":
        _check_compiled_first_step(NETS[net_name], target, dtype)
    _step_body(benchmark, who, net_name, target, dtype)


@pytest.mark.step
@pytest.mark.numerical
@pytest.mark.parametrize("net_name,target,dtype", CASES)
def test_numerical(benchmark, net_name, target, dtype):
    """Batched numerical gradient: every parameter on small nets; on big nets a fixed
    sample of whole chunks of perturbations per tensor, extrapolated."""
    spec = NETS[net_name]
    net, x, T = problem(spec, target, dtype)
    sync = synchronizer(target)
    benchmark.group = f"numerical {net_name} {dtype}"
    benchmark.extra_info.update(base_info(spec, target, dtype, "numerical", net=net))
    sampled = SampledStep(net, x, T, spec.lr, sync, "batched", spec.batched_sample)
    if sampled.exact:
        benchmark.extra_info["sampled"] = False
        measure(benchmark, numerical_step(net, x, T, spec.lr, sync, "batched"),
                warmup=1 if not target.gpu else 2, long_call_s=0.02)
    else:
        benchmark.extra_info.update(sampled.info())
        measure(benchmark, sampled, warmup=1 if not target.gpu else 2, long_call_s=0.0)
        _store_estimate(benchmark, sampled)


@pytest.mark.step
@pytest.mark.numerical
@pytest.mark.parametrize("net_name,target,dtype", CASES)
def test_numerical_loop(benchmark, net_name, target, dtype):
    """The element-by-element reference: every element on the small nets (NumPy and
    PyTorch CPU), a fixed sample of elements per tensor elsewhere, extrapolated."""
    spec = NETS[net_name]
    net, x, T = problem(spec, target, dtype)
    sync = synchronizer(target)
    benchmark.group = f"numerical {net_name} {dtype}"
    benchmark.extra_info.update(base_info(spec, target, dtype, "numerical-loop", net=net))
    per_tensor = loop_sample(spec, target)
    sampled = SampledStep(net, x, T, spec.lr, sync, "loop", per_tensor)
    if sampled.exact:
        benchmark.extra_info["sampled"] = False
        # warm the code paths on a small sample; then a few full iterations
        SampledStep(net, x, T, spec.lr, sync, "loop", 4)()
        step = numerical_step(net, x, T, spec.lr, sync, "loop")
        rounds = 3 if spec.n_params > 1000 else None
        measure(benchmark, step, warmup=1 if rounds is None else 0, rounds=rounds,
                long_call_s=0.02)
    else:
        benchmark.extra_info.update(sampled.info())
        measure(benchmark, sampled, warmup=1, long_call_s=0.0)
        _store_estimate(benchmark, sampled)


def _store_estimate(benchmark, sampled):
    est = sampled.estimates[-(benchmark.stats.stats.rounds):]
    benchmark.extra_info["estimate_median_s"] = float(np.median(est))
    benchmark.extra_info["estimate_rounds"] = len(est)
    benchmark.extra_info["estimate_min_s"] = float(np.min(est))


def _check_same_first_step(spec, target, dtype, peer_step, peer_params):
    """The peer starts from xpnn's weights and its first step lands on xpnn's."""
    net, x, T = problem(spec, target, dtype)
    step = backprop_step(net, x, T, spec.lr, synchronizer(target))
    step()
    peer_step()
    tol = 1e-4 if dtype == "float32" else 1e-10
    for p, k in zip(peer_params, net.params, strict=True):
        mine, theirs = xpnn.to_numpy(step.params[k]), p.detach().cpu().numpy()
        np.testing.assert_allclose(theirs, mine, rtol=tol, atol=tol * 1e-2, err_msg=k)


def _check_compiled_first_step(spec, target, dtype):
    """Two compiled steps land where two eager steps do."""
    steps = []
    for compile in (False, True):
        net, x, T = problem(spec, target, dtype)
        step = backprop_step(net, x, T, spec.lr, synchronizer(target), compile=compile)
        step()
        step()
        steps.append({k: xpnn.to_numpy(v) for k, v in step.params.items()})
    for k in steps[0]:
        np.testing.assert_allclose(steps[1][k], steps[0][k], rtol=1e-4, atol=1e-6, err_msg=k)
