"""Backend selection: names, modules or arrays -> array-API namespaces.

Everything that knows which array library is in use lives here (and in the
trainer); layers, losses and the network only ever see the namespace ``xp``.
"""

from __future__ import annotations

import importlib
import os
import types

import array_api_compat
import numpy as np

#: Backends xpnn knows, in the order they are listed in messages.
BACKENDS = ("numpy", "array_api_strict", "torch", "cupy")

_EXTRA = {
    "numpy": "numpy is a core dependency: pip install xpnn",
    "array_api_strict": "pip install 'xpnn[test]'",
    "torch": "pip install 'xpnn[torch]'",
    "cupy": "pip install 'xpnn[cuda12]' or 'xpnn[cuda13]' on a machine with a CUDA GPU",
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
}


def _cuda_device_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no cupy, no driver, no device: all mean "none"
        return 0


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
            if _importable("cupy") and _cuda_device_count() > 0:
                found.append(name)
        elif _importable(name):
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
    if name == "array_api_strict":
        try:
            return importlib.import_module("array_api_strict")
        except ImportError as exc:
            raise _unavailable(name, f"cannot import array_api_strict ({exc})") from None
    if name == "cupy":
        if not _importable("cupy"):
            raise _unavailable(name, "cannot import cupy")
        if _cuda_device_count() == 0:
            raise _unavailable(name, "cupy is installed but no CUDA device is present")
    elif not _importable(name):
        raise _unavailable(name, f"cannot import {name}")
    return importlib.import_module(f"array_api_compat.{name}")


def get_namespace(spec=None) -> types.ModuleType:
    """Return the array-API namespace for ``spec``.

    ``spec`` is a backend name (``"numpy"``, ``"cupy"``, ``"torch"``,
    ``"array_api_strict"``), an array library module (``numpy``, ``torch``,
    ...), an array, or None for ``$XPNN_BACKEND`` (default ``"numpy"``).
    """
    if spec is None:
        spec = os.environ.get("XPNN_BACKEND") or "numpy"
    if isinstance(spec, str):
        return _namespace_by_name(spec)
    if isinstance(spec, types.ModuleType):
        for name, test in (
            ("numpy", array_api_compat.is_numpy_namespace),
            ("torch", array_api_compat.is_torch_namespace),
            ("cupy", array_api_compat.is_cupy_namespace),
            ("array_api_strict", array_api_compat.is_array_api_strict_namespace),
        ):
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
    """Short backend name of a namespace: 'numpy', 'torch', 'cupy', 'array_api_strict', ..."""
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    if array_api_compat.is_jax_namespace(xp):
        return "jax"
    return getattr(xp, "__name__", repr(xp))


def resolve_device(xp, device):
    """Turn a user device spec (None, 'cpu', 'cuda', 'cuda:1', 1, a device object) into
    what ``xp.asarray(..., device=)`` accepts, or raise a ValueError naming the problem."""
    if device is None:
        return None
    name = backend_name(xp)
    if name == "numpy":
        if device in ("cpu", "CPU"):
            return "cpu"
        raise ValueError(f"the numpy backend has only the device 'cpu', not {device!r}")
    if name == "torch":
        import torch

        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"bad torch device {device!r}: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"torch device {device!r} asked for, but torch sees no CUDA device")
        return dev
    if name == "cupy":
        import cupy

        if isinstance(device, cupy.cuda.Device):
            return device
        if isinstance(device, str):
            text = device.lower()
            if text in ("cuda", "gpu"):
                return cupy.cuda.Device()
            if text.startswith(("cuda:", "gpu:")) and text.split(":", 1)[1].isdigit():
                device = int(text.split(":", 1)[1])
            else:
                raise ValueError(f"bad cupy device {device!r}; use 'cuda', 'cuda:N' or N")
        if isinstance(device, int) and 0 <= device < _cuda_device_count():
            return cupy.cuda.Device(device)
        raise ValueError(f"no CUDA device {device!r} (found {_cuda_device_count()})")
    if name == "array_api_strict" and isinstance(device, str):
        try:
            return xp.Device(device)
        except Exception as exc:
            raise ValueError(f"bad array_api_strict device {device!r}: {exc}") from None
    return device


def device_of(x):
    """The device an array lives on."""
    return array_api_compat.device(x)


def to_numpy(x) -> np.ndarray:
    """Copy any backend's array (or a scalar, or a nested list) to a host NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_array_api_obj(x):
        try:
            return np.from_dlpack(x)
        except Exception:
            return np.asarray(x)
    return np.asarray(x)


def resolve_dtype(xp, dtype):
    """'float32' / 'float64' (or a dtype object of xp) -> a dtype of xp."""
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        return getattr(xp, dtype)
    if dtype in (xp.float32, xp.float64):
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name in ("float32", "float64"):
        return getattr(xp, name)
    raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")


def dtype_name(xp, dtype) -> str:
    return "float64" if dtype == xp.float64 else "float32"


def asarray(x, backend=None, device=None, dtype=None):
    """Move ``x`` (a NumPy array, list, or another backend's array) to ``backend``/``device``.

    This is the one explicit place where data crosses backends; the network itself
    refuses arrays from another backend or device rather than copying silently.
    """
    xp = get_namespace(backend)
    dev = resolve_device(xp, device)
    host = to_numpy(x)
    if dtype is not None:
        host = host.astype(dtype_name(xp, resolve_dtype(xp, dtype)), copy=False)
    if backend_name(xp) != "numpy" and not host.flags.writeable:
        host = host.copy()  # torch would share (and warn about) a read-only buffer
    if dev is None:
        return xp.asarray(host)
    return xp.asarray(host, device=dev)


# -- compile hooks ------------------------------------------------------------------------
# Owned by the training step (xpnn.training.step); the rest of this file is backend policy.


def compile_step(fn, xp, device=None):
    """Compile a pure step ``fn(state, *batch) -> state`` for ``xp``'s backend.

    Returns ``(compiled, donates)``; ``donates`` says that the state passed in is used
    up (its arrays must not be read afterwards):

    * NumPy, array-api-strict (and anything unknown): ``fn`` itself.
    * JAX: ``jax.jit(fn, donate_argnums=0)`` (the new state reuses the old one's memory).
    * PyTorch on the CPU: ``torch.compile(fn)`` (one graph; lr and counters are 0-d
      tensors in the state, so nothing retraces).
    * CUDA (PyTorch or CuPy): ``fn`` captured once as a CUDA graph over preallocated
      state and batch buffers (``_CudaGraphStep``).
    """
    name = backend_name(xp)
    if name == "jax":
        import jax

        return jax.jit(fn, donate_argnums=0), True
    if name == "cupy" or (name == "torch" and getattr(device, "type", None) == "cuda"):
        return _CudaGraphStep(fn, name), True
    if name == "torch":
        import torch

        return torch.compile(_own_code(fn), dynamic=False), False
    return fn, False


def _own_code(fn):
    """``fn`` behind a wrapper with a code object of its own. torch.compile keeps its
    compiled graphs per code object, at most ``recompile_limit`` (8) of them, and every
    step's ``pure`` shares one code object: without this, the ninth compiled step of a
    process would silently run eagerly."""

    def step(state, *batch):
        return fn(state, *batch)

    step.__code__ = step.__code__.replace()  # a new code object, same contents
    return step


def _leaves(tree) -> list:
    """The arrays of a nest of dicts, in sorted-key order."""
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    return [tree]


def _map_leaves(fn, tree):
    if isinstance(tree, dict):
        return {key: _map_leaves(fn, value) for key, value in tree.items()}
    return fn(tree)


class _CudaGraphStep:
    """``fn(state, *batch) -> state`` replayed as one CUDA graph (PyTorch or CuPy).

    The first call copies the state and batch into buffers of their own, runs ``fn``
    twice to warm up, then captures ``fn`` followed by copying its result into the
    state buffers in place. Every call copies its arguments into the buffers (skipped
    for arrays that are the buffers, as the returned state is), replays the graph and
    returns the state buffers. Untested on hardware in this repository's CI.
    """

    def __init__(self, fn, lib: str):
        self.fn, self.torch = fn, lib == "torch"
        self.graph = self.state = self.batch = self.stream = None

    def _copy(self, dst, src):
        if dst is src:
            return
        if self.torch:
            dst.copy_(src)
        else:
            dst[...] = src

    def _run_and_store(self):
        out = self.fn(self.state, *self.batch)
        for dst, src in zip(_leaves(self.state), _leaves(out), strict=True):
            self._copy(dst, src)

    def _capture(self, state, batch):
        if self.torch:
            import torch

            self.state = _map_leaves(torch.clone, state)
            self.batch = [torch.clone(b) for b in batch]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.fn(self.state, *self.batch)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._run_and_store()
        else:
            import cupy

            self.state = _map_leaves(cupy.copy, state)
            self.batch = [cupy.copy(b) for b in batch]
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.stream.wait_event(cupy.cuda.get_current_stream().record())
            with self.stream:
                for _ in range(2):
                    self.fn(self.state, *self.batch)
                self.stream.begin_capture()
                self._run_and_store()
                self.graph = self.stream.end_capture()

    def __call__(self, state, *batch):
        if self.graph is None:
            self._capture(state, batch)
        for dst, src in zip(_leaves(self.state), _leaves(state), strict=True):
            self._copy(dst, src)
        for dst, src in zip(self.batch, batch, strict=True):
            self._copy(dst, src)
        if self.torch:
            self.graph.replay()
        else:
            import cupy

            current = cupy.cuda.get_current_stream()
            self.stream.wait_event(current.record())
            self.graph.launch(self.stream)
            current.wait_event(self.stream.record())
        return self.state
