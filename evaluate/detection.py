"""Detection mAP at tIoU thresholds, giving the ActivityNet official evaluator's numbers.

The official rule (``Evaluation/eval_detection.py``), per class and threshold: predictions are
taken by decreasing score (``argsort(scores)[::-1]`` over the class's predictions in file order);
each is a true positive if some not-yet-matched ground truth of its video and class has
``tIoU >= threshold``, and then locks the one with the highest tIoU (ties in tIoU: the later
ground truth in file order, as the official reversed argsort does for up to 16 instances and
whenever NumPy's sort is stable); otherwise it is a false positive. AP is the VOC 2011
interpolated area; mAP the mean over the ground truth's classes (a class without predictions
scores 0); average mAP the mean over thresholds.

Vectorized: matching is sequential only within one (class, video) pair, so all pairs advance
together, one prediction each per step, for all thresholds at once; a step costs a few NumPy
calls, and the number of steps is the largest number of predictions of one class in one video.

``segment_iou`` (tIoU, 0 where the union is empty instead of the official NaN) is
:func:`common.segments.segment_iou`, importable from here as before.

A predicted segment that ends before it starts (:attr:`Predictions.reversed_segments`) is scored as
the official evaluator scores it: its intersection with every instance is 0, so its tIoU is 0 and
it is a false positive at every threshold. The official arithmetic gives 0/0 = NaN, not 0, when
the union is exactly 0 (two zero-length segments, or a reversed prediction as long as an instance,
such as the instance with its ends swapped), and a NaN passes its ``tiou < threshold`` test, so
there it would lock the instance as a true positive; both are false positives here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.annotations import GroundTruth
from common.predictions import Predictions
from common.segments import segment_iou

__all__ = ["segment_iou", "interpolated_ap", "match_detections", "DetectionResult", "evaluate_detection"]


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 interpolated average precision (the official ``interpolated_prec_rec``).

    Args:
        precision, recall (ndarray[n]): at each prediction, in ranked order.
    """
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]       # monotone from the right
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def match_detections(gt: GroundTruth, pred: Predictions, thresholds: np.ndarray,
                     num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of the official evaluator, for every prediction and threshold.

    Returns:
        (order, tp, matched): ``order`` (ndarray[P]) the predictions' global ranking (per class
        by decreasing score, classes concatenated in class order); ``tp`` (bool ndarray[T, P]) true
        positive flags per prediction (original indexing); ``matched`` (int ndarray[T, P]) the
        ground-truth instance each true positive locked, -1 otherwise.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    T, P = len(thresholds), len(pred.scores)
    tp = np.zeros((T, P), dtype=bool)
    matched = np.full((T, P), -1, dtype=np.int64)
    num_classes = len(gt.classes) if num_classes is None else num_classes

    # Rank within each class exactly as the official code: argsort()[::-1] of the class's scores in file order.
    order_parts = []
    rank_in_class = np.empty(P, dtype=np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(pred.labels == c)
        ranked = members[pred.scores[members].argsort()[::-1]]
        rank_in_class[ranked] = np.arange(len(ranked))
        order_parts.append(ranked)
    order = np.concatenate(order_parts) if order_parts else np.zeros(0, dtype=np.int64)
    if P == 0:
        return order, tp, matched

    # Groups: (class, video) pairs with ground truth, each with its instances padded to G.
    num_videos = len(pred.videos)
    gt_key = gt.labels * num_videos + gt.video
    keys, gt_group = np.unique(gt_key, return_inverse=True)
    gt_sorted = np.argsort(gt_group, kind="stable")                # file order within a group
    counts = np.bincount(gt_group, minlength=len(keys))
    G = int(counts.max())
    slot = np.arange(len(gt_sorted)) - np.repeat(np.cumsum(counts) - counts, counts)
    members = np.full((len(keys), G), -1, dtype=np.int64)           # instance index per slot
    members[gt_group[gt_sorted], slot] = gt_sorted
    seg = np.zeros((len(keys), G, 2))
    seg[members >= 0] = gt.segments[members[members >= 0]]
    valid = members >= 0

    # Each prediction's group (-1: no ground truth of its class in its video -> always false positive).
    pred_key = pred.labels * num_videos + pred.video
    pos = np.searchsorted(keys, pred_key)
    pos = np.minimum(pos, len(keys) - 1)
    group = np.where(keys[pos] == pred_key, pos, -1)

    # Step s handles the s-th prediction (by class rank) of every group at once.
    has_group = np.flatnonzero(group >= 0)
    by_group = has_group[np.lexsort((rank_in_class[has_group], group[has_group]))]
    gcounts = np.bincount(group[by_group], minlength=len(keys))
    step = np.arange(len(by_group)) - np.repeat(np.cumsum(gcounts) - gcounts, gcounts)[: len(by_group)]
    locked = np.zeros((T, len(keys), G), dtype=bool)
    thr = thresholds[:, None, None]
    reversed_slots = np.arange(G)[::-1]
    for s in range(int(step.max()) + 1 if len(step) else 0):
        p = by_group[step == s]                                      # one prediction per group
        g = group[p]
        iou = segment_iou(pred.segments[p][:, None, :], seg[g])      # (B, G)
        cand = (iou[None] >= thr) & valid[g][None] & ~locked[:, g]   # (T, B, G)
        best = np.where(cand, iou[None], -np.inf).max(axis=2)        # (T, B)
        hit = np.isfinite(best)
        # the last slot (later in file order) among those with the best tIoU
        is_best = cand & (iou[None] == best[..., None])
        j = reversed_slots[np.argmax(is_best[..., ::-1], axis=2)]    # (T, B)
        t_idx, b_idx = np.nonzero(hit)
        locked[t_idx, g[b_idx], j[t_idx, b_idx]] = True
        tp[:, p] = hit
        matched[t_idx, p[b_idx]] = members[g[b_idx], j[t_idx, b_idx]]
    return order, tp, matched


@dataclass
class DetectionResult:
    """mAP report.

    Attributes:
        thresholds (ndarray[T]).
        ap (ndarray[T, C]): AP per threshold and class (classes as ``classes``).
        classes: class names.
        mAP (ndarray[T]), average_mAP: means over classes, then over thresholds.
    """

    thresholds: np.ndarray
    ap: np.ndarray
    classes: list[str]

    @property
    def mAP(self) -> np.ndarray:
        return self.ap.mean(axis=1)

    @property
    def average_mAP(self) -> float:
        return float(self.mAP.mean())

    def to_json(self) -> dict:
        """CONVENTIONS.md RESULT.json: fractions in [0, 1]."""
        return {"tiou": [float(t) for t in self.thresholds], "mAP": [float(m) for m in self.mAP],
                "average_mAP": self.average_mAP,
                "per_class_AP": {c: [float(a) for a in self.ap[:, k]] for k, c in enumerate(self.classes)}}


def evaluate_detection(gt: GroundTruth, pred: Predictions, thresholds) -> DetectionResult:
    """AP per class and threshold, mAP and average mAP, as the official evaluator."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    C = len(gt.classes)
    order, tp, _ = match_detections(gt, pred, thresholds)
    ap = np.zeros((len(thresholds), C))
    npos = np.bincount(gt.labels, minlength=C).astype(np.float64)
    start = 0
    for c in range(C):
        n = int(np.count_nonzero(pred.labels == c))
        ranked = order[start:start + n]
        start += n
        if n == 0:
            continue  # no predictions of this class: AP 0, as the official evaluator
        tp_c = np.cumsum(tp[:, ranked], axis=1).astype(np.float64)
        fp_c = np.cumsum(~tp[:, ranked], axis=1).astype(np.float64)
        recall = tp_c / npos[c]
        precision = tp_c / (tp_c + fp_c)
        for t in range(len(thresholds)):
            ap[t, c] = interpolated_ap(precision[t], recall[t])
    return DetectionResult(thresholds=thresholds, ap=ap, classes=list(gt.classes))
