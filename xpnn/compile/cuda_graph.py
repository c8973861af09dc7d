"""A pure step ``fn(state, *batch) -> state`` replayed as one CUDA graph (PyTorch or
CuPy), and the capture that cannot leave the process broken.

``CudaGraphStep`` holds the backend-independent logic: buffers cloned from the first
state, two warm-up runs, the capture of ``fn`` followed by copying its result into the
state buffers in place, and per call: arguments copied in (skipped for arrays that are
the buffers, as the returned state is), the graph replayed, the buffers returned.

A ``Capture`` gives it the backend's primitives (clone, copy, warm-up, begin / end /
discard a capture, replay). ``Capture.record`` is the one place a capture is begun, and
it ends it whatever happens inside: a CUDA stream left capturing makes every later CUDA
call of the process fail, on every library (on the H200, one failed CuPy capture broke
every torch-cuda step after it). When warm-up or capture raises, ``CudaGraphStep``
falls back to running ``fn`` eagerly, with one ``CompileFallbackWarning`` that names
the backend and the cause. Only Python exceptions are caught (``KeyboardInterrupt``
still ends the capture, then propagates).

``TorchCapture`` and ``CupyCapture`` need a GPU. On the CPU, tests/test_graph_step.py
and tests/test_compile.py drive ``CudaGraphStep`` with a fake ``Capture`` whose
"graph" re-runs the recorded body on the same buffers.
"""

from __future__ import annotations

import contextlib
import warnings

from ..tree import leaves, map_tree

__all__ = ["CompileFallbackWarning", "Capture", "CudaGraphStep", "CupyCapture",
           "TorchCapture"]


class CompileFallbackWarning(UserWarning):
    """A compiled step could not be built and runs eagerly instead. Issued once per
    step; ``warnings.simplefilter("error", CompileFallbackWarning)`` makes it an error."""


class CaptureNotEndedError(RuntimeError):
    """A failed capture could not be ended: the process's CUDA state is unusable."""


class Capture:
    """The backend's primitives for ``CudaGraphStep``. The defaults copy the way
    NumPy-like arrays do (``a.copy()``, ``dst[...] = src``) or torch tensors do."""

    #: the backend's name, for messages
    name = "cuda"

    def __init__(self, lib: str):
        self.torch = lib == "torch"

    # -- arrays
    def clone(self, a):
        return a.clone() if self.torch else a.copy()

    def copy(self, dst, src):
        if dst is src:
            return
        if self.torch:
            dst.copy_(src)
        else:
            dst[...] = src

    # -- the capture's primitives (a subclass gives them)
    def stream(self):
        """A context making the capture stream current (warm-up and capture run in it)."""
        return contextlib.nullcontext()

    def memory(self):
        """A context under which warm-up and capture allocate (a private pool)."""
        return contextlib.nullcontext()

    def begin(self):
        raise NotImplementedError

    def end(self):
        """End the capture; return the graph."""
        raise NotImplementedError

    def discard(self):
        """End a capture after an error and drop what it recorded."""
        raise NotImplementedError

    def capturing(self) -> bool:
        raise NotImplementedError

    def replay(self, graph):
        raise NotImplementedError

    # -- the generic part
    def warm_up(self, run, times: int = 2):
        with self.stream():
            for _ in range(times):
                run()

    def record(self, body):
        """``body()`` captured as a graph, returned. If ``body`` raises (or the capture
        cannot be ended), the capture is ended and discarded before the error leaves;
        if even that fails, ``CaptureNotEndedError`` says so."""
        with self.stream():
            self.begin()
            try:
                body()
            except BaseException as exc:
                self._discard_after(exc)
                raise
            try:
                return self.end()
            except BaseException as exc:
                self._discard_after(exc)
                raise

    def _discard_after(self, exc):
        try:
            self.discard()
        except Exception as discard_exc:
            exc.__cause__ = exc.__cause__ or discard_exc
        if self.capturing():
            raise CaptureNotEndedError(
                f"{self.name}: a failed CUDA graph capture could not be ended; every later "
                f"CUDA call of this process will fail (restart it). Cause: "
                f"{type(exc).__name__}: {exc}") from exc


class TorchCapture(Capture):
    """PyTorch: warm-up on a side stream (what ``torch.cuda.graph``'s docs ask for),
    ``CUDAGraph.capture_begin / capture_end`` on that stream, torch's private graph
    memory pool. The stream context is entered separately from the capture, so the
    current stream is restored even when ending the capture raises."""

    name = "torch-cuda"

    def __init__(self):
        import torch

        super().__init__("torch")
        self._torch = torch
        self._side = torch.cuda.Stream()
        self._graph = None

    def stream(self):
        return self._torch.cuda.stream(self._side)

    def warm_up(self, run, times: int = 2):
        torch = self._torch
        self._side.wait_stream(torch.cuda.current_stream())
        super().warm_up(run, times)
        torch.cuda.current_stream().wait_stream(self._side)

    def begin(self):
        self._torch.cuda.synchronize()
        self._graph = self._torch.cuda.CUDAGraph()
        self._graph.capture_begin()

    def end(self):
        graph, self._graph = self._graph, None
        graph.capture_end()
        return graph

    def discard(self):
        graph, self._graph = self._graph, None
        if graph is None:
            return
        try:
            if self.capturing():
                graph.capture_end()  # ends the stream's capture even when it is invalid
        finally:
            graph.reset()

    def capturing(self) -> bool:
        return bool(self._torch.cuda.is_current_stream_capturing())

    def replay(self, graph):
        graph.replay()


class CupyCapture(Capture):
    """CuPy: a non-blocking stream of its own, ``Stream.begin_capture / end_capture``,
    and a private memory pool for warm-up and capture: the graph's intermediates keep
    their addresses for every replay, so no block they use may go back to CuPy's
    default pool, which would hand it to other arrays between replays."""

    name = "cupy"

    def __init__(self):
        import cupy

        super().__init__("cupy")
        self._cupy = cupy
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._pool = cupy.cuda.MemoryPool()

    def stream(self):
        return self._stream

    def memory(self):
        return self._cupy.cuda.using_allocator(self._pool.malloc)

    def warm_up(self, run, times: int = 2):
        self._stream.wait_event(self._cupy.cuda.get_current_stream().record())
        super().warm_up(run, times)

    def begin(self):
        self._stream.begin_capture()

    def end(self):
        return self._stream.end_capture()

    def discard(self):
        if not self.capturing():
            return
        try:
            self._stream.end_capture()  # the partial graph is dropped with the object
        except Exception:
            if self.capturing():  # CuPy refused: end it with the runtime call
                runtime = self._cupy.cuda.runtime
                graph = runtime.streamEndCapture(self._stream.ptr)
                if graph:
                    runtime.graphDestroy(graph)
            raise

    def capturing(self) -> bool:
        return bool(self._stream.is_capturing())

    def replay(self, graph):
        current = self._cupy.cuda.get_current_stream()
        self._stream.wait_event(current.record())
        graph.launch(self._stream)
        current.wait_event(self._stream.record())


@contextlib.contextmanager
def hooked(hooks):
    """``hooks = (objects, matmul)``: each object's ``matmul`` attribute is ``matmul``
    inside the block, restored afterwards; ``None`` changes nothing."""
    if hooks is None:
        yield
        return
    objects, matmul = hooks
    saved = [obj.matmul for obj in objects]
    for obj in objects:
        obj.matmul = matmul
    try:
        yield
    finally:
        for obj, old in zip(objects, saved, strict=True):
            obj.matmul = old


class CudaGraphStep:
    """``fn(state, *batch) -> state`` replayed as one CUDA graph (see the module doc).

    capture  a ``Capture`` (``TorchCapture()``, ``CupyCapture()``, a fake in tests)
    hooks    ``(objects, matmul)``: while warming up and capturing, each object's
             ``matmul`` attribute is ``matmul`` (the CuPy GEMM route: the products of
             the step's ``Affine`` blocks go through planned nvmath ``Matmul`` objects);
             restored afterwards. The replayed graph holds the routed kernels.

    plain    what runs after a fallback (default ``fn``): the uncompiled step when
             ``fn`` is a compiled function (mode "fused": ``torch.compile(step)``,
             whose compiler runs in the warm-up and may be what failed)
    label    how the warning names the step (default the capture's name)

    After a failed warm-up or capture, ``eager`` is True, ``fallback`` holds the cause,
    and every call runs ``plain``.
    """

    def __init__(self, fn, capture: Capture, hooks=None, *, plain=None, label=None):
        self.fn, self.capture, self.hooks = fn, capture, hooks
        self.plain = fn if plain is None else plain
        self.label = capture.name if label is None else label
        self.graph = self.state = self.batch = None
        self._bufs = ()  # leaves(self.state), walked once at build, not per call
        self.eager = False
        self.fallback = None

    def _run_and_store(self):
        out = self.fn(self.state, *self.batch)
        for dst, src in zip(self._bufs, leaves(out), strict=True):
            self.capture.copy(dst, src)

    def _build(self, state, batch):
        capture = self.capture
        with capture.memory(), hooked(self.hooks):
            self.state = map_tree(capture.clone, state)
            self._bufs = leaves(self.state)
            self.batch = [capture.clone(b) for b in batch]
            capture.warm_up(lambda: self.fn(self.state, *self.batch))
            self.graph = capture.record(self._run_and_store)

    def _fall_back(self, exc):
        self.graph = self.state = self.batch = None
        self._bufs = ()
        self.eager, self.fallback = True, exc
        warnings.warn(
            f"compile on {self.label}: the CUDA graph could not be built "
            f"({type(exc).__name__}: {exc}); the step runs eagerly (no capture was left "
            f"open: the process is unaffected)", CompileFallbackWarning, stacklevel=4)

    def __call__(self, state, *batch):
        if self.eager:
            return self.plain(state, *batch)
        if self.graph is None:
            try:
                self._build(state, batch)
            except CaptureNotEndedError:
                raise
            except Exception as exc:
                self._fall_back(exc)
                return self.plain(state, *batch)
        copy = self.capture.copy
        for dst, src in zip(self._bufs, leaves(state), strict=True):
            copy(dst, src)
        for dst, src in zip(self.batch, batch, strict=True):
            copy(dst, src)
        self.capture.replay(self.graph)
        return self.state
