"""Shared fixtures: ``backend`` / ``xp`` run a test once per array backend present.

``backend`` is ``(name, device)``. NumPy and array-api-strict always, strict a second
time on its emulated ``device1`` (every array the library creates must land on the
net's device); PyTorch when importable (CPU, plus CUDA when torch sees a GPU); CuPy
when importable and a CUDA device is present; JAX when importable (64-bit mode is
switched on here, as ``JAX_ENABLE_X64=1`` would, so the float64 tests run on it).

``XPNN_TEST_BACKENDS=numpy,torch`` restricts the list (names or ids such as
``array_api_strict-device1``). ``XPNN_REQUIRE_GPU=1`` makes the run an error unless
both ``cupy`` and ``torch-cuda`` are in it (``nox -s tests_cuda``): a GPU session that
silently ran only CPU tests would pass for the wrong reason.
"""

from __future__ import annotations

import os

# JAX preallocates 75% of a GPU per process unless told otherwise: next to CuPy and
# torch-cuda in the same run (and in pytest-xdist workers) that ran out of GPU memory
# on the H200. Set before JAX is imported (available_backends below imports it); a
# value already in the environment wins; on the CPU the variable does nothing.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import xpnn  # noqa: E402
from xpnn.backend import available_backends  # noqa: E402

GPU_IDS = ("cupy", "torch-cuda")


def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _all_params() -> list[tuple[str, str | None, str]]:
    """(name, device, id) of every backend and device this machine can run."""
    out = []
    for name in available_backends():
        out.append((name, None, name))
        if name == "array_api_strict":
            out.append((name, "device1", "array_api_strict-device1"))
        if name == "torch" and _torch_cuda():
            out.append((name, "cuda", "torch-cuda"))
    return out


def _wanted(params):
    wanted = os.environ.get("XPNN_TEST_BACKENDS")
    if not wanted:
        return params
    keep = {w.strip() for w in wanted.split(",") if w.strip()}
    return [p for p in params if p[0] in keep or p[2] in keep]


def _enable_jax_x64() -> None:
    """64-bit JAX whenever JAX is here: some tests loop over available_backends() on
    their own, outside the XPNN_TEST_BACKENDS selection."""
    if "jax" in available_backends():
        import jax

        jax.config.update("jax_enable_x64", True)


_enable_jax_x64()
_PARAMS = _wanted(_all_params())
BACKEND_PARAMS = [pytest.param((name, device), id=pid) for name, device, pid in _PARAMS]
BACKEND_IDS = [pid for _, _, pid in _PARAMS]


def missing_gpu_targets(ids, env) -> list[str]:
    """The GPU test targets absent from ``ids`` when ``env`` asks for a GPU run."""
    if env.get("XPNN_REQUIRE_GPU", "") in ("", "0"):
        return []
    return [g for g in GPU_IDS if g not in ids]


def pytest_configure(config):
    missing = missing_gpu_targets(BACKEND_IDS, os.environ)
    if missing:
        raise pytest.UsageError(
            f"XPNN_REQUIRE_GPU is set but the GPU targets {missing} are not among the test "
            f"backends {BACKEND_IDS}: CuPy needs a CUDA device it can see, torch-cuda needs "
            f"torch.cuda.is_available(), and XPNN_TEST_BACKENDS must not filter them out"
        )


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """(name, device) of one available backend."""
    return request.param


@pytest.fixture
def xp(backend):
    return xpnn.get_namespace(backend[0])


@pytest.fixture
def to_backend(backend):
    """Move host data onto the fixture's backend and device."""
    name, device = backend

    def move(a, dtype=None):
        return xpnn.asarray(np.asarray(a), backend=name, device=device, dtype=dtype)

    return move


@pytest.fixture
def data_dir():
    """The real data folder ($XPNN_DATA_DIR), or skip."""
    path = os.environ.get("XPNN_DATA_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("XPNN_DATA_DIR is not set to the data folder")
    return path


@pytest.fixture
def one_torch_thread():
    """torch limited to one thread for the test. Its OpenMP threads spin at every
    barrier, so tiny torch ops run several times slower with two threads on a busy
    2-core machine (100 tiny steps: 20 s instead of 0.1 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def other_user(tmp_path):
    """(folder, run_as) for tests of file permissions, which do not apply to root: as
    root, ``run_as()`` is a context manager that switches the effective uid and gid to
    nobody (65534) for its block, and ``folder`` is a fresh folder nobody may write
    (under /tmp, which everyone may traverse; removed afterwards); for any other user
    ``folder`` is ``tmp_path`` and ``run_as()`` does nothing."""
    import contextlib
    import shutil
    import tempfile
    from pathlib import Path

    if not hasattr(os, "geteuid"):
        pytest.skip("POSIX permissions")
    if os.geteuid() != 0:
        yield tmp_path, contextlib.nullcontext
        return
    folder = Path(tempfile.mkdtemp(prefix="xpnn-perm-"))
    folder.chmod(0o777)

    @contextlib.contextmanager
    def run_as():
        os.setegid(65534)
        os.seteuid(65534)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(0)

    try:
        yield folder, run_as
    finally:
        shutil.rmtree(folder, ignore_errors=True)
