"""The errors of training: one base class, so ``except TrainingError`` catches them all."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DivergedError",
    "RunExistsError",
    "RunFolderError",
    "TaskChangedWarning",
    "TrainingError",
]


class TrainingError(RuntimeError):
    """Base class of the training loop's errors."""


class RunExistsError(TrainingError, FileExistsError):
    """``out`` already holds a run and ``resume`` was not asked for."""


class CheckpointError(TrainingError):
    """A checkpoint is missing, unreadable or not an rtrrl checkpoint."""


class DivergedError(TrainingError, FloatingPointError):
    """A NaN or inf appeared in an agent, or a parameter exploded (``rtrrl.loop.exploded``);
    the last good checkpoint was kept."""


class RunFolderError(TrainingError, OSError):
    """The run folder cannot be written (checked before any training, so no work is lost)."""


class TaskChangedWarning(UserWarning):
    """A resumed run's task name stands for another environment than when the run started
    (rtrrl redefined it); the run goes on, on the task as it is defined now."""
