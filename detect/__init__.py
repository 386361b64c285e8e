"""The detector of RefactorNet §3.6: BSN-style boundary proposals, RoI-pooled proposal features, three
MLP heads (classification, completeness, boundary regression) and Soft-NMS.

It reads the feature files written by ``python -m extract`` (or ``python -m refactor apply``) and
writes predictions in the ActivityNet results layout (CONVENTIONS.md).

Modules, lowest first: ``config`` (TrainConfig, InferenceConfig, DetectorError), ``data`` (feature
files and annotations as windows), ``roi``, ``labels``, ``proposals``, ``nms``, ``fusion``, ``model``,
``losses``, ``distributed``, ``checkpoint`` (the detector's files), ``train``, ``infer``, ``plots``,
``video``, ``render`` (videos with detections drawn), ``world`` (a rendered synthetic co-occurrence
world); ``__main__`` is the command line.
"""

from detect.checkpoint import load_detector, save_detector
from detect.config import DetectorError, InferenceConfig, TrainConfig
from detect.data import DetectDataError, TimeAxis, VideoRecord, make_windows, rescale_features, scan_videos
from detect.infer import Detection, boundary_probabilities, detect_batch, run_detector, write_predictions
from detect.labels import assign_proposals, balanced_bce, boundary_targets, decode_regression, encode_regression
from detect.model import DeepBaseline, Detector, DetectorConfig, deep_baseline_hidden
from detect.nms import batched_soft_nms, segment_iou_matrix, soft_nms
from detect.proposals import boundary_candidates, generate_proposals
from detect.roi import roi_pool_1d
from detect.train import EpochReport, train_detector

__all__ = ["DetectDataError", "TimeAxis", "VideoRecord", "make_windows", "rescale_features", "scan_videos",
           "Detection", "InferenceConfig", "boundary_probabilities", "detect_batch", "run_detector",
           "write_predictions", "assign_proposals", "balanced_bce", "boundary_targets", "decode_regression",
           "encode_regression", "DeepBaseline", "Detector", "DetectorConfig", "deep_baseline_hidden",
           "batched_soft_nms", "segment_iou_matrix", "soft_nms", "boundary_candidates", "generate_proposals",
           "roi_pool_1d", "DetectorError", "TrainConfig", "EpochReport", "load_detector", "save_detector",
           "train_detector"]
