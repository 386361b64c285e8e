"""Feature files and annotations as training windows and inference sequences.

Time axis: snippet ``i`` of a feature file is centred at ``t0 + i * dt`` seconds with
``t0 = window / (2 fps)`` and ``dt = stride / fps`` (CONVENTIONS.md), so a position ``x`` in
snippet-index coordinates (fractional allowed) is the time ``t0 + x * dt`` and back. The detector
works in these coordinates; only :class:`TimeAxis` converts.

Training reads fixed-length windows (``window`` snippets, overlapping by ``overlap``) straight from
the HDF5 files, so memory does not grow with the dataset; a video shorter than a window is one
zero-padded window.

Temporal rescaling (``temporal_scale = L``, the ActivityNet practice of BSN/BMN): every video
becomes L positions whatever its length T. Position j stands for the j-th of L equal parts of the
span ``[-½, T - ½]`` covered by the snippets; its feature is the mean over that part (RoI pooling of
the whole sequence into L bins, :func:`detect.roi.roi_pool_1d`), and its time the part's centre, so
the time axis stays affine: ``x = -½ + (j + ½) T / L`` in snippet units.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detect.roi import roi_pool_1d
from common.annotations import AnnotationError, load_ground_truth
from extract.features import FeatureFileError, read_features
from extract.snippets import SnippetPlan

__all__ = ["TimeAxis", "VideoRecord", "DetectDataError", "scan_videos", "make_windows", "read_window",
           "rescale_features"]


class DetectDataError(ValueError):
    """Feature files or annotations that cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class TimeAxis:
    """Affine map between snippet-index coordinates and seconds: ``t = t0 + x * dt``."""

    t0: float
    dt: float

    @classmethod
    def of(cls, fps: float, window: int, stride: int) -> TimeAxis:
        return cls(t0=window / (2.0 * fps), dt=stride / float(fps))

    def rescaled(self, num_snippets: int, scale: int) -> TimeAxis:
        """The axis of a T-snippet sequence rescaled to ``scale`` positions (see the module docstring)."""
        step = num_snippets / scale
        return TimeAxis(t0=self.t0 + self.dt * (step / 2 - 0.5), dt=self.dt * step)

    def to_time(self, x: np.ndarray) -> np.ndarray:
        return self.t0 + np.asarray(x, dtype=np.float64) * self.dt

    def to_index(self, t: np.ndarray) -> np.ndarray:
        return (np.asarray(t, dtype=np.float64) - self.t0) / self.dt


@dataclass
class VideoRecord:
    """One feature file and its ground truth.

    Attributes:
        video_id, path: the file ``<dir>/<video_id>.h5``.
        num_snippets: T (the positions the detector sees: ``scale`` when rescaled).
        axis: its time axis (of those positions).
        duration: seconds (the feature file's ``duration``).
        fps, window, stride: its sampling.
        segments (ndarray[G, 2]): instances in seconds (empty without annotations).
        labels (ndarray[G] int): their class indices.
    """

    video_id: str
    path: Path
    num_snippets: int
    axis: TimeAxis
    duration: float
    fps: float
    window: int
    stride: int
    segments: np.ndarray
    labels: np.ndarray
    scale: int | None = None
    source_snippets: int | None = None

    @property
    def segments_index(self) -> np.ndarray:
        """(G, 2) instances in snippet-index coordinates."""
        return self.axis.to_index(self.segments)


def _header(path: Path, streams: tuple[str, ...] | None):
    try:
        ff = read_features(path, streams, rows=slice(0, 0))
    except FeatureFileError as exc:
        raise DetectDataError(str(exc)) from exc
    dim = ff.features.shape[1]
    num = SnippetPlan(ff.num_frames, ff.window, ff.stride).num_snippets
    return ff, dim, num


def scan_videos(feature_dir: str | os.PathLike, streams: tuple[str, ...] | None = None,
                annotations: str | os.PathLike | dict | None = None, subset: str | None = None,
                classes: list[str] | None = None, require_annotations: bool = False,
                video_ids: set[str] | None = None, failures: dict[Path, str] | None = None,
                temporal_scale: int | None = None,
                expected_dim: int | None = None) -> tuple[list[VideoRecord], list[str], tuple[str, ...], int]:
    """Feature files of a folder (optionally only those of an annotated subset), with their ground truth.

    Args:
        streams: streams to read (default: those of the first file; every file must have them).
        annotations, subset: ground truth (ActivityNet layout); with ``subset`` only its videos are kept.
        classes: class order to use (a checkpoint's); labels not in it are an error. Default: the
            subset's classes in order of first appearance.
        require_annotations: every kept video must be in the subset (training).
        video_ids: keep only these videos (e.g. a subset's list stored in a checkpoint).
        failures: if given, unreadable files are recorded here (path -> reason) and skipped;
            otherwise the first one raises.
        temporal_scale: rescale every video to this many positions (None: keep the snippets).
        expected_dim: the feature dimension every file must have (a checkpoint's); default: the
            first readable file's. With ``failures``, a file of another dimension is recorded there
            with its own reason and skipped.

    With ``require_annotations``, annotated videos of the subset that have no feature file are
    counted on stderr (one line, naming one of them), not dropped silently.

    Returns:
        (videos, classes, streams, feature dimension).
    """
    feature_dir = Path(feature_dir)
    if not feature_dir.is_dir():
        raise DetectDataError(f"no such feature folder: {feature_dir}")
    files = sorted(feature_dir.glob("*.h5"))
    if not files:
        raise DetectDataError(f"no feature files (*.h5) in {feature_dir}")
    if video_ids is not None:
        files = [f for f in files if f.stem in video_ids]
        if not files:
            raise DetectDataError(f"none of the feature files in {feature_dir} is among the {len(video_ids)} "
                                  "videos asked for")
    gt = None
    if annotations is not None:
        if subset is None:
            raise ValueError("annotations need a subset")
        try:
            gt = load_ground_truth(annotations, subset)
        except AnnotationError as exc:
            raise DetectDataError(str(exc)) from exc
        if classes is None:
            classes = list(gt.classes)
        index = {c: i for i, c in enumerate(classes)}
        unknown = [c for c in gt.classes if c not in index]
        if unknown:
            raise DetectDataError(f"annotation label {unknown[0]!r} is not one of the model's {len(classes)} classes")
        in_subset = set(gt.videos)
        if require_annotations:
            have = {f.stem for f in files}
            absent = sorted(v for v in in_subset if v not in have)
            if absent and video_ids is None:
                print(f"warning: {len(absent)} of the {len(in_subset)} annotated videos of subset {subset!r} have "
                      f"no feature file in {feature_dir} and are left out (e.g. {absent[0]!r})", file=sys.stderr)
            files = [f for f in files if f.stem in in_subset]
            if not files:
                raise DetectDataError(f"none of the feature files in {feature_dir} is a video of subset {subset!r}")
    videos: list[VideoRecord] = []
    dim = expected_dim
    for path in files:
        try:
            ff, d, num = _header(path, streams)
        except DetectDataError as exc:
            if failures is None:
                raise
            failures[path] = str(exc)
            continue
        if streams is None:
            streams = ff.streams
        if dim is None:
            dim = d
        elif d != dim:
            expected = "the checkpoint expects" if expected_dim is not None else "others are"
            reason = f"{path.name} has {d}-d features ({'+'.join(ff.streams)}), {expected} {dim}-d"
            if failures is None:
                raise DetectDataError(reason)
            failures[path] = reason
            continue
        segs = np.zeros((0, 2))
        labs = np.zeros(0, dtype=np.int64)
        if gt is not None:
            rows = np.flatnonzero(gt.video == gt.video_index.get(path.stem, -1))
            segs = gt.segments[rows]
            labs = np.asarray([index[gt.classes[k]] for k in gt.labels[rows]], dtype=np.int64)
        axis = TimeAxis.of(ff.fps, ff.window, ff.stride)
        if temporal_scale is not None:
            axis = axis.rescaled(num, temporal_scale)
        videos.append(VideoRecord(video_id=path.stem, path=path, num_snippets=temporal_scale or num, axis=axis,
                                  duration=ff.duration, fps=ff.fps, window=ff.window, stride=ff.stride,
                                  segments=segs, labels=labs, scale=temporal_scale, source_snippets=num))
    if not videos:
        first = next(iter(failures.values()), "") if failures else ""
        raise DetectDataError(f"no readable feature file in {feature_dir} ({len(failures or {})} failed"
                              + (f"; first: {first})" if first else ")"))
    return videos, list(classes or []), tuple(streams), int(dim)


def make_windows(num_snippets: int, window: int, overlap: float = 0.5) -> list[tuple[int, int]]:
    """Windows ``[start, stop)`` of at most ``window`` snippets covering ``[0, num_snippets)``,
    consecutive starts ``window * (1 - overlap)`` apart; the last window ends at the sequence's end."""
    if window < 1 or not 0 <= overlap < 1:
        raise ValueError(f"window must be >= 1 and overlap in [0, 1), got {window}, {overlap}")
    if num_snippets <= window:
        return [(0, num_snippets)]
    hop = max(1, int(round(window * (1 - overlap))))
    starts = list(range(0, num_snippets - window, hop)) + [num_snippets - window]
    return [(s, s + window) for s in starts]


def rescale_features(features: np.ndarray, scale: int) -> np.ndarray:
    """(T, C) snippet features -> (scale, C): position j is the mean of the j-th of ``scale`` equal
    parts of ``[-½, T - ½]`` (linear interpolation between snippets, at least 4 points a part)."""
    t = len(features)
    samples = max(4, int(np.ceil(4 * t / scale)))
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).T[None]          # (1, C, T)
    roi = torch.tensor([[0.0, -0.5, t - 0.5]])
    return roi_pool_1d(x, roi, bins=(0, scale, 0), context=0.0, samples=samples)[0].T.numpy()


def read_window(video: VideoRecord, streams: tuple[str, ...], start: int, stop: int) -> np.ndarray:
    """Positions ``[start, stop)`` of a video: ndarray[stop - start, C] float32 (rescaled videos
    are read whole and rescaled first)."""
    rows = slice(start, stop) if video.scale is None else None
    try:
        feats = read_features(video.path, streams, rows=rows).features
    except FeatureFileError as exc:
        raise DetectDataError(str(exc)) from exc
    if not np.all(np.isfinite(feats)):
        raise DetectDataError(f"{video.path.name}: features contain NaN or inf")
    if video.scale is not None:
        feats = rescale_features(feats, video.scale)[start:stop]
    return feats
