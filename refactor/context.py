"""The context score: a supervised co-occurrence component, φC(f) = p(context | f), and its checkpoint.

RefactorNet learns φC without labels for it and, on most of the project's feature worlds, it collapses
or loses information (README, "When does refactoring help?"). The context score keeps f whole and puts
beside it, per class k, the probability that the snippet looks like class k's *context*:

    f' = f ⊕ p(f),   p(f) = softmax(W (f - μ) / σ + b)[:K]          f: C channels, p: K channels

W, b (K + 1 outputs: each class's context, and "none") are a multinomial logistic regression learnt
from the same samples as RefactorNet stage 1 (paper §3.3):

* class k: the coupling samples of class k's action samples (non-action snippets similar to them);
* "none": the training snippets outside every action sample and coupling sample whose cosine to each
  of their video's action samples is below ``far`` (:attr:`ContextConfig.far`, half the coupling
  rule's threshold): snippets far from any action. The cosine is taken after subtracting the mean of
  all training snippets: I3D's features are non-negative (post-ReLU), so their raw cosines are all
  high and no snippet would be "far";

classes weighted to balance, L2 weight decay, full-batch L-BFGS on features standardised with the
training samples' mean μ and standard deviation σ. The detector then sees f' (front ``context``,
``detect train --context-score CKPT``), with the scorer frozen inside it.

Checkpoint (:mod:`common.checkpoint`), kind ``"context"``, :data:`FORMAT_VERSION` 1: ``in_dim``,
``classes``, ``config`` (:class:`ContextConfig`), ``samples`` (the :class:`SampleConfig` of the
coupling rule), ``feature_layout`` (``streams``, ``dim``), ``counts`` (training samples per output:
the K contexts, then "none"), ``final_loss`` and ``state_dict``; :func:`load_context` rebuilds the
scorer from it alone.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from common.checkpoint import load_checkpoint, rebuild_model
from common.checkpoint import save_checkpoint as write_checkpoint
from extract.features import read_features
from refactor.errors import RefactorError
from refactor.pairs import PairSet
from refactor.samples import SampleConfig, _cosine

__all__ = ["ContextConfig", "ContextScorer", "far_snippets", "snippet_mean", "train_context", "save_context",
           "load_context", "CONTEXT_KIND", "FORMAT_VERSION"]

CONTEXT_KIND = "context"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ContextConfig:
    """How the context score is learnt (every default was fixed before the study's runs; README).

    Attributes:
        far: "none" samples: snippets whose cosine to every action sample of their video is below this.
        weight_decay: L2 penalty on the weights (sum of squares, not averaged).
        max_iter: L-BFGS iterations (one full-batch step).
        max_negatives: at most this many "none" samples, drawn uniformly with ``seed`` (none or 0: all).
        seed: seed of the initialisation and of the draw.
        device: cpu, cuda, cuda:N.
    """

    far: float = 0.25
    weight_decay: float = 1e-3
    max_iter: int = 200
    max_negatives: int | None = field(default=200_000, metadata={"none_at": 0})
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not -1.0 <= self.far <= 1.0:
            raise ValueError(f"far must be a cosine in [-1, 1], got {self.far}")
        if self.weight_decay < 0 or self.max_iter < 1:
            raise ValueError(f"weight_decay must be >= 0 and max_iter >= 1, got {self.weight_decay}, {self.max_iter}")
        if self.max_negatives is not None and self.max_negatives < 1:
            raise ValueError(f"max_negatives must be >= 1 or none, got {self.max_negatives}")


class ContextScorer(nn.Module):
    """p(f): per snippet, the probabilities of the K classes' contexts.

    Args:
        in_dim: C, the feature size.
        num_classes: K (the linear layer has K + 1 outputs; the last is "none").
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        if in_dim < 1 or num_classes < 1:
            raise ValueError(f"in_dim and num_classes must be >= 1, got {in_dim}, {num_classes}")
        self.in_dim, self.num_classes = in_dim, num_classes
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.linear = nn.Linear(in_dim, num_classes + 1)

    def logits(self, f: Tensor) -> Tensor:
        """f (Tensor[N, C]) -> (Tensor[N, K + 1]) logits, the last one "none"."""
        return self.linear((f - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[B, C, T]) snippet features -> (Tensor[B, K, T]) context probabilities, each in [0, 1],
        their sum over K at most 1 (the rest is "none")."""
        b, c, t = x.shape
        p = torch.softmax(self.logits(x.transpose(1, 2).reshape(b * t, c)), dim=1)[:, :self.num_classes]
        return p.reshape(b, t, self.num_classes).transpose(1, 2)


def far_snippets(features: np.ndarray, action_features: np.ndarray, taken: np.ndarray, far: float,
                 mean: np.ndarray | float = 0.0) -> np.ndarray:
    """Indices of the snippets of one video that are neither ``taken`` (in an action or coupling sample)
    nor as close as ``far`` (cosine of the centred features) to any of the video's action samples.

    Args:
        features (ndarray[T, C]): the video's snippet features.
        action_features (ndarray[A, C]): its action samples (A may be 0: then only ``taken`` counts).
        taken (ndarray[T] bool): snippets in an action sample or a coupling sample.
        far: cosine threshold.
        mean (ndarray[C] or a scalar): subtracted from both sides before the cosine.
    """
    if len(action_features) == 0:
        return np.flatnonzero(~taken)
    z = np.asarray(features, dtype=np.float64) - mean
    a = np.asarray(action_features, dtype=np.float64) - mean
    closest = _cosine(z, a).max(axis=1)
    return np.flatnonzero(~taken & (closest < far))


def snippet_mean(paths: list[Path]) -> np.ndarray:
    """Mean (ndarray[C], float64) of every snippet of the feature files ``paths``."""
    total, count = None, 0
    for path in paths:
        f = read_features(path).features.astype(np.float64)
        total = f.sum(0) if total is None else total + f.sum(0)
        count += len(f)
    return total / count


def train_context(pairs: PairSet, feature_dir: str | os.PathLike,
                  config: ContextConfig = ContextConfig()) -> tuple[ContextScorer, dict]:
    """Learn the context score from a training set's pairs (its "none" samples are read from the videos'
    feature files in ``feature_dir``).

    Returns:
        (scorer in eval mode on the CPU, info: ``counts`` per output (K contexts, then "none"), ``final_loss``).

    Raises:
        RefactorError: a video's feature file is missing, or no snippet is far from every action (no "none"
            samples).
    """
    feature_dir = Path(feature_dir)
    k = len(pairs.classes)
    paths = [feature_dir / f"{vs.video_id}.h5" for vs in pairs.videos]
    for vs, path in zip(pairs.videos, paths):
        if not path.is_file():
            raise RefactorError(f"no feature file {path} for the samples of video {vs.video_id!r}")
    centre = snippet_mean(paths)
    negatives = []
    for vs, path in zip(pairs.videos, paths):
        f = read_features(path).features.astype(np.float64)
        taken = np.zeros(len(f), dtype=bool)
        for idx in vs.action_snippets:
            taken[idx] = True
        taken[vs.pair_snippet] = True
        negatives.append(f[far_snippets(f, vs.action_features, taken, config.far, centre)])
    neg = np.concatenate(negatives) if negatives else np.zeros((0, pairs.coupling.shape[1]))
    if len(neg) == 0:
        raise RefactorError(f"no training snippet is far from every action (cosine < {config.far}): the context score "
                            "has no 'none' samples")
    if config.max_negatives is not None and len(neg) > config.max_negatives:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(neg), config.max_negatives, replace=False))
        neg = neg[keep]
    x = np.concatenate([pairs.coupling.astype(np.float64), neg])
    y = np.concatenate([pairs.label.astype(np.int64), np.full(len(neg), k)])
    mean, std = x.mean(0), x.std(0) + 1e-6
    device = torch.device(config.device)
    xt = torch.from_numpy((x - mean) / std).float().to(device)
    yt = torch.from_numpy(y).long().to(device)
    counts = torch.bincount(yt, minlength=k + 1)
    present = counts.clamp(min=1).float()
    weight = present.sum() / present / (k + 1)                                     # balanced classes
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    torch.manual_seed(config.seed)
    scorer = ContextScorer(x.shape[1], k)
    scorer.mean.copy_(torch.from_numpy(mean).float())
    scorer.std.copy_(torch.from_numpy(std).float())
    lin = scorer.linear.to(device)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=config.max_iter, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        return loss_fn(lin(xt), yt) + config.weight_decay * lin.weight.pow(2).sum()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(objective())
    scorer.cpu().eval()
    return scorer, {"counts": counts.cpu().tolist(), "final_loss": final}


def save_context(path: str | os.PathLike, scorer: ContextScorer, pairs: PairSet, samples: SampleConfig,
                 config: ContextConfig, info: dict) -> Path:
    """Write a self-describing context-score checkpoint (kind ``"context"``) atomically."""
    payload = {"in_dim": scorer.in_dim, "classes": list(pairs.classes), "config": asdict(config),
               "samples": asdict(samples),
               "feature_layout": {"streams": list(pairs.streams), "dim": scorer.in_dim},
               "counts": list(info["counts"]), "final_loss": info["final_loss"],
               "state_dict": {k: v.detach().cpu() for k, v in scorer.state_dict().items()}}
    return write_checkpoint(path, CONTEXT_KIND, FORMAT_VERSION, payload)


def load_context(path: str | os.PathLike, in_dim: int | None = None) -> tuple[ContextScorer, dict]:
    """Rebuild a trained context scorer (eval mode) from its checkpoint alone.

    Args:
        in_dim: if given, the feature size it will be applied to (checked).

    Returns:
        (scorer, checkpoint dict).
    """
    what = f"context-score checkpoint of format {FORMAT_VERSION}"
    ckpt = load_checkpoint(path, RefactorError, what, kind=CONTEXT_KIND, format_version=FORMAT_VERSION)

    def build(c: dict) -> ContextScorer:
        list(c["feature_layout"]["streams"])         # required: detectors check the streams they are given
        return ContextScorer(int(c["in_dim"]), len(c["classes"]))

    scorer = rebuild_model(path, ckpt, build, RefactorError, what)
    streams = list(ckpt["feature_layout"]["streams"])
    if in_dim is not None and in_dim != scorer.in_dim:
        raise RefactorError(f"{path} was trained on {scorer.in_dim}-d features ({'+'.join(streams)}), "
                            f"these are {in_dim}-d")
    return scorer.eval(), ckpt
