"""1-D RoI pooling of snippet features with context (SSN's structured pooling, MUSES-style bins).

A proposal ``(a, b)`` of duration ``d = b - a`` (snippet-index coordinates) is augmented by
``context * d`` on each side and split into three regions: the starting context
``[a - context·d, a]``, the proposal itself ``[a, b]`` and the ending context
``[b, b + context·d]``, pooled into ``bins = (n_start, n_inner, n_end)`` equal bins. A bin is the
mean of ``samples`` evenly spaced points inside it (at fractions ``(j + ½) / samples``), each read
from the feature sequence by linear interpolation between snippet positions (RoIAlign in 1-D).
Points outside the sequence take the nearest snippet's value (the border is replicated).

Consequence used by the tests: for features that are linear in the position, every bin equals
the feature at the bin's centre, whenever the bin lies inside the sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["roi_pool_1d", "bin_centres"]


def _sample_positions(rois: Tensor, bins: tuple[int, int, int], context: float, samples: int) -> Tensor:
    """(P, 3) rois -> (P, sum(bins), samples) sample positions in snippet-index coordinates."""
    a, b = rois[:, 1], rois[:, 2]
    d = b - a
    edges = [(a - context * d, a), (a, b), (b, b + context * d)]
    frac = (torch.arange(samples, device=rois.device, dtype=rois.dtype) + 0.5) / samples   # (S,)
    parts = []
    for (lo, hi), n in zip(edges, bins):
        if n == 0:
            continue
        width = (hi - lo) / n                                                            # (P,)
        k = torch.arange(n, device=rois.device, dtype=rois.dtype)                        # (n,)
        parts.append(lo[:, None, None] + (k[None, :, None] + frac[None, None, :]) * width[:, None, None])
    return torch.cat(parts, dim=1)


def bin_centres(rois: Tensor, bins: tuple[int, int, int] = (2, 8, 2), context: float = 0.5) -> Tensor:
    """Centre of every bin (Tensor[P, sum(bins)], snippet-index coordinates) of ``rois`` (P, 3)."""
    return _sample_positions(rois, bins, context, 1)[..., 0]


def roi_pool_1d(features: Tensor, rois: Tensor, bins: tuple[int, int, int] = (2, 8, 2), context: float = 0.5,
                samples: int = 4, lengths: Tensor | None = None) -> Tensor:
    """Pool each proposal's features into a fixed number of bins.

    Args:
        features (Tensor[B, C, T]): snippet features of B sequences (snippet i at position i).
        rois (Tensor[P, 3]): ``(batch index, start, end)``, start/end in snippet-index coordinates
            (floats; start <= end).
        bins: bins of the starting context, the proposal and the ending context.
        context: each context region's length as a fraction of the proposal's duration.
        samples: interpolated points averaged per bin.
        lengths (Tensor[B] int): valid snippets of each sequence (default T); positions are
            clamped to ``[0, length - 1]`` so padding is never read.

    Returns:
        Tensor[P, C, sum(bins)].
    """
    if features.dim() != 3 or rois.dim() != 2 or rois.shape[1] != 3:
        raise ValueError(f"expected features (B, C, T) and rois (P, 3), got {tuple(features.shape)} "
                         f"and {tuple(rois.shape)}")
    bsz, channels, t = features.shape
    rois = rois.to(features.dtype)
    batch = rois[:, 0].long()
    pos = _sample_positions(rois, bins, context, samples)                          # (P, nb, S)
    if lengths is None:
        last = torch.full((len(rois),), t - 1, device=features.device, dtype=features.dtype)
    else:
        last = (lengths.to(features.device)[batch] - 1).to(features.dtype)
    pos = torch.minimum(pos.clamp(min=0), last[:, None, None])
    lo = pos.floor()
    w = (pos - lo).unsqueeze(-1)                                                   # (P, nb, S, 1)
    lo = lo.long()
    hi = torch.minimum(lo + 1, last.long()[:, None, None])
    seq = features.transpose(1, 2)                                                 # (B, T, C)
    b = batch[:, None, None].expand_as(lo)
    value = seq[b, lo] * (1 - w) + seq[b, hi] * w                                  # (P, nb, S, C)
    return value.mean(dim=2).transpose(1, 2).contiguous()                          # (P, C, nb)
