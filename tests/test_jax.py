"""JAX as a backend: names, devices, the float64 rule, host round trips. The whole
suite also runs on JAX through the ``backend`` fixture (``nox -s tests_jax``)."""

from __future__ import annotations

import types

import numpy as np
import pytest

import xpnn
from xpnn import backend as B

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


@pytest.fixture
def x64_off():
    """JAX's default: 64-bit mode off (conftest switches it on for the suite)."""
    with jax.enable_x64(False):
        yield


def test_names_modules_and_arrays_give_jax_numpy():
    assert "jax" in xpnn.BACKENDS and "jax" in xpnn.available_backends()
    for spec in ("jax", "JAX", "jnp", jnp, jax, jnp.zeros(2)):
        xp = xpnn.get_namespace(spec)
        assert xp is jnp and B.backend_name(xp) == "jax"


def test_float64_without_x64_is_an_error_not_float32(x64_off):
    for call in (
        lambda: xpnn.MLP([2, 2], backend="jax", dtype="float64"),
        lambda: B.resolve_dtype(jnp, jnp.float64),
        lambda: xpnn.asarray(np.ones(3), backend="jax", dtype="float64"),
        lambda: xpnn.asarray(np.ones(3), backend="jax"),  # float64 host data, no dtype
    ):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert 'jax.config.update("jax_enable_x64", True)' in msg
        assert "JAX_ENABLE_X64=1" in msg
    assert xpnn.asarray(np.ones(3), backend="jax", dtype="float32").dtype == jnp.float32
    assert xpnn.MLP([2, 2], backend="jax", seed=0).params["W1"].dtype == jnp.float32
    labels = xpnn.asarray(np.array([0, 1, 1]), backend="jax")  # integers are not refused
    assert jnp.isdtype(labels.dtype, "integral")


def test_float64_with_x64():
    with jax.enable_x64(True):
        net = xpnn.MLP([2, 2], backend="jax", dtype="float64", seed=0)
        assert net.params["W1"].dtype == jnp.float64
        assert xpnn.asarray(np.ones(3), backend="jax").dtype == jnp.float64


@pytest.mark.parametrize("spec", ["cpu", "CPU", "cpu:0"])
def test_cpu_device_specs(spec):
    cpu0 = jax.devices("cpu")[0]
    assert B.resolve_device(jnp, spec) == cpu0
    assert B.resolve_device(jnp, cpu0) == cpu0
    assert B.device_name(jnp, spec) == "cpu:0"
    net = xpnn.MLP([2, 2], backend="jax", device=spec, seed=0)
    assert net.device == cpu0
    assert B.in_host_memory(jnp, spec) and B.free_memory(jnp, spec) is None


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cpu:99", 3])
def test_bad_device_specs(spec):
    with pytest.raises(ValueError, match="jax device"):
        B.resolve_device(jnp, spec)


def test_gpu_without_a_gpu_names_jax_error():
    try:
        jax.devices("gpu")
        pytest.skip("JAX sees a GPU here")
    except RuntimeError:
        pass
    for spec in ("cuda", "gpu", "cuda:1"):
        with pytest.raises(ValueError, match="JAX has none: .*gpu"):
            B.resolve_device(jnp, spec)


def test_device_names_of_jax_device_objects():
    """Old JAX spells its CPU 'TFRT_CPU_0' and new JAX 'cpu:0': platform and id decide."""
    tfrt = types.SimpleNamespace(platform="cpu", id=0, __str__=lambda self: "TFRT_CPU_0")
    assert B.device_name(jnp, tfrt) == "cpu:0"
    assert B.device_name(jnp, types.SimpleNamespace(platform="gpu", id=1)) == "cuda:1"
    default = jax.devices()[0]  # the CPU here, the GPU where JAX has one
    platform = "cuda" if default.platform == "gpu" else default.platform
    assert B.device_name(jnp, None) == f"{platform}:{default.id}"


def test_the_default_jax_device_is_named_for_what_it_is(monkeypatch):
    """None names JAX's default device, which is the GPU where JAX has one (the H200
    run: this test's predecessor asserted 'cpu:0' and failed there)."""
    gpu = types.SimpleNamespace(platform="gpu", id=0)
    monkeypatch.setattr(jax, "devices", lambda *backend: [gpu])
    assert B.device_name(jnp, None) == "cuda:0"


def test_host_round_trips_and_other_backends():
    host = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    a = xpnn.asarray(host, backend="jax")
    assert B.backend_name(xpnn.get_namespace(a)) == "jax"
    np.testing.assert_array_equal(xpnn.to_numpy(a), host)
    s = xpnn.asarray(a, backend="array_api_strict", device="device1")
    np.testing.assert_array_equal(xpnn.to_numpy(s), host)
    back = xpnn.asarray(s, backend="jax", dtype="float32")
    np.testing.assert_array_equal(xpnn.to_numpy(back), host)
    readonly = host.copy()
    readonly.flags.writeable = False
    np.testing.assert_array_equal(xpnn.to_numpy(xpnn.asarray(readonly, backend="jax")), host)
