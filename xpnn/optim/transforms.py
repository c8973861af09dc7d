"""Optimisers as pure pairs of functions (issue 8), written once against the array API.

``sgd()``, ``momentum()``, ``nesterov()``, ``adagrad()``, ``rmsprop()`` and ``adam()``
return a ``GradientTransformation(init, update)``:

- ``init(params) -> state``: ``state[key]`` is a dict of per-parameter state arrays
  (zeros shaped like ``params[key]``; empty for SGD) for every key of ``params``, and
  ``state["count"]`` is the number of updates taken, a 0-d int64 array on the params'
  device.
- ``update(grads, state, params, lr) -> (new_params, new_state)``: one step. ``lr`` is a
  Python number >= 0 (0: a schedule annealed to zero) or a 0-d array of the params'
  dtype. Nothing is mutated: the results are new dicts of new arrays, so the function
  can be traced by ``jax.jit`` and ``torch.compile``. There is no Python-side counter:
  Adam's bias correction is computed from ``state["count"]`` on the device.

The formulas are the book's (``common/optimizer.py``), except Nesterov, which follows the
paper the book cites (Bengio et al. 2012, arXiv 1212.0901, eq. 7) and steps from the old
velocity (the book's code applies the already-updated one).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat

__all__ = [
    "GradientTransformation",
    "adagrad",
    "adam",
    "checked_parts",
    "elementwise_parts",
    "momentum",
    "nesterov",
    "rmsprop",
    "sgd",
]

#: added to the root of the squared-gradient average, as in the book
EPS = 1e-7
#: the state entry holding the update count
COUNT = "count"


class GradientTransformation(NamedTuple):
    """A pure optimiser: ``init(params) -> state``,
    ``update(grads, state, params, lr) -> (new_params, new_state)``."""

    init: Callable[[dict], dict]
    update: Callable[[dict, dict, dict, Any], tuple[dict, dict]]


def _check_real(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {value!r}")
    return float(value)


def _check_positive_int(value, what: str) -> int:
    """An integer >= 1 (a count: iterations, batch rows, a schedule's period)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _check_lr(lr, allow_zero: bool = False) -> float:
    """A positive finite lr; with ``allow_zero`` also 0 (a schedule may anneal to 0)."""
    lr = _check_real(lr, "lr")
    if allow_zero and lr == 0:
        return lr
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    return lr


def _check_unit(value, what: str) -> float:
    """A coefficient in [0, 1)."""
    value = _check_real(value, what)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{what} must lie in [0, 1), got {value!r}")
    return value


def _check_params(params, what: str = "params") -> None:
    if not isinstance(params, dict) or not params:
        raise TypeError(f"{what} must be a non-empty dict of arrays, got {params!r}")
    if COUNT in params:
        raise ValueError(f"{what} may not have a parameter called {COUNT!r}: the optimizer "
                         "state keeps its update count under that name")


def _check_step_lr(lr, params: dict):
    """A Python number is checked by value (finite, >= 0); a 0-d array (possibly traced)
    by shape and dtype only, since its value is not known while tracing."""
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        return _check_lr(lr, allow_zero=True)
    if not array_api_compat.is_array_api_obj(lr) or lr.ndim != 0:
        raise TypeError(f"lr must be a number >= 0 or a 0-d array, got {lr!r}")
    for key, p in params.items():
        if lr.dtype != p.dtype:
            raise TypeError(f"lr has dtype {lr.dtype} but params[{key!r}] has dtype {p.dtype}; "
                            "pass a Python float or a 0-d array of the params' dtype")
    return lr


def _check_same_kind(key: str, g, p) -> None:
    """grads[key] must be an array of params[key]'s library and dtype: a torch gradient
    for a NumPy parameter failed inside the arithmetic, and a float64 gradient silently
    turned a float32 parameter into float64."""
    if not array_api_compat.is_array_api_obj(g):
        raise TypeError(f"grads[{key!r}] must be an array, got {type(g).__name__}")
    try:
        array_api_compat.array_namespace(p, g)
    except TypeError:
        raise TypeError(
            f"grads[{key!r}] is a {_library(g)} array but params[{key!r}] is a "
            f"{_library(p)} array; move one with xpnn.asarray(..., backend=...)"
        ) from None
    if g.dtype != p.dtype:
        raise TypeError(f"grads[{key!r}] has dtype {g.dtype} but params[{key!r}] has dtype "
                        f"{p.dtype}; cast the gradient to the parameter's dtype")


def _library(a) -> str:
    return type(a).__module__.split(".")[0]


def _check_state(grads, state, params: dict, slots: tuple[str, ...]) -> None:
    """Shapes and keys are static, so these checks also run under jit tracing."""
    _check_params(params)
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of arrays, got {type(grads).__name__}")
    missing = [k for k in params if k not in grads]
    if missing:
        raise ValueError(f"grads has no entry for {', '.join(missing)}")
    if not isinstance(state, dict) or COUNT not in state:
        raise TypeError("state must be the dict made by this optimizer's init(params)")
    state_keys = sorted(k for k in state if k != COUNT)
    if state_keys != sorted(params):
        raise ValueError(
            f"the optimizer state was built for the parameters {', '.join(state_keys)} but "
            f"params has {', '.join(sorted(params))}; reset() the optimizer (or call init) "
            "for a different network"
        )
    for key, p in params.items():
        g = grads[key]
        _check_same_kind(key, g, p)
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"grads[{key!r}] has shape {tuple(g.shape)} but params[{key!r}] "
                             f"has shape {tuple(p.shape)}")
        if set(state[key]) != set(slots):
            raise ValueError(f"state[{key!r}] holds {sorted(state[key])}, expected "
                             f"{sorted(slots)}: it was made by another optimizer")
        for slot in slots:
            s = state[key][slot]
            if tuple(s.shape) != tuple(p.shape) or s.dtype != p.dtype:
                raise ValueError(
                    f"the optimizer state for {key!r} has shape {tuple(s.shape)} ({s.dtype}) "
                    f"but params[{key!r}] has shape {tuple(p.shape)} ({p.dtype}); it was built "
                    "for another network: reset() the optimizer (or call init)"
                )


# step(xp, g, p, slot_arrays, lr, count) -> (new_p, new_slot_arrays)
Step = Callable[[Any, Any, Any, dict, Any, Any], tuple[Any, dict]]
# prepare(xp, lr, count, dtype) -> what step receives as lr
Prepare = Callable[[Any, Any, Any, Any], Any]


def _transformation(slots: tuple[str, ...], step: Step,
                    prepare: Prepare | None = None) -> GradientTransformation:
    """The init/update pair around a per-parameter ``step``; ``slots`` names its state
    arrays. With ``prepare``, ``step`` receives ``prepare(xp, lr, count, dtype)`` as its
    lr, computed once per update and parameter dtype (Adam's bias-corrected rate) instead
    of once per parameter. ``update`` validates its arguments on every call; its two
    halves are ``update.check`` and ``update.apply`` (see ``checked_parts``)."""

    def init(params: dict) -> dict:
        _check_params(params)
        xp = array_api_compat.array_namespace(*params.values())
        device = array_api_compat.device(next(iter(params.values())))
        state: dict = {key: {slot: xp.zeros_like(p) for slot in slots}
                       for key, p in params.items()}
        state[COUNT] = xp.zeros((), dtype=xp.int64, device=device)
        return state

    def check(grads: dict, state: dict, params: dict, lr):
        """Raise on a layout that does not fit (keys, shapes, dtypes, lr); return lr."""
        _check_state(grads, state, params, slots)
        return _check_step_lr(lr, params)

    def apply(grads: dict, state: dict, params: dict, lr, xp) -> tuple[dict, dict]:
        """The update itself, on arguments ``check`` accepted. The new state keeps the
        key order of ``state`` (torch.compile guards on it and would recompile)."""
        count = state[COUNT] + 1
        new_params, new_slots = {}, {COUNT: count}
        prepared = []  # (dtype, prepare's result): a list, as dtypes need not hash
        for key, p in params.items():
            rate = lr
            if prepare is not None:
                known = [r for dtype, r in prepared if dtype == p.dtype]
                if known:
                    rate = known[0]
                else:
                    rate = prepare(xp, lr, count, p.dtype)
                    prepared.append((p.dtype, rate))
            new_params[key], new_slots[key] = step(xp, grads[key], p, state[key], rate, count)
        return new_params, {key: new_slots[key] for key in state}

    def apply_one(grad, param, slot_arrays: dict, lr, count, xp):
        """The update of one array and its slots, ``count`` being the count after this
        update: element-wise, so one call on the concatenation of every parameter (and
        of every slot) is ``apply`` on all of them at once (``xpnn.training.Step``)."""
        rate = lr if prepare is None else prepare(xp, lr, count, param.dtype)
        return step(xp, grad, param, slot_arrays, rate, count)

    def update(grads: dict, state: dict, params: dict, lr) -> tuple[dict, dict]:
        lr = check(grads, state, params, lr)
        return apply(grads, state, params, lr,
                     array_api_compat.array_namespace(*params.values()))

    update.check, update.apply = check, apply
    update.slots, update.apply_one = slots, apply_one
    return GradientTransformation(init, update)


def checked_parts(transform):
    """``(check, apply)`` of a transformation made here, None for any other.

    ``check(grads, state, params, lr) -> lr`` raises on a layout that does not fit;
    ``apply(grads, state, params, lr, xp) -> (new_params, new_state)`` is the update
    without validation (new_state in the key order of ``state``). A caller that
    checked one layout once (``xpnn.training.Step``, ``Optimizer.update``) calls
    ``apply`` while the layout stays the same: its arrays' shapes and dtypes cannot
    change under ``apply``."""
    update = getattr(transform, "update", None)
    check, apply = getattr(update, "check", None), getattr(update, "apply", None)
    return None if check is None or apply is None else (check, apply)


def elementwise_parts(transform):
    """``(slots, apply_one)`` of a transformation made here (every one is element-wise:
    each parameter's update reads only its own gradient, state and the shared scalars),
    None for any other. ``apply_one(grad, param, slot_arrays, lr, count, xp) ->
    (new_param, new_slot_arrays)`` updates one array without validation; ``count`` is
    the update count after this update (a 0-d int array)."""
    update = getattr(transform, "update", None)
    slots, apply_one = getattr(update, "slots", None), getattr(update, "apply_one", None)
    if slots is None or apply_one is None or checked_parts(transform) is None:
        return None
    return tuple(slots), apply_one


def sgd() -> GradientTransformation:
    """W <- W - lr * dW."""

    def step(xp, g, p, s, lr, count):
        return p - lr * g, {}

    return _transformation((), step)


def momentum(momentum: float = 0.9) -> GradientTransformation:
    """v <- momentum * v - lr * dW;  W <- W + v."""
    mu = _check_unit(momentum, "momentum")

    def step(xp, g, p, s, lr, count):
        v = mu * s["v"] - lr * g
        return p + v, {"v": v}

    return _transformation(("v",), step)


def nesterov(momentum: float = 0.9) -> GradientTransformation:
    """Nesterov momentum (Bengio et al. 2012, eq. 7), from the old velocity v:
    W <- W + momentum^2 * v - (1 + momentum) * lr * dW;  v <- momentum * v - lr * dW."""
    mu = _check_unit(momentum, "momentum")

    def step(xp, g, p, s, lr, count):
        # mu^2 v - (1 + mu) lr dW = mu * v_new - lr * dW, with lr * dW computed once
        step_g = lr * g
        v = mu * s["v"] - step_g
        return p + mu * v - step_g, {"v": v}

    return _transformation(("v",), step)


def _scaled_step(p, g, h, lr, xp):
    """W - lr * dW / (sqrt(h) + 1e-7), the AdaGrad/RMSprop step."""
    return p - lr * g / (xp.sqrt(h) + EPS)


def adagrad() -> GradientTransformation:
    """h <- h + dW * dW;  W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    def step(xp, g, p, s, lr, count):
        h = s["h"] + g * g
        return _scaled_step(p, g, h, lr, xp), {"h": h}

    return _transformation(("h",), step)


def rmsprop(decay_rate: float = 0.99) -> GradientTransformation:
    """h <- decay_rate * h + (1 - decay_rate) * dW^2;  W <- W - lr * dW / (sqrt(h) + 1e-7)."""
    rho = _check_unit(decay_rate, "decay_rate")

    def step(xp, g, p, s, lr, count):
        h = rho * s["h"] + (1 - rho) * (g * g)
        return _scaled_step(p, g, h, lr, xp), {"h": h}

    return _transformation(("h",), step)


def adam(beta1: float = 0.9, beta2: float = 0.999) -> GradientTransformation:
    """Adam as in the book (bias correction folded into the step size), t = the count
    after this update:

    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m <- m + (1 - beta1) * (dW - m);  v <- v + (1 - beta2) * (dW^2 - v)
    W <- W - lr_t * m / (sqrt(v) + 1e-7)
    """
    b1 = _check_unit(beta1, "beta1")
    b2 = _check_unit(beta2, "beta2")

    def prepare(xp, lr, count, dtype):
        # int arrays do not mix with Python floats in the array API: cast t first
        t = xp.astype(count, dtype)
        return lr * xp.sqrt(1.0 - b2**t) / (1.0 - b1**t)

    def step(xp, g, p, s, lr_t, count):
        m = s["m"] + (1 - b1) * (g - s["m"])
        v = s["v"] + (1 - b2) * (g * g - s["v"])
        return p - lr_t * m / (xp.sqrt(v) + EPS), {"m": m, "v": v}

    return _transformation(("m", "v"), step, prepare)
