"""nox sessions: tests on each backend, lint, benchmarks.

    nox -s tests        NumPy + array-api-strict
    nox -s tests_torch  adds PyTorch (CPU build here: torch==2.13.0)
    nox -s tests_cuda   CuPy and PyTorch on a CUDA device (needs a GPU)
    nox -s lint         ruff
    nox -s bench        the pytest-benchmark suite, JSON saved under bench/results/
"""

from __future__ import annotations

import datetime
import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("XPNN_TORCH_SPEC", "torch==2.13.0")
CUPY = os.environ.get("XPNN_CUPY_EXTRA", "cuda12")


def _data_env():
    env = {}
    if "XPNN_DATA_DIR" not in os.environ and os.path.isdir("../shared/data"):
        env["XPNN_DATA_DIR"] = os.path.abspath("../shared/data")
    return env


@nox.session
def tests(session):
    """NumPy and array-api-strict."""
    session.install("-e", ".[test]")
    env = {"XPNN_TEST_BACKENDS": "numpy,array_api_strict", **_data_env()}
    session.run("pytest", "-q", *session.posargs, env=env)


@nox.session
def tests_torch(session):
    """NumPy, array-api-strict and PyTorch (CPU, and CUDA when torch sees a GPU)."""
    session.install(TORCH)
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs, env=_data_env())


@nox.session
def tests_cuda(session):
    """CuPy and PyTorch on a CUDA device (plus the CPU backends for parity)."""
    session.install(f".[{CUPY},test]", TORCH)
    session.run("python", "-c", "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0")
    session.run("pytest", "-q", "-rs", *session.posargs, env=_data_env())


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "xpnn", "tests", "bench", "noxfile.py")


@nox.session
def bench(session):
    """Benchmarks (bench/README.md); pytest-benchmark JSON with machine info, the Markdown
    report and the scaling plot saved under bench/results/.

    On a machine with nvidia-smi, CuPy (extra $XPNN_CUPY_EXTRA) is installed too and the
    CuPy / PyTorch-CUDA rows run. Extra arguments go to pytest, e.g.
    ``nox -s bench -- -m "not e2e"``. Environment: XPNN_BENCH_THREADS=1 pins the CPU
    thread pools (recommended on a shared machine), XPNN_BENCH_BACKENDS restricts the
    backends, XPNN_DATA_DIR points at the folder holding mnist/.
    """
    import shutil

    gpu = shutil.which("nvidia-smi") is not None
    session.install(TORCH)
    session.install("-e", f".[bench,plot{f',{CUPY}' if gpu else ''}]", "array-api-strict>=2.2")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = f"bench/results/{'gpu' if gpu else 'cpu'}-{stamp}"
    os.makedirs("bench/results", exist_ok=True)
    session.run(
        "pytest", "bench", "--benchmark-only", "--benchmark-disable-gc",
        "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=fullname",
        f"--benchmark-json={out}.json", *session.posargs,
        env=_data_env(),
    )
    session.run("python", "bench/report.py", f"{out}.json",
                f"--markdown={out}.md", f"--plot={out}.png")
