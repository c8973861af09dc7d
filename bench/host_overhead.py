"""The eager step's host overhead on the CPU: xpnn's ``make_step`` step against
PyTorch's eager autograd step, on shapes so small that the kernels cost next to
nothing, so what is timed is Python and dispatch per step (issue 15: on a GPU the
eager seed step is host-bound: 731 us on torch-cuda against PyTorch's 647 us).

    python bench/host_overhead.py                      # timings, JSON under bench/results/
    python bench/host_overhead.py --cprofile           # where xpnn's host time goes
    python bench/host_overhead.py --versus /tmp/old    # before/after: another xpnn tree

Nets (sigmoid, softmax cross-entropy, float32, one thread everywhere):

- ``tiny``  16-8-4, batch 4: every array has at most 128 elements, so each kernel is
  well under a microsecond and the step's time is its host overhead: the CPU proxy of
  an eager GPU step, where the kernels run asynchronously and the host's issue rate
  is the step's time.
- ``seed-b1``  the seed net 784-50-10 at batch 1: the real parameter count (39,760),
  so the flat update and the finiteness product touch 40k floats (a few us on the
  CPU, which a GPU hides): an upper bound on the proxy.

Rows per net: xpnn eager SGD step (torch and NumPy), xpnn eager Adam step (torch and
NumPy), PyTorch eager autograd with the manual SGD update (``benchcommon.
torch_eager_step``, the GPU reference of ``gpu_check``) and PyTorch eager autograd with
``torch.optim.Adam``. Each round times every row once, in turn (interleaved, so a
noisy neighbour hits all rows alike); figures are medians over the rounds, and the
ratios are medians of the per-round ratios. ``--versus TREE`` runs the rows in
alternating worker processes, one importing xpnn from TREE and one from this tree.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchcommon import NetSpec, Target, problem, torch_eager_step  # noqa: E402

import xpnn  # noqa: E402
from xpnn.training import make_step  # noqa: E402

torch.set_num_threads(1)

NETS = {
    "tiny": NetSpec("tiny", (16, 8, 4), "sigmoid", 4, 0.01, 0.1, True),
    "seed-b1": NetSpec("seed-b1", (784, 50, 10), "sigmoid", 1, 0.01, 0.1, True),
}
DTYPE = "float32"
TORCH = Target("torch", "torch", None, False)
NUMPY = Target("numpy", "numpy", None, False)
RESULTS = Path(__file__).parent / "results"


def xpnn_step(spec, target, optimizer):
    net, x, T = problem(spec, target, DTYPE)
    opt = xpnn.SGD(lr=spec.lr) if optimizer == "sgd" else xpnn.Adam(lr=1e-3)
    step = make_step(net, opt)
    box = [step.init()]

    def run():
        box[0] = step(box[0], x, T)

    return run


def torch_adam_step(spec):
    """``torch_eager_step``'s forward and backward, updated by ``torch.optim.Adam``
    (its default implementation on the CPU)."""
    import torch.nn.functional as F

    _, params, x, labels = torch_eager_step(spec, TORCH, DTYPE)
    opt = torch.optim.Adam(params, lr=1e-3)
    n_layers = len(params) // 2

    def run():
        h = x
        for i in range(n_layers):
            h = torch.addmm(params[2 * i + 1], h, params[2 * i])
            if i < n_layers - 1:
                h = torch.sigmoid(h)
        F.cross_entropy(h, labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def torch_inline_step(spec):
    """The torch calls of xpnn's eager SGD step (sigmoid net), written inline with
    plain torch functions: no xpnn, no array-api-compat, no Python between the calls
    but the loop over layers. Its time is the dispatch floor of xpnn's op sequence;
    xpnn's time minus this is xpnn's own Python overhead."""
    net, x, T = problem(spec, TORCH, DTYPE)
    keys = list(net.params)
    shapes = [tuple(net.params[k].shape) for k in keys]
    sizes = [math.prod(s) for s in shapes]
    starts = np.cumsum([0, *sizes]).tolist()
    box = {"P": torch.concat([net.params[k].reshape(-1) for k in keys]),
           "first_bad": torch.tensor([[-1]]), "row": 0}
    zeros = torch.zeros((starts[-1], 1))
    table = torch.arange(3 * 1024).reshape(1024, 3)
    columns = (table[:, 0], table[:, 1], table[:, 2])
    lr = torch.tensor(spec.lr)
    half, one = torch.tensor(0.5), torch.tensor(1.0)  # xpnn's Sigmoid constants
    n_layers = len(keys) // 2
    n = x.shape[0]

    def run():
        P = box["P"]
        p = [P[a:b] if len(s) == 1 else torch.reshape(P[a:b], s)
             for a, b, s in zip(starts[:-1], starts[1:], shapes, strict=True)]
        hs, h = [x], x
        for i in range(n_layers):
            h = h @ p[2 * i] + p[2 * i + 1]
            if i < n_layers - 1:
                h = half * torch.tanh(half * h) + half
                hs.append(h)
        e = torch.exp(h - torch.amax(h, dim=-1, keepdim=True))
        d = (e / torch.sum(e, dim=-1, keepdim=True) - T) / n
        grads = [None] * len(keys)
        for i in range(n_layers - 1, -1, -1):
            grads[2 * i], grads[2 * i + 1] = hs[i].T @ d, torch.sum(d, dim=0)
            if i > 0:
                d = (d @ p[2 * i].T) * hs[i] * (one - hs[i])
        G = torch.concat([g if g.ndim == 1 else torch.reshape(g, (-1,)) for g in grads])
        P = P - lr * G
        row = box["row"] = (box["row"] + 1) % 1024
        _, _, after = columns[0][row, ...], columns[1][row, ...], columns[2][row, ...]
        total = torch.reshape(P, (1, -1)) @ zeros
        fb = box["first_bad"]
        fb = box["first_bad"] = torch.where(total == total, fb, fb % after)
        torch.reshape(fb, ())
        box["P"] = P

    run.state = box  # the flat parameters and flag, for the check that it is xpnn's step
    return run


def rows(spec):
    """(row name, step callable) for one net."""
    return [
        ("xpnn torch SGD", xpnn_step(spec, TORCH, "sgd")),
        ("PyTorch autograd SGD", torch_eager_step(spec, TORCH, DTYPE)[0]),
        ("inline torch calls SGD", torch_inline_step(spec)),
        ("xpnn numpy SGD", xpnn_step(spec, NUMPY, "sgd")),
        ("xpnn torch Adam", xpnn_step(spec, TORCH, "adam")),
        ("PyTorch autograd Adam", torch_adam_step(spec)),
        ("xpnn numpy Adam", xpnn_step(spec, NUMPY, "adam")),
    ]


def time_round(fn, n: int) -> float:
    """Microseconds per call over ``n`` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def measure(nets, rounds: int, n: int) -> dict:
    """{net: {row: [us per step, one per round]}}, the rows interleaved per round."""
    built = {name: rows(NETS[name]) for name in nets}
    for name in nets:  # warm-up: first steps concatenate, allocators settle
        for _, fn in built[name]:
            for _ in range(20):
                fn()
    out = {name: {row: [] for row, _ in built[name]} for name in nets}
    for _ in range(rounds):
        for name in nets:
            for row, fn in built[name]:
                out[name][row].append(time_round(fn, n))
    return out


def summary(raw: dict) -> dict:
    """Medians per row, and medians of per-round ratios to the PyTorch rows."""
    out = {}
    for net, by_row in raw.items():
        med = {row: float(np.median(v)) for row, v in by_row.items()}
        ratios = {}
        for row, v in by_row.items():
            ref = "PyTorch autograd Adam" if "Adam" in row else "PyTorch autograd SGD"
            if row != ref and ref in by_row:
                ratios[f"{row} / {ref}"] = float(np.median(np.asarray(v) / by_row[ref]))
        out[net] = {"median_us": med, "ratio": ratios}
    return out


def print_summary(title: str, summ: dict) -> None:
    print(title)
    for net, s in summ.items():
        print(f"  {net} {list(NETS[net].sizes)} batch {NETS[net].batch}")
        for row, us in s["median_us"].items():
            print(f"    {row:24s} {us:8.1f} us")
        for name, r in s["ratio"].items():
            print(f"    {name:48s} {r:5.2f}x")


def profile(net: str, optimizer: str, target: Target, n: int, top: int) -> None:
    fn = xpnn_step(NETS[net], target, optimizer)
    for _ in range(20):
        fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(top)
    print(f"(per step: divide by {n})")


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "dtype": DTYPE,
    }


def commit(tree: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None


def versus(other: Path, nets, rounds: int, n: int) -> dict:
    """Alternating worker processes: round r runs one round in a process importing xpnn
    from ``other`` and one from this tree (which goes first alternates)."""
    here = Path(__file__).resolve().parent.parent
    trees = {"before": other.resolve(), "after": here}
    raw = {label: {} for label in trees}
    for r in range(rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for label in order:
            env = dict(os.environ, PYTHONPATH=str(trees[label]))
            res = subprocess.run(
                [sys.executable, __file__, "--worker", "--rounds", "3", "-n", str(n),
                 "--nets", *nets],
                env=env, capture_output=True, text=True, check=True)
            for net, by_row in json.loads(res.stdout).items():
                for row, v in by_row.items():
                    raw[label].setdefault(net, {}).setdefault(row, []).extend(v)
    return raw


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("-n", type=int, default=200, help="steps per row per round")
    p.add_argument("--cprofile", action="store_true",
                   help="profile xpnn's torch SGD step on the first net instead")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--backend", default="torch", choices=["torch", "numpy"])
    p.add_argument("--versus", type=Path, help="another xpnn tree: before/after in one run")
    p.add_argument("--versus-commit", help="the commit the --versus tree holds (recorded)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(measure(args.nets, args.rounds, args.n)))
        return 0
    if args.cprofile:
        profile(args.nets[0], args.optimizer, TORCH if args.backend == "torch" else NUMPY,
                args.n * 10, 30)
        return 0
    stamp = time.strftime("%Y%m%dT%H%M%S")
    meta = {"machine": machine(), "commit": commit(Path(__file__).parent),
            "xpnn": str(Path(xpnn.__file__).parent), "rounds": args.rounds,
            "steps_per_round": args.n,
            "nets": {k: {"sizes": list(NETS[k].sizes), "batch": NETS[k].batch}
                     for k in args.nets}}
    if args.versus:
        raw = versus(args.versus, args.nets, args.rounds, args.n)
        meta["before_tree"] = str(args.versus)
        meta["before_commit"] = args.versus_commit or commit(args.versus)
        result = {"meta": meta, "raw_us": raw,
                  "summary": {label: summary(r) for label, r in raw.items()}}
        for label, s in result["summary"].items():
            print_summary(f"{label} ({'--versus tree' if label == 'before' else 'this tree'})",
                          s)
        name = f"host-overhead-versus-{stamp}.json"
    else:
        raw = measure(args.nets, args.rounds, args.n)
        result = {"meta": meta, "raw_us": raw, "summary": summary(raw)}
        print_summary("host overhead per eager step (medians over rounds)", result["summary"])
        name = f"host-overhead-{stamp}.json"
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {RESULTS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
