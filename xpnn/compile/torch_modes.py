"""``torch.compile`` for a pure step: the CPU default, and on CUDA ``mode="fused"``
(inductor's fused kernels captured in xpnn's own CUDA graph) and
``mode="reduce-overhead"`` (inductor's fused kernels inside torch's cudagraph trees)."""

from __future__ import annotations

import warnings

from ..tree import map_tree
from .cuda_graph import CompileFallbackWarning, CudaGraphStep

__all__ = ["ReduceOverheadStep", "fused_function_compiler", "fused_graph_step", "own_code",
           "torch_compile"]


def own_code(fn):
    """``fn`` behind a wrapper with a code object of its own. torch.compile keeps its
    compiled graphs per code object, at most ``recompile_limit`` (8) of them, and every
    step's ``pure`` shares one code object: without this, the ninth compiled step of a
    process would silently run eagerly."""

    def step(state, *batch):
        return fn(state, *batch)

    step.__code__ = step.__code__.replace()  # a new code object, same contents
    return step


def torch_compile(fn, **options):
    """``torch.compile(own_code(fn), dynamic=False, **options)``."""
    import torch

    # array_api_compat's namespace lookup is lru_cached; dynamo traces through the
    # cache (correctly: it only memoises type tests) and warns once per call site
    warnings.filterwarnings(
        "ignore", message=r"Dynamo detected a call to a `functools\.lru_cache`",
        category=UserWarning)
    return torch.compile(own_code(fn), dynamic=False, **options)


class ReduceOverheadStep:
    """``torch.compile(fn, mode="reduce-overhead")`` fed its own outputs safely.

    Its CUDA graphs (cudagraph trees) write every replay's outputs into the same
    memory, so the state returned by one call is overwritten by the next: fed back as
    is, torch raises "accessing tensor output of CUDAGraphs that has been overwritten
    by a subsequent run" (seen on the H200). Each call therefore marks a new step
    (``torch.compiler.cudagraph_mark_step_begin()``) and returns clones of the outputs,
    which the caller owns (they survive later calls: the runner keeps parameters for
    early stopping and checkpoints). The clones cost one copy per state array.
    """

    def __init__(self, fn, compiled=None):
        import torch

        self._mark = torch.compiler.cudagraph_mark_step_begin
        self._clone = torch.clone
        self.compiled = torch_compile(fn, mode="reduce-overhead") if compiled is None else compiled

    def __call__(self, state, *batch):
        self._mark()
        return map_tree(self._clone, self.compiled(state, *batch))


def fused_graph_step(fn, *, capture=None, compiler=None):
    """``mode="fused"``: ``torch.compile(fn)`` (inductor's default mode: fused Triton
    kernels, no CUDA graphs of its own; fixed shapes) captured by xpnn's own
    ``CudaGraphStep``. The warm-up's first call compiles (and autotunes) outside the
    capture; the capture then records the compiled code's kernels, and a replay runs
    no Python and no guards at all (``"reduce-overhead"`` checks its guards over the
    whole state pytree and clones its outputs on every call). A failure anywhere,
    the compiler's included, leaves no capture open and runs the plain ``fn``
    eagerly after one ``CompileFallbackWarning``.

    ``capture`` (default ``TorchCapture()``) and ``compiler`` (default
    ``torch_compile``) are replaced by fakes in tests on the CPU. Returns
    ``(step, donates)``."""
    if capture is None:
        from .cuda_graph import TorchCapture

        capture = TorchCapture()
    label = f"{capture.name} (mode 'fused': torch.compile)"
    try:
        compiled = (torch_compile if compiler is None else compiler)(fn)
    except Exception as exc:  # torch.compile refuses this Python or this function
        warnings.warn(f"compile on {label}: torch.compile failed ({type(exc).__name__}: "
                      f"{exc}); the step runs eagerly", CompileFallbackWarning, stacklevel=3)
        return fn, False
    return CudaGraphStep(compiled, capture, plain=fn, label=label), True


class _CompiledOrPlain:
    """``compiled(*args)``, unless its first call raises (the compiler failed): then
    ``fn(*args)`` from that call on, after a ``CompileFallbackWarning`` (one per
    ``warned`` list: the functions of one step share it)."""

    def __init__(self, fn, compiled, warned: list):
        self.fn, self.compiled, self.warned = fn, compiled, warned
        self.checked = False

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args)
        if self.checked:
            return self.compiled(*args)
        try:
            out = self.compiled(*args)
        except Exception as exc:
            self.compiled = None
            _warn_once(self.warned, exc)
            return self.fn(*args)
        self.checked = True
        return out


def _warn_once(warned: list, exc: Exception) -> None:
    if not warned:
        warned.append(exc)
        warnings.warn(f"compile on torch-cuda (mode 'fused'): a function of the step could "
                      f"not be compiled ({type(exc).__name__}: {exc}); it runs eagerly "
                      f"inside the step's CUDA graph", CompileFallbackWarning, stacklevel=4)


def fused_function_compiler(compiler=None):
    """The ``compile_fn(fn, xp, device) -> (compiled, donates)`` of mode "fused" for
    the functions a step calls (the numerical gradient's chunk functions):
    ``torch.compile(fn)`` with no capture of its own (the step's CUDA graph captures
    its kernels). The first call of each compiles it (in the step's warm-up); a
    function that fails to compile runs eagerly from then on, still inside the
    step's graph, after one ``CompileFallbackWarning`` for all of them (the step's
    own fallback would run them again, and fail again). ``compiler`` replaces
    ``torch_compile`` in tests."""
    compiler = torch_compile if compiler is None else compiler
    warned: list = []

    def compile_fn(fn, xp=None, device=None):
        try:
            compiled = compiler(fn)
        except Exception as exc:
            _warn_once(warned, exc)
            return fn, False
        return _CompiledOrPlain(fn, compiled, warned), False

    return compile_fn
