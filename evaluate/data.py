"""Ground truth and predictions for evaluation, and tIoU threshold parsing.

The files' readers live with their formats in :mod:`common.annotations` and
:mod:`common.predictions` (re-exported here); :class:`EvaluationInputError` is their
:class:`common.annotations.AnnotationError`.
"""

from __future__ import annotations

import numpy as np

from common.annotations import AnnotationError, GroundTruth, load_ground_truth, read_json
from common.predictions import Predictions, load_predictions

__all__ = ["EvaluationInputError", "GroundTruth", "Predictions", "load_ground_truth", "load_predictions",
           "parse_thresholds", "read_json"]

EvaluationInputError = AnnotationError


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
