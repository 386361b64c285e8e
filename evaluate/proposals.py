"""Average recall against the average number of proposals (AR@AN) and its area, as the official
ActivityNet evaluator (``Evaluation/eval_proposal.py``, ``average_recall_vs_avg_nr_proposals``).

The official rule, restated (every detail below changes the numbers, so all are reproduced):

* The videos are the ground truth's videos that have at least one instance (V of them, in order of
  first instance). P is the number of all proposals in the file, including those of videos
  outside that list (they count in P but never match).
* ``max_avg_nr_proposals`` defaults to ``P / V``; ``ratio = max_avg_nr_proposals * V / P``.
* Per video with proposals: proposals ranked by ``scores.argsort()[::-1]`` (NumPy's default sort
  of that video's scores in file order, reversed; this fixes how ties in score are broken), the
  first ``nr = min(int(n * ratio), n)`` kept, and the tIoU matrix (n_gt, nr) formed. A video
  without proposals contributes a (n_gt, 1) matrix of zeros.
* ``total_nr`` is the sum of ``nr``; ``pcn = arange(1, 101) / 100 * (max_avg_nr_proposals * V /
  total_nr)`` are the fractions of each video's kept proposals at the 100 points of the curve.
* At point j a video with an (n_gt, n_cols) matrix uses its first ``k = min(int(n_cols * pcn[j]),
  n_cols)`` columns, and a ground-truth instance is recalled at threshold t if one of them has
  ``tIoU >= t``. ``recall[t, j]`` = recalled instances of all videos / all instances.
* ``avg_recall = recall.mean(axis=0)``; the x axis is ``proposals_per_video = pcn * total_nr / V``;
  AUC is the trapezoid area of ``avg_recall`` over it, printed by the official script as
  ``100 * AUC / proposals_per_video[-1]``.

Vectorized: instead of the official (threshold, video, point) loops, each ground-truth instance
gets, for every threshold at once, the rank of its first matching proposal (``first_hit``); it is
recalled at point j if that rank is below its video's ``k[j]``. Floating-point operations that
decide a truncation (``int(n * ratio)``, ``int(n_cols * pcn)``) are performed in the official
order, so the curves agree exactly, not just approximately.

A proposal that ends before it starts has tIoU 0 (the official evaluator's is 0 or NaN, and
``NaN >= t`` is false), so it never recalls an instance; it still counts among the proposals.

Documented choices where the official code divides by zero: no proposal at all, or a
``max_avg_nr_proposals`` so small that no video keeps a proposal, raise
:class:`~evaluate.data.EvaluationInputError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.annotations import GroundTruth
from common.predictions import Predictions
from common.segments import segment_iou
from evaluate.data import EvaluationInputError

__all__ = ["ProposalResult", "average_recall_vs_an", "recall_at", "STANDARD_AN"]

NO_HIT = np.iinfo(np.int64).max
"""Rank given to a ground-truth instance that no kept proposal matches."""

NUM_POINTS = 100
"""Points on the official AR-AN curve (``np.arange(1, 101) / 100``)."""

STANDARD_AN = (1, 5, 10, 50, 100, 200, 500, 1000)
"""Average numbers of proposals reported in the literature (ActivityNet: AR@1..100; THUMOS14,
e.g. BSN: AR@50..1000)."""


@dataclass
class ProposalResult:
    """AR-AN curve.

    Attributes:
        thresholds (ndarray[T]): tIoU thresholds.
        recall (ndarray[T, 100]): recall (fraction of ground-truth instances) per threshold and
            point of the curve.
        avg_recall (ndarray[100]): ``recall`` averaged over thresholds (AR).
        proposals_per_video (ndarray[100]): average number of proposals per video (AN) at each point.
        auc (float): trapezoid area under ``avg_recall`` over ``proposals_per_video`` (units: recall
            x proposals per video).
    """

    thresholds: np.ndarray
    recall: np.ndarray
    avg_recall: np.ndarray
    proposals_per_video: np.ndarray
    auc: float

    @property
    def auc_normalized(self) -> float:
        """AUC divided by the largest AN: a fraction in [0, 1]; 100 times it is the number the
        official script prints ("Area Under the AR vs AN curve")."""
        return float(self.auc / self.proposals_per_video[-1])

    def to_json(self) -> dict:
        """Fractions in [0, 1] (CONVENTIONS.md); ``AR@AN`` holds the standard ANs within the curve."""
        ar_at = {str(an): recall_at(self, an) for an in STANDARD_AN if bool(_in_range(self, an))}
        return {"tiou": [float(t) for t in self.thresholds],
                "recall": [[float(r) for r in row] for row in self.recall],
                "average_recall": [float(r) for r in self.avg_recall],
                "proposals_per_video": [float(a) for a in self.proposals_per_video],
                "AUC": float(self.auc), "AUC_normalized": self.auc_normalized, "AR@AN": ar_at}


def _kept_per_video(n: np.ndarray, factor: float) -> np.ndarray:
    """``min(int(n * factor), n)`` elementwise, truncating toward zero as the official ``int`` and
    ``astype(int)`` do (all operands are non-negative)."""
    return np.minimum((n * factor).astype(np.int64), n)


def _rank_within_video(video: np.ndarray, scores: np.ndarray, num_videos: int) -> np.ndarray:
    """Rank (0 = best) of each proposal within its video, as ``scores.argsort()[::-1]`` ranks the
    video's proposals taken in file order.

    Args:
        video (ndarray[P] int), scores (ndarray[P] float).

    Returns:
        ndarray[P] int.
    """
    rank = np.empty(len(scores), dtype=np.int64)
    # One argsort per video: NumPy's default (unstable) sort decides ties, so it must see exactly
    # the official input, the video's scores alone in file order.
    by_video = np.argsort(video, kind="stable")
    bounds = np.searchsorted(video[by_video], np.arange(num_videos + 1))
    for v in np.flatnonzero(np.diff(bounds)):
        members = by_video[bounds[v]:bounds[v + 1]]
        ranked = members[scores[members].argsort()[::-1]]
        rank[ranked] = np.arange(len(ranked))
    return rank


def _first_hit(iou: np.ndarray, owner: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
               thresholds: np.ndarray) -> np.ndarray:
    """Per ground-truth instance and threshold, the rank of its first proposal with tIoU >= threshold.

    Args:
        iou (ndarray[N]): tIoU of (instance, proposal) pairs, grouped by instance (``owner``,
            non-decreasing) and ranked by proposal within a group.
        starts, lengths (ndarray[M]): each instance's slice of the pairs.
        thresholds (ndarray[T]).

    Returns:
        int ndarray[T, M]: rank of the first hit, or :data:`NO_HIT` (larger than any rank).

    Exact and sort-free: each tIoU becomes the number of thresholds it reaches (``code``, an
    integer in 0..T from one ``searchsorted``, so ``iou >= sorted_thr[i]  <=>  code > i``); the
    running maximum of ``owner * (T + 1) + code`` is then a per-instance running maximum in one
    ``maximum.accumulate``, and the first rank reaching each threshold is a ``searchsorted`` in it.
    """
    T, M = len(thresholds), len(starts)
    by_value = np.argsort(thresholds, kind="stable")
    code = np.searchsorted(thresholds[by_value], iou, side="right")
    K = T + 1
    running = np.maximum.accumulate(owner * K + code)
    targets = np.arange(M)[None, :] * K + np.arange(1, T + 1)[:, None]        # (T sorted, M)
    first = np.empty((T, M), dtype=np.int64)
    first[by_value] = np.searchsorted(running, targets, side="left") - starts[None, :]
    return np.where(first < lengths[None, :], first, NO_HIT)


def average_recall_vs_an(gt: GroundTruth, proposals: Predictions, thresholds,
                         max_avg_nr_proposals: float | None = None) -> ProposalResult:
    """AR-AN curve and its area, exactly as the official ``average_recall_vs_avg_nr_proposals``.

    Args:
        gt: ground truth of the evaluated subset.
        proposals: from ``load_predictions(..., proposals=True)`` (labels are ignored).
        thresholds (array-like[T]): tIoU thresholds, e.g. ``parse_thresholds("0.5:0.95:0.05")``
            (ActivityNet) or ``"0.5:1.0:0.05"`` (THUMOS14 in BSN).
        max_avg_nr_proposals: largest average number of proposals per video on the curve (e.g.
            100 for ActivityNet, 1000 for THUMOS14); default: all proposals (P / V).

    Returns:
        :class:`ProposalResult` with 100 points.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    P = len(proposals.scores)
    if P == 0:
        raise EvaluationInputError("no proposals to evaluate")
    if max_avg_nr_proposals is not None and not max_avg_nr_proposals > 0:
        raise ValueError(f"max_avg_nr_proposals must be positive, got {max_avg_nr_proposals!r}")

    # Videos with ground truth (they share indices between gt.videos and proposals.videos).
    order = np.argsort(gt.video, kind="stable")
    gt_video, gt_segments = gt.video[order], gt.segments[order]
    videos = np.unique(gt_video)
    V, M = len(videos), len(gt_video)
    slot = np.full(max(len(proposals.videos), int(gt.video.max()) + 1), -1, dtype=np.int64)
    slot[videos] = np.arange(V)                                    # video index -> position in `videos`

    if max_avg_nr_proposals is None:
        max_avg_nr_proposals = float(P) / V
    ratio = max_avg_nr_proposals * float(V) / P

    # Proposals of videos with ground truth, ranked within their video; the top nr kept.
    pv = slot[proposals.video]
    n_prop = np.bincount(pv[pv >= 0], minlength=V)
    nr = _kept_per_video(n_prop, ratio)
    total_nr = int(nr.sum())
    if total_nr == 0:
        raise EvaluationInputError(f"max_avg_nr_proposals={max_avg_nr_proposals} keeps no proposal in any video")
    known = np.flatnonzero(pv >= 0)
    rank = _rank_within_video(pv[known], proposals.scores[known], V)
    keep = rank < nr[pv[known]]
    kept, kept_rank = known[keep], rank[keep]
    kept = kept[np.lexsort((kept_rank, pv[kept]))]                 # by video, then rank
    kept_start = np.cumsum(nr) - nr                                # each video's slice of `kept`

    # All (instance, kept proposal of its video) pairs, grouped by instance, ranked within.
    inst_video = slot[gt_video]                                    # position in `videos` per instance
    lengths = nr[inst_video]
    starts = np.cumsum(lengths) - lengths
    owner = np.repeat(np.arange(M), lengths)
    col = np.arange(len(owner)) - starts[owner]
    partner = kept[kept_start[inst_video][owner] + col]
    iou = segment_iou(gt_segments[owner], proposals.segments[partner])
    first = _first_hit(iou, owner, starts, lengths, thresholds)    # (T, M)

    # Points of the curve: each video uses its first k columns (a video without proposals has one
    # column of zeros: its instances are never hit whatever k).
    pcn = np.arange(1, NUM_POINTS + 1) / 100.0 * (max_avg_nr_proposals * float(V) / total_nr)
    n_cols = np.where(n_prop > 0, nr, 1)
    k = _kept_per_video(n_cols[:, None], pcn[None, :])             # (V, 100)
    hit = first[:, :, None] < k[inst_video][None, :, :]            # (T, M, 100)
    recall = hit.sum(axis=1).astype(np.float64) / float(M)
    avg_recall = recall.mean(axis=0)
    proposals_per_video = pcn * (float(total_nr) / V)
    auc = _trapezoid(avg_recall, proposals_per_video)
    return ProposalResult(thresholds=thresholds, recall=recall, avg_recall=avg_recall,
                          proposals_per_video=proposals_per_video, auc=auc)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid area (``np.trapezoid``; ``np.trapz``, as the official code calls it, before NumPy 2)."""
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return float(trapezoid(y, x))


_AN_RTOL = 1e-9


def _in_range(result: ProposalResult, an) -> np.ndarray:
    """Whether ``an`` (scalar or array) lies on the curve's AN span, ends included within 1e-9."""
    x = result.proposals_per_video
    return (np.asarray(an) >= x[0] * (1 - _AN_RTOL)) & (np.asarray(an) <= x[-1] * (1 + _AN_RTOL))


def recall_at(result: ProposalResult, an):
    """Average recall at an average number of proposals per video (AR@AN).

    Definition: ``avg_recall`` linearly interpolated over ``proposals_per_video``. An AN equal to a
    point of the curve within a relative 1e-9 (the usual case: AN = j / 100 of the curve's
    maximum, e.g. AR@50 ... AR@1000 of a curve with ``max_avg_nr_proposals=1000``, or AR@100 of
    ActivityNet) gives that point's value exactly, unaffected by the rounding of
    ``proposals_per_video``. Between points the interpolation only approximates a recall that the
    official rule never computes.

    Args:
        an (float or array-like): average number(s) of proposals per video, within the curve
            (``proposals_per_video[0]`` to ``proposals_per_video[-1]``).

    Returns:
        float for a scalar ``an``, else ndarray of the same shape.

    Raises:
        ValueError: an AN outside the curve.
    """
    x, y = result.proposals_per_video, result.avg_recall
    a = np.asarray(an, dtype=np.float64)
    if not np.all(_in_range(result, a)):
        raise ValueError(f"AN {an!r} outside the curve [{x[0]:g}, {x[-1]:g}]")
    nearest = np.abs(a[..., None] - x).argmin(axis=-1)
    on_point = np.abs(x[nearest] - a) <= _AN_RTOL * np.abs(a)
    out = np.where(on_point, y[nearest], np.interp(a, x, y))
    return float(out) if out.ndim == 0 else out
