"""Prediction files (ActivityNet results layout of CONVENTIONS.md): reader and writer.

``{"version": "...", "results": {video_id: [{"label", "score", "segment": [s, e]}]}, "external_data": {}}``;
proposals have no label (or ``"action"``). :func:`write_predictions` writes one;
:func:`load_predictions` reads one against a subset's ground truth as flat arrays, in file order.

Input policies: every file the official ActivityNet evaluator scores is read, to the same numbers;
what it cannot score, or would score differently from what the file says, is refused:

* a segment with end < start is read as it is and counted in ``Predictions.reversed_segments``: the
  official evaluator scores it, its intersection with every instance is 0, so it is a false
  positive (and never recalls an instance as a proposal). :func:`common.segments.segment_iou`
  gives it tIoU 0. The one exception in the official code is a reversed segment whose length is
  exactly minus an instance's (e.g. an instance with its ends swapped): union 0, tIoU 0/0 = NaN,
  and its ``tiou < threshold`` test lets it lock that instance as a true positive; here it is a
  false positive like every other reversed segment (the same choice as for the official NaN of
  two zero-length segments, see :mod:`evaluate.detection`);
* a non-finite time or score, a segment that is not exactly two numbers (the official reader
  would silently use the first two of three), a missing score, or a score given as a string (the
  official code does not convert scores and would rank strings as text): :class:`AnnotationError`;
* a predicted label absent from the subset's ground truth: :class:`AnnotationError` (the
  official evaluator raises KeyError), or dropped and counted with ``unknown_labels="ignore"``;
* predictions for videos without ground truth in the subset: kept, they are false positives
  (as in the official evaluator), and counted in ``Predictions.unknown_videos``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.annotations import AnnotationError, GroundTruth, parse_segment, read_json
from common.fileio import atomic_path

__all__ = ["Predictions", "load_predictions", "write_predictions"]


@dataclass
class Predictions:
    """Predicted segments (detections or proposals), in file order.

    Attributes:
        video (ndarray[P] int): index into ``videos``.
        videos: video ids: the ground truth's videos first, then unknown ones.
        segments (ndarray[P, 2] float64): (start, end) in seconds.
        labels (ndarray[P] int): index into the ground truth's classes (0 for proposals).
        scores (ndarray[P] float64).
        unknown_videos: predicted videos without ground truth in the subset (false positives).
        dropped_unknown_labels: predictions dropped because their label is not a ground-truth class.
        reversed_segments: predictions kept whose segment ends before it starts (false positives).
    """

    video: np.ndarray
    videos: list[str]
    segments: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    unknown_videos: list[str] = field(default_factory=list)
    dropped_unknown_labels: int = 0
    reversed_segments: int = 0


def load_predictions(source: str | os.PathLike | dict, gt: GroundTruth, *, proposals: bool = False,
                     unknown_labels: str = "error") -> Predictions:
    """Read predictions (``proposals=True``: labels are ignored) against ground truth ``gt``.

    Args:
        unknown_labels: ``"error"`` or ``"ignore"`` for labels that are not ground-truth classes.
    """
    if unknown_labels not in ("error", "ignore"):
        raise ValueError(f"unknown_labels must be 'error' or 'ignore', got {unknown_labels!r}")
    data = read_json(source, "predictions")
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise AnnotationError("predictions must be {'results': {video_id: [...]}}")
    class_index = {c: i for i, c in enumerate(gt.classes)}
    video_index = gt.video_index
    annotated = set(gt.video.tolist())
    videos = list(gt.videos)
    unknown, dropped, reversed_count = [], 0, 0
    video, segments, labels, scores = [], [], [], []
    for vid, items in results.items():
        if not isinstance(items, list):
            raise AnnotationError(f"predictions for {vid!r} must be a list")
        if vid not in video_index:
            video_index[vid] = len(videos)
            videos.append(vid)
        v = video_index[vid]
        if items and v not in annotated:
            unknown.append(vid)
        for k, item in enumerate(items):
            where = f"prediction {vid} #{k}"
            if not isinstance(item, dict):
                raise AnnotationError(f"{where}: must be {{'label', 'score', 'segment'}}, got {item!r}")
            raw = item.get("score")
            if isinstance(raw, str):
                raise AnnotationError(f"{where}: score {raw!r} is a string, not a number")
            try:
                score = float(raw)
            except (TypeError, ValueError) as exc:
                raise AnnotationError(f"{where}: missing or non-numeric score") from exc
            if not math.isfinite(score):
                raise AnnotationError(f"{where}: score {raw!r} is not finite")
            seg = parse_segment(item.get("segment"), where, allow_reversed=True)
            if proposals:
                label = 0
            else:
                name = item.get("label")
                if name not in class_index:
                    if unknown_labels == "ignore":
                        dropped += 1
                        continue
                    raise AnnotationError(f"{where}: label {name!r} is not a ground-truth class "
                                               "(use --ignore-unknown-labels to drop such predictions)")
                label = class_index[name]
            reversed_count += int(seg[1] < seg[0])
            video.append(v)
            segments.append(seg)
            labels.append(label)
            scores.append(score)
    return Predictions(video=np.asarray(video, dtype=np.int64), videos=videos,
                       segments=np.asarray(segments, dtype=np.float64).reshape(-1, 2),
                       labels=np.asarray(labels, dtype=np.int64), scores=np.asarray(scores, dtype=np.float64),
                       unknown_videos=unknown, dropped_unknown_labels=dropped,
                       reversed_segments=reversed_count)


def write_predictions(path: str | os.PathLike, results: dict[str, list[dict]], *, version: str,
                      external_data: dict | None = None) -> Path:
    """Write ``{"version", "results", "external_data"}`` atomically.

    Args:
        results: per video id, its predictions as dicts (``label``, ``score``, ``segment``).
    """
    path = Path(path)
    data = {"version": version, "results": results, "external_data": external_data or {}}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path
