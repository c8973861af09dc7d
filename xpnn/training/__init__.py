"""Training: the mini-batch runner (``runner``), its callbacks (``callbacks``), the pure
step it runs (``step``) and the record of a run (``history``)."""

from .callbacks import Callback, DivergenceGuard, EarlyStopping, LRSchedule, Progress
from .history import FIELDS, History
from .resume import TrainingState, save_resumable
from .runner import Run, TrainingDivergedError, train
from .step import Step, make_step

__all__ = [
    "FIELDS", "Callback", "DivergenceGuard", "EarlyStopping", "History", "LRSchedule",
    "Progress", "Run", "Step", "TrainingDivergedError", "TrainingState", "make_step",
    "save_resumable", "train",
]
