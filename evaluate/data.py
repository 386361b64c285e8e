"""Ground truth and predictions in the ActivityNet layouts of CONVENTIONS.md, as flat arrays.

Ground truth: ``{"database": {video_id: {"subset", "annotations": [{"segment": [s, e], "label"}]}}}``
(a file whose top level is the video mapping itself, like the THUMOS14 annotations shipped in
``shared/data``, is accepted too). Predictions: ``{"results": {video_id: [{"label", "score",
"segment"}]}}``; proposals have no label (or ``"action"``).

Order matters for exact agreement with the official evaluator (its ties in score are broken by
position): instances keep the files' order, videos in mapping order, annotations in list order.
Classes are numbered in order of first appearance in the subset's ground truth, as the official
evaluator's ``activity_index``.

Input policies (documented choices where the official evaluator crashes or misbehaves):

* a segment with end < start, or a non-finite time or score: :class:`EvaluationInputError`;
* a predicted label absent from the subset's ground truth: :class:`EvaluationInputError` (the
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

__all__ = ["EvaluationInputError", "GroundTruth", "Predictions", "load_ground_truth", "load_predictions",
           "parse_thresholds", "read_json"]


class EvaluationInputError(ValueError):
    """Ground truth or predictions that cannot be evaluated; the message says why in one line."""


def read_json(source: str | os.PathLike | dict, what: str) -> dict:
    """A JSON file's contents (a dict passes through); a missing or invalid file raises
    :class:`EvaluationInputError` naming ``what`` it should have been."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    if not path.is_file():
        raise EvaluationInputError(f"{what} file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise EvaluationInputError(f"{what} file {path} is not valid JSON: {exc}") from exc


def _segment(seg, where: str) -> tuple[float, float]:
    try:
        start, end = float(seg[0]), float(seg[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise EvaluationInputError(f"{where}: segment {seg!r} is not [start, end]") from exc
    if not (math.isfinite(start) and math.isfinite(end)):
        raise EvaluationInputError(f"{where}: segment {seg!r} is not finite")
    if end < start:
        raise EvaluationInputError(f"{where}: segment {seg!r} ends before it starts")
    return start, end


@dataclass
class GroundTruth:
    """Ground-truth instances of one subset.

    Attributes:
        classes: class names, numbered by first appearance (the official ``activity_index``).
        videos: every video of the subset, in file order (with or without instances).
        video (ndarray[M] int): index into ``videos`` of each instance.
        segments (ndarray[M, 2] float64): (start, end) in seconds.
        labels (ndarray[M] int): index into ``classes``.
        durations: video duration in seconds where the file gives one.
    """

    classes: list[str]
    videos: list[str]
    video: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def video_index(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.videos)}


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
    """

    video: np.ndarray
    videos: list[str]
    segments: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    unknown_videos: list[str] = field(default_factory=list)
    dropped_unknown_labels: int = 0


def load_ground_truth(source: str | os.PathLike | dict, subset: str) -> GroundTruth:
    """Read the ground truth of ``subset`` (e.g. ``"test"`` for THUMOS14, ``"validation"`` for
    ActivityNet v1.3)."""
    data = read_json(source, "ground truth")
    database = data.get("database", data) if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise EvaluationInputError("ground truth must be {'database': {video_id: {...}}}")
    classes: dict[str, int] = {}
    videos, video, segments, labels, durations = [], [], [], [], {}
    subsets = set()
    for vid, entry in database.items():
        if not isinstance(entry, dict) or "subset" not in entry:
            raise EvaluationInputError(f"ground truth video {vid!r} has no 'subset'")
        subsets.add(entry["subset"])
        if entry["subset"] != subset:
            continue
        videos.append(vid)
        if "duration" in entry:
            durations[vid] = float(entry["duration"])
        for k, ann in enumerate(entry.get("annotations", [])):
            where = f"ground truth {vid} annotation {k}"
            segments.append(_segment(ann.get("segment"), where))
            label = ann.get("label")
            if not isinstance(label, str):
                raise EvaluationInputError(f"{where}: missing label")
            labels.append(classes.setdefault(label, len(classes)))
            video.append(len(videos) - 1)
    if not videos:
        raise EvaluationInputError(f"ground truth has no video in subset {subset!r} (subsets: {', '.join(sorted(map(str, subsets)))})")
    if not segments:
        raise EvaluationInputError(f"ground truth subset {subset!r} has no annotated instance")
    return GroundTruth(classes=list(classes), videos=videos, video=np.asarray(video, dtype=np.int64),
                       segments=np.asarray(segments, dtype=np.float64).reshape(-1, 2),
                       labels=np.asarray(labels, dtype=np.int64), durations=durations)


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
        raise EvaluationInputError("predictions must be {'results': {video_id: [...]}}")
    class_index = {c: i for i, c in enumerate(gt.classes)}
    video_index = gt.video_index
    annotated = set(gt.video.tolist())
    videos = list(gt.videos)
    unknown, dropped = [], 0
    video, segments, labels, scores = [], [], [], []
    for vid, items in results.items():
        if not isinstance(items, list):
            raise EvaluationInputError(f"predictions for {vid!r} must be a list")
        if vid not in video_index:
            video_index[vid] = len(videos)
            videos.append(vid)
        v = video_index[vid]
        if items and v not in annotated:
            unknown.append(vid)
        for k, item in enumerate(items):
            where = f"prediction {vid} #{k}"
            try:
                score = float(item["score"])
            except (KeyError, TypeError, ValueError) as exc:
                raise EvaluationInputError(f"{where}: missing or non-numeric score") from exc
            if not math.isfinite(score):
                raise EvaluationInputError(f"{where}: score {item['score']!r} is not finite")
            seg = _segment(item.get("segment"), where)
            if proposals:
                label = 0
            else:
                name = item.get("label")
                if name not in class_index:
                    if unknown_labels == "ignore":
                        dropped += 1
                        continue
                    raise EvaluationInputError(f"{where}: label {name!r} is not a ground-truth class "
                                               "(use --ignore-unknown-labels to drop such predictions)")
                label = class_index[name]
            video.append(v)
            segments.append(seg)
            labels.append(label)
            scores.append(score)
    return Predictions(video=np.asarray(video, dtype=np.int64), videos=videos,
                       segments=np.asarray(segments, dtype=np.float64).reshape(-1, 2),
                       labels=np.asarray(labels, dtype=np.int64), scores=np.asarray(scores, dtype=np.float64),
                       unknown_videos=unknown, dropped_unknown_labels=dropped)


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
