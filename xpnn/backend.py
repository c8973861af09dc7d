"""Backend selection: names, modules or arrays -> array-API namespaces; device and
dtype policy; the one explicit place where data crosses backends.

Everything that knows which array library is in use lives here (and in the
trainer); layers, losses and the network only ever see the namespace ``xp``.

Devices: ``resolve_device`` turns a user spec into what ``xp.asarray(device=)``
accepts and refuses what xpnn does not run on (torch ``meta``/``mps``, a GPU that is
not there); ``device_name`` gives one spelling for reprs and logs ('cpu', 'cuda:0',
'cpu:0' for JAX, 'device1' for array-api-strict); ``in_host_memory`` and
``free_memory`` answer the trainer's and the numerical gradient's questions.

CuPy on a GPU other than the current one: array-api-compat ignores ``device=`` when
CuPy creates arrays (``arange``, ``zeros``, ...), so they would land on the current
device. Rather than run half a computation on the wrong GPU, ``resolve_device``
refuses a CuPy device that is not the current one; run such work inside
``with device_context(xp, "cuda:1"):``, which makes it current.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import types

import array_api_compat
import numpy as np

#: Backends xpnn knows, in the order they are listed in messages.
BACKENDS = ("numpy", "array_api_strict", "torch", "cupy", "jax")

_EXTRA = {
    "numpy": "numpy is a core dependency: pip install xpnn",
    "array_api_strict": "pip install 'xpnn[test]'",
    "torch": "pip install 'xpnn[torch]'",
    "cupy": "pip install 'xpnn[cuda12]' or 'xpnn[cuda13]' on a machine with a CUDA GPU",
    "jax": "pip install 'xpnn[jax]'",
}

_ALIASES = {
    "np": "numpy",
    "numpy": "numpy",
    "strict": "array_api_strict",
    "array_api_strict": "array_api_strict",
    "array-api-strict": "array_api_strict",
    "torch": "torch",
    "pytorch": "torch",
    "cupy": "cupy",
    "cp": "cupy",
    "jax": "jax",
    "jnp": "jax",
    "jax.numpy": "jax",
}

#: How to get float64 on JAX, quoted in every error that refuses it.
JAX_X64_HINT = (
    'JAX computes in float32 unless 64-bit mode is on: call '
    'jax.config.update("jax_enable_x64", True) before creating arrays, or set '
    "JAX_ENABLE_X64=1 in the environment (or use dtype='float32')"
)


def _cupy_device_count() -> tuple[int, str | None]:
    """(number of CUDA devices CuPy sees, the error text when it cannot tell)."""
    try:
        import cupy
    except Exception as exc:
        return 0, f"cannot import cupy ({exc})"
    try:
        return int(cupy.cuda.runtime.getDeviceCount()), None
    except Exception as exc:  # no driver, no device, driver too old: all mean "none"
        return 0, f"{type(exc).__name__}: {exc}"


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:
        return False
    return True


def available_backends() -> list[str]:
    """Names of the backends usable on this machine (CuPy only with a CUDA device)."""
    found = []
    for name in BACKENDS:
        if name == "cupy":
            if _importable("cupy") and _cupy_device_count()[0] > 0:
                found.append(name)
        elif _importable("jax.numpy" if name == "jax" else name):
            found.append(name)
    return found


def _unavailable(name: str, why: str) -> ImportError:
    return ImportError(
        f"backend {name!r} is not available: {why}. "
        f"Available here: {', '.join(available_backends())}. "
        f"To get it: {_EXTRA[name]}."
    )


def _namespace_by_name(spec: str) -> types.ModuleType:
    name = _ALIASES.get(spec.strip().lower())
    if name is None:
        raise ValueError(
            f"unknown backend {spec!r}; known backends: {', '.join(BACKENDS)} "
            f"(available here: {', '.join(available_backends())})"
        )
    if name in ("array_api_strict", "jax"):
        module = "jax.numpy" if name == "jax" else name  # already array-API namespaces
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise _unavailable(name, f"cannot import {module} ({exc})") from None
    if name == "cupy":
        if not _importable("cupy"):
            raise _unavailable(name, "cannot import cupy")
        count, error = _cupy_device_count()
        if count == 0:
            detail = f" ({error})" if error else ""
            raise _unavailable(name, f"cupy is installed but no CUDA device is present{detail}")
    elif not _importable(name):
        raise _unavailable(name, f"cannot import {name}")
    return importlib.import_module(f"array_api_compat.{name}")


_NAMESPACE_TESTS = (
    ("numpy", array_api_compat.is_numpy_namespace),
    ("torch", array_api_compat.is_torch_namespace),
    ("cupy", array_api_compat.is_cupy_namespace),
    ("array_api_strict", array_api_compat.is_array_api_strict_namespace),
    ("jax", array_api_compat.is_jax_namespace),
)


def get_namespace(spec=None) -> types.ModuleType:
    """Return the array-API namespace for ``spec``.

    ``spec`` is a backend name (``"numpy"``, ``"cupy"``, ``"torch"``,
    ``"array_api_strict"``, ``"jax"``), an array library module (``numpy``, ``torch``,
    ``jax.numpy``, ...), an array, or None for ``$XPNN_BACKEND`` (default ``"numpy"``).
    """
    if spec is None:
        spec = os.environ.get("XPNN_BACKEND") or "numpy"
    if isinstance(spec, str):
        return _namespace_by_name(spec)
    if isinstance(spec, types.ModuleType):
        if spec.__name__ == "jax":
            return _namespace_by_name("jax")  # the namespace is jax.numpy
        for name, test in _NAMESPACE_TESTS:
            if test(spec):
                return _namespace_by_name(name)
        if hasattr(spec, "__array_api_version__"):
            return spec  # some other standard-conforming namespace
        raise TypeError(f"module {spec.__name__!r} is not an array library xpnn knows")
    if array_api_compat.is_array_api_obj(spec):
        return array_api_compat.array_namespace(spec)
    raise TypeError(
        f"cannot get an array namespace from {type(spec).__name__}; pass a backend "
        f"name ({', '.join(BACKENDS)}), an array library module or an array"
    )


def backend_name(xp) -> str:
    """Short backend name of a namespace: 'numpy', 'torch', 'cupy', 'array_api_strict',
    'jax', or the module name of another namespace."""
    for name, test in _NAMESPACE_TESTS:
        if test(xp):
            return name
    return getattr(xp, "__name__", repr(xp))


# -- devices ----------------------------------------------------------------------------


def _parse_indexed(text: str, kinds: tuple[str, ...]) -> int | None:
    """'cuda:3' with kinds ('cuda', 'gpu') -> 3; 'cuda' -> None; else ValueError."""
    kind, _, index = text.strip().lower().partition(":")
    if kind not in kinds or (index and not index.isdigit()):
        raise ValueError(text)
    return int(index) if index else None


def _torch_device(device):
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"bad torch device {device!r}: {exc}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(
            f"torch device {device!r} is not supported: xpnn runs on 'cpu' or 'cuda[:N]' "
            f"(a {dev.type!r} device would fail or give no data later)"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"torch device {device!r} asked for, but torch sees no CUDA device")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"no CUDA device {device!r}: torch sees {count}")
    return dev


def _cupy_device_id(device) -> int:
    """The CUDA device number a CuPy device spec names (checked against the count)."""
    import cupy

    if isinstance(device, cupy.cuda.Device):
        return int(device.id)
    if isinstance(device, str):
        try:
            index = _parse_indexed(device, ("cuda", "gpu"))
        except ValueError:
            raise ValueError(f"bad cupy device {device!r}; use 'cuda', 'cuda:N' or N") from None
        device = int(cupy.cuda.runtime.getDevice()) if index is None else index
    count, error = _cupy_device_count()
    if isinstance(device, bool) or not isinstance(device, int) or not 0 <= device < count:
        detail = f": {error}" if error else ""
        raise ValueError(f"no CUDA device {device!r} (CuPy sees {count}{detail})")
    return device


def _cupy_device(device):
    import cupy

    index = _cupy_device_id(device)
    current = int(cupy.cuda.runtime.getDevice())
    if index != current:
        raise ValueError(
            f"CuPy device 'cuda:{index}' is not the current CUDA device (cuda:{current}); "
            f"array-api-compat ignores device= when CuPy creates arrays, so they would land "
            f"on cuda:{current}. Run the work inside "
            f"`with xpnn.backend.device_context(xp, 'cuda:{index}'):` "
            f"(or call cupy.cuda.Device({index}).use() first)"
        )
    return cupy.cuda.Device(index)


_JAX_DEVICES = "use 'cpu', 'cpu:N', 'cuda', 'cuda:N' or a jax.Device"


def _jax_device(device):
    import jax

    if isinstance(device, jax.Device):
        if device.platform not in ("cpu", "gpu"):
            raise ValueError(
                f"jax device {device!r} is not supported: xpnn runs on 'cpu' or 'cuda[:N]'"
            )
        return device
    if not isinstance(device, str):
        raise ValueError(f"bad jax device {device!r}; {_JAX_DEVICES}")
    try:
        index = _parse_indexed(device, ("cpu", "cuda", "gpu"))
    except ValueError:
        raise ValueError(f"bad jax device {device!r}; {_JAX_DEVICES}") from None
    platform = "cpu" if device.strip().lower().startswith("cpu") else "gpu"
    try:
        devices = jax.devices(platform)
    except RuntimeError as exc:
        raise ValueError(f"jax device {device!r} asked for, but JAX has none: {exc}") from None
    index = index or 0
    if index >= len(devices):
        raise ValueError(f"no jax device {device!r}: JAX sees {devices}")
    return devices[index]


def _strict_device(xp, device):
    if isinstance(device, str):
        name = "CPU_DEVICE" if device.strip().lower() == "cpu" else device
        try:
            return xp.Device(name)
        except Exception as exc:
            raise ValueError(f"bad array_api_strict device {device!r}: {exc}") from None
    return device


def resolve_device(xp, device):
    """Turn a user device spec (None, 'cpu', 'cuda', 'cuda:1', 1, a device object) into
    what ``xp.asarray(..., device=)`` accepts, or raise a ValueError naming the problem.

    Only CPU and CUDA devices are accepted (torch 'meta' / 'mps' are refused); a CuPy
    device must be the current one (see ``device_context``)."""
    if device is None:
        return None
    name = backend_name(xp)
    if name == "numpy":
        if device in ("cpu", "CPU"):
            return "cpu"
        raise ValueError(f"the numpy backend has only the device 'cpu', not {device!r}")
    if name == "torch":
        return _torch_device(device)
    if name == "cupy":
        return _cupy_device(device)
    if name == "jax":
        return _jax_device(device)
    if name == "array_api_strict":
        return _strict_device(xp, device)
    return device


def device_of(x):
    """The device an array lives on."""
    return array_api_compat.device(x)


def _default_device(xp, name: str):
    if name == "torch":
        import torch

        return torch.get_default_device()
    if name == "cupy":
        import cupy

        return cupy.cuda.Device()
    if name == "jax":
        import jax

        return jax.devices()[0]
    if name == "array_api_strict":
        return xp.Device()
    return "cpu"


def device_name(xp, device) -> str:
    """One spelling of a device for reprs, logs and history meta: 'cpu', 'cuda:0'
    (index always given), 'cpu:0' / 'cuda:0' for JAX (whose own names look like
    'TFRT_CPU_0'), 'device1' for array-api-strict. None means xp's default device."""
    name = backend_name(xp)
    if device is None:
        device = _default_device(xp, name)
    if name == "numpy":
        return "cpu"
    if name == "torch":
        import torch

        dev = torch.device(device)
        if dev.type == "cuda":
            index = dev.index
            if index is None:
                index = torch.cuda.current_device() if torch.cuda.is_available() else 0
            return f"cuda:{index}"
        return dev.type
    if name == "cupy":
        return f"cuda:{_cupy_device_id(device)}"
    if name == "jax":
        dev = device if hasattr(device, "platform") else _jax_device(device)
        platform = "cuda" if dev.platform == "gpu" else dev.platform
        return f"{platform}:{dev.id}"
    if name == "array_api_strict":
        label = getattr(_strict_device(xp, device), "_device", None) or str(device)
        return "cpu" if label == "CPU_DEVICE" else label
    return str(device)


def device_context(xp, device):
    """A context manager that makes ``device`` current where the backend has such a
    notion: ``cupy.cuda.Device(n)`` for CuPy (whose array creation ignores
    ``device=``), a no-op for every other backend. Wrap work on a non-current GPU::

        with device_context(net.xp, net.device):
            ...
    """
    if device is not None and backend_name(xp) == "cupy":
        import cupy

        return cupy.cuda.Device(_cupy_device_id(device))
    return contextlib.nullcontext()


def in_host_memory(xp, device) -> bool:
    """Whether arrays of ``xp`` on ``device`` (None: the default) live in host memory:
    NumPy, array-api-strict (every device is an emulation), torch and JAX on the CPU."""
    name = backend_name(xp)
    if name in ("numpy", "array_api_strict"):
        return True
    if name == "cupy":
        return False
    if device is None:
        device = _default_device(xp, name)
    if name == "torch":
        import torch

        return torch.device(device).type == "cpu"
    if name == "jax":
        return _jax_device(device).platform == "cpu"
    return str(device).lower().startswith("cpu")


def free_memory(xp, device) -> int | None:
    """Free bytes on a GPU ``device`` (CuPy ``memGetInfo``, torch ``mem_get_info``,
    JAX ``memory_stats``); None in host memory or when the backend cannot tell."""
    if in_host_memory(xp, device):
        return None
    name = backend_name(xp)
    try:
        if name == "cupy":
            import cupy

            with cupy.cuda.Device(_cupy_device_id(device)):
                return int(cupy.cuda.runtime.memGetInfo()[0])
        if name == "torch":
            import torch

            dev = torch.device(device if device is not None else "cuda")
            return int(torch.cuda.mem_get_info(dev)[0])
        if name == "jax":
            stats = _jax_device(device if device is not None else "cuda").memory_stats()
            if stats and "bytes_limit" in stats:
                return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    except Exception:  # no driver or no statistics: "cannot tell"
        return None
    return None


# -- host copies and dtypes ---------------------------------------------------------------


def to_numpy(x) -> np.ndarray:
    """Copy any backend's array (or a scalar, or a nested list) to a host NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    source = _namespace_or_none(x)
    if source is not None and array_api_compat.is_array_api_strict_namespace(source):
        x = x.to_device(source.Device())  # strict refuses exports from its other devices
    if array_api_compat.is_array_api_obj(x):
        try:
            return np.from_dlpack(x)
        except Exception:
            return np.asarray(x)
    return np.asarray(x)


def _namespace_or_none(x):
    if isinstance(x, np.ndarray) or not array_api_compat.is_array_api_obj(x):
        return None
    try:
        return array_api_compat.array_namespace(x)
    except TypeError:
        return None


def jax_x64_enabled() -> bool:
    """Whether JAX's 64-bit mode is on (False when JAX is not installed)."""
    try:
        import jax
    except Exception:
        return False
    return bool(jax.config.read("jax_enable_x64"))


def _check_jax_float64(xp, dtype) -> None:
    if dtype == xp.float64 and backend_name(xp) == "jax" and not jax_x64_enabled():
        raise ValueError(f"dtype float64 asked for on the jax backend, but {JAX_X64_HINT}")


def resolve_dtype(xp, dtype):
    """'float32' / 'float64' (or a dtype object of xp) -> a dtype of xp.

    On JAX, float64 without 64-bit mode raises (JAX would silently give float32)."""
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        out = getattr(xp, dtype)
    elif dtype in (xp.float32, xp.float64):
        out = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        out = getattr(xp, name)
    _check_jax_float64(xp, out)
    return out


def dtype_name(xp, dtype) -> str:
    return "float64" if dtype == xp.float64 else "float32"


def _moved(xp, x, dev, dtype):
    """``x`` (an array of ``xp``) on ``dev`` in ``dtype``, by the library's own means."""
    if dev is not None and device_of(x) != dev:
        x = array_api_compat.to_device(x, dev)
    if dtype is not None and x.dtype != dtype:
        x = xp.astype(x, dtype)
    return x


def _from_device_memory(xp, x, dev, dtype):
    """Device-to-device (e.g. torch CUDA -> CuPy) through DLPack, or None when the
    producer or consumer refuses it (the caller then copies through the host)."""
    try:
        out = xp.from_dlpack(x)
    except (BufferError, TypeError, ValueError, RuntimeError, NotImplementedError):
        return None
    return _moved(xp, out, dev, dtype)


def asarray(x, backend=None, device=None, dtype=None):
    """Move ``x`` (a NumPy array, list, or another backend's array) to ``backend``/``device``.

    This is the one explicit place where data crosses backends; the network itself
    refuses arrays from another backend or device rather than copying silently.
    An array of the target library moves with its own ``to_device`` / ``astype``;
    between two libraries' GPU arrays (CuPy <-> torch CUDA) through DLPack; through a
    host NumPy copy only across host and device memory, or when DLPack is refused.
    torch tensors are detached: autograd graphs stop here.
    """
    xp = get_namespace(backend)
    name = backend_name(xp)
    dev = resolve_device(xp, device)
    want = None if dtype is None else resolve_dtype(xp, dtype)
    if array_api_compat.is_torch_array(x):
        x = x.detach()
    source = _namespace_or_none(x)
    if source is not None and backend_name(source) == name:
        return _moved(xp, x, dev, want)
    if (
        source is not None
        and not in_host_memory(source, device_of(x))
        and not in_host_memory(xp, dev)
    ):
        out = _from_device_memory(xp, x, dev, want)
        if out is not None:
            return out
    host = to_numpy(x)
    if want is not None:
        host = host.astype(dtype_name(xp, want), copy=False)
    elif name == "jax" and host.dtype == np.float64 and not jax_x64_enabled():
        raise ValueError(
            f"a float64 array moved to the jax backend would silently become float32: "
            f"{JAX_X64_HINT}"
        )
    if name != "numpy" and not host.flags.writeable:
        host = host.copy()  # torch would share (and warn about) a read-only buffer
    if dev is None:
        return xp.asarray(host)
    return xp.asarray(host, device=dev)


# -- moved ------------------------------------------------------------------------------
# The compile seam lives in xpnn.compile (CUDA graphs, the CuPy GEMM route, torch.compile
# modes) and the tree helpers in xpnn.tree; the old names still resolve, lazily, so that
# this module imports nothing of them (xpnn.compile imports this module).

_MOVED = {"compile_step": "xpnn.compile", "map_tree": "xpnn.tree"}


def __getattr__(name):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
