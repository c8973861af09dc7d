"""The CuPy GEMM route: matrix products a CUDA graph can capture.

CuPy refuses every cuBLAS call while a stream captures ("calling cuBLAS API during
stream capture is currently unsupported"), so a CuPy step with ``a @ b`` cannot be
captured. nvmath-python's stateful ``nvmath.linalg.advanced.Matmul`` has its own
cuBLASLt handle: planned once outside the capture, its ``execute`` runs inside one (on
the H200: the graph replayed with new inputs gave the exact product).

``PlannedMatmuls`` is a ``matmul(a, b)`` for the ``matmul`` hook of ``xpnn.nn.Affine``
(see ``CudaGraphStep(hooks=...)``): one planned ``Matmul`` per kind of product, keyed
by both operands' shapes, strides (a transposed view is another key) and dtypes. The
first product of a kind creates and plans its ``Matmul`` (during the warm-up runs,
outside the capture); every later one resets the operands and executes. Everything
runs on the stream current at the call (the capture stream), passed explicitly, so
nvmath's internal stream ordering stays on that one stream.

Optional: ``pip install 'xpnn[cuda-graph]'`` (nvmath-python). Without it, compiling a
CuPy step runs it eagerly with one ``CompileFallbackWarning``. The routing is checked
on the CPU with a fake ``Matmul`` class (tests/test_compile.py); the real route needs a
GPU (bench/gpu_check.py checks it equals eager to 1e-12 in float64).
"""

from __future__ import annotations

__all__ = ["PlannedMatmuls", "nvmath_matmul_class"]


def nvmath_matmul_class():
    """``nvmath.linalg.advanced.Matmul``, or raise ImportError saying how to get it."""
    try:
        from nvmath.linalg.advanced import Matmul
    except Exception as exc:
        raise ImportError(
            f"the CuPy CUDA-graph step routes its matrix products through nvmath-python, "
            f"which cannot be imported ({type(exc).__name__}: {exc}); "
            f"pip install 'xpnn[cuda-graph]'") from None
    return Matmul


def _current_stream():
    import cupy

    return cupy.cuda.get_current_stream()


class PlannedMatmuls:
    """``matmul(a, b)`` through cached, planned ``Matmul`` objects.

    matmul_class  ``nvmath.linalg.advanced.Matmul`` or a stand-in with its API:
                  ``Matmul(a, b, stream=)``, ``plan(stream=)``,
                  ``reset_operands(a=, b=, stream=)``, ``execute(stream=)``, ``free()``
    stream        () -> the stream to run on (default: CuPy's current stream)

    ``planned`` / ``executed`` count the calls (for tests and gpu_check).
    """

    def __init__(self, matmul_class, stream=None):
        self._cls = matmul_class
        self._stream = _current_stream if stream is None else stream
        self._plans = {}
        self.planned = self.executed = 0

    @staticmethod
    def key(a, b) -> tuple:
        return (tuple(a.shape), tuple(a.strides), str(a.dtype),
                tuple(b.shape), tuple(b.strides), str(b.dtype))

    def __call__(self, a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(
                f"the GEMM route takes 2-D products (Affine flattens stacks), got "
                f"{tuple(a.shape)} @ {tuple(b.shape)}")
        stream = self._stream()
        key = self.key(a, b)
        mm = self._plans.get(key)
        if mm is None:
            mm = self._cls(a, b, stream=stream)
            mm.plan(stream=stream)
            self._plans[key] = mm
            self.planned += 1
        else:
            mm.reset_operands(a=a, b=b, stream=stream)
        self.executed += 1
        return mm.execute(stream=stream)

    def __len__(self) -> int:
        return len(self._plans)

    def free(self):
        """Release every plan's resources (the graph that replays them must be gone)."""
        plans, self._plans = self._plans, {}
        for mm in plans.values():
            mm.free()
