"""A network's architecture as a plain JSON-able dict, and the checks that make such a
dict (read from an untrusted file) safe to build from.

``to_config(net)`` -> dict; ``check_config(cfg)`` -> the validated, normalised dict (or
a ValueError saying what is wrong); ``param_shapes(cfg)`` -> ``{"W1": (d0, d1), "b1":
(d1,), ...}``; ``check_params(cfg, params)`` checks host parameter arrays against it.
Nothing here allocates memory in proportion to the sizes a config claims, so a hostile
config costs nothing to reject. This module imports no network code (``mlp`` imports
it, and so may the checkpoint reader, without an import cycle).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .layers import check_activation
from .losses import LOSSES, check_loss

__all__ = [
    "FORMAT", "MAX_LAYERS", "MAX_PARAMS", "VERSION", "check_config", "check_params",
    "check_sizes", "check_weight_decay", "check_weight_init", "mismatch", "n_params",
    "param_shapes", "to_config",
]

#: the "format" value of a config, and the newest version this xpnn writes and reads
FORMAT = "xpnn-mlp"
VERSION = 1

#: Upper bounds for a config read from a file: 2**30 parameters is 8 GiB in float64,
#: far beyond the book's nets (784-50-10 has 39,760), and keeps every size sum an int64.
MAX_PARAMS = 2**30
MAX_LAYERS = 1000

DTYPES = ("float32", "float64")
WEIGHT_INITS = ("xavier", "he")

#: keys ``to_config`` writes; ``check_config`` ignores any other key (e.g. a
#: checkpoint's "params" and "saved_from" notes), so newer writers can add some.
KEYS = ("format", "version", "sizes", "activations", "loss", "dtype", "weight_decay",
        "weight_init")


def _weight_init_value(init):
    """The JSON form of a weight_init: 'xavier'/'he', a float std, or None (unknown)."""
    if isinstance(init, str):
        return init.lower()
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return float(init)
    return None


def to_config(net) -> dict:
    """The architecture of ``net`` (an MLP) as a JSON-able dict with the keys ``KEYS``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "sizes": [int(s) for s in net.sizes],
        "activations": [str(a) for a in net.activations],
        "loss": str(net.loss_name),
        "dtype": str(net.dtype_name),
        "weight_decay": float(net.weight_decay),
        "weight_init": _weight_init_value(net.weight_init),
    }


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def n_params(sizes) -> int:
    """Parameters of an MLP with these layer widths: weights and biases, sum of
    (d_in + 1) * d_out."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def check_sizes(sizes, name: str = "'sizes'", wrong_type=ValueError,
                bounded: bool = True) -> list[int]:
    """Layer widths as a list of ints: a list or tuple of at least two positive integers.
    ``bounded`` (a config read from a file) also caps them at ``MAX_LAYERS + 1`` widths
    and ``MAX_PARAMS`` parameters. A value of the wrong type raises ``wrong_type`` (the
    constructor's TypeError; ValueError, like every other problem, for a file)."""
    if not isinstance(sizes, (list, tuple)):
        raise wrong_type(f"{name} must be a list of layer widths, got {type(sizes).__name__}")
    if len(sizes) < 2:
        raise ValueError(f"{name} needs at least two layer widths (inputs and outputs), "
                         f"got {_short(sizes)}")
    if bounded and len(sizes) > MAX_LAYERS + 1:
        raise ValueError(f"{name} has {len(sizes)} layer widths, more than the "
                         f"{MAX_LAYERS + 1} a config may ask for")
    for s in sizes:
        if not _is_int(s):
            raise wrong_type(f"layer widths must be integers, got {s!r} in {name} "
                             f"{_short(sizes)}")
        if s < 1:
            raise ValueError(f"layer widths must be positive, got {s} in {name} {_short(sizes)}")
        if bounded and s > MAX_PARAMS:
            raise ValueError(f"{name} holds {s}, outside 1..{MAX_PARAMS}")
    sizes = [int(s) for s in sizes]
    if bounded and n_params(sizes) > MAX_PARAMS:
        raise ValueError(
            f"{name} {_short(sizes)} means {n_params(sizes):,} parameters, more than the "
            f"{MAX_PARAMS:,} a config may ask for"
        )
    return sizes


def _short(items, limit=8) -> str:
    items = list(items)
    if len(items) <= limit:
        return repr(items)
    return "[" + ", ".join(repr(i) for i in items[:limit]) + f", ... ({len(items)} in all)]"


def _check_activations(activations, n_hidden: int) -> list[str]:
    if not isinstance(activations, (list, tuple)):
        raise ValueError(
            f"'activations' must be a list of names, got {type(activations).__name__}"
        )
    if len(activations) != n_hidden:
        raise ValueError(
            f"'activations' has {len(activations)} names for {n_hidden} hidden layers"
        )
    names = []
    for name in activations:
        try:
            names.append(check_activation(name))
        except TypeError as exc:  # a file's wrong value: a ValueError like the rest
            raise ValueError(str(exc)) from None
    return names


def _check_loss(loss, n_out: int) -> str:
    loss = check_loss(loss)
    LOSSES[loss].check_outputs(n_out)
    return loss


def check_weight_decay(value, name: str = "'weight_decay'", wrong_type=ValueError) -> float:
    """A finite weight decay >= 0, as a float; a non-number raises ``wrong_type``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise wrong_type(f"{name} must be a number, got {value!r}")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be >= 0 and finite, got {value!r}")
    return float(value)


def check_weight_init(value, name: str = "'weight_init'", wrong_type=ValueError):
    """'xavier' or 'he' (any case; returned in lower case) or a positive finite std (a
    float); a value that is neither a string nor a number raises ``wrong_type``."""
    if isinstance(value, str):
        if value.lower() not in WEIGHT_INITS:
            raise ValueError(f"{name} must be a positive std, 'xavier' or 'he', not {value!r}")
        return value.lower()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise wrong_type(f"{name} must be a positive std, 'xavier' or 'he', not {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} std must be positive and finite, got {value!r}")
    return float(value)


def check_config(cfg) -> dict:
    """Validate an architecture dict (typically read from an untrusted file) and return
    it normalised, with exactly the keys ``KEYS`` (weight_decay defaults to 0.0 and
    weight_init to None when absent). Raises ValueError naming the first problem."""
    if not isinstance(cfg, dict):
        raise ValueError(f"the architecture must be a JSON object, got {type(cfg).__name__}")
    if cfg.get("format") != FORMAT:
        raise ValueError(f"format {cfg.get('format')!r} is not {FORMAT!r}")
    version = cfg.get("version")
    if not _is_int(version) or not 1 <= version <= VERSION:
        raise ValueError(
            f"format version {version!r} is not one this xpnn reads (1 to {VERSION})"
        )
    missing = [k for k in ("sizes", "activations", "loss", "dtype") if k not in cfg]
    if missing:
        raise ValueError(f"the architecture lacks {', '.join(missing)}")
    sizes = check_sizes(cfg["sizes"])
    dtype = cfg["dtype"]
    if dtype not in DTYPES:
        raise ValueError(f"'dtype' must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return {
        "format": FORMAT,
        "version": int(version),
        "sizes": sizes,
        "activations": _check_activations(cfg["activations"], len(sizes) - 2),
        "loss": _check_loss(cfg["loss"], sizes[-1]),
        "dtype": dtype,
        "weight_decay": check_weight_decay(cfg.get("weight_decay", 0.0)),
        "weight_init": (None if cfg.get("weight_init") is None
                        else check_weight_init(cfg["weight_init"])),
    }


def param_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """``{"W1": (sizes[0], sizes[1]), "b1": (sizes[1],), "W2": ...}`` of a checked config,
    in the order the network stores them."""
    sizes = cfg["sizes"]
    shapes = {}
    for i in range(1, len(sizes)):
        shapes[f"W{i}"] = (sizes[i - 1], sizes[i])
        shapes[f"b{i}"] = (sizes[i],)
    return shapes


def mismatch(missing: list, extra: str) -> str:
    """'missing parameters W2, b2; unexpected entries X' (either part may be empty)."""
    what = []
    if missing:
        what.append(f"missing parameters {', '.join(missing)}")
    if extra:
        what.append(f"unexpected entries {extra}")
    return "; ".join(what)


def check_params(cfg, params) -> dict[str, np.ndarray]:
    """Check host parameter arrays against a checked config: exactly the keys of
    ``param_shapes(cfg)``, those shapes, a floating dtype, every value finite. Returns
    them as NumPy arrays in ``param_shapes`` order; raises ValueError naming the first
    bad parameter (TypeError when ``params`` is not a dict)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays, got {type(params).__name__}")
    shapes = param_shapes(cfg)
    missing = [k for k in shapes if k not in params]
    extra = [str(k) for k in params if k not in shapes]
    if missing or extra:
        raise ValueError(
            f"parameters do not match the architecture {cfg['sizes']}: "
            + mismatch(missing, ", ".join(extra))
        )
    out = {}
    for key, shape in shapes.items():
        value = params[key]
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"parameter {key} must be a host NumPy array, got {type(value).__name__}"
            )
        if value.shape != shape:
            raise ValueError(
                f"parameter {key} has shape {value.shape}, but the architecture "
                f"{cfg['sizes']} needs {shape}"
            )
        if value.dtype.kind != "f":
            raise ValueError(f"parameter {key} has dtype {value.dtype}, not floating")
        if not np.isfinite(value).all():
            raise ValueError(f"parameter {key} contains NaN or inf")
        out[key] = value
    return out
