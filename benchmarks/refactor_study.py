"""When does refactoring help? A sweep over the synthetic world family (``benchmarks/feature_worlds.py``):
detectors with each front and RefactorNet form, several seeds, paired differences, and the measurements
that explain them.

For every world point and seed the world is written as feature files, the (action, coupling) pairs are
built once (``refactor.build_pairs``, default SampleConfig), each RefactorNet configuration a variant
needs is trained once (stage 1), and each variant's detector is trained (``detect.train_detector``),
run on the test videos and scored at tIoU 0.3:0.7:0.1. Every finished (point, seed, variant) is
appended to ``--out`` (JSON lines) at once, so an interrupted sweep resumes where it stopped.

Variants (:data:`VARIANTS`): ``baseline`` (raw f), ``deep`` (temporal convolutions of RefactorNet's size),
``paper`` (RefactorNet as in the paper, stage 2), ``paper_stage1`` (the paper's stage 1 frozen, the baseline
detector on f'), ``action_only``, ``no_kl``, ``default`` (the project's default form) and its parts
(``residual``, ``spread``, ``recon``, ``residual_spread``, ...), candidates with the components beside f
(``concat*``, ``RefactorConfig.keep_input``), the default with temporal side taps of kernel 3
(``default_t3``; ``default_t3_encoders`` also trains the encoders in stage 2), and oracles, the
baseline detector on an ideal refactoring of the same videos: ``oracle_no_context`` (f with its context
removed exactly) and ``oracle_split`` ([f − context, context]), which bound what refactoring can gain, and
``oracle_projected`` (f beside its projections on the true context directions: an ideal linear φC), and
``oracle_removed`` ([f − P f, P f], P the projection on the span of the true context directions), and
``oracle_labels`` (f beside the exact coverage of its class's context and action: the context score with
perfect probabilities, the ceiling of its form; ``oracle_labels_hard`` with hard labels, as it is trained);
``linear`` is
that split with the directions estimated in closed form from the coupling samples (:func:`context_directions`);
``context_score`` is f beside a supervised per-class context probability learnt from the coupling samples against
snippets far from every action sample (:mod:`refactor.context`; the detector's front ``context``, f' = [f, p(f)]);
``context_a_w4`` and the other ``context_*`` variants change its :class:`ContextConfig` (action outputs, a window
of neighbouring snippets; ``action_w4``: the action outputs alone; ``context_bdw4_x`` / ``context_bdh_x``: the
boundary score with a window of 4 / a hidden layer of 64 ReLU units; ``context_bdw4_x8``: window 4, cross-fitted
on 8 folds instead of 4).
``select`` is ``detect fit``'s front selection (its default): baseline, default and deep baseline each trained on
three quarters of each class's training videos, the best on the other quarter trained on all of them
and scored (its record names the choice and the held-out scores); ``select_k4`` scores the candidates
on four folds of held-out videos and chooses by the mean; ``select_cs`` chooses among the baseline, ``context_score``
and the deep baseline. ``default_s0.1`` / ``default_s0.3``
are the default with L_S weighted 0.1 / 0.3.

Measurements of each RefactorNet model on the test videos (stage 1 and stage 2):

* ``phiC_ctx`` / ``phiC_bg``: mean cosine of φC (μ) between action snippets and the same video's context
  / background snippets (a collapsed φC scores ≈ 1 on both);
* ``phiC_pair``: mean cosine of φC between random snippets of all test videos (spread: 1 = one direction);
* ``phiA_drift``: 1 − mean cos(φA after stage 1, φA after stage 2) over test snippets;
* ``recon_r2``: R² of the best linear map f' -> f (ridge 1e-3, fit on even test videos, scored on odd);
* per seed, the coupling samples' kinds (context / background / mixed) and whether they come from
  the action's own class's context.

    python benchmarks/refactor_study.py --out study.jsonl [--points centre | --axes dim,classes]
        [--seeds 0,1,2,3,4] [--variants baseline,deep,paper,default] [--world dim=512,classes=20]
    python benchmarks/refactor_study.py --report study.jsonl [more.jsonl ...] [--figures DIR]

``--figures DIR`` writes ``delta_along_axes.png`` (paired Δ average mAP to the baseline along each
swept axis, mean ± std over seeds) and ``mechanism.png`` (at the centre, per variant: φC's cosines to
context and background, φA's drift in stage 2 and R² of f from f') and ``oracle_bound.png`` (per world with
an oracle: Δ of the oracles beside the default and the paper's form) and ``select_map.png`` (per world
with a ``select`` run: Δ of the deep baseline, the default and ``select``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.feature_worlds import (ACTION, AXES, BACKGROUND, CONTEXT, KINDS, SCALARS,  # noqa: E402
                                       FPS, STRIDE, WINDOW, FeatureWorld, span_projector, write_world)
from benchmarks.synthetic import (mean_cosine, normalize_rows, score_detector, write_database,  # noqa: E402
                                  write_two_stream)
from common.annotations import HELDOUT, hold_out, read_database  # noqa: E402
from common.fileio import append_line  # noqa: E402
from detect import DetectorConfig, train_detector  # noqa: E402
from detect import TrainConfig as DetectTrainConfig  # noqa: E402
from detect.fit import SELECT_CANDIDATES, FitConfig, choose_front  # noqa: E402
from evaluate import parse_thresholds  # noqa: E402
from extract.features import read_features  # noqa: E402
from refactor import (RefactorConfig, RefactorError, SampleConfig, apply_refactor, build_pairs,  # noqa: E402
                      save_checkpoint, train_refactor)
from refactor import TrainConfig as RefactorTrainConfig  # noqa: E402
from refactor.context import ContextConfig, crossfit_scores, save_context, train_context  # noqa: E402

TIOU = "0.3:0.7:0.1"


@dataclass(frozen=True)
class Variant:
    """A detector to train: its front and, for RefactorNet, the configuration overrides of its model.

    Attributes:
        front: ``none``, ``deep`` or ``refactor``.
        refactor: RefactorConfig fields that differ from the paper's form.
        frozen: stage 1 only: f' of the frozen stage-1 model written to files, then the baseline detector.
        layout: the features the detector sees (``benchmarks.feature_worlds.LAYOUTS``): ``raw``, or an
            oracle layout (the context removed exactly, the exact split [f − context, context], or f
            beside its projections on the true context directions).
        select: choose among these variants by average mAP on held-out training videos (a quarter of
            each class's, :func:`common.annotations.hold_out`; every candidate trained on the other three quarters),
            then score the choice trained on all of them (``front`` is then unused).
        folds: with ``select``, score each candidate on this many folds of held-out videos
            (``hold_out(fold=k)``, k < folds) and choose by the mean; 1 is ``detect fit``'s selection.
        context: with layout ``context_score``, the :class:`refactor.context.ContextConfig` fields that differ
            from its defaults.
        scores: with layout ``context_files``, the ContextConfig overrides of each score written beside f (each
            applied to whole videos; the baseline detector on f ⊕ p_1(f) ⊕ p_2(f) ...); with layout
            ``context_score``, those of each scorer of the detector's context front (instead of ``context``).
        crossfit: the number of folds of cross-fitting (0: none): each training video's scores come from
            scorers learnt without its fold (out-of-fold scores, as in stacking), so the detector trains on
            scores as good as those it will see on new videos; the test videos' from scorers learnt on every
            training video. Layout ``context_files``: :func:`refactor.context.crossfit_scores` written to the
            files; layout ``context_score``: the detector's own ``TrainConfig.context_folds`` (``detect train
            --context-folds K``).
        heldout_only: with ``select``, only score the candidates on the held-out videos: the record holds
            ``heldout_mAP`` and no model trained on all videos (no ``average_mAP``); :func:`compose_select`
            puts such scores in place of another ``select*`` variant's candidate.
        score_gain: with layout ``context_score``, the detector's ``DetectorConfig.score_gain`` (its context
            front's scores times this before they join f).
    """

    front: str
    refactor: dict = field(default_factory=dict)
    frozen: bool = False
    layout: str = "raw"
    select: tuple[str, ...] = ()
    folds: int = 1
    context: dict = field(default_factory=dict)
    scores: tuple[dict, ...] = ()
    crossfit: int = 0
    heldout_only: bool = False
    score_gain: float = 1.0


PAPER = {"form": "paper"}
CROSSFIT_FOLDS = 4          # folds of a ``crossfit`` variant's out-of-fold scores
VARIANTS: dict[str, Variant] = {
    "baseline": Variant("none"),
    "deep": Variant("deep"),
    "paper": Variant("refactor", PAPER),
    "paper_stage1": Variant("none", PAPER, frozen=True),
    "action_only": Variant("refactor", PAPER | {"action_only": True}),
    "no_kl": Variant("refactor", PAPER | {"use_kl": False}),
    "residual": Variant("refactor", PAPER | {"residual": True}),
    "spread": Variant("refactor", PAPER | {"spread_weight": 1.0}),
    "recon": Variant("refactor", PAPER | {"recon_weight": 1.0}),
    "w0.1": Variant("refactor", PAPER | {"stage2_weight": 0.1}),
    "w10": Variant("refactor", PAPER | {"stage2_weight": 10.0}),
    "residual_spread_w10": Variant("refactor", PAPER | {"residual": True, "spread_weight": 1.0, "stage2_weight": 10.0}),
    "residual_spread": Variant("refactor", PAPER | {"residual": True, "spread_weight": 1.0}),
    "residual_recon": Variant("refactor", PAPER | {"residual": True, "recon_weight": 1.0}),
    "spread_recon": Variant("refactor", PAPER | {"spread_weight": 1.0, "recon_weight": 1.0}),
    "residual_spread_recon": Variant("refactor", PAPER | {"residual": True, "spread_weight": 1.0,
                                                          "recon_weight": 1.0}),
    "residual_frozen": Variant("refactor", PAPER | {"residual": True, "stage2_encoders": False}),
    "residual_spread_frozen": Variant("refactor", PAPER | {"residual": True, "spread_weight": 1.0,
                                                          "stage2_encoders": False}),
    "residual_recon_frozen": Variant("refactor", PAPER | {"residual": True, "recon_weight": 1.0,
                                                         "stage2_encoders": False}),
    "default": Variant("refactor", {}),
    "default_nokl": Variant("refactor", {"use_kl": False}),
    "default_s0.1": Variant("refactor", {"spread_weight": 0.1}),
    "default_s0.3": Variant("refactor", {"spread_weight": 0.3}),
    "concat_spread_frozen": Variant("refactor", PAPER | {"keep_input": True, "spread_weight": 1.0,
                                                        "stage2_encoders": False}),
    "concat_frozen": Variant("refactor", PAPER | {"keep_input": True, "stage2_encoders": False}),
    "concat_spread": Variant("refactor", PAPER | {"keep_input": True, "spread_weight": 1.0}),
    "concat_spread_frozen_mu": Variant("refactor", PAPER | {"keep_input": True, "spread_weight": 1.0,
                                                           "stage2_encoders": False, "use_kl": False}),
    "concat8_spread_frozen": Variant("refactor", PAPER | {"keep_input": True, "spread_weight": 1.0, "action_dim": 8,
                                                         "cooc_dim": 8, "stage2_encoders": False}),
    "concat8_spread_frozen_mu": Variant("refactor", PAPER | {"keep_input": True, "spread_weight": 1.0,
                                                            "action_dim": 8, "cooc_dim": 8, "stage2_encoders": False,
                                                            "use_kl": False}),
    "default_t3": Variant("refactor", {"temporal_kernel": 3}),
    "default_t3_encoders": Variant("refactor", {"temporal_kernel": 3, "stage2_encoders": True}),
    "select": Variant("none", select=("baseline", "default", "deep")),
    "select_k4": Variant("none", select=("baseline", "default", "deep"), folds=4),
    "select_cs": Variant("none", select=("baseline", "context_score", "deep")),
    "select_aw": Variant("none", select=("baseline", "context_a_w2", "deep")),
    "oracle_no_context": Variant("none", layout="no_context"),
    "oracle_split": Variant("none", layout="split"),
    "oracle_projected": Variant("none", layout="projected"),
    "oracle_removed": Variant("none", layout="removed"),
    "oracle_labels": Variant("none", layout="labels"),
    "oracle_labels_hard": Variant("none", layout="labels_hard"),
    "linear": Variant("none", layout="linear"),
    "context_score": Variant("none", layout="context_score", context={"actions": False, "window": 0}),  # 8th round
    "context_a": Variant("none", layout="context_score", context={"actions": True}),
    "context_w4": Variant("none", layout="context_score", context={"window": 4}),
    "context_a_w4": Variant("none", layout="context_score", context={"actions": True, "window": 4}),
    "context_a_w2": Variant("none", layout="context_score", context={"actions": True, "window": 2}),
    "context_a_w8": Variant("none", layout="context_score", context={"actions": True, "window": 8}),
    "context_a_w2_b2": Variant("none", layout="context_score", context={"actions": True, "window": 2, "border": 2}),
    "context_a_w2_b2f2": Variant("none", layout="context_score", context={"actions": True, "window": 2, "border": 2,
                                                                          "border_from": 2}),
    "context_a_w2_b1n": Variant("none", layout="context_score", context={"actions": True, "window": 2, "border": 1,
                                                                         "border_as": "not_action"}),
    "context_a_w2_b2n": Variant("none", layout="context_score", context={"actions": True, "window": 2, "border": 2,
                                                                         "border_as": "not_action"}),
    "context_a_w2_b4n": Variant("none", layout="context_score", context={"actions": True, "window": 2, "border": 4,
                                                                         "border_as": "not_action"}),
    # f beside the default form's score, alone and with the border's, applied to whole videos and written to files
    # (the baseline detector on them): does the narrow score help beside the wide one? (twelfth round, a screen)
    "context_files": Variant("none", layout="context_files", scores=({},)),
    "context_files_b2": Variant("none", layout="context_files", scores=({}, {"border": 2})),
    "context_files_x": Variant("none", layout="context_files", scores=({},), crossfit=CROSSFIT_FOLDS),
    "context_files_b2_x": Variant("none", layout="context_files", scores=({}, {"border": 2}),
                                  crossfit=CROSSFIT_FOLDS),
    # the same through the detector itself (thirteenth round): detect train --context-score A [--context-score B]
    # --context-folds 4
    "context_x": Variant("none", layout="context_score", context={"actions": True, "window": 2},
                         crossfit=CROSSFIT_FOLDS),
    "context_b2_x": Variant("none", layout="context_score", scores=({}, {"border": 2}), crossfit=CROSSFIT_FOLDS),
    # a second score of where each class's actions start and end (thirteenth round), alone and cross-fitted
    "context_bd": Variant("none", layout="context_score", scores=({}, {"targets": "boundaries"})),
    "context_bd_x": Variant("none", layout="context_score", scores=({}, {"targets": "boundaries"}),
                            crossfit=CROSSFIT_FOLDS),
    # a better boundary score where data are plentiful (sixteenth round): a wider window, one hidden layer of 64
    "context_bdw4_x": Variant("none", layout="context_score", scores=({}, {"targets": "boundaries", "window": 4}),
                              crossfit=CROSSFIT_FOLDS),
    "context_bdh_x": Variant("none", layout="context_score", scores=({}, {"targets": "boundaries", "hidden": 64}),
                             crossfit=CROSSFIT_FOLDS),
    # cross-fitting with 8 folds instead of 4 (seventeenth round): each out-of-fold scorer learnt on 7/8 of the
    # training videos, closer to the scorer learnt on all of them that scores new videos
    "context_bdw4_x8": Variant("none", layout="context_score", scores=({}, {"targets": "boundaries", "window": 4}),
                               crossfit=8),
    "select_awb": Variant("none", select=("baseline", "context_a_w2_b2", "deep")),
    # the boundary score's held-out score alone: with select_aw's baseline and deep baseline, select_bdx
    "heldout_bd_x": Variant("none", select=("context_bd_x",), heldout_only=True),
    "action_w4": Variant("none", layout="context_score", context={"contexts": False, "actions": True, "window": 4}),
    # detect fit's selection around its context front since the seventeenth round: the held-out scores of its three
    # candidates; the choice and its own record on all training videos: reselect(..., variant="heldout_front")
    "heldout_front": Variant("none", select=("baseline", "context_bdw4_x8", "deep"), heldout_only=True),
    # the context front with its scores times a gain (twentieth round: a few score channels beside many feature
    # channels are drowned; DetectorConfig.score_gain)
    **{f"context_bdw4_x8_g{g}": Variant("none", layout="context_score",
                                        scores=({}, {"targets": "boundaries", "window": 4}), crossfit=8,
                                        score_gain=float(g)) for g in (2, 4, 8, 16)},
    # the gain-16 front's held-out score (twenty-first round): with heldout_front's baseline and deep baseline, the
    # selection around it (select_context_bdw4_x8_g16, compose_select)
    "heldout_g16": Variant("none", select=("context_bdw4_x8_g16",), heldout_only=True),
}

# values of each axis in an axis sweep (the centre's value is included)
AXIS_VALUES: dict[str, list] = {
    "dim": [64, 256, 1024, 2048],
    "classes": [4, 8, 20],
    "train_videos": [24, 64, 200],
    "action_norm": [0.15, 0.3, 0.6],
    "context_norm": [0.0, 0.5, 1.0],
    "context_overlap": [0.0, 0.3, 0.6],
    "context_extent": [0.0, 8.0, 16.0],
    "context_alone": [0.0, 1.5, 4.0],
    "distractor_p": [0.0, 0.15, 0.4],
    "nuisance_rank": [0, 4, 16],
}


@dataclass(frozen=True)
class StudySettings:
    """Detector and stage-1 settings shared by every variant (one default per field)."""

    detector: str = "small"                  # small: base 64, heads 128, max duration 32; default: DetectorConfig()
    detector_epochs: int = 20
    window: int = 64
    refactor_epochs: int = 30
    refactor_hidden: int | None = None       # None: max(64, C / 2)

    def hidden(self, dim: int) -> int:
        return self.refactor_hidden or max(64, dim // 2)


def detector_config(kind: str = "small") -> DetectorConfig:
    """The study's detector: ``small`` (fast enough for 5 seeds of every world point) or ``default``
    (the project's defaults, as a new user trains it)."""
    if kind == "default":
        return DetectorConfig()
    if kind != "small":
        raise ValueError(f"detector must be small or default, got {kind!r}")
    return DetectorConfig(base_dim=64, boundary_hidden=64, head_hidden=128, max_duration=32)


# ----------------------------------------------------------------------------------------------
# measurements


@torch.no_grad()
def _components(model, test: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """φA, μ and f' of every test video ((T, ·) arrays, in the dict's order)."""
    model = model.eval()
    out = {"action": [], "mu": [], "features": []}
    for feats in test.values():
        o = model(torch.from_numpy(np.ascontiguousarray(feats.T))[None])
        out["action"].append(o.action[0].T.numpy())
        out["mu"].append(o.mu[0].T.numpy())
        out["features"].append(o.features[0].T.numpy())
    return out


def _pair_cosine(spaces: list[np.ndarray], rng: np.random.Generator, n: int = 4000) -> float:
    x = normalize_rows(np.concatenate(spaces).astype(np.float64))
    i, j = rng.integers(len(x), size=(2, n))
    keep = i != j
    return float((x[i[keep]] * x[j[keep]]).sum(1).mean())


def linear_r2(source: list[np.ndarray], target: list[np.ndarray], ridge: float = 1e-3) -> float:
    """R² of the ridge map source -> target fit on the even-indexed videos and scored on the odd ones."""
    xs = [np.concatenate(v[p::2]).astype(np.float64) for v, p in ((source, 0), (target, 0), (source, 1), (target, 1))]
    x_fit, y_fit, x_te, y_te = xs
    mx, my = x_fit.mean(0), y_fit.mean(0)
    a = (x_fit - mx).T @ (x_fit - mx)
    w = np.linalg.solve(a + ridge * np.trace(a) / len(a) * np.eye(len(a)), (x_fit - mx).T @ (y_fit - my))
    pred = (x_te - mx) @ w + my
    return float(1 - ((pred - y_te) ** 2).sum() / ((y_te - y_te.mean(0)) ** 2).sum())


def measure(model, stage1, test: dict[str, np.ndarray], kinds: list[np.ndarray]) -> dict[str, float]:
    """The collapse, spread, drift and recoverability figures of one RefactorNet model (see the docstring)."""
    comp = _components(model, test)
    rng = np.random.default_rng(0)
    out = {"phiC_ctx": mean_cosine(comp["mu"], kinds, ACTION, CONTEXT),
           "phiC_bg": mean_cosine(comp["mu"], kinds, ACTION, BACKGROUND),
           "phiA_ctx": mean_cosine(comp["action"], kinds, ACTION, CONTEXT),
           "phiA_bg": mean_cosine(comp["action"], kinds, ACTION, BACKGROUND),
           "phiC_pair": _pair_cosine(comp["mu"], rng),
           "recon_r2": linear_r2(comp["features"], list(test.values()))}
    if stage1 is not None:
        before = _components(stage1, test)["action"]
        cos = [(normalize_rows(a.astype(np.float64)) * normalize_rows(b.astype(np.float64))).sum(1)
               for a, b in zip(before, comp["action"])]
        out["phiA_drift"] = float(1 - np.concatenate(cos).mean())
    return out


# a snippet of another class's context (rendered worlds, whose videos hold scenes of several classes)
OTHER_CONTEXT = 4


@torch.no_grad()
def measure_context(scorer, test: list[np.ndarray], kinds: list[np.ndarray],
                    views: list[list[np.ndarray]] | None = None) -> dict[str, float]:
    """φC = p(f), the context score's K context probabilities (``scorer``, :class:`refactor.context.ContextScorer`),
    on the test videos' features ``test`` (each (T, C)): cosines between action snippets and the same video's
    context / background snippets, and between random snippets (the collapse figures of :func:`measure`).

    In the feature worlds a video holds one class, so its context is its actions' class's context. Videos that
    hold several classes give ``views``: per video, one (T,) kind array per class with actions in it (ACTION
    that class's action snippets, CONTEXT its context, :data:`OTHER_CONTEXT` other classes' context, BACKGROUND,
    -1 unpaired); then ``phiC_ctx`` pairs each action with its own class's context, ``phiC_other`` with the
    other classes' context and ``phiC_scene`` (what ``phiC_ctx`` is without views) with every context snippet of
    its video.
    """
    k = scorer.num_classes
    p = [scorer(torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).T[None])[0, :k].T.numpy() for f in test]
    out = {"phiC_ctx": mean_cosine(p, kinds, ACTION, CONTEXT), "phiC_bg": mean_cosine(p, kinds, ACTION, BACKGROUND),
           "phiC_pair": _pair_cosine(p, np.random.default_rng(0))}
    if views is not None:
        spaces = [x for x, per_class in zip(p, views) for _ in per_class]          # each video once per view
        flat = [v for per_class in views for v in per_class]
        out |= {"phiC_scene": out["phiC_ctx"], "phiC_ctx": mean_cosine(spaces, flat, ACTION, CONTEXT),
                "phiC_other": mean_cosine(spaces, flat, ACTION, OTHER_CONTEXT)}
    return out


def coupling_quality(pairs, kinds: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of coupling samples of each kind (the kind of the snippet; context = the class's own scene)."""
    counts = np.zeros(len(KINDS))
    for v in pairs.videos:
        k = kinds[v.video_id][v.pair_snippet]
        counts += np.bincount(k, minlength=len(KINDS))
    counts /= max(counts.sum(), 1)
    return {f"coupling_{name}": float(c) for name, c in zip(KINDS, counts)} | {"pairs": int(len(pairs.label))}


# ----------------------------------------------------------------------------------------------
# one world point, one seed


def run_point(world: FeatureWorld, seed: int, variants: list[str], settings: StudySettings, tmp: Path,
              done: set[str], emit) -> None:
    """Train and score every variant of ``variants`` not in ``done`` on one seed of ``world``; ``emit``
    receives one record per variant."""
    todo = [v for v in variants if v not in done]
    if not todo:
        return
    root = tmp / ("w" + hashlib.sha1(f"{world_key(world.to_dict())}/{seed}".encode()).hexdigest()[:16])
    raw, ann = root / "raw", root / "raw" / "annotations.json"
    data = write_world(world, seed, raw)
    test_kinds = [data["kinds"][v] for v in data["test"]]
    thresholds = parse_thresholds(TIOU)
    det_cfg = detector_config(settings.detector)
    det_train = DetectTrainConfig(epochs=settings.detector_epochs, window=settings.window, batch_size=16, seed=seed)
    try:
        pairs = build_pairs(raw, ann, "validation", SampleConfig())
    except RefactorError as exc:      # e.g. no context at all: no snippet is similar enough to be a coupling sample
        pairs, skipped = None, str(exc)
    quality = coupling_quality(pairs, data["kinds"]) if pairs is not None else {}
    stage1: dict[str, tuple] = {}

    def stage1_model(overrides: dict, pairs, tag: str = ""):
        key = tag + json.dumps(overrides, sort_keys=True)
        if key not in stage1:
            cfg = RefactorConfig(in_dim=world.dim, hidden_dim=settings.hidden(world.dim), **overrides)
            rtrain = RefactorTrainConfig(epochs=settings.refactor_epochs, seed=seed)
            model, history = train_refactor(pairs, cfg, rtrain, progress=False)
            path = save_checkpoint(root / f"stage1_{len(stage1)}.pt", model, pairs, SampleConfig(), rtrain, history)
            stage1[key] = (model, path)
        return stage1[key]

    def train_variant(name: str, annotations: Path, pairs, subset: str = "test", tag: str = ""):
        """(detector, its scores on ``subset``, the stage-1 model or None) of one variant trained on the
        ``validation`` videos of ``annotations``."""
        v = VARIANTS[name]
        feature_dir, ref_path, ref_model, front, ctx_path = raw, None, None, v.front, None
        if v.front in ("deep", "refactor") or v.frozen:
            ref_model, ref_path = stage1_model(v.refactor if v.front != "deep" else PAPER, pairs, tag)
        if v.frozen:
            feature_dir = root / f"frozen_{tag}{name}"
            apply_refactor(ref_path, raw, feature_dir, progress=False)
        if v.layout == "linear":
            feature_dir = root / f"linear_{tag}"
            write_linear(raw, feature_dir, pairs)
        elif v.layout == "context_score":         # refactor.context's scores, the detector's front "context"
            ctx_path = []
            for i, overrides in enumerate(v.scores or (v.context,)):
                config = ContextConfig(seed=seed, **overrides)
                scorer, info = train_context(pairs, raw, config)
                ctx_path.append(save_context(root / f"context_{tag}{name}_{i}.pt", scorer, pairs, SampleConfig(),
                                             config, info))
            front = "context"
        elif v.layout == "context_files":         # f ⊕ p_1(f) ⊕ p_2(f) ..., whole videos, as files
            feature_dir = root / f"scored_{tag}{name}"
            configs = [ContextConfig(seed=seed, **c) for c in v.scores]
            learnt_on_all = [train_context(pairs, raw, c)[0] for c in configs]
            out_of_fold = [crossfit_scores(raw, annotations, "validation", c, folds=v.crossfit) if v.crossfit
                           else {} for c in configs]
            for path in sorted(raw.glob("*.h5")):
                f = read_features(path).features
                ps = [held[path.stem] if path.stem in held else scorer.score(f)   # held: out of fold (training)
                      for scorer, held in zip(learnt_on_all, out_of_fold)]
                write_two_stream(feature_dir / path.name, np.concatenate([f] + ps, axis=1), FPS, WINDOW, STRIDE)
        elif v.layout != "raw":
            feature_dir = root / f"oracle_{v.layout}"
            write_world(world, seed, feature_dir, v.layout)
        crossfit = v.crossfit if v.layout == "context_score" else 0
        train_cfg = replace(det_train, context_folds=crossfit) if crossfit else det_train
        model, meta = train_detector(feature_dir, annotations, replace(det_cfg, score_gain=v.score_gain),
                                     train_cfg, front=front,
                                     refactor_checkpoint=ref_path if v.front != "none" else None,
                                     context_checkpoint=ctx_path, progress=False)
        rec = score_detector(model, meta, feature_dir, annotations, root / f"det_{tag}{name}.pt", thresholds, subset)
        last = meta["history"][-1] if meta["history"] else {}
        rec["train_loss"] = {k: last[k] for k in ("proposal", "detection", "refactor") if k in last}
        return model, rec, ref_model

    results: dict[str, dict] = {}
    for name in todo:
        v = VARIANTS[name]
        needs_pairs = v.front != "none" or v.frozen or v.select or v.layout in ("linear", "context_score",
                                                                               "context_files")
        if pairs is None and needs_pairs:
            emit({"world": world.to_dict(), "seed": seed, "variant": name, "skipped": skipped})
            print(f"  {name:<22} seed {seed} skipped: {skipped}", file=sys.stderr, flush=True)
            continue
        t0 = time.perf_counter()
        extra: dict = {}
        if v.select:
            # choose among v.select on held-out training videos, then take the choice trained on them all
            folds, held = [], []
            for k in range(v.folds):
                held_ann = root / f"heldout{k or ''}" / "annotations.json"
                held += write_heldout(ann, held_ann, fold=k)
                held_pairs = build_pairs(raw, held_ann, "validation", SampleConfig())
                folds.append({c: train_variant(c, held_ann, held_pairs, HELDOUT, tag=f"heldout{k or ''}_")[1][
                    "average_mAP"] for c in v.select})
            scores = {c: float(np.mean([f[c] for f in folds])) for c in v.select}
            chosen = choose_front(scores)          # the best (ties: the first); other margins: reselect()
            extra = {"selected": chosen, "heldout_mAP": scores, "heldout_videos": len(held)}   # summed over folds
            if v.folds > 1:
                extra["heldout_folds"] = folds
            if v.heldout_only:
                emit({"world": world.to_dict(), "seed": seed, "variant": name,
                      "seconds": time.perf_counter() - t0, "heldout_mAP": scores, "heldout_videos": len(held)})
                print(f"  {name:<22} seed {seed} held-out {scores}", file=sys.stderr, flush=True)
                continue
            if chosen not in results:
                results[chosen] = dict(zip(("model", "rec", "stage1"), train_variant(chosen, ann, pairs)))
            model, rec, ref_model = results[chosen]["model"], dict(results[chosen]["rec"]), results[chosen]["stage1"]
            v = VARIANTS[chosen]
        else:
            model, rec, ref_model = train_variant(name, ann, pairs)
            results[name] = {"model": model, "rec": rec, "stage1": ref_model}
            rec = dict(rec)
        rec |= {"world": world.to_dict(), "seed": seed, "variant": name, "seconds": time.perf_counter() - t0,
                "coupling": quality, "snippets": data["snippets"], "instances": data["instances"]} | extra
        if v.layout == "context_score" and v.context.get("contexts", True):
            rec["context"] = measure_context(model.front[0], list(data["test"].values()), test_kinds)
        if v.front == "refactor" or v.frozen:
            rec["stage1"] = measure(ref_model, None, data["test"], test_kinds)
        if v.front == "refactor":
            rec["stage2"] = measure(model.front, ref_model, data["test"], test_kinds)
            if model.front.gamma is not None:
                rec["stage2"]["gamma_rms"] = float(model.front.gamma.detach().pow(2).mean().sqrt())
        emit(rec)
        print(f"  {name:<22} seed {seed} avg mAP {100 * rec['average_mAP']:5.1f}  ({rec['seconds']:.0f} s)"
              + (f"  chose {extra['selected']}" if extra else ""), file=sys.stderr, flush=True)


def context_directions(pairs) -> np.ndarray:
    """(K, C) each class's co-occurrence direction estimated from its coupling samples: the mean of the
    class's coupling samples minus the mean of those K means (what the classes' contexts share is not
    a class's)."""
    means = np.stack([pairs.coupling[pairs.label == k].mean(0) for k in range(len(pairs.classes))]).astype(np.float64)
    return means - means.mean(0)


def write_transformed(raw: Path, out: Path, transform) -> None:
    """Every feature file of ``raw`` with its features ``f`` (T, C) replaced by ``transform(f)`` (T, D) in ``out``
    (one zero channel appended where D is odd: the files hold two streams of one size), and the annotations."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(raw.glob("*.h5")):
        ff = read_features(path)
        g = transform(ff.features)
        if g.shape[1] % 2:
            g = np.concatenate([g, np.zeros((len(g), 1))], axis=1)
        write_two_stream(out / path.name, g.astype(np.float32), ff.fps, ff.window, ff.stride,
                         num_frames=ff.num_frames)
    (out / "annotations.json").write_bytes((raw / "annotations.json").read_bytes())


def write_linear(raw: Path, out: Path, pairs) -> None:
    """Every feature file of ``raw`` as [f − P f, P f] in ``out`` (2C channels), P the orthogonal projection on
    the span of :func:`context_directions`: a closed-form split into an action part and a co-occurrence part,
    estimated from the coupling samples (no training), the learnt counterpart of ``oracle_removed``."""
    proj = span_projector(context_directions(pairs))

    def split(f: np.ndarray) -> np.ndarray:
        inside = f.astype(np.float64) @ proj
        return np.concatenate([f - inside, inside], axis=1)

    write_transformed(raw, out, split)


def write_heldout(annotations: Path, out: Path, fold: int = 0) -> list[str]:
    """Write ``annotations`` to ``out`` with a quarter of each class's training (``validation``) videos in
    subset :data:`HELDOUT` (:func:`common.annotations.hold_out`, its ``fold``); returns those videos."""
    database, held = hold_out(read_database(annotations), "validation", fold=fold)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_database(out, database)
    return held


# ----------------------------------------------------------------------------------------------
# the sweep and its report


def world_key(world: dict) -> str:
    return json.dumps(world, sort_keys=True)


def study_point(world: dict, settings: dict) -> dict:
    """A world with the study settings it runs under that differ from the defaults (for example
    ``detector: default``) as extra fields, so runs of one world under other settings are resumed and
    reported (and labelled) apart, never paired or averaged together, and never drawn on an axis."""
    defaults = asdict(StudySettings())
    return world | {k: v for k, v in settings.items() if defaults.get(k, v) != v}


def record_point(record: dict) -> dict:
    """:func:`study_point` of a record (records written before settings were stored: the defaults)."""
    return study_point(record["world"], record.get("settings", {}))


def points(centre: FeatureWorld, axes: dict[str, list | None],
           with_centre: bool = True) -> list[tuple[str, object, FeatureWorld]]:
    """(axis, value, world) of the centre (unless ``with_centre`` is False) and of every value of each
    axis (None: :data:`AXIS_VALUES`), the centre once."""
    out = [("centre", None, centre)] if with_centre else []
    for axis, values in axes.items():
        for value in values or AXIS_VALUES[axis]:
            w = centre.with_axis(axis, value)
            if w != centre:
                out.append((axis, value, w))
    return out


def _ms(x) -> tuple[float, float]:
    a = 100 * np.asarray(x, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def load_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]     # a last line without its newline is partial
    return [json.loads(line) for line in lines if line.strip()]


def latest_records(records: list[dict]) -> tuple[list[dict], int]:
    """The records with, for each world (and its study settings), seed and variant, only the last one given:
    a rerun after a fix supersedes the earlier record when its file is given after the earlier one's (the
    nineteenth round's ``refactor_study_fresh19_*`` files after the ``fresh17``/``fresh18`` ones). Returns the
    kept records, in the order given, and how many were superseded."""
    last = {(world_key(record_point(r)), r["seed"], r["variant"]): i for i, r in enumerate(records)}
    keep = sorted(last.values())
    return [records[i] for i in keep], len(records) - len(keep)


# margins (points of average mAP) of the selection rules the report compares (detect.fit.choose_front)
SELECT_MARGINS = (0.0, 1.0, 2.0, 3.0, 5.0)
# the rules the report compares for the choice among the baseline, the context score and the deep baseline
# (select_aw): (FitConfig.select_prefer, FitConfig.select_margin)
PREFER_RULES: tuple[tuple[str | None, float], ...] = ((None, 0.0), ("context", 1.0), ("context", 2.0),
                                                      ("context", 3.0), ("context", 5.0), ("context", 10.0))


def fit_role(candidate: str) -> str:
    """The ``detect fit`` candidate (:data:`detect.fit.SELECT_CANDIDATES`) a study variant plays: baseline,
    deep, context (the context score's forms) or refactor."""
    if candidate in ("baseline", "deep"):
        return candidate
    return "context" if VARIANTS[candidate].layout == "context_score" else "refactor"


def rule_name(variant: str, margin: float, prefer: str | None = None) -> str:
    """The report's name of ``variant`` replayed with a rule: ``select@2`` or ``select_aw@context+2``."""
    return f"{variant}@{prefer + '+' if prefer else ''}{margin:g}"


def reselect(records: list[dict], margin: float, prefer: str | None = None, variant: str = "select") -> list[dict]:
    """The ``variant`` records (a ``select*`` variant) as the rule with ``margin`` (points of average mAP) and
    ``prefer`` (a ``detect fit`` candidate, :func:`choose_front`, :func:`fit_role`) would have made them, named
    by :func:`rule_name`: per record, the choice from its held-out scores and the chosen variant's own record on
    the same world point and seed. This is exact: a ``select*`` variant's final model is its choice's own run
    (same data, seed and settings). A choice without its own record is left out. A ``heldout_only`` variant's
    records (``heldout_front``) have no choice of their own: every choice is then its own record."""
    own = {(world_key(record_point(r)), r["seed"], r["variant"]): r for r in records if "average_mAP" in r}
    out = []
    for r in records:
        if r.get("variant") != variant or "heldout_mAP" not in r:
            continue
        by_role = {fit_role(c): c for c in r["heldout_mAP"]}
        chosen = by_role[choose_front({fit_role(c): m for c, m in r["heldout_mAP"].items()}, margin / 100, prefer)]
        rec = r if chosen == r.get("selected") else own.get((world_key(record_point(r)), r["seed"], chosen))
        if rec is not None:
            out.append(rec | {"variant": rule_name(variant, margin, prefer), "selected": chosen,
                              "heldout_mAP": r["heldout_mAP"]})
    return out


def compose_select(records: list[dict], base: str = "select_aw", heldout: str = "heldout_bd_x",
                   name: str = "select_bdx") -> list[dict]:
    """``base`` (a ``select*`` variant's records) with its context candidate replaced by the one ``heldout`` (a
    ``heldout_only`` variant) scored on the same held-out videos (the same split: :func:`write_heldout` of the
    same world and seed), as records of a ``select*`` variant ``name``: per world point and seed where both
    exist, the held-out scores, the best candidate (:func:`choose_front`; other rules: :func:`reselect`) and
    that candidate's own record. Exact where the candidates' own runs are (same data, seed and settings); a
    world and seed without the chosen candidate's own record is left out."""
    own = {(world_key(record_point(r)), r["seed"], r["variant"]): r for r in records if "average_mAP" in r}
    swaps = {(world_key(record_point(r)), r["seed"]): r["heldout_mAP"] for r in records
             if r.get("variant") == heldout and "heldout_mAP" in r}
    out = []
    for r in records:
        key = (world_key(record_point(r)), r["seed"])
        if r.get("variant") != base or "heldout_mAP" not in r or key not in swaps:
            continue
        scores = {c: m for c, m in r["heldout_mAP"].items() if fit_role(c) != "context"} | swaps[key]
        scores = {c: scores[c] for c in sorted(scores, key=lambda c: list(SELECT_CANDIDATES).index(fit_role(c)))}
        chosen = choose_front(scores)
        rec = own.get((*key, chosen))
        if rec is not None:
            out.append(rec | {"variant": name, "selected": chosen, "heldout_mAP": scores,
                              "heldout_videos": r["heldout_videos"]})
    return out


def summarize(records: list[dict]) -> dict[str, dict[str, dict]]:
    """Per world (key) and variant: mean ± std average mAP (%), paired Δ vs baseline and deep (%), seeds, each
    seed's average mAP (points, ``by_seed``),
    and the mean of each measurement (records without ``average_mAP``, skipped or held-out only, are left
    out)."""
    by_world: dict[str, dict[str, dict[int, dict]]] = {}
    for r in records:
        if "average_mAP" in r:
            by_world.setdefault(world_key(record_point(r)), {}).setdefault(r["variant"], {})[r["seed"]] = r
    out: dict[str, dict[str, dict]] = {}
    for wk, per_variant in by_world.items():
        out[wk] = {}
        for name, runs in per_variant.items():
            seeds = sorted(runs)
            row = {"seeds": seeds, "average_mAP": _ms([runs[s]["average_mAP"] for s in seeds]),
                   "by_seed": {s: 100 * runs[s]["average_mAP"] for s in seeds}}
            for ref in ("baseline", "deep"):
                other = per_variant.get(ref, {})
                common = [s for s in seeds if s in other]
                if common and name != ref:
                    diffs = [runs[s]["average_mAP"] - other[s]["average_mAP"] for s in common]
                    row[f"delta_{ref}"] = _ms(diffs)
                    row[f"above_{ref}"] = (sum(d > 0 for d in diffs), len(diffs))       # seeds above it, of
            base, deep = per_variant.get("baseline", {}), per_variant.get("deep", {})
            both = [s for s in seeds if s in base and s in deep]
            if both and name not in ("baseline", "deep"):
                # per seed, the difference to the better of the two plain fronts, in points
                row["below_best"] = {s: 100 * (runs[s]["average_mAP"] - max(base[s]["average_mAP"],
                                                                             deep[s]["average_mAP"])) for s in both}
            for stage in ("stage1", "stage2", "context"):
                if all(stage in runs[s] for s in seeds):
                    keys = runs[seeds[0]][stage].keys()
                    row[stage] = {k: float(np.mean([runs[s][stage][k] for s in seeds])) for k in keys}
            row["coupling"] = {k: float(np.mean([runs[s]["coupling"][k] for s in seeds]))
                               for k in runs[seeds[0]]["coupling"]}
            if all("selected" in runs[s] for s in seeds):
                row["selected"] = {c: sum(runs[s]["selected"] == c for s in seeds)
                                   for c in sorted({runs[s]["selected"] for s in seeds})}
                row["chosen"] = {s: runs[s]["selected"] for s in seeds}
            out[wk][name] = row
    return out


def _label(world: dict, centre: dict) -> str:
    """The fields in which ``world`` (a :func:`study_point`) differs from ``centre`` (ranges as ``min/max``),
    or ``centre``."""
    def plain(v):                                      # a range read back from JSON is a list, in code a tuple
        return list(v) if isinstance(v, (list, tuple)) else v

    diff = [f"{k}=" + ("/".join(map(str, v)) if isinstance(v, list) else str(v))
            for k, v in ((k, plain(world[k])) for k in world) if v != plain(centre.get(k))]
    return ", ".join(diff) if diff else "centre"


def _pm(x: tuple[float, float] | None, sign: bool = True) -> str:
    if x is None:
        return "—"
    return f"{x[0]:+.1f} ± {x[1]:.1f}" if sign else f"{x[0]:.1f} ± {x[1]:.1f}"


def verdict(per_variant: dict, name: str = "default") -> str:
    """The issue's criteria for one world: ``ok`` when the variant is not below the baseline or the deep
    baseline by more than one std of the paired difference, ``gain`` when it is also >= 2 points above
    the baseline, ``loss`` otherwise (``—`` without the rows)."""
    row = per_variant.get(name, {})
    checks = [row.get(f"delta_{ref}") for ref in ("baseline", "deep") if ref in per_variant]
    if not checks or any(c is None for c in checks):
        return "—"
    if any(m < -s for m, s in checks):
        return "loss"
    return "gain" if row["delta_baseline"][0] >= 2 else "ok"


def report(records: list[dict], centre: FeatureWorld = FeatureWorld(), figures: Path | None = None) -> str:
    """Markdown: the map (each world: the baseline, and each variant's paired Δ to it; the default's Δ to
    the deep baseline and its verdict), every variant of the worlds that ran more than four, and the
    measurements that explain them. The ``select*`` variants are shown with ``detect fit``'s rule
    (``FitConfig.select_prefer`` and ``select_margin``, :func:`reselect`); the rule tables compare others."""
    rules = select_rules(records, centre.to_dict()) + select_rules(records, centre.to_dict(), PREFER_RULES,
                                                                   "select_aw")
    fit_rule = FitConfig().select_margin, FitConfig().select_prefer
    shown = ("select", "select_cs", "select_aw", "select_bdx")
    records = records + compose_select(records)
    records = [r for r in records if r.get("variant") not in shown] + [
        r | {"variant": v} for v in shown for r in reselect(records, *fit_rule, variant=v)]
    # detect fit's selection around the seventeenth round's context front, with its rule
    records += [r | {"variant": "select_bdw4_x8"} for r in reselect(records, *fit_rule, variant="heldout_front")]
    # ... and around the gain-16 front (its held-out score from heldout_g16, the others' from heldout_front)
    composed = compose_select(records, "heldout_front", "heldout_g16", "heldout_front_g16")
    records += [r | {"variant": "select_context_bdw4_x8_g16"}
                for r in reselect(records + composed, *fit_rule, variant="heldout_front_g16")]
    summary = summarize(records)
    c = centre.to_dict()
    main = ("deep", "paper", "default")
    lines = ["| world | seeds | baseline (%) | Δ deep | Δ paper | Δ default | default − deep | default | Δ select "
             "(chosen) | select |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for wk, per in summary.items():
        if "baseline" not in per:
            continue
        cells = [_pm(per[v].get("delta_baseline")) if v in per else "—" for v in main]
        sel = per.get("select", {})
        chosen = ", ".join(f"{name} {n}" for name, n in sel.get("selected", {}).items())
        lines.append(f"| {_label(json.loads(wk), c)} | {len(per['baseline']['seeds'])} | "
                     f"{_pm(per['baseline']['average_mAP'], sign=False)} | {' | '.join(cells)} | "
                     f"{_pm(per.get('default', {}).get('delta_deep'))} | {verdict(per)} | "
                     f"{_pm(sel.get('delta_baseline'))}{f' ({chosen})' if chosen else ''} | "
                     f"{verdict(per, 'select')} |")
    rows = list(_paired_gaps(summary, "default", "select"))
    if rows:
        lines += ["", "Against the better of the baseline and the deep baseline on each seed (points of average "
                  "mAP, mean and worst seed, on the seeds with all four):", "",
                  "| world | seeds | default: mean | default: worst | select: mean | select: worst |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for wk, _per, seeds, *gaps in rows:
            cells = [f"{f(g):+.1f}" for g in gaps for f in (np.mean, np.min)]
            lines.append(f"| {_label(json.loads(wk), c)} | {len(seeds)} | {' | '.join(cells)} |")
    lines += rules
    rows = list(_paired_gaps(summary, "select", "select_k4"))
    if rows:
        lines += ["", "The selection scored on one held-out quarter (select) and on four folds (select_k4), on the "
                  "seeds with both: against the better of the baseline and the deep baseline on each seed "
                  "(points, mean / worst seed) and the choices:", "",
                  "| world | seeds | select | select_k4 | select: chosen | select_k4: chosen |",
                  "| --- | ---: | ---: | ---: | --- | --- |"]
        for wk, per, seeds, *gaps in rows:
            cells = [f"{np.mean(g):+.1f} / {np.min(g):+.1f}" for g in gaps]
            chosen = [", ".join(f"{c} {n}" for c, n in sorted(Counter(per[v]["chosen"][s] for s in seeds).items()))
                      for v in ("select", "select_k4")]
            lines.append(f"| {_label(json.loads(wk), c)} | {len(seeds)} | {' | '.join(cells)} | {' | '.join(chosen)} |")
    for wk, per in summary.items():
        if len(per) <= 4:
            continue
        lines += ["", f"All variants, {_label(json.loads(wk), c)}:", "",
                  "| variant | avg mAP (%) | Δ baseline | Δ deep | φC: cos(act, ctx) / cos(act, bg) | φC pair cos "
                  "| φA drift | R² f'→f |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, row in per.items():
            m = row.get("stage2") or row.get("stage1") or {}
            meas = (f"{m['phiC_ctx']:.2f} / {m['phiC_bg']:.2f} | {m['phiC_pair']:.2f} | "
                    f"{m['phiA_drift']:.2f} | {m['recon_r2']:.2f}" if "phiA_drift" in m else
                    f"{m['phiC_ctx']:.2f} / {m['phiC_bg']:.2f} | {m['phiC_pair']:.2f} | — | {m['recon_r2']:.2f}"
                    if m else "— | — | — | —")
            lines.append(f"| {name} | {_pm(row['average_mAP'], sign=False)} | {_pm(row.get('delta_baseline'))} | "
                         f"{_pm(row.get('delta_deep'))} | {meas} |")
    oracles = ("oracle_no_context", "oracle_split", "oracle_projected", "oracle_removed", "oracle_labels", "linear",
               "context_score", "context_a_w2")
    rows = [(wk, per) for wk, per in summary.items() if "baseline" in per and any(o in per for o in oracles)]
    if rows:
        lines += ["", "What an ideal refactoring would gain (the baseline detector on the oracle layouts, and on two "
                  "layouts learnt from the coupling samples: ``linear``, the closed-form split, and the context score, "
                  "f beside per-class probabilities, in its first form and its default form context_a_w2, whose "
                  "ceiling is oracle labels, f beside the exact coverage of each class's context and action; "
                  "the default's share of the split's gain):", "",
                  "| world | seeds | baseline (%) | Δ oracle no-context | Δ oracle split | Δ oracle projected "
                  "| Δ oracle removed | Δ oracle labels | Δ linear | Δ context score | Δ context_a_w2 | Δ default "
                  "| default / split |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for wk, per in rows:
            split, default = per.get("oracle_split", {}).get("delta_baseline"), per.get("default", {}).get(
                "delta_baseline")
            share = f"{default[0] / split[0]:.2f}" if split and default and split[0] > 0 else "—"
            cells = " | ".join(_pm(per.get(o, {}).get("delta_baseline")) for o in oracles)
            lines.append(f"| {_label(json.loads(wk), c)} | {len(per['baseline']['seeds'])} | "
                         f"{_pm(per['baseline']['average_mAP'], sign=False)} | {cells} | {_pm(default)} | {share} |")
    lines += select_context_table(summary, c)
    lines += context_form_table(summary, c)
    lines += context_form_table(summary, c, "context_bd_x", "select_bdx", "context_a_w2", BOUNDARY_TITLE, paired=True)
    for form, what in BOUNDARY_FORMS.items():
        lines += context_form_table(summary, c, form, "select_" + form, "context_bd_x",
                                    BOUNDARY_FORM_TITLE.format(form=form, what=what), paired=True)
    for other in ("context_bdw4_x", "context_a_w2"):
        lines += context_form_table(summary, c, "context_bdw4_x8", "select_bdw4_x8", other,
                                    FOLDS_TITLE.format(other=other), paired=True)
    for gain in (2, 4, 8, 16):
        form = f"context_bdw4_x8_g{gain}"
        lines += context_form_table(summary, c, form, "select_" + form, "context_bdw4_x8",
                                    GAIN_TITLE.format(form=form, gain=gain), paired=True)
    rows = [(wk, per["context_score"]) for wk, per in summary.items() if "context" in per.get("context_score", {})]
    if rows:
        lines += ["", "The context score's φC = p(f) on the test videos (means over seeds): cosine between action "
                  "snippets and the same video's context / background snippets, and between random snippets:", "",
                  "| world | seeds | φC cos(act, ctx) | φC cos(act, bg) | φC pair cos |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for wk, row in rows:
            m = row["context"]
            lines.append(f"| {_label(json.loads(wk), c)} | {len(row['seeds'])} | {m['phiC_ctx']:.2f} | "
                         f"{m['phiC_bg']:.2f} | {m['phiC_pair']:.2f} |")
    lines += ["", "Measurements (stage 2 on the test videos; means over seeds):", "",
              "| world | coupling: context / bg / mixed | paper φC ctx / bg | paper φA drift | paper R² "
              "| default φC ctx / bg | default γ rms |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for wk, per in summary.items():
        if "paper" not in per or "stage2" not in per["paper"]:
            continue
        cq = per["paper"]["coupling"]
        pm, dm = per["paper"]["stage2"], per.get("default", {}).get("stage2", {})
        lines.append(f"| {_label(json.loads(wk), c)} | {cq['coupling_context']:.2f} / {cq['coupling_background']:.2f}"
                     f" / {cq['coupling_mixed']:.2f} | {pm['phiC_ctx']:.2f} / {pm['phiC_bg']:.2f} | "
                     f"{pm['phiA_drift']:.2f} | {pm['recon_r2']:.2f} | "
                     + (f"{dm['phiC_ctx']:.2f} / {dm['phiC_bg']:.2f} | {dm.get('gamma_rms', float('nan')):.3f} |"
                        if dm else "— | — |"))
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        plot_axes(summary, c, figures / "delta_along_axes.png")
        plot_mechanism(summary.get(world_key(c), {}), figures / "mechanism.png")
        plot_oracles(summary, c, figures / "oracle_bound.png")
        plot_select(summary, c, figures / "select_map.png")
        plot_select(summary, c, figures / "select_context_map.png", ("deep", "context_score", "select", "select_cs"),
                    "select_cs")
        _plot_deltas([(_label(json.loads(wk), c), per) for wk, per in summary.items()
                      if "delta_baseline" in per.get("context_a_w2", {})],
                     ("deep", "context_score", "context_a_w2", "select_aw"), figures / "context_form_map.png",
                     "the context score's forms (first: context_score; default: context_a_w2) and detect fit's choice")
    return "\n".join(lines)


def select_context_table(summary: dict, centre: dict) -> list[str]:
    """Markdown lines: per world with a ``select_cs`` run (``detect fit``'s default candidates: baseline, context
    score, deep baseline), its paired Δ to the baseline with the choices, its worst seed against the better of
    the baseline and the deep baseline, and the issue's verdict, beside the same for ``select`` (baseline,
    default form, deep baseline); then the verdicts counted."""
    rows = [(wk, per) for wk, per in summary.items() if "delta_baseline" in per.get("select_cs", {})]
    if not rows:
        return []
    lines = ["", "The front chosen on held-out training videos among the baseline, the context score and the deep "
             "baseline (select_cs, `detect fit`'s default) beside the choice among the baseline, the default form "
             "and the deep baseline (select): paired Δ average mAP to the baseline (the choices), the worst seed "
             "against the better of the baseline and the deep baseline (points) and the issue's verdict:", "",
             "| world | seeds | Δ select_cs (chosen) | worst seed | verdict | Δ select (chosen) | worst seed "
             "| verdict |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    counts: dict[str, Counter] = {"select_cs": Counter(), "select": Counter()}
    for wk, per in rows:
        cells = _select_cells(per, "select_cs", counts) + _select_cells(per, "select", counts)
        lines.append(f"| {_label(json.loads(wk), centre)} | {len(per['select_cs']['seeds'])} | {' | '.join(cells)} |")
    return lines + _verdict_counts(counts)


def _select_cells(per: dict, name: str, counts: dict[str, Counter]) -> list[str]:
    """Three table cells of a ``select*`` variant on one world: Δ to the baseline (the choices), its worst seed
    against the better plain front, the issue's verdict (counted into ``counts[name]``); dashes without it."""
    row = per.get(name)
    if row is None or "delta_baseline" not in row:
        return ["—", "—", "—"]
    chosen = ", ".join(f"{k} {n}" for k, n in row.get("selected", {}).items())
    worst = f"{min(row['below_best'].values()):+.1f}" if row.get("below_best") else "—"
    counts[name][verdict(per, name)] += 1
    return [f"{_pm(row['delta_baseline'])} ({chosen})", worst, verdict(per, name)]


def _verdict_counts(counts: dict[str, Counter]) -> list[str]:
    """Markdown bullets: per variant, how many worlds got each verdict (none for a variant not run)."""
    return [""] + [f"- {name}: " + ", ".join(f"{v} {k}" for k, v in sorted(n.items())) + f" (of {sum(n.values())} "
                   "worlds)" for name, n in counts.items() if n]


CONTEXT_FORM_TITLE = (
    "The context score's default form (each class's context and action probabilities from the snippet and the means "
    "of the 2 snippets on each side, context_a_w2) and the front chosen among the baseline, it and the deep baseline "
    "(select_aw, `detect fit`'s default): paired Δ average mAP (points), the verdicts as in the map, the first form "
    "(context_score) beside it:")
BOUNDARY_TITLE = (
    "The context front with a boundary score beside it, trained on cross-fitted scores (context_bd_x: "
    "`--context-boundaries --context-folds 4`) and the front chosen among the baseline, it and the deep baseline "
    "(select_bdx: select_aw's held-out baseline and deep baseline with context_bd_x's held-out score, heldout_bd_x, "
    "`detect fit`'s rule): paired Δ average mAP (points), the verdicts as in the map, context_a_w2 beside it:")
BOUNDARY_FORM_TITLE = (
    "The boundary score in another form (sixteenth round): {form} ({what}) against context_bd_x (window 2, linear), "
    "both cross-fitted beside the default score: paired Δ average mAP (points), the verdicts as in the map:")
FOLDS_TITLE = (
    "Cross-fitting on 8 folds (seventeenth round): context_bdw4_x8 (`--context-boundaries --context-folds 8`) against "
    "{other}: paired Δ average mAP (points), the verdicts as in the map:")
GAIN_TITLE = (
    "A gain on the front's scores (twentieth round): {form} (`--score-gain {gain}`) against context_bdw4_x8 (gain 1): "
    "paired Δ average mAP (points), the verdicts as in the map:")
BOUNDARY_FORMS = {"context_bdw4_x": "a window of 4 snippets", "context_bdh_x": "one hidden layer of 64 ReLU units"}


def context_form_table(summary: dict, centre: dict, form: str = "context_a_w2", select: str = "select_aw",
                       other: str = "context_score", title: str = CONTEXT_FORM_TITLE,
                       paired: bool = False) -> list[str]:
    """Markdown lines: per world with a ``form`` run (a context score's form; by default its default form:
    contexts and actions, window 2), the baseline, its paired Δ to the baseline (seeds above it), to the deep
    baseline and its verdict, ``other``'s Δ (by default the first form, ``context_score``), and ``select``
    (``detect fit``'s selection among the baseline, this form and the deep baseline; by default ``select_aw``,
    its default) with its choices, worst seed against the better plain front and verdict; then the verdicts
    counted and φC of ``form``. With ``paired``, a column of ``form`` − ``other`` paired by seed (mean ± std,
    points, and the number of seeds both have)."""
    rows = [(wk, per) for wk, per in summary.items() if "delta_baseline" in per.get(form, {})]
    if not rows:
        return []
    lines = ["", title, "",
             f"| world | seeds | baseline (%) | Δ {form} | above baseline | − deep | verdict | Δ {other} "
             + (f"| {form} − {other} " if paired else "")
             + f"| Δ {select} (chosen) | worst seed | verdict | φC cos(act, ctx) / cos(act, bg) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |" + (" ---: |" if paired else "")
             + " ---: | ---: | --- | ---: |"]
    counts: dict[str, Counter] = {form: Counter(), select: Counter()}
    for wk, per in rows:
        row = per[form]
        counts[form][verdict(per, form)] += 1
        sel_cells = _select_cells(per, select, counts)
        m = row.get("context")
        phi = f"{m['phiC_ctx']:.2f} / {m['phiC_bg']:.2f}" if m else "—"
        pair = []
        if paired:
            a, b = row["by_seed"], per.get(other, {}).get("by_seed", {})
            gaps = [a[seed] - b[seed] for seed in a if seed in b]
            pair = [f"{np.mean(gaps):+.1f} ± {np.std(gaps, ddof=1) if len(gaps) > 1 else 0.0:.1f} ({len(gaps)})"
                    if gaps else "—"]
        lines.append(f"| {_label(json.loads(wk), centre)} | {len(row['seeds'])} | "
                     f"{_pm(per['baseline']['average_mAP'], sign=False)} | {_pm(row['delta_baseline'])} | "
                     f"{row['above_baseline'][0]} of {row['above_baseline'][1]} | {_pm(row.get('delta_deep'))} | "
                     f"{verdict(per, form)} | {_pm(per.get(other, {}).get('delta_baseline'))} | "
                     f"{' | '.join(pair + sel_cells)} | {phi} |")
    return lines + _verdict_counts(counts)


def _paired_gaps(summary: dict, first: str, second: str):
    """Per world where both variants have per-seed gaps to the better plain front (``below_best``): the
    world key, its summary row, the seeds both have (in ``second``'s order) and the two lists of gaps."""
    for wk, per in summary.items():
        a, b = per.get(first, {}).get("below_best", {}), per.get(second, {}).get("below_best", {})
        seeds = [s for s in b if s in a]
        if seeds:
            yield wk, per, seeds, [a[s] for s in seeds], [b[s] for s in seeds]


def select_rules(records: list[dict], centre: dict, rules: tuple[tuple[str | None, float], ...] = tuple(
        (None, m) for m in SELECT_MARGINS), variant: str = "select") -> list[str]:
    """Markdown: ``variant`` (a ``select*`` variant) replayed with each rule (``(prefer, margin)``,
    :func:`reselect`) on every world with its records: per world, against the better of the baseline and the
    deep baseline on each seed, the mean and the worst seed (points), and the issue's verdict (:func:`verdict`);
    the last rows average the means over the worlds and count the verdicts."""
    derived = [r for prefer, m in rules for r in reselect(records, m, prefer, variant)]
    if not derived:
        return []
    summary = summarize([r for r in records if "average_mAP" in r and r["variant"] in ("baseline", "deep")]
                        + derived)
    names = [rule_name(variant, m, prefer) for prefer, m in rules]
    candidates = ", ".join(next(r for r in records if r.get("variant") == variant)["heldout_mAP"])
    lines = ["", f"{variant}'s rule (candidates {candidates}): the simplest candidate within a margin of the best "
             "held-out score, or a preferred one unless beaten by more than the margin (then the best). Against the "
             "better of the baseline and the deep baseline on each seed (points of average mAP: mean / worst seed) "
             "and the verdict:", "",
             "| world | seeds | " + " | ".join((f"{prefer} first, " if prefer else "") + f"margin {m:g}"
                                             for prefer, m in rules) + " |",
             "| --- | ---: |" + " ---: |" * len(rules)]
    means: dict[str, list[float]] = {n: [] for n in names}
    verdicts: dict[str, list[str]] = {n: [] for n in names}
    for wk, per in summary.items():
        if not all("below_best" in per.get(n, {}) for n in names):
            continue
        cells = []
        for n in names:
            gaps = list(per[n]["below_best"].values())
            means[n].append(float(np.mean(gaps)))
            verdicts[n].append(verdict(per, n))
            cells.append(f"{np.mean(gaps):+.1f} / {np.min(gaps):+.1f} {verdicts[n][-1]}")
        lines.append(f"| {_label(json.loads(wk), centre)} | {len(per[names[0]]['below_best'])} | "
                     + " | ".join(cells) + " |")
    lines.append(f"| mean of {len(means[names[0]])} worlds | | "
                 + " | ".join(f"{np.mean(means[n]):+.2f}" for n in names) + " |")
    lines.append("| verdicts (ok / gain / loss) | | " + " | ".join(
        "/".join(str(sum(v == k for v in verdicts[n])) for k in ("ok", "gain", "loss")) for n in names) + " |")
    return lines


def _along(summary: dict, centre: dict, axis: str, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(axis values, mean Δ vs baseline, its std) of the worlds that differ from the centre in ``axis`` only
    (the centre included; any other field, an axis or not, must equal the centre's), sorted by value."""
    rows = []
    c = json.loads(json.dumps(centre))                  # ranges as lists, as in the summary's keys
    for wk, per in summary.items():
        w = json.loads(wk)
        if any(w[k] != c.get(k) for k in w if k != axis) or "delta_baseline" not in per.get(variant, {}):
            continue
        rows.append((w[axis], *per[variant]["delta_baseline"]))
    rows.sort()
    return tuple(np.asarray(col, dtype=np.float64) for col in zip(*rows)) if rows else (np.zeros(0),) * 3


def plot_axes(summary: dict, centre: dict, path: Path) -> None:
    """One panel per swept axis with at least two scored values: the paired Δ average mAP to the baseline
    (mean ± std over seeds) of each variant."""
    from matplotlib.lines import Line2D

    from common.plotting import new_figure, save_figure

    variants = sorted({v for per in summary.values() for v in per if v != "baseline"})
    panels = [(axis, [(v, *_along(summary, centre, axis, v)) for v in variants]) for axis in AXES]
    panels = [(axis, [line for line in lines if len(line[1]) >= 2]) for axis, lines in panels]
    panels = [(axis, lines) for axis, lines in panels if lines]
    n = max(len(panels), 1)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = new_figure(4.0 * cols, 3.2 * rows)
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    for i, (axis, lines) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for v, xs, ms, ss in lines:
            ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=v, color=colours[v])
        ax.axhline(0, color="grey", lw=0.8)
        if axis in ("dim", "train_videos"):
            ax.set_xscale("log")
        ax.set_xlabel(f"{axis} (centre {centre[axis]})")
        ax.set_ylabel("Δ avg mAP vs baseline (points)")
    drawn = {v for _, lines in panels for v, *_ in lines}
    handles = [Line2D([], [], color=colours[v], marker="o", label=v) for v in variants if v in drawn]
    fig.legend(handles=handles, fontsize=8, loc="lower right", ncol=2 if len(panels) % cols else 4)
    save_figure(fig, path)


def plot_oracles(summary: dict, centre: dict, path: Path,
                 variants: tuple[str, ...] = ("oracle_split", "oracle_projected", "default", "paper")) -> None:
    """One group of bars per world with an oracle: the paired Δ average mAP to the baseline (mean ± std over
    seeds) of the oracles beside the default and the paper's form."""
    rows = [(_label(json.loads(wk), centre), per) for wk, per in summary.items()
            if "oracle_split" in per and "delta_baseline" in per["oracle_split"]]
    _plot_deltas(rows, variants, path, "what an ideal refactoring would gain (oracles) and what the forms gain")


def plot_select(summary: dict, centre: dict, path: Path, variants: tuple[str, ...] = ("deep", "default", "select"),
                rule: str = "select") -> None:
    """One group of bars per world with a ``rule`` run (``select`` or ``select_cs``): the paired Δ average mAP
    to the baseline (mean ± std over seeds) of ``variants`` (by default the deep baseline, the default and
    the front chosen on held-out videos)."""
    rows = [(_label(json.loads(wk), centre), per) for wk, per in summary.items()
            if "delta_baseline" in per.get(rule, {})]
    _plot_deltas(rows, variants, path, f"the front chosen on held-out training videos ({rule}) beside the fixed ones")


def _plot_deltas(rows: list[tuple[str, dict]], variants: tuple[str, ...], path: Path, title: str) -> None:
    from common.plotting import new_figure, save_figure

    fig = new_figure(max(6.0, 0.9 * len(rows) + 2), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        d = [per.get(v, {}).get("delta_baseline", (np.nan, 0.0)) for _, per in rows]
        ax.bar(np.arange(len(rows)) + (i - (len(variants) - 1) / 2) * width, [m for m, _ in d], width,
               yerr=[sd for _, sd in d], capsize=2, label=v)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(2, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(rows)))
    ax.set_xticklabels([label for label, _ in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("Δ avg mAP vs baseline (points)")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -30))
    ax.legend(fontsize=7, ncol=4, loc="lower left", bbox_to_anchor=(0, 1.08))
    ax.set_title(title, fontsize=9, loc="right")
    save_figure(fig, path)


def plot_mechanism(per_variant: dict, path: Path) -> None:
    """Bars per RefactorNet variant of one world: φC cos(action, context), cos(action, background), φA drift
    in stage 2 and R² of f from f' (the measurements of :func:`measure`, means over seeds)."""
    from common.plotting import new_figure, save_figure

    names = [n for n, row in per_variant.items() if "stage2" in row or "stage1" in row]
    keys = [("phiC_ctx", "φC cos(action, context)"), ("phiC_bg", "φC cos(action, background)"),
            ("phiA_drift", "φA drift in stage 2"), ("recon_r2", "R² of f from f'")]
    fig = new_figure(max(6.0, 1.1 * len(names) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        vals = [(per_variant[n].get("stage2") or per_variant[n].get("stage1") or {}).get(key, np.nan) for n in names]
        ax.bar(np.arange(len(names)) + (i - 1.5) * width, vals, width, label=label)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylim(top=1.4)
    ax.legend(fontsize=7, ncol=4, loc="upper center")
    ax.set_title("centre world: what each variant does to φC, φA and f'", fontsize=9)
    save_figure(fig, path)


def _world_overrides(text: str) -> dict:
    """``dim=1024,instances=10/20`` -> {"dim": "1024", "instances": (10, 20)} (ranges as ``min/max``)."""
    ranges = tuple(f.name for f in fields(FeatureWorld) if f.name not in SCALARS)
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, _, value = item.partition("=")
        if key in ranges:
            kind = type(getattr(FeatureWorld(), key)[0])
            try:
                lo, hi = (kind(x) for x in value.split("/"))
            except ValueError:
                raise argparse.ArgumentTypeError(f"--world {key} takes min/max, got {value!r}") from None
            out[key] = (lo, hi)
        elif key in SCALARS:
            out[key] = value
        else:
            raise argparse.ArgumentTypeError(f"--world keys must be among {', '.join(SCALARS + tuple(ranges))}, "
                                             f"got {key!r}")
    return out


def world_from_overrides(overrides: dict) -> FeatureWorld:
    """The centre world with :func:`_world_overrides`'s fields set (scalars cast to their field's type)."""
    world = FeatureWorld()
    for k, v in overrides.items():
        world = replace(world, **{k: v}) if isinstance(v, tuple) else world.with_axis(k, v)
    return world


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="results, JSON lines (appended; a rerun skips what is there)")
    p.add_argument("--axes", default="",
                   help=f"axes to sweep, a comma list of {', '.join(AXES)}, each optionally with its values "
                        "(dim:64/1024); none: the centre only")
    p.add_argument("--world", type=_world_overrides, default={}, help="centre overrides, e.g. dim=1024,classes=6")
    p.add_argument("--no-centre", action="store_true", help="only the axes' other values (the centre runs elsewhere)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--variants", default="baseline,deep,paper,default")
    p.add_argument("--detector", choices=("small", "default"), default=StudySettings.detector,
                   help="small (the study's) or default (DetectorConfig's defaults); keep one per --out file")
    p.add_argument("--detector-epochs", type=int, default=StudySettings.detector_epochs)
    p.add_argument("--refactor-epochs", type=int, default=StudySettings.refactor_epochs)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", type=Path, nargs="+", help="print the tables of these results and stop")
    p.add_argument("--figures", type=Path, help="with --report: write the figures (PNG) to this folder")
    args = p.parse_args(argv)
    if args.report:
        records, superseded = latest_records([r for path in args.report for r in load_records(path)])
        if superseded:
            print(f"({superseded} records superseded by later ones of the same world, seed and variant)")
        print(report(records, figures=args.figures))
        return 0
    if args.out is None:
        p.error("--out is required (or --report)")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    axes: dict[str, list | None] = {}
    for item in filter(None, (a.strip() for a in args.axes.split(","))):
        name, _, values = item.partition(":")
        if name not in AXES:
            p.error(f"--axes must be among {', '.join(AXES)}, got {name!r}")
        axes[name] = values.split("/") if values else None
    torch.set_num_threads(max(1, args.threads))
    centre = world_from_overrides(args.world)
    settings = StudySettings(detector=args.detector, detector_epochs=args.detector_epochs,
                             refactor_epochs=args.refactor_epochs)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    done: dict[tuple[str, int], set[str]] = {}
    for r in load_records(args.out):
        done.setdefault((world_key(record_point(r)), r["seed"]), set()).add(r["variant"])
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def emit(rec: dict) -> None:
        append_line(args.out, json.dumps(rec | {"settings": asdict(settings)}))

    with tempfile.TemporaryDirectory(prefix="refactor_study_") as tmp:
        for axis, value, world in points(centre, axes, with_centre=not args.no_centre):
            for seed in seeds:
                print(f"{axis}={value} seed {seed}", file=sys.stderr, flush=True)
                key = world_key(study_point(world.to_dict(), asdict(settings)))
                run_point(world, seed, variants, settings, Path(tmp), done.get((key, seed), set()), emit)
    print(report(load_records(args.out), centre))
    return 0


if __name__ == "__main__":
    sys.exit(main())
