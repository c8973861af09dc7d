"""Files: checkpoints (``checkpoint``), atomic writes (``atomic``) and the bounds
on reading untrusted files (``limits``)."""

from . import checkpoint
from .atomic import atomic_write
from .checkpoint import load, save

__all__ = ["atomic_write", "checkpoint", "load", "save"]
