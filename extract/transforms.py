"""Frame preparation for I3D: resize the short side, centre-crop, scale pixel values.

The sizes and the value range are parameters: what a checkpoint needs is in its spec
(:class:`weights.InputTransform`), which the streams (:mod:`extract.streams`) read.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resized_size", "crop_offsets", "resize_crop", "center_crop", "to_value_range", "to_unit_range",
           "scale_flow"]


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to ``short_side``, keeping the aspect ratio
    (long side rounded to the nearest pixel)."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


def crop_offsets(height: int, width: int, crop: int) -> tuple[int, int]:
    """(top, left) of a centred ``crop`` x ``crop`` window; odd margins put the extra pixel
    at the bottom / right."""
    if height < crop or width < crop:
        raise ValueError(f"cannot crop {crop}x{crop} from {height}x{width}")
    return (height - crop) // 2, (width - crop) // 2


def center_crop(x: Tensor, crop: int) -> Tensor:
    """Centre ``crop`` x ``crop`` window of the last two dimensions (see :func:`crop_offsets`)."""
    h, w = x.shape[-2:]
    if (h, w) == (crop, crop):
        return x
    top, left = crop_offsets(h, w, crop)
    return x[..., top:top + crop, left:left + crop]


def resize_crop(frames: np.ndarray | Tensor, short_side: int = 256, crop: int | None = 224) -> Tensor:
    """Resize (bilinear, antialiased like PIL's) so the short side is ``short_side``, then
    centre-crop ``crop`` x ``crop`` (``crop=None``: no crop).

    Args:
        frames (uint8[n, H, W, 3]): RGB frames.

    Returns:
        uint8 Tensor[n, 3, crop, crop] (or [n, 3, H', W'] resized), rounded to the nearest integer.
    """
    x = torch.as_tensor(frames)
    if x.dim() != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 (n, H, W, 3) frames, got {x.dtype} {tuple(x.shape)}")
    h, w = x.shape[1:3]
    nh, nw = resized_size(h, w, short_side)
    x = x.permute(0, 3, 1, 2).float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    if crop is not None:
        x = center_crop(x, crop)
    return x.round_().clamp_(0, 255).to(torch.uint8).contiguous()


def to_value_range(x: Tensor, value_range: tuple[float, float], dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 pixels ``p`` -> ``low + p * (high - low) / 255``, in [low, high] (a new tensor).

    Computed as ``p / (255 / (high - low)) + low``, so that (-1, 1) gives exactly
    ``p / 127.5 - 1``.
    """
    low, high = value_range
    return x.to(dtype).div_(255.0 / (high - low)).add_(low)


def to_unit_range(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 pixels -> ``2 * p / 255 - 1`` in [-1, 1] (:func:`to_value_range` with (-1, 1))."""
    return to_value_range(x, (-1.0, 1.0), dtype)


def scale_flow(flow: Tensor, bound: float, value_range: tuple[float, float]) -> Tensor:
    """Flow in pixels -> truncated to [-bound, bound], mapped linearly onto [low, high] (in place).

    Computed as ``f / (2 bound / (high - low)) + (low + high) / 2``, so that (-1, 1) gives exactly
    ``f / bound``.
    """
    low, high = value_range
    flow = flow.clamp_(-bound, bound).div_(2.0 * bound / (high - low))
    centre = (low + high) / 2.0
    return flow.add_(centre) if centre else flow
