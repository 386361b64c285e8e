"""Ground truth and predictions for evaluation, and tIoU threshold parsing.

The files' readers live with their formats in :mod:`common.annotations` and
:mod:`common.predictions` (re-exported here); :class:`EvaluationInputError` is their
:class:`common.annotations.AnnotationError`. :func:`load_detections` is ``evaluate detection``'s reader of
predictions: :func:`load_predictions` that leaves out, and counts, the predictions of classes that have
no instance in the evaluated subset.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from common.annotations import AnnotationError, GroundTruth, load_ground_truth, read_json
from common.predictions import Predictions, load_predictions

__all__ = ["EvaluationInputError", "GroundTruth", "Predictions", "load_ground_truth", "load_predictions",
           "load_detections", "parse_thresholds", "read_json"]

EvaluationInputError = AnnotationError


def load_detections(source: str | os.PathLike | dict, gt: GroundTruth, *,
                    unknown_labels: str = "error") -> tuple[Predictions, dict[str, int]]:
    """Labelled predictions against ``gt``, as :func:`load_predictions` reads them, except that a label that
    is a class of the ground-truth file without an instance in ``gt``'s subset (``gt.other_classes``) is
    no error: such predictions cannot change any class's AP (the mAP is over ``gt.classes``, and a
    class's AP depends on its own predictions only), so they are left out. The arrays kept are those
    ``unknown_labels="ignore"`` gives, so the scores are the same. A label found nowhere in the ground
    truth follows ``unknown_labels`` as in :func:`load_predictions`.

    Returns:
        (the predictions scored, the number left out per class of ``gt.other_classes`` that has some,
        in that order).
    """
    known = set(gt.classes)
    others = [c for c in gt.other_classes if c not in known]
    pred = load_predictions(source, replace(gt, classes=[*gt.classes, *others]), unknown_labels=unknown_labels)
    scored = pred.labels < len(gt.classes)
    counts = np.bincount(pred.labels[~scored] - len(gt.classes), minlength=len(others))
    left_out = {c: int(n) for c, n in zip(others, counts) if n}
    if left_out:
        segments = pred.segments[scored]
        pred = replace(pred, video=pred.video[scored], segments=segments, labels=pred.labels[scored],
                       scores=pred.scores[scored],
                       reversed_segments=int(np.count_nonzero(segments[:, 1] < segments[:, 0])))
    return pred, left_out


def parse_thresholds(spec: str) -> np.ndarray:
    """``"0.3:0.7:0.1"`` (start:stop:step, stop included) or ``"0.5,0.75,0.95"`` -> thresholds.

    Values are rounded to 10 decimals, so ``0.6`` is the double nearest to 0.6 (as a literal in
    code), not ``0.30000000000000004 + 3 * 0.1``.
    """
    try:
        if ":" in spec:
            start, stop, step = (float(x) for x in spec.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            values = np.linspace(start, start + (n - 1) * step, n)
        else:
            values = np.asarray([float(x) for x in spec.split(",") if x.strip()])
    except ValueError as exc:
        raise EvaluationInputError(f"tIoU thresholds {spec!r}: expected start:stop:step or a comma list") from exc
    values = np.round(values, 10)
    if values.size == 0 or np.any((values <= 0) | (values > 1)):
        raise EvaluationInputError(f"tIoU thresholds {spec!r}: values must be in (0, 1]")
    return values
