"""The network: layers (``layers``), losses (``losses``), the MLP (``mlp``), numerical
gradients (``numerical``) and gradient checking (``gradcheck``)."""

from .gradcheck import GradientCheck, ParamCheck, gradient_check
from .layers import ACTIVATIONS, ELU, Affine, Identity, ReLU, Sigmoid, Tanh
from .losses import (
    LOSSES,
    BinaryCrossEntropy,
    MeanSquaredError,
    SoftmaxCrossEntropy,
    binary_cross_entropy,
    mse,
    softmax_cross_entropy,
)
from .mlp import MLP
from .numerical import numerical_gradient

__all__ = [
    "ACTIVATIONS", "ELU", "LOSSES", "MLP", "Affine", "BinaryCrossEntropy", "GradientCheck",
    "Identity", "MeanSquaredError", "ParamCheck", "ReLU", "Sigmoid", "SoftmaxCrossEntropy",
    "Tanh", "binary_cross_entropy", "gradient_check", "mse", "numerical_gradient",
    "softmax_cross_entropy",
]
