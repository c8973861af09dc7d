"""The ``xpnn`` command line (``xpnn train``, ``gradcheck``, ``evaluate``, ``predict``;
``python -m xpnn``)."""

from .main import PRESETS, build_parser, main

__all__ = ["PRESETS", "build_parser", "main"]
