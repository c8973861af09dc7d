"""Start tests/dist_rank_script.py on several processes with a real launcher
(mpiexec, torchrun) under a timeout, and collect what each rank wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

RANK_SCRIPT = Path(__file__).with_name("dist_rank_script.py")
TIMEOUT = 60  # seconds; a hang fails the test instead of stalling CI


def mpiexec(n: int) -> list[str]:
    """The command prefix that starts a Python script on n MPI ranks."""
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec (pip install mpich, or install an MPI)")
    return [found, "-n", str(n), sys.executable]


def torchrun(n: int) -> list[str]:
    """The command prefix that starts a Python script on n torch.distributed processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(n)]


def run_ranks(launcher, scenario: str, tmp_path, n: int = 2, extra=(), env=None):
    """Run the scenario on n ranks started by ``launcher(n)``; (completed process,
    [per-rank dicts or None], seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent),
           **(env or {})}
    start = time.monotonic()
    proc = subprocess.run(
        [*launcher(n), str(RANK_SCRIPT), scenario, str(tmp_path), *extra],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )
    seconds = time.monotonic() - start
    outs = []
    for r in range(n):
        path = tmp_path / f"rank{r}.json"
        outs.append(json.loads(path.read_text()) if path.exists() else None)
    return proc, outs, seconds
