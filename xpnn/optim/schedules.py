"""Learning-rate schedules: callables ``schedule(iteration) -> factor`` (iteration
counts from 0, the step about to be taken); the learning rate of an update is
``base_lr * factor``."""

from __future__ import annotations

import math

from .transforms import _check_positive_int, _check_real

__all__ = ["CosineLR", "StepLR"]


class StepLR:
    """factor = gamma ** (iteration // step_size): multiply the rate by gamma every
    step_size iterations."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _check_positive_int(step_size, "step_size")
        gamma = _check_real(gamma, "gamma")
        if not (gamma > 0 and math.isfinite(gamma)):
            raise ValueError(f"gamma must be positive and finite, got {gamma!r}")
        self.gamma = gamma

    def __call__(self, iteration: int) -> float:
        k = int(iteration) // self.step_size
        try:
            factor = self.gamma ** k
        except OverflowError:
            factor = math.inf
        if not math.isfinite(factor):
            raise ValueError(
                f"{self!r} at iteration {iteration}: gamma ** {k} overflows float64 (the "
                f"learning rate would be inf); with gamma > 1 use fewer iterations or a "
                f"larger step_size"
            )
        return factor

    def __repr__(self):
        return f"StepLR(step_size={self.step_size}, gamma={self.gamma})"


class CosineLR:
    """Cosine annealing from 1 to min_factor over total_iters iterations, then flat:

    factor = min_factor + (1 - min_factor) * (1 + cos(pi * min(iteration, total_iters)
             / total_iters)) / 2
    """

    def __init__(self, total_iters: int, min_factor: float = 0.0):
        self.total_iters = _check_positive_int(total_iters, "total_iters")
        min_factor = _check_real(min_factor, "min_factor")
        if not (0.0 <= min_factor <= 1.0):
            raise ValueError(f"min_factor must lie in [0, 1], got {min_factor!r}")
        self.min_factor = min_factor

    def __call__(self, iteration: int) -> float:
        frac = min(max(int(iteration), 0), self.total_iters) / self.total_iters
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * frac))

    def __repr__(self):
        return f"CosineLR(total_iters={self.total_iters}, min_factor={self.min_factor})"
