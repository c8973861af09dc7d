"""Training: the mini-batch runner (``runner``) and the record of a run (``history``)."""

from .history import FIELDS, History
from .runner import TrainingDivergedError, train

__all__ = ["FIELDS", "History", "TrainingDivergedError", "train"]
