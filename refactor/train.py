"""Stage 1 of RefactorNet: collect samples from feature files and annotations, train the encoders,
write a self-describing checkpoint; and apply a checkpoint to feature files.

Checkpoint (``torch.save`` of a dict, written atomically): ``format_version``, ``config``
(:class:`RefactorConfig` as a dict), ``samples`` (:class:`SampleConfig`), ``train`` (the
:class:`TrainConfig`), ``feature_layout`` (``streams`` and ``dim`` of the features it was trained
on), ``classes``, ``state_dict`` and ``history`` (loss per epoch). :func:`load_refactor` rebuilds the
model from it alone.

Refactored feature files keep the layout of CONVENTIONS.md with two datasets instead of the
streams: ``action`` (T, action_dim) and ``cooccurrence`` (T, cooc_dim) (only ``action`` for the
action-only ablation); :func:`extract.read_features` concatenates them in that order, so a
consumer reads f' exactly as it reads raw features. All attributes are copied, plus ``refactor``
(JSON: checkpoint path and sha256).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from common.checkpoint import load_checkpoint
from common.fileio import atomic_path, sha256_file
from evaluate.data import load_ground_truth
from extract.features import read_features
from refactor.model import RefactorConfig, RefactorLoss, RefactorNet
from refactor.samples import SampleConfig, SampleError, VideoSamples, collect_samples

__all__ = ["TrainConfig", "PairSet", "build_pairs", "train_refactor", "save_checkpoint", "load_refactor",
           "apply_refactor", "RefactorError", "FORMAT_VERSION"]

FORMAT_VERSION = 1


class RefactorError(ValueError):
    """Unusable input for training or applying RefactorNet; the message says why in one line."""


@dataclass
class TrainConfig:
    """Stage-1 optimisation (paper §4.1): Adam, lr 1e-3, 30 epochs."""

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0
    subset: str = "validation"        # THUMOS14 trains on its validation videos
    device: str = "cpu"


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
                samples: SampleConfig = SampleConfig()) -> PairSet:
    """Collect samples from every feature file that has annotations in ``subset``.

    Raises:
        RefactorError: no feature file matches an annotated video, NaN in features, mixed
            feature layouts, or a class without any coupling sample.
    """
    feature_dir = Path(feature_dir)
    files = sorted(feature_dir.glob("*.h5"))
    if not files:
        raise RefactorError(f"no feature files (*.h5) in {feature_dir}")
    gt = load_ground_truth(annotations, subset)
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
            vs = collect_samples(path.stem, ff.features, ff.times, gt.segments[rows], gt.labels[rows], samples)
        except SampleError as exc:
            raise RefactorError(str(exc)) from exc
        videos.append(vs)
        action.append(vs.action_features[vs.pair_action])
        coupling.append(ff.features[vs.pair_snippet])
        sim.append(vs.pair_similarity)
        label.append(vs.action_labels[vs.pair_action])
    label_arr = np.concatenate(label) if label else np.zeros(0, dtype=np.int64)
    present = set(np.concatenate([v.action_labels for v in videos]).tolist())
    missing = [gt.classes[c] for c in sorted(present) if not np.any(label_arr == c)]
    if missing:
        raise RefactorError(f"class {missing[0]!r} has no coupling samples ({len(missing)} such classes); lower "
                            "--threshold or raise --top-k")
    return PairSet(np.concatenate(action).astype(np.float32), np.concatenate(coupling).astype(np.float32),
                   np.concatenate(sim), label_arr, list(gt.classes), tuple(streams), videos)


def train_refactor(pairs: PairSet, config: RefactorConfig | None = None,
                   train: TrainConfig = TrainConfig(), progress: bool | None = None) -> tuple[RefactorNet, list[dict]]:
    """Stage 1: train φA and φC on the pairs with L_R. Returns the model (eval mode) and the
    per-epoch mean losses."""
    dim = pairs.action.shape[1]
    config = config or RefactorConfig(in_dim=dim)
    if config.in_dim != dim:
        raise RefactorError(f"model expects {config.in_dim}-d features, the pairs are {dim}-d")
    torch.manual_seed(train.seed)
    device = torch.device(train.device)
    model = RefactorNet(config).to(device)
    criterion = RefactorLoss(model)
    opt = torch.optim.Adam(model.parameters(), lr=train.lr)
    a = torch.from_numpy(pairs.action).to(device)
    c = torch.from_numpy(pairs.coupling).to(device)
    alpha = torch.from_numpy(pairs.similarity.astype(np.float32)).to(device)
    gen = torch.Generator().manual_seed(train.seed)
    history = []
    bar = tqdm(range(train.epochs), desc="refactor stage 1", unit="epoch",
               disable=(progress is False) or (progress is None and not sys.stderr.isatty()))
    for epoch in bar:
        model.train()
        totals = {"loss": 0.0, "action": 0.0, "cooccurrence": 0.0, "kl": 0.0}
        order = torch.randperm(len(a), generator=gen).to(device)
        for start in range(0, len(a), train.batch_size):
            idx = order[start:start + train.batch_size]
            parts = criterion(a[idx], c[idx], alpha[idx])
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            for k in totals:
                totals[k] += float(parts[k].detach()) * len(idx)
        history.append({k: v / len(a) for k, v in totals.items()} | {"epoch": epoch + 1})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    return model.eval(), history


def save_checkpoint(path: str | os.PathLike, model: RefactorNet, pairs: PairSet, samples: SampleConfig,
                    train: TrainConfig, history: list[dict]) -> Path:
    """Write a self-describing checkpoint atomically."""
    path = Path(path)
    ckpt = {"format_version": FORMAT_VERSION, "config": asdict(model.config), "samples": asdict(samples),
            "train": asdict(train), "feature_layout": {"streams": list(pairs.streams), "dim": int(pairs.action.shape[1])},
            "classes": pairs.classes, "num_pairs": int(len(pairs.similarity)), "history": history,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_refactor(path: str | os.PathLike, in_dim: int | None = None) -> tuple[RefactorNet, dict]:
    """Rebuild a trained RefactorNet (eval mode) from its checkpoint alone.

    Args:
        in_dim: if given, the feature size it will be applied to (checked).
    """
    ckpt = load_checkpoint(path, RefactorError, "RefactorNet checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION or "state_dict" not in ckpt:
        raise RefactorError(f"{path} is not a RefactorNet checkpoint of format {FORMAT_VERSION}")
    try:   # a damaged or hand-edited checkpoint: one clear line, not a multi-line load_state_dict error
        config = RefactorConfig(**ckpt["config"])
        streams = list(ckpt["feature_layout"]["streams"])
        model = RefactorNet(config)
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RefactorError(f"{path} is not a RefactorNet checkpoint of format {FORMAT_VERSION} "
                            f"({type(exc).__name__}: {detail})") from exc
    if in_dim is not None and in_dim != config.in_dim:
        raise RefactorError(f"{path} was trained on {config.in_dim}-d features "
                            f"({'+'.join(streams)}), these are {in_dim}-d")
    return model.eval(), ckpt


@torch.no_grad()
def apply_refactor(checkpoint: str | os.PathLike, feature_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   overwrite: bool = False, progress: bool | None = None) -> list[Path]:
    """Write f' feature files for every ``*.h5`` in ``feature_dir`` (skips existing unless ``overwrite``)."""
    files = sorted(Path(feature_dir).glob("*.h5"))
    if not files:
        raise RefactorError(f"no feature files (*.h5) in {feature_dir}")
    model, ckpt = load_refactor(checkpoint)
    streams = tuple(ckpt["feature_layout"]["streams"])
    record = json.dumps({"checkpoint": str(Path(checkpoint).resolve()), "sha256": sha256_file(checkpoint)})
    out_dir = Path(out_dir)
    written = []
    for path in tqdm(files, desc="refactor apply", unit="video",
                     disable=(progress is False) or (progress is None and not sys.stderr.isatty())):
        dest = out_dir / path.name
        if dest.exists() and not overwrite:
            continue
        ff = read_features(path, streams)
        if ff.features.shape[1] != model.config.in_dim:
            raise RefactorError(f"{path.name}: {ff.features.shape[1]}-d features, the checkpoint expects {model.config.in_dim}")
        if not np.all(np.isfinite(ff.features)):
            raise RefactorError(f"{path.name}: features contain NaN or inf")
        out = model(torch.from_numpy(ff.features).T[None])
        with atomic_path(dest) as tmp, h5py.File(tmp, "w") as h5:
            h5.create_dataset("action", data=out.action[0].T.numpy().astype(np.float32))
            if not model.config.action_only:
                h5.create_dataset("cooccurrence", data=out.cooccurrence[0].T.numpy().astype(np.float32))
            attrs = dict(ff.attrs)
            attrs["weights"] = json.dumps(attrs.get("weights", {}), sort_keys=True)
            h5.attrs.update({**attrs, "refactor": record})
        written.append(dest)
    return written
