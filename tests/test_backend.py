"""Backend selection, device/dtype handling and host conversion."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

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
