"""Raw video to detections in one step: extract features the way the checkpoint's training features
were extracted (streams, window, stride, fps from its ``feature_layout``), then run the detector."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from detect.checkpoint import load_detector
from detect.config import DetectorError, InferenceConfig
from detect.infer import Detection, run_detector
from extract.pipeline import ExtractConfig, extract_videos, resolve_device

__all__ = ["detect_videos"]


def detect_videos(videos: Sequence[str | os.PathLike], checkpoint: str | os.PathLike,
                  out: str | os.PathLike | None = None, features_dir: str | os.PathLike | None = None,
                  config: InferenceConfig | None = None, device: str = "auto", extract_streams: list | None = None,
                  weights_root: str | os.PathLike | None = None, video_scores: str | os.PathLike | dict | None = None,
                  progress: bool | None = None, on_error: Callable[[Path, str], None] | None = None,
                  ) -> tuple[dict[str, list[Detection]], dict[Path, str]]:
    """Extract features of ``videos`` (files or folders) and detect actions in them.

    Args:
        features_dir: keep the feature files here (default: a temporary folder, removed after);
            a rerun reuses the ones that exist.
        device: for extraction and detection ("auto": CUDA when present).
        extract_streams: ready stream objects for the extractor (tests; default: the checkpoint's
            streams with the cached I3D weights).

    Returns:
        (detections per video id, failed videos with their reason).
    """
    _, ckpt = load_detector(checkpoint)
    layout = ckpt["feature_layout"]
    if any(s not in ("rgb", "flow") for s in layout["streams"]):
        raise DetectorError(f"{checkpoint} was trained on {'+'.join(layout['streams'])} features, which are not "
                            "extracted from video (train on I3D features, with --refactor for RefactorNet)")
    dev = resolve_device(device)
    extract_cfg = ExtractConfig(streams=tuple(layout["streams"]), fps=layout.get("fps"), window=int(layout["window"]),
                                stride=int(layout["stride"]), short_side=layout.get("short_side"),
                                crop=layout.get("crop"), device=str(dev))
    with tempfile.TemporaryDirectory(prefix="detect-video-") as tmp:
        feats = Path(features_dir) if features_dir is not None else Path(tmp)
        report = extract_videos(videos, feats, extract_cfg, streams=extract_streams, weights_root=weights_root,
                                progress=progress, on_error=on_error)
        done = [Path(p).stem for p in report.written + report.skipped]
        if not done:
            return {}, dict(report.failed)
        results = run_detector(checkpoint, feats, out, config=config, device=str(dev), video_scores=video_scores,
                               video_ids=set(done), progress=progress)
    return results, dict(report.failed)
