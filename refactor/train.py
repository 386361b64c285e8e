"""Stage 1 of RefactorNet: train the encoders on a :class:`~refactor.pairs.PairSet`, and the
checkpoint that holds the result.

Checkpoint (:mod:`common.checkpoint`: ``torch.save`` of a dict, written atomically), kind
``"refactor"``, ``format_version`` 1: ``config`` (:class:`RefactorConfig` as a dict), ``samples``
(:class:`SampleConfig`), ``train`` (the :class:`TrainConfig`), ``feature_layout`` (``streams`` and
``dim`` of the features it was trained on), ``classes``, ``num_pairs``, ``state_dict`` and
``history`` (loss per epoch). :func:`load_refactor` rebuilds the model from it alone. Checkpoints
written before kinds existed (the same entries without ``kind``) load as well.

``PairSet``, ``build_pairs`` and ``RefactorError`` are importable from here too (their homes are
:mod:`refactor.pairs` and :mod:`refactor.errors`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.checkpoint import load_checkpoint
from common.checkpoint import save_checkpoint as write_checkpoint
from refactor.errors import RefactorError
from refactor.model import RefactorConfig, RefactorLoss, RefactorNet
from refactor.pairs import PairSet, build_pairs
from refactor.samples import SampleConfig

__all__ = ["TrainConfig", "train_refactor", "save_checkpoint", "load_refactor", "FORMAT_VERSION", "CHECKPOINT_KIND",
           "PairSet", "build_pairs", "RefactorError"]

FORMAT_VERSION = 1
CHECKPOINT_KIND = "refactor"


@dataclass
class TrainConfig:
    """Stage-1 optimisation (paper §4.1): Adam, lr 1e-3, 30 epochs."""

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0
    subset: str = "validation"        # THUMOS14 trains on its validation videos
    device: str = "cpu"


def train_refactor(pairs: PairSet, config: RefactorConfig | None = None,
                   train: TrainConfig = TrainConfig(), progress: bool | None = None) -> tuple[RefactorNet, list[dict]]:
    """Stage 1: train φA and φC on the pairs with L_R. Returns the model (eval mode) and the
    per-epoch mean losses (dicts with ``loss``, ``action``, ``cooccurrence``, ``kl``, ``epoch``)."""
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
    """Write a self-describing checkpoint (kind ``"refactor"``) atomically."""
    payload = {"config": asdict(model.config), "samples": asdict(samples), "train": asdict(train),
               "feature_layout": {"streams": list(pairs.streams), "dim": int(pairs.action.shape[1])},
               "classes": pairs.classes, "num_pairs": int(len(pairs.similarity)), "history": history,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    return write_checkpoint(path, CHECKPOINT_KIND, FORMAT_VERSION, payload)


def load_refactor(path: str | os.PathLike, in_dim: int | None = None) -> tuple[RefactorNet, dict]:
    """Rebuild a trained RefactorNet (eval mode) from its checkpoint alone.

    Args:
        in_dim: if given, the feature size it will be applied to (checked).

    Returns:
        (model, checkpoint dict).
    """
    what = "RefactorNet checkpoint"
    ckpt = load_checkpoint(path, RefactorError, what, kind=CHECKPOINT_KIND, format_version=FORMAT_VERSION,
                           legacy_kindless=True)
    if "state_dict" not in ckpt:
        raise RefactorError(f"{path} is not a {what} of format {FORMAT_VERSION} (no state_dict)")
    try:   # a damaged or hand-edited checkpoint: one clear line, not a multi-line load_state_dict error
        config = RefactorConfig(**ckpt["config"])
        streams = list(ckpt["feature_layout"]["streams"])
        model = RefactorNet(config)
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RefactorError(f"{path} is not a {what} of format {FORMAT_VERSION} "
                            f"({type(exc).__name__}: {detail})") from exc
    if in_dim is not None and in_dim != config.in_dim:
        raise RefactorError(f"{path} was trained on {config.in_dim}-d features "
                            f"({'+'.join(streams)}), these are {in_dim}-d")
    return model.eval(), ckpt
