"""The package's error: unusable input for RefactorNet (features, annotations, checkpoints, CAM requests)."""

from __future__ import annotations

__all__ = ["NoCouplingSamples", "RefactorError"]


class RefactorError(ValueError):
    """Unusable input for training, applying or drawing RefactorNet; the message says why in one line."""


class NoCouplingSamples(RefactorError):
    """A class of the training data has no coupling sample, so RefactorNet cannot learn its co-occurrence
    component (the context is too weak or absent for the sample rule's threshold)."""
