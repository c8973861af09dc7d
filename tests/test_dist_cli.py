"""``mpiexec -n 2 xpnn train``: the banner and history.json give the run's figures
(all rows, the global batch) and say how they are split over the ranks, not one rank's
shard. Skipped without mpi4py and mpiexec (``pip install 'xpnn[mpi]'``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import dist_launch
import pytest

pytest.importorskip("mpi4py")


def test_mpiexec_train_reports_the_runs_figures(tmp_path):
    # 201 rows: unequal shards (101 + 100), which also used to stop the run: each rank
    # defaulted eval_every to an epoch of its own shard (6 and 5), and the ranks disagreed
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*dist_launch.mpiexec(2), "-m", "xpnn", "train", "--dataset", "moons",
         "--samples", "201", "--iters", "10", "--batch-size", "20", "--no-progress",
         "--out", str(out)],
        capture_output=True, text=True, timeout=dist_launch.TIMEOUT, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    banner = proc.stdout.splitlines()[0]
    assert "(201 train, 201 test, split over 2 MPI ranks: 101 or 100 train and 101 or " \
           "100 test rows each)" in banner, banner
    assert "batch 40 (20 per rank)" in banner, banner
    meta = json.loads((out / "history.json").read_text())["meta"]
    assert (meta["n_train"], meta["n_test"], meta["ranks"]) == (201, 201, 2)
    assert (meta["n_train_rank"], meta["batch_size"], meta["batch_size_global"]) == (101, 20, 40)
