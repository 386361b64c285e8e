"""Training the detector (RefactorNet stage 2, or a baseline) and its self-describing checkpoints.

One step on a batch of windows:

1. ``model.encode``: f' and the boundary logits; ``L_P = L_bl^s + γ L_bl^e + λ_a L_bl^a`` against
   BSN's boundary targets (γ = 1; the actionness term is BSN's, λ_a = 1, 0 gives the paper's
   ``L_P`` literally).
2. Proposals for the heads, per window: the model's own current proposals (no gradient; what the
   heads will see at inference), ground-truth instances with small random shifts and rescalings,
   and random segments; labelled by SSN's rules (:func:`detect.labels.assign_proposals`) and
   sampled foreground : incomplete : background = 1 : 6 : 1 (SSN).
3. ``L_D = L_cls + λ1 L_com + λ2 L_reg`` (λ1 = λ2 = 0.5): cross-entropy over K + 1 classes on
   foreground and background proposals; hinge loss ``max(0, 1 - y s)`` on the completeness score of
   the instance's class, y = +1 for foreground and -1 for incomplete proposals; smooth-L1 on the
   regression targets of foreground proposals. Where one segment is annotated with several classes
   (THUMOS14's every CliffDiving instance is also a Diving instance) the classification target is
   uniform over them and the completeness hinge applies to each, so both classes are detected.
4. With RefactorNet in front (``--refactor CKPT``), ``L_R`` on a batch of its (action, coupling)
   pairs, collected from the same training videos with the stage-1 checkpoint's sample settings;
   the step minimises ``L_R + L_P + L_D`` end to end.

Checkpoint (``torch.save`` of a dict, written atomically): ``format_version``, ``kind`` =
"detector", ``config`` (:class:`DetectorConfig`), ``train`` (:class:`TrainConfig`),
``inference`` (:class:`detect.infer.InferenceConfig` defaults), ``classes``, ``feature_layout``
(streams, dim, window, stride, fps), ``subsets`` (video ids per subset of the annotations, so
``detect run --subset test`` needs nothing else), ``refactor_checkpoint`` (path and sha256),
``history`` and ``state_dict``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from common.checkpoint import load_checkpoint
from common.fileio import atomic_path, sha256_file
from detect.data import DetectDataError, VideoRecord, make_windows, read_window, scan_videos
from detect.labels import (BACKGROUND, FOREGROUND, INCOMPLETE, assign_proposals, balanced_bce, boundary_targets,
                           encode_regression)
from detect.model import Detector, DetectorConfig
from detect.proposals import generate_proposals
from evaluate.data import read_json
from refactor.model import RefactorLoss

__all__ = ["TrainConfig", "train_detector", "detector_losses", "sample_head_proposals", "save_detector",
           "load_detector", "DetectorError", "FORMAT_VERSION"]

FORMAT_VERSION = 1


class DetectorError(ValueError):
    """Unusable input for training or running the detector; the message says why in one line."""


@dataclass
class TrainConfig:
    """Optimisation and sampling (paper §4.1: Adam, lr 1e-3; 20 epochs).

    Attributes:
        window, overlap: training windows (snippets) and their overlap.
        batch_size: windows per step.
        gamma: weight of the end-boundary loss; actionness_weight: BSN's actionness term.
        lambda_com, lambda_reg: weights in L_D.
        proposals_per_window: head samples per window, split by ``ratio`` (fg : incomplete : bg).
        jitter_per_instance, random_per_window, model_proposals: candidate pool per window.
        pair_batch: RefactorNet (action, coupling) pairs per step (stage 2 only).
    """

    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    window: int = 256
    overlap: float = 0.5
    seed: int = 0
    subset: str = "validation"
    device: str = "cpu"
    gamma: float = 1.0
    actionness_weight: float = 1.0
    lambda_com: float = 0.5
    lambda_reg: float = 0.5
    proposals_per_window: int = 32
    ratio: tuple[int, int, int] = (1, 6, 1)
    jitter_per_instance: int = 4
    random_per_window: int = 64
    model_proposals: int = 200
    pair_batch: int = 256

    def __post_init__(self) -> None:
        self.ratio = tuple(int(r) for r in self.ratio)
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.window < 2:
            raise ValueError(f"bad training configuration: {self}")


@dataclass
class HeadSamples:
    """Proposals sampled for the heads in one batch.

    Attributes:
        rois (ndarray[P, 3]): (window index, start, end), snippet-index coordinates of the window.
        kind (ndarray[P]): FOREGROUND / INCOMPLETE / BACKGROUND.
        label (ndarray[P]): class index (0-based), -1 for background.
        target (ndarray[P, 2]): matched instance (foreground, incomplete), NaN for background.
        classes (ndarray[P, K] bool | None): every class annotated on the matched instance's exact
            segment (THUMOS14 annotates each CliffDiving instance a second time as Diving); None:
            just ``label``.
    """

    rois: np.ndarray
    kind: np.ndarray
    label: np.ndarray
    target: np.ndarray
    classes: np.ndarray | None = None

    def class_sets(self, num_classes: int) -> np.ndarray:
        """ndarray[P, K] bool: the classes of each row (``classes``, or one-hot ``label``)."""
        if self.classes is not None:
            return self.classes
        out = np.zeros((len(self.label), num_classes), dtype=bool)
        rows = np.flatnonzero(self.label >= 0)
        out[rows, self.label[rows]] = True
        return out


def _jitter(segments: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random shifts (±10% of the duration) and rescalings (x e^±0.2) of each segment."""
    if len(segments) == 0 or n == 0:
        return np.zeros((0, 2))
    seg = np.repeat(segments, n, axis=0)
    c, d = seg.mean(axis=1), seg[:, 1] - seg[:, 0]
    c = c + rng.uniform(-0.1, 0.1, len(seg)) * d
    d = d * np.exp(rng.uniform(-0.2, 0.2, len(seg)))
    return np.stack([c - d / 2, c + d / 2], axis=1)


def sample_head_proposals(model_props: list[np.ndarray], gts: list[tuple[np.ndarray, np.ndarray]],
                          lengths: list[int], cfg: TrainConfig, max_duration: int,
                          rng: np.random.Generator, num_classes: int | None = None) -> HeadSamples:
    """Candidate pool per window (model proposals, jittered ground truth, the ground truth itself,
    random segments), clipped to the window, labelled by SSN's rules and sampled 1 : 6 : 1.

    Args:
        model_props: per window, (P_w, 2) proposals from the current boundary probabilities.
        gts: per window, (segments (G, 2) in window coordinates, labels (G,)).
        lengths: valid snippets per window.
        num_classes: K; given, ``classes`` lists every label annotated on a row's matched segment.
    """
    total = sum(cfg.ratio)
    quota = {FOREGROUND: cfg.proposals_per_window * cfg.ratio[0] // total,
             INCOMPLETE: cfg.proposals_per_window * cfg.ratio[1] // total,
             BACKGROUND: cfg.proposals_per_window * cfg.ratio[2] // total}
    rois, kinds, labels, targets, sets = [], [], [], [], []
    for w, (props, (segs, labs), n) in enumerate(zip(model_props, gts, lengths)):
        hi = max(n - 1, 1)
        starts = rng.uniform(0, hi, cfg.random_per_window)
        durs = np.exp(rng.uniform(0, np.log(max(max_duration, 1) + 1), cfg.random_per_window)) - 1 + 1e-3
        rand = np.stack([starts, starts + durs], axis=1)
        cand = np.concatenate([props.reshape(-1, 2).astype(np.float64), segs, _jitter(segs, cfg.jitter_per_instance, rng), rand])
        cand = np.clip(cand, 0, hi)
        cand = cand[cand[:, 1] - cand[:, 0] > 1e-3]
        a = assign_proposals(cand, segs, labs, num_classes=num_classes)
        for kind, q in quota.items():
            idx = np.flatnonzero(a.kind == kind)
            if len(idx) > q:
                idx = rng.choice(idx, q, replace=False)
            rois.append(np.concatenate([np.full((len(idx), 1), w, dtype=np.float64), cand[idx]], axis=1))
            kinds.append(np.full(len(idx), kind))
            labels.append(a.label[idx])
            targets.append(a.segment[idx])
            if num_classes is not None:
                sets.append(a.classes[idx])
    return HeadSamples(np.concatenate(rois).reshape(-1, 3), np.concatenate(kinds), np.concatenate(labels),
                       np.concatenate(targets).reshape(-1, 2),
                       np.concatenate(sets) if num_classes is not None else None)


def detector_losses(enc, heads, samples: HeadSamples, boundary: torch.Tensor, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """L_P and L_D of one batch.

    Args:
        enc (Encoded), heads (HeadOutput): the model's outputs (heads on ``samples.rois``).
        boundary (Tensor[B, 3, T]): BSN targets (actionness, start, end) of the windows.

    Returns:
        dict of scalars: ``proposal`` (L_P), ``detection`` (L_D) and their parts ``start``,
        ``end``, ``actionness``, ``cls``, ``com``, ``reg``.
    """
    logits = enc.boundary_logits
    t = logits.shape[-1]
    mask = torch.arange(t, device=logits.device)[None, :] < enc.lengths[:, None]
    parts = {"actionness": balanced_bce(logits[:, 0], boundary[:, 0], mask),
             "start": balanced_bce(logits[:, 1], boundary[:, 1], mask),
             "end": balanced_bce(logits[:, 2], boundary[:, 2], mask)}
    parts["proposal"] = parts["start"] + cfg.gamma * parts["end"] + cfg.actionness_weight * parts["actionness"]
    dev = logits.device
    kind = torch.as_tensor(samples.kind, device=dev)
    zero = logits.new_zeros(())
    k = heads.completeness.shape[1]
    sets = torch.as_tensor(samples.class_sets(k), device=dev)                     # (P, K) bool
    cls_rows = (kind == FOREGROUND) | (kind == BACKGROUND)
    if cls_rows.any():
        # target distribution over K + 1: background, or uniform over the instance's classes
        target = torch.cat([(kind == BACKGROUND)[:, None], sets & (kind == FOREGROUND)[:, None]], dim=1)[cls_rows]
        target = target.to(heads.class_logits.dtype)
        parts["cls"] = F.cross_entropy(heads.class_logits[cls_rows], target / target.sum(dim=1, keepdim=True))
    else:
        parts["cls"] = zero
    com_rows = (kind == FOREGROUND) | (kind == INCOMPLETE)
    if com_rows.any():
        y = torch.where(kind[com_rows] == FOREGROUND, 1.0, -1.0).to(heads.completeness.dtype)[:, None]
        hinge = torch.clamp(1 - y * heads.completeness[com_rows], min=0)              # (P', K)
        mask = sets[com_rows]
        parts["com"] = (hinge * mask).sum() / mask.sum().clamp(min=1)
    else:
        parts["com"] = zero
    fg = kind == FOREGROUND
    if fg.any():
        rois = torch.as_tensor(samples.rois, dtype=logits.dtype, device=dev)[fg, 1:]
        target = encode_regression(rois, torch.as_tensor(samples.target, dtype=logits.dtype, device=dev)[fg])
        parts["reg"] = F.smooth_l1_loss(heads.regression[fg], target)
    else:
        parts["reg"] = zero
    parts["detection"] = parts["cls"] + cfg.lambda_com * parts["com"] + cfg.lambda_reg * parts["reg"]
    return parts


@dataclass
class _Window:
    video: VideoRecord
    start: int
    stop: int


def _batch(windows: list[_Window], streams: tuple[str, ...], dim: int, length: int):
    x = np.zeros((len(windows), length, dim), dtype=np.float32)
    lengths, gts, targets = [], [], np.zeros((len(windows), 3, length), dtype=np.float32)
    for i, w in enumerate(windows):
        n = w.stop - w.start
        x[i, :n] = read_window(w.video, streams, w.start, w.stop)
        segs = w.video.segments_index - w.start
        keep = (segs[:, 1] > -0.5) & (segs[:, 0] < n - 0.5)          # instances that touch the window
        gts.append((segs[keep], w.video.labels[keep]))
        targets[i, :, :n] = boundary_targets(segs[keep], n)
        lengths.append(n)
    return x, lengths, gts, targets


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed job, (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_gradients(model: nn.Module, world: int) -> None:
    """All-reduce the gradients of every rank into their mean (one collective for all of them)."""
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _epoch_seeds(seed: int, epoch: int, rank: int) -> tuple[np.random.Generator, np.random.Generator, int]:
    """Per-epoch random streams, derived from (seed, epoch[, rank]) alone so that a resumed run
    continues exactly: the window order (shared by all ranks), the proposal / pair sampling of this
    rank, and a torch seed (dropout, RefactorNet's reparameterization) for this rank."""
    order = np.random.default_rng([seed, epoch])
    sampling = np.random.default_rng([seed, epoch, rank, 1])
    torch_seed = int(np.random.default_rng([seed, epoch, rank, 2]).integers(2**62))
    return order, sampling, torch_seed


def _fit(model: Detector, opt: torch.optim.Optimizer, train: TrainConfig, videos: list[VideoRecord],
         streams: tuple[str, ...], dim: int, device: torch.device, pairs, progress: bool | None,
         history: list[dict] | None = None, on_epoch: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """The epochs of :func:`train_detector` after those already in ``history``; ``on_epoch`` is
    called after each with the history so far. Returns the mean losses per epoch.

    Under torch.distributed (torchrun), each step every rank takes its own ``batch_size`` windows of
    the shared epoch order (the order is padded by wrapping around so all ranks take the same number
    of steps), and the gradients are averaged over the ranks before the update, so every rank holds
    the same model; the reported losses are the means over the ranks.
    """
    config = model.config
    rank, world = _distributed()
    if pairs is not None:
        pair_a = torch.from_numpy(pairs.action).to(device)
        pair_c = torch.from_numpy(pairs.coupling).to(device)
        pair_w = torch.from_numpy(pairs.similarity.astype(np.float32)).to(device)
        ref_loss = RefactorLoss(model.front)
    windows = [_Window(v, s, e) for v in videos for s, e in make_windows(v.num_snippets, train.window, train.overlap)]
    history = list(history or [])
    show = rank == 0 and not ((progress is False) or (progress is None and not sys.stderr.isatty()))
    bar = tqdm(range(len(history), train.epochs), desc="detector", unit="epoch", disable=not show,
               initial=len(history), total=train.epochs)
    per_step = train.batch_size * world
    steps = -(-len(windows) // per_step)
    for epoch in bar:
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
            x, lengths, gts, targets = _batch(batch, streams, dim, length)
            x_t = torch.from_numpy(x).to(device).transpose(1, 2)
            len_t = torch.as_tensor(lengths, device=device)
            enc = model.encode(x_t, len_t)
            with torch.no_grad():
                prob = torch.sigmoid(enc.boundary_logits).float().cpu().numpy()
            props = [generate_proposals(prob[i, 1, :n], prob[i, 2, :n], config.max_duration, train.model_proposals,
                                        config.candidate_ratio)[0] for i, n in enumerate(lengths)]
            samples = sample_head_proposals(props, gts, lengths, train, config.max_duration, rng, config.num_classes)
            heads = model.heads(enc, torch.as_tensor(samples.rois, dtype=x_t.dtype, device=device))
            parts = detector_losses(enc, heads, samples, torch.from_numpy(targets).to(device), train)
            loss = parts["proposal"] + parts["detection"]
            if pairs is not None:
                idx = torch.as_tensor(rng.integers(len(pair_a), size=min(train.pair_batch, len(pair_a))), device=device)
                r = ref_loss(pair_a[idx], pair_c[idx], pair_w[idx])
                parts["refactor"] = r["loss"]
                loss = loss + r["loss"]
            parts["loss"] = loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                _average_gradients(model, world)
            opt.step()
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
        means = {k: v / max(steps, 1) for k, v in totals.items()}
        if world > 1:
            import torch.distributed as dist

            keys = sorted(means)
            packed = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=device)
            dist.all_reduce(packed)
            means = dict(zip(keys, (packed / world).tolist()))
        history.append(means | {"epoch": epoch + 1})
        bar.set_postfix(loss=f"{history[-1].get('loss', 0.0):.4f}")
        if on_epoch is not None:
            on_epoch(history)
    if world > 1:
        _check_replicas(model, device)
    return history


def _check_replicas(model: nn.Module, device: torch.device) -> None:
    """Every rank must end with the same weights (they apply the same averaged updates)."""
    import torch.distributed as dist

    with torch.no_grad():
        mine = torch.stack([p.double().sum() for p in model.parameters()]).to(device)
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError("distributed training: the ranks' weights diverged")


def train_detector(feature_dir: str | os.PathLike, annotations: str | os.PathLike | dict, config: DetectorConfig | None = None,
                   train: TrainConfig = TrainConfig(), refactor_checkpoint: str | os.PathLike | None = None,
                   front: str = "none", progress: bool | None = None,
                   state_path: str | os.PathLike | None = None) -> tuple[Detector, dict]:
    """Train a detector on the feature files of ``train.subset``.

    Args:
        config: architecture (``in_dim``, ``num_classes`` and ``front`` are filled in from the data
            and ``front``).
        refactor_checkpoint: stage-1 RefactorNet checkpoint (front "refactor"; the deep baseline
            copies its configuration when given).
        front: "none" (baseline), "refactor" or "deep".
        state_path: training state written atomically after every epoch (model, optimizer,
            history; the random streams derive from the seed and the epoch); if the file exists,
            training resumes from it (and gives the model an uninterrupted run would have). It must come from the same data and settings
            (``epochs`` aside), else :class:`DetectorError`.

    Returns:
        (model in eval mode, checkpoint metadata for :func:`save_detector`).
    """
    from refactor.samples import SampleConfig
    from refactor.train import RefactorError, build_pairs, load_refactor

    try:
        videos, classes, streams, dim = scan_videos(feature_dir, None, annotations, train.subset, require_annotations=True,
                                                    temporal_scale=(config or DetectorConfig()).temporal_scale)
    except DetectDataError as exc:
        raise DetectorError(str(exc)) from exc
    if not any(len(v.segments) for v in videos):
        raise DetectorError(f"no annotated instance in the {len(videos)} training videos")
    sampling = sorted({(v.window, v.stride) for v in videos})
    if len(sampling) > 1:
        raise DetectorError(f"feature files of different snippet sampling (window, stride): {sampling}; extract them alike")
    ref_model = ref_ckpt = None
    if front == "refactor" and refactor_checkpoint is None:
        raise DetectorError("front 'refactor' needs a stage-1 checkpoint (--refactor CKPT)")
    if refactor_checkpoint is not None:
        try:
            ref_model, ref_ckpt = load_refactor(refactor_checkpoint, in_dim=dim)
        except RefactorError as exc:
            raise DetectorError(str(exc)) from exc
        if tuple(ref_ckpt["feature_layout"]["streams"]) != tuple(streams):
            raise DetectorError(f"{refactor_checkpoint} was trained on {'+'.join(ref_ckpt['feature_layout']['streams'])} "
                                f"features, these are {'+'.join(streams)}")
    base = config or DetectorConfig()
    cfg_dict = base.to_dict() | {"in_dim": dim, "num_classes": len(classes), "front": front}
    if ref_model is not None:
        cfg_dict["refactor"] = asdict(ref_model.config)
    elif front == "none":
        cfg_dict["refactor"] = None
    elif cfg_dict.get("refactor") and cfg_dict["refactor"]["in_dim"] != dim:
        cfg_dict["refactor"] = None
    config = DetectorConfig(**cfg_dict)

    torch.manual_seed(train.seed)                  # model initialisation
    device = torch.device(train.device)
    model = Detector(config)
    if front == "refactor":
        model.front.load_state_dict(ref_model.state_dict())
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)

    pairs = None
    if front == "refactor":
        try:
            pairs = build_pairs(feature_dir, annotations, train.subset, SampleConfig(**ref_ckpt["samples"]))
        except RefactorError as exc:
            raise DetectorError(str(exc)) from exc

    fingerprint = _fingerprint(config, train, videos, front, refactor_checkpoint)
    history: list[dict] = []
    if state_path is not None and Path(state_path).is_file():
        history = _load_state(state_path, fingerprint, model, opt, device)
    rank, _ = _distributed()

    def save_state(hist: list[dict]) -> None:
        if state_path is not None and rank == 0:
            _save_state(state_path, fingerprint, model, opt, hist)

    history = _fit(model, opt, train, videos, streams, dim, device, pairs, progress, history, save_state)
    model.eval()

    fps = sorted({v.fps for v in videos})
    meta = {"classes": classes,
            "feature_layout": {"streams": list(streams), "dim": dim, "window": videos[0].window,
                               "stride": videos[0].stride, "fps": fps[0] if len(fps) == 1 else None},
            "train": asdict(train), "history": history,
            "subsets": _subsets(annotations),
            "refactor_checkpoint": None if refactor_checkpoint is None else
            {"path": str(Path(refactor_checkpoint).resolve()), "sha256": sha256_file(refactor_checkpoint)},
            "num_videos": len(videos),
            "num_windows": sum(len(make_windows(v.num_snippets, train.window, train.overlap)) for v in videos)}
    return model, meta


STATE_VERSION = 1


def _fingerprint(config: DetectorConfig, train: TrainConfig, videos: list[VideoRecord], front: str,
                 refactor_checkpoint) -> dict:
    """What a resumed run must share with the interrupted one (everything but the epoch count)."""
    return {"config": config.to_dict(), "train": asdict(train) | {"epochs": None, "device": None}, "front": front,
            "videos": [[v.video_id, v.num_snippets, len(v.segments)] for v in videos],
            "refactor": None if refactor_checkpoint is None else sha256_file(refactor_checkpoint)}


def _save_state(path, fingerprint: dict, model: Detector, opt: torch.optim.Optimizer, history: list[dict]) -> None:
    """Everything a resumed run needs (the random streams derive from the seed and the epoch)."""
    state = {"format_version": STATE_VERSION, "kind": "detector-training-state", "fingerprint": fingerprint,
             "history": history, "model": model.state_dict(), "optimizer": opt.state_dict()}
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def _load_state(path, fingerprint: dict, model: Detector, opt: torch.optim.Optimizer, device: torch.device) -> list[dict]:
    state = load_checkpoint(path, DetectorError, "detector training state (delete it to start over)", device)
    if state.get("kind") != "detector-training-state" or state.get("format_version") != STATE_VERSION:
        raise DetectorError(f"{path} is not a detector training state; delete it to start over")
    if json.loads(json.dumps(state.get("fingerprint"))) != json.loads(json.dumps(fingerprint)):
        raise DetectorError(f"{path} was written by a run with other data or settings; delete it to start over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return list(state["history"])


def _subsets(annotations) -> dict[str, list[str]]:
    data = read_json(annotations, "ground truth")
    database = data.get("database", data)
    out: dict[str, list[str]] = {}
    for vid, entry in database.items():
        if isinstance(entry, dict) and "subset" in entry:
            out.setdefault(str(entry["subset"]), []).append(vid)
    return out


def save_detector(path: str | os.PathLike, model: Detector, meta: dict, inference: dict | None = None) -> Path:
    """Write a self-describing checkpoint atomically (see the module docstring)."""
    from detect.infer import InferenceConfig

    path = Path(path)
    ckpt = {"format_version": FORMAT_VERSION, "kind": "detector", "config": model.config.to_dict(),
            "inference": inference or asdict(InferenceConfig()), **meta,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Detector, dict]:
    """Rebuild a trained detector (eval mode) from its checkpoint alone."""
    ckpt = load_checkpoint(path, DetectorError, "detector checkpoint")
    if ckpt.get("kind") != "detector" or ckpt.get("format_version") != FORMAT_VERSION:
        raise DetectorError(f"{path} is not a detector checkpoint of format {FORMAT_VERSION}")
    try:
        model = Detector(DetectorConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DetectorError(f"{path} is not a detector checkpoint of format {FORMAT_VERSION} "
                            f"({type(exc).__name__}: {detail})") from exc
    return model.to(device).eval(), ckpt
