"""Optimisers (after the book's ``common/optimizer.py``) and learning-rate schedules."""

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

__all__ = [
    "OPTIMIZERS", "SGD", "AdaGrad", "Adam", "CosineLR", "Momentum", "Nesterov", "Optimizer",
    "RMSprop", "StepLR", "make_optimizer",
]
