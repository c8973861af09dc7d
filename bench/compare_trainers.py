"""Whole-trainer time per iteration of two xpnn source trees, interleaved in one run.

    git worktree add /tmp/old <commit>
    taskset -c 0 python bench/compare_trainers.py /tmp/old . --out bench/results/trainers.json

Each round runs ``xpnn.train`` once per tree in a fresh process (one BLAS thread, NumPy
backend, float32, random data of MNIST's shape) and records ``meta["train_time"]``
per iteration (evaluation excluded); the trees run in turn, old first in even rounds and
new first in odd ones, so a load change on a shared machine (or a cache warmed by the
run before) favours neither. Medians and every raw value go to the JSON file; "first"
says which tree ran first in each round.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

NETS = {
    "seed": dict(sizes=[784, 50, 10], activation="sigmoid", weight_init=0.01,
                 batch=100, iters=3000),
    "wide": dict(sizes=[784, 1024, 1024, 10], activation="relu", weight_init="he",
                 batch=256, iters=200),
}

CHILD = r"""
import json, os, sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, os.environ["XPNN_SRC"])
import numpy as np
import xpnn
spec = json.loads(os.environ["XPNN_NET"])
rng = np.random.default_rng(0)
x = rng.random((10000, 784), dtype=np.float32)
t = rng.integers(0, 10, 10000)
net = xpnn.MLP(spec["sizes"], activation=spec["activation"],
               weight_init=spec["weight_init"], seed=0)
opt = xpnn.SGD(lr=0.1)
kw = dict(optimizer=opt, batch_size=spec["batch"], progress=False)
xpnn.train(net, (x, t), iters=max(10, spec["iters"] // 10), seed=0, **kw)  # warm-up
h = xpnn.train(net, (x, t), iters=spec["iters"], eval_every=spec["iters"], seed=1, **kw)
print(json.dumps({"us": h.meta["train_time"] / spec["iters"] * 1e6, "file": xpnn.__file__}))
"""


def run_once(src: str, net: str) -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               XPNN_SRC=os.path.abspath(src), XPNN_NET=json.dumps(NETS[net]))
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    if not result["file"].startswith(os.path.abspath(src)):
        raise RuntimeError(f"imported {result['file']}, not the tree {src}")
    return result["us"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "affinity": sorted(os.sched_getaffinity(0)),
                    "load_start": os.getloadavg()},
        "trees": {"old": args.old, "new": args.new},
        "nets": {},
    }
    for net in args.nets:
        raw, order = {"old": [], "new": []}, []
        for r in range(args.rounds):
            names = ("old", "new") if r % 2 == 0 else ("new", "old")
            order.append(names[0])
            for name in names:
                raw[name].append(run_once(getattr(args, name), net))
        med = {k: statistics.median(v) for k, v in raw.items()}
        report["nets"][net] = {"raw_us": raw, "first": order, "median_us": med,
                               "new_over_old": med["new"] / med["old"], **NETS[net]}
        print(f"{net}: old {med['old']:.1f} us/iter, new {med['new']:.1f} us/iter, "
              f"new/old {med['new'] / med['old']:.3f}")
    report["machine"]["load_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
