"""Real ``mpiexec -n 2`` runs (tests/dist_rank_script.py), each under a 60 s timeout so
a hang fails the test instead of stalling CI. Skipped without mpi4py and mpiexec
(``pip install 'xpnn[mpi]'``). The same scenarios over torch.distributed (Gloo on
the CPU, NCCL with two GPUs) are in test_dist_torch.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import dist_launch
import pytest
from helpers import MARKED_MAIN, default_signals

from xpnn import checkpoint
from xpnn.backend import available_backends
from xpnn.training import History

pytest.importorskip("mpi4py")
TIMEOUT = dist_launch.TIMEOUT


def run_ranks(scenario, tmp_path, n=2, backend="numpy", device=""):
    return dist_launch.run_ranks(dist_launch.mpiexec, scenario, tmp_path, n,
                                 env={"XPNN_TEST_BACKEND": backend, "XPNN_TEST_DEVICE": device,
                                      "JAX_ENABLE_X64": "1"})


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("backend, device",
                         [("numpy", ""), ("torch", ""), ("torch", "cuda"), ("jax", "")],
                         ids=["numpy", "torch", "torch-cuda", "jax"])
def test_collectives_shards_replicas_and_parameter_parallel_gradient(tmp_path, backend, device):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    if device == "cuda" and not _torch_cuda():
        pytest.skip("torch sees no CUDA device")
    proc, outs, _ = run_ranks("collectives", tmp_path, backend=backend, device=device)
    _ok(proc)
    r0, r1 = outs
    assert r0["backend"] == backend and ("cuda" in r0["device"]) == (device == "cuda")
    assert (r0["rank"], r0["size"], r1["rank"]) == (0, 2, 1)
    for out in outs:
        assert out["mean_rel_err"] <= 1e-12  # uneven shards (7 + 6 rows) are exact
        assert out["sum"] == [2.0, 2.0]
        assert out["gathered"] == [0.0, 1.0, 0.0, 1.0, 2.0]
        assert out["sgd_rel_err"] <= 1e-12
        assert out["numerical_rel_err"] <= 1e-12
    assert r0["digest"] == r1["digest"]  # bitwise-identical replicas after 5 steps
    assert r0["numerical_max_abs_diff"] == r1["numerical_max_abs_diff"]


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_train_with_mpi_comm_matches_single_process(tmp_path, backend):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    proc, outs, _ = run_ranks("train", tmp_path, backend=backend)
    _ok(proc)
    assert outs[0]["digest"] == outs[1]["digest"]  # replicas stay bitwise identical
    for out in outs:
        assert out["train_rel_err"] <= 1e-12
        assert out["loss_diff"] <= 1e-12 and out["acc_diff"] <= 1e-12  # reduced evaluation
    # only rank 0 shows progress: one summary line, not two
    assert (proc.stdout + proc.stderr).count("trained 6 iterations") == 1, proc.stdout


def test_interrupted_mpi_run_resumes_bitwise_on_every_rank(tmp_path):
    proc, outs, _ = run_ranks("resume", tmp_path)
    _ok(proc)
    assert [o["shard_rows"] for o in outs] == [21, 20]  # the ranks' epochs differ
    for out in outs:
        assert out["resumed_at"] == [7]
        assert out["same_params"] and out["same_optimizer_state"] and out["same_history"]
    assert outs[0]["digest"] == outs[1]["digest"]


@pytest.mark.parametrize("scenario", ["raise_on_one", "die_on_one"])
def test_a_failing_rank_ends_every_rank(tmp_path, scenario):
    proc, outs, seconds = run_ranks(scenario, tmp_path)
    assert proc.returncode != 0
    assert outs == [None, None]  # rank 0 never got past the collective
    assert seconds < TIMEOUT
    text = proc.stdout + proc.stderr
    if scenario == "raise_on_one":
        assert "boom on purpose" in text
        assert "rank 1 of 2 failed (RuntimeError: boom on purpose); aborting all ranks" in text
    else:
        # mpiexec (MPICH's hydra) saw the SIGKILL, said so and killed rank 0
        assert "BAD TERMINATION" in text and "signal 9" in text, text


def test_replicas_that_differ_are_refused_on_every_rank(tmp_path):
    proc, outs, _ = run_ranks("different_replicas", tmp_path)
    assert proc.returncode != 0
    assert "the replicas are not identical: rank 1 differs from rank 0 in params" in (
        proc.stderr), proc.stderr


def test_ranks_that_disagree_on_the_schedule_all_raise(tmp_path):
    proc, outs, _ = run_ranks("disagree", tmp_path)
    _ok(proc)
    assert outs[0]["error"] == (
        "the ranks disagree on iterations (rank 0: iterations=3; the mean over 2 ranks: "
        "iterations=2.5): give iters=")
    assert outs[1]["error"].startswith("the ranks disagree on iterations (rank 1: iterations=2")


def test_mpi_pool_executor_workers_give_the_exact_gradient(tmp_path):
    def futures(n):  # rank 0 runs the script, the others serve MPIPoolExecutor
        return [*dist_launch.mpiexec(n), "-m", "mpi4py.futures"]

    proc, outs, _ = dist_launch.run_ranks(futures, "pool", tmp_path, n=3)
    _ok(proc)
    assert outs[0]["workers"] == 2
    assert outs[0]["numerical_rel_err"] <= 1e-12


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_mpiexec_saves_a_loadable_model_without_tracebacks(tmp_path, signum):
    """Ctrl-C (SIGINT to the launcher's process group, as a terminal sends it) or
    SIGTERM to `mpiexec -n 2 xpnn train`: a traceback per rank and exit 1 before
    (issue 16.14); now rank 0 alone stops, saves and ends the others: exit 128+n, one
    line, and the model loads."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [*dist_launch.mpiexec(2), "-c", MARKED_MAIN, "train", "--dataset", "moons",
         "--iters", "100000000", "--eval-every", "1000", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True, preexec_fn=default_signals)
    try:
        for line in proc.stdout:
            if line.startswith("xpnn-test: training"):
                break
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnn: rank 0 of 2 interrupted"), err
    assert "Traceback" not in err and f"to {out}" in err
    assert History.load_json(out / "history.json").meta["cli"]["stopped"].startswith(
        "interrupted")
    checkpoint.load(out / "model.safetensors")
