"""bench/host_overhead.py (issue 15's CPU proxy of the eager step's host time): its
"inline torch calls" row computes xpnn's eager SGD step (its five steps move the
parameters as xpnn's do, to 1e-5 of the largest change), so the floor it reports is
that step's; and the script runs end to end. Run in a subprocess: the script pins
torch to one thread at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import sys, torch
sys.path.insert(0, "bench")
import host_overhead as h
import xpnn
from xpnn.training import make_step
for name in ("tiny", "seed-b1"):
    spec = h.NETS[name]
    run = h.torch_inline_step(spec)
    net, x, T = h.problem(spec, h.TORCH, "float32")
    step = make_step(net, xpnn.SGD(lr=spec.lr))
    state = step.init()
    start = run.state["P"].clone()
    for _ in range(5):
        run()
        state = step(state, x, T)
    flat = torch.concat([torch.reshape(p, (-1,)) for p in state["params"].values()])
    # the same operations; float32 GEMMs may round differently with the operands'
    # alignment (the inline step's first product reads views of its flat vector)
    moved, error = flat - start, run.state["P"] - flat
    assert float(moved.abs().max()) > 0, name
    assert float(error.abs().max()) <= 1e-5 * float(moved.abs().max()), name
    assert int(run.state["first_bad"]) == int(state["first_bad"]) == -1
print("same")
"""


def _run(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_inline_floor_computes_xpnns_step():
    out = _run(["-c", CHECK])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "same"


def test_the_script_runs_and_reports_every_row():
    out = _run(["bench/host_overhead.py", "--nets", "tiny", "--rounds", "1", "-n", "2",
                "--no-save"])
    assert out.returncode == 0, out.stderr
    for row in ("xpnn torch SGD", "PyTorch autograd SGD", "inline torch calls SGD",
                "xpnn numpy SGD", "xpnn torch Adam", "PyTorch autograd Adam",
                "xpnn numpy Adam", "xpnn torch SGD / PyTorch autograd SGD"):
        assert row in out.stdout, out.stdout
