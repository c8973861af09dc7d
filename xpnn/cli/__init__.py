"""The ``xpnn`` command line (``xpnn train``, ``xpnn gradcheck``; ``python -m xpnn``)."""

from .main import PRESETS, build_parser, main

__all__ = ["PRESETS", "build_parser", "main"]
