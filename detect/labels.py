"""Training targets of the detector, in snippet-index coordinates.

Coordinates: snippet ``i`` of a sequence sits at position ``i`` (its centre time, see
:class:`detect.data.TimeAxis`); a segment ``(a, b)`` in these units spans from the centre of
(fractional) snippet ``a`` to that of ``b``. Snippet ``i`` stands for the interval ``[i - ½, i + ½]``.

* :func:`boundary_targets`: BSN's (ECCV 2018) start / end / actionness match scores. For an
  instance ``(s, e)`` of length ``d = e - s``, the start region is ``[s - w/2, s + w/2]`` with
  ``w = max(1, d / 10)`` snippets (the end region likewise around ``e``); a snippet's start score is
  the largest fraction of its interval covered by a start region; its actionness score the largest
  fraction covered by an instance. A score >= 0.5 is a positive label (BSN uses > 0.5, which gives
  no positive at all to a boundary that falls exactly between two snippets; >= marks both).
* :func:`balanced_bce`: BSN's class-balanced binary logistic loss.
* :func:`assign_proposals`: SSN's (ICCV 2017) proposal types: foreground (tIoU >= 0.7 with an
  instance), incomplete (tIoU < 0.3 but >= 80% of the proposal inside one instance) and background
  (< 1% of the proposal inside any instance); others are ignored.
* :func:`encode_regression` / :func:`decode_regression`: centre offset and log-duration targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common.segments import segment_intersection, segment_iou

__all__ = ["boundary_targets", "balanced_bce", "ProposalAssignment", "assign_proposals", "segment_overlaps",
           "encode_regression", "decode_regression", "REGRESSION_SCALE", "FOREGROUND", "INCOMPLETE",
           "BACKGROUND", "IGNORED"]

FOREGROUND, INCOMPLETE, BACKGROUND, IGNORED = 1, 2, 0, -1
# Targets are divided by these (as Faster R-CNN's box coder weights), so both are of order 1.
REGRESSION_SCALE = (0.1, 0.2)


def _coverage(anchors_lo: np.ndarray, anchors_hi: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(A,) anchor intervals x (R,) regions -> (A, R) intersection / anchor length."""
    anchors = np.stack([anchors_lo, anchors_hi], axis=1)[:, None]        # (A, 1, 2)
    regions = np.stack([lo, hi], axis=1)[None]                          # (1, R, 2)
    inter = segment_intersection(anchors, regions)
    return inter / np.maximum(anchors_hi - anchors_lo, 1e-12)[:, None]


def boundary_targets(segments: np.ndarray, length: int) -> np.ndarray:
    """BSN match scores of every snippet.

    Args:
        segments (ndarray[G, 2]): instances ``(start, end)`` in snippet-index coordinates (may
            extend beyond the sequence).
        length: number of snippets T.

    Returns:
        ndarray[3, T] float32: rows actionness, start, end; each in [0, 1] (>= 0.5 is positive).
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    out = np.zeros((3, length), dtype=np.float32)
    if len(segments) == 0 or length == 0:
        return out
    pos = np.arange(length, dtype=np.float64)
    lo, hi = pos - 0.5, pos + 0.5
    s, e = segments[:, 0], segments[:, 1]
    half = np.maximum(1.0, 0.1 * (e - s)) / 2
    out[0] = _coverage(lo, hi, s, e).max(axis=1)
    out[1] = _coverage(lo, hi, s - half, s + half).max(axis=1)
    out[2] = _coverage(lo, hi, e - half, e + half).max(axis=1)
    return out


def balanced_bce(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """BSN's class-balanced binary logistic loss over all entries (flattened).

    ``-½ mean_{pos} log p - ½ mean_{neg} log(1 - p)`` with ``p = sigmoid(logits)``, positives
    where ``targets >= 0.5``; this equals BSN's ``coef_1 = ½ N / N⁺`` and ``coef_0 = ½ N / N⁻``
    weighting of the mean. A side with no entry contributes 0.

    Args:
        logits, targets (Tensor[...]): same shape.
        mask (Tensor[...] bool): entries that count (default all), e.g. the unpadded snippets.
    """
    if mask is None:
        mask = torch.ones_like(targets, dtype=torch.bool)
    pos = (targets >= 0.5) & mask
    neg = (targets < 0.5) & mask
    loss = logits.new_zeros(())
    if pos.any():
        loss = loss - 0.5 * F.logsigmoid(logits[pos]).mean()
    if neg.any():
        loss = loss - 0.5 * F.logsigmoid(-logits[neg]).mean()
    return loss


def segment_overlaps(proposals: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tIoU and coverage of every proposal against every segment.

    Args:
        proposals (ndarray[P, 2]), segments (ndarray[G, 2]): (start, end), any unit.

    Returns:
        (tiou, coverage), each ndarray[P, G]: intersection over union, and intersection over the
        proposal's length (1 for a zero-length proposal inside the segment).
    """
    p = np.asarray(proposals, dtype=np.float64).reshape(-1, 2)
    g = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    inter = segment_intersection(p[:, None], g[None])                       # (P, G)
    tiou = segment_iou(p[:, None], g[None])
    plen = p[:, 1:] - p[:, :1]
    inside = (p[:, :1] >= g[None, :, 0]) & (p[:, 1:] <= g[None, :, 1])
    coverage = np.where(plen > 0, inter / np.where(plen > 0, plen, 1), inside.astype(np.float64))
    return tiou, coverage


@dataclass
class ProposalAssignment:
    """SSN proposal types.

    Attributes:
        kind (ndarray[P] int): FOREGROUND (1), INCOMPLETE (2), BACKGROUND (0) or IGNORED (-1).
        label (ndarray[P] int): class of the matched instance (0-based), -1 for background/ignored.
        segment (ndarray[P, 2]): the matched instance (best tIoU for foreground, best coverage for
            incomplete), NaN otherwise.
        tiou (ndarray[P]): best tIoU with any instance.
        classes (ndarray[P, K] bool | None): with ``num_classes``, every class annotated on the
            matched instance's exact segment (THUMOS14 annotates each CliffDiving instance again
            as Diving); all False for background / ignored.
    """

    kind: np.ndarray
    label: np.ndarray
    segment: np.ndarray
    tiou: np.ndarray
    classes: np.ndarray | None = None


def assign_proposals(proposals: np.ndarray, segments: np.ndarray, labels: np.ndarray, fg_tiou: float = 0.7,
                     incomplete_tiou: float = 0.3, incomplete_coverage: float = 0.8,
                     bg_coverage: float = 0.01, num_classes: int | None = None) -> ProposalAssignment:
    """Label proposals against ground truth (SSN's rules, thresholds as arguments).

    Args:
        proposals (ndarray[P, 2]), segments (ndarray[G, 2]): (start, end) in the same unit.
        labels (ndarray[G] int): class of each instance.
        num_classes: K; given, ``classes`` holds the class sets of the matched segments.
    """
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 2)
    n = len(proposals)
    kind = np.full(n, IGNORED, dtype=np.int64)
    label = np.full(n, -1, dtype=np.int64)
    matched = np.full((n, 2), np.nan)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    classes = None if num_classes is None else np.zeros((n, num_classes), dtype=bool)
    if len(segments) == 0:
        kind[:] = BACKGROUND
        return ProposalAssignment(kind, label, matched, np.zeros(n), classes)
    tiou, cov = segment_overlaps(proposals, segments)
    best = tiou.argmax(axis=1)
    best_tiou = tiou[np.arange(n), best]
    best_cov_idx = cov.argmax(axis=1)
    best_cov = cov[np.arange(n), best_cov_idx]
    fg = best_tiou >= fg_tiou
    inc = ~fg & (best_tiou < incomplete_tiou) & (best_cov >= incomplete_coverage)
    bg = ~fg & ~inc & (cov.sum(axis=1) < bg_coverage)
    kind[fg], kind[inc], kind[bg] = FOREGROUND, INCOMPLETE, BACKGROUND
    label[fg], label[inc] = labels[best[fg]], labels[best_cov_idx[inc]]
    matched[fg], matched[inc] = segments[best[fg]], segments[best_cov_idx[inc]]
    if classes is not None:
        rows = np.flatnonzero(fg | inc)
        r, g = np.nonzero(np.all(matched[rows, None, :] == segments[None], axis=2))     # same segment
        classes[rows[r], labels[g]] = True
    return ProposalAssignment(kind, label, matched, best_tiou, classes)


def encode_regression(proposals: Tensor, targets: Tensor) -> Tensor:
    """Regression targets of proposals towards instances.

    Args:
        proposals, targets (Tensor[P, 2]): (start, end); proposals of positive length.

    Returns:
        Tensor[P, 2]: ``((c_t - c_p) / d_p / 0.1, log(d_t / d_p) / 0.2)`` (centre offset relative
        to the proposal's duration, log-duration ratio; see REGRESSION_SCALE).
    """
    cp, dp = proposals.mean(dim=1), proposals[:, 1] - proposals[:, 0]
    ct, dt = targets.mean(dim=1), targets[:, 1] - targets[:, 0]
    return torch.stack([(ct - cp) / dp / REGRESSION_SCALE[0], torch.log(dt / dp) / REGRESSION_SCALE[1]], dim=1)


def decode_regression(proposals: Tensor, deltas: Tensor, max_log_ratio: float = 4.0) -> Tensor:
    """Inverse of :func:`encode_regression`: refined (start, end) of shape (P, 2).

    The log-duration ratio is clamped to ±``max_log_ratio`` so an untrained head cannot produce
    infinite segments.
    """
    cp, dp = proposals.mean(dim=1), proposals[:, 1] - proposals[:, 0]
    c = cp + deltas[:, 0] * REGRESSION_SCALE[0] * dp
    d = dp * torch.exp((deltas[:, 1] * REGRESSION_SCALE[1]).clamp(-max_log_ratio, max_log_ratio))
    return torch.stack([c - d / 2, c + d / 2], dim=1)
