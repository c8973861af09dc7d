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
from .torch_modes import ReduceOverheadStep, torch_compile

__all__ = ["MODES", "CaptureNotEndedError", "CompileFallbackWarning", "compile_step",
           "cupy_graph_step"]

#: ``mode`` values of ``compile_step`` (``compile=`` of ``make_step`` / ``train``);
#: None (``compile=True``) is the backend's default, "graph" on CUDA.
MODES = ("graph", "reduce-overhead")


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
    if mode == "reduce-overhead" and not cuda_torch:
        raise ValueError("compile mode 'reduce-overhead' (torch.compile with CUDA graphs) "
                         f"needs PyTorch on a CUDA device, not {name} on "
                         f"{device or 'its default device'}")


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
    module doc). ``mode``: None (the default per backend), "graph" or
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
        return CudaGraphStep(fn, TorchCapture()), True
    if name == "torch":
        return torch_compile(fn), False
    return fn, False
