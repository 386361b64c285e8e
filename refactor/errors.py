"""The package's error: unusable input for RefactorNet (features, annotations, checkpoints, CAM requests),
and the check of a feature folder argument."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["NoCouplingSamples", "RefactorError", "check_feature_folder"]


class RefactorError(ValueError):
    """Unusable input for training, applying or drawing RefactorNet; the message says why in one line."""


class NoCouplingSamples(RefactorError):
    """A class of the training data has no coupling sample, so RefactorNet cannot learn its co-occurrence
    component (the context is too weak or absent for the sample rule's threshold)."""


def check_feature_folder(path: str | os.PathLike, what: str = "feature folder") -> Path:
    """``path`` as a folder of feature files to read: it must be an existing folder (whether it holds any
    ``*.h5`` is the reader's check). Returns it.

    Raises:
        RefactorError: ``<what> <path>: no such folder`` or ``<what> <path>: not a folder``.
    """
    path = Path(path)
    if not path.exists():
        raise RefactorError(f"{what} {path}: no such folder")
    if not path.is_dir():
        raise RefactorError(f"{what} {path}: not a folder")
    return path
