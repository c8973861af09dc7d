"""Optimisers (after the book's ``common/optimizer.py``): pure ``init``/``update`` pairs
(``sgd()``, ``adam()``, ...) and the book's objects around them (``SGD``, ``Adam``, ...);
learning-rate schedules."""

from .optimizers import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    Optimizer,
    RMSprop,
    make_optimizer,
)
from .schedules import CosineLR, StepLR
from .transforms import (
    GradientTransformation,
    adagrad,
    adam,
    momentum,
    nesterov,
    rmsprop,
    sgd,
)

__all__ = [
    "OPTIMIZERS", "SGD", "AdaGrad", "Adam", "CosineLR", "GradientTransformation", "Momentum",
    "Nesterov", "Optimizer", "RMSprop", "StepLR", "adagrad", "adam", "make_optimizer",
    "momentum", "nesterov", "rmsprop", "sgd",
]
