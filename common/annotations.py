"""Ground-truth annotation files (ActivityNet layout of CONVENTIONS.md): reader and writer.

``{"database": {video_id: {"subset", "duration", "annotations": [{"segment": [s, e], "label"}]}}}``
(a file whose top level is the video mapping itself, like the THUMOS14 annotations shipped in
``shared/data``, is accepted too). Extra keys are ignored.

:func:`read_database` gives the video mapping as written; :func:`load_ground_truth` one subset as
flat arrays (what the evaluator, RefactorNet's sample collection and the detector read);
:func:`subset_videos` the video ids per subset; :func:`write_annotations` writes a database.

Order matters for exact agreement with the official evaluator (its ties in score are broken by
position): instances keep the file's order, videos in mapping order, annotations in list order.
Classes are numbered in order of first appearance in the subset's ground truth, as the official
evaluator's ``activity_index``.

A segment with end < start, or a non-finite time, is an :class:`AnnotationError`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.fileio import atomic_path

__all__ = ["AnnotationError", "GroundTruth", "read_json", "read_database", "load_ground_truth", "subset_videos",
           "same_subset", "default_subsets",
           "write_annotations", "parse_segment"]


class AnnotationError(ValueError):
    """Ground truth or predictions that cannot be read; the message says why in one line."""


def read_json(source: str | os.PathLike | dict, what: str) -> dict:
    """A JSON file's contents (a dict passes through); a missing or invalid file raises
    :class:`AnnotationError` naming ``what`` it should have been."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    if not path.is_file():
        raise AnnotationError(f"{what} file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{what} file {path} is not valid JSON: {exc}") from exc


def parse_segment(seg, where: str) -> tuple[float, float]:
    """``[start, end]`` as two floats; :class:`AnnotationError` (naming ``where``) if it is not one."""
    try:
        start, end = float(seg[0]), float(seg[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise AnnotationError(f"{where}: segment {seg!r} is not [start, end]") from exc
    if not (math.isfinite(start) and math.isfinite(end)):
        raise AnnotationError(f"{where}: segment {seg!r} is not finite")
    if end < start:
        raise AnnotationError(f"{where}: segment {seg!r} ends before it starts")
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


def read_database(source: str | os.PathLike | dict) -> dict[str, dict]:
    """The ``database`` mapping of a ground-truth file (video id -> entry), every entry checked to be
    a mapping with a ``subset``."""
    data = read_json(source, "ground truth")
    database = data.get("database", data) if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise AnnotationError("ground truth must be {'database': {video_id: {...}}}")
    for vid, entry in database.items():
        if not isinstance(entry, dict) or "subset" not in entry:
            raise AnnotationError(f"ground truth video {vid!r} has no 'subset'")
    return database


def same_subset(a, b) -> bool:
    """Whether two subset names are the same subset: names match without regard to case
    (CONVENTIONS.md: "Validation" = "validation")."""
    return str(a).casefold() == str(b).casefold()


def default_subsets(source: str | os.PathLike | dict) -> tuple[str, str]:
    """(training subset, test subset) as the datasets use them: ActivityNet (a ``training`` subset)
    trains on ``training`` and tests on ``validation``; THUMOS14 (otherwise) trains on ``validation``
    and tests on ``test``. Names are returned as the file spells them."""
    names = list(subset_videos(source))
    spelled = {n.casefold(): n for n in names}
    if "training" in spelled:
        return spelled["training"], spelled.get("validation", "validation")
    return spelled.get("validation", "validation"), spelled.get("test", "test")


def subset_videos(source: str | os.PathLike | dict) -> dict[str, list[str]]:
    """Video ids per subset name (as the file spells it), in file order."""
    out: dict[str, list[str]] = {}
    for vid, entry in read_database(source).items():
        out.setdefault(str(entry["subset"]), []).append(vid)
    return out


def write_annotations(path: str | os.PathLike, database: dict[str, dict], **extra) -> Path:
    """Write ``{"database": database, **extra}`` as JSON atomically (``extra``: e.g. ``version``)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({"database": database, **extra}, f)
    return path


def load_ground_truth(source: str | os.PathLike | dict, subset: str) -> GroundTruth:
    """Read the ground truth of ``subset`` (e.g. ``"test"`` for THUMOS14, ``"validation"`` for
    ActivityNet v1.3; matched without regard to case)."""
    database = read_database(source)
    classes: dict[str, int] = {}
    videos, video, segments, labels, durations = [], [], [], [], {}
    subsets = set()
    for vid, entry in database.items():
        subsets.add(entry["subset"])
        if not same_subset(entry["subset"], subset):
            continue
        videos.append(vid)
        if "duration" in entry:
            durations[vid] = float(entry["duration"])
        for k, ann in enumerate(entry.get("annotations", [])):
            where = f"ground truth {vid} annotation {k}"
            segments.append(parse_segment(ann.get("segment"), where))
            label = ann.get("label")
            if not isinstance(label, str):
                raise AnnotationError(f"{where}: missing label")
            labels.append(classes.setdefault(label, len(classes)))
            video.append(len(videos) - 1)
    if not videos:
        known = ", ".join(sorted(map(str, subsets)))
        raise AnnotationError(f"ground truth has no video in subset {subset!r} (subsets: {known})")
    if not segments:
        raise AnnotationError(f"ground truth subset {subset!r} has no annotated instance")
    return GroundTruth(classes=list(classes), videos=videos, video=np.asarray(video, dtype=np.int64),
                       segments=np.asarray(segments, dtype=np.float64).reshape(-1, 2),
                       labels=np.asarray(labels, dtype=np.int64), durations=durations)
