"""argparse ``type=`` functions of the ``xpnn`` command line: each parses one flag
value or raises ``argparse.ArgumentTypeError`` with the message argparse shows after
the flag's name. Plain argparse and math, nothing else of xpnn, so that any module
adding flags (``xpnn.cli.main``, ``xpnn.dist.cli``) can use them."""

from __future__ import annotations

import argparse
import math

__all__ = [
    "ACTIVATION_NAMES", "activation", "batch_size", "finite_float", "int_at_least",
    "nonneg_float", "nonneg_int", "positive_float", "positive_int", "positive_int_or_full",
    "weight_init",
]

ACTIVATION_NAMES = ("sigmoid", "tanh", "relu", "elu", "identity")


def int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, called ``what`` in its messages."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
nonneg_int = int_at_least(0, "an integer >= 0")
positive_int_or_full = int_at_least(1, "a positive integer or 'full'")


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def weight_init(text: str):
    """A positive finite std, or 'xavier' / 'he'."""
    if text.strip().lower() in ("xavier", "he"):
        return text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive std (e.g. 0.01), 'xavier' or 'he', got {text!r}"
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"the std must be positive and finite, got {text!r}")
    return value


def batch_size(text: str):
    """A positive integer, or 'full'."""
    if text.strip().lower() == "full":
        return "full"
    return positive_int_or_full(text)


def activation(text: str) -> str:
    """One of ``ACTIVATION_NAMES`` (any case)."""
    name = text.strip().lower()
    if name not in ACTIVATION_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown activation {text!r} (choose from {', '.join(ACTIVATION_NAMES)})"
        )
    return name
