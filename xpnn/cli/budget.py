"""Refuse runs that cannot fit before allocating anything: a rough memory estimate.

The estimate of a run is the sum of three parts, each attributed to the flags that
make it large:

* data: ``(n_train + n_test + rows) * n_inputs`` values: the sets and the batch
  gathered from them (``--samples``, ``--image-size``);
* parameters: ``n_params`` values times ``3 + optimizer slots`` copies (the parameters,
  their gradients, the previous parameters the trainer keeps to undo a bad step, and
  the optimiser's state: 1 array per parameter for momentum/nesterov/adagrad/rmsprop,
  2 for adam) (``--hidden``, ``--image-size`` through the input width);
* activations: ``rows * (sum(hidden) + n_out)`` values times 3 (the forward
  cache, the backward deltas, temporaries), where ``rows`` is the larger of the batch
  and the evaluation chunk (``--hidden``, ``--batch-size``).

Values are 4 bytes in float32 and 8 in float64. Above ``MAX_RUN_BYTES`` the command
refuses with exit code 2 and names the flag of the largest part; below it, an
allocation can still fail on a smaller machine, and that is reported as an
out-of-memory error naming the same flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..optim import OPTIMIZERS
from ..training.runner import EVAL_BATCH_SIZE

#: the largest estimated memory (bytes) the command line accepts: 16 GiB
MAX_RUN_BYTES = 16 * 2**30


def _slots(optimizer_class) -> int:
    """State arrays per parameter array: what the optimiser's transform keeps for a
    one-element parameter."""
    state = optimizer_class().transform.init({"w": np.zeros(1)})
    return len(state["w"])


#: optimizer state arrays per parameter array, for each name in ``xpnn.optim.OPTIMIZERS``
OPTIMIZER_SLOTS = {name: _slots(cls) for name, cls in OPTIMIZERS.items()}

#: rows per evaluation chunk (xpnn.train's eval_batch_size default)
EVAL_CHUNK = EVAL_BATCH_SIZE


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Part:
    what: str  # e.g. "parameters: 400,000,004 values x 3 copies"
    nbytes: int
    flags: tuple  # the flags that make this part large


@dataclass(frozen=True)
class Estimate:
    parts: tuple

    @property
    def total(self) -> int:
        return sum(p.nbytes for p in self.parts)

    @property
    def largest(self) -> Part:
        return max(self.parts, key=lambda p: p.nbytes)

    def hint(self) -> str:
        """The estimate, its largest part and the flags to shrink."""
        big = self.largest
        text = (f"estimated {human_bytes(self.total)}, the largest part {big.what} = "
                f"{human_bytes(big.nbytes)}")
        return text + (f"; try a smaller {' or '.join(big.flags)}" if big.flags else "")


def estimate(sizes, n_train: int, n_test: int, rows: int, itemsize: int, optimizer: str,
             data_flags, width_flags, rows_flags) -> Estimate:
    """Estimate of a run of the MLP ``sizes`` (see the module docstring).

    ``rows``: rows of the largest batch pushed through the network at once.
    ``*_flags``: the flags that set the data size, the layer widths and ``rows`` (empty
    when no flag can shrink it); the activations name the rows' flags first when there
    are more rows than units, else the widths' flags.
    """
    n_in = sizes[0]
    n_params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    if optimizer not in OPTIMIZER_SLOTS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from "
                         f"{', '.join(OPTIMIZER_SLOTS)}")
    copies = 3 + OPTIMIZER_SLOTS[optimizer]
    units = sum(sizes[1:])
    data_rows = n_train + n_test + rows  # the sets, and the batch gathered from them
    if rows > units:
        activation_flags = [*rows_flags, *width_flags]
    else:
        activation_flags = [*width_flags, *rows_flags]
    return Estimate((
        Part(f"the data, {data_rows:,} rows x {n_in:,} inputs",
             data_rows * n_in * itemsize, tuple(data_flags)),
        Part(f"the parameters, {n_params:,} values x {copies} copies",
             n_params * copies * itemsize, tuple(width_flags)),
        Part(f"the activations, {rows:,} rows x {units:,} units x 3",
             rows * units * 3 * itemsize, tuple(dict.fromkeys(activation_flags))),
    ))


def check(est: Estimate, limit: int = MAX_RUN_BYTES) -> None:
    """Raise CLIError naming the flag when the estimate is above ``limit``."""
    if est.total > limit:
        from .errors import CLIError

        flags = est.largest.flags
        raise CLIError(
            f"{flags[0] if flags else 'the run'} is too large: the run would need more than "
            f"the limit of {human_bytes(limit)} ({est.hint()})"
        )
