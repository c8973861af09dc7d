"""Distributed benchmarks, side by side in one run (``python bench/dist_bench.py``;
needs ``pip install -e '.[mpi,dask]'``).

1. Numerical-gradient step of the seed net (784-50-10 sigmoid, float64, batch 100)
   on 1 vs 2 workers/ranks: in-process, ProcessPoolExecutor, Dask LocalCluster
   (worker processes), MPI ranks (Allgatherv). Every process is pinned to one BLAS
   thread, so K workers use K cores. The in-process configurations are timed in
   interleaved rounds (round r times every configuration once) so that a load change
   on a shared machine hits them alike.
   glibc's heap trimming is switched off in every process: the workers and the MPI
   ranks do it themselves (``xpnn.dist.executor.keep_freed_memory``), and this driver
   does it for the 1-process baseline, so the comparison is like for like. A user's
   own process running ``net.numerical_gradient`` keeps glibc's default (about 3x
   slower on the seed net); the table's 1-process row says which setting it ran with.
2. Data-parallel backprop under mpiexec -n 1 and -n 2: gradient, one allreduce_mean
   (pack + Allreduce + unpack of 39,761 float64: 39,760 gradient values and the
   rank's weight) and a whole step.
3. The 10,000-iteration numerical-gradient run (the post's "17 hours") on N
   machines, extrapolated from measured pieces: every chunk's compute time on one
   core, the per-step work each rank repeats (forward cache, assembly, update), and
   the Allgatherv: measured between 2 local ranks, and for N machines a stated ring
   model (latency and bandwidth below are assumptions, printed with the table).

Raw timings, medians, load averages and machine info go to
bench/results/dist-<stamp>.json; a Markdown summary to the .md next to it.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before NumPy loads; inherited by every worker and rank

import datetime  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dist_rank import _timed, seed_problem  # noqa: E402

import xpnn  # noqa: E402
from xpnn.dist import numerical_gradient, partition  # noqa: E402
from xpnn.dist.executor import keep_freed_memory  # noqa: E402
from xpnn.nn import numerical as xnum  # noqa: E402

ROUNDS = int(os.environ.get("XPNN_DIST_ROUNDS", "5"))
ITERATIONS = 10_000  # the post's run
#: network model for N > 2 machines (assumptions, not measurements): 10 GbE
LATENCY_S, BANDWIDTH_BPS = 50e-6, 1.25e9


def _mpiexec() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else "mpiexec"


def run_mpi(mode: str, ranks: int, reps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        subprocess.run([_mpiexec(), "-n", str(ranks), sys.executable, str(HERE / "dist_rank.py"),
                        mode, str(reps), out], check=True, timeout=600)
        with open(out) as f:
            return json.load(f)


def timed_chunk_task(payload, chunks):
    """chunk_task on a worker, with the worker's wall and CPU seconds."""
    from xpnn.dist.executor import chunk_task

    wall, cpu = time.perf_counter(), time.process_time()
    chunk_task(payload, chunks)
    return time.perf_counter() - wall, time.process_time() - cpu


def worker_seconds(net, x, T, pool, n_workers: int) -> list:
    """Wall and CPU seconds of each worker's share (the partition numerical_gradient
    uses), submitted together."""
    from xpnn.dist.executor import _payload

    groups = partition(net, xnum.plan(net, x.shape[0]), n_workers)
    payload = _payload(net, x, T, net.default_h())
    return [f.result() for f in [pool.submit(timed_chunk_task, payload, g) for g in groups]]


def in_process_steps(net, x, T) -> dict:
    """Interleaved rounds of every in-process configuration; raw seconds per step."""
    from xpnn.dist.dask import dask_executor

    spawn = multiprocessing.get_context("spawn")
    configs = {}
    with ProcessPoolExecutor(1, mp_context=spawn) as pool1, \
            ProcessPoolExecutor(2, mp_context=spawn) as pool2, \
            dask_executor(n_workers=1) as dask1, dask_executor(n_workers=2) as dask2:
        runs = {
            "1 process (net.numerical_gradient)": lambda: net.numerical_gradient_prepared(x, T),
            "ProcessPoolExecutor, 1 worker": lambda: numerical_gradient(net, x, T, executor=pool1),
            "ProcessPoolExecutor, 2 workers": lambda: numerical_gradient(net, x, T,
                                                                         executor=pool2),
            "Dask LocalCluster, 1 worker": lambda: numerical_gradient(net, x, T, executor=dask1),
            "Dask LocalCluster, 2 workers": lambda: numerical_gradient(net, x, T, executor=dask2),
        }
        for fn in runs.values():
            fn()  # warm-up: worker start, imports, caches
        configs = {name: [] for name in runs}
        shares = {"1 worker": [], "2 workers": []}
        for _ in range(ROUNDS):
            for name, fn in runs.items():
                configs[name].append(_timed(fn))
            shares["1 worker"].append(worker_seconds(net, x, T, pool1, 1))
            shares["2 workers"].append(worker_seconds(net, x, T, pool2, 2))
    return configs, shares


def chunk_times(net, x, T) -> tuple[list, dict]:
    """Each chunk's compute time on this core (median of 3), and the per-step work
    every rank repeats."""
    h = net.default_h()
    chunks = xnum.plan(net, x.shape[0])
    cache = xnum.forward_cache(net, x)
    times = []
    for c in chunks:
        times.append(statistics.median(
            _timed(lambda c=c: xnum.chunk_gradient(net, x, T, c, h, cache)) for _ in range(3)))
    parts = {k: [] for k in net.params}
    for c in chunks:
        parts[c.key].append(xnum.chunk_gradient(net, x, T, c, h, cache))
    grads = xnum.assemble(net, parts)
    fixed = {
        "forward_cache": statistics.median(_timed(lambda: xnum.forward_cache(net, x))
                                           for _ in range(5)),
        "assemble": statistics.median(_timed(lambda: xnum.assemble(net, parts))
                                      for _ in range(5)),
        "sgd_update": statistics.median(
            _timed(lambda: {k: v - 0.1 * grads[k] for k, v in net.params.items()})
            for _ in range(5)),
    }
    return list(zip(chunks, times, strict=True)), fixed


def scaling_table(net, timed_chunks, fixed, gather2_s) -> list[dict]:
    chunks = [c for c, _ in timed_chunks]
    cost = dict(zip(chunks, (t for _, t in timed_chunks), strict=True))
    per_step_fixed = sum(fixed.values())
    n_bytes = sum(c.stop - c.start for c in chunks) * 8
    rows = []
    for n in (1, 2, 4, 8, 16, 32, 64, 128):
        groups = partition(net, chunks, n)
        compute = max(sum(cost[c] for c in g) for g in groups)
        ring = 0.0 if n == 1 else (n - 1) * LATENCY_S + (n - 1) / n * n_bytes / BANDWIDTH_BPS
        # pessimistic: every one of the ring's n - 1 steps as slow as the whole
        # Allgatherv measured between 2 local ranks (which includes waiting for the
        # slower rank on this loaded machine)
        slow = (n - 1) * gather2_s
        step = per_step_fixed + compute + ring
        step_slow = per_step_fixed + compute + slow
        rows.append({"machines": n, "compute_s": compute, "fixed_s": per_step_fixed,
                     "allgatherv_model_s": ring, "allgatherv_pessimistic_s": slow,
                     "step_s": step, "run_hours": step * ITERATIONS / 3600,
                     "step_pessimistic_s": step_slow,
                     "run_hours_pessimistic": step_slow * ITERATIONS / 3600})
    for row in rows:
        row["speedup"] = rows[0]["step_s"] / row["step_s"]
        row["speedup_pessimistic"] = rows[0]["step_s"] / row["step_pessimistic_s"]
    return rows


def machine_info() -> dict:
    import dask
    import mpi4py

    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "node": platform.node(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__,
        "xpnn": xpnn.__version__, "mpi4py": mpi4py.__version__, "dask": dask.__version__,
        "blas_threads": os.environ["OMP_NUM_THREADS"],
        "loadavg_start": os.getloadavg(),
        "sched_autogroup": _read("/proc/sys/kernel/sched_autogroup_enabled"),
    }


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _med(values) -> float:
    return statistics.median(values)


def _autogroup_note(result) -> list:
    if result["machine"].get("sched_autogroup") != "1":
        return []
    return ["", "Linux autogroup scheduling is on here: the kernel shares the CPU between "
            "sessions first. ProcessPoolExecutor and Dask workers stay in this session and "
            "share its one slice, whereas mpiexec starts every rank in a session of its own; "
            "so on a busy machine only the MPI rows can show a 2-core speed-up (the workers' "
            "CPU seconds do halve)."]


def markdown(result: dict) -> str:
    lines = [f"# Distributed benchmarks, {result['machine']['date_utc']}", "",
             f"Machine: {result['machine']['cpu_count']} cores, load average "
             f"{result['machine']['loadavg_start'][0]:.1f} at start and "
             f"{result['machine']['loadavg_end'][0]:.1f} at the end (other jobs share "
             f"it: figures are medians of {result['rounds']} rounds). One BLAS thread per "
             f"process.", *_autogroup_note(result), "",
             "## Numerical-gradient step, seed net (784-50-10, float64, batch 100)", "",
             "| configuration | median s/step | min s/step | speed-up vs 1 (median) | "
             "(min) |", "|---|---:|---:|---:|---:|"]
    steps = result["numerical_step_s"]
    base = {"ProcessPool": "ProcessPoolExecutor, 1 worker", "Dask": "Dask LocalCluster, 1 worker",
            "MPI": "MPI, 1 rank (Allgatherv)", "1 process": "1 process (net.numerical_gradient)"}
    for name, values in steps.items():
        ref = next(v for k, v in base.items() if name.startswith(k))
        label = name
        if name == base["1 process"]:
            label = name[:-1] + ("; glibc trimming off by keep_freed_memory(), which a "
                                 "user's process does not do)"
                                 if result["machine"].get("keep_freed_memory")
                                 else "; glibc's default trimming)")
        lines.append(f"| {label} | {_med(values):.3f} | {min(values):.3f} | "
                     f"{_med(steps[ref]) / _med(values):.2f}x | "
                     f"{min(steps[ref]) / min(values):.2f}x |")
    shares = result.get("process_pool_worker_wall_cpu_s")
    if shares:
        lines += ["", "ProcessPoolExecutor workers, each one's share (medians over the rounds), "
                  "wall / CPU seconds:"]
        for name, rounds in shares.items():
            per = [f"{_med([r[i][0] for r in rounds]):.3f} / {_med([r[i][1] for r in rounds]):.3f}"
                   for i in range(len(rounds[0]))]
            lines.append(f"- {name}: {'; '.join(per)}")
    lines += ["", "MPI ranks, the parameter split itself (rank 0, medians): forward cache + own "
              "chunks, wall / CPU seconds:"]
    for n, d in result["mpi_numerical"].items():
        r0 = d["per_rank"][0]
        lines.append(f"- {n} rank(s): {r0['chunks']} chunks, {r0['values']} values, "
                     f"{r0['compute']:.3f} s wall / {r0['compute_cpu']:.3f} s CPU; Allgatherv "
                     f"{r0['allgatherv'] * 1e3:.2f} ms")
    ar = result["allreduce"]
    lines += ["", "## Data-parallel backprop step (seed net, batch 100 per rank)", "",
              "| ranks | gradient s | allreduce_mean s | whole step s |", "|---:|---:|---:|---:|"]
    for n, d in ar.items():
        r0 = d["per_rank"][0]
        lines.append(f"| {n} | {r0['gradient']:.5f} | {r0['allreduce_mean']:.6f} | "
                     f"{r0['step']:.5f} |")
    lines += ["", f"Allreduce payload: {ar['1']['per_rank'][0]['bytes']} bytes per step.", "",
              "## The 10,000-iteration numerical-gradient run on N machines (extrapolated)", "",
              f"Compute: each of the {result['scaling']['n_chunks']} chunks timed on one core "
              f"here, summed over the busiest rank's share (xpnn.dist.partition). Fixed: "
              f"forward cache + assembly + update, repeated on every rank. Allgatherv: "
              f"ring model with {LATENCY_S * 1e6:.0f} us latency and "
              f"{BANDWIDTH_BPS / 1e9:.2f} GB/s (assumed, 10 GbE); measured between 2 local "
              f"ranks: {result['scaling']['allgatherv_2_local_s'] * 1e3:.2f} ms (with the wait "
              f"for the slower rank); the pessimistic columns charge that for each of the "
              f"ring's N-1 steps.", "",
              "| machines | compute s | fixed s | Allgatherv s (model / pessimistic) | "
              "step s | run (model / pessimistic) | speed-up (model / pessimistic) |",
              "|---:|---:|---:|---:|---:|---:|---:|"]

    def span(hours):
        return f"{hours:.2f} h" if hours >= 1 else f"{hours * 60:.1f} min"

    for row in result["scaling"]["rows"]:
        lines.append(f"| {row['machines']} | {row['compute_s']:.4f} | {row['fixed_s']:.4f} | "
                     f"{row['allgatherv_model_s']:.5f} / {row['allgatherv_pessimistic_s']:.4f} | "
                     f"{row['step_s']:.4f} | {span(row['run_hours'])} / "
                     f"{span(row['run_hours_pessimistic'])} | {row['speedup']:.1f}x / "
                     f"{row['speedup_pessimistic']:.1f}x |")
    return "\n".join(lines) + "\n"


def main():
    # every process of every configuration runs with glibc's trimming off (the workers
    # and ranks do it themselves, see xpnn.dist.executor.keep_freed_memory), this one
    # for the 1-process row: like for like, but not what a user's process gets (the
    # row's label says so)
    info = machine_info()
    info["keep_freed_memory"] = keep_freed_memory()
    net, x, T = seed_problem()
    steps, shares = in_process_steps(net, x, T)
    mpi = {n: run_mpi("numerical", n, ROUNDS) for n in (1, 2)}
    for n, d in mpi.items():
        steps[f"MPI, {n} rank{'s' if n > 1 else ''} (Allgatherv)"] = d["per_rank"][0]["step_all"]
    allreduce = {str(n): run_mpi("allreduce", n, 50) for n in (1, 2)}
    timed_chunks, fixed = chunk_times(net, x, T)
    gather2 = max(r["allgatherv"] for r in mpi[2]["per_rank"])
    info["loadavg_end"] = os.getloadavg()
    result = {
        "machine": info,
        "rounds": ROUNDS,
        "numerical_step_s": steps,
        "process_pool_worker_wall_cpu_s": shares,
        "mpi_numerical": {str(n): d for n, d in mpi.items()},
        "allreduce": allreduce,
        "scaling": {
            "n_chunks": len(timed_chunks),
            "chunk_compute_total_s": sum(t for _, t in timed_chunks),
            "chunk_compute_s": [t for _, t in timed_chunks],
            "fixed_s": fixed,
            "allgatherv_2_local_s": gather2,
            "latency_s_assumed": LATENCY_S,
            "bandwidth_Bps_assumed": BANDWIDTH_BPS,
            "rows": scaling_table(net, timed_chunks, fixed, gather2),
        },
    }
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"dist-{stamp}"
    out.parent.mkdir(exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    text = markdown(result)
    out.with_suffix(".md").write_text(text)  # also: python bench/dist_bench.py --markdown X.json
    print(text)
    print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--markdown"]:  # re-render a saved run
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))
    else:
        main()
