"""Optimisers and learning-rate schedules, after the book's ``common/optimizer.py``.

Every optimiser has ``update(params, grads)``: ``params`` and ``grads`` are dicts of
same-shaped arrays (``W1, b1, ...``) of any array-API backend. The update *rebinds*
``params[key]`` to a new array (``params[key] = params[key] - lr * g``) and never
writes into an array, so read-only and immutable arrays work. Per-parameter state
(velocities, squared-gradient averages) is created with ``xp.zeros_like`` the first
time a key is seen and is rebound the same way.

``lr`` is a plain attribute: the trainer's schedule sets ``opt.lr = base_lr * factor``
before each step.

Schedules are callables ``schedule(iteration) -> factor`` (iteration counts from 0,
the step about to be taken).
"""

from __future__ import annotations

import math
import numbers

import array_api_compat

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "make_optimizer",
]


def _check_real(value, what: str):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {value!r}")
    return float(value)


def _check_lr(lr) -> float:
    lr = _check_real(lr, "lr")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    return lr


def _check_unit(value, what: str) -> float:
    """A coefficient in [0, 1)."""
    value = _check_real(value, what)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{what} must lie in [0, 1), got {value!r}")
    return value


class Optimizer:
    """Base class: validates ``lr``, checks that ``grads`` covers ``params``, keeps state."""

    name = "optimizer"

    def __init__(self, lr: float):
        self.lr = _check_lr(lr)

    def hyperparams(self) -> dict:
        """Constructor arguments (current values), e.g. for a run's metadata."""
        return {"lr": self.lr}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _check(params: dict, grads: dict):
        if not isinstance(params, dict) or not isinstance(grads, dict):
            raise TypeError(
                f"update(params, grads) takes two dicts, got {type(params).__name__} "
                f"and {type(grads).__name__}"
            )
        missing = [k for k in params if k not in grads]
        if missing:
            raise ValueError(f"grads has no entry for {', '.join(missing)}")

    @staticmethod
    def _state(store: dict, key: str, like):
        """The state array ``store[key]``, zeros like ``like`` on first use."""
        if key not in store:
            store[key] = array_api_compat.array_namespace(like).zeros_like(like)
        return store[key]

    def update(self, params: dict, grads: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    """W <- W - lr * dW."""

    name = "sgd"

    def __init__(self, lr: float = 0.01):
        super().__init__(lr)

    def update(self, params: dict, grads: dict) -> None:
        self._check(params, grads)
        lr = self.lr
        for key in params:
            params[key] = params[key] - lr * grads[key]


class Momentum(Optimizer):
    """v <- momentum * v - lr * dW;  W <- W + v."""

    name = "momentum"

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(lr)
        self.momentum = _check_unit(momentum, "momentum")
        self.v: dict = {}

    def hyperparams(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum}

    def update(self, params: dict, grads: dict) -> None:
        self._check(params, grads)
        lr, mu = self.lr, self.momentum
        for key in params:
            v = mu * self._state(self.v, key, params[key]) - lr * grads[key]
            self.v[key] = v
            params[key] = params[key] + v


class Nesterov(Momentum):
    """Nesterov momentum (Bengio et al. 2012, arXiv 1212.0901, eq. 7), from the OLD v:
    W <- W + momentum^2 * v - (1 + momentum) * lr * dW;  v <- momentum * v - lr * dW."""

    name = "nesterov"

    def update(self, params: dict, grads: dict) -> None:
        self._check(params, grads)
        lr, mu = self.lr, self.momentum
        for key in params:
            g = grads[key]
            v_old = self._state(self.v, key, params[key])
            params[key] = params[key] + mu * mu * v_old - (1 + mu) * lr * g
            self.v[key] = mu * v_old - lr * g


class AdaGrad(Optimizer):
    """h <- h + dW * dW;  W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    name = "adagrad"
    eps = 1e-7

    def __init__(self, lr: float = 0.01):
        super().__init__(lr)
        self.h: dict = {}

    def update(self, params: dict, grads: dict) -> None:
        self._check(params, grads)
        lr = self.lr
        for key in params:
            g = grads[key]
            xp = array_api_compat.array_namespace(g)
            h = self._state(self.h, key, params[key]) + g * g
            self.h[key] = h
            params[key] = params[key] - lr * g / (xp.sqrt(h) + self.eps)


class RMSprop(Optimizer):
    """h <- decay_rate * h + (1 - decay_rate) * dW^2;  W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    name = "rmsprop"
    eps = 1e-7

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99):
        super().__init__(lr)
        self.decay_rate = _check_unit(decay_rate, "decay_rate")
        self.h: dict = {}

    def hyperparams(self) -> dict:
        return {"lr": self.lr, "decay_rate": self.decay_rate}

    def update(self, params: dict, grads: dict) -> None:
        self._check(params, grads)
        lr, rho = self.lr, self.decay_rate
        for key in params:
            g = grads[key]
            xp = array_api_compat.array_namespace(g)
            h = rho * self._state(self.h, key, params[key]) + (1 - rho) * (g * g)
            self.h[key] = h
            params[key] = params[key] - lr * g / (xp.sqrt(h) + self.eps)


class Adam(Optimizer):
    """Adam as in the book (bias correction folded into the step size):

    t <- t + 1;  lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m <- m + (1 - beta1) * (dW - m);  v <- v + (1 - beta2) * (dW^2 - v)
    W <- W - lr_t * m / (sqrt(v) + 1e-7)
    """

    name = "adam"
    eps = 1e-7

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999):
        super().__init__(lr)
        self.beta1 = _check_unit(beta1, "beta1")
        self.beta2 = _check_unit(beta2, "beta2")
        self.iter = 0
        self.m: dict = {}
        self.v: dict = {}

    def hyperparams(self) -> dict:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2}

    def update(self, params: dict, grads: dict) -> None:
        self._check(params, grads)
        self.iter += 1
        b1, b2 = self.beta1, self.beta2
        lr_t = self.lr * math.sqrt(1.0 - b2**self.iter) / (1.0 - b1**self.iter)
        for key in params:
            g = grads[key]
            xp = array_api_compat.array_namespace(g)
            m = self._state(self.m, key, params[key])
            v = self._state(self.v, key, params[key])
            m = m + (1 - b1) * (g - m)
            v = v + (1 - b2) * (g * g - v)
            self.m[key], self.v[key] = m, v
            params[key] = params[key] - lr_t * m / (xp.sqrt(v) + self.eps)


#: optimiser name -> class
OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name: str, **kwargs) -> Optimizer:
    """Build the optimiser called ``name`` (see ``OPTIMIZERS``) with keyword arguments,
    e.g. ``make_optimizer("adam", lr=1e-3)``."""
    if not isinstance(name, str) or name.strip().lower() not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}"
        )
    cls = OPTIMIZERS[name.strip().lower()]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            import inspect

            allowed = [p for p in inspect.signature(cls).parameters]
            raise TypeError(
                f"{name!r} takes the arguments {', '.join(allowed)}; got {sorted(kwargs)}"
            ) from None
        raise
