"""The detector (RefactorNet §3.6): an optional feature front, a BSN-style boundary module and three
MLP heads on RoI-pooled proposal features.

Data flow for B sequences of T snippets (``lengths`` valid snippets each, the rest padding)::

    x (B, C, T) --front--> f' (B, C', T)          front: none (--baseline), RefactorNet (--refactor)
                                                   or temporal convolutions (--deep-baseline)
    f' --conv k3 + ReLU--> base (B, D, T)          shared by the boundary module and the heads
    base --conv k3 + ReLU, conv k1--> boundary logits (B, 3, T): actionness, start, end
    (proposals come from the boundary probabilities, outside the model: detect.proposals)
    base, rois (P, 3) --roi_pool_1d--> (P, D, n_start + n_inner + n_end)
        inner bins      -> MLP -> class logits   (P, K + 1), index 0 = background
        all bins        -> MLP -> completeness   (P, K), one score per class
        all bins        -> MLP -> regression     (P, 2), centre offset and log-duration

Outputs past a sequence's length are zeroed after every temporal layer, so a padded batch gives
exactly the per-sequence results (``tests/test_detect.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from detect.fronts import DeepBaseline, deep_baseline_hidden, front_names, get_front, masked
from detect.roi import roi_pool_1d
from refactor.context import ContextConfig
from refactor.model import RefactorConfig, RefactorOutput

__all__ = ["DetectorConfig", "Detector", "Encoded", "HeadOutput", "DeepBaseline", "deep_baseline_hidden",
           "FRONTS"]

FRONTS = front_names()          # the fronts registered when this module is imported (detect.fronts)


@dataclass
class DetectorConfig:
    """Architecture of the detector and the proposal rule it was trained with.

    Attributes:
        in_dim: snippet feature size C (2048 for two-stream I3D); set from the data.
        num_classes: K action classes (the classifier has K + 1 outputs, 0 = background); set from the data.
        front: a registered front (detect.fronts): "none" (raw features, --baseline), "refactor"
            (RefactorNet, --refactor CKPT), "context" (f beside its context scores, --context-score CKPT)
            or "deep" (temporal convolutions with RefactorNet's parameter count and depth, --deep-baseline).
        refactor: RefactorNet's configuration when the front uses one (the deep baseline copies its
            depth and parameter count); set from the stage-1 checkpoint.
        context_scores: the training configuration of each context scorer when the front is "context" (their
            outputs and windows, :class:`refactor.context.ContextConfig`; f' holds their scores in this order);
            set from the context-score checkpoints.
        deep_kernel: temporal kernel of the deep baseline's convolutions.
        base_dim: channels of the shared base feature.
        boundary_hidden: channels of the boundary module's hidden layer.
        head_hidden: hidden width of the three MLP heads.
        dropout: dropout of the three MLP heads.
        bins: RoI pooling bins (start, inner, end) (see detect.roi.roi_pool_1d).
        context: RoI pooling context on each side, as a fraction of the proposal.
        samples_per_bin: RoI pooling samples per bin.
        max_duration: longest proposal, snippets.
        candidate_ratio: boundary candidates exceed this fraction of the maximum (or are peaks).
        max_proposals: proposals per video scored by the heads (best boundary scores).
        temporal_scale: rescale every video to this many positions (ActivityNet practice: 100, with
            max_duration 100; none: native snippets).
        score_gain: front "context": its scores (probabilities in [0, 1]) are multiplied by this before they
            join f, so that a few score channels beside many feature channels are not drowned (README, twentieth
            round); 1: the scores as they are (this config's default, so that checkpoints from before the field
            read as they were trained; ``detect fit`` uses 16, ``FitConfig.score_gain``). Other fronts ignore it.
    """

    in_dim: int = 2048
    num_classes: int = 20
    front: str = "none"
    refactor: RefactorConfig | None = None
    context_scores: tuple[ContextConfig, ...] = ()
    deep_kernel: int = 3
    base_dim: int = 256
    boundary_hidden: int = 256
    head_hidden: int = 512
    dropout: float = 0.5
    bins: tuple[int, int, int] = (2, 8, 2)
    context: float = 0.5
    samples_per_bin: int = 4
    max_duration: int = 128
    candidate_ratio: float = 0.5
    max_proposals: int = 1000
    temporal_scale: int | None = None
    score_gain: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.refactor, dict):
            self.refactor = RefactorConfig.from_dict(self.refactor)
        self.context_scores = tuple(ContextConfig(**c) if isinstance(c, dict) else c for c in self.context_scores)
        self.bins = tuple(int(b) for b in self.bins)
        kind = get_front(self.front)          # ValueError naming the registered fronts
        if kind.uses_refactor_config and self.refactor is None:
            self.refactor = RefactorConfig(in_dim=self.in_dim)
        if kind.context and not self.context_scores:        # checkpoints from before the field: contexts alone
            self.context_scores = (ContextConfig(contexts=True, actions=False, window=0),)
        if self.context_scores and not kind.context:
            raise ValueError(f"context_scores are for front 'context', not {self.front!r}")
        if not self.score_gain > 0:
            raise ValueError(f"score_gain must be > 0, got {self.score_gain}")
        if self.refactor is not None and self.refactor.in_dim != self.in_dim:
            raise ValueError(f"RefactorNet expects {self.refactor.in_dim}-d features, the detector {self.in_dim}-d")
        if len(self.bins) != 3 or self.bins[1] < 1 or min(self.bins) < 0:
            raise ValueError(f"bins must be (start, inner >= 1, end), got {self.bins}")
        if self.temporal_scale is not None and self.temporal_scale < 2:
            raise ValueError(f"temporal_scale must be >= 2 or None, got {self.temporal_scale}")
        if min(self.in_dim, self.num_classes, self.base_dim, self.boundary_hidden, self.head_hidden,
               self.max_duration, self.max_proposals, self.samples_per_bin) < 1:
            raise ValueError(f"all sizes must be >= 1: {self}")

    @property
    def feature_dim(self) -> int:
        """Channels of f' (what the boundary module and the heads see)."""
        return get_front(self.front).out_dim(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        """The config of a stored dict, also of checkpoints from before ``context_scores`` (one
        ``context_score``, or none at all: the first form)."""
        d = dict(d)
        if "context_score" in d:
            legacy = d.pop("context_score")
            d["context_scores"] = () if legacy is None else (legacy,)
        return cls(**d)


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim))


@dataclass
class Encoded:
    """Per-snippet outputs of :meth:`Detector.encode`.

    Attributes:
        features (Tensor[B, C', T]): f' (the raw features for the baseline).
        refactor (RefactorOutput | None): RefactorNet's full output when it is the front.
        base (Tensor[B, D, T]): shared base feature (zero past each sequence's length).
        boundary_logits (Tensor[B, 3, T]): actionness, start, end (sigmoid gives probabilities).
        lengths (Tensor[B] int): valid snippets per sequence.
    """

    features: Tensor
    refactor: RefactorOutput | None
    base: Tensor
    boundary_logits: Tensor
    lengths: Tensor


@dataclass
class HeadOutput:
    """Per-proposal outputs of :meth:`Detector.heads`.

    Attributes:
        class_logits (Tensor[P, K + 1]): index 0 is background.
        completeness (Tensor[P, K]): raw completeness score per class (hinge-trained; sigmoid
            maps it to (0, 1) for the confidence).
        regression (Tensor[P, 2]): centre offset and log-duration (see detect.labels).
    """

    class_logits: Tensor
    completeness: Tensor
    regression: Tensor

    def confidence(self) -> Tensor:
        """Tensor[P, K]: P(class k | proposal) x sigmoid(completeness_k)."""
        return torch.softmax(self.class_logits, dim=1)[:, 1:] * torch.sigmoid(self.completeness)


class Detector(nn.Module):
    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = c = config
        self.front = get_front(c.front).build(c)          # detect.fronts: None, RefactorNet, DeepBaseline...
        self.base = nn.Conv1d(c.feature_dim, c.base_dim, 3, padding=1)
        self.boundary_hidden = nn.Conv1d(c.base_dim, c.boundary_hidden, 3, padding=1)
        self.boundary_out = nn.Conv1d(c.boundary_hidden, 3, 1)
        n_bins = sum(c.bins)
        self.cls_head = _mlp(c.base_dim * c.bins[1], c.head_hidden, c.num_classes + 1, c.dropout)
        self.com_head = _mlp(c.base_dim * n_bins, c.head_hidden, c.num_classes, c.dropout)
        self.reg_head = _mlp(c.base_dim * n_bins, c.head_hidden, 2, c.dropout)

    def encode(self, x: Tensor, lengths: Tensor | None = None, scores: Tensor | None = None) -> Encoded:
        """x (Tensor[B, C, T]) snippet features, zero-padded past ``lengths`` (Tensor[B]). ``scores``
        (Tensor[B, C' - C, T]): front "context" only, the scores put beside f instead of its scorers' (the
        out-of-fold scores of cross-fitted training, :mod:`detect.train`); None: the front's own."""
        if x.dim() != 3 or x.shape[1] != self.config.in_dim:
            raise ValueError(f"detector expects (B, {self.config.in_dim}, T) features, got {tuple(x.shape)}")
        bsz, _, t = x.shape
        if lengths is None:
            lengths = torch.full((bsz,), t, dtype=torch.long, device=x.device)
        mask = (torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]).to(x.dtype)[:, None, :]
        kind = get_front(self.config.front)
        if scores is None:
            feats, ref = kind.apply(self.front, x, mask)
        elif kind.context:
            feats, ref = kind.apply(self.front, x, mask, scores=scores)
        else:
            raise ValueError(f"front {self.config.front!r} computes f' itself: only front 'context' takes given scores")
        base = masked(torch.relu(self.base(feats)), mask)
        hidden = masked(torch.relu(self.boundary_hidden(base)), mask)
        return Encoded(features=feats, refactor=ref, base=base, boundary_logits=self.boundary_out(hidden),
                       lengths=lengths)

    def heads(self, enc: Encoded, rois: Tensor) -> HeadOutput:
        """rois (Tensor[P, 3]): (sequence index, start, end) in snippet-index coordinates."""
        c = self.config
        pooled = roi_pool_1d(enc.base, rois, c.bins, c.context, c.samples_per_bin, enc.lengths)   # (P, D, nb)
        inner = pooled[:, :, c.bins[0]:c.bins[0] + c.bins[1]]
        return HeadOutput(class_logits=self.cls_head(inner.flatten(1)),
                          completeness=self.com_head(pooled.flatten(1)),
                          regression=self.reg_head(pooled.flatten(1)))

    def forward(self, x: Tensor, rois: Tensor, lengths: Tensor | None = None) -> tuple[Encoded, HeadOutput]:
        enc = self.encode(x, lengths)
        return enc, self.heads(enc, rois)
