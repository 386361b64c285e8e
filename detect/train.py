"""Training the detector (RefactorNet stage 2, or a baseline): the epoch loop and :func:`train_detector`.

Each step on a batch of windows computes ``L_P + L_D`` (:mod:`detect.losses`: boundary losses, the
heads' proposals and their losses) and, with RefactorNet in front (``--refactor CKPT``), ``L_R`` on
a batch of its (action, coupling) pairs, collected from the same training videos with the stage-1
checkpoint's sample settings; the step minimises ``w L_R + L_P + L_D`` end to end (``w``:
``RefactorConfig.stage2_weight``, 1 in the paper). In the default form, "gated"
(``RefactorConfig.stage2_encoders`` False), φA and φC keep their stage-1 weights: only the gate γ and
the detector learn, and there is no L_R.

With ``TrainConfig.val_subset``, the model is evaluated (average mAP, :mod:`detect.validation`) on
that subset every ``val_every`` epochs and after the last; the results join the epoch's history
entry, and the best validated model is written as a checkpoint of its own (``best_path``).

Every random stream derives from (seed, epoch, rank), so an interrupted run resumes exactly from its
training state (:mod:`detect.checkpoint`); under torchrun the ranks share each batch and average
their gradients (:mod:`detect.distributed`). The trained model and its metadata go to
:func:`detect.checkpoint.save_detector`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.annotations import subset_videos
from common.fileio import sha256_file
from detect.checkpoint import load_training_state, save_detector, save_training_state
from detect.config import DetectorError, InferenceConfig, TrainConfig
from detect.data import DetectDataError, VideoRecord, make_windows, read_window, scan_videos
from detect.distributed import average_gradients, check_replicas, mean_over_ranks, rank_and_world
from detect.fronts import get_front
from detect.labels import boundary_targets
from detect.losses import detector_losses, sample_head_proposals
from detect.model import Detector, DetectorConfig
from detect.proposals import generate_proposals
from detect.settings import detector_settings
from detect.validation import VAL_KEY, Validator, best_entry, write_log
from extract.features import read_features
from refactor import RefactorError, RefactorLoss, SampleConfig, build_pairs, load_context, load_refactor
from refactor.context import ContextScorer, crossfit_scorers, scorer_config

__all__ = ["TrainConfig", "EpochReport", "train_detector", "crossfit_front_scores", "DetectorError"]


@dataclass
class EpochReport:
    """What :func:`train_detector` tells its ``on_epoch`` callback after each epoch.

    Attributes:
        epoch: 1-based epoch number.
        losses: the epoch's mean losses (its entry of the history: ``loss``, ``proposal``,
            ``detection``, their parts, ``refactor`` in stage 2; means over the ranks under torchrun).
        seconds: wall time of the epoch's steps (reading windows, proposal sampling, forward,
            backward, optimizer), on CUDA measured between ``torch.cuda.synchronize()`` calls.
    """

    epoch: int
    losses: dict[str, float]
    seconds: float


@dataclass
class _Window:
    video: VideoRecord
    start: int
    stop: int


def _batch(windows: list[_Window], streams: tuple[str, ...], dim: int, length: int,
           given: dict[str, np.ndarray] | None = None):
    """(x (B, length, dim), lengths, ground truth per window, boundary targets (B, 3, length), and with
    ``given`` (video id -> its scores (T, S)) the windows' rows of those scores (B, length, S), else None)."""
    x = np.zeros((len(windows), length, dim), dtype=np.float32)
    lengths, gts, targets = [], [], np.zeros((len(windows), 3, length), dtype=np.float32)
    scores = None
    if given is not None:
        scores = np.zeros((len(windows), length, next(iter(given.values())).shape[1]), dtype=np.float32)
    for i, w in enumerate(windows):
        n = w.stop - w.start
        x[i, :n] = read_window(w.video, streams, w.start, w.stop)
        if scores is not None:
            scores[i, :n] = given[w.video.video_id][w.start:w.stop]
        segs = w.video.segments_index - w.start
        keep = (segs[:, 1] > -0.5) & (segs[:, 0] < n - 0.5)          # instances that touch the window
        gts.append((segs[keep], w.video.labels[keep]))
        targets[i, :, :n] = boundary_targets(segs[keep], n)
        lengths.append(n)
    return x, lengths, gts, targets, scores


def _epoch_seeds(seed: int, epoch: int, rank: int) -> tuple[np.random.Generator, np.random.Generator, int]:
    """Per-epoch random streams, derived from (seed, epoch[, rank]) alone so that a resumed run
    continues exactly: the window order (shared by all ranks), the proposal / pair sampling of this
    rank, and a torch seed (dropout, RefactorNet's reparameterization) for this rank."""
    order = np.random.default_rng([seed, epoch])
    sampling = np.random.default_rng([seed, epoch, rank, 1])
    torch_seed = int(np.random.default_rng([seed, epoch, rank, 2]).integers(2**62))
    return order, sampling, torch_seed




def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fit(model: Detector, opt: torch.optim.Optimizer, train: TrainConfig, videos: list[VideoRecord],
         streams: tuple[str, ...], dim: int, device: torch.device, pairs, progress: bool | None,
         history: list[dict], after_epoch: Callable[[list[dict], float], None],
         given: dict[str, np.ndarray] | None = None) -> list[dict]:
    """The epochs of :func:`train_detector` after those already in ``history``; ``after_epoch`` is
    called after each with the history so far and the epoch's wall time; ``given``: the context front's
    scores per video (cross-fitting), else the front computes its own. Returns the mean losses per epoch.

    Under torch.distributed (torchrun), each step every rank takes its own ``batch_size`` windows of
    the shared epoch order (the order is padded by wrapping around so all ranks take the same number
    of steps), and the gradients are averaged over the ranks before the update, so every rank holds
    the same model; the reported losses are the means over the ranks.
    """
    config = model.config
    rank, world = rank_and_world()
    if pairs is not None:
        pair_a = torch.from_numpy(pairs.action).to(device)
        pair_c = torch.from_numpy(pairs.coupling).to(device)
        pair_w = torch.from_numpy(pairs.similarity.astype(np.float32)).to(device)
        pair_y = torch.from_numpy(pairs.label.astype(np.int64)).to(device)
        ref_weight = model.front.config.stage2_weight
        ref_loss = RefactorLoss(model.front)
    windows = [_Window(v, s, e) for v in videos for s, e in make_windows(v.num_snippets, train.window, train.overlap)]
    history = list(history)
    show = rank == 0 and not ((progress is False) or (progress is None and not sys.stderr.isatty()))
    bar = tqdm(range(len(history), train.epochs), desc="detector", unit="epoch", disable=not show,
               initial=len(history), total=train.epochs)
    per_step = train.batch_size * world
    steps = -(-len(windows) // per_step)
    for epoch in bar:
        _sync(device)
        started = time.perf_counter()
        model.train()
        order_rng, rng, torch_seed = _epoch_seeds(train.seed, epoch, rank)
        torch.manual_seed(torch_seed)
        order = order_rng.permutation(len(windows))
        order = np.resize(order, steps * per_step)                    # wrap around: equal steps on every rank
        totals: dict[str, float] = {}
        for step in range(steps):
            first = step * per_step + rank * train.batch_size
            batch = [windows[i] for i in order[first:first + train.batch_size]]
            length = max(w.stop - w.start for w in batch)
            x, lengths, gts, targets, scores = _batch(batch, streams, dim, length, given)
            x_t = torch.from_numpy(x).to(device).transpose(1, 2)
            len_t = torch.as_tensor(lengths, device=device)
            given_t = None if scores is None else torch.from_numpy(scores).to(device).transpose(1, 2)   # (B, S, T)
            enc = model.encode(x_t, len_t, given_t)
            with torch.no_grad():
                prob = torch.sigmoid(enc.boundary_logits).float().cpu().numpy()
            props = [generate_proposals(prob[i, 1, :n], prob[i, 2, :n], config.max_duration, train.model_proposals,
                                        config.candidate_ratio)[0] for i, n in enumerate(lengths)]
            samples = sample_head_proposals(props, gts, lengths, train, config.max_duration, rng, config.num_classes)
            heads = model.heads(enc, torch.as_tensor(samples.rois, dtype=x_t.dtype, device=device))
            parts = detector_losses(enc, heads, samples, torch.from_numpy(targets).to(device), train)
            loss = parts["proposal"] + parts["detection"]
            if pairs is not None:
                idx = torch.as_tensor(rng.integers(len(pair_a), size=min(train.pair_batch, len(pair_a))),
                                      device=device)
                r = ref_loss(pair_a[idx], pair_c[idx], pair_w[idx], pair_y[idx])
                parts["refactor"] = r["loss"]
                loss = loss + ref_weight * r["loss"]
            parts["loss"] = loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                average_gradients(model, world)
            opt.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
        means = {k: v / max(steps, 1) for k, v in totals.items()}
        if world > 1:
            means = mean_over_ranks(means, world, device)
        history.append(means | {"epoch": epoch + 1})
        _sync(device)
        seconds = time.perf_counter() - started
        bar.set_postfix(loss=f"{history[-1].get('loss', 0.0):.4f}")
        after_epoch(history, seconds)
    if world > 1:
        check_replicas(model, device)
    return history


def _fingerprint(config: DetectorConfig, train: TrainConfig, videos: list[VideoRecord], front: str,
                 refactor_checkpoint, contexts: list[Path]) -> dict:
    """What a resumed run must share with the interrupted one (everything but the epoch count)."""
    return {"config": config.to_dict(), "train": asdict(train) | {"epochs": None, "device": None}, "front": front,
            "videos": [[v.video_id, v.num_snippets, len(v.segments)] for v in videos],
            "refactor": None if refactor_checkpoint is None else sha256_file(refactor_checkpoint)}  \
        | ({"context": [sha256_file(p) for p in contexts]} if contexts else {})


def crossfit_front_scores(feature_dir: str | os.PathLike, annotations: str | os.PathLike | dict, subset: str,
                          videos: list[VideoRecord], streams: tuple[str, ...], scorers: list[ContextScorer],
                          checkpoints: list[dict], folds: int, device: str = "cpu",
                          progress: bool | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """What the context front is trained on with ``TrainConfig.context_folds``: its scores of each training
    video, each scorer's replaced by the out-of-fold one (:func:`refactor.context.crossfit_scorers`).

    Args:
        feature_dir, annotations, subset: the training videos' features, ground truth and subset.
        videos: the training videos as the detector reads them (:func:`detect.data.scan_videos`; rescaled
            ones are scored as rescaled, as the front scores them).
        streams: their feature streams.
        scorers, checkpoints: the context front's scorers (learnt on every training video) and their
            context-score checkpoints (each fold's scorer is learnt with the same settings and samples).
        folds: number of folds (>= 2).
        device: where the fold scorers learn.
        progress: progress bars over the folds (None: when stderr is a terminal).

    Returns:
        (scores, kept): video id -> (ndarray[T, S], float32) the scores f' puts beside f (S: the scorers'
        outputs, in order), rows as :func:`detect.data.read_window` gives the video; and the ids of the videos
        that keep some scorer learnt on every video instead of an out-of-fold one (sorted): a video no fold
        holds out (a class's only training video, a video without instances), or one whose fold has no
        scorer (the other folds leave a class without coupling samples).
    """
    fold_of = [{vid: fold_scorer for fold_scorer, held in
                crossfit_scorers(feature_dir, annotations, subset, replace(scorer_config(ckpt), device=device),
                                 SampleConfig(**ckpt["samples"]), folds, progress, classes=list(ckpt["classes"]))
                if fold_scorer is not None for vid in held}
               for ckpt in checkpoints]                                   # per score: video id -> its fold's scorer
    out = {}
    for v in videos:                                                      # each video read once
        x = read_window(v, streams, 0, v.num_snippets)
        out[v.video_id] = np.concatenate([held.get(v.video_id, scorer).score(x)
                                          for scorer, held in zip(scorers, fold_of)], axis=1)
    kept = sorted(v.video_id for v in videos if any(v.video_id not in held for held in fold_of))
    return out, kept


def train_detector(feature_dir: str | os.PathLike, annotations: str | os.PathLike | dict,
                   config: DetectorConfig | None = None, train: TrainConfig = TrainConfig(),
                   refactor_checkpoint: str | os.PathLike | None = None, front: str | None = None,
                   progress: bool | None = None, state_path: str | os.PathLike | None = None,
                   on_epoch: Callable[[EpochReport], None] | None = None,
                   inference: InferenceConfig | None = None, best_path: str | os.PathLike | None = None,
                   log_path: str | os.PathLike | None = None,
                   context_checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                   ) -> tuple[Detector, dict]:
    """Train a detector on the feature files of ``train.subset``.

    Args:
        config: architecture (``in_dim``, ``num_classes`` and ``front`` are filled in from the data
            and ``front``).
        refactor_checkpoint: stage-1 RefactorNet checkpoint (front "refactor"; the deep baseline
            copies its configuration when given).
        front: a registered front (:mod:`detect.fronts`: "none" (baseline), "refactor", "context" or
            "deep"); None: ``config.front`` ("none" without a config).
        state_path: training state written atomically after every epoch (model, optimizer,
            history; the random streams derive from the seed and the epoch); if the file exists,
            training resumes from it (and gives the model an uninterrupted run would have). It must
            come from the same data and settings (``epochs`` aside), else :class:`DetectorError`.
        on_epoch: called after every epoch trained here (not those resumed from ``state_path``)
            with an :class:`EpochReport` (its losses and wall time: the public timing hook, e.g.
            for benchmarks); on every rank under torchrun.
        inference: post-processing of the validation (and recorded in ``best_path``; default:
            :class:`InferenceConfig`'s defaults).
        best_path: with ``train.val_subset``, the checkpoint of the best validated epoch, written
            (rank 0, atomically) whenever the average mAP improves.
        log_path: the history as JSON lines (:func:`detect.validation.write_log`), rewritten after
            every epoch (rank 0).
        context_checkpoint: context-score checkpoint (``refactor context``; front "context", required
            there), or a list of them: their scorers are copied into the detector, frozen, so the
            detector's checkpoint is all ``detect run`` needs; f' holds their scores in this order. With
            ``train.context_folds``, training sees cross-fitted scores (:func:`crossfit_front_scores`).

    Returns:
        (model in eval mode, checkpoint metadata for :func:`detect.checkpoint.save_detector`).
    """
    try:
        videos, classes, streams, dim = scan_videos(feature_dir, None, annotations, train.subset,
                                                    require_annotations=True,
                                                    temporal_scale=(config or DetectorConfig()).temporal_scale)
    except DetectDataError as exc:
        raise DetectorError(str(exc)) from exc
    if not any(len(v.segments) for v in videos):
        raise DetectorError(f"no annotated instance in the {len(videos)} training videos")
    sampling = sorted({(v.window, v.stride) for v in videos})
    if len(sampling) > 1:
        raise DetectorError(f"feature files of different snippet sampling (window, stride): {sampling}; "
                            "extract them alike")
    front = front if front is not None else (config.front if config is not None else "none")
    kind = get_front(front)
    ref_model = ref_ckpt = None
    if kind.stage1 and refactor_checkpoint is None:
        raise DetectorError("front 'refactor' needs a stage-1 checkpoint (--refactor CKPT)")
    contexts = [] if context_checkpoint is None else [Path(context_checkpoint)] \
        if isinstance(context_checkpoint, (str, os.PathLike)) else [Path(c) for c in context_checkpoint]
    if kind.context != bool(contexts):
        raise DetectorError("front 'context' needs a context-score checkpoint (--context-score CKPT)" if kind.context
                            else f"a context-score checkpoint is only used by front 'context', not {front!r}")
    if train.context_folds and not kind.context:
        raise DetectorError(f"--context-folds cross-fits the scores of front 'context', not of {front!r}")
    scorers, ctxs = [], []
    for path in contexts:
        try:
            scorer, ctx = load_context(path, in_dim=dim)
        except RefactorError as exc:
            raise DetectorError(str(exc)) from exc
        if tuple(ctx["feature_layout"]["streams"]) != tuple(streams) or list(ctx["classes"]) != list(classes):
            raise DetectorError(f"{path} was trained on {'+'.join(ctx['feature_layout']['streams'])} "
                                f"features of classes {ctx['classes'][:3]}..., these are {'+'.join(streams)} of "
                                f"{list(classes)[:3]}...")
        scorers.append(scorer)
        ctxs.append(ctx)
    if refactor_checkpoint is not None:
        try:
            ref_model, ref_ckpt = load_refactor(refactor_checkpoint, in_dim=dim)
        except RefactorError as exc:
            raise DetectorError(str(exc)) from exc
        if tuple(ref_ckpt["feature_layout"]["streams"]) != tuple(streams):
            raise DetectorError(f"{refactor_checkpoint} was trained on "
                                f"{'+'.join(ref_ckpt['feature_layout']['streams'])} features, "
                                f"these are {'+'.join(streams)}")
    base = config or DetectorConfig()
    cfg_dict = base.to_dict() | {"in_dim": dim, "num_classes": len(classes), "front": front}
    cfg_dict["context_scores"] = [asdict(scorer_config(ctx)) for ctx in ctxs]
    if ref_model is not None:
        cfg_dict["refactor"] = asdict(ref_model.config)
    elif not kind.uses_refactor_config:
        cfg_dict["refactor"] = None
    elif cfg_dict.get("refactor") and cfg_dict["refactor"]["in_dim"] != dim:
        cfg_dict["refactor"] = None
    config = DetectorConfig(**cfg_dict)

    torch.manual_seed(train.seed)                  # model initialisation
    device = torch.device(train.device)
    model = Detector(config)
    encoders_learn = kind.stage1 and config.refactor.stage2_encoders
    if kind.stage1:
        model.front.load_state_dict(ref_model.state_dict())
        if not encoders_learn:
            model.front.freeze_encoders()
    for front_scorer, scorer in zip(model.front if kind.context else (), scorers):
        front_scorer.load_state_dict(scorer.state_dict())      # frozen (detect.fronts.ContextFront)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)

    pairs = None
    if encoders_learn:
        try:
            pairs = build_pairs(feature_dir, annotations, train.subset, SampleConfig(**ref_ckpt["samples"]))
        except RefactorError as exc:
            raise DetectorError(str(exc)) from exc

    given, kept = None, []
    if train.context_folds:
        try:
            given, kept = crossfit_front_scores(feature_dir, annotations, train.subset, videos, streams, scorers,
                                                ctxs, train.context_folds, train.device,
                                                progress=False if rank_and_world()[0] else progress)
        except RefactorError as exc:
            raise DetectorError(f"cross-fitting the context scores: {exc}") from exc

    fingerprint = _fingerprint(config, train, videos, front, refactor_checkpoint, contexts)
    inference = inference or InferenceConfig()
    fps = sorted({v.fps for v in videos})
    attrs = read_features(videos[0].path, rows=slice(0, 0)).attrs      # frame geometry, where recorded
    meta = {"classes": classes,
            "feature_layout": {"streams": list(streams), "dim": dim, "window": videos[0].window,
                               "stride": videos[0].stride, "fps": fps[0] if len(fps) == 1 else None,
                               "short_side": attrs.get("short_side"), "crop": attrs.get("crop")},
            "train": asdict(train), "settings": detector_settings(config, train, inference),
            "subsets": subset_videos(annotations),
            "refactor_checkpoint": None if refactor_checkpoint is None else
            {"path": str(Path(refactor_checkpoint).resolve()), "sha256": sha256_file(refactor_checkpoint)},
            "context_checkpoints": [{"path": str(p.resolve()), "sha256": sha256_file(p)} for p in contexts],
            "num_videos": len(videos),
            "context_folds_kept": kept,
            "num_windows": sum(len(make_windows(v.num_snippets, train.window, train.overlap)) for v in videos)}
    rank, _ = rank_and_world()
    validator = None
    if train.val_subset is not None and rank == 0:
        validator = Validator(feature_dir, annotations, train.val_subset, classes, streams, config.temporal_scale,
                              inference, train.val_tiou, device)

    history: list[dict] = []
    if state_path is not None and Path(state_path).is_file():
        history = load_training_state(state_path, fingerprint, model, opt, device)
        if rank == 0:
            print(f"detect: resuming from {state_path} after epoch {len(history)} of {train.epochs}", file=sys.stderr)

    def after_epoch(hist: list[dict], seconds: float) -> None:
        epoch = hist[-1]["epoch"]
        if validator is not None and (epoch % train.val_every == 0 or epoch == train.epochs):
            hist[-1].update(validator(model))
            if best_path is not None and best_entry(hist) is hist[-1]:
                save_detector(best_path, model, meta | {"history": hist, "best_epoch": epoch},
                              asdict(inference))
        if rank == 0:
            if state_path is not None:
                save_training_state(state_path, fingerprint, model, opt, hist)
            if log_path is not None:
                write_log(log_path, hist)
        if on_epoch is not None:
            losses = {k: v for k, v in hist[-1].items() if k != "epoch" and not k.startswith("val_")}
            on_epoch(EpochReport(epoch=epoch, losses=losses, seconds=seconds))

    history = _fit(model, opt, train, videos, streams, dim, device, pairs, progress, history, after_epoch, given)
    model.eval()
    meta["history"] = history
    best = best_entry(history)
    if best is not None:
        meta["best_epoch"] = best["epoch"]
        meta[VAL_KEY] = best[VAL_KEY]
    return model, meta
