"""Temporal IoU and Gaussian Soft-NMS on 1-D segments, as pure functions on tensors (CPU or CUDA).

Soft-NMS (Bodla et al., ICCV 2017, Gaussian penalty): repeatedly keep the highest-scoring remaining
segment M and decay every remaining segment i by ``exp(-iou(M, i)^2 / sigma)``. The loop runs once
per kept segment, and each pass is a handful of vectorized tensor ops over the N segments, so the
cost is O(K * N) for K kept segments.

Input policy: segments (start, end) with end >= start, finite; scores finite (the decay assumes
confidences >= 0: with negative scores the kept scores need not be non-increasing). Anything else
raises ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import torch
from torch import Tensor

from common.segments import segment_iou

__all__ = ["segment_iou_matrix", "soft_nms", "batched_soft_nms"]


def segment_iou_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Temporal IoU of every pair of segments.

    Args:
        a (Tensor[N, 2]), b (Tensor[M, 2]): (start, end) in any unit (the same for both), end >= start.

    Returns:
        Tensor[N, M]: intersection / union in continuous time, in the promoted floating dtype of
        ``a`` and ``b`` (the default dtype for integer inputs); 0 where the union is empty (two
        zero-length segments, even at the same time).
    """
    if a.dim() != 2 or a.shape[1] != 2 or b.dim() != 2 or b.shape[1] != 2:
        raise ValueError(f"segments must be (N, 2) and (M, 2) tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return segment_iou(a.to(dtype)[:, None], b.to(dtype)[None])


def _check(segments: Tensor, scores: Tensor, sigma: float, min_score: float, **limits: int | None) -> None:
    if segments.dim() != 2 or segments.shape[1] != 2:
        raise ValueError(f"segments must be an (N, 2) tensor, got shape {tuple(segments.shape)}")
    if scores.dim() != 1 or scores.shape[0] != segments.shape[0]:
        raise ValueError(f"scores must be an (N,) tensor matching segments {tuple(segments.shape)}, "
                         f"got shape {tuple(scores.shape)}")
    if not scores.dtype.is_floating_point:
        raise ValueError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if segments.device != scores.device:
        raise ValueError(f"segments ({segments.device}) and scores ({scores.device}) must be on the same device")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if min_score != min_score:
        raise ValueError("min_score must not be NaN")
    for name, value in limits.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 or None, got {value}")
    if scores.numel():
        if torch.isnan(scores).any():
            raise ValueError("scores contain NaN")
        if not torch.isfinite(scores).all():
            raise ValueError("scores must be finite")
        if not torch.isfinite(segments).all():
            raise ValueError("segments must be finite")
        if (segments[:, 1] < segments[:, 0]).any():
            raise ValueError("segments must have end >= start")


def soft_nms(segments: Tensor, scores: Tensor, sigma: float = 0.5, top_k: int | None = 200,
             min_score: float = 0.0) -> tuple[Tensor, Tensor]:
    """Gaussian Soft-NMS (Bodla et al., ICCV 2017) on 1-D segments.

    Repeatedly takes the highest-scoring remaining segment M (ties: the lowest index), keeps it with
    its current score, and decays every remaining segment i: ``s_i <- s_i * exp(-iou(M, i)^2 / sigma)``.
    Stops after ``top_k`` kept segments (None: all) or when the best remaining score is <= ``min_score``.

    Args:
        segments (Tensor[N, 2]): (start, end), any unit, end >= start.
        scores (Tensor[N]): confidences (floating point, finite; >= 0 for the guarantees below).
        sigma (float): width of the Gaussian penalty, > 0.
        top_k (int or None): most segments to keep.
        min_score (float): segments whose decayed score is <= this are never kept.

    Returns:
        keep (LongTensor[K]): indices into the input, in the order kept.
        kept_scores (Tensor[K]): the decayed score of each at the time it was kept (dtype of
        ``scores``); non-increasing, and <= the original scores.
        Both on the input's device.
    """
    _check(segments, scores, sigma, min_score, top_k=top_k)
    n = scores.shape[0]
    limit = n if top_k is None else min(n, top_k)
    seg = segments.to(torch.promote_types(segments.dtype, scores.dtype))
    work = scores.clone()
    removed = torch.zeros(n, dtype=torch.bool, device=scores.device)
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    keep = torch.empty(limit, dtype=torch.long, device=scores.device)
    kept = torch.empty(limit, dtype=scores.dtype, device=scores.device)
    k = 0
    while k < limit:
        m = torch.argmax(work)                          # first maximum: the lowest index among ties
        best = work[m]
        if best.item() <= min_score:                    # also stops once all are removed (-inf)
            break
        keep[k], kept[k] = m, best
        k += 1
        removed[m] = True
        iou = segment_iou(seg[m], seg).to(work.dtype)
        # removed segments stay at -inf (an underflowing factor would turn -inf * 0 into NaN)
        work = torch.where(removed, neg_inf, work * torch.exp(-(iou * iou) / sigma))
    return keep[:k], kept[:k]


def batched_soft_nms(segments: Tensor, scores: Tensor, groups: Tensor, sigma: float = 0.5,
                     top_k_per_group: int | None = 200, top_k: int | None = None,
                     min_score: float = 0.0) -> tuple[Tensor, Tensor]:
    """Soft-NMS independently within each group (e.g. class): segments of different groups never decay each other.

    Args:
        segments (Tensor[N, 2]), scores (Tensor[N]), sigma, min_score: as in :func:`soft_nms`.
        groups (Tensor[N]): integer group of each segment.
        top_k_per_group (int or None): ``top_k`` of each group's Soft-NMS.
        top_k (int or None): most segments returned in all.

    Returns:
        keep (LongTensor[K]), kept_scores (Tensor[K]): the union of the groups' kept segments, sorted
        by decayed score descending, stable (equal scores: ascending group, then each group's keep
        order), truncated to ``top_k``.
    """
    _check(segments, scores, sigma, min_score, top_k_per_group=top_k_per_group, top_k=top_k)
    if groups.dim() != 1 or groups.shape[0] != scores.shape[0]:
        raise ValueError(f"groups must be an (N,) tensor matching scores {tuple(scores.shape)}, "
                         f"got shape {tuple(groups.shape)}")
    if groups.dtype.is_floating_point or groups.dtype.is_complex:
        raise ValueError(f"groups must be an integer tensor, got {groups.dtype}")
    if groups.device != scores.device:
        raise ValueError(f"groups ({groups.device}) and scores ({scores.device}) must be on the same device")
    n = scores.shape[0]
    dev = scores.device
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=dev), torch.empty(0, dtype=scores.dtype, device=dev)
    # All groups at once: one row per group, padded to the largest (padding and removed entries at
    # -inf), so each pass keeps one segment in every group that is still going. Within a row the
    # input order is kept, so argmax ties and the arithmetic are exactly those of soft_nms per group.
    uniq, row = torch.unique(groups, return_inverse=True)                     # ascending groups
    counts = torch.bincount(row, minlength=len(uniq))
    order = torch.sort(row, stable=True).indices
    col = torch.arange(n, device=dev) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    width = int(counts.max())
    seg = segments.to(torch.promote_types(segments.dtype, scores.dtype))
    index = torch.full((len(uniq), width), -1, dtype=torch.long, device=dev)
    work = torch.full((len(uniq), width), float("-inf"), dtype=scores.dtype, device=dev)
    padded = torch.zeros((len(uniq), width, 2), dtype=seg.dtype, device=dev)
    r = row[order]
    index[r, col] = order
    work[r, col] = scores[order]
    padded[r, col] = seg[order]
    removed = index < 0
    rows = torch.arange(len(uniq), device=dev)
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=dev)
    limit = width if top_k_per_group is None else min(width, top_k_per_group)
    keeps, kepts, going = [], [], torch.ones(len(uniq), dtype=torch.bool, device=dev)
    for _ in range(limit):
        m = torch.argmax(work, dim=1)                                          # (G,) first maxima
        best = work[rows, m]
        going = going & (best > min_score)                                     # a group that stopped stays stopped
        if not bool(going.any()):
            break
        keeps.append(torch.where(going, index[rows, m], -1))
        kepts.append(best)
        removed[rows[going], m[going]] = True
        iou = segment_iou(padded[rows, m][:, None], padded).to(work.dtype)
        work = torch.where(removed | ~going[:, None], neg_inf, work * torch.exp(-(iou * iou) / sigma))
    if not keeps:
        return torch.empty(0, dtype=torch.long, device=dev), torch.empty(0, dtype=scores.dtype, device=dev)
    keep = torch.stack(keeps, dim=1).flatten()                                 # group-major, keep order
    kept = torch.stack(kepts, dim=1).flatten()
    valid = keep >= 0
    keep, kept = keep[valid], kept[valid]
    order = torch.sort(kept, descending=True, stable=True).indices[:top_k]
    return keep[order], kept[order]
