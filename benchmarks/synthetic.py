"""Synthetic data shared by the benchmarks (detect.py, detect_ablation.py, refactor_synthetic.py).

Each benchmark builds its videos from the same pieces:

* a world of shared vectors (:class:`World`): per class a strong context (scene) vector and a weak
  action vector, background vectors and, optionally, per class a look-alike scene (cosine
  ``lookalike_cos`` to the class's context: similar to it, but not it);
* coverage (:func:`coverage`): how much of each snippet's interval a segment covers, for features that
  mix vectors in proportion to time;
* files in the project's formats, written by the format modules: two-stream feature files
  (:func:`write_two_stream`, through :func:`extract.features.write_features`) and annotation files
  (:func:`write_database`, through :func:`common.annotations.write_annotations`);
* the cosine measure of how far a space separates action snippets from others (:func:`mean_cosine`).

Everything is deterministic in the generator passed in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.annotations import load_ground_truth, write_annotations
from common.segments import segment_intersection
from detect import run_detector, save_detector
from evaluate import evaluate_detection, load_predictions
from extract.features import FeatureFileError, read_features, write_features

__all__ = ["World", "unit_vectors", "normalize_rows", "coverage", "whole_window_frames", "write_two_stream",
           "holds_snippets", "write_database", "mean_cosine", "score_detector"]


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """ndarray[n, dim] float64: random directions (standard normal draws, each row scaled to norm 1)."""
    v = rng.standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its norm (rows of norm < 1e-12 by 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class World:
    """The vectors every video of one benchmark run shares (float64).

    Attributes:
        context (ndarray[K, C]): per class its scene, norm 1.
        action (ndarray[K, C]): per class its action, norm ``action_norm``.
        backgrounds (ndarray[M, C]): norm 1.
        lookalike (ndarray[K, C] | None): per class a scene of norm 1 at cosine ``lookalike_cos`` to its
            context (None unless asked for).
    """

    context: np.ndarray
    action: np.ndarray
    backgrounds: np.ndarray
    lookalike: np.ndarray | None = None

    @classmethod
    def draw(cls, rng: np.random.Generator, classes: int, dim: int, backgrounds: int, action_norm: float,
             lookalike_cos: float | None = None) -> World:
        """Draw, in this order, the contexts, the actions, the backgrounds and (with ``lookalike_cos``)
        the look-alikes: ``c s_k + sqrt(1 - c²) r_k`` with ``r_k`` a random direction orthogonal to ``s_k``."""
        context = unit_vectors(rng, classes, dim)
        action = action_norm * unit_vectors(rng, classes, dim)
        background = unit_vectors(rng, backgrounds, dim)
        lookalike = None
        if lookalike_cos is not None:
            rest = unit_vectors(rng, classes, dim)
            rest = normalize_rows(rest - (rest * context).sum(1, keepdims=True) * context)        # ⟂ s_k
            c = lookalike_cos
            lookalike = c * context + np.sqrt(1 - c * c) * rest
        return cls(context, action, background, lookalike)


def coverage(starts: np.ndarray, length: float, segment: tuple[float, float]) -> np.ndarray:
    """ndarray[T]: how much of each snippet interval ``[starts_i, starts_i + length)`` the segment
    ``(start, end)`` covers (same unit as ``starts``; divide by ``length`` for a fraction)."""
    snippets = np.stack([starts, starts + length], axis=1)
    return segment_intersection(snippets, np.asarray(segment, dtype=np.float64))


def whole_window_frames(num_snippets: int, window: int, stride: int) -> int:
    """Sampled frames of a video whose T snippets are whole windows: ``stride (T - 1) + window``
    (``stride T`` when windows do not overlap), so that the file's snippet count is T."""
    return stride * (num_snippets - 1) + window if window > stride else stride * num_snippets


def write_two_stream(path: str | os.PathLike, features: np.ndarray, fps: float, window: int, stride: int,
                     num_frames: int | None = None) -> Path:
    """A feature file of CONVENTIONS.md (atomic) holding ``features`` (ndarray[T, C]) as two streams:
    ``rgb`` the first C/2 channels, ``flow`` the rest (the consumer concatenates them back in that order).

    Args:
        num_frames: sampled frames (default :func:`whole_window_frames`).
    """
    path = Path(path)
    t, half = len(features), features.shape[1] // 2
    frames = whole_window_frames(t, window, stride) if num_frames is None else num_frames
    attrs = {"fps": fps, "window": window, "stride": stride, "num_frames": frames, "duration": frames / fps,
             "source": f"synthetic/{path.stem}", "flow_method": "synthetic",
             "weights": {s: {"id": "synthetic", "sha256": "0" * 64} for s in ("rgb", "flow")}}
    return write_features(path, {"rgb": features[:, :half], "flow": features[:, half:]}, attrs)


def holds_snippets(path: str | os.PathLike, num_snippets: int, dim: int, window: int, stride: int) -> bool:
    """Whether ``path`` is a readable two-stream feature file of ``num_snippets`` whole-window snippets
    of ``dim`` channels (so a rerun may reuse it)."""
    try:
        ff = read_features(path, ("rgb", "flow"), rows=slice(0, 0))
    except FeatureFileError:
        return False
    return ff.features.shape[1] == dim and ff.num_frames == whole_window_frames(num_snippets, window, stride)


def write_database(path: str | os.PathLike, database: dict[str, dict]) -> Path:
    """The annotation file ``{"database": database}`` (ActivityNet layout, atomic)."""
    return write_annotations(path, database)


def mean_cosine(spaces: list[np.ndarray], kinds: list[np.ndarray], kind: int, other: int) -> float:
    """Mean cosine between every ``kind`` snippet and every ``other`` snippet of the same video, pooled
    over all such pairs of all videos.

    Args:
        spaces: per video, ndarray[T, D] (features, or a component of them).
        kinds: per video, ndarray[T] int: each snippet's kind.
    """
    total, count = 0.0, 0
    for x, k in zip(spaces, kinds):
        x = normalize_rows(x.astype(np.float64))
        sims = x[k == kind] @ x[k == other].T
        total += float(sims.sum())
        count += sims.size
    return total / max(count, 1)


def score_detector(model, meta: dict, feature_dir: str | os.PathLike, annotations: str | os.PathLike,
                   checkpoint: str | os.PathLike, thresholds, subset: str = "test") -> dict:
    """Save a trained detector to ``checkpoint``, run it on ``subset``'s feature files and score it with
    :func:`evaluate.evaluate_detection`: ``{"mAP": [per tIoU], "average_mAP", "detections"}`` (fractions)."""
    save_detector(checkpoint, model, meta)
    dets = run_detector(checkpoint, feature_dir, subset=subset, progress=False)
    gt = load_ground_truth(annotations, subset)
    pred = load_predictions({"results": {vid: [d.to_json() for d in ds] for vid, ds in dets.items()}}, gt)
    res = evaluate_detection(gt, pred, thresholds)
    return {"mAP": [float(m) for m in res.mAP], "average_mAP": float(res.average_mAP),
            "detections": int(sum(len(d) for d in dets.values()))}
