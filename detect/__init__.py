"""The detector of RefactorNet §3.6: BSN-style boundary proposals, RoI-pooled proposal features, three
MLP heads (classification, completeness, boundary regression) and Soft-NMS.

It reads the feature files written by ``python -m extract`` (or ``python -m refactor apply``) and
writes predictions in the ActivityNet results layout (CONVENTIONS.md).
"""

from detect.data import DetectDataError, TimeAxis, VideoRecord, make_windows, rescale_features, scan_videos
from detect.infer import (Detection, InferenceConfig, boundary_probabilities, detect_batch, run_detector,
                          write_predictions)
from detect.labels import assign_proposals, balanced_bce, boundary_targets, decode_regression, encode_regression
from detect.model import DeepBaseline, Detector, DetectorConfig, deep_baseline_hidden
from detect.nms import batched_soft_nms, segment_iou_matrix, soft_nms
from detect.proposals import boundary_candidates, generate_proposals
from detect.roi import roi_pool_1d
from detect.train import DetectorError, TrainConfig, load_detector, save_detector, train_detector

__all__ = ["DetectDataError", "TimeAxis", "VideoRecord", "make_windows", "rescale_features", "scan_videos", "Detection",
           "InferenceConfig", "boundary_probabilities",
           "detect_batch", "run_detector", "write_predictions", "assign_proposals", "balanced_bce", "boundary_targets",
           "decode_regression", "encode_regression", "DeepBaseline", "Detector", "DetectorConfig",
           "deep_baseline_hidden", "batched_soft_nms", "segment_iou_matrix", "soft_nms", "boundary_candidates",
           "generate_proposals", "roi_pool_1d", "DetectorError", "TrainConfig", "load_detector", "save_detector",
           "train_detector"]
