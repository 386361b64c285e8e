"""Temporal segment geometry, one implementation for NumPy arrays and PyTorch tensors.

A segment is ``(start, end)`` with ``end >= start``, in any unit (seconds, snippet indices) as
long as both operands share it. Every function broadcasts over leading dimensions like the
arithmetic it is made of: ``segment_iou(a[:, None], b[None])`` gives all pairs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["segment_intersection", "segment_iou"]

Array = TypeVar("Array", "np.ndarray", "torch.Tensor")


def _is_tensor(x) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch (a tensor exists only once it is loaded),
    so NumPy-only users (``python -m evaluate``) do not pay torch's start-up time."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def segment_intersection(a: Array, b: Array) -> Array:
    """Length of the overlap of segments, elementwise with broadcasting.

    Args:
        a (array[..., 2]), b (array[..., 2]): (start, end), broadcastable; both NumPy or both torch.

    Returns:
        array[...]: ``max(0, min(a_end, b_end) - max(a_start, b_start))``.
    """
    if _is_tensor(a):
        torch = sys.modules["torch"]
        return (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    return np.clip(np.minimum(a[..., 1], b[..., 1]) - np.maximum(a[..., 0], b[..., 0]), 0, None)


def segment_iou(a: Array, b: Array) -> Array:
    """Temporal IoU of segments, elementwise with broadcasting (``a[:, None], b[None]`` for all pairs).

    Args:
        a (array[..., 2]), b (array[..., 2]): (start, end), broadcastable; both NumPy or both torch
            (floating point).

    Returns:
        array[...]: intersection / union in continuous time; 0 where the union is empty (two
        zero-length segments, even at the same time), where the ActivityNet evaluator would
        produce NaN.
    """
    inter = segment_intersection(a, b)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    if _is_tensor(union):
        torch = sys.modules["torch"]
        nonempty = union > 0
        return torch.where(nonempty, inter / torch.where(nonempty, union, torch.ones_like(union)),
                           torch.zeros_like(union))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
