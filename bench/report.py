"""Render a saved pytest-benchmark JSON of the ``bench/`` suite as Markdown tables and a
log-log scaling plot.

    python bench/report.py bench/results/cpu-20250101.json
    python bench/report.py FILE --markdown out.md --plot out.png

Every figure is a median over the benchmark's rounds (the rounds are listed). Numerical
gradients timed on a sample of the parameters are shown with their extrapolated
per-iteration time (``~``). Ratios are computed by matching records on net, dtype and
backend:

* ``eager ÷ xpnn``: PyTorch eager time over xpnn's (> 1: xpnn is faster); CPU figures are
  matched with eager PyTorch on the CPU, GPU figures with eager PyTorch on CUDA;
* ``xpnn ÷ floor``: xpnn over the GEMM floor of the same library (>= 1; array-api-strict
  is matched with NumPy's floor, as it runs on NumPy);
* ``xpnn ÷ plain``: xpnn over the same step hand-written in plain NumPy.

Only the standard library is needed for the tables; ``--plot`` needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict

__all__ = ["load", "render_markdown", "plot_scaling", "fit_slope", "main"]

TARGET_ORDER = ("numpy", "torch", "array_api_strict", "cupy", "torch-cuda")
NET_ORDER = ("moons", "seed", "three-hidden", "wide")
ORIGINAL_POST_HOURS = 17.0
BOOK_ITERS = 10_000


# ------------------------------------------------------------------------- loading


class Record:
    """One benchmark: its extra_info plus the time per iteration (seconds)."""

    def __init__(self, bench: dict):
        self.raw = bench
        self.info = bench.get("extra_info") or {}
        self.stats = bench.get("stats") or {}
        est = self.info.get("estimate_median_s")
        self.sampled = bool(self.info.get("sampled")) and est is not None
        self.time = float(est) if self.sampled else float(self.stats.get("median", float("nan")))
        self.rounds = int(self.info.get("estimate_rounds") or self.stats.get("rounds") or 0)
        self.iqr = self.stats.get("iqr")

    def __getattr__(self, name):
        try:
            return self.__dict__["info"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, key, default=None):
        return self.info.get(key, default)


def load(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    records = [Record(b) for b in data.get("benchmarks", [])]
    return {"data": data, "records": records}


def _order(seq, key, order):
    def rank(r):
        value = key(r)
        return order.index(value) if value in order else len(order)

    return sorted(seq, key=rank)


# ------------------------------------------------------------------------ formatting


def fmt_time(s) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs" if s >= 1e-4 else f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    if s < 3 * 86400:
        return f"{s / 3600:.3g} h"
    return f"{s / 86400:.3g} days"


def fmt_ratio(x) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.2f}×" if x < 100 else f"{x:.3g}×"


def _t(r: Record | None) -> str:
    if r is None:
        return "n/a"
    return ("~" if r.sampled else "") + fmt_time(r.time)


def _ratio(a: Record | None, b: Record | None):
    if a is None or b is None or not b.time:
        return None
    return a.time / b.time


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


# ------------------------------------------------------------------------- indexing


class Index:
    def __init__(self, records):
        self.step = {}
        self.sweep = defaultdict(dict)
        self.e2e_train = []
        self.e2e_num = []
        self.compiled = {}  # (net, target, method) -> record of the "compiled" group
        for r in records:
            kind = r.get("kind", "step")
            if kind == "step" and str(r.raw.get("group") or "").startswith("compiled"):
                self.compiled[(r.get("net"), r.get("target"), r.get("method"))] = r
            elif kind == "step":
                self.step[(r.get("net"), r.get("dtype"), r.get("target"), r.get("method"))] = r
            elif kind == "sweep":
                key = (r.get("method"), r.get("target"), r.get("dtype"))
                self.sweep[key][r.get("n_params")] = r
            elif kind == "e2e-train":
                self.e2e_train.append(r)
            elif kind == "e2e-numerical":
                self.e2e_num.append(r)

    def get(self, net, dtype, target, method):
        return self.step.get((net, dtype, target, method))

    def eager_for(self, net, dtype, target):
        gpu = target in ("cupy", "torch-cuda")
        return self.get(net, dtype, "torch-cuda" if gpu else "torch", "torch-eager")

    def floor_for(self, net, dtype, target):
        lib = "numpy" if target == "array_api_strict" else target
        return self.get(net, dtype, lib, "gemm-floor")

    def plain_for(self, net, dtype, target):
        if target in ("numpy", "array_api_strict"):
            return self.get(net, dtype, "numpy", "plain-numpy")
        return None

    def keys(self, method):
        ks = [k for k in self.step if k[3] == method]
        return sorted(
            ks,
            key=lambda k: (
                NET_ORDER.index(k[0]) if k[0] in NET_ORDER else 99,
                k[1],
                TARGET_ORDER.index(k[2]) if k[2] in TARGET_ORDER else 99,
            ),
        )


# ------------------------------------------------------------------------- slopes


def fit_slope(points) -> float | None:
    """Least-squares slope of log(time) against log(n_params)."""
    pts = [(math.log(n), math.log(t)) for n, t in points if n and t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _sweep_lines(index):
    lines = []
    for (method, target, dtype), by_n in index.sweep.items():
        pts = sorted((n, r) for n, r in by_n.items())
        lines.append((method, target, dtype, pts))
    method_rank = {"backprop": 0, "numerical": 1, "numerical-loop": 2}
    lines.sort(key=lambda x: (method_rank.get(x[0], 9),
                              TARGET_ORDER.index(x[1]) if x[1] in TARGET_ORDER else 9, x[2]))
    return lines


# ------------------------------------------------------------------------ markdown


def _machine(data) -> list[str]:
    mi = data.get("machine_info") or {}
    ci = data.get("commit_info") or {}
    cpu = mi.get("cpu_model") or (mi.get("cpu") or {}).get("brand_raw") or mi.get("processor")
    out = [f"- CPU: {cpu} ({mi.get('cpu_count')} logical cores)"]
    gpu = mi.get("gpu")
    if gpu:
        desc = gpu.get("name", "?")
        extra = [f"{k} {gpu[k]}" for k in ("memory_gib", "cuda_driver_version",
                                           "cuda_runtime_version", "torch_cuda") if k in gpu]
        out.append(f"- GPU: {desc}" + (f" ({', '.join(extra)})" if extra else ""))
        if gpu.get("nvidia_smi"):
            out.append(f"- nvidia-smi: {'; '.join(gpu['nvidia_smi'])}")
    else:
        out.append("- GPU: none (CuPy and PyTorch CUDA rows absent)")
    libs = mi.get("libraries") or {}
    if libs:
        out.append("- Libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v))
    if mi.get("blas"):
        out.append("- BLAS/threads: " + ", ".join(f"{k} {v}" for k, v in mi["blas"].items()))
    out.append(f"- Python {mi.get('python_version')} ({mi.get('python_implementation')}), "
               f"{mi.get('system')} {mi.get('release')}")
    if mi.get("loadavg_start") is not None:
        out.append(f"- Load average at start / end: {mi.get('loadavg_start')} / "
                   f"{mi.get('loadavg_end')} (a shared machine: higher load, noisier figures)")
    when = data.get("datetime")
    if when or ci:
        out.append(f"- Run: {when}; commit {str(ci.get('id', '?'))[:10]}"
                   f"{' (dirty tree)' if ci.get('dirty') else ''}")
    return out


def _step_section(ix: Index) -> list[str]:
    rows = []
    for key in ix.keys("backprop"):
        net, dtype, target, _ = key
        r = ix.step[key]
        eager, floor, plain = ix.eager_for(*key[:3]), ix.floor_for(*key[:3]), ix.plain_for(*key[:3])
        gflops = r.get("step_gflop")
        rate = f"{gflops / r.time:.3g}" if gflops and r.time else "n/a"
        rows.append([
            net, dtype, target, _t(r), r.rounds, _t(eager),
            fmt_ratio(_ratio(eager, r)), _t(floor), fmt_ratio(_ratio(r, floor)),
            _t(plain), fmt_ratio(_ratio(r, plain)), rate,
        ])
    if not rows:
        return []
    out = [
        "## Training step (backprop gradient + SGD update)",
        "",
        "Median time per iteration. `eager ÷ xpnn` > 1: xpnn is faster than PyTorch eager "
        "autograd doing the identical step. `xpnn ÷ floor`: over the step's matrix products "
        "alone. `xpnn ÷ plain`: over the same maths in plain NumPy. GFLOP/s counts the "
        "matrix products only.",
        "",
    ]
    out += _table(
        ["net", "dtype", "backend", "xpnn", "rounds", "torch eager", "eager ÷ xpnn",
         "GEMM floor", "xpnn ÷ floor", "plain NumPy", "xpnn ÷ plain", "GFLOP/s"],
        rows,
    )
    peers = []
    for method in ("torch-eager", "gemm-floor", "plain-numpy"):
        for key in ix.keys(method):
            r = ix.step[key]
            gf = r.get("gflop")
            peers.append([method, key[0], key[1], key[2], _t(r), r.rounds,
                          f"{gf / r.time:.3g}" if gf and r.time else ""])
    if peers:
        out += ["", "Peers:", ""]
        out += _table(["peer", "net", "dtype", "library", "median", "rounds", "GFLOP/s"], peers)
    return out


#: rows of the compiled-step table: (library, method, what it is)
COMPILED_ROWS = (
    ("numpy", "backprop", "xpnn step (make_step, eager)"),
    ("numpy", "gradient-update", "bare gradient + SGD update (the step it replaced)"),
    ("numpy", "gemm-floor", "GEMM floor"),
    ("torch", "torch-eager", "PyTorch eager autograd"),
    ("torch", "backprop", "xpnn step, eager"),
    ("torch", "backprop-compiled", "xpnn step, compile=True (torch.compile)"),
    ("torch", "gemm-floor", "GEMM floor"),
    ("jax", "backprop-compiled", "xpnn step, compile=True (jax.jit)"),
    ("jax", "gemm-floor", "GEMM floor (one jitted function)"),
)


def _compiled_section(ix: Index) -> list[str]:
    rows = []
    for net in NET_ORDER:
        for lib, method, what in COMPILED_ROWS:
            r = ix.compiled.get((net, lib, method))
            if r is None:
                continue
            floor = ix.compiled.get((net, lib, "gemm-floor"))
            rows.append([net, lib, what, _t(r), r.rounds, fmt_ratio(_ratio(r, floor))])
    if not rows:
        return []
    return [
        "## Compiled step (issue 8), float32",
        "",
        "Medians of one side-by-side run (the `compiled` group). `÷ floor`: over the "
        "step's matrix products alone in the same library.",
        "",
    ] + _table(["net", "library", "step", "median", "rounds", "÷ floor"], rows)


def _issue8_rows(ix: Index) -> list[list[str]]:
    """Issue 8's targets, from the compiled group."""
    if not ix.compiled:
        return []

    def get(net, lib, method):
        return ix.compiled.get((net, lib, method))

    def verdict(x, ok):
        return "n/a" if x is None else ("met" if ok(x) else "MISSED")

    rows = []
    for net, bound in (("seed", 1.3), ("wide", 1.15)):
        eager, comp = get(net, "torch", "torch-eager"), get(net, "torch", "backprop-compiled")
        x = _ratio(eager, comp)
        rows.append([f"{net} net: compiled torch step ≥ {bound}× faster than eager autograd",
                     f"{_t(comp)} vs {_t(eager)}: {fmt_ratio(x)}",
                     verdict(x, lambda v, b=bound: v >= b)])
    jax, floor = get("wide", "jax", "backprop-compiled"), get("wide", "jax", "gemm-floor")
    x = _ratio(jax, floor)
    rows.append(["wide net: jitted JAX step within 1.2× of the JAX GEMM floor",
                 f"{_t(jax)} vs {_t(floor)}: {fmt_ratio(x)}", verdict(x, lambda v: v <= 1.2)])
    step, floor = get("seed", "numpy", "backprop"), get("seed", "numpy", "gemm-floor")
    x = _ratio(step, floor)
    rows.append(["seed net: NumPy step ≤ 1.25× the GEMM floor",
                 f"{_t(step)} vs {_t(floor)}: {fmt_ratio(x)}", verdict(x, lambda v: v <= 1.25)])
    for net in ("seed", "wide"):
        step, old = get(net, "numpy", "backprop"), get(net, "numpy", "gradient-update")
        x = _ratio(step, old)
        rows.append([f"{net} net: NumPy step vs the bare gradient + update it replaced",
                     f"{_t(step)} vs {_t(old)}: {fmt_ratio(x)}",
                     "(reported: " + verdict(x, lambda v: v <= 1.0) + ")"])
    return rows


def _numerical_section(ix: Index) -> list[str]:
    keys = sorted(set(ix.keys("numerical")) | set(ix.keys("numerical-loop")),
                  key=lambda k: (NET_ORDER.index(k[0]) if k[0] in NET_ORDER else 99, k[1],
                                 TARGET_ORDER.index(k[2]) if k[2] in TARGET_ORDER else 99))
    seen, rows = set(), []
    for net, dtype, target, _ in keys:
        if (net, dtype, target) in seen:
            continue
        seen.add((net, dtype, target))
        b = ix.get(net, dtype, target, "numerical")
        lo = ix.get(net, dtype, target, "numerical-loop")
        bp = ix.get(net, dtype, target, "backprop")
        rows.append([
            net, dtype, target, _t(b), b.rounds if b else "", _t(lo), lo.rounds if lo else "",
            fmt_ratio(_ratio(lo, b)), fmt_ratio(_ratio(b, bp)),
        ])
    if not rows:
        return []
    out = [
        "## Numerical gradient iterations",
        "",
        "`~`: timed on a fixed sample of each parameter tensor (whole chunks of perturbations "
        "for the batched method, single elements for the loop) and extrapolated per tensor "
        "(see `sample_plan` in the JSON); rounds are the extrapolated rounds. `loop ÷ batched` "
        "is the batched method's speed-up over the element loop.",
        "",
    ]
    out += _table(["net", "dtype", "backend", "numerical (batched)", "rounds",
                   "numerical-loop", "rounds", "loop ÷ batched", "batched ÷ backprop"], rows)
    return out


def _sweep_section(ix: Index) -> list[str]:
    lines = _sweep_lines(ix)
    if not lines:
        return []
    ns = sorted({n for *_, pts in lines for n, _ in pts})
    widths = {}
    for *_, pts in lines:
        for n, r in pts:
            widths[n] = r.get("width")
    header = ["H", "params"] + [f"{m} {t} {d}" for m, t, d, _ in lines]
    rows = []
    for n in ns:
        row = [widths.get(n), f"{n:,}"]
        for *_, pts in lines:
            rec = dict(pts).get(n)
            row.append(_t(rec))
        rows.append(row)
    out = [
        "## Scaling sweep: 784-H-10 (sigmoid, batch 100)",
        "",
        "Median time per iteration against the parameter count; `~` extrapolated from a "
        "sample. Slopes are least-squares fits of log(time) on log(params), over all widths "
        "and over H >= 128 (where fixed per-call costs no longer dominate).",
        "",
    ]
    out += _table(header, rows)
    slope_rows = []
    for m, t, d, pts in lines:
        allp = [(n, r.time) for n, r in pts]
        big = [(n, r.time) for n, r in pts if (r.get("width") or 0) >= 128]
        s_all, s_big = fit_slope(allp), fit_slope(big)
        slope_rows.append([m, t, d, f"{s_all:.2f}" if s_all is not None else "n/a",
                           f"{s_big:.2f}" if s_big is not None else "n/a"])
    out += ["", "Fitted log-log slopes (time ∝ params^slope):", ""]
    out += _table(["method", "backend", "dtype", "slope (all H)", "slope (H >= 128)"],
                  slope_rows)
    return out


def _e2e_section(ix: Index) -> list[str]:
    out = []
    if ix.e2e_train:
        rows = []
        for r in _order(ix.e2e_train, lambda r: r.get("target"), TARGET_ORDER):
            iters = r.get("iterations") or 0
            rows.append([
                r.get("target"), r.get("dtype"), fmt_time(r.time), r.rounds, iters,
                f"{r.get('epochs', 0):.1f}", f"{r.get('final_test_accuracy', 0):.4f}",
                "yes" if r.get("reached") else "NO",
                fmt_time(r.time / iters) if iters else "n/a",
            ])
        out += [
            "## End to end: seed TwoLayerNet to 0.94 MNIST test accuracy (backprop)",
            "",
            "784-50-10 sigmoid, init std 0.01, SGD lr 0.1, batch 100, test accuracy evaluated "
            "every 600 iterations (included in the wall time).",
            "",
        ]
        out += _table(["backend", "dtype", "wall time (median)", "rounds", "iterations",
                       "epochs", "test accuracy", "reached 0.94", "per iteration"], rows)
    if ix.e2e_num:
        rows = []
        for r in _order(ix.e2e_num, lambda r: r.get("target"), TARGET_ORDER):
            proj = r.get("projected_10k_iterations_s") or r.time * BOOK_ITERS
            rows.append([
                r.get("target"), r.get("dtype"), fmt_time(r.time), r.rounds,
                f"{1.0 / r.time:.2f}" if r.time else "n/a", fmt_time(proj),
                fmt_ratio(ORIGINAL_POST_HOURS * 3600 / proj) if proj else "n/a",
            ])
        out += [
            "",
            "## Numerical-gradient training (batched) on MNIST",
            "",
            f"A few iterations of the seed net trained by the batched numerical gradient; the "
            f"book's {BOOK_ITERS:,}-iteration run projected from the median (plus test "
            f"evaluations), against the {ORIGINAL_POST_HOURS:g} hours of the original post.",
            "",
        ]
        out += _table(["backend", "dtype", "s / iteration", "rounds", "iterations / s",
                       "10,000 iterations", "vs 17 h"], rows)
    loop = ix.get("seed", "float64", "numpy", "numerical-loop")
    if loop is not None and out:
        out += ["", f"For comparison, the element-by-element loop on the seed net (NumPy, "
                f"float64) takes {_t(loop)} per iteration: {fmt_time(loop.time * BOOK_ITERS)} "
                f"for {BOOK_ITERS:,} iterations."]
    return out


def _targets_section(ix: Index) -> list[str]:
    rows = []

    def verdict(ok):
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    for net in ("seed", "wide"):
        r = ix.get(net, "float32", "numpy", "backprop")
        eager = ix.eager_for(net, "float32", "numpy")
        x = _ratio(eager, r)
        rows.append([f"{net} net, float32 CPU: xpnn (NumPy) ≥ 1.15× faster than PyTorch eager",
                     f"{_t(r)} vs {_t(eager)}: {fmt_ratio(x)}",
                     verdict(None if x is None else x >= 1.15)])
        rt = ix.get(net, "float32", "torch", "backprop")
        xt = _ratio(eager, rt)
        if rt is not None:
            rows.append([f"{net} net, float32 CPU: xpnn on its PyTorch backend vs PyTorch eager",
                         f"{_t(rt)} vs {_t(eager)}: {fmt_ratio(xt)}",
                         "(reported: " + verdict(None if xt is None else xt >= 1.15) + ")"])
    for net, bound in (("wide", 1.1), ("seed", 1.5)):
        r = ix.get(net, "float32", "numpy", "backprop")
        floor = ix.floor_for(net, "float32", "numpy")
        x = _ratio(r, floor)
        rows.append([f"{net} net, float32 CPU: xpnn (NumPy) within {bound}× of the GEMM floor",
                     f"{_t(r)} vs {_t(floor)}: {fmt_ratio(x)}",
                     verdict(None if x is None else x <= bound)])
    for net in ("seed", "wide"):
        r = ix.get(net, "float32", "numpy", "backprop")
        plain = ix.plain_for(net, "float32", "numpy")
        x = _ratio(r, plain)
        rows.append([f"{net} net, float32: array-API overhead, xpnn-NumPy ÷ plain NumPy",
                     f"{_t(r)} vs {_t(plain)}: {fmt_ratio(x)}", "(reported)"])
    b = ix.get("seed", "float64", "numpy", "numerical")
    lo = ix.get("seed", "float64", "numpy", "numerical-loop")
    x = _ratio(lo, b)
    rows.append(["seed net, float64 CPU: batched numerical ≥ 10× faster than the element loop",
                 f"{_t(lo)} vs {_t(b)}: {fmt_ratio(x)}",
                 verdict(None if x is None else x >= 10)])
    rows += _issue8_rows(ix)
    if all(row[1].startswith("n/a") for row in rows):
        return []
    return ["## Targets (reported, not gated)", ""] + _table(["target", "measured", "verdict"],
                                                             rows)


def render_markdown(loaded: dict, title: str | None = None) -> str:
    data, records = loaded["data"], loaded["records"]
    ix = Index(records)
    lines = [f"# {title or 'xpnn benchmarks'}", ""]
    lines += _machine(data)
    for section in (_targets_section(ix), _compiled_section(ix), _step_section(ix),
                    _numerical_section(ix),
                    _sweep_section(ix), _e2e_section(ix)):
        if section:
            lines += [""] + section
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- plot


def plot_scaling(loaded: dict, path: str) -> bool:
    """Log-log time per iteration vs parameter count of the sweep, one line per
    method x backend x dtype. Returns False when the file holds no sweep."""
    ix = Index(loaded["records"])
    lines = _sweep_lines(ix)
    if not lines:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"backprop": "tab:blue", "numerical": "tab:orange", "numerical-loop": "tab:red"}
    styles = {"numpy": "-", "torch": "--", "cupy": "-.", "torch-cuda": ":",
              "array_api_strict": (0, (1, 1))}
    markers = {"numpy": "o", "torch": "s", "cupy": "^", "torch-cuda": "v",
               "array_api_strict": "d"}
    fig, ax = plt.subplots(figsize=(8.5, 6), dpi=120)
    for method, target, dtype, pts in lines:
        ns = [n for n, _ in pts]
        ts = [r.time for _, r in pts]
        slope = fit_slope(list(zip(ns, ts, strict=True)))
        label = f"{method} · {target} {dtype}" + (f" (slope {slope:.2f})" if slope else "")
        color = colors.get(method, "gray")
        ax.plot(ns, ts, linestyle=styles.get(target, "-"), color=color, label=label,
                linewidth=1.6)
        for n, r in pts:
            ax.plot([n], [r.time], marker=markers.get(target, "o"), color=color,
                    markerfacecolor="white" if r.sampled else color, markersize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (784-H-10, H = 8 … 1024)")
    ax.set_ylabel("seconds per training iteration (median)")
    ax.set_title("xpnn: time per iteration vs parameter count")
    ax.grid(True, which="both", alpha=0.3)
    ax.plot([], [], "o", color="gray", markerfacecolor="white",
            label="hollow marker: extrapolated from a sample")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/report.py",
        description="Markdown tables (and a log-log scaling plot) from a saved "
                    "pytest-benchmark JSON of the xpnn bench suite.",
    )
    parser.add_argument("file", help="pytest-benchmark JSON (--benchmark-json output)")
    parser.add_argument("--markdown", metavar="OUT.md", help="also write the tables here")
    parser.add_argument("--plot", metavar="OUT.png", help="write the scaling plot here")
    parser.add_argument("--title", help="heading of the Markdown report")
    args = parser.parse_args(argv)
    try:
        loaded = load(args.file)
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    text = render_markdown(loaded, args.title)
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.plot:
        if not plot_scaling(loaded, args.plot):
            print(f"no scaling sweep in {args.file}: {args.plot} not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
