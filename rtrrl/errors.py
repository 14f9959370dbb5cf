"""The errors of training: one base class, so ``except TrainingError`` catches them all."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DivergedError",
    "RunExistsError",
    "RunFolderError",
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
