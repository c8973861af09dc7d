"""Full passes over the (P, N, C) perturbation stacks, and CPU time per numerical
gradient, of one or more source trees (issue 15).

    python bench/numgrad_passes.py [--rounds 5] [--calls 5] [--out FILE] NAME=TREE ...

For each tree, in child processes with that tree's xpnn first on the path:

* ``count``: the aten operations (PyTorch, CPU, ``TorchDispatchMode``) of one chunk of
  the seed net's numerical gradient (784-50-10, sigmoid, float64, batch 100; a chunk
  of 16 W1 and one of 16 W2 elements) that read or write a tensor of P*N*C elements
  (a full stack; views not counted);
* ``time``: the wall and CPU time of ``net.numerical_gradient(x, t)`` on the seed net
  (NumPy and PyTorch, CPU, one thread, pinned to one core with ``taskset``), after
  one warm-up call. Rounds interleave the trees and backends (the machine is noisy);
  the medians are printed, and ``--out`` writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

COUNT = """
import json, math
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import xpnn
from xpnn.nn import numerical as N

VIEWS = {"t", "transpose", "permute", "view", "_unsafe_view", "_reshape_alias",
         "reshape", "unsqueeze", "squeeze", "select", "slice", "detach", "expand",
         "alias", "as_strided", "lift_fresh", "unfold", "diagonal"}

class Count(TorchDispatchMode):
    def __init__(self, size):
        super().__init__()
        self.size, self.ops = size, []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        tensors = [a for a in (*args, *(kwargs or {}).values(), out)
                   if isinstance(a, torch.Tensor)]
        if name not in VIEWS and any(a.numel() == self.size for a in tensors):
            self.ops.append(name)
        return out

torch.set_num_threads(1)
net = xpnn.MLP([784, 50, 10], activation="sigmoid", weight_init=0.01, seed=0,
               backend="torch", dtype="float64")
rng = np.random.default_rng(0)
x = xpnn.asarray(rng.random((100, 784)), backend="torch")
T = net.prepare_targets(xpnn.asarray(rng.integers(0, 10, 100), backend="torch"))
cache = N.forward_cache(net, x)
out = {}
for key in ("W1", "W2"):
    for scratch in (False, True):
        ws = N.Workspace(net.xp) if scratch else None
        chunk = N.Chunk(key, 0, 16, 16)
        N.chunk_gradient(net, x, T, chunk, 1e-4, cache, workspace=ws)  # buffers made
        with Count(2 * 16 * 100 * 10) as c:
            N.chunk_gradient(net, x, T, chunk, 1e-4, cache, workspace=ws)
        out[f"{key}{'-workspace' if scratch else ''}"] = c.ops
print(json.dumps(out))
"""

TIME = """
import json, sys, time
import numpy as np
import xpnn
backend, calls = sys.argv[1], int(sys.argv[2])
if backend == "torch":
    import torch
    torch.set_num_threads(1)
net = xpnn.MLP([784, 50, 10], activation="sigmoid", weight_init=0.01, seed=0,
               backend=backend, dtype="float64")
rng = np.random.default_rng(0)
x = xpnn.asarray(rng.random((100, 784)), backend=backend)
t = xpnn.asarray(rng.integers(0, 10, 100), backend=backend)
net.numerical_gradient(x, t)  # warm-up
out = []
for _ in range(calls):
    w0, c0 = time.perf_counter(), time.process_time()
    net.numerical_gradient(x, t)
    out.append([time.perf_counter() - w0, time.process_time() - c0])
print(json.dumps(out))
"""


def _child(code, path, args, core):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONPATH=os.path.abspath(path))
    cmd = [sys.executable, "-c", code, *args]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    proc = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", help="NAME=PATH of a source tree (its xpnn)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--backends", default="numpy,torch")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.trees)
    backends = args.backends.split(",")
    result = {"net": "784-50-10 sigmoid float64 batch 100", "counts": {}, "times": {}}
    for name, path in trees.items():
        result["counts"][name] = ops = _child(COUNT, path, [], None)
        print(name, {k: len(v) for k, v in ops.items()}, ops["W1-workspace"], flush=True)
    for r in range(args.rounds):
        for backend in backends:
            for name, path in trees.items():
                times = _child(TIME, path, [backend, str(args.calls)], r % 2)
                result["times"].setdefault(f"{name}/{backend}", []).extend(times)
    result["medians_s"] = {
        k: {"wall": statistics.median(w for w, _ in v), "cpu": statistics.median(c for _, c in v),
            "n": len(v)}
        for k, v in result["times"].items()}
    for k, m in result["medians_s"].items():
        print(f"{k:24s} wall {m['wall'] * 1e3:8.1f} ms   cpu {m['cpu'] * 1e3:8.1f} ms"
              f"  (n={m['n']})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
