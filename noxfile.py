"""nox sessions: tests on each backend, lint, benchmarks.

    nox -s tests        NumPy + array-api-strict
    nox -s tests_torch  adds PyTorch (CPU build here: torch==2.13.0); not tests/test_dist_*
    nox -s tests_jax    JAX (CPU here) in 64-bit mode; not tests/test_dist_*
    nox -s tests_dist   tests/test_dist_* on NumPy, array-api-strict, PyTorch and JAX: real
                        mpiexec -n 2, a Dask LocalCluster, torchrun (xpnn.dist)
    nox -s tests_cuda   CuPy and PyTorch on a CUDA device (needs a GPU; fails without one)
    nox -s gpu_check    bench/gpu_check.py: issue 15's GPU figures with their targets, JSON +
                        Markdown under bench/results/ (needs a GPU; under 5 minutes)
    nox -s lint         ruff
    nox -s bench        the pytest-benchmark suite, JSON saved under bench/results/
                        (on a machine with nvidia-smi it fails unless GPU rows ran)
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("XPNN_TORCH_SPEC", "torch==2.13.0")
CUPY = os.environ.get("XPNN_CUPY_EXTRA", "cuda12")
JAX = os.environ.get("XPNN_JAX_SPEC", "jax==0.10.2")

#: Test/benchmark ids of the GPU targets (tests/conftest.py, bench/benchcommon.py).
GPU_TARGETS = ("cupy", "torch-cuda")

#: Proof that both GPU stacks really compute: a CuPy kernel compiled at run time
#: (NVRTC from the [ctk] extra) and a PyTorch CUDA reduction, checked exactly.
GPU_CHECK = """
import cupy, torch
n = cupy.cuda.runtime.getDeviceCount()
assert n > 0, "CuPy sees no CUDA device"
square = cupy.ElementwiseKernel("float64 x", "float64 y", "y = x * x", "xpnn_square")
x = cupy.arange(1, 1001, dtype=cupy.float64)
want = 1000 * 1001 * 2001 // 6
assert float(square(x).sum()) == want, "CuPy kernel gave a wrong sum"
assert torch.cuda.is_available(), "torch.cuda.is_available() is False (a CPU-only torch?)"
t = torch.arange(1, 1001, dtype=torch.float64, device="cuda")
assert float((t * t).sum()) == want, "torch CUDA gave a wrong sum"
print(f"GPU check: {n} CUDA device(s), CuPy kernel and torch CUDA agree ({want})")
"""


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


#: tests_dist runs these (on every backend it installs); the other sessions skip them
NOT_DIST = "--ignore-glob=*/test_dist_*.py"


@nox.session
def tests_torch(session):
    """NumPy, array-api-strict and PyTorch (CPU, and CUDA when torch sees a GPU), without
    tests/test_dist_*: tests_dist installs the same torch and runs them."""
    session.install(TORCH)
    session.install("-e", ".[test]")
    session.run("pytest", "-q", NOT_DIST, *session.posargs, env=_data_env())


@nox.session
def tests_jax(session):
    """JAX (CPU here) with JAX_ENABLE_X64=1, so the float64 gradient checks and the
    1e-12 parity run on it; the backend-independent tests run again too, except
    tests/test_dist_* (tests_dist runs them, on JAX as well)."""
    session.install(JAX)
    session.install("-e", ".[test]")
    env = {"XPNN_TEST_BACKENDS": "jax", "JAX_ENABLE_X64": "1", **_data_env()}
    session.run("pytest", "-q", NOT_DIST, *session.posargs, env=env)


@nox.session
def tests_dist(session):
    """Distributed tests, tests/test_dist_*, on NumPy, array-api-strict, PyTorch (CPU)
    and JAX (64-bit): real mpiexec -n 2 (mpi4py + the mpich wheel's mpiexec), a Dask
    LocalCluster with 2 worker processes, torchrun with Gloo; every launch under a 60 s
    timeout. One BLAS thread per process (the runs start 2-3 processes on 2 cores)."""
    session.install(TORCH)
    session.install(JAX)
    session.install("-e", ".[test,mpi,dask]")
    files = sorted(str(p) for p in Path("tests").glob("test_dist_*.py"))
    session.run("pytest", "-q", "-rs", "-p", "no:cacheprovider", *files, *session.posargs,
                env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                     "MKL_NUM_THREADS": "1", "JAX_ENABLE_X64": "1"})


@nox.session
def tests_cuda(session):
    """CuPy and PyTorch on a CUDA device (plus the CPU backends for parity). Fails,
    rather than skips, when either GPU stack is missing or computes nothing."""
    session.install(f".[{CUPY},test]", TORCH)
    session.run("python", "-c", GPU_CHECK)
    env = {"XPNN_REQUIRE_GPU": "1", **_data_env()}  # conftest: error without GPU targets
    session.run("pytest", "-q", "-rs", *session.posargs, env=env)


@nox.session
def gpu_check(session):
    """bench/gpu_check.py on the GPU: compiled == eager for every optimizer on cupy,
    torch-cuda and jax (a process each), the step, numerical-gradient and MNIST timings
    against issue 15's targets. Installs CuPy ($XPNN_CUPY_EXTRA) with nvmath-python (the
    cuda-graph extra), PyTorch, and JAX with its CUDA plugin ($XPNN_JAX_GPU_SPEC, default
    jax[<the CuPy extra>]). Exits 3 without a GPU, 1 on a correctness failure. Extra
    arguments go to the script, e.g. ``nox -s gpu_check -- --no-mnist``."""
    session.install(TORCH)
    session.install(os.environ.get("XPNN_JAX_GPU_SPEC", f"jax[{CUPY}]"))
    session.install("-e", f".[{CUPY},cuda-graph,bench]")
    session.run("python", "bench/gpu_check.py", *session.posargs, env=_data_env())


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
    if gpu and not gpu_benchmark_rows(f"{out}.json"):
        session.error(
            f"nvidia-smi is present but no GPU benchmark row ({', '.join(GPU_TARGETS)}) ran; "
            f"see {out}.json: CuPy or torch.cuda is not working, or the arguments / "
            f"XPNN_BENCH_BACKENDS filtered the GPU targets out"
        )


def gpu_benchmark_rows(json_path: str) -> list[str]:
    """Names of the benchmarks in a pytest-benchmark JSON that ran on a GPU target."""
    with open(json_path) as f:
        rows = json.load(f).get("benchmarks", [])
    ids = "|".join(re.escape(t) for t in GPU_TARGETS)
    on_gpu = re.compile(rf"[\[-]({ids})[\]-]")
    return [
        r["name"] for r in rows
        if on_gpu.search(r.get("name", "")) or "gpu=True" in str(r.get("params", ""))
    ]
