"""pytest configuration of the benchmark suite: markers, machine info, data fixture.

Markers (deselect with ``-m "not e2e"`` etc.):

* ``step``      one training iteration per net x backend x dtype x method, and the peers
* ``numerical`` the numerical-gradient steps (the long ones)
* ``sweep``     the 784-H-10 scaling sweep
* ``e2e``       end-to-end MNIST training (skipped without the data)
"""

from __future__ import annotations

import os
import platform
import sys

# XPNN_BENCH_THREADS=N pins every library's CPU thread pool (OpenBLAS, OpenMP, MKL,
# torch) to N threads. It must be set before NumPy is first imported, hence here. On a
# shared machine N=1 avoids the multi-millisecond stalls that spinning BLAS/OpenMP
# workers suffer when another process holds a core.
_THREADS = os.environ.get("XPNN_BENCH_THREADS")
if _THREADS:
    if "numpy" in sys.modules:
        print("XPNN_BENCH_THREADS: numpy was imported before bench/conftest.py; "
              "its BLAS thread count may not follow", file=sys.stderr)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _THREADS
    # XLA's CPU thread pool (JAX), read when jax is first imported. jax 0.10.2 on the
    # CPU still ran its steps on both cores of a 2-core machine with these flags (CPU
    # time / wall time 1.9): for one-core JAX figures run under `taskset -c 0`.
    if _THREADS == "1":
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()

import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

import benchcommon  # noqa: E402

if _THREADS:
    try:
        import torch

        torch.set_num_threads(int(_THREADS))
    except ImportError:
        pass


def pytest_configure(config):
    for name, text in (
        ("step", "one training iteration (gradient + SGD update) and its peers"),
        ("compiled", "the compiled step (torch.compile, jax.jit) beside eager and the peers"),
        ("numerical", "numerical-gradient iterations (long; sampled on big nets)"),
        ("sweep", "784-H-10 scaling sweep: time per iteration vs parameter count"),
        ("e2e", "end-to-end MNIST training (needs $XPNN_DATA_DIR/mnist)"),
    ):
        config.addinivalue_line("markers", f"{name}: {text}")
    config._xpnn_load_start = _loadavg()


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _blas() -> dict:
    out = {}
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        pass
    try:
        import torch

        out["torch_num_threads"] = torch.get_num_threads()
        out["torch_blas"] = "mkl" if torch.backends.mkl.is_available() else "other"
    except Exception:
        pass
    for var in ("XPNN_BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS", "XLA_FLAGS"):
        if os.environ.get(var):
            out[var] = os.environ[var]
    if hasattr(os, "sched_getaffinity"):  # e.g. one core under `taskset -c 0`
        out["cpu_affinity"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    try:  # the BLAS thread count NumPy actually uses, where threadpoolctl is installed
        import threadpoolctl

        out["threadpools"] = [
            f"{p['internal_api']} {p['num_threads']} threads"
            for p in threadpoolctl.threadpool_info()
        ]
    except Exception:
        pass
    return out


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["cpu_model"] = _cpu_model()
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["loadavg_start"] = getattr(config, "_xpnn_load_start", None)
    machine_info["loadavg_end"] = _loadavg()
    machine_info["libraries"] = benchcommon.VERSIONS
    machine_info["blas"] = _blas()
    machine_info["gpu"] = benchcommon.gpu_info()
    machine_info["targets"] = benchcommon.TARGET_IDS


#: rounds' raw timings are kept in the JSON only for benchmarks with at most this many
#: rounds (the calibrated micro-benchmarks run 10^4-10^5 rounds: megabytes of numbers)
KEEP_DATA_ROUNDS = int(os.environ.get("XPNN_BENCH_KEEP_DATA_ROUNDS", "50"))


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Keep the saved JSON small: drop per-round timings of long runs (the summary
    statistics, median and IQR included, stay)."""
    for bench in output_json.get("benchmarks", []):
        stats = bench.get("stats") or {}
        data = stats.get("data")
        if data is not None and len(data) > KEEP_DATA_ROUNDS:
            del stats["data"]
            bench.setdefault("extra_info", {})["raw_rounds_dropped"] = len(data)


@pytest.fixture(autouse=True)
def _record_load(request):
    """Load average around each benchmark (the machine may be shared: a busy one
    shows here)."""
    before = _loadavg()
    yield
    bench = request.node.funcargs.get("benchmark")
    if bench is not None and before is not None:
        bench.extra_info["loadavg_1min"] = [round(before[0], 2), round(_loadavg()[0], 2)]


@pytest.fixture(scope="session")
def mnist_host():
    """MNIST on the host: (x_train, t_train, x_test, t_test), float64 images in [0, 1] and
    int64 labels; skips without ``$XPNN_DATA_DIR/mnist``."""
    from mnist_data import load_host_mnist

    data = load_host_mnist()
    if data is None:
        pytest.skip("MNIST not found: set XPNN_DATA_DIR to a folder holding mnist/ "
                    "with the four IDX .gz files")
    return data
