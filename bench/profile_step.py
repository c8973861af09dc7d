"""Where one xpnn training step spends its time, layer by layer, next to its GEMM floor
and the plain-NumPy / PyTorch-eager peers.

    python bench/profile_step.py --net wide --backend numpy --dtype float32
    python bench/profile_step.py --net seed --cprofile      # also a cProfile listing

Each layer method is wrapped with a timer (so the breakdown itself adds ~1 µs per call);
the totals at the end are unwrapped. Pin threads with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS
in the environment (set before this starts) to compare with a ``XPNN_BENCH_THREADS`` run.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from benchcommon import (  # noqa: E402
    NETS,
    Target,
    backprop_step,
    gemm_floor_step,
    plain_numpy_step,
    problem,
    synchronizer,
    torch_eager_step,
)


def _median_time(fn, n, rounds=7):
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return float(np.median(times))


def _fmt(s):
    return f"{s * 1e3:9.3f} ms"


def breakdown(net, x, T, lr, sync, n):
    acc = collections.defaultdict(float)

    def timed(name, f):
        def g(*a, **k):
            t0 = time.perf_counter()
            out = f(*a, **k)
            sync()
            acc[name] += time.perf_counter() - t0
            return out

        return g

    saved = []
    aff = net.arch.affine  # one stateless block serves every layer
    saved += [(aff, "forward", aff.forward), (aff, "backward", aff.backward)]
    aff.forward = timed("affine.forward (x@W + b, all layers)", aff.forward)
    aff.backward = timed("affine.backward (dW, db, dx, all layers)", aff.backward)
    for i, act in enumerate(net.arch.activations):
        saved.append((act, "forward", act.forward))
        saved.append((act, "backward", act.backward))
        act.forward = timed(f"{act.name}{i + 1}.forward", act.forward)
        act.backward = timed(f"{act.name}{i + 1}.backward", act.backward)
    last = net.loss_fn
    saved.append((last, "gradient", last.gradient))
    last.gradient = timed("loss.gradient (softmax - T)/N", last.gradient)
    params = net.params

    def update(grads):
        for k in params:
            params[k] = params[k] - lr * grads[k]

    update = timed("SGD update (rebinding)", update)
    for _ in range(3):
        update(net.gradient_prepared(x, T))
    acc.clear()
    for _ in range(n):
        update(net.gradient_prepared(x, T))
    for obj, name, fn in saved:
        setattr(obj, name, fn)
    return {k: v / n for k, v in acc.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="seed", choices=sorted(NETS))
    p.add_argument("--backend", default="numpy",
                   choices=["numpy", "torch", "array_api_strict", "cupy", "torch-cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("-n", type=int, default=None, help="steps per timing round")
    p.add_argument("--cprofile", action="store_true", help="print a cProfile listing too")
    args = p.parse_args(argv)

    spec = NETS[args.net]
    if args.backend == "torch-cuda":
        target = Target("torch-cuda", "torch", "cuda", True)
    elif args.backend == "cupy":
        target = Target("cupy", "cupy", "cuda", True)
    else:
        target = Target(args.backend, args.backend, None, False)
    sync = synchronizer(target)
    n = args.n or max(3, int(2000 / max(1, spec.step_flops() / 1e6)))
    net, x, T = problem(spec, target, args.dtype)
    print(f"{spec.name} {list(spec.sizes)} {spec.activation}, batch {spec.batch}, "
          f"{target.id} {args.dtype}, {n} steps per round")
    parts = breakdown(net, x, T, spec.lr, sync, n)
    for name, t in parts.items():
        print(f"  {name:42s} {_fmt(t)}")
    print(f"  {'sum of the parts':42s} {_fmt(sum(parts.values()))}")

    net, x, T = problem(spec, target, args.dtype)
    step = backprop_step(net, x, T, spec.lr, sync)
    rows = [("xpnn step", _median_time(step, n))]
    floor, _ = gemm_floor_step(spec, target, args.dtype)
    rows.append(("GEMM floor (same library)", _median_time(floor, n)))
    if target.id in ("numpy", "array_api_strict"):
        rows.append(("plain NumPy step", _median_time(plain_numpy_step(spec, args.dtype)[0], n)))
    if target.backend == "torch" or target.gpu:
        try:
            tt = Target("torch-cuda", "torch", "cuda", True) if target.gpu else Target(
                "torch", "torch", None, False)
            rows.append(("PyTorch eager step", _median_time(
                torch_eager_step(spec, tt, args.dtype)[0], n)))
        except ImportError:
            pass
    for name, t in rows:
        print(f"{name:44s} {_fmt(t)}   ({t / rows[0][1]:.2f}x of xpnn)")

    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n * 5):
            step()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
