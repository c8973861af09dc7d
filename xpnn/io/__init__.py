"""Files: checkpoints (``checkpoint``) and atomic writes (``atomic``)."""

from . import checkpoint
from .atomic import atomic_write
from .checkpoint import load, save

__all__ = ["atomic_write", "checkpoint", "load", "save"]
