"""Backend selection, device/dtype handling and host conversion."""

from __future__ import annotations

import warnings

import array_api_compat
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import xpnn
from xpnn.backend import available_backends, backend_name


def test_names_give_namespaces():
    assert array_api_compat.is_numpy_namespace(xpnn.get_namespace("numpy"))
    assert array_api_compat.is_array_api_strict_namespace(xpnn.get_namespace("array_api_strict"))


def test_module_and_array_specs():
    xp = xpnn.get_namespace(np)
    assert backend_name(xp) == "numpy"
    assert backend_name(xpnn.get_namespace(np.zeros(3))) == "numpy"
    import array_api_strict

    assert backend_name(xpnn.get_namespace(array_api_strict)) == "array_api_strict"
    assert backend_name(xpnn.get_namespace(array_api_strict.zeros(2))) == "array_api_strict"


def test_env_var_sets_default(monkeypatch):
    monkeypatch.setenv("XPNN_BACKEND", "array_api_strict")
    assert backend_name(xpnn.get_namespace()) == "array_api_strict"
    net = xpnn.MLP([2, 2], seed=0)
    assert net.backend == "array_api_strict"
    monkeypatch.delenv("XPNN_BACKEND")
    assert backend_name(xpnn.get_namespace()) == "numpy"


def test_unknown_backend_names_the_available_ones():
    with pytest.raises(ValueError) as err:
        xpnn.get_namespace("tensorflow")
    msg = str(err.value)
    assert "tensorflow" in msg and "numpy" in msg and "array_api_strict" in msg


@pytest.mark.skipif("cupy" in available_backends(), reason="CuPy with a GPU is present here")
def test_cupy_without_device_says_what_to_install():
    with pytest.raises(ImportError) as err:
        xpnn.MLP([2, 2], backend="cupy")
    msg = str(err.value)
    assert "cupy" in msg and "cuda12" in msg and "numpy" in msg


def test_bad_spec_type():
    with pytest.raises(TypeError):
        xpnn.get_namespace(3.5)


def test_to_numpy_round_trip(backend):
    name, device = backend
    host = np.arange(6.0).reshape(2, 3)
    a = xpnn.asarray(host, backend=name, device=device)
    assert backend_name(array_api_compat.array_namespace(a)) == name
    back = xpnn.to_numpy(a)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)


def test_dtype_and_device_arguments(backend):
    name, device = backend
    net = xpnn.MLP([3, 2], backend=name, device=device, dtype="float64", seed=0)
    assert net.params["W1"].dtype == net.xp.float64
    assert xpnn.MLP([3, 2], backend=name, device=device, seed=0).dtype == net.xp.float32
    with pytest.raises(ValueError, match="float16"):
        xpnn.MLP([3, 2], backend=name, dtype="float16")


def test_bad_device():
    with pytest.raises(ValueError, match="cpu"):
        xpnn.MLP([3, 2], backend="numpy", device="cuda")


# -- asarray: which way data moves ----------------------------------------------------


def _no_host_copy(monkeypatch):
    def refuse(x):
        raise AssertionError("asarray went through host memory")

    monkeypatch.setattr(xpnn.backend, "to_numpy", refuse)


def test_same_library_moves_without_a_host_copy(monkeypatch):
    import array_api_strict

    a = array_api_strict.asarray([[1.0, 2.0]], dtype=array_api_strict.float64)
    _no_host_copy(monkeypatch)
    b = xpnn.asarray(a, backend="array_api_strict", device="device1", dtype="float32")
    assert b.device == array_api_strict.Device("device1") and b.dtype == array_api_strict.float32
    c = xpnn.asarray(b, backend="array_api_strict", device="cpu")
    assert c.device == array_api_strict.Device("CPU_DEVICE")
    torch = pytest.importorskip("torch")
    t = xpnn.asarray(torch.ones(2, dtype=torch.float64), backend="torch", dtype="float32")
    assert t.dtype == torch.float32


def test_torch_tensors_are_detached():
    torch = pytest.importorskip("torch")
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    for target in ("torch", "numpy", "array_api_strict"):
        out = xpnn.asarray(w * 2, backend=target)
        assert not getattr(out, "requires_grad", False)
        np.testing.assert_array_equal(xpnn.to_numpy(out), [2.0, 2.0, 2.0])


def test_device_to_device_goes_through_dlpack(monkeypatch):
    """Two libraries' arrays both in device memory (CuPy <-> torch CUDA on a GPU):
    DLPack, no host copy. Faked here by declaring every array to be in device memory."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(xpnn.backend, "in_host_memory", lambda xp, device: False)
    _no_host_copy(monkeypatch)
    src = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    out = xpnn.asarray(src, backend="array_api_strict", device="device1", dtype="float32")
    assert backend_name(array_api_compat.array_namespace(out)) == "array_api_strict"
    xp = xpnn.get_namespace("array_api_strict")
    assert out.dtype == xp.float32 and out.device == xp.Device("device1")
    np.testing.assert_array_equal(np.from_dlpack(out), src.numpy())


def test_refused_dlpack_falls_back_to_a_host_copy(monkeypatch):
    torch = pytest.importorskip("torch")
    xp = xpnn.get_namespace("numpy")
    monkeypatch.setattr(xpnn.backend, "in_host_memory", lambda xp, device: False)

    def refuse(x):
        raise BufferError("DLPack export refused")

    monkeypatch.setattr(xp, "from_dlpack", refuse)
    copies = []
    real = xpnn.backend.to_numpy
    monkeypatch.setattr(xpnn.backend, "to_numpy", lambda x: copies.append(x) or real(x))
    out = xpnn.asarray(torch.ones(2), backend="numpy")
    np.testing.assert_array_equal(out, [1.0, 1.0])
    assert len(copies) == 1


@pytest.mark.parametrize("target", ["torch", "array_api_strict"])
def test_read_only_numpy_input(target):
    pytest.importorskip(target)
    host = np.arange(4.0)
    host.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = xpnn.asarray(host, backend=target)
    np.testing.assert_array_equal(xpnn.to_numpy(out), host)


def _targets():
    out = [("numpy", None), ("array_api_strict", None), ("array_api_strict", "device1")]
    return out + [(n, None) for n in ("torch", "jax") if n in available_backends()]


@settings(max_examples=25, deadline=None)
@given(host=hnp.arrays(st.sampled_from([np.float32, np.float64]),
                       hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                       elements=st.floats(-1e6, 1e6, width=32)))
def test_asarray_round_trip_property(host):
    """Host -> every backend/device -> every other one -> host: same values and dtype."""
    targets = _targets()
    pairs = zip(targets, targets[1:] + targets[:1], strict=True)
    for (name, device), (other, other_device) in pairs:
        dtype = host.dtype.name
        a = xpnn.asarray(host, backend=name, device=device, dtype=dtype)
        b = xpnn.asarray(a, backend=other, device=other_device)
        back = xpnn.to_numpy(b)
        assert back.dtype == host.dtype
        np.testing.assert_array_equal(back, host)
