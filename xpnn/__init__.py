"""xpnn: the classic from-scratch neural network, written once against the Python
Array API standard, running unchanged on NumPy, CuPy, PyTorch and array-api-strict."""

from . import data, io, nn, optim, plotting, training
from .backend import (
    BACKENDS,
    asarray,
    available_backends,
    backend_name,
    get_namespace,
    to_numpy,
)
from .io import checkpoint
from .io.checkpoint import Checkpoint, load, read_checkpoint, save
from .nn.gradcheck import GradientCheck, ParamCheck, gradient_check
from .nn.layers import ACTIVATIONS, ELU, Affine, Identity, ReLU, Sigmoid, Tanh
from .nn.losses import (
    LOSSES,
    BinaryCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
    binary_cross_entropy,
    mse,
    softmax_cross_entropy,
)
from .nn.mlp import MLP
from .nn.numerical import numerical_gradient
from .optim import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    CosineLR,
    Momentum,
    Nesterov,
    RMSprop,
    StepLR,
    make_optimizer,
)
from .training import History, TrainingDivergedError, make_step, save_resumable, train

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Checkpoint",
    "Adam",
    "CosineLR",
    "History",
    "Momentum",
    "Nesterov",
    "RMSprop",
    "StepLR",
    "TrainingDivergedError",
    "checkpoint",
    "data",
    "load",
    "make_optimizer",
    "make_step",
    "optim",
    "nn",
    "io",
    "training",
    "plotting",
    "read_checkpoint",
    "save",
    "save_resumable",
    "train",
    "ACTIVATIONS",
    "BACKENDS",
    "ELU",
    "LOSSES",
    "MLP",
    "Affine",
    "BinaryCrossEntropy",
    "GradientCheck",
    "Identity",
    "MeanSquaredError",
    "ParamCheck",
    "ReLU",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "asarray",
    "available_backends",
    "backend_name",
    "binary_cross_entropy",
    "get_namespace",
    "gradient_check",
    "mse",
    "numerical_gradient",
    "softmax_cross_entropy",
    "to_numpy",
]
