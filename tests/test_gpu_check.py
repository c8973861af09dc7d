"""bench/gpu_check.py without a GPU: its CPU dry run (the same code path, a worker
process per backend, on tiny nets), the clear exit without a GPU, the exit status of
a correctness failure, and the bench targets' XPNN_BENCH_BACKENDS filter."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import benchcommon  # noqa: E402
import gpu_check  # noqa: E402


def test_the_dry_run_checks_and_reports(tmp_path):
    """The NumPy worker end to end: every optimizer's compiled step checked against
    eager, every timing row present (as information: no GPU targets on a CPU), the
    JSON and Markdown reports written, exit 0."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--backends", "numpy",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (report,) = tmp_path.glob("gpu-check-dryrun-*.json")
    data = json.loads(report.read_text())
    rows = data["rows"]
    correctness = [r for r in rows if r["kind"] == "correctness"]
    assert len(correctness) == 9 and all(r["ok"] is True for r in correctness)
    numgrad = [r for r in correctness if r["check"].startswith("numerical gradient")]
    assert [r["check"].split(",")[1].strip() for r in numgrad] == [
        "eager vs NumPy reference (float64", "compile=True vs NumPy reference (float64",
        "compile=True vs eager (float64"]
    assert all(r["value"] <= 1e-12 for r in correctness)
    checks = {r["check"] for r in rows}
    for name in ("eager step, seed 12-6-3 b8", "compile=True step, wide 12-10-10-3 b16",
                 "numerical gradient, seed (float64)"):
        assert name in checks
    timings = [r for r in rows if r["unit"] == "us"]
    assert timings and all(r["ok"] is None and r["value"] > 0 for r in timings)
    meta = data["meta"]
    assert meta["dry_run"] and meta["devices"] == {"numpy": "cpu"} and meta["commit"]
    assert meta["versions"]["numpy"]
    md = report.with_suffix(".md").read_text()
    assert "CPU dry run" in md and "| numpy | compile=True == eager, sgd" in md


def test_without_a_gpu_it_says_so(monkeypatch, capsys):
    monkeypatch.setattr(benchcommon, "available_targets", lambda: [
        benchcommon.Target("numpy", "numpy", None, False)])
    assert gpu_check.main([]) == 3
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--dry-run" in err and "Traceback" not in err


def test_a_correctness_failure_or_a_dead_worker_fails_the_run(monkeypatch, tmp_path, capsys):
    def fake_worker(name, args, mnist):
        rows = [gpu_check.row(name, "compile=True == eager, sgd", 3e-9, "rel", "<= 1e-12",
                              name != "numpy", "correctness"),
                gpu_check.row(name, "compile=True step", 500.0, "us", "<= 80 us", False)]
        return {"rows": rows, "device": "cpu"}

    monkeypatch.setattr(gpu_check, "run_worker", fake_worker)
    args = ["--dry-run", "--out", str(tmp_path)]
    assert gpu_check.main([*args, "--backends", "torch"]) == 0  # a missed speed target
    assert gpu_check.main([*args, "--backends", "numpy,torch"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 correctness failure" in out


def test_derived_rows_compare_with_pytorch_in_the_same_run():
    rows = [dict(gpu_check.row("torch-cuda", "x", 325.0, "us"), key="torch-eager:seed"),
            dict(gpu_check.row("torch-cuda", "x", 617.0, "us"), key="eager:seed"),
            dict(gpu_check.row("cupy", "x", 300.0, "us"), key="eager:seed"),
            dict(gpu_check.row("torch-cuda", "x", 134.0, "us"), key="compile=True:seed"),
            dict(gpu_check.row("torch-cuda", "x", 90.0, "us"),
                 key="compile=reduce-overhead:seed"),
            dict(gpu_check.row("torch-cuda", "x", 75.0, "us"), key="compile=fused:seed"),
            dict(gpu_check.row("torch-cuda", "x", 272.0, "us"), key="compile=True:wide"),
            dict(gpu_check.row("torch-cuda", "x", 494.0, "us"),
                 key="compile=reduce-overhead:wide"),
            dict(gpu_check.row("torch-cuda", "x", 2706.0, "us"), key="numgrad:compiled"),
            dict(gpu_check.row("torch-cuda", "x", 400.0, "us"),
                 key="numgrad:compile=fused")]
    out = gpu_check.derived_rows(rows, dry_run=False)
    derived = {(r["backend"], r["check"]): r for r in out}
    assert derived[("torch-cuda", "eager seed step <= PyTorch eager autograd (same run)")][
        "ok"] is False
    assert derived[("cupy", "eager seed step <= PyTorch eager autograd (same run)")]["ok"]
    fastest = {r["check"].split(", ")[1]: r for r in out
               if r["check"].startswith("fastest torch compile mode")}
    assert fastest.keys() == {"seed", "wide", "numerical step"}
    assert fastest["seed"]["value"] == 75.0 and fastest["seed"]["note"] == (
        "fused: graph 134.0 us, fused 75.0 us, reduce-overhead 90.0 us")
    assert fastest["wide"]["note"] == (  # a mode not timed is left out
        "graph (the default): graph 272.0 us, reduce-overhead 494.0 us")
    assert fastest["numerical step"]["note"] == "fused: graph 2,706.0 us, fused 400.0 us"


@pytest.mark.parametrize("wanted,has_jax", [("numpy,torch-cuda", False), ("jax", True),
                                            ("", True)])
def test_jax_rows_follow_xpnn_bench_backends(monkeypatch, wanted, has_jax):
    """The bench ran JAX rows under XPNN_BENCH_BACKENDS=cupy,torch-cuda (issue 15);
    a JAX target now says which device it runs on."""
    pytest.importorskip("jax")
    monkeypatch.setenv("XPNN_BENCH_BACKENDS", wanted)
    target = benchcommon.jax_target()
    assert (target is not None) == has_jax
    if target is not None:
        assert target.device in ("cpu:0", "cuda:0") and target.gpu == (target.device != "cpu:0")


class _Clock:
    """A fake ``time.perf_counter``: each call of ``fn`` costs the next of ``costs``."""

    def __init__(self, costs):
        self.now, self.costs, self.calls = 0.0, costs, 0

    def __call__(self):
        return self.now

    def fn(self):
        self.now += self.costs(self.calls)
        self.calls += 1


def test_timing_leaves_the_first_slow_calls_out(monkeypatch):
    """PyTorch's first eager autograd steps in a process take 3-15 ms against ~0.2 ms
    later: five 10 ms calls, then 100 us ones, time at 100 us (a single warm-up call
    left the slow ones in the rounds: 10,000 us). A call time that never settles still
    ends the warm-up once its budget is spent."""
    clock = _Clock(lambda i: 10e-3 if i < 5 else 100e-6)
    monkeypatch.setattr(gpu_check.time, "perf_counter", clock)
    assert gpu_check._time_us(clock.fn, 3, 0.05) == pytest.approx(100.0)
    jumpy = _Clock(lambda i: 1e-3 if i % 2 else 5e-3)
    monkeypatch.setattr(gpu_check.time, "perf_counter", jumpy)
    us = gpu_check._time_us(jumpy.fn, 3, 0.05)
    assert 1e3 <= us <= 5e3 and jumpy.calls < 100


def test_a_worker_stopped_for_time_reports_what_it_finished(tmp_path):
    """The parent stops a worker at its time limit: the run fails, with a row saying
    so, and the rows of the sections the worker had finished are kept. How far a
    worker gets in 0.5 s depends on the machine (an idle one finishes the correctness
    section; a fast one with few backends installed can finish every section and still
    be stopped before its process exits), so any outcome is accepted, each checked: the
    run fails either way."""
    args = argparse.Namespace(dry_run=True, timeout=0.5)
    data = gpu_check.run_worker("numpy", args, mnist=False)
    (last,) = [r for r in data["rows"] if r["check"] == "worker"]
    assert last["kind"] == "error" and last["ok"] is False
    match = re.fullmatch(r"timed out after 0\.5 s \(finished: (\w+)\)", last["note"])
    assert match, last["note"]
    kept = [r for r in data["rows"] if r["check"] != "worker"]
    assert bool(kept) == (match[1] != "nothing"), (match[1], kept)


def test_numerical_rows_tell_a_wrong_compiled_gradient_from_rounding(monkeypatch):
    """The numerical-gradient rows on the NumPy worker: eager and compiled within the
    rounding bound of the reference (here identical); a compiled gradient off by 10
    such bounds in one element fails its two rows and leaves the eager row passing, so
    a GPU run says which side is wrong."""
    import benchcommon as bc

    from xpnn.training import step as step_module

    gpu_check.NETS.update(gpu_check._nets(dry_run=True))
    target = bc.Target("numpy", "numpy", None, False)
    rows = {r["check"]: r for r in gpu_check.check_numerical_compiled(target)}
    names = [c for c in rows if c.startswith("numerical gradient")]
    assert len(names) == 3 and all(rows[c]["ok"] is True for c in names)
    tol = float(rows[names[0]]["target"].split()[-1])
    # the bound of the doc: 4 * N * eps * |L| / h (8 rows, |L| ~ log 3, h = 1e-5)
    assert 1e-10 < tol < 1e-9

    plain = step_module.numerical_gradient_fn

    def skewed(net, h, executor=None, compile=False):
        fn = plain(net, h, executor, compile)
        if not compile:
            return fn

        def wrong(params, x, T):
            g = dict(fn(params, x, T))
            g["b2"] = g["b2"] + 10 * tol * (net.xp.arange(3) == 1)
            return g

        return wrong

    monkeypatch.setattr(step_module, "numerical_gradient_fn", skewed)
    rows = {r["check"]: r for r in gpu_check.check_numerical_compiled(target)}
    assert [rows[c]["ok"] for c in names] == [True, False, False]
    assert rows[names[1]]["value"] == pytest.approx(10 * tol)
