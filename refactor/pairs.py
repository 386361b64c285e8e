"""Training pairs of RefactorNet stage 1: every (action sample, coupling snippet) pair of a folder of
feature files and the ground truth of one subset, gathered into arrays (paper §3.3; the per-video
rules are :func:`refactor.samples.collect_samples`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace

import numpy as np
from tqdm.auto import tqdm

from common.annotations import load_ground_truth
from extract.features import read_features
from refactor.errors import NoCouplingSamples, RefactorError, check_feature_folder
from refactor.samples import SampleConfig, SampleError, VideoSamples, collect_samples

__all__ = ["PairSet", "build_pairs"]


@dataclass
class PairSet:
    """All (action, coupling) pairs of a training set, as arrays.

    Attributes:
        action (ndarray[P, C]), coupling (ndarray[P, C]): features of each pair's two samples.
        similarity (ndarray[P]): α of each pair.
        label (ndarray[P] int): class of each pair's action sample.
        classes: class names.
        streams: streams of the features (e.g. ("rgb", "flow")).
        videos: per video, its samples.
    """

    action: np.ndarray
    coupling: np.ndarray
    similarity: np.ndarray
    label: np.ndarray
    classes: list[str]
    streams: tuple[str, ...]
    videos: list[VideoSamples]


def build_pairs(feature_dir: str | os.PathLike, annotations: str | os.PathLike | dict, subset: str = "validation",
                samples: SampleConfig = SampleConfig(), classes: list[str] | None = None) -> PairSet:
    """Collect samples from every feature file that has annotations in ``subset``.

    Args:
        classes: the class order of the labels (``PairSet.classes``), a superset of the subset's classes;
            None: the subset's own order, by first appearance (:func:`common.annotations.load_ground_truth`).
            Models learnt on parts of one training set (cross-fitting's folds) need it: first appearance
            differs between parts, and so would the meaning of their outputs.

    Raises:
        RefactorError: ``feature_dir`` is not an existing folder, no feature file matches an annotated
            video, NaN in features, or mixed feature layouts.
        NoCouplingSamples: (a RefactorError) a class without any coupling sample.
        AnnotationError: unreadable ground truth, or none in ``subset``.
    """
    feature_dir = check_feature_folder(feature_dir)
    files = sorted(feature_dir.glob("*.h5"))
    if not files:
        raise RefactorError(f"no feature files (*.h5) in {feature_dir}")
    gt = load_ground_truth(annotations, subset)
    if classes is not None:
        unknown = sorted(set(gt.classes) - set(classes))
        if unknown:
            raise RefactorError(f"subset {subset!r} has classes not in the given class order: {', '.join(unknown)}")
        index = np.asarray([list(classes).index(c) for c in gt.classes], dtype=np.int64)
        gt = replace(gt, classes=list(classes), labels=index[gt.labels])
    by_video: dict[str, list[int]] = {}
    for i, v in enumerate(gt.video):
        by_video.setdefault(gt.videos[v], []).append(i)
    matched = [f for f in files if f.stem in by_video]
    if not matched:
        raise RefactorError(f"none of the {len(files)} feature files in {feature_dir} has annotations in subset "
                            f"{subset!r} (e.g. {files[0].stem})")
    videos, streams = [], None
    action, coupling, sim, label = [], [], [], []
    for path in tqdm(matched, desc="samples", unit="video", disable=not sys.stderr.isatty()):
        ff = read_features(path)
        if streams is None:
            streams = ff.streams
        elif ff.streams != streams:
            raise RefactorError(f"{path.name} has streams {ff.streams}, others {streams}")
        rows = by_video[path.stem]
        try:
            vs = collect_samples(path.stem, ff.features, ff.times, gt.segments[rows], gt.labels[rows], samples,
                                 duration=ff.duration)
        except SampleError as exc:
            raise RefactorError(str(exc)) from exc
        videos.append(vs)
        action.append(vs.action_features[vs.pair_action])
        coupling.append(ff.features[vs.pair_snippet])
        sim.append(vs.pair_similarity)
        label.append(vs.action_labels[vs.pair_action])
    outside = [v for v in videos if v.outside]
    if outside:
        print(f"warning: {sum(v.outside for v in outside)} annotated instance(s) in {len(outside)} video(s) lie "
              f"wholly past the video's end and were left out (e.g. {outside[0].video_id!r})", file=sys.stderr)
    absent = sorted(set(by_video) - {f.stem for f in files})
    if absent:
        print(f"warning: {len(absent)} of the {len(by_video)} annotated videos of subset {subset!r} have no feature "
              f"file in {feature_dir} and are left out (e.g. {absent[0]!r})", file=sys.stderr)
    label_arr = np.concatenate(label) if label else np.zeros(0, dtype=np.int64)
    present = set(np.concatenate([v.action_labels for v in videos]).tolist())
    missing = [gt.classes[c] for c in sorted(present) if not np.any(label_arr == c)]
    if missing:
        raise NoCouplingSamples(f"class {missing[0]!r} has no coupling samples ({len(missing)} such classes)")
    return PairSet(np.concatenate(action).astype(np.float32), np.concatenate(coupling).astype(np.float32),
                   np.concatenate(sim), label_arr, list(gt.classes), tuple(streams), videos)
