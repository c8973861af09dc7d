"""Files: checkpoints (``checkpoint``), atomic writes (``atomic``) and the bounds
on reading untrusted files (``limits``)."""

from . import checkpoint
from .atomic import atomic_write
from .checkpoint import Checkpoint, load, read_checkpoint, save

__all__ = ["Checkpoint", "atomic_write", "checkpoint", "load", "read_checkpoint", "save"]
