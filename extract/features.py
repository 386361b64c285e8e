"""Feature files of CONVENTIONS.md: one HDF5 file per video, written atomically.

Layout of ``<out>/<video_id>.h5``:

* datasets ``rgb`` and/or ``flow``: float32 (T, 1024); consumers concatenate present streams in the
  order rgb, flow;
* optional ``rgb_spatial`` / ``flow_spatial``: float16 (T, 1024, 7, 7) Mixed_5c maps (time-averaged
  over the snippet);
* attributes ``fps``, ``window``, ``stride``, ``num_frames``, ``duration``, ``source``, ``weights``
  (JSON: per stream the checkpoint id and sha256), ``flow_method``, ``format_version``.

Refactored files (``python -m refactor apply``) hold ``action`` and ``cooccurrence`` in place of
``rgb`` / ``flow``, with the same attributes plus ``refactor``.

This module is the format's only reader (:func:`read_features`) and writer (:class:`FeatureWriter`,
row by row as extraction produces them; :func:`write_features`, whole arrays at once).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from common.fileio import atomic_path
from extract.snippets import SnippetPlan, snippet_times

__all__ = ["FORMAT_VERSION", "REQUIRED_ATTRS", "STREAM_ORDER", "FeatureFile", "FeatureFileError", "FeatureWriter",
           "has_spatial", "read_features", "read_spatial", "snippet_times", "write_features"]

FORMAT_VERSION = 1
# I3D streams, then the components of refactored features (python -m refactor apply): f' = action ⊕ cooccurrence
STREAM_ORDER = ("rgb", "flow", "action", "cooccurrence")
# attributes every feature file carries (format_version is set by the writer)
REQUIRED_ATTRS = ("fps", "window", "stride", "num_frames", "duration", "source", "weights", "flow_method")


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



def has_spatial(path: str | os.PathLike, stream: str = "rgb") -> bool:
    """Whether a feature file holds ``<stream>_spatial`` maps (False for a file that is not readable)."""
    try:
        with h5py.File(path, "r") as f:
            return f"{stream}_spatial" in f
    except OSError:
        return False


def read_spatial(path: str | os.PathLike, stream: str, snippets: np.ndarray) -> np.ndarray:
    """float32 ndarray[n, D, h, w]: the Mixed_5c maps of ``stream`` at the given snippet indices."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FeatureFileError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        name = f"{stream}_spatial"
        if name not in f:
            raise FeatureFileError(f"{path.name} has no {name} maps: extract with --spatial")
        ds = f[name]
        return np.stack([ds[int(i)] for i in snippets]).astype(np.float32) if len(snippets) else \
            np.zeros((0, *ds.shape[1:]), dtype=np.float32)

class FeatureWriter:
    """Writes one feature file, row by row, atomically: the file appears under its name only when the
    ``with`` block ends without an exception and every required attribute was set.

    Example::

        with FeatureWriter(dest, num_snippets=T, streams=("rgb",), dim=1024) as w:
            w.write("rgb", slice(0, 8), features)           # (8, 1024)
            w.set_attrs(fps=25.0, window=16, ...)            # REQUIRED_ATTRS, and any extra

    Args:
        path: ``<dir>/<video_id>.h5``.
        num_snippets: T.
        streams: datasets to create, each float32 (T, dim).
        spatial: (h, w) of float16 Mixed_5c maps ``<stream>_spatial`` (T, dim, h, w), or None.
        clean_stale: remove temporary files of killed writers first (see ``common.fileio.atomic_path``).
    """

    def __init__(self, path: str | os.PathLike, num_snippets: int, streams: tuple[str, ...], dim: int,
                 spatial: tuple[int, int] | None = None, clean_stale: bool = True):
        unknown = [s for s in streams if s not in STREAM_ORDER]
        if unknown or not streams:
            raise FeatureFileError(f"{path}: streams must be among {', '.join(STREAM_ORDER)}, got {streams}")
        self.path, self.num_snippets, self.streams = Path(path), num_snippets, streams
        self.dim, self.spatial, self.clean_stale = dim, spatial, clean_stale
        self._attrs: dict = {}

    def __enter__(self) -> FeatureWriter:
        self._atomic = atomic_path(self.path, clean_stale=self.clean_stale)
        tmp = self._atomic.__enter__()
        try:
            self._h5 = h5py.File(tmp, "w")
            self._data = {s: self._h5.create_dataset(s, (self.num_snippets, self.dim), dtype="float32")
                          for s in self.streams}
            self._maps = {}
            if self.spatial is not None:
                h, w = self.spatial
                self._maps = {s: self._h5.create_dataset(f"{s}_spatial", (self.num_snippets, self.dim, h, w),
                                                         dtype="float16", chunks=(1, self.dim, h, w))
                              for s in self.streams}
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, stream: str, rows: slice, features: np.ndarray, spatial: np.ndarray | None = None) -> None:
        """Store ``features`` (ndarray[n, dim]) and optionally ``spatial`` maps (ndarray[n, dim, h, w])
        of ``stream`` at ``rows``."""
        self._data[stream][rows] = features
        if spatial is not None:
            self._maps[stream][rows] = spatial

    def set_attrs(self, **attrs) -> None:
        """Set file attributes (``weights`` may be a dict: it is stored as JSON)."""
        self._attrs.update(attrs)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                missing = [k for k in REQUIRED_ATTRS if k not in self._attrs]
                if missing:
                    raise FeatureFileError(f"{self.path}: attributes {missing} were not set")
                attrs = dict(self._attrs)
                if not isinstance(attrs["weights"], str):
                    attrs["weights"] = json.dumps(attrs["weights"], sort_keys=True)
                plan = SnippetPlan(int(attrs["num_frames"]), int(attrs["window"]), int(attrs["stride"]))
                if plan.num_snippets != self.num_snippets:
                    raise FeatureFileError(f"{self.path}: {self.num_snippets} snippets, "
                                           f"but the attributes give {plan.num_snippets}")
                self._h5.attrs.update({**attrs, "format_version": FORMAT_VERSION})
        except BaseException as err:
            self._h5.close()
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        self._h5.close()
        return bool(self._atomic.__exit__(exc_type, exc, tb))


def write_features(path: str | os.PathLike, streams: dict[str, np.ndarray], attrs: dict,
                   spatial: dict[str, np.ndarray] | None = None) -> Path:
    """Write a whole feature file atomically.

    Args:
        streams: name -> float32 (T, D) features, written in :data:`STREAM_ORDER`.
        attrs: :data:`REQUIRED_ATTRS` and any others (``weights`` as a dict or JSON text;
            ``format_version`` is set here).
        spatial: name -> (T, D, h, w) maps, stored as float16 ``<name>_spatial``.
    """
    names = tuple(s for s in STREAM_ORDER if s in streams)
    if len(names) != len(streams):
        raise FeatureFileError(f"{path}: streams must be among {', '.join(STREAM_ORDER)}, got {sorted(streams)}")
    arrays = {s: np.asarray(streams[s], dtype=np.float32) for s in names}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise FeatureFileError(f"{path}: streams must be (T, D) arrays of one shape, got {sorted(map(str, shapes))}")
    t, d = next(iter(shapes))
    hw = None
    if spatial:
        hw = tuple(next(iter(spatial.values())).shape[-2:])
    with FeatureWriter(path, t, names, d, hw) as w:
        for s in names:
            w.write(s, slice(0, t), arrays[s], None if not spatial else np.asarray(spatial[s], dtype=np.float16))
        attrs = {k: v for k, v in attrs.items() if k != "format_version"}
        w.set_attrs(**attrs)
    return Path(path)
