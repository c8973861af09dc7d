"""``torch.compile`` for a pure step: the CPU default, and ``mode="reduce-overhead"``
on CUDA (inductor's fused kernels inside CUDA graphs)."""

from __future__ import annotations

import warnings

from ..tree import map_tree

__all__ = ["ReduceOverheadStep", "own_code", "torch_compile"]


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
