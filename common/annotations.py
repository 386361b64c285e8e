"""Ground truth (CONVENTIONS.md): the ActivityNet-layout JSON and THUMOS14's original annotation
folder; readers and writers. Every package reads ground truth through this module.

ActivityNet layout:
``{"database": {video_id: {"subset", "duration", "annotations": [{"segment": [s, e], "label"}]}}}``
(a file whose top level is the video mapping itself, like the THUMOS14 annotations shipped in
``shared/data``, is accepted too; anything else, e.g. a predictions file, is refused with its
top-level keys named). Extra keys are ignored.

THUMOS14 folder (:func:`read_thumos_folder` / :func:`write_thumos_folder`; :func:`read_database`
and everything above it accept a folder wherever they accept a file): ``<Class>_val.txt`` and
``<Class>_test.txt``, found anywhere below the folder (so a folder holding THUMOS14's validation
and test annotation folders gives both subsets), one ``video_name start end`` line per instance,
in seconds, separated by white space; blank lines are skipped. ``_val`` files give subset
``"validation"``, ``_test`` files ``"test"`` (the JSON's names). It reads as the database of the
equivalent JSON, in this order: videos sorted by name; each video's instances by class, classes
in sorted file-name order, then in line order; so classes are numbered (first appearance, see
below) as they first occur in that order. Text files carry no durations: entries have
``subset`` and ``annotations`` only.

``Ambiguous_val.txt`` / ``Ambiguous_test.txt``: THUMOS14 marks segments whose class cannot be told
with certainty. They are not instances of any class, so they are kept out of ``annotations`` and
stored as ``"ambiguous": [[s, e], ...]`` in the video's entry (a video annotated only with
ambiguous segments is still listed, with no instance) and in :attr:`GroundTruth.ambiguous`.
THUMOS14's own MATLAB evaluator (``TH14eventdetpr.m``) drops from the false-positive list the
detections that overlap an ambiguous segment; the ActivityNet evaluator that the field uses on
THUMOS14 (and :mod:`evaluate`) ignores them, which equals evaluating against a JSON without them
(like ``shared/data/thumos14/thumos14.json``: 3358 test instances, none ambiguous).

:func:`read_database` gives the video mapping as written; :func:`load_ground_truth` one subset as
flat arrays (what the evaluator, RefactorNet's sample collection and the detector read);
:func:`subset_videos` the video ids per subset; :func:`write_annotations` writes a database.

Order matters for exact agreement with the official evaluator (its ties in score are broken by
position): instances keep the file's order, videos in mapping order, annotations in list order.
Classes are numbered in order of first appearance in the subset's ground truth, as the official
evaluator's ``activity_index``.

:func:`read_database` checks every entry's structure once, so every reader above it can rely on it:
an entry is an object with a ``subset`` string; ``annotations``, when present, a list of objects,
each with a segment of exactly two numbers (a third number is refused rather than dropped, as the
official evaluator would silently; numeric strings are read as its ``float()`` reads them) with
finite times and end >= start, and a string ``label``; ``duration``, when present, a finite number
>= 0 (or such a numeric string); ``ambiguous``, when present, a list of such segments. Anything else
is an :class:`AnnotationError` naming the file, the video and what is wrong, e.g.
``ground truth GT.json: video 'v1': "annotations" is a string, not a list``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.fileio import atomic_path, sha256_file

__all__ = ["AnnotationError", "GroundTruth", "read_json", "read_database", "load_ground_truth", "subset_videos",
           "same_subset", "default_subsets", "read_thumos_folder", "write_thumos_folder", "THUMOS_SUBSETS",
           "AMBIGUOUS", "ground_truth_digest", "write_annotations", "parse_segment", "hold_out", "HELDOUT",
           "video_instances"]

# THUMOS14 annotation file suffix -> subset name (as in the ActivityNet-layout JSON)
THUMOS_SUBSETS = {"val": "validation", "test": "test"}
# THUMOS14's class name for segments of uncertain class
AMBIGUOUS = "Ambiguous"


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


def parse_segment(seg, where: str, *, allow_reversed: bool = False) -> tuple[float, float]:
    """``[start, end]`` (a list, tuple or 1-D array of exactly two numbers, or numeric strings as the official
    evaluator's ``float()`` reads them) as two floats; :class:`AnnotationError` (naming ``where``)
    if it is not one, if a time is not finite, or, unless ``allow_reversed``, if end < start."""
    if isinstance(seg, np.ndarray) and seg.ndim == 1:
        seg = seg.tolist()
    if not isinstance(seg, (list, tuple)) or len(seg) != 2 or any(isinstance(x, bool) for x in seg):
        raise AnnotationError(f"{where}: segment {seg!r} is not [start, end]")
    try:
        start, end = float(seg[0]), float(seg[1])
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}: segment {seg!r} is not [start, end]") from exc
    if not (math.isfinite(start) and math.isfinite(end)):
        raise AnnotationError(f"{where}: segment {seg!r} is not finite")
    if end < start and not allow_reversed:
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
        ambiguous: per video of the subset that has them, THUMOS14's ambiguous segments
            (ndarray[A, 2] float64, seconds; not instances, not used by the ActivityNet metrics).
        other_classes: the classes of the ground-truth file (any subset) that have no instance in this
            subset, in order of first appearance in the file (not scored: the mAP is over ``classes``).
    """

    classes: list[str]
    videos: list[str]
    video: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    durations: dict[str, float] = field(default_factory=dict)
    ambiguous: dict[str, np.ndarray] = field(default_factory=dict)
    other_classes: list[str] = field(default_factory=list)

    @property
    def video_index(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.videos)}


def _kind(value) -> str:
    """What a JSON value is, for messages: "null", "a boolean", "a number", "a string", "a list", "an object"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _check_entry(where: str, entry) -> None:
    """Raise :class:`AnnotationError` (``where``: file and video) unless ``entry`` is a database entry of the
    structure the module docstring describes."""
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where} is {_kind(entry)}, not an object")
    if "subset" not in entry:
        raise AnnotationError(f"{where} has no 'subset'")
    if not isinstance(entry["subset"], str):
        raise AnnotationError(f"{where}: \"subset\" is {_kind(entry['subset'])}, not a string")
    if "duration" in entry:
        duration = entry["duration"]
        if isinstance(duration, bool):
            raise AnnotationError(f"{where}: \"duration\" {duration!r} is not a number")
        try:
            seconds = float(duration)
        except (TypeError, ValueError) as exc:
            raise AnnotationError(f"{where}: \"duration\" {duration!r} is not a number") from exc
        if not math.isfinite(seconds):
            raise AnnotationError(f"{where}: \"duration\" {duration!r} is not finite")
        if seconds < 0:
            raise AnnotationError(f"{where}: \"duration\" {duration!r} is negative")
    annotations = entry.get("annotations", [])
    if not isinstance(annotations, list):
        raise AnnotationError(f"{where}: \"annotations\" is {_kind(annotations)}, not a list")
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise AnnotationError(f"{where}: annotation {k} is {_kind(ann)}, not an object")
        parse_segment(ann.get("segment"), f"{where}: annotation {k}")
        label = ann.get("label")
        if label is None:
            raise AnnotationError(f"{where}: annotation {k}: missing label")
        if not isinstance(label, str):
            raise AnnotationError(f"{where}: annotation {k}: label {label!r} is {_kind(label)}, not a string")
    ambiguous = entry.get("ambiguous", [])
    if not isinstance(ambiguous, list):
        raise AnnotationError(f"{where}: \"ambiguous\" is {_kind(ambiguous)}, not a list")
    for k, seg in enumerate(ambiguous):
        parse_segment(seg, f"{where}: ambiguous segment {k}")


def read_database(source: str | os.PathLike | dict) -> dict[str, dict]:
    """The ``database`` mapping of ground truth (video id -> entry), as written, every entry checked
    to have the structure the module docstring describes (the one check every command relies on).

    Args:
        source: an ActivityNet-layout JSON file, its contents, or a THUMOS14 annotation folder
            (:func:`read_thumos_folder`).

    Raises:
        AnnotationError: a missing or invalid file, or an entry of another structure (the file, the
            video and what is wrong named in one line).
    """
    if not isinstance(source, dict) and Path(source).is_dir():
        return read_thumos_folder(source)
    data = read_json(source, "ground truth")
    where = "ground truth" if isinstance(source, dict) else f"ground truth {source}"
    if not isinstance(data, dict):
        raise AnnotationError(f"{where} must be {{'database': {{video_id: {{...}}}}}}, "
                              f"not a JSON {type(data).__name__}")
    if "database" in data:
        database = data["database"]
        if not isinstance(database, dict):
            raise AnnotationError(f"{where}: 'database' must be {{video_id: {{...}}}}")
    else:
        database = data
        if database and not any(isinstance(e, dict) and "subset" in e for e in database.values()):
            keys = ", ".join(repr(k) for k in list(database)[:6]) + (", ..." if len(database) > 6 else "")
            hint = " (a predictions file?)" if "results" in database else ""
            raise AnnotationError(f"{where} has no 'database' and is not a mapping of video ids to entries with a "
                                  f"'subset'; its top-level keys are {keys}{hint}")
    for vid, entry in database.items():
        _check_entry(f"{where}: video {vid!r}", entry)
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


HELDOUT = "heldout"


def hold_out(database: dict[str, dict], subset: str, every: int = 4,
             name: str = HELDOUT, fold: int = 0) -> tuple[dict[str, dict], list[str]]:
    """Split a training subset for model selection: a copy of ``database`` in which every ``every``-th
    video of ``subset`` of each class (the label of its first segment; videos in sorted id order) is moved
    to subset ``name``. A class with 2 to ``every`` - 1 videos gives its last one; a class with a single
    video, and videos without segments, stay in ``subset``.

    ``fold`` (0 to ``every`` - 1) shifts the choice for k-fold selection: a class of n >= ``every`` videos
    gives those at positions ``every`` - 1 - fold, 2 ``every`` - 1 - fold, ..., so the ``every`` folds
    hold out each of its videos exactly once; a class of 2 to ``every`` - 1 gives its video at position
    (n - 1 - fold) mod n. Fold 0 is the split described above.

    Returns:
        (the new database, the moved video ids in sorted order). ``database`` is not changed.

    Raises:
        AnnotationError: ``database`` already has a subset called ``name``.
    """
    if every < 2:
        raise ValueError(f"every must be >= 2, got {every}")
    if not 0 <= fold < every:
        raise ValueError(f"fold must be in [0, {every}), got {fold}")
    taken = next((v for v, e in database.items() if same_subset(e["subset"], name)), None)
    if taken is not None:
        raise AnnotationError(f"cannot hold videos out as subset {name!r}: the annotations already use it "
                              f"(e.g. {taken})")
    by_class: dict[str, list[str]] = {}
    for vid in sorted(database):
        entry = database[vid]
        if same_subset(entry["subset"], subset) and entry.get("annotations"):
            by_class.setdefault(str(entry["annotations"][0]["label"]), []).append(vid)
    held: set[str] = set()
    for vids in by_class.values():
        n = len(vids)
        if n >= every:
            held.update(vids[every - 1 - fold::every])
        elif n > 1:
            held.add(vids[(n - 1 - fold) % n])
    out = {vid: (entry | {"subset": name} if vid in held else entry) for vid, entry in database.items()}
    return out, sorted(held)


def write_annotations(path: str | os.PathLike, database: dict[str, dict], **extra) -> Path:
    """Write ``{"database": database, **extra}`` as JSON atomically (``extra``: e.g. ``version``)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({"database": database, **extra}, f)
    return path


def load_ground_truth(source: str | os.PathLike | dict, subset: str) -> GroundTruth:
    """Read the ground truth of ``subset`` (e.g. ``"test"`` for THUMOS14, ``"validation"`` for
    ActivityNet v1.3; matched without regard to case) from a JSON file, its contents or a THUMOS14
    annotation folder."""
    database = read_database(source)                   # every entry's structure checked
    classes: dict[str, int] = {}
    file_classes: dict[str, None] = {}
    videos, video, segments, labels, durations, ambiguous = [], [], [], [], {}, {}
    subsets = set()
    for vid, entry in database.items():
        subsets.add(entry["subset"])
        if not same_subset(entry["subset"], subset):
            file_classes.update((ann["label"], None) for ann in entry.get("annotations", []))
            continue
        videos.append(vid)
        if "duration" in entry:
            durations[vid] = float(entry["duration"])
        if entry.get("ambiguous"):
            ambiguous[vid] = np.asarray([parse_segment(seg, f"ground truth {vid} ambiguous segment {k}")
                                         for k, seg in enumerate(entry["ambiguous"])], dtype=np.float64)
        for k, ann in enumerate(entry.get("annotations", [])):
            segments.append(parse_segment(ann["segment"], f"ground truth {vid} annotation {k}"))
            labels.append(classes.setdefault(ann["label"], len(classes)))
            file_classes[ann["label"]] = None
            video.append(len(videos) - 1)
    if not videos:
        known = ", ".join(sorted(map(str, subsets)))
        raise AnnotationError(f"ground truth has no video in subset {subset!r} (subsets: {known})")
    if not segments:
        raise AnnotationError(f"ground truth subset {subset!r} has no annotated instance")
    return GroundTruth(classes=list(classes), videos=videos, video=np.asarray(video, dtype=np.int64),
                       segments=np.asarray(segments, dtype=np.float64).reshape(-1, 2),
                       labels=np.asarray(labels, dtype=np.int64), durations=durations,
                       ambiguous=ambiguous, other_classes=[c for c in file_classes if c not in classes])


def video_instances(source: str | os.PathLike | dict,
                    subset: str | None = None) -> dict[str, list[tuple[float, float, str]]]:
    """Every video's ground-truth instances, ``(start, end, label)`` with times in seconds as floats, in the
    file's order (a video without instances maps to an empty list), from anything :func:`read_database`
    reads (which checks the file first, so a malformed one is an :class:`AnnotationError`); with ``subset``,
    the videos of that subset only (matched without regard to case; none is an :class:`AnnotationError`)."""
    database = read_database(source)
    chosen = {vid: entry for vid, entry in database.items()
              if subset is None or same_subset(entry["subset"], subset)}
    if subset is not None and not chosen:
        names = sorted({str(e["subset"]) for e in database.values()})
        raise AnnotationError(f"ground truth has no video in subset {subset!r} (subsets: {', '.join(names)})")
    return {vid: [(*parse_segment(ann["segment"], f"ground truth {vid} annotation {k}"), ann["label"])
                  for k, ann in enumerate(entry.get("annotations", []))]
            for vid, entry in chosen.items()}


def _thumos_files(folder: Path) -> list[tuple[str, str, Path]]:
    """(class, subset, path) of every ``<Class>_val.txt`` / ``<Class>_test.txt`` below ``folder``,
    sorted by file name; the same class and subset twice is an :class:`AnnotationError`."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.rglob("*.txt"), key=lambda p: (p.name, str(p))):
        stem = path.stem
        if "_" not in stem or path.name.startswith("."):
            continue
        name, suffix = stem.rsplit("_", 1)
        if suffix not in THUMOS_SUBSETS or not name:
            continue
        key = (name, THUMOS_SUBSETS[suffix])
        if key in found:
            raise AnnotationError(f"THUMOS14 annotations: {path} and {found[key]} both annotate class {name!r} "
                                  f"of subset {key[1]!r}")
        found[key] = path
    return [(name, subset, path) for (name, subset), path in found.items()]


def read_thumos_folder(folder: str | os.PathLike) -> dict[str, dict]:
    """The database (ActivityNet layout, see the module docstring) of a THUMOS14 annotation folder.

    Returns:
        video id -> ``{"subset", "annotations": [{"segment": [s, e], "label"}], "ambiguous"?: [[s, e]]}``,
        videos sorted by name, instances by class (sorted file names) then line.

    Raises:
        AnnotationError: no annotation file, a line that is not ``video start end`` with finite
            times and end >= start (file and line named), a video in both subsets, or a class file
            found twice.
    """
    folder = Path(folder)
    files = _thumos_files(folder)
    if not files:
        raise AnnotationError(f"ground truth folder {folder} holds no THUMOS14 annotation file "
                              "(<Class>_val.txt or <Class>_test.txt)")
    database: dict[str, dict] = {}
    for name, subset, path in files:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise AnnotationError(f"THUMOS14 annotations: cannot read {path}: {exc}") from exc
        for n, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{n}"
            if len(fields) != 3:
                raise AnnotationError(f"{where}: expected 'video start end', got {line.strip()!r}")
            vid = fields[0]
            seg = list(parse_segment(fields[1:], where))
            entry = database.setdefault(vid, {"subset": subset, "annotations": []})
            if entry["subset"] != subset:
                raise AnnotationError(f"{where}: video {vid!r} is also annotated in subset {entry['subset']!r}")
            if name == AMBIGUOUS:
                entry.setdefault("ambiguous", []).append(seg)
            else:
                entry["annotations"].append({"segment": seg, "label": name})
    return {vid: database[vid] for vid in sorted(database)}


def write_thumos_folder(folder: str | os.PathLike, source: str | os.PathLike | dict) -> list[Path]:
    """Write ground truth as THUMOS14 text files: ``<Class>_val.txt`` / ``<Class>_test.txt`` per class
    and subset (``Ambiguous_*`` from the entries' ``ambiguous`` segments), lines in database order,
    times as Python's shortest round-tripping decimal (read back bit for bit). Each file is written
    atomically.

    Args:
        source: anything :func:`read_database` reads; its subsets must be ``validation`` and/or
            ``test`` (any case); durations and other keys are not representable and are left out.

    Returns:
        The files written, sorted.
    """
    folder = Path(folder)
    suffix = {v: k for k, v in THUMOS_SUBSETS.items()}
    lines: dict[str, list[str]] = {}
    for vid, entry in read_database(source).items():
        subset = str(entry["subset"]).casefold()
        if subset not in suffix:
            raise AnnotationError(f"ground truth video {vid!r}: subset {entry['subset']!r} has no THUMOS14 file "
                                  f"(only {', '.join(THUMOS_SUBSETS.values())})")
        if any(c.isspace() for c in vid):
            raise AnnotationError(f"ground truth video {vid!r}: a THUMOS14 video name cannot hold white space")
        items = [(ann.get("label"), ann.get("segment")) for ann in entry.get("annotations", [])]
        items += [(AMBIGUOUS, seg) for seg in entry.get("ambiguous", [])]
        for k, (label, seg) in enumerate(items):
            where = f"ground truth {vid} annotation {k}"
            if not isinstance(label, str) or not label or any(c.isspace() or c in "/\\" for c in label):
                raise AnnotationError(f"{where}: label {label!r} cannot name a THUMOS14 file")
            start, end = parse_segment(seg, where)
            lines.setdefault(f"{label}_{suffix[subset]}.txt", []).append(f"{vid} {start!r} {end!r}\n")
    written = []
    for name in sorted(lines):
        with atomic_path(folder / name) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines[name])
        written.append(folder / name)
    return written


def ground_truth_digest(source: str | os.PathLike) -> str:
    """sha256 identifying ground truth on disk (for caches): a JSON file's sha256; for a THUMOS14
    folder, the sha256 of its annotation files' relative paths and contents, in sorted order."""
    path = Path(source)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for _, _, file in sorted(_thumos_files(path), key=lambda t: str(t[2])):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()
