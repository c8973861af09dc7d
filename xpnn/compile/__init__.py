"""Compiling a pure training step ``fn(state, *batch) -> state`` for its backend: the
seam behind ``make_step(..., compile=...)`` and ``train(compile=...)``.

``compile_step(fn, xp, device, mode=None, matmul_hooks=())`` returns
``(compiled, donates)``; ``donates`` says that the state passed in is used up (its
arrays must not be read afterwards):

===================  ==========================================================
backend              compiled step
===================  ==========================================================
NumPy, strict        ``fn`` itself
JAX                  ``jax.jit(fn, donate_argnums=0)``
PyTorch, CPU         ``torch.compile(fn)`` (one graph; lr and counters are 0-d
                     tensors in the state, so nothing retraces)
PyTorch, CUDA        ``mode="graph"`` (the default): ``fn`` captured once as a
                     CUDA graph over preallocated buffers (``cuda_graph``);
                     ``mode="fused"``: ``torch.compile(fn)`` (inductor's fused
                     kernels), compiled in the warm-up, then captured the same
                     way (``torch_modes.fused_graph_step``);
                     ``mode="reduce-overhead"``: ``torch.compile(fn,
                     mode="reduce-overhead")`` (``torch_modes``)
CuPy                 a CUDA graph as on PyTorch, its matrix products routed
                     through nvmath-python's planned ``Matmul`` (``cupy_gemm``;
                     the ``cuda-graph`` extra)
===================  ==========================================================

A compiled step never leaves the process broken: when the warm-up or the capture of
a CUDA graph fails, the capture is ended and discarded, and the step runs eagerly
with one ``CompileFallbackWarning`` naming the backend and the cause (also when CuPy
lacks nvmath-python). Only a capture that cannot even be ended raises
(``CaptureNotEndedError``): the process's CUDA state is gone then.
"""

from __future__ import annotations

import warnings

from ..backend import backend_name
from .cuda_graph import (
    CaptureNotEndedError,
    CompileFallbackWarning,
    CudaGraphStep,
    CupyCapture,
    TorchCapture,
)
from .cupy_gemm import PlannedMatmuls, nvmath_matmul_class
from .torch_modes import (
    ReduceOverheadStep,
    fused_function_compiler,
    fused_graph_step,
    torch_compile,
)

__all__ = ["MODES", "CaptureNotEndedError", "CompileFallbackWarning", "compile_step",
           "cupy_graph_step", "function_compiler"]

#: ``mode`` values of ``compile_step`` (``compile=`` of ``make_step`` / ``train``);
#: None (``compile=True``) is the backend's default, "graph" on CUDA.
MODES = ("graph", "fused", "reduce-overhead")


def _torch_cuda(name: str, device) -> bool:
    return name == "torch" and getattr(device, "type", None) == "cuda"


def check_mode(mode, xp, device=None) -> None:
    """Raise a ValueError unless ``mode`` (None or one of ``MODES``) applies to ``xp``
    on ``device``."""
    if mode is None:
        return
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; known: {', '.join(MODES)} "
                         f"(or True for the backend's default)")
    name = backend_name(xp)
    cuda_torch = _torch_cuda(name, device)
    if mode == "graph" and not (cuda_torch or name == "cupy"):
        raise ValueError("compile mode 'graph' (a CUDA graph) needs CuPy or PyTorch on a "
                         f"CUDA device, not {name} on {device or 'its default device'}")
    what = {"reduce-overhead": "torch.compile with CUDA graphs",
            "fused": "torch.compile captured in a CUDA graph"}.get(mode)
    if what is not None and not cuda_torch:
        raise ValueError(f"compile mode {mode!r} ({what}) needs PyTorch on a CUDA device, "
                         f"not {name} on {device or 'its default device'}")


def function_compiler(xp, device=None, mode=None):
    """How a compiled step compiles the functions it calls (the numerical gradient's
    chunk functions, ``xpnn.nn.numerical.compiled_gradient``): a ``compile_fn(fn, xp,
    device) -> (compiled, donates)``, or None where the step runs them as they are.
    PyTorch on the CPU: ``compile_step`` (``torch.compile``); PyTorch on CUDA under
    mode "fused": ``torch.compile`` alone (``fused_function_compiler``: no capture of
    its own, the enclosing step's CUDA graph captures the compiled kernels; a
    function that fails to compile runs eagerly after one warning); anything else
    (JAX traces them with the step, CUDA under "graph" captures them eagerly):
    None. A new ``compile_fn`` per call (one per step)."""
    name = backend_name(xp)
    if name != "torch" or mode == "reduce-overhead":
        return None
    if _torch_cuda(name, device):
        return fused_function_compiler() if mode == "fused" else None
    return compile_step


def cupy_graph_step(fn, matmul_hooks=(), *, capture=None, matmul_class=None, stream=None):
    """The CuPy compiled step: a ``CudaGraphStep`` whose ``matmul_hooks`` (the step's
    ``Affine`` blocks) multiply through ``PlannedMatmuls`` while it is captured.
    ``capture``, ``matmul_class`` and ``stream`` replace CuPy's and nvmath's (tests run
    this on the CPU with fakes). Returns ``(step, donates)``: ``(fn, False)`` with one
    ``CompileFallbackWarning`` when nvmath-python is missing."""
    if matmul_class is None:
        try:
            matmul_class = nvmath_matmul_class()
        except ImportError as exc:
            warnings.warn(f"compile on cupy: {exc}; the step runs eagerly",
                          CompileFallbackWarning, stacklevel=3)
            return fn, False
    route = PlannedMatmuls(matmul_class, stream=stream)
    hooks = (tuple(matmul_hooks), route) if matmul_hooks else None
    return CudaGraphStep(fn, CupyCapture() if capture is None else capture, hooks), True


def compile_step(fn, xp, device=None, *, mode=None, matmul_hooks=()):
    """Compile a pure step ``fn(state, *batch) -> state`` for ``xp``'s backend (see the
    module doc). ``mode``: None (the default per backend), "graph", "fused" or
    "reduce-overhead" (``MODES``; a ValueError where it does not apply).
    ``matmul_hooks``: objects with a ``matmul`` attribute that ``fn`` multiplies
    through (the step's ``xpnn.nn.Affine``), rerouted for CuPy's capture.
    Returns ``(compiled, donates)``."""
    check_mode(mode, xp, device)
    name = backend_name(xp)
    if name == "jax":
        import jax

        return jax.jit(fn, donate_argnums=0), True
    if name == "cupy":
        return cupy_graph_step(fn, matmul_hooks)
    if _torch_cuda(name, device):
        if mode == "reduce-overhead":
            return ReduceOverheadStep(fn), False
        if mode == "fused":
            return fused_graph_step(fn)
        return CudaGraphStep(fn, TorchCapture()), True
    if name == "torch":
        return torch_compile(fn), False
    return fn, False
