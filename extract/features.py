"""Feature files of CONVENTIONS.md: one HDF5 file per video, written atomically.

Layout of ``<out>/<video_id>.h5``:

* datasets ``rgb`` and/or ``flow``: float32 (T, 1024); consumers concatenate present streams in the
  order rgb, flow;
* optional ``rgb_spatial`` / ``flow_spatial``: float16 (T, 1024, 7, 7) Mixed_5c maps (time-averaged
  over the snippet);
* attributes ``fps``, ``window``, ``stride``, ``num_frames``, ``duration``, ``source``, ``weights``
  (JSON: per stream the checkpoint id and sha256), ``flow_method``, ``format_version``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from extract.snippets import SnippetPlan, snippet_times

__all__ = ["FORMAT_VERSION", "STREAM_ORDER", "FeatureFile", "FeatureFileError", "read_features",
           "snippet_times"]

FORMAT_VERSION = 1
# I3D streams, then the components of refactored features (python -m refactor apply): f' = action ⊕ cooccurrence
STREAM_ORDER = ("rgb", "flow", "action", "cooccurrence")


class FeatureFileError(ValueError):
    """A feature file is missing, incomplete or not in the expected layout."""


@dataclass
class FeatureFile:
    """A feature file's contents.

    Attributes:
        video_id: file name without extension.
        features (ndarray[T, D]): present streams concatenated in the order rgb, flow.
        streams: the streams in ``features``, in order.
        fps, window, stride: sampling (see CONVENTIONS.md).
        num_frames: sampled frames in the video.
        duration: video duration in seconds.
        attrs: every attribute of the file (``weights`` decoded from JSON).
    """

    video_id: str
    features: np.ndarray
    streams: tuple[str, ...]
    fps: float
    window: int
    stride: int
    num_frames: int
    duration: float
    attrs: dict = field(default_factory=dict)

    @property
    def times(self) -> np.ndarray:
        """(T,) snippet centre times in seconds."""
        return snippet_times(len(self.features), self.fps, self.window, self.stride)


def read_features(path: str | os.PathLike, streams: tuple[str, ...] | None = None,
                  rows: slice | None = None) -> FeatureFile:
    """Read a feature file.

    Args:
        path: ``<dir>/<video_id>.h5``.
        streams: streams to load (default: every stream present, in the order rgb, flow).
        rows: read only these snippets (e.g. ``slice(256, 512)`` for a training window, or
            ``slice(0, 0)`` for the attributes alone); the snippet count is still checked on the
            whole file, and ``features`` holds just the rows read (``times`` then no longer
            applies; use :func:`snippet_times` with the attributes).
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"{path}: no such feature file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        present = tuple(s for s in STREAM_ORDER if s in f)
        wanted = present if streams is None else tuple(streams)
        if not wanted:
            raise FeatureFileError(f"{path}: holds no feature stream ({', '.join(STREAM_ORDER)})")
        for s in wanted:
            if s not in f:
                raise FeatureFileError(f"{path}: has no {s!r} stream (present: {', '.join(present) or 'none'})")
        lengths = {f[s].shape[0] for s in wanted}
        total = lengths.pop() if len(lengths) == 1 else None
        arrays = [np.asarray(f[s][() if rows is None else rows], dtype=np.float32) for s in wanted]
        if total is None:
            raise FeatureFileError(f"{path}: streams have different lengths {sorted({f[s].shape[0] for s in wanted})}")
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    for key in ("fps", "window", "stride", "num_frames", "duration"):
        if key not in attrs:
            raise FeatureFileError(f"{path}: missing attribute {key!r}")
    if isinstance(attrs.get("weights"), str):
        attrs["weights"] = json.loads(attrs["weights"])
    features = np.concatenate(arrays, axis=1)
    expected = SnippetPlan(int(attrs["num_frames"]), int(attrs["window"]), int(attrs["stride"])).num_snippets
    if total != expected:
        raise FeatureFileError(f"{path}: {total} snippets, expected {expected} from its attributes")
    return FeatureFile(video_id=path.stem, features=features, streams=wanted, fps=float(attrs["fps"]),
                       window=int(attrs["window"]), stride=int(attrs["stride"]),
                       num_frames=int(attrs["num_frames"]), duration=float(attrs["duration"]), attrs=attrs)
