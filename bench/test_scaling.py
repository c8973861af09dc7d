"""Scaling sweep: 784-H-10 (sigmoid, batch 100, float32) for H = 8 ... 1024; time per
iteration of backprop, the batched numerical gradient and the element loop against
the parameter count. ``python bench/report.py`` fits the log-log slope of each.

Above H = 64 the batched numerical gradient is timed on a fixed sample of chunks per
tensor, and the loop (everywhere) on a fixed sample of elements per tensor, both
extrapolated per tensor (``extra_info["sampled"]``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from benchcommon import (
    SWEEP_WIDTHS,
    TARGETS,
    SampledStep,
    backprop_step,
    base_info,
    measure,
    numerical_step,
    problem,
    sweep_spec,
    synchronizer,
)

SWEEP_DTYPES = tuple(os.environ.get("XPNN_BENCH_SWEEP_DTYPES", "float32").split(","))
SWEEP_TARGETS = [t for t in TARGETS if t.id != "array_api_strict"]
CASES = [
    pytest.param(method, width, target, dtype, id=f"{method}-H{width}-{target.id}-{dtype}")
    for method in ("backprop", "numerical", "numerical-loop")
    for target in SWEEP_TARGETS
    for dtype in SWEEP_DTYPES
    for width in SWEEP_WIDTHS
]


@pytest.mark.sweep
@pytest.mark.parametrize("method,width,target,dtype", CASES)
def test_sweep(benchmark, method, width, target, dtype):
    spec = sweep_spec(width)
    net, x, T = problem(spec, target, dtype)
    sync = synchronizer(target)
    benchmark.group = f"sweep {method} {target.id} {dtype}"
    info = base_info(spec, target, dtype, method, net=net)
    info.update(kind="sweep", width=width)
    benchmark.extra_info.update(info)
    warm = 5 if target.gpu else 2
    if method == "backprop":
        measure(benchmark, backprop_step(net, x, T, spec.lr, sync), warmup=warm)
        return
    mode = "batched" if method == "numerical" else "loop"
    per_tensor = spec.batched_sample if mode == "batched" else spec.loop_sample
    sampled = SampledStep(net, x, T, spec.lr, sync, mode, per_tensor)
    if sampled.exact:
        benchmark.extra_info["sampled"] = False
        measure(benchmark, numerical_step(net, x, T, spec.lr, sync, mode), warmup=1,
                long_call_s=0.02)
        return
    benchmark.extra_info.update(sampled.info())
    measure(benchmark, sampled, warmup=1, long_call_s=0.0)
    est = sampled.estimates[-(benchmark.stats.stats.rounds):]
    benchmark.extra_info["estimate_median_s"] = float(np.median(est))
    benchmark.extra_info["estimate_rounds"] = len(est)
    benchmark.extra_info["estimate_min_s"] = float(np.min(est))
