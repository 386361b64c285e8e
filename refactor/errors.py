"""The package's error: unusable input for RefactorNet (features, annotations, checkpoints, CAM requests)."""

from __future__ import annotations

__all__ = ["RefactorError"]


class RefactorError(ValueError):
    """Unusable input for training, applying or drawing RefactorNet; the message says why in one line."""
