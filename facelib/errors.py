"""The facelib exception hierarchy.

Every error a user can trigger with bad input derives from :class:`FacelibError`, and its
message names the file or argument, what was expected, what was found and, where there is
one, the next step.
"""
from __future__ import annotations

import os
from typing import Sequence

__all__ = [
    "FacelibError",
    "InputError",
    "ShapeError",
    "RangeError",
    "CheckpointError",
    "AlignmentError",
    "NoFaceError",
    "MultipleFacesError",
    "DependencyError",
    "OptimisationError",
    "BatchInterrupted",
    "MemoryLimitError",
    "LaunchError",
]


class FacelibError(Exception):
    """Base class of every error raised on purpose by facelib."""


class InputError(FacelibError, ValueError):
    """An argument or input file is not what the function accepts."""


class ShapeError(InputError):
    """A tensor has the wrong shape.

    Attributes:
        actual_shape: the shape that was passed.
        expected_shape: the expected shape; ``None`` entries are free dimensions.
    """

    def __init__(self, message: str, *, actual_shape: Sequence[int] | None = None,
                 expected_shape: Sequence[int | None] | None = None) -> None:
        super().__init__(message)
        self.actual_shape = tuple(actual_shape) if actual_shape is not None else None
        self.expected_shape = tuple(expected_shape) if expected_shape is not None else None


class RangeError(InputError):
    """A value lies outside its allowed range."""


class MemoryLimitError(RangeError):
    """The estimated memory of a run exceeds what the device has free (raised before allocating)."""


class CheckpointError(FacelibError):
    """A weight file is missing, unreadable, of another kind, or of an unknown layout."""

    def __init__(self, path: "str | os.PathLike[str] | None", problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        where = self.path if self.path is not None else "<state dict>"
        super().__init__(f"{where}: {problem}")


class AlignmentError(FacelibError):
    """Face alignment could not be done on an image."""


class NoFaceError(AlignmentError):
    """No face was found in an image."""


class MultipleFacesError(AlignmentError):
    """More faces were found than the caller allowed."""


class DependencyError(FacelibError, ImportError):
    """An optional dependency (dlib, ipywidgets, ...) or a weight file it needs is missing."""


class OptimisationError(FacelibError):
    """An optimisation diverged (NaN/inf loss). ``best`` holds the best result reached before it."""

    def __init__(self, message: str, best: object = None) -> None:
        super().__init__(message)
        self.best = best


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch command. ``result`` holds what was finished, skipped and not reached
    (its ``summary()`` says so); finished items are complete on disk."""

    def __init__(self, result: object) -> None:
        super().__init__("interrupted")
        self.result = result


class LaunchError(FacelibError):
    """A multi-process (torchrun) launch cannot go on: another rank gave no sign of life and
    never reported its results, or the launch's key-value store is gone. This rank's finished
    results are complete on disk; rerunning the same command goes on from them."""


def check_shape(name: str, x, spec: Sequence[int | None]) -> None:
    """Raise :class:`ShapeError` unless ``x.shape`` matches ``spec`` (``None`` = any size)."""
    shape = tuple(x.shape)
    ok = len(shape) == len(spec) and all(s is None or s == d for s, d in zip(spec, shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in spec) + ")"
        raise ShapeError(f"{name}: expected shape {want}, got {shape}",
                         actual_shape=shape, expected_shape=spec)
