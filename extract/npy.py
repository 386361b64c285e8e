"""Community features in and out: one ``(T, C)`` ``.npy`` per video (ActionFormer / OpenTAD layout)
to and from the feature files of CONVENTIONS.md.

``python -m extract.npy import NPY_DIR --annotations GT --out FEATS [--window 16 --stride 4 --fps F]``
turns every ``NPY_DIR/<video_id>.npy`` into ``FEATS/<video_id>.h5``:

* values are copied bit for bit (float32 as is; float16, and float64 whose every value is a float32,
  are converted exactly; anything else, or a non-finite value, is refused);
* streams (``--streams``): ``auto`` splits C = 2048 into ``rgb`` (first 1024 columns) and ``flow``
  (last 1024), the layout of the community's two-stream THUMOS14 I3D features, and stores any other
  C as one ``rgb`` stream; a comma list of one or two names among rgb, flow, action, cooccurrence
  says it explicitly (two names: the first C/2 columns, then the rest; e.g. ``action,cooccurrence``
  for refactored features exported by ``export``);
* times: snippet ``i`` is at ``(i * stride + window / 2) / fps`` (CONVENTIONS.md; ActionFormer's
  ``feat_offset`` of half a window gives the same), with ``fps`` the video's ``fps`` in the
  annotations where it has one (ActionFormer's JSON does) and ``--fps`` otherwise (a video with
  neither fails);
* ``num_frames = (T - 1) * stride + window``: the frames the T snippets cover, the one count for
  which the reader's :class:`~extract.snippets.SnippetPlan` gives exactly T snippets (the source
  video's own frame count is not known; its tail past the last window is not in the features);
* ``duration``: the video's ``duration`` in the annotations where it has one (the real video's, which
  ``detect`` clips detections to); otherwise ``num_frames / fps``, the span the snippets cover;
* attributes ``source`` (the .npy path), ``imported_from = "npy"``, ``weights`` (per stream
  ``{"id": "unknown", "sha256": null, "source": path, "verified": false}``: the extractor is not
  known) and ``flow_method = "unknown"`` (``"none"`` without a flow stream).

``python -m extract.npy export FEATS --out NPY_DIR [--annotations GT]`` writes every
``FEATS/<video_id>.h5`` as ``NPY_DIR/<video_id>.npy``, float32 ``(T, D)``: the streams present
concatenated in the order rgb, flow, action, cooccurrence (raw files: rgb ⊕ flow; refactored files
of ``refactor apply``: action ⊕ cooccurrence). With ``--annotations`` it also writes
``NPY_DIR/annotations.json`` (``--json-out`` elsewhere) in ActionFormer's layout for the exported
videos that have ground truth: ``{"version", "database": {video_id: {"subset", "duration", "fps",
"annotations": [{"label", "segment", "label_id"}]}}}``, ``fps`` from the feature file, ``duration``
from the ground truth where it has one (else the file's), ``label_id`` the class's index in sorted
class names over the whole database; set ActionFormer's ``feat_stride``/``num_frames`` to the files'
``stride``/``window``. So refactored features go to ActionFormer or OpenTAD unchanged.

Import then export gives back the same bytes of values (``tests/test_npy.py``). Not supported:
ActivityNet's resized layouts (features interpolated to a fixed length per video, e.g. 100 or 128
rows, whose snippet times are not ``i * stride / fps``) and CSV features (BSN/BMN's ``csv_mean_100``);
a fixed-length file imported here would get wrong times.

Batches: a file that cannot be converted is listed with its reason, the others are still written,
no partial file is left (feature files through :func:`extract.features.write_features`, ``.npy``
files through :func:`common.fileio.atomic_path`), and the command exits 1. Existing outputs are
skipped unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.annotations import AnnotationError, read_database, write_annotations
from common.config import (ConfigError, Section, add_config_arguments, add_section_arguments, build_section,
                           dump_settings, effective_settings, resolve_settings)
from common.fileio import atomic_path
from common.paths import unusable_outputs
from extract.features import STREAM_ORDER, FeatureFileError, read_features, write_features
from extract.snippets import SnippetPlan

__all__ = ["NpyImportConfig", "NpyReport", "NpyError", "split_streams", "import_npy", "import_folder",
           "export_features", "export_folder", "actionformer_database", "main"]

TWO_STREAM_DIM = 2048


class NpyError(ValueError):
    """A ``.npy`` file or a setting that cannot be used; the message says why in one line."""


@dataclass
class NpyImportConfig:
    """How community ``(T, C)`` features are read.

    Attributes:
        window: frames per snippet the features were computed on (16 for I3D).
        stride: frames between snippet starts (4 for the community's THUMOS14 I3D features).
        fps: frame rate of videos whose annotation entry has no fps (none: such videos fail).
        streams: auto (C = 2048: rgb then flow halves; else one rgb stream), or one or two of
            rgb, flow, action, cooccurrence as a comma list (two: first half, second half).
        overwrite: redo videos whose feature file exists.
    """

    window: int = 16
    stride: int = 4
    fps: float | None = None
    streams: str = "auto"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.window < 1 or self.stride < 1:
            raise NpyError(f"window and stride must be >= 1, got {self.window} and {self.stride}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise NpyError(f"fps must be a positive number, got {self.fps}")
        self.stream_names(2)            # checks the spelling

    def stream_names(self, dim: int) -> tuple[str, ...]:
        """The streams a ``(T, dim)`` array is split into."""
        if self.streams.strip() == "auto":
            return ("rgb", "flow") if dim == TWO_STREAM_DIM else ("rgb",)
        names = tuple(s.strip() for s in self.streams.split(",") if s.strip())
        if not 1 <= len(names) <= 2 or any(n not in STREAM_ORDER for n in names) or len(set(names)) != len(names):
            raise NpyError(f"streams must be auto or one or two of {', '.join(STREAM_ORDER)}, got {self.streams!r}")
        if tuple(n for n in STREAM_ORDER if n in names) != names:
            raise NpyError(f"streams {self.streams!r} must be listed in the order {', '.join(STREAM_ORDER)}")
        return names


@dataclass
class NpyReport:
    """Outcome of a batch: ``written`` and ``skipped`` paths, ``failed`` input -> reason."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def split_streams(features: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Stream name -> its columns of ``features`` (ndarray[T, C]): one stream takes all C, two take
    the first and second half."""
    if len(names) == 1:
        return {names[0]: features}
    c = features.shape[1]
    if c % 2:
        raise NpyError(f"{c} columns cannot be split into two streams ({', '.join(names)})")
    return {names[0]: features[:, : c // 2], names[1]: features[:, c // 2:]}


NPY_MAGIC = b"\x93NUMPY"
"""The first bytes of every .npy file (NumPy's format, any version)."""


def _load_npy(path: Path) -> np.ndarray:
    """float32 ndarray[T, C] of a .npy file, converted only where exact."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise NpyError(f"cannot be read ({exc.strerror or type(exc).__name__})") from exc
    if magic != NPY_MAGIC:          # np.load would try it as a pickle and say so, which misleads
        raise NpyError("not a .npy file (it does not start with NumPy's header)")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise NpyError(f"not a readable .npy array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                       ) from exc
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise NpyError(f"expected a (T, C) array with T, C >= 1, got shape {getattr(array, 'shape', None)}")
    if array.dtype.kind != "f":
        raise NpyError(f"expected floating-point features, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise NpyError(f"{int(np.count_nonzero(~np.isfinite(array)))} values are not finite")
    converted = array.astype(np.float32)
    if array.dtype.itemsize > 4 and not np.array_equal(converted.astype(array.dtype), array):
        raise NpyError(f"dtype {array.dtype} values that float32 cannot hold exactly (feature files store float32)")
    return converted


def _positive(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
        raise NpyError(f"{what} {value!r} is not a positive number")
    return number


def import_npy(path: str | os.PathLike, out_dir: str | os.PathLike, config: NpyImportConfig,
               entry: dict | None = None) -> Path:
    """Convert one ``<video_id>.npy`` into ``out_dir/<video_id>.h5``.

    Args:
        entry: the video's ground-truth entry (for ``fps`` and ``duration``), or None.

    Raises:
        NpyError: the array or its fps cannot be used (one line, without the path).
    """
    path = Path(path)
    entry = entry or {}
    features = _load_npy(path)
    t, c = features.shape
    streams = split_streams(features, config.stream_names(c))
    if "fps" in entry:
        fps = _positive(entry["fps"], "annotation fps")
    elif config.fps is not None:
        fps = float(config.fps)
    else:
        raise NpyError("no fps: the annotations give none for this video; pass --fps")
    num_frames = (t - 1) * config.stride + config.window
    assert SnippetPlan(num_frames, config.window, config.stride).num_snippets == t
    duration = _positive(entry["duration"], "annotation duration") if "duration" in entry else num_frames / fps
    weights = {s: {"id": "unknown", "sha256": None, "source": str(path), "verified": False} for s in streams}
    attrs = {"fps": fps, "window": config.window, "stride": config.stride, "num_frames": num_frames,
             "duration": duration, "source": str(path), "weights": weights, "imported_from": "npy",
             "flow_method": "unknown" if "flow" in streams else "none"}
    return write_features(Path(out_dir) / f"{path.stem}.h5", streams, attrs)


def import_folder(npy_dir: str | os.PathLike, out_dir: str | os.PathLike, config: NpyImportConfig,
                  annotations: str | os.PathLike | dict | None = None, on_error=None) -> NpyReport:
    """Convert every ``npy_dir/*.npy`` (sorted by name); see the module docstring.

    Args:
        annotations: ground truth (any layout :func:`common.annotations.read_database` reads) giving
            ``fps`` and ``duration`` per video, or None.
        on_error: called as ``on_error(name, reason)`` for each failed file.

    Raises:
        NpyError: ``npy_dir`` is not a folder or holds no .npy file; AnnotationError: bad annotations.
    """
    npy_dir, out_dir = Path(npy_dir), Path(out_dir)
    if not npy_dir.is_dir():
        raise NpyError(f"{npy_dir} is not a folder")
    files = sorted(p for p in npy_dir.glob("*.npy") if not p.name.startswith("."))
    if not files:
        raise NpyError(f"{npy_dir} holds no .npy file")
    database = read_database(annotations) if annotations is not None else {}
    report = NpyReport()
    for path in files:
        dest = out_dir / f"{path.stem}.h5"
        if dest.exists() and not config.overwrite:
            report.skipped.append(dest)
            continue
        try:
            report.written.append(import_npy(path, out_dir, config, database.get(path.stem)))
        except (NpyError, FeatureFileError) as exc:
            report.failed[path.name] = str(exc)
            if on_error is not None:
                on_error(path.name, str(exc))
    return report


def export_features(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write one feature file's features (every stream present, concatenated in
    :data:`~extract.features.STREAM_ORDER`) as ``out_dir/<video_id>.npy``, float32 ``(T, D)``."""
    ff = read_features(path)
    dest = Path(out_dir) / f"{ff.video_id}.npy"
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(ff.features, dtype=np.float32), allow_pickle=False)
    return dest


def actionformer_database(database: dict[str, dict], files: dict[str, tuple[float, float]]) -> dict[str, dict]:
    """ActionFormer's annotation entries for the videos in ``files`` (video id -> (fps, duration) of
    its feature file) that ``database`` (ground truth) has; see the module docstring."""
    labels = sorted({a["label"] for e in database.values() for a in e.get("annotations", [])
                     if isinstance(a, dict) and isinstance(a.get("label"), str)})
    label_id = {name: k for k, name in enumerate(labels)}
    out = {}
    for vid, entry in database.items():
        if vid not in files:
            continue
        fps, duration = files[vid]
        anns = []
        for k, ann in enumerate(entry.get("annotations", [])):
            label = ann.get("label") if isinstance(ann, dict) else None
            if not isinstance(label, str):
                raise AnnotationError(f"ground truth {vid} annotation {k}: missing label")
            anns.append({"label": label, "segment": [float(x) for x in ann["segment"]], "label_id": label_id[label]})
        out[vid] = {"subset": entry["subset"], "duration": float(entry.get("duration", duration)), "fps": fps,
                    "annotations": anns}
    return out


def export_folder(feature_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  annotations: str | os.PathLike | dict | None = None, json_out: str | os.PathLike | None = None,
                  overwrite: bool = False, on_error=None) -> NpyReport:
    """Write every ``feature_dir/*.h5`` (sorted) as ``out_dir/<video_id>.npy``, and with
    ``annotations`` an ActionFormer-layout JSON (``json_out``, default ``out_dir/annotations.json``)
    covering the exported videos with ground truth (``report.written`` lists it last).

    Raises:
        NpyError: ``feature_dir`` is not a folder or holds no feature file; AnnotationError: bad
            annotations (read before anything is written).
    """
    feature_dir, out_dir = Path(feature_dir), Path(out_dir)
    if not feature_dir.is_dir():
        raise NpyError(f"{feature_dir} is not a folder")
    files = sorted(p for p in feature_dir.glob("*.h5") if not p.name.startswith("."))
    if not files:
        raise NpyError(f"{feature_dir} holds no feature file (.h5)")
    database = read_database(annotations) if annotations is not None else None
    report = NpyReport()
    exported: dict[str, tuple[float, float]] = {}
    for path in files:
        dest = out_dir / f"{path.stem}.npy"
        try:
            ff = read_features(path, rows=slice(0, 0))          # attributes (and the file checked)
            if dest.exists() and not overwrite:
                report.skipped.append(dest)
            else:
                report.written.append(export_features(path, out_dir))
            exported[ff.video_id] = (ff.fps, ff.duration)
        except FeatureFileError as exc:
            report.failed[path.name] = str(exc)
            if on_error is not None:
                on_error(path.name, str(exc))
    if database is not None:
        db = actionformer_database(database, exported)
        dest = Path(json_out) if json_out is not None else out_dir / "annotations.json"
        report.written.append(write_annotations(dest, db, version="refactornet export (ActionFormer layout)"))
    return report


# --- command line -------------------------------------------------------------------------------------------

IMPORT = Section("import", NpyImportConfig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m extract.npy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("import", help="(T, C) .npy per video -> feature files")
    p.add_argument("npy_dir", metavar="NPY_DIR", help="folder of <video_id>.npy")
    p.add_argument("--out", required=True, help="output folder for <video_id>.h5")
    p.add_argument("--annotations", default=None, metavar="GT",
                   help="ground truth (ActivityNet-layout JSON or THUMOS14 folder) giving fps and duration per video")
    add_section_arguments(p, IMPORT)
    add_config_arguments(p)
    p = sub.add_parser("export", help="feature files -> (T, D) .npy per video (+ ActionFormer JSON)")
    p.add_argument("features", metavar="FEATS", help="folder of <video_id>.h5 (raw or refactored)")
    p.add_argument("--out", required=True, help="output folder for <video_id>.npy")
    p.add_argument("--annotations", default=None, metavar="GT",
                   help="also write an ActionFormer-layout annotation JSON for the exported videos")
    p.add_argument("--json-out", default=None, help="where that JSON goes (default: OUT/annotations.json)")
    p.add_argument("--overwrite", action="store_true", help="redo videos whose .npy exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmd = f"extract.npy {args.command}"

    def on_error(name: str, reason: str) -> None:
        print(f"{cmd}: {name}: {reason}", file=sys.stderr)

    if unusable_outputs(cmd, files={"--json-out": getattr(args, "json_out", None) or None}, dirs={"--out": args.out}):
        return 2
    try:
        if args.command == "import":
            config = build_section(IMPORT, resolve_settings([IMPORT], args, args.config)["import"])
            if args.print_config:
                print(dump_settings(effective_settings([(IMPORT, config)])), end="")
                return 0
            report = import_folder(args.npy_dir, args.out, config, args.annotations, on_error=on_error)
        else:
            report = export_folder(args.features, args.out, args.annotations, args.json_out, args.overwrite,
                                   on_error=on_error)
    except (NpyError, AnnotationError, ConfigError, FeatureFileError) as exc:
        print(f"{cmd}: {exc}", file=sys.stderr)
        return 2
    print(f"{cmd}: {len(report.written)} written, {len(report.skipped)} skipped (exist; --overwrite redoes them), "
          f"{len(report.failed)} failed -> {args.out}")
    if report.failed:
        print(f"{cmd}: failed: " + "; ".join(f"{n} ({r})" for n, r in report.failed.items()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
