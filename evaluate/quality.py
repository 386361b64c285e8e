"""Quality of high-tIoU predictions: the metrics of RefactorNet's Table 3 (CVPR 2022).

A prediction (a labelled detection) is *high-quality* when its best tIoU with any ground-truth
instance of its video, whatever the class, exceeds a threshold (0.7 in the paper). Over those
predictions the table reports

* classification accuracy: the fraction whose label is the label of an instance they overlap best
  (``ties="any"``, the default: THUMOS14 annotates each CliffDiving instance a second time as
  Diving with the same segment, and either label is right there), and
* their mean tIoU (with that best instance).

Accuracy isolates classification from localization: the prediction is known to be well placed,
so a wrong label is a confusion of the action with its co-occurring context, which RefactorNet
targets.

``ties="first"`` compares the label with the earliest best instance only (see
:func:`proposal_quality`); on THUMOS14 it calls Diving predictions on CliffDiving instances wrong.

Documented choices: a prediction that ends before it starts has tIoU 0 with everything (never
high-quality, still counted in ``total``); the threshold is strict (``> 0.7``, "higher than 0.7"); predictions of videos
without ground truth have best tIoU 0; ``top_k`` keeps each video's k highest-scored predictions
(equal scores: file order) before anything else; with no high-quality prediction, ``count`` is 0 and
``accuracy`` and ``mean_tiou`` are NaN (``null`` in JSON), since neither is defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.annotations import GroundTruth
from common.predictions import Predictions
from common.segments import segment_iou

__all__ = ["QualityResult", "best_label_per_segment", "best_overlap", "top_k_per_video", "proposal_quality"]


@dataclass
class QualityResult:
    """Table 3 metrics.

    Attributes:
        count: number of high-quality predictions.
        accuracy: fraction of them labelled as their best-overlapping instance (NaN if count is 0).
        mean_tiou: their mean best tIoU (NaN if count is 0).
        total: predictions examined (after ``top_k``).
        iou_threshold: the strict tIoU threshold used.
    """

    count: int
    accuracy: float
    mean_tiou: float
    total: int = 0
    iou_threshold: float = 0.7

    def to_json(self) -> dict:
        """Fractions in [0, 1]; NaN (undefined, no high-quality prediction) as ``null``."""
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)
        return {"count": int(self.count), "accuracy": num(self.accuracy), "mean_tiou": num(self.mean_tiou),
                "total": int(self.total), "iou_threshold": float(self.iou_threshold)}


def _pairs(gt: GroundTruth, pred: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All (prediction, ground-truth instance of its video) pairs, grouped by prediction, instances
    in ``gt`` order within a group.

    Returns:
        (owner, partner, iou, starts, lengths): ``owner``/``partner`` (ndarray[N] int) the
        prediction and instance of each pair, ``iou`` (ndarray[N]) their tIoU, ``starts``/``lengths``
        (ndarray[P] int) each prediction's slice of the pairs.
    """
    P = len(pred.scores)
    num_videos = max(len(pred.videos), len(gt.videos))
    by_video = np.argsort(gt.video, kind="stable")                  # instances grouped, gt order within
    gt_count = np.bincount(gt.video, minlength=num_videos)
    gt_start = np.cumsum(gt_count) - gt_count
    lengths = gt_count[pred.video]
    starts = np.cumsum(lengths) - lengths
    owner = np.repeat(np.arange(P), lengths)
    partner = by_video[gt_start[pred.video][owner] + np.arange(owner.size) - starts[owner]]
    iou = segment_iou(pred.segments[owner], gt.segments[partner])
    return owner, partner, iou, starts, lengths


def best_overlap(gt: GroundTruth, pred: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Each prediction's best tIoU with a ground-truth instance of its video (any class).

    Returns:
        (best_iou, best_gt): ``best_iou`` (ndarray[P] float) the highest tIoU, 0 for a video without
        ground truth; ``best_gt`` (ndarray[P] int) the index into ``gt``'s instances reaching it (the
        lowest index among equals), -1 for a video without ground truth.
    """
    best_iou, best_gt, _ = _best(gt, pred)
    return best_iou, best_gt


def _best(gt: GroundTruth, pred: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``best_overlap`` plus, per prediction, whether any instance reaching its best tIoU has its label."""
    P = len(pred.scores)
    best_iou, best_gt, any_label = np.zeros(P), np.full(P, -1, dtype=np.int64), np.zeros(P, dtype=bool)
    owner, partner, iou, starts, lengths = _pairs(gt, pred)
    if owner.size == 0:
        return best_iou, best_gt, any_label
    has = np.flatnonzero(lengths > 0)                               # reduceat needs non-empty slices
    best = np.maximum.reduceat(iou, starts[has])
    is_best = iou == np.repeat(best, lengths[has])
    first = np.minimum.reduceat(np.where(is_best, np.arange(owner.size), owner.size), starts[has])
    same = is_best & (gt.labels[partner] == pred.labels[owner])
    best_iou[has], best_gt[has] = best, partner[first]
    any_label[has] = np.logical_or.reduceat(same, starts[has])
    return best_iou, best_gt, any_label


def top_k_per_video(pred: Predictions, k: int) -> np.ndarray:
    """Indices of each video's ``k`` highest-scored predictions (equal scores: file order first).

    Returns:
        ndarray[n] int: ascending indices into ``pred``.
    """
    if k < 0:
        raise ValueError(f"top_k must be non-negative, got {k}")
    order = np.lexsort((np.arange(len(pred.scores)), -pred.scores, pred.video))   # video, score desc, file
    counts = np.bincount(pred.video[order], minlength=len(pred.videos))
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.sort(order[rank < k])


def best_label_per_segment(pred: Predictions) -> np.ndarray:
    """Indices of the predictions that are the highest-scored label of their segment in their video
    (equal scores: file order first). A detector with per-class outputs lists one segment once per
    class; kept this way, each predicted segment is classified once.

    Returns:
        ndarray[n] int: ascending indices into ``pred``.
    """
    if len(pred.scores) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(pred.scores)), -pred.scores, pred.segments[:, 1], pred.segments[:, 0],
                        pred.video))
    v, s, e = pred.video[order], pred.segments[order, 0], pred.segments[order, 1]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (v[1:] != v[:-1]) | (s[1:] != s[:-1]) | (e[1:] != e[:-1])
    return np.sort(order[first])


def proposal_quality(gt: GroundTruth, pred: Predictions, iou_threshold: float = 0.7,
                     top_k: int | None = None, ties: str = "any", one_label: bool = False) -> QualityResult:
    """Classification accuracy and mean tIoU of the high-quality predictions (Table 3).

    Args:
        gt: ground truth of the evaluated subset.
        pred: labelled detections (``load_predictions(..., proposals=False)``).
        iou_threshold: a prediction is high-quality if its best tIoU is strictly above this.
        top_k: if given, only each video's ``top_k`` highest-scored predictions are examined.
        ties: instances sharing the best tIoU: ``"any"`` (default) counts the prediction correct if
            one of them has its label (THUMOS14 annotates every CliffDiving instance a second time
            as Diving, with the same segment); ``"first"`` compares with the earliest of them only.
        one_label: examine only each segment's best label (:func:`best_label_per_segment`), before
            ``top_k``; for detectors that list every segment once per class.
    """
    if ties not in ("first", "any"):
        raise ValueError(f"ties must be 'first' or 'any', got {ties!r}")
    keep = np.arange(len(pred.scores))
    if one_label:
        keep = best_label_per_segment(pred)
    if top_k is not None:
        sub = top_k_per_video(_take(pred, keep), top_k)
        keep = keep[sub]
    best_iou, best_gt, any_label = (a[keep] for a in _best(gt, pred))
    high = best_iou > iou_threshold
    count = int(np.count_nonzero(high))
    if count == 0:
        return QualityResult(0, math.nan, math.nan, total=len(keep), iou_threshold=iou_threshold)
    if ties == "first":
        correct = pred.labels[keep][high] == gt.labels[best_gt[high]]
    else:
        correct = any_label[high]
    return QualityResult(count=count, accuracy=float(np.mean(correct)), mean_tiou=float(np.mean(best_iou[high])),
                         total=len(keep), iou_threshold=iou_threshold)


def _take(pred: Predictions, idx: np.ndarray) -> Predictions:
    """The predictions at ``idx`` (same videos)."""
    return Predictions(video=pred.video[idx], videos=pred.videos, segments=pred.segments[idx], labels=pred.labels[idx],
                       scores=pred.scores[idx], unknown_videos=pred.unknown_videos,
                       dropped_unknown_labels=pred.dropped_unknown_labels)
