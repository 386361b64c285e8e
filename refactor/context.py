"""The context score: a supervised refactoring, φC(f) = p(context | f) and φA(f) = p(action | f), and its checkpoint.

RefactorNet learns φA and φC without labels for them and, on most of the project's feature worlds, φC
collapses or f' loses information (README, "When does refactoring help?"). The context score keeps f
whole and puts beside it, per class k, the probability that the snippet is class k's *context* and the
probability that it is class k's *action*, judged from the snippet and its neighbours:

    g_t  = [f_t, mean(f_{t-w} .. f_{t-1}), mean(f_{t+1} .. f_{t+w})]        (w = ``window``; 3C channels)
    p_t  = softmax(W (g_t - μ) / σ + b)[:2K]                                 (K contexts, then K actions)
    f'_t = f_t ⊕ p_t                                                         (C + 2K channels)

W, b (2K + 1 outputs: each class's context, each class's action, and "none") are a multinomial logistic
regression (with ``hidden`` > 0, W becomes a network with one hidden ReLU layer) learnt from the samples of
RefactorNet stage 1 (paper §3.3):

* context k: the coupling samples of class k's action samples (non-action snippets similar to them);
* action k: the snippets of class k's action samples;
* "none": the training snippets outside every action sample and coupling sample whose cosine to each
  of their video's action samples is below ``far`` (:attr:`ContextConfig.far`, half the coupling
  rule's threshold): snippets far from any action. The cosine is taken after subtracting the mean of
  all training snippets: I3D's features are non-negative (post-ReLU), so their raw cosines are all
  high and no snippet would be "far";

classes weighted to balance, L2 weight decay, full-batch L-BFGS on inputs standardised with the
training samples' mean μ and standard deviation σ. ``actions`` off and ``window`` 0 give the first form
(contexts alone, the snippet alone); ``contexts`` off, an action score (an ablation). The window and the
action outputs were chosen on development seeds of two synthetic worlds (README, ninth round). The
detector then sees f' (front ``context``, ``detect train --context-score CKPT``), with the scorer frozen
inside it; there each sequence's last valid snippet repeats past its length (:func:`with_neighbours`).

Checkpoint (:mod:`common.checkpoint`), kind ``"context"``, :data:`FORMAT_VERSION` 3 (1 is read too, as
contexts alone without a window; 2 as a linear scorer): ``in_dim``, ``classes``, ``config``
(:class:`ContextConfig`, whose ``contexts``, ``actions``, ``window``, ``targets`` and ``hidden`` shape the
scorer), ``samples`` (the :class:`SampleConfig` of the coupling rule), ``feature_layout`` (``streams``,
``dim``), ``counts`` (training samples per output: the K contexts, the K actions, then "none"),
``not_action`` (border snippets learnt as no class's action), ``final_loss`` and ``state_dict``; :func:`load_context`
rebuilds the scorer from it alone.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from common.annotations import hold_out, load_ground_truth, read_database
from common.checkpoint import load_checkpoint, rebuild_model
from common.checkpoint import save_checkpoint as write_checkpoint
from extract.features import read_features
from refactor.errors import NoCouplingSamples, RefactorError
from refactor.pairs import PairSet, build_pairs
from refactor.samples import SampleConfig, _cosine

__all__ = ["ContextConfig", "ContextScorer", "with_neighbours", "far_snippets", "border_snippets", "not_action_nll",
           "snippet_mean", "train_context", "crossfit_scorers", "crossfit_scores", "save_context", "load_context",
           "scorer_config", "CONTEXT_KIND", "FORMAT_VERSION"]

CONTEXT_KIND = "context"
FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)  # 1 predates contexts, actions and window (read as True, False, 0); 2 predates hidden (0)


@dataclass(frozen=True)
class ContextConfig:
    """How the context score is learnt (every default was fixed before the study's runs; README).

    Attributes:
        far: "none" samples: snippets whose cosine to every action sample of their video is below this.
        weight_decay: L2 penalty on the weights (sum of squares, not averaged).
        max_iter: L-BFGS iterations (one full-batch step).
        max_negatives: at most this many "none" samples, drawn uniformly with ``seed`` (none or 0: all).
        max_actions: at most this many action samples (snippets), drawn uniformly (none or 0: all). Training
            holds every sample as 8-byte floats of 3C (window > 0) or C inputs: 500,000 samples of 2048-d
            features with a window take about 23 GiB, so lower both on small machines.
        contexts: score each class's context (K outputs, learnt from the coupling samples); off, the coupling
            samples are not used at all (an action score, for ablations).
        actions: also score each class's *action* snippets (K more outputs, learnt from the snippets of the
            action samples): p(f) then holds K context and K action probabilities.
        window: the scorer sees each snippet with the mean of its ``window`` snippets before and of its
            ``window`` after (3C inputs; the video's first and last snippet repeat at its ends); 0: the
            snippet alone.
        border: also learn as class k's context the snippets within this many of each class-k action sample
            that lie outside every action sample and are not already a sample (most of the snippets right
            next to an action are neither a coupling sample nor far from it, so without them the scorer never
            sees where an action stops); 0: the coupling samples alone.
        border_from: the nearest distance the border takes (1: from the snippets right next to the sample;
            2 leaves those out, as they are often partly action).
        border_as: what the border snippets are learnt as: ``context`` (their class's context output) or
            ``not_action`` (a partial label: only that they are no class's action, which is all the annotations
            say of them; their loss is -log of the summed probability of the contexts and "none"). ``not_action``
            needs ``actions`` on.
        targets: what the scorer tells apart: ``kinds`` (each class's context and action, and "none", as above)
            or ``boundaries`` (K starts and K ends, and "none": the first and the last snippet of each class-k
            action sample against every other snippet of the training videos; a second score beside the
            first, for the detector's localisation; ``contexts``, ``actions``, ``far`` and ``border`` unused).
        hidden: ReLU units of one hidden layer between the standardised inputs and the softmax (learnt jointly
            by the same full-batch L-BFGS, from a seeded initialisation; non-convex, so the seed matters); 0: the
            linear scorer (multinomial logistic regression, convex), the default.
        seed: seed of the initialisation and of the draw.
        device: cpu, cuda, cuda:N.
    """

    far: float = 0.25
    weight_decay: float = 1e-3
    max_iter: int = 200
    max_negatives: int | None = field(default=200_000, metadata={"none_at": 0})
    max_actions: int | None = field(default=200_000, metadata={"none_at": 0})
    contexts: bool = True
    actions: bool = True
    window: int = 2
    border: int = 0
    border_from: int = 1
    border_as: str = field(default="context", metadata={"choices": ("context", "not_action")})
    targets: str = field(default="kinds", metadata={"choices": ("kinds", "boundaries")})
    hidden: int = 0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not -1.0 <= self.far <= 1.0:
            raise ValueError(f"far must be a cosine in [-1, 1], got {self.far}")
        if self.weight_decay < 0 or self.max_iter < 1:
            raise ValueError(f"weight_decay must be >= 0 and max_iter >= 1, got {self.weight_decay}, {self.max_iter}")
        for name in ("max_negatives", "max_actions"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or none, got {getattr(self, name)}")
        if self.window < 0 or self.border < 0:
            raise ValueError(f"window and border must be >= 0 snippets, got {self.window}, {self.border}")
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0 units (0: a linear scorer), got {self.hidden}")
        if self.border_from < 1:
            raise ValueError(f"border_from must be >= 1 snippet, got {self.border_from}")
        if self.border_as not in ("context", "not_action"):
            raise ValueError(f"border_as must be context or not_action, got {self.border_as!r}")
        if self.border and self.border_as == "context" and not self.contexts:
            raise ValueError("border snippets are learnt as contexts: border needs contexts on")
        if self.border and self.border_as == "not_action" and not self.actions:
            raise ValueError("border snippets learnt as not_action need the action outputs: border needs actions on")
        if self.targets not in ("kinds", "boundaries"):
            raise ValueError(f"targets must be kinds or boundaries, got {self.targets!r}")
        if self.targets == "boundaries" and self.border:
            raise ValueError("border is a rule of targets 'kinds'; boundaries learn from every snippet")
        if not (self.contexts or self.actions):
            raise ValueError("the context score needs contexts, actions or both to score")

    def outputs(self, num_classes: int) -> int:
        """Probabilities the scorer gives per snippet for K = ``num_classes``: K contexts and/or K actions
        (targets ``boundaries``: K starts and K ends)."""
        return num_classes * (2 if self.targets == "boundaries" else self.contexts + self.actions)


def with_neighbours(x: Tensor, window: int, mask: Tensor | None = None) -> Tensor:
    """Each snippet beside the mean of the ``window`` snippets before it and of the ``window`` after it.

    Args:
        x (Tensor[B, C, T]): snippet features.
        window: snippets on each side; beyond a video's ends its first and last snippet repeat. 0: ``x`` itself.
        mask (Tensor[B, 1, T] of 0 / 1, or None): the valid snippets of each sequence (a prefix, as in
            :meth:`detect.model.Detector.encode`); the last valid one repeats past it. None: all are valid.

    Returns:
        Tensor[B, 3C, T] (channels: the snippet, the mean before, the mean after), or ``x`` when ``window`` is 0.
    """
    if window == 0:
        return x
    b, c, t = x.shape
    if mask is not None:                       # past its length a sequence repeats its last valid snippet
        last = (mask.reshape(b, t).sum(1).long() - 1).clamp(min=0)                          # (B,)
        idx = torch.minimum(torch.arange(t, device=x.device)[None, :], last[:, None])       # (B, T)
        x = torch.gather(x, 2, idx[:, None, :].expand(b, c, t))
    padded = torch.cat([x[..., :1].expand(b, c, window), x, x[..., -1:].expand(b, c, window)],
                       dim=-1)                                                    # (B, C, T + 2w); snippet t at t + w
    means = F.avg_pool1d(padded, kernel_size=window, stride=1)                   # (B, C, T + w + 1): mean of [i, i + w)
    return torch.cat([x, means[..., :t], means[..., window + 1:window + 1 + t]], dim=1)


class ContextScorer(nn.Module):
    """p(f): per snippet, the probabilities of the K classes' contexts (and, with ``actions``, of their actions).

    Args:
        in_dim: C, the feature size.
        num_classes: K.
        contexts: K context outputs.
        actions: K action outputs (after the contexts'). The linear layer has one more output, "none".
        window: snippets on each side the scorer sees (:func:`with_neighbours`; 0: the snippet alone).
        hidden: ReLU units of a hidden layer (``self.hidden``) before the output layer ``self.linear``; 0: none
            (``self.linear`` then reads the standardised inputs).
    """

    def __init__(self, in_dim: int, num_classes: int, contexts: bool = True, actions: bool = False, window: int = 0,
                 hidden: int = 0):
        super().__init__()
        if in_dim < 1 or num_classes < 1 or window < 0 or hidden < 0 or not (contexts or actions):
            raise ValueError(f"in_dim and num_classes must be >= 1, window and hidden >= 0 and contexts or actions "
                             f"on, got {in_dim}, {num_classes}, {window}, {hidden}, {contexts}, {actions}")
        self.in_dim, self.num_classes, self.window = in_dim, num_classes, window
        self.contexts, self.actions = contexts, actions
        self.out_dim = num_classes * (contexts + actions)
        self.inputs = in_dim * (3 if window else 1)
        self.register_buffer("mean", torch.zeros(self.inputs))
        self.register_buffer("std", torch.ones(self.inputs))
        self.hidden = nn.Linear(self.inputs, hidden) if hidden else None
        self.linear = nn.Linear(hidden or self.inputs, self.out_dim + 1)

    @classmethod
    def from_config(cls, in_dim: int, num_classes: int, config: ContextConfig) -> ContextScorer:
        """An untrained scorer shaped by ``config``'s ``contexts``, ``actions``, ``window`` and ``hidden`` (targets
        ``boundaries``: 2K outputs, as contexts and actions both on)."""
        both = config.targets == "boundaries"
        return cls(in_dim, num_classes, config.contexts or both, config.actions or both, config.window, config.hidden)

    def head(self, z: Tensor) -> Tensor:
        """z (Tensor[N, inputs]) standardised input rows, (g - mean) / std -> (Tensor[N, out_dim + 1]) logits."""
        return self.linear(z if self.hidden is None else torch.relu(self.hidden(z)))

    def weights(self) -> list[Tensor]:
        """The weight matrices (not the biases): what the L2 penalty of training covers."""
        return [self.linear.weight] + ([] if self.hidden is None else [self.hidden.weight])

    def logits(self, g: Tensor) -> Tensor:
        """g (Tensor[N, inputs]) the scorer's input rows (:func:`with_neighbours`) -> (Tensor[N, out_dim + 1])
        logits, the last one "none"."""
        return self.head((g - self.mean) / self.std)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (Tensor[B, C, T]) snippet features (``mask``: :func:`with_neighbours`) -> (Tensor[B, out_dim, T])
        probabilities, each in [0, 1], their sum at most 1 (the rest is "none"): the K contexts (``contexts``),
        then the K actions (``actions``)."""
        g = with_neighbours(x, self.window, mask)
        b, c, t = g.shape
        p = torch.softmax(self.logits(g.transpose(1, 2).reshape(b * t, c)), dim=1)[:, :self.out_dim]
        return p.reshape(b, t, self.out_dim).transpose(1, 2)

    @torch.no_grad()
    def score(self, features: np.ndarray) -> np.ndarray:
        """features (ndarray[T, C]) one whole video's snippets -> (ndarray[T, out_dim], float32) its probabilities."""
        x = torch.from_numpy(np.asarray(features, dtype=np.float32)).to(self.mean.device)
        return self(x.T[None])[0].T.cpu().numpy()


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


def border_snippets(length: int, action_snippets: list[np.ndarray], action_labels: np.ndarray, taken: np.ndarray,
                    border: int, nearest: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The snippets next to the action samples of one video that no sample holds yet, with their class.

    Args:
        length: T, the video's snippets.
        action_snippets: the snippet indices of each action sample.
        action_labels (ndarray[A] int): their classes.
        taken (ndarray[T] bool): snippets already in a sample (action or coupling).
        border: snippets on each side of an action sample.
        nearest: the nearest distance taken (1: the snippets right next to a sample).

    Returns:
        (indices (ndarray[N] int, ascending, each once), classes (ndarray[N] int)): the snippets ``nearest`` to
        ``border`` snippets from their nearest action sample and not ``taken``; one equally near samples of two
        classes takes the earlier sample's class.
    """
    best = np.full(length, border + 1)
    label = np.full(length, -1, dtype=np.int64)
    t = np.arange(length)
    for idx, k in zip(action_snippets, action_labels):
        if len(idx) == 0:
            continue
        d = np.maximum(idx.min() - t, t - idx.max())          # snippets outside the sample: distance to it
        near = (d >= 1) & (d < best)
        best[near], label[near] = d[near], int(k)
    keep = (label >= 0) & ~taken & (best >= nearest)
    return np.flatnonzero(keep), label[keep]


def not_action_nll(logits: Tensor, not_action: Tensor) -> Tensor:
    """The partial label's loss: -log of the summed softmax probability of the outputs ``not_action``.

    Args:
        logits (Tensor[N, O]): the scorer's logits (:meth:`ContextScorer.logits`).
        not_action (Tensor[M] int): the outputs that are no class's action (the contexts and "none").

    Returns:
        Tensor[N]: -log Σ_{j ∈ not_action} softmax(logits)_j per row (>= 0; 0 where those outputs take it all).
    """
    return torch.logsumexp(logits, 1) - torch.logsumexp(logits[:, not_action], 1)


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
        (scorer in eval mode on the CPU, info: ``counts`` per output (K contexts, with ``actions`` K actions, then
        "none"), ``not_action`` (border snippets learnt as no class's action, ``border_as``), ``final_loss``).

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
    rows: dict[str, list[np.ndarray]] = {"x": [], "y": [], "none": [], "not_action": []}
    for vs, path in zip(pairs.videos, paths):
        f = read_features(path).features.astype(np.float64)
        g = with_neighbours(torch.from_numpy(f).T[None], config.window)[0].T.numpy()        # (T, inputs)
        if config.targets == "boundaries":                     # start k: output k, end k: k + K, the rest "none"
            edge = np.zeros(len(f), dtype=bool)
            for idx, label in zip(vs.action_snippets, vs.action_labels):
                rows["x"].append(g[[idx.min(), idx.max()]])
                rows["y"].append([label, k + label])
                edge[[idx.min(), idx.max()]] = True
            rows["none"].append(g[~edge])
            continue
        taken = np.zeros(len(f), dtype=bool)
        for idx in vs.action_snippets:
            taken[idx] = True
        taken[vs.pair_snippet] = True
        if config.contexts:                                                # class k's context: output k
            rows["x"].append(g[vs.pair_snippet])
            rows["y"].append(vs.action_labels[vs.pair_action])
        if config.border:
            idx, labels = border_snippets(len(f), vs.action_snippets, vs.action_labels, taken, config.border,
                                          config.border_from)
            if config.border_as == "context":                              # as their class's context
                rows["x"].append(g[idx])
                rows["y"].append(labels)
            else:                                                          # only as no class's action
                rows["not_action"].append(g[idx])
            taken[idx] = True
        if config.actions:                                                 # class k's action: output k (+ K)
            for idx, label in zip(vs.action_snippets, vs.action_labels):
                rows["x"].append(g[idx])
                rows["y"].append(np.full(len(idx), k * config.contexts + label))
        rows["none"].append(g[far_snippets(f, vs.action_features, taken, config.far, centre)])
    neg = np.concatenate(rows["none"]) if rows["none"] else np.zeros((0, 1))
    if len(neg) == 0:
        raise RefactorError(f"no training snippet is far from every action (cosine < {config.far}): the context score "
                            "has no 'none' samples")
    rng = np.random.default_rng(config.seed)
    if config.max_negatives is not None and len(neg) > config.max_negatives:
        neg = neg[np.sort(rng.choice(len(neg), config.max_negatives, replace=False))]
    outputs = config.outputs(k)
    x = np.concatenate(rows["x"] + [neg])
    y = np.concatenate([np.asarray(v, dtype=np.int64) for v in rows["y"]] + [np.full(len(neg), outputs)])
    is_action = (y >= k * config.contexts) & (y < outputs) if config.targets == "kinds" else np.zeros(len(y), bool)
    if config.max_actions is not None and is_action.sum() > config.max_actions:
        keep = np.ones(len(y), dtype=bool)
        keep[rng.choice(np.flatnonzero(is_action), int(is_action.sum()) - config.max_actions, replace=False)] = False
        x, y = x[keep], y[keep]
    mean, std = x.mean(0), x.std(0) + 1e-6
    device = torch.device(config.device)
    x -= mean                                      # in place: (x - μ) / σ without another copy of x
    x /= std
    xt = torch.from_numpy(x).float().to(device)
    del x
    yt = torch.from_numpy(y).long().to(device)
    counts = torch.bincount(yt, minlength=outputs + 1)
    present = counts.clamp(min=1).float()
    weight = present.sum() / present / (outputs + 1)                              # balanced classes
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    torch.manual_seed(config.seed)
    scorer = ContextScorer.from_config(pairs.coupling.shape[1], k, config)
    scorer.mean.copy_(torch.from_numpy(mean).float())
    scorer.std.copy_(torch.from_numpy(std).float())
    scorer.to(device)
    net = scorer.head                                      # xt is standardised already
    opt = torch.optim.LBFGS(scorer.parameters(), max_iter=config.max_iter, line_search_fn="strong_wolfe")
    partial = np.concatenate(rows["not_action"]) if rows["not_action"] else np.zeros((0, len(mean)))
    pt = torch.from_numpy((partial - mean) / std).float().to(device)                  # (N, inputs), as x above
    not_action = torch.tensor(list(range(k * config.contexts)) + [outputs], device=device)  # contexts and "none"
    share = 1.0 / (outputs + 2) if len(pt) else 0.0          # the partial labels weigh as one more balanced class

    def objective() -> Tensor:
        loss = loss_fn(net(xt), yt)
        if len(pt):
            loss = (1 - share) * loss + share * not_action_nll(net(pt), not_action).mean()
        return loss + config.weight_decay * sum(w.pow(2).sum() for w in scorer.weights())

    def closure() -> Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(objective())
    scorer.cpu().eval()
    return scorer, {"counts": counts.cpu().tolist(), "not_action": len(pt), "final_loss": final}


def crossfit_scorers(feature_dir: str | os.PathLike, annotations: str | os.PathLike | dict,
                     subset: str = "validation", config: ContextConfig = ContextConfig(),
                     samples: SampleConfig = SampleConfig(), folds: int = 4,
                     progress: bool | None = None,
                     classes: list[str] | None = None) -> list[tuple[ContextScorer | None, list[str]]]:
    """The scorers of cross-fitting (as in stacking): one per fold, each learnt without that fold's videos.

    A scorer learnt from a video's own samples is far better on it than on new videos (on the action_norm
    0.15 study world: 100% against 56.5% right at action boundaries with ``border`` 2; README, twelfth
    round), so a detector trained on such scores learns to trust them too much. Cross-fitting scores each
    training video with a scorer that did not see it: the videos of ``subset`` are split into ``folds`` folds
    by :func:`common.annotations.hold_out` (per class, in sorted order), and fold k's scorer is learnt from
    the other folds' samples.

    Args:
        feature_dir: the videos' feature files (``<video_id>.h5``).
        annotations: ground truth (file, contents or THUMOS14 folder).
        subset: the training subset.
        config, samples: as in :func:`train_context` and :func:`refactor.build_pairs`.
        folds: number of folds (>= 2).
        progress: a progress bar over the folds (None: when stderr is a terminal).
        classes: the order of every fold scorer's outputs: that of the scorer learnt on every video, whose
            scores at test time take the place of the out-of-fold ones (its checkpoint's ``classes``);
            None: the subset's order by first appearance, which is :func:`train_context`'s on
            :func:`refactor.build_pairs` of the whole subset. Each fold's own first-appearance order would
            differ wherever a fold holds out a class's first video.

    Returns:
        [(scorer, the ids of the videos it holds out)] per fold that holds out a video not held out before;
        every video that some fold holds out is in exactly one list (:func:`common.annotations.hold_out`
        never holds out a class's only video nor a video without segments). The scorer is None where the
        other folds leave a class without coupling samples (:class:`refactor.NoCouplingSamples`; seen at
        C = 2048 with 48 training videos): no scorer can be learnt without that fold, and the caller keeps the
        scorer learnt on every video for its videos.

    Raises:
        RefactorError: as :func:`train_context` and :func:`refactor.build_pairs` (other than a fold without
            coupling samples for a class).
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    database = read_database(annotations)
    if classes is None:
        classes = load_ground_truth(database, subset).classes
    used = {str(e["subset"]).casefold() for e in database.values()}
    name = next(f"crossfit{i or ''}" for i in range(len(used) + 1) if f"crossfit{i or ''}" not in used)
    out: list[tuple[ContextScorer, list[str]]] = []
    seen: set[str] = set()
    show = progress if progress is not None else sys.stderr.isatty()
    for k in tqdm(range(folds), desc="cross-fitting", unit="fold", disable=not show):
        rest, held = hold_out(database, subset, every=folds, name=name, fold=k)   # (a subset name not in use)
        held = [vid for vid in held if vid not in seen]
        if not held:
            continue
        seen.update(held)
        try:
            pairs = build_pairs(feature_dir, rest, subset, samples, classes=classes)
        except NoCouplingSamples as exc:      # documented: the caller keeps the all-data scorer for these videos
            warnings.warn(f"cross-fitting, fold {k + 1} of {folds}: without its videos {exc}; its {len(held)} "
                          "videos keep the scores of the scorer learnt on every video", stacklevel=2)
            out.append((None, held))
            continue
        absent = [c for i, c in enumerate(classes) if not np.any(pairs.label == i)]
        if absent:                            # the same: a class none of the other folds' videos holds
            warnings.warn(f"cross-fitting, fold {k + 1} of {folds}: without its videos class {absent[0]!r} has no "
                          f"samples; its {len(held)} videos keep the scores of the scorer learnt on every video",
                          stacklevel=2)
            out.append((None, held))
            continue
        out.append((train_context(pairs, feature_dir, config)[0], held))
    return out


def crossfit_scores(feature_dir: str | os.PathLike, annotations: str | os.PathLike | dict, subset: str = "validation",
                    config: ContextConfig = ContextConfig(), samples: SampleConfig = SampleConfig(),
                    folds: int = 4) -> dict[str, np.ndarray]:
    """Out-of-fold context scores of the training videos: each video's snippets scored by the scorer of
    :func:`crossfit_scorers` that did not see it (arguments as there).

    Returns:
        video id -> (ndarray[T, outputs], float32) its scores (the scorer's probabilities, snippets in rows),
        for every video that some fold holds out and scores (not those of a fold without a scorer).
    """
    feature_dir = Path(feature_dir)
    return {vid: scorer.score(read_features(feature_dir / f"{vid}.h5").features)
            for scorer, held in crossfit_scorers(feature_dir, annotations, subset, config, samples, folds)
            if scorer is not None for vid in held}


def save_context(path: str | os.PathLike, scorer: ContextScorer, pairs: PairSet, samples: SampleConfig,
                 config: ContextConfig, info: dict) -> Path:
    """Write a self-describing context-score checkpoint (kind ``"context"``) atomically."""
    payload = {"in_dim": scorer.in_dim, "classes": list(pairs.classes), "config": asdict(config),
               "samples": asdict(samples),
               "feature_layout": {"streams": list(pairs.streams), "dim": scorer.in_dim},
               "counts": list(info["counts"]), "not_action": int(info.get("not_action", 0)),
               "final_loss": info["final_loss"],
               "state_dict": {k: v.detach().cpu() for k, v in scorer.state_dict().items()}}
    return write_checkpoint(path, CONTEXT_KIND, FORMAT_VERSION, payload)


def scorer_config(ckpt: dict) -> ContextConfig:
    """The :class:`ContextConfig` a context-score checkpoint was trained with (format 1: contexts only, no
    window, which is what it was)."""
    config = dict(ckpt["config"])
    if ckpt.get("format_version") == 1:
        config |= {"contexts": True, "actions": False, "window": 0}
    return ContextConfig(**config)


def load_context(path: str | os.PathLike, in_dim: int | None = None) -> tuple[ContextScorer, dict]:
    """Rebuild a trained context scorer (eval mode) from its checkpoint alone.

    Args:
        in_dim: if given, the feature size it will be applied to (checked).

    Returns:
        (scorer, checkpoint dict).
    """
    what = "context-score checkpoint"
    ckpt = load_checkpoint(path, RefactorError, what, kind=CONTEXT_KIND)
    if ckpt.get("format_version") not in READABLE_FORMATS:
        raise RefactorError(f"{path} is not a {what} of format {' or '.join(map(str, READABLE_FORMATS))} (it has "
                            f"format {ckpt.get('format_version')!r})")

    def build(c: dict) -> ContextScorer:
        list(c["feature_layout"]["streams"])         # required: detectors check the streams they are given
        return ContextScorer.from_config(int(c["in_dim"]), len(c["classes"]), scorer_config(c))

    scorer = rebuild_model(path, ckpt, build, RefactorError, what)
    streams = list(ckpt["feature_layout"]["streams"])
    if in_dim is not None and in_dim != scorer.in_dim:
        raise RefactorError(f"{path} was trained on {scorer.in_dim}-d features ({'+'.join(streams)}), "
                            f"these are {in_dim}-d")
    return scorer.eval(), ckpt
