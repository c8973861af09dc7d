"""Device policy: resolving and refusing device specs, one spelling of a device, host
or device memory, free memory, the CuPy current-device rule (with a fake CuPy: no GPU
here), and the GPU-run guard of the test fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import array_api_strict
import numpy as np
import pytest
from conftest import GPU_IDS, missing_gpu_targets
from hypothesis import given, settings
from hypothesis import strategies as st

import xpnn
from xpnn import backend as B

NP = xpnn.get_namespace("numpy")
STRICT = xpnn.get_namespace("array_api_strict")


def fake_cupy(n_devices=2, count_error=None):
    """A stand-in for the parts of CuPy the device policy touches: the device count,
    the current device (switched by ``Device`` as a context manager) and memGetInfo,
    which reports 1000 + the current device's number as free bytes."""
    state = {"current": 0}

    class Device:
        def __init__(self, device_id=None):
            self.id = state["current"] if device_id is None else device_id

        def __enter__(self):
            self._previous = state["current"]
            state["current"] = self.id
            return self

        def __exit__(self, *exc):
            state["current"] = self._previous

    def get_device_count():
        if count_error is not None:
            raise count_error
        return n_devices

    runtime = types.SimpleNamespace(
        getDeviceCount=get_device_count,
        getDevice=lambda: state["current"],
        memGetInfo=lambda: (1000 + state["current"], 4000),
    )
    cupy = types.ModuleType("cupy")  # named 'cupy': array-api-compat's namespace test
    cupy.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)
    cupy.state = state
    return cupy


@pytest.fixture
def cupy2(monkeypatch):
    """A fake CuPy with two GPUs, cuda:0 current, installed as ``import cupy``."""
    cupy = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    return cupy


# -- CuPy: the current-device rule ----------------------------------------------------


def test_cupy_refuses_a_device_that_is_not_current(cupy2):
    with pytest.raises(ValueError, match=r"'cuda:1' is not the current.*device_context"):
        B.resolve_device(cupy2, "cuda:1")
    assert B.resolve_device(cupy2, "cuda:0").id == 0
    assert B.resolve_device(cupy2, "cuda").id == 0
    assert B.resolve_device(cupy2, 0).id == 0


def test_cupy_device_context_makes_the_device_current(cupy2):
    with B.device_context(cupy2, "cuda:1"):
        assert cupy2.state["current"] == 1
        dev = B.resolve_device(cupy2, "cuda:1")
        assert dev.id == 1 and B.device_name(cupy2, dev) == "cuda:1"
        assert B.device_name(cupy2, None) == "cuda:1"
    assert cupy2.state["current"] == 0


@pytest.mark.parametrize("spec", ["cuda:2", 7, -1, "tpu", "cuda:x", True])
def test_cupy_bad_devices(cupy2, spec):
    with pytest.raises(ValueError, match="CUDA device|bad cupy device"):
        B.resolve_device(cupy2, spec)
    if not isinstance(spec, bool):
        with pytest.raises(ValueError):
            B.device_context(cupy2, spec)


def test_cupy_memory_is_device_memory_and_free_memory_asks_that_device(cupy2):
    assert not B.in_host_memory(cupy2, None)
    assert B.free_memory(cupy2, "cuda:1") == 1001  # asked while cuda:1 was current
    assert B.free_memory(cupy2, cupy2.cuda.Device(0)) == 1000
    assert cupy2.state["current"] == 0


def test_missing_cuda_device_message_carries_the_cuda_error(monkeypatch):
    cuda_error = RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count_error=cuda_error))
    assert "cupy" not in xpnn.available_backends()
    with pytest.raises(ImportError) as err:
        xpnn.get_namespace("cupy")
    msg = str(err.value)
    assert "no CUDA device" in msg and "cudaErrorNoDevice: no CUDA-capable device" in msg
    assert "cuda12" in msg


# -- torch ----------------------------------------------------------------------------


@pytest.fixture
def torch_xp():
    pytest.importorskip("torch")
    return xpnn.get_namespace("torch")


@pytest.mark.parametrize("spec", ["meta", "mps", "xla"])
def test_torch_refuses_devices_other_than_cpu_and_cuda(torch_xp, spec):
    with pytest.raises(ValueError, match=f"'{spec}'"):
        B.resolve_device(torch_xp, spec)
    with pytest.raises(ValueError, match=f"'{spec}'"):
        xpnn.MLP([2, 2], backend="torch", device=spec)


def test_torch_cuda_without_a_gpu_is_refused(torch_xp):
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"no CUDA device 'cuda:{count}'"):
            B.resolve_device(torch_xp, f"cuda:{count}")
    else:
        with pytest.raises(ValueError, match="sees no CUDA device"):
            B.resolve_device(torch_xp, "cuda")


def test_torch_device_names_and_memory(torch_xp, monkeypatch):
    import torch

    assert B.device_name(torch_xp, "cpu") == "cpu"
    assert B.device_name(torch_xp, torch.device("cuda", 1)) == "cuda:1"
    assert B.in_host_memory(torch_xp, "cpu") and B.in_host_memory(torch_xp, None)
    assert not B.in_host_memory(torch_xp, torch.device("cuda", 0))
    assert B.free_memory(torch_xp, "cpu") is None
    asked = []

    def mem_get_info(device):
        asked.append(device)
        return 123, 456

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert B.free_memory(torch_xp, torch.device("cuda", 1)) == 123
    assert asked == [torch.device("cuda", 1)]


# -- numpy and array-api-strict ---------------------------------------------------------


def test_numpy_devices():
    assert B.resolve_device(NP, "cpu") == "cpu"
    with pytest.raises(ValueError, match="only the device 'cpu'"):
        B.resolve_device(NP, "cuda")
    assert B.device_name(NP, None) == B.device_name(NP, "cpu") == "cpu"
    assert B.in_host_memory(NP, "cpu") and B.free_memory(NP, "cpu") is None


def test_strict_devices():
    device1 = array_api_strict.Device("device1")
    assert B.resolve_device(STRICT, "device1") == device1
    assert B.resolve_device(STRICT, "cpu") == array_api_strict.Device("CPU_DEVICE")
    with pytest.raises(ValueError, match="'nowhere'"):
        B.resolve_device(STRICT, "nowhere")
    assert B.device_name(STRICT, device1) == B.device_name(STRICT, "device1") == "device1"
    assert B.device_name(STRICT, None) == "cpu"
    assert B.in_host_memory(STRICT, device1) and B.free_memory(STRICT, device1) is None


@pytest.mark.parametrize("name", ["numpy", "array_api_strict", "torch"])
def test_device_context_is_a_no_op_off_cupy(name):
    xp = xpnn.get_namespace(pytest.importorskip(name).__name__)
    with B.device_context(xp, "cpu") as entered:
        assert entered is None


def test_everything_the_network_makes_lands_on_its_device():
    """A net on strict's device1: parameters, outputs, gradients (both ways) and the
    numerical-gradient reference all stay there (strict refuses mixed devices)."""
    device1 = array_api_strict.Device("device1")
    net = xpnn.MLP([3, 4, 2], activation="tanh", backend="array_api_strict",
                   device="device1", dtype="float64", seed=0, weight_decay=0.1)
    assert net.device == device1
    x = xpnn.asarray(np.random.default_rng(0).standard_normal((5, 3)),
                     backend="array_api_strict", device="device1")
    t = xpnn.asarray([0, 1, 1, 0, 1], backend="array_api_strict", device="device1")
    outputs = [net.predict(x), net.loss(x, t), *net.params.values(),
               *net.gradient(x, t).values(), *net.numerical_gradient(x, t).values()]
    assert all(B.device_of(a) == device1 for a in outputs)
    ref = xpnn.numerical_gradient(lambda w: xpnn.get_namespace(w).sum(w * w), net.params["W1"])
    assert B.device_of(ref) == device1


# -- the GPU-run guard (nox -s tests_cuda) ----------------------------------------------


def test_gpu_guard_names_the_missing_targets():
    assert missing_gpu_targets(["numpy", "torch"], {}) == []
    assert missing_gpu_targets(["numpy", "torch"], {"XPNN_REQUIRE_GPU": "0"}) == []
    assert missing_gpu_targets(["numpy", "torch-cuda"], {"XPNN_REQUIRE_GPU": "1"}) == ["cupy"]
    assert missing_gpu_targets(["numpy", *GPU_IDS], {"XPNN_REQUIRE_GPU": "1"}) == []


def test_gpu_run_without_gpu_targets_fails_instead_of_passing():
    env = {**os.environ, "XPNN_REQUIRE_GPU": "1", "XPNN_TEST_BACKENDS": "numpy"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
         os.path.join(os.path.dirname(__file__), "test_backend.py")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode != 0
    assert "XPNN_REQUIRE_GPU is set but the GPU targets" in run.stdout + run.stderr


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 8), data=st.data())
def test_cupy_device_rule_property(count, data):
    """Any GPU count, current device and asked device: 'cuda:N' resolves exactly when N
    is current; inside device_context(N) exactly when N exists; names are 'cuda:N'."""
    current = data.draw(st.integers(0, count - 1))
    asked = data.draw(st.integers(0, count + 1))
    cupy = fake_cupy(n_devices=count)
    cupy.state["current"] = current
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = cupy
    try:
        if asked == current:
            assert B.device_name(cupy, B.resolve_device(cupy, f"cuda:{asked}")) == f"cuda:{asked}"
        else:
            with pytest.raises(ValueError):
                B.resolve_device(cupy, f"cuda:{asked}")
        if asked < count:
            with B.device_context(cupy, asked):
                assert B.resolve_device(cupy, f"gpu:{asked}").id == asked
            assert cupy.state["current"] == current
        else:
            with pytest.raises(ValueError, match=f"CuPy sees {count}"):
                B.device_context(cupy, asked)
    finally:
        if saved is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved
