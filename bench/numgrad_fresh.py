"""Direct ``net.numerical_gradient`` calls in fresh processes (issue 15): the seed net
(784-50-10, float64, NumPy, batch 100), plain and after
``xpnn.dist.executor.keep_freed_memory()``, for one or two source trees.

    python bench/numgrad_fresh.py [--rounds 5] [--calls 3] [--out FILE] NAME=TREE ...

Each round starts one process per (tree, setting), interleaved, pinned to one core
(``taskset``, alternating cores between rounds) with one BLAS thread, and records wall
time, CPU time and minor page faults of every call. Prints the medians of the first
calls; ``--out`` writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import numpy as np
import xpnn
if sys.argv[2] == "keep":
    from xpnn.dist.executor import keep_freed_memory
    keep_freed_memory()
net = xpnn.MLP([784, 50, 10], activation="sigmoid", weight_init=0.01, seed=0,
               backend="numpy", dtype="float64")
rng = np.random.default_rng(0)
x, t = rng.random((100, 784)), rng.integers(0, 10, 100)
out = []
for _ in range(int(sys.argv[1])):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    w0, c0 = time.perf_counter(), time.process_time()
    net.numerical_gradient(x, t)
    out.append([time.perf_counter() - w0, time.process_time() - c0,
                resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0])
print(json.dumps(out))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", help="NAME=PATH of a source tree (its xpnn)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.trees)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    runs: dict = {}
    for r in range(args.rounds):
        for name, path in trees.items():
            for mode in ("plain", "keep"):
                proc = subprocess.run(
                    ["taskset", "-c", str(r % 2), sys.executable, "-c", CHILD,
                     str(args.calls), mode],
                    env=dict(env, PYTHONPATH=os.path.abspath(path)), cwd="/",
                    capture_output=True, text=True, check=True)
                runs.setdefault(f"{name}-{mode}", []).append(json.loads(proc.stdout))
    for key, calls in runs.items():
        first = [c[0] for c in calls]
        print(f"{key}: first call, median of {len(first)} processes: wall "
              f"{statistics.median(c[0] for c in first):.3f} s, CPU "
              f"{statistics.median(c[1] for c in first):.3f} s, "
              f"{statistics.median(c[2] for c in first):,.0f} minor page faults")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(runs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
