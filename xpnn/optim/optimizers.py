"""The book's optimiser objects (``common/optimizer.py``), as thin wrappers around the
pure pairs of ``xpnn.optim.transforms``.

Every optimiser has ``update(params, grads)``: ``params`` and ``grads`` are dicts of
same-shaped arrays (``W1, b1, ...``) of any array-API backend. The update *rebinds*
``params[key]`` to a new array and never writes into an array, so read-only and
immutable arrays work. ``self.transform`` is the pure pair; ``self.state`` its state,
built by the first ``update`` and cleared by ``reset()``. An optimiser whose state was
built for another network (other keys or shapes) raises ValueError.

``lr`` is a validated property: a negative, NaN, infinite or non-number value raises at
once; the constructors want lr > 0, and 0 may be set later (a schedule annealed to 0).
``update`` uses it; the trainer reads it once as the base rate and keeps each step's rate
(``base_lr * factor`` under a schedule) in the step state's ``state["lr"]``, passed to
``transform.update``, so ``opt.lr`` is not changed while training (a book-style object
without a ``transform`` gets ``lr`` set before each step instead). The other
coefficients (momentum, decay_rate, beta1, beta2) are fixed at construction.
"""

from __future__ import annotations

import array_api_compat

from . import transforms
from .transforms import GradientTransformation, _check_lr

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

def _coefficient(name: str) -> property:
    return property(lambda self: self._coefficients[name],
                    doc=f"{name}, fixed at construction")


class Optimizer:
    """Base class: holds ``lr``, the pure pair ``transform`` and its ``state``.

    Subclasses set ``name`` and ``make_transform`` (a function of the coefficients, e.g.
    ``transforms.momentum``) and pass their coefficients to ``__init__``.
    """

    name = "optimizer"

    def __init__(self, lr: float, **coefficients):
        self.lr = _check_lr(lr)  # a zero base rate would never train
        self.transform: GradientTransformation = type(self).make_transform(**coefficients)
        # validated by make_transform, so float() is safe
        self._coefficients = {k: float(v) for k, v in coefficients.items()}
        self.state: dict | None = None
        # the layout last validated and the state it produced (see update)
        self._layout, self._checked_state, self._xp = None, None, None

    @property
    def lr(self) -> float:
        """The learning rate of the next update: finite and >= 0 (the constructor wants
        > 0; a schedule may anneal to 0)."""
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = _check_lr(value, allow_zero=True)

    def hyperparams(self) -> dict:
        """Constructor arguments (current values), e.g. for a run's metadata."""
        return {"lr": self.lr, **self._coefficients}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"

    def reset(self) -> None:
        """Forget the state (velocities, averages, update count)."""
        self.state = None

    def update(self, params: dict, grads: dict) -> None:
        """One step: rebinds every ``params[key]``; the state advances only on success.

        The arguments are validated in full when their layout (keys, array types,
        shapes, dtypes) differs from the last call's or ``state`` was replaced;
        otherwise the checked layout is reused and only the maths runs."""
        if not isinstance(params, dict) or not isinstance(grads, dict):
            raise TypeError(
                f"update(params, grads) takes two dicts, got {type(params).__name__} "
                f"and {type(grads).__name__}"
            )
        state = self.state if self.state is not None else self.transform.init(params)
        parts = transforms.checked_parts(self.transform)
        layout = _layout(params, grads) if parts is not None else None
        if layout is None or layout != self._layout or state is not self._checked_state:
            new_params, new_state = self.transform.update(grads, state, params, self.lr)
            self._layout = layout
            self._xp = array_api_compat.array_namespace(*params.values())
        else:  # lr is a checked float (the property), the layout is the last call's
            new_params, new_state = parts[1](grads, state, params, self.lr, self._xp)
        self.state = self._checked_state = new_state
        params.update(new_params)


def _layout(params: dict, grads: dict):
    """What ``transform.update`` validates about its arguments, as a comparable tuple
    (key, array type, shape, dtype of the parameter; array type, shape of the gradient),
    or None when a gradient is missing or not an array (the full check names it)."""
    try:
        return tuple((key, type(p), p.shape, p.dtype, type(grads[key]), grads[key].shape)
                     for key, p in params.items())
    except (KeyError, AttributeError):
        return None


class SGD(Optimizer):
    """W <- W - lr * dW."""

    name = "sgd"
    make_transform = staticmethod(transforms.sgd)

    def __init__(self, lr: float = 0.01):
        super().__init__(lr)


class Momentum(Optimizer):
    """v <- momentum * v - lr * dW;  W <- W + v."""

    name = "momentum"
    make_transform = staticmethod(transforms.momentum)
    momentum = _coefficient("momentum")

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(lr, momentum=momentum)


class Nesterov(Momentum):
    """Nesterov momentum (Bengio et al. 2012, arXiv 1212.0901, eq. 7), from the OLD v:
    W <- W + momentum^2 * v - (1 + momentum) * lr * dW;  v <- momentum * v - lr * dW."""

    name = "nesterov"
    make_transform = staticmethod(transforms.nesterov)


class AdaGrad(Optimizer):
    """h <- h + dW * dW;  W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    name = "adagrad"
    make_transform = staticmethod(transforms.adagrad)

    def __init__(self, lr: float = 0.01):
        super().__init__(lr)


class RMSprop(Optimizer):
    """h <- decay_rate * h + (1 - decay_rate) * dW^2;  W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    name = "rmsprop"
    make_transform = staticmethod(transforms.rmsprop)
    decay_rate = _coefficient("decay_rate")

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99):
        super().__init__(lr, decay_rate=decay_rate)


class Adam(Optimizer):
    """Adam as in the book (bias correction folded into the step size):

    t <- t + 1;  lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m <- m + (1 - beta1) * (dW - m);  v <- v + (1 - beta2) * (dW^2 - v)
    W <- W - lr_t * m / (sqrt(v) + 1e-7)
    """

    name = "adam"
    make_transform = staticmethod(transforms.adam)
    beta1 = _coefficient("beta1")
    beta2 = _coefficient("beta2")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999):
        super().__init__(lr, beta1=beta1, beta2=beta2)


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
