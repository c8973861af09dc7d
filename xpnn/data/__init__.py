"""Data sets: MNIST, Fashion-MNIST, Sign Language Digits (``datasets``), toy data and
``train_test_split``."""

from .datasets import *  # noqa: F403
from .datasets import __all__  # noqa: F401
