"""Temporal action detection metrics identical to the ActivityNet official evaluator.

>>> from evaluate import load_ground_truth, load_predictions, evaluate_detection
>>> gt = load_ground_truth("thumos14.json", "test")
>>> res = evaluate_detection(gt, load_predictions("pred.json", gt), [0.3, 0.4, 0.5, 0.6, 0.7])
>>> res.mAP, res.average_mAP
"""

from evaluate.data import (EvaluationInputError, GroundTruth, Predictions, load_ground_truth, load_predictions,
                           parse_thresholds)
from evaluate.detection import DetectionResult, evaluate_detection, interpolated_ap, segment_iou

__all__ = ["EvaluationInputError", "GroundTruth", "Predictions", "load_ground_truth", "load_predictions",
           "parse_thresholds", "DetectionResult", "evaluate_detection", "interpolated_ap", "segment_iou"]
