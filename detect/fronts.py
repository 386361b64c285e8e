"""Detector fronts, chosen by name (``DetectorConfig.front``, ``--front``): a small registry.

A front turns the snippet features x (B, C, T) into f' (B, C', T) before the boundary module and the
heads. Each is a :class:`Front` subclass (how to build its module, its output size, how to apply it)
registered with :func:`register_front`; adding one is one class and one registration.

Registered: ``none`` (raw features, ``--baseline``), ``refactor`` (RefactorNet, trained end to end
from a stage-1 checkpoint, ``--refactor CKPT``), ``context`` (f beside its context score, a frozen
:class:`refactor.context.ContextScorer` from ``--context-score CKPT``) and ``deep`` (temporal convolutions
with RefactorNet's depth and parameter count, ``--deep-baseline``; Table 2).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from refactor.context import ContextScorer
from refactor.model import RefactorConfig, RefactorNet, RefactorOutput

__all__ = ["Front", "register_front", "get_front", "front_names", "NoFront", "RefactorFront", "DeepFront",
           "ContextFront", "DeepBaseline", "deep_baseline_hidden", "masked"]


def masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` zeroed past each sequence's length (``mask``: (B, 1, T) of 0 / 1, or None)."""
    return x if mask is None else x * mask


class Front:
    """How one kind of front is built and applied (class methods only; ``config`` is the
    :class:`detect.model.DetectorConfig`).

    Attributes:
        name: the value of ``DetectorConfig.front``.
        uses_refactor_config: its sizes come from a :class:`RefactorConfig` (``config.refactor``,
            filled with the defaults for ``in_dim`` when missing).
        stage1: it is RefactorNet itself: training starts from a stage-1 checkpoint's weights and
            adds L_R on that checkpoint's (action, coupling) pairs.
        context: it holds a context scorer whose weights come from a context-score checkpoint
            (``refactor.context``) and stay frozen.
    """

    name: ClassVar[str] = ""
    uses_refactor_config: ClassVar[bool] = False
    stage1: ClassVar[bool] = False
    context: ClassVar[bool] = False

    @classmethod
    def build(cls, config: Any) -> nn.Module | None:
        """The front's module (None: no parameters)."""
        return None

    @classmethod
    def out_dim(cls, config: Any) -> int:
        """Channels C' of f'."""
        return config.in_dim

    @classmethod
    def apply(cls, module: nn.Module | None, x: Tensor, mask: Tensor) -> tuple[Tensor, RefactorOutput | None]:
        """(f' (B, C', T) zero past each length, RefactorNet's output where the front is RefactorNet). A
        ``context`` front also takes ``scores``, what it puts beside f instead of computing it
        (:meth:`ContextFront.apply`)."""
        return x, None


_REGISTRY: dict[str, type[Front]] = {}


def register_front(cls: type[Front]) -> type[Front]:
    """Add a front (usable as a class decorator); a name registered twice is an error."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"front name {cls.name!r} is empty or taken")
    _REGISTRY[cls.name] = cls
    return cls


def front_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_front(name: str) -> type[Front]:
    found = _REGISTRY.get(name)
    if found is None:
        raise ValueError(f"front must be one of {front_names()}, got {name!r}")
    return found


class DeepBaseline(nn.Module):
    """Temporal 1-D convolutions ``C -> H -> ... -> C'`` (ReLU between), kernel k, 'same' padding."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int, kernel: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(nn.Conv1d(dims[i], dims[i + 1], kernel, padding=kernel // 2) for i in range(layers))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = masked(conv(x), mask)
            if i < len(self.convs) - 1:
                x = torch.relu(x)
        return x


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def deep_baseline_hidden(config: RefactorConfig, kernel: int) -> int:
    """Hidden width H that gives the deep baseline (same depth as RefactorNet's encoders, same
    input and output sizes) the parameter count closest to RefactorNet's (φA and φC together)."""
    target = _count(RefactorNet(config))
    c, out, layers = config.in_dim, config.out_dim, config.num_layers

    def params(h: int) -> int:
        if layers == 1:
            return kernel * c * out + out
        return kernel * (c * h + (layers - 2) * h * h + h * out) + (layers - 1) * h + out

    lo, hi = 1, 1
    while params(hi) < target:
        hi *= 2
    while hi - lo > 1:                      # params is increasing in h
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if params(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(params(h) - target))


@register_front
class NoFront(Front):
    """The baseline: the raw features."""

    name = "none"


@register_front
class RefactorFront(Front):
    """RefactorNet (stage 2: trained end to end with the detector)."""

    name = "refactor"
    uses_refactor_config = True
    stage1 = True

    @classmethod
    def build(cls, config: Any) -> nn.Module:
        return RefactorNet(config.refactor)

    @classmethod
    def out_dim(cls, config: Any) -> int:
        return config.refactor.out_dim

    @classmethod
    def apply(cls, module, x, mask):
        ref = module(x, mask)
        return masked(ref.features, mask), ref


@register_front
class ContextFront(Front):
    """f beside its context scores: f' = f ⊕ g·p_1(f) ⊕ ... ⊕ g·p_n(f), each p_i a frozen context scorer
    (:mod:`refactor.context`) over the detector's K classes shaped by ``config.context_scores[i]`` (K or 2K
    channels each), g = ``config.score_gain``."""

    name = "context"
    context = True

    @classmethod
    def build(cls, config: Any) -> nn.Module:
        scorers = nn.ModuleList(ContextScorer.from_config(config.in_dim, config.num_classes, c)
                                for c in config.context_scores)
        scorers.score_gain = float(config.score_gain)  # a setting of the config, not a weight (not in the state)
        return scorers.requires_grad_(False)          # learnt beforehand (refactor context), never by the detector

    @classmethod
    def out_dim(cls, config: Any) -> int:
        return config.in_dim + sum(c.outputs(config.num_classes) for c in config.context_scores)

    @classmethod
    def apply(cls, module, x, mask, scores: Tensor | None = None):
        """As :meth:`Front.apply`; ``scores`` (Tensor[B, C' - C, T]): put beside f instead of the scorers'
        (the out-of-fold scores of cross-fitted training, :mod:`detect.train`); either times the gain."""
        if scores is None:
            scores = torch.cat([scorer(x, mask) for scorer in module], dim=1)          # (B, C' - C, T)
        expected = (x.shape[0], sum(scorer.out_dim for scorer in module), x.shape[2])
        if tuple(scores.shape) != expected:
            raise ValueError(f"given context scores are {tuple(scores.shape)}, the front expects {expected}")
        return masked(torch.cat([x, module.score_gain * scores.to(x.dtype)], dim=1), mask), None


@register_front
class DeepFront(Front):
    """Temporal convolutions with RefactorNet's depth and parameter count (the deep baseline)."""

    name = "deep"
    uses_refactor_config = True

    @classmethod
    def build(cls, config: Any) -> nn.Module:
        r = config.refactor
        return DeepBaseline(config.in_dim, deep_baseline_hidden(r, config.deep_kernel), r.out_dim, r.num_layers,
                            config.deep_kernel)

    @classmethod
    def out_dim(cls, config: Any) -> int:
        return config.refactor.out_dim

    @classmethod
    def apply(cls, module, x, mask):
        return module(x, mask), None
