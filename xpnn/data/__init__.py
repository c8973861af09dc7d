"""Data sets: MNIST, Fashion-MNIST (``idx``), Sign Language Digits (``images``), toy
data (``toy``) and ``train_test_split`` (``split``); ``datasets`` gathers them all."""

from .datasets import *  # noqa: F403
from .datasets import __all__  # noqa: F401
