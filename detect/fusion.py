"""ActivityNet-style fusion: class-agnostic proposals x video-level classification scores.

Each of a video's ``top_classes`` best labels turns every proposal into a detection scored
``proposal score * class score``. Video-level scores are read from any of three JSON layouts:

* CUHK-style (e.g. ``cuhk_val_simp_share.json``): ``{"results": {video_id: [score per class]},
  "class": [class names in the same order]}`` (other top-level keys are ignored);
* ``{"results": {video_id: {label: score}}}``;
* a bare ``{video_id: {label: score}}``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["VideoScoresError", "load_video_scores", "fuse_video_scores"]


class VideoScoresError(ValueError):
    """Video-level classification scores that cannot be read; the message says why in one line."""


def _score(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VideoScoresError(f"{where}: score must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise VideoScoresError(f"{where}: score must be finite, got {value}")
    return float(value)


def load_video_scores(source: str | os.PathLike | dict) -> dict[str, dict[str, float]]:
    """Read video-level classification scores (any of the module's three layouts).

    Args:
        source: a JSON file's path, or its already-parsed content.

    Returns:
        video_id -> {label: score}, in the file's order (labels in "class" order for the CUHK layout).

    Raises:
        VideoScoresError: missing file, invalid JSON, unknown layout, a score list whose length
        differs from "class", a non-numeric or non-finite score.
    """
    name = "video scores"
    if not isinstance(source, Mapping):
        path = Path(source)
        name = str(path)
        try:
            with open(path, encoding="utf-8") as f:
                source = json.load(f)
        except FileNotFoundError:
            raise VideoScoresError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VideoScoresError(f"{path}: invalid JSON ({' '.join(str(e).split())})") from None
        except OSError as e:
            raise VideoScoresError(f"{path}: cannot read ({e.strerror or e})") from None
        if not isinstance(source, Mapping):
            raise VideoScoresError(f"{name}: top level must be a JSON object, got {type(source).__name__}")
    if isinstance(source.get("results"), Mapping):
        results, classes = source["results"], source.get("class")
    else:
        results, classes = source, None
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise VideoScoresError(f'{name}: "class" must be a list of class names')
        if len(set(classes)) != len(classes):
            raise VideoScoresError(f'{name}: "class" has duplicate names')
    out: dict[str, dict[str, float]] = {}
    for vid, entry in results.items():
        where = f"{name}: video {vid!r}"
        if isinstance(entry, list):
            if classes is None:
                raise VideoScoresError(f'{where}: a list of scores needs a "class" list of names beside "results"')
            if len(entry) != len(classes):
                raise VideoScoresError(f'{where}: {len(entry)} scores for {len(classes)} classes in "class"')
            out[str(vid)] = {c: _score(v, f"{where}, class {c!r}") for c, v in zip(classes, entry)}
        elif isinstance(entry, Mapping):
            out[str(vid)] = {str(c): _score(v, f"{where}, class {c!r}") for c, v in entry.items()}
        else:
            raise VideoScoresError(f"{where}: expected a list of scores or a {{label: score}} object, "
                                   f"got {type(entry).__name__}")
    return out


def fuse_video_scores(segments: np.ndarray, scores: np.ndarray, video_scores: Mapping[str, float],
                      top_classes: int = 2) -> list[tuple[str, float, float, float]]:
    """Turn one video's class-agnostic proposals into labelled detections.

    Args:
        segments (ndarray[N, 2]): proposals (start, end) in seconds.
        scores (ndarray[N]): their confidences.
        video_scores: {label: score} of this video.
        top_classes (int): how many of the video's best labels (by score descending, ties by label
            name ascending) each proposal is paired with.

    Returns:
        list of (label, proposal score * class score, start, end), N * min(top_classes, labels) of
        them, sorted by score descending (stable: class rank, then proposal order).
    """
    segments = np.asarray(segments, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise ValueError(f"segments must be an (N, 2) array, got shape {segments.shape}")
    if scores.shape != (segments.shape[0],):
        raise ValueError(f"scores must be an (N,) array matching segments {segments.shape}, got shape {scores.shape}")
    if not (np.isfinite(segments).all() and np.isfinite(scores).all()):
        raise ValueError("segments and scores must be finite")
    if top_classes < 0:
        raise ValueError(f"top_classes must be >= 0, got {top_classes}")
    ranked = sorted(video_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_classes]
    if not ranked or not len(scores):
        return []
    class_scores = np.array([s for _, s in ranked], dtype=np.float64)
    fused = (class_scores[:, None] * scores[None, :]).ravel()            # (class rank, proposal) order
    order = np.argsort(-fused, kind="stable")
    n = len(scores)
    return [(ranked[i // n][0], float(fused[i]), float(segments[i % n, 0]), float(segments[i % n, 1]))
            for i in order.tolist()]
