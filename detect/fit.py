"""The whole mission as one cached run: raw videos and ground truth in, a RefactorNet detector,
detections, a results table and figures out (``python -m detect fit``).

Stages, each writing into the work folder ``WORK``:

1. ``features``: I3D features of every annotated video found in ``--videos`` (``WORK/features``;
   resumable video by video, as ``python -m extract``);
2. ``refactor``: RefactorNet stage 1 on the training subset (``WORK/refactor.pt``; the context score,
   ``WORK/context.pt``, ``WORK/context_border.pt`` with ``--context-border``, ``WORK/context_boundaries.pt``
   (unless ``--no-context-boundaries``), where the context front is chosen or with ``--ablation``);
3. ``detector``: stage 2, the detector trained end to end with RefactorNet in front
   (``WORK/detector.pt``; per-epoch state in ``WORK/detector.pt.state``, so an interrupted run
   resumes at its last finished epoch);
4. ``evaluate``: detections on the test subset (``WORK/predictions.json``) and their evaluation
   (``WORK/result.json``, the RESULT layout of CONVENTIONS.md), printed as a table;
5. ``figures``: loss curves, mAP against tIoU, timelines of a few test videos and CAM figures of
   action and coupling samples (``WORK/figures``);
6. with ``--ablation``: the paper's comparisons on the same features — baseline, deep baseline,
   the context score beside f, RefactorNet in the fit's form (stage 3's model, unless the selection
   chose another front: then that front's row is stage 3's), RefactorNet with L_A & L_C only (no KL),
   action component only, and stage 1 frozen (its f' to a plain detector) — each in
   ``WORK/ablation/<variant>``, one table with average mAP, mAP per tIoU and Table 3's two columns
   (``WORK/ablation.json``).

By default the main model's front is chosen first (``--no-select-front``: RefactorNet in the fit's form,
about a third of the training time): each candidate of ``--select-candidates`` (default: the baseline
(raw features), the context score beside f (:mod:`refactor.context`) and the deep baseline; RefactorNet
in the fit's form can be added as ``refactor``) is trained on three quarters of each class's training
videos and scored on the other quarter (``WORK/select/<candidate>``, :func:`common.annotations.hold_out`);
the best average mAP there (ties: the simplest, in the order baseline, context, refactor, deep) is the
front of stages 3-5, trained on every training video (``WORK/select.json``: the held-out videos, the
scores, the choice). Where no class has two training videos nothing can be held out: the fit says so in
one line and keeps the simplest candidate. Where a class has no coupling samples (a weak or absent
context), neither RefactorNet nor the context score can be trained: the fit says so in one line, chooses
among the other candidates (the deep baseline with RefactorNet's default sizes), and the ablation has
only the baseline's and the deep baseline's rows; with ``--no-select-front`` that is an error. Why this is
the default: on the world family of ``benchmarks/refactor_study.py`` no single front stays within the
noise of the baseline and the deep baseline on every world (RefactorNet's default form falls below the
deep baseline with wide features, the deep baseline far below both with narrow ones), the front chosen on
held-out videos does, and with the context score as a candidate instead of RefactorNet the chosen front
gains more: with its default form (each class's context and action probabilities from a snippet and its
neighbours) 2.7 to 25.5 points above the baseline on 11 of the 13 worlds it ran on (README, "When does
refactoring help?", ninth round). Since the seventeenth round the context front also holds a score of where
actions start and end, and its detector trains on scores cross-fitted over 8 folds (``--context-boundaries
--context-folds 8``): on fresh seeds it reaches 2 points over the baseline where the default score alone
did not (200 training videos, THUMOS14's scale).

Caching: every stage has a key, the sha256 of its settings and of the keys of the stages it reads
(the first stage: of the videos' names, sizes and modification times, the annotation file's
content and the weights' identity). A stage whose outputs exist and whose record
(``WORK/stages/<stage>.json``, written after its outputs) holds the same key is skipped; otherwise
it runs again, and so does every stage after it that reads it. Outputs are written atomically, so
killing the run at any point leaves finished work intact and nothing partial under a final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from common.annotations import (HELDOUT, default_subsets, ground_truth_digest, hold_out, load_ground_truth,
                                read_database, same_subset, write_annotations)
from common.config import Section
from common.fileio import atomic_path
from common.paths import safe_name
from common.predictions import load_predictions
from detect.checkpoint import load_detector, save_detector
from detect.config import TrainConfig
from detect.infer import run_detector
from detect.model import DetectorConfig
from detect.plots import plot_history
from detect.train import train_detector
from evaluate.data import parse_thresholds
from evaluate.detection import DetectionResult, evaluate_detection
from evaluate.plots import plot_map_vs_tiou, plot_timeline
from evaluate.quality import proposal_quality
from evaluate.report import detection_table, write_json
from extract.pipeline import ExtractConfig, extract_videos
from extract.video import VIDEO_EXTENSIONS
from refactor.apply import apply_refactor
from refactor.cam import draw_cams
from refactor.context import ContextConfig, save_context, train_context
from refactor.errors import NoCouplingSamples
from refactor.model import FORMS, RefactorConfig
from refactor.pairs import build_pairs
from refactor.samples import SampleConfig
from refactor.train import TrainConfig as RefactorTrainConfig
from refactor.train import load_refactor, save_checkpoint, train_refactor
from weights import find_weights, get_spec

__all__ = ["ABLATION_VARIANTS", "SELECT_CANDIDATES", "FIT_SECTION", "FitConfig", "FitError", "FitReport",
           "ablation_table", "choose_front", "context_score_forms", "describe", "find_videos", "fit", "stage_key"]

STAGE_VERSION = 1
ABLATION_VARIANTS = ("baseline", "deep", "context", "refactor", "paper", "no_kl", "action_only", "stage1")
# the fronts the selection can choose among, simplest first (see choose_front), and the detector front of each;
# FitConfig.select_candidates says which of them a fit tries
SELECT_CANDIDATES = {"baseline": "none", "context": "context", "refactor": "refactor", "deep": "deep"}
VARIANT_NAMES = {"baseline": "Baseline (raw features)", "deep": "Deep baseline (same depth and size)",
                 "context": "Context score beside f (f ⊕ p: contexts and actions)",
                 "refactor": "RefactorNet (the fit's form)", "paper": "RefactorNet, paper's form",
                 "no_kl": "Paper's form, L_A & L_C only", "action_only": "Paper's form, action component only",
                 "stage1": "Paper's stage 1 only (frozen f')"}


def choose_front(scores: Mapping[str, float], margin: float = 0.0, prefer: str | None = None) -> str:
    """The front selection's rule. Without ``prefer``: the first candidate of ``scores`` (ordered simplest
    first) whose score is at most ``margin`` below the best score. With ``prefer``: that candidate, unless
    its score is more than ``margin`` below the best; then the best of the others (the margin only protects
    the preferred candidate).

    Args:
        scores: candidate name -> average mAP on the held-out videos, a fraction in [0, 1], in order of
            preference (:data:`SELECT_CANDIDATES`' order: baseline, context score, RefactorNet, deep baseline).
        margin: how much held-out average mAP (a fraction, e.g. 0.02 = 2 points) the preferred candidate,
            or without one a simpler candidate, may give up; 0 takes the best score (ties: the first).
        prefer: the candidate kept within ``margin`` of the best; when it is not in ``scores`` (not a
            candidate, or it could not be trained), the best of ``scores``; None: the rule without it.

    Returns:
        The chosen candidate's name.
    """
    if not scores:
        raise ValueError("no candidates to choose from")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    best = max(scores.values())
    if prefer is None:
        return next(name for name, score in scores.items() if score >= best - margin)
    if prefer in scores and scores[prefer] >= best - margin:
        return prefer
    return next(name for name, score in scores.items() if score == best)


class FitError(ValueError):
    """Unusable input for ``detect fit``; the message says why in one line."""


_EXTRACT = ExtractConfig()


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides a fit's results (one default per field; ``detect fit``'s flags and
    ``--config`` file section ``fit`` are generated from these fields).

    Attributes:
        streams: I3D streams to extract, rgb or rgb,flow.
        fps: resample the videos to this rate (none: each video's own).
        window: frames per snippet.
        stride: frames between snippet starts.
        short_side: resize the short side to this (none: the weights' spec, 256).
        crop: centre crop (none: the weights' spec, 224).
        spatial: store the Mixed_5c maps the CAM figures need (--no-cam: neither maps nor CAM figures).
        train_subset: training subset (none: THUMOS14 validation, ActivityNet training; any case).
        test_subset: test subset (none: THUMOS14 test, ActivityNet validation; any case).
        refactor_form: RefactorNet's form (``refactor.model.FORMS``): gated (the default) or paper.
        refactor_epochs: RefactorNet stage-1 epochs.
        detector_epochs: detector (stage 2) epochs.
        window_snippets: the detector's training window, in snippets.
        seed: seed of every model's initialisation and sampling.
        tiou: evaluation thresholds, start:stop:step or a comma list.
        ablation: also train and evaluate the paper's comparisons on the same features.
        select_front: choose the main model's front among ``select_candidates`` by average mAP on a
            held-out quarter of each class's training videos (about 3x the training time;
            --no-select-front: RefactorNet in the fit's form).
        select_candidates: the fronts the selection tries, a comma list of baseline (raw features),
            context (f beside its context score), refactor (RefactorNet in the fit's form) and deep (the
            deep baseline); tried and preferred in that order.
        select_prefer: the candidate the selection keeps unless another's held-out average mAP beats it
            by more than ``select_margin`` points; then the best one (also when it is not a candidate or
            cannot be trained). None: the simplest candidate (in the order above) within ``select_margin``
            points of the best (:func:`choose_front`).
        select_margin: see ``select_prefer``; 0: the best.
        context_border: the context front (the ``context`` candidate, ablation row) also puts beside f a
            second context score whose scorer learns the snippets within this many of each action as its
            class's context (``refactor context --border``, ``WORK/context_border.pt``); 0: the default score
            alone. With ``context_folds`` 4 and border 2, the study's closest form to the issue's bar at
            THUMOS14's scale, and worse where the action is faint (README, twelfth and thirteenth rounds).
        context_boundaries: the context front also puts beside f a score of where each class's actions start
            and end (``refactor context --targets boundaries --window W``, W = ``context_boundary_window``,
            ``WORK/context_boundaries.pt``, after the border's). On by default since the seventeenth round, with
            ``context_folds`` 8 (README); ``--no-context-boundaries --context-folds 0`` gives the earlier default
            front, the default score alone.
        context_boundary_window: the boundary score's window (snippets on each side). 4 since the sixteenth
            round (README), where it was +0.7 and +0.4 points ahead of window 2 on development and fresh seeds
            with 200 training videos and 0.4 behind at THUMOS14's scale: within the seed noise, taken by a rule
            fixed before the runs; 2 gives the form measured on the other worlds (fourteenth to sixteenth
            rounds).
        context_folds: train the context front's detector on cross-fitted scores, each training video
            scored by scorers learnt without its fold of this many (``detect train --context-folds``); 0: off.
            With ``context_boundaries`` and 4 folds: 2 points or more above the baseline on every study world
            on seeds 0-4, but not on fresh seeds 5-9 with 200 training videos (+1.1) and about 2 points below
            the default score alone with distractor scenes (fourteenth to sixteenth rounds). With 8 folds each
            out-of-fold scorer learns from 7/8 of the videos, closer to the scorer of new videos: on fresh seeds
            15-19 +4.6 over the baseline with 200 training videos and +2.4 at THUMOS14's scale, level with the
            default score alone with distractor scenes (+0.6; README, seventeenth round), so 8 is the default.
        score_gain: the context front's detector multiplies its scores by this before they join f
            (``DetectorConfig.score_gain``, ``detect train --score-gain``, whose own default stays 1). 16 since
            the twenty-first round: chosen on development seeds, then on fresh seeds 15-19 of the 14 synthetic
            worlds +0.2 (THUMOS14's scale) to +5.1 above gain 1 and +2.6 to +30.7 above the baseline, and on the
            rendered worlds +4.2 (demo's world) and +17.0 (R3) above the baseline (README, twenty-first round).
            1: the scores as they are (the default until then).
        figure_videos: test videos drawn as timelines and CAM figures (0: loss curves and mAP against tIoU
            only).
        cam_reference: grey: CAM figures also show the maps against I3D's response to a uniform grey clip
            (its padding puts a bias in the right-hand column; see refactor.cam); none: raw maps only.
        device: auto (CUDA when present), cpu, cuda, cuda:N (extraction and training).
    """

    # extraction fields take ExtractConfig's defaults (one default per setting in the whole system)
    streams: tuple[str, ...] = _EXTRACT.streams
    fps: float | None = _EXTRACT.fps
    window: int = _EXTRACT.window
    stride: int = _EXTRACT.stride
    short_side: int | None = _EXTRACT.short_side
    crop: int | None = _EXTRACT.crop
    spatial: bool = True
    train_subset: str | None = None
    test_subset: str | None = None
    refactor_form: str = "gated"
    refactor_epochs: int = 30
    detector_epochs: int = 20
    window_snippets: int = 256
    seed: int = 0
    tiou: str = "0.3:0.7:0.1"
    ablation: bool = False
    select_front: bool = True
    select_candidates: tuple[str, ...] = ("baseline", "context", "deep")
    select_prefer: str | None = "context"
    select_margin: float = 10.0
    context_border: int = 0
    context_boundaries: bool = True
    context_boundary_window: int = 4
    context_folds: int = 8
    score_gain: float = 16.0
    figure_videos: int = 3
    cam_reference: str | None = "grey"
    device: str = "auto"


FIT_SECTION = Section("fit", FitConfig, flags={"detector_epochs": "--epochs"},
                      aliases={"--no-cam": ("spatial", False)}, choices={"refactor_form": tuple(FORMS)})


def context_score_forms(cfg: FitConfig) -> list[tuple[str, dict]]:
    """The scores the context front puts beside f, in order, as (file name without ``.pt``, the
    :class:`ContextConfig` fields that differ from the default score's): ``context`` (the default score),
    ``context_border`` with ``cfg.context_border``, ``context_boundaries`` (window ``cfg.context_boundary_window``)
    with ``cfg.context_boundaries``."""
    return [("context", {})] \
        + ([("context_border", {"border": cfg.context_border})] if cfg.context_border else []) \
        + ([("context_boundaries", {"targets": "boundaries", "window": cfg.context_boundary_window})]
           if cfg.context_boundaries else [])


@dataclass
class FitReport:
    """What a fit did: per stage whether it ran and its seconds, the results, and problems."""

    ran: dict[str, bool] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    result: dict | None = None
    ablation: dict | None = None
    selection: dict | None = None
    no_refactor: str | None = None
    failed_videos: dict[str, str] = field(default_factory=dict)
    missing_videos: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def stage_key(name: str, payload: dict) -> str:
    """sha256 of a stage's name and settings (JSON with sorted keys)."""
    text = json.dumps({"stage": name, "version": STAGE_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class _Stages:
    """Records of finished stages in ``WORK/stages``."""

    def __init__(self, work: Path, report: FitReport, log: Callable[[str], None]):
        self.dir, self.report, self.log = work / "stages", report, log

    def record(self, name: str) -> dict | None:
        path = self.dir / f"{name}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None                     # a record is written atomically: this one is foreign, redo

    def run(self, name: str, key: str, outputs: list[Path], build: Callable[[], dict | None]) -> dict:
        """Run ``build`` unless the stage's outputs exist and its record holds ``key``; returns the
        record's ``info`` (what ``build`` returned)."""
        rec = self.record(name)
        if rec is not None and rec.get("key") == key and all(p.exists() for p in outputs):
            self.report.ran[name] = False
            self.report.seconds[name] = rec.get("seconds", 0.0)
            return rec.get("info") or {}
        self.log(f"fit: {name} ...")
        start = time.perf_counter()
        info = build() or {}
        seconds = time.perf_counter() - start
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / f"{name}.json") as tmp:
            tmp.write_text(json.dumps({"key": key, "seconds": seconds, "info": info}, indent=1, default=str))
        self.report.ran[name] = True
        self.report.seconds[name] = seconds
        self.log(f"fit: {name} done in {seconds:.1f} s")
        return info


def find_videos(folder: str | os.PathLike, video_ids: list[str]) -> tuple[dict[str, Path], list[str]]:
    """The video file of each id under ``folder`` (recursively, by extension; the id is the file name
    without extension), and the ids without a file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FitError(f"--videos {folder} is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            found.setdefault(p.stem, p)
    wanted = set(video_ids)
    return {v: found[v] for v in video_ids if v in found}, sorted(wanted - set(found))


def _fingerprint(paths: dict[str, Path]) -> list:
    out = []
    for vid, p in sorted(paths.items()):
        st = p.stat()
        out.append([vid, st.st_size, st.st_mtime_ns])
    return out


def _subsets(cfg: FitConfig, annotations: Path) -> tuple[str, str]:
    train, test = default_subsets(annotations)
    return cfg.train_subset or train, cfg.test_subset or test


def fit(videos: str | os.PathLike, annotations: str | os.PathLike, work: str | os.PathLike,
        cfg: FitConfig = FitConfig(), *, log: Callable[[str], None] | None = None,
        progress: bool | None = None, extract_streams: list | None = None,
        weights_root: str | os.PathLike | None = None) -> FitReport:
    """Run (or resume, or skip) every stage; see the module docstring.

    Args:
        extract_streams: ready stream objects for extraction (tests; default: the weights' models).
        weights_root: converted I3D weights folder (default: the cache).

    Raises:
        FitError: the videos, annotations or settings cannot be used (one line).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    work = Path(work)
    annotations = Path(annotations)
    if work.exists() and not work.is_dir():
        raise FitError(f"--work {work} exists and is not a folder")
    if not cfg.select_margin >= 0:
        raise FitError(f"--select-margin must be >= 0 points of average mAP, got {cfg.select_margin}")
    if cfg.select_prefer is not None and cfg.select_prefer not in SELECT_CANDIDATES:
        raise FitError(f"--select-prefer must be one of {', '.join(SELECT_CANDIDATES)} or none, got "
                       f"{cfg.select_prefer}")
    if cfg.context_border < 0 or cfg.context_folds < 0 or cfg.context_folds == 1:
        raise FitError(f"--context-border must be >= 0 and --context-folds 0 or >= 2, got {cfg.context_border} and "
                       f"{cfg.context_folds}")
    if cfg.context_boundary_window < 0:
        raise FitError(f"--context-boundary-window must be >= 0 snippets, got {cfg.context_boundary_window}")
    if not cfg.score_gain > 0:
        raise FitError(f"--score-gain must be > 0, got {cfg.score_gain}")
    unknown = [c for c in cfg.select_candidates if c not in SELECT_CANDIDATES]
    if unknown or not cfg.select_candidates:
        raise FitError(f"--select-candidates must be a comma list of {', '.join(SELECT_CANDIDATES)}, got "
                       f"{','.join(cfg.select_candidates) or 'nothing'}")
    work.mkdir(parents=True, exist_ok=True)
    report = FitReport()
    stages = _Stages(work, report, log)
    database = read_database(annotations)
    train_subset, test_subset = _subsets(cfg, annotations)
    subset_of = {v: e["subset"] for v, e in database.items()}
    used = [v for v, s in subset_of.items() if same_subset(s, train_subset) or same_subset(s, test_subset)]
    if not any(same_subset(s, train_subset) for s in subset_of.values()):
        raise FitError(f"no video of the training subset {train_subset!r} in {annotations}")
    paths, missing = find_videos(videos, used)
    report.missing_videos = missing
    if missing:
        log(f"fit: warning: {len(missing)} annotated video(s) have no file in {videos} and are left out "
            f"(e.g. {missing[0]})")
    if not paths:
        raise FitError(f"none of the {len(used)} annotated videos of subsets {train_subset}/{test_subset} "
                       f"is in {videos}")
    feats = work / "features"
    ecfg = ExtractConfig(streams=cfg.streams, fps=cfg.fps, window=cfg.window, stride=cfg.stride,
                         short_side=cfg.short_side, crop=cfg.crop, spatial=cfg.spatial, device=cfg.device)

    # 1. features --------------------------------------------------------------------------------------------
    feat_key = stage_key("features", {"extract": asdict(ecfg) | {"device": None},
                                      "videos": _fingerprint(paths),
                                      "weights": _weights_identity(cfg.streams, extract_streams, weights_root)})

    def extract() -> dict:
        # the folder's key is written before extraction starts, so a run killed half-way and resumed with
        # other settings never mixes files of both
        marker = work / "stages" / "features.started"
        made_with = marker.read_text().strip() if marker.is_file() else None
        if feats.exists() and made_with != feat_key:
            shutil.rmtree(feats)                 # made with other settings or videos (or unknown): start over
        marker.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(marker) as tmp:
            tmp.write_text(feat_key)
        failures: dict[str, str] = {}
        result = extract_videos(sorted(paths.values()), feats, ecfg, streams=extract_streams,
                                weights_root=weights_root, progress=progress,
                                on_error=lambda p, why: failures.__setitem__(Path(p).stem, why))
        if failures:
            report.failed_videos.update(failures)
            raise FitError(f"{len(failures)} video(s) failed to extract (the others are kept; rerun to retry): "
                           + "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())[:5]))
        return {"videos": len(paths), "written": len(result.written)}

    stages.run("features", feat_key, [feats], extract)

    # 2.-4. the main model: RefactorNet stage 1, stage 2, detections and evaluation ------------------------
    main = _Variant(work, feats, annotations, train_subset, test_subset, cfg, stages)
    try:
        ref_key = main.stage1("refactor", feat_key, form=cfg.refactor_form)    # the deep baseline takes its sizes
    except NoCouplingSamples as exc:
        if not cfg.select_front:
            raise FitError(f"RefactorNet cannot be trained: {exc} (without --no-select-front the fit chooses "
                           "between the baseline and the deep baseline instead)") from exc
        ref_key = None
        report.no_refactor = str(exc)
        log(f"fit: RefactorNet cannot be trained ({exc}): the front is chosen among the other candidates and "
            "the ablation leaves out RefactorNet's rows")
    chosen = "refactor"
    if not cfg.select_front:
        (work / "select.json").unlink(missing_ok=True)     # an earlier run's choice: not this model's
    else:
        report.selection = _select(work, feats, annotations, train_subset, cfg, stages, feat_key, log, ref_key)
        chosen = report.selection["chosen"]
    front = SELECT_CANDIDATES[chosen]
    if front == "context":
        det_key = main.detector("detector", main.context("context", feat_key), front=front)
    else:
        det_key = main.detector("detector", ref_key if front != "none" and ref_key else feat_key, front=front,
                                checkpoint=ref_key is not None)
    report.result = main.evaluate("evaluate", det_key, work / "predictions.json", work / "result.json", log)
    log(detection_table(_result_obj(report.result), per_class=True))

    # 5. figures -------------------------------------------------------------------------------------------
    fig_dir = work / "figures"
    fig_key = stage_key("figures", {"detector": det_key, "evaluate": report.result["key"], "refactor": ref_key,
                                    "videos": cfg.figure_videos, "reference": cfg.cam_reference})

    def figures() -> dict:
        return {"files": [str(p) for p in main.figures(fig_dir, stage1=ref_key is not None)]}

    info = stages.run("figures", fig_key, [fig_dir], figures)
    report.figures = [Path(p) for p in info.get("files", [])]

    # 6. ablation ------------------------------------------------------------------------------------------
    if cfg.ablation:
        report.ablation = _ablation(work, feats, annotations, train_subset, test_subset, cfg, stages, feat_key,
                                    ref_key, chosen, report.result, log)
    return report


def _weights_identity(names: tuple[str, ...], streams: list | None, root) -> list:
    """What identifies the extraction models: per stream the sha256 of the weights it runs (the cached
    ones ``load_i3d`` would pick, an imported checkpoint first), "custom" for ready models without one."""
    if streams is not None:
        return [getattr(getattr(s, "weights", None), "sha256", None) or "custom" for s in streams]
    found = [find_weights(name, root) for name in names]
    # not cached yet: the registry default that will be fetched (its pinned hash, the same once cached)
    return [w.sha256 if w is not None else (get_spec(name).sha256 or get_spec(name).id)
            for name, w in zip(names, found)]


def _result_obj(result: dict):
    """A DetectionResult from RESULT.json contents (for the printed table)."""
    classes = list(result["per_class_AP"])
    ap = np.array([result["per_class_AP"][c] for c in classes]).T.reshape(len(result["tiou"]), len(classes))
    return DetectionResult(thresholds=np.asarray(result["tiou"]), ap=ap, classes=classes)


@dataclass
class _Variant:
    """One model's stages (stage 1, detector, evaluation) inside a folder of the work folder."""

    root: Path
    feats: Path
    annotations: Path
    train_subset: str
    test_subset: str
    cfg: FitConfig
    stages: _Stages
    prefix: str = ""

    def __post_init__(self) -> None:
        self.ann_hash = ground_truth_digest(self.annotations)   # every trained or evaluated stage reads it

    def _name(self, stage: str) -> str:
        return f"{self.prefix}{stage}"

    def stage1(self, stage: str, upstream: str, form: str, use_kl: bool = True, action_only: bool = False) -> str:
        """Train RefactorNet stage 1 (a form, or an ablation's switch) into ROOT/refactor.pt."""
        out = self.root / "refactor.pt"
        samples = SampleConfig()
        train = RefactorTrainConfig(epochs=self.cfg.refactor_epochs, seed=self.cfg.seed, subset=self.train_subset,
                                    device=_train_device(self.cfg.device))
        switches = {"use_kl": use_kl, "action_only": action_only, "form": form}
        key = stage_key(self._name(stage), {"features": upstream, "annotations": self.ann_hash,
                                            "samples": asdict(samples),
                                            "train": asdict(train) | {"device": None}, "switches": switches})

        def build() -> dict:
            pairs = build_pairs(self.feats, self.annotations, self.train_subset, samples)
            model_cfg = RefactorConfig(in_dim=pairs.action.shape[1], use_kl=use_kl, action_only=action_only,
                                       form=form)
            model, history = train_refactor(pairs, model_cfg, train, progress=None)
            save_checkpoint(out, model, pairs, samples, train, history)
            return {"pairs": int(len(pairs.similarity)), "final_loss": history[-1]["loss"] if history else None}

        self.stages.run(self._name(stage), key, [out], build)
        return key

    def context_scores(self) -> list[tuple[Path, dict]]:
        """The context front's score checkpoints, ROOT/<name>.pt, and the :class:`ContextConfig` fields each
        differs by from the default score's (:func:`context_score_forms`)."""
        return [(self.root / f"{name}.pt", changes) for name, changes in context_score_forms(self.cfg)]

    def context(self, stage: str, upstream: str) -> str:
        """Learn the context front's scores (:mod:`refactor.context`, :meth:`context_scores`)."""
        scores = self.context_scores()
        outs = [path for path, _ in scores]
        samples = SampleConfig()
        config = ContextConfig(seed=self.cfg.seed, device=_train_device(self.cfg.device))
        extra = [changes for _, changes in scores[1:]]
        key = stage_key(self._name(stage), {"features": upstream, "annotations": self.ann_hash,
                                            "subset": self.train_subset, "samples": asdict(samples),
                                            "context": asdict(config) | {"device": None}}
                        | ({"extra": extra} if extra else {}))

        def build() -> dict:
            pairs = build_pairs(self.feats, self.annotations, self.train_subset, samples)
            infos = []
            for out, changes in scores:
                c = replace(config, **changes)
                scorer, info = train_context(pairs, self.feats, c)
                save_context(out, scorer, pairs, samples, c, info)
                infos.append(info)
            return infos[0] | ({"extra": infos[1:]} if len(infos) > 1 else {})

        self.stages.run(self._name(stage), key, outs, build)
        return key

    def detector(self, stage: str, upstream: str, front: str, features: Path | None = None,
                 checkpoint: bool = True) -> str:
        """Train a detector (front "refactor", "context", "deep" or "none") into ROOT/detector.pt, resumably.
        The fronts "refactor" and "deep" read ROOT/refactor.pt (the deep baseline: its sizes), "context"
        reads ROOT/context*.pt (:meth:`context_scores`); ``checkpoint`` False: the deep baseline takes the
        sizes of RefactorNet's default configuration instead."""
        out = self.root / "detector.pt"
        state = self.root / "detector.pt.state"
        train = TrainConfig(epochs=self.cfg.detector_epochs, seed=self.cfg.seed, subset=self.train_subset,
                            window=self.cfg.window_snippets, device=_train_device(self.cfg.device),
                            context_folds=self.cfg.context_folds if front == "context" else 0)
        config = DetectorConfig(score_gain=self.cfg.score_gain) if front == "context" else DetectorConfig()
        key = stage_key(self._name(stage), {"upstream": upstream, "annotations": self.ann_hash, "front": front,
                                            "config": config.to_dict(),
                                            "train": asdict(train) | {"device": None},
                                            "features": str(features or "")}
                       | ({} if checkpoint else {"checkpoint": False}))

        def build() -> dict:
            if _state_key(state) != key:            # no state, or one of other settings: start over
                state.unlink(missing_ok=True)
                _write_state_key(state, key)
            ref = self.root / "refactor.pt" if front in ("refactor", "deep") and checkpoint else None
            ctx = [path for path, _ in self.context_scores()] if front == "context" else None
            model, meta = train_detector(features or self.feats, self.annotations, config, train,
                                         refactor_checkpoint=ref, front=front, progress=None, state_path=state,
                                         context_checkpoint=ctx)
            save_detector(out, model, meta)
            state.unlink(missing_ok=True)           # the checkpoint is whole: the state has done its work
            _state_marker(state).unlink(missing_ok=True)
            return {"epochs": len(meta["history"]), "final_loss": meta["history"][-1].get("loss")
                    if meta["history"] else None}

        self.stages.run(self._name(stage), key, [out], build)
        return key

    def evaluate(self, stage: str, upstream: str, pred_path: Path, result_path: Path,
                 log: Callable[[str], None] | None = None, features: Path | None = None) -> dict:
        """Detections on the test subset and their evaluation; returns RESULT.json's contents + key."""
        key = stage_key(self._name(stage), {"detector": upstream, "annotations": self.ann_hash,
                                            "test": self.test_subset, "tiou": self.cfg.tiou})

        def build() -> dict:
            run_detector(self.root / "detector.pt", features or self.feats, out=pred_path, subset=self.test_subset,
                         device=_train_device(self.cfg.device), progress=None)
            gt = load_ground_truth(self.annotations, self.test_subset)
            pred = load_predictions(pred_path, gt, unknown_labels="ignore")
            result = evaluate_detection(gt, pred, parse_thresholds(self.cfg.tiou))
            quality = proposal_quality(gt, pred, one_label=True)     # each segment classified once
            write_json(result.to_json() | {"quality": {"accuracy": quality.accuracy, "mean_tiou": quality.mean_tiou,
                                                       "count": quality.count}}, result_path)
            return {}

        self.stages.run(self._name(stage), key, [pred_path, result_path], build)
        return json.loads(result_path.read_text()) | {"key": key}

    def figures(self, folder: Path, stage1: bool) -> list[Path]:
        """Loss curves, mAP against tIoU, timelines and CAM figures of a few test videos; ``stage1``:
        ROOT/refactor.pt is this run's stage 1 (it draws the CAM figures where the front is not RefactorNet)."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        model, ckpt = load_detector(self.root / "detector.pt")
        written.append(folder / "loss_detector.png")
        plot_history(ckpt["history"], written[-1])
        gt = load_ground_truth(self.annotations, self.test_subset)
        pred = load_predictions(self.root / "predictions.json", gt, unknown_labels="ignore")
        result = _result_obj(json.loads((self.root / "result.json").read_text()))   # the evaluate stage's
        written.append(folder / "map_vs_tiou.png")
        plot_map_vs_tiou(result, written[-1])
        annotated = [gt.videos[i] for i in dict.fromkeys(gt.video.tolist())][:self.cfg.figure_videos]
        for vid in annotated:
            written.append(folder / f"timeline_{safe_name(vid)}.png")
            plot_timeline(gt, pred, vid, written[-1])
        # CAM figures: the detector's RefactorNet, or where its front is another, stage 1's (WORK/refactor.pt)
        if model.config.front == "refactor":
            net, streams = model.front, tuple(ckpt["feature_layout"]["streams"])
        elif stage1:
            net, ref_ckpt = load_refactor(self.root / "refactor.pt")
            streams = tuple(ref_ckpt["feature_layout"]["streams"])
        else:                                            # no coupling samples: no RefactorNet to draw
            net = None
        if annotated and self.cfg.spatial and "rgb" in self.cfg.streams and net is not None:
            drawn = draw_cams(net, streams, self.feats, folder, videos=annotated, annotations=self.annotations,
                              subset=self.test_subset, samples=SampleConfig(), reference=self.cfg.cam_reference)
            written += [path for _vid, _snippets, path, _found in drawn]
        return written


def _state_marker(state: Path) -> Path:
    """The file beside a training state that holds the key of the settings it was written with."""
    return state.with_name(state.name + ".key")


def _state_key(state: Path) -> str | None:
    marker = _state_marker(state)
    return marker.read_text().strip() if marker.is_file() else None


def _write_state_key(state: Path, key: str) -> None:
    marker = _state_marker(state)
    with atomic_path(marker) as tmp:
        tmp.write_text(key)


def _train_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _select(work: Path, feats: Path, annotations: Path, train_subset: str, cfg: FitConfig, stages: _Stages,
            feat_key: str, log: Callable[[str], None], main_ref: str | None) -> dict:
    """The front selection (``FitConfig.select_front``): each candidate of ``cfg.select_candidates`` (in
    :data:`SELECT_CANDIDATES`' order) trained on three quarters of each class's training videos and scored
    on the rest; returns (and writes to ``WORK/select.json``) the held-out videos, each candidate's average
    mAP on them and the choice. Where nothing can be held out, the simplest candidate is kept.
    ``main_ref`` is the key of the main stage 1 (``WORK/refactor.pt``); None: there are no coupling
    samples. Then, or where the three quarters have none, RefactorNet and the context score are not
    candidates (``candidates_note`` says why) and the deep baseline takes the main stage 1's sizes
    (none: those of RefactorNet's default configuration)."""
    root = work / "select"
    held_ann = root / "annotations.json"
    split_key = stage_key("select-split", {"annotations": ground_truth_digest(annotations), "subset": train_subset})

    def split() -> dict:
        database, held = hold_out(read_database(annotations), train_subset)
        write_annotations(held_ann, database)          # also when nothing is held out: the stage's output
        return {"heldout": held}

    held = stages.run("select-split", split_key, [held_ann], split)["heldout"]
    coupling = main_ref is not None
    candidates = [n for n in SELECT_CANDIDATES if n in cfg.select_candidates
                  and (coupling or SELECT_CANDIDATES[n] not in ("refactor", "context"))]
    notes = [] if coupling else ["RefactorNet and the context score cannot be trained on these training videos"]
    if not candidates:
        raise FitError(f"none of the candidates {','.join(cfg.select_candidates)} can be trained: {notes[0]}; add "
                       "baseline or deep to --select-candidates")
    if not held:
        kept = cfg.select_prefer if cfg.select_prefer in candidates else candidates[0]
        table = {"heldout": [], "average_mAP": {}, "chosen": kept,
                 "note": f"no class of the training subset {train_subset!r} has two videos, so none can be "
                         f"held out to choose the front: the "
                         + ("preferred" if kept == cfg.select_prefer else "simplest") + f" candidate, {kept}, is kept"
                         + ("" if coupling else f" ({notes[0]})")}
        write_json(table, work / "select.json")
        log(f"fit: {table['note']}")
        return table
    scores: dict[str, float] = {}
    k1 = None                                    # the refactor candidate's stage 1 (it comes before deep)
    for name in candidates:
        front = SELECT_CANDIDATES[name]
        croot = root / name
        croot.mkdir(parents=True, exist_ok=True)
        v = _Variant(croot, feats, held_ann, train_subset, HELDOUT, cfg, stages, prefix=f"select-{name}-")
        if front == "none":
            key = v.detector("detector", feat_key, front=front)
        elif front in ("refactor", "context"):
            try:
                k = (v.stage1("refactor", feat_key, form=cfg.refactor_form) if front == "refactor"
                     else v.context("context", feat_key))
            except NoCouplingSamples as exc:
                notes.append(f"{name} is not a candidate: without the held-out videos {exc}")
                log(f"fit: {notes[-1]}")
                continue
            if front == "refactor":
                k1 = k
            key = v.detector("detector", k, front=front)
        elif k1 is not None:                     # the deep baseline: the refactor candidate's sizes
            shutil.copyfile(root / "refactor" / "refactor.pt", croot / "refactor.pt")
            key = v.detector("detector", k1, front=front)
        elif coupling:                           # no refactor candidate: the main stage 1's sizes
            shutil.copyfile(work / "refactor.pt", croot / "refactor.pt")
            key = v.detector("detector", main_ref, front=front)
        else:                                    # no RefactorNet: the default configuration's sizes
            key = v.detector("detector", feat_key, front=front, checkpoint=False)
        scores[name] = v.evaluate("evaluate", key, croot / "predictions.json", croot / "result.json")["average_mAP"]
    if not scores:
        raise FitError("no candidate front could be trained on three quarters of the training videos: "
                       + "; ".join(notes))
    chosen = choose_front(scores, cfg.select_margin / 100, cfg.select_prefer)
    table = {"heldout": held, "average_mAP": scores, "prefer": cfg.select_prefer, "margin": cfg.select_margin,
             "chosen": chosen}
    if notes:
        table["candidates_note"] = "; ".join(notes)
    write_json(table, work / "select.json")
    if cfg.select_prefer in scores:
        rule = f"; {cfg.select_prefer} unless beaten by more than {cfg.select_margin:g} points"
    elif cfg.select_prefer is None and cfg.select_margin:
        rule = f"; the simplest within {cfg.select_margin:g} points of the best"
    else:
        rule = ""                                # the best
    log("fit: front chosen on " + f"{len(held)} held-out training videos: {chosen} ("
        + ", ".join(f"{n} {100 * m:.2f}" for n, m in scores.items()) + " average mAP" + rule + ")")
    return table


def _ablation(work: Path, feats: Path, annotations: Path, train_subset: str, test_subset: str, cfg: FitConfig,
              stages: _Stages, feat_key: str, ref_key: str | None, main_variant: str, main_result: dict,
              log: Callable[[str], None]) -> dict:
    """The paper's comparisons (Tables 2, 4, 5 and Table 3's columns) on the same features; the row of
    ``main_variant`` (the main model's front, see :data:`SELECT_CANDIDATES`) is the main result. Without
    a main stage 1 (``ref_key`` None: RefactorNet cannot be trained) only the baseline and the deep
    baseline (RefactorNet's default sizes) are rows, and the table's ``note`` says so."""
    rows = {}
    paper_stage1 = (work / "refactor.pt", ref_key) if cfg.refactor_form == "paper" else None
    variants = ABLATION_VARIANTS if ref_key is not None else ("baseline", "deep")
    for variant in variants:
        if variant == main_variant:
            rows[variant] = main_result
            continue
        if variant == "paper" and cfg.refactor_form == "paper":
            rows[variant] = rows["refactor"]
            continue
        root = work / "ablation" / variant
        root.mkdir(parents=True, exist_ok=True)
        v = _Variant(root, feats, annotations, train_subset, test_subset, cfg, stages, prefix=f"ablation-{variant}-")
        if variant == "baseline":
            key = v.detector("detector", feat_key, front="none")
            rows[variant] = v.evaluate("evaluate", key, root / "predictions.json", root / "result.json")
        elif ref_key is None:                      # the deep baseline without a stage-1 model
            key = v.detector("detector", feat_key, front=variant, checkpoint=False)
            rows[variant] = v.evaluate("evaluate", key, root / "predictions.json", root / "result.json")
        elif variant == "context":                 # the context score beside f
            key = v.detector("detector", v.context("context", feat_key), front="context")
            rows[variant] = v.evaluate("evaluate", key, root / "predictions.json", root / "result.json")
        elif variant in ("deep", "refactor"):      # the main stage-1 model (the deep baseline: its size and depth)
            shutil.copyfile(work / "refactor.pt", root / "refactor.pt")
            key = v.detector("detector", ref_key, front=variant)
            rows[variant] = v.evaluate("evaluate", key, root / "predictions.json", root / "result.json")
        elif variant in ("paper", "no_kl", "action_only"):
            k1 = v.stage1("refactor", feat_key, form="paper", use_kl=variant != "no_kl",
                          action_only=variant == "action_only")
            if variant == "paper":
                paper_stage1 = (root / "refactor.pt", k1)
            key = v.detector("detector", k1, front="refactor")
            rows[variant] = v.evaluate("evaluate", key, root / "predictions.json", root / "result.json")
        else:                                     # stage1: f' of the paper's frozen stage-1 model, a plain detector
            frozen = root / "features"
            ckpt, k_paper = paper_stage1
            k_apply = stage_key(f"ablation-{variant}-apply", {"refactor": k_paper})
            stages.run(f"ablation-{variant}-apply", k_apply, [frozen],
                       lambda out=frozen, ckpt=ckpt: {"files": len(apply_refactor(ckpt, feats, out, overwrite=True))})
            key = v.detector("detector", k_apply, front="none", features=frozen)
            rows[variant] = v.evaluate("evaluate", key, root / "predictions.json", root / "result.json",
                                       features=frozen)
    table = {"tiou": main_result["tiou"],
             "variants": {name: {"name": VARIANT_NAMES[name], "average_mAP": r["average_mAP"], "mAP": r["mAP"],
                                 "quality": r.get("quality")} for name, r in rows.items()}}
    if ref_key is None:
        table["note"] = ("RefactorNet cannot be trained on these training videos (no coupling samples): its rows "
                         "are left out")
    write_json(table, work / "ablation.json")
    log(ablation_table(table))
    return table


def ablation_table(table: dict) -> str:
    """The ablation as a table for people (percent)."""
    head = "".join(f"{t:>7.2f}" for t in table["tiou"])
    width = max([len("variant")] + [len(row["name"]) for row in table["variants"].values()]) + 2
    lines = [f"{'variant':<{width}}{head}{'avg':>7}{'acc@0.7':>9}{'tIoU@0.7':>10}"]
    for row in table["variants"].values():
        q = row.get("quality") or {}
        acc = q.get("accuracy")
        miou = q.get("mean_tiou")
        lines.append(f"{row['name']:<{width}}" + "".join(f"{100 * m:>7.2f}" for m in row["mAP"])
                     + f"{100 * row['average_mAP']:>7.2f}"
                     + (f"{100 * acc:>9.1f}" if acc is not None and acc == acc else f"{'-':>9}")
                     + (f"{miou:>10.3f}" if miou is not None and miou == miou else f"{'-':>10}"))
    return "\n".join(lines)


def describe(report: FitReport, work: Path) -> str:
    """A summary for people: which stages ran, their times, where the outputs are."""
    lines = ["stage          ran   seconds"]
    for name in report.ran:
        lines.append(f"{name:<14} {'yes' if report.ran[name] else 'no ':<5} {report.seconds[name]:>7.1f}")
    if report.result is not None:
        lines.append(f"average mAP {100 * report.result['average_mAP']:.2f} "
                     f"(tIoU {report.result['tiou'][0]:g}:{report.result['tiou'][-1]:g}) -> {work / 'result.json'}")
    if report.no_refactor is not None:
        lines.append(f"RefactorNet not trained: {report.no_refactor}")
    if report.selection is not None and "note" in report.selection:
        lines.append(f"front not chosen: {report.selection['note']}")
    elif report.selection is not None:
        sel = report.selection
        lines.append(f"front chosen on {len(sel['heldout'])} held-out training videos: {sel['chosen']} ("
                     + ", ".join(f"{n} {100 * m:.2f}" for n, m in sel["average_mAP"].items())
                     + (f"; {sel['prefer']} preferred" if sel.get("prefer") in sel["average_mAP"] else "")
                     + (f"; margin {sel['margin']:g}" if sel.get("margin") else "") + ") -> "
                     + str(work / "select.json"))
    lines.append(f"figures: {work / 'figures'}")
    return "\n".join(lines)

