"""Shared bits of the example scripts: flags, output folder, machine description,
and a result.json next to the figures.

Outputs go to ``runs/examples/<name>/`` by default (``runs/`` is git-ignored); the
small figures worth keeping are copied by hand to ``docs/img/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=f"runs/examples/{name}", help="output folder")
    p.add_argument("--backend", default="numpy", help="numpy, torch, cupy, array_api_strict")
    p.add_argument("--device", default=None, help="backend device, e.g. cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def out_dir(path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def write_result(out: Path, result: dict) -> Path:
    result = {**result, "machine": machine(), "argv": sys.argv,
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = out / "result.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def final(history, key):
    """Last non-None value of a History list (e.g. 'test_acc')."""
    values = [v for v in getattr(history, key) if v is not None]
    return values[-1] if values else None
