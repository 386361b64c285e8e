"""RefactorNet's encoders and losses (CVPR 2022, §3.4-3.5).

Two encoders of the same structure and separate weights, applied snippet by snippet (kernel-1
temporal convolutions, i.e. an MLP per snippet; with ``temporal_kernel`` k > 1 each layer also gets
the side taps of a kernel-k convolution, starting at 0, see :class:`RefactorConfig`):

* φA, the action encoder: f -> action component (N, action_dim, T);
* φC, the co-occurrence encoder: f -> mean μ and log-variance log σ² of the co-occurrence component
  (N, cooc_dim, T), regularized towards N(0, 1) (Lu et al., CVPR 2019): sampled ``μ + σ ε`` while
  training, ``μ`` in eval mode.

The refactored feature is ``f' = φA(f) ⊕ φC(f)`` (concatenated along channels) in the paper's form,
or ``φA(f)`` alone for the "action component only" ablation (Table 5). The default form, "gated"
(:data:`FORMS`; the README's "When does refactoring help?" says why), adds the components to the raw
feature through a per-channel gate γ that starts at 0, ``f' = f + γ ⊙ (φA(f) ⊕ φC(f))``, keeps the
encoders' stage-1 weights in stage 2, and adds L_S below.

Losses per (action sample a, coupling sample c) pair with similarity α:
``L_A = max(0, cos(φA(a), φA(c)))`` pushes their action components apart,
``L_C = 1 - cos(φC(a), φC(c))`` pulls their co-occurrence components together,
``L_KL = ½ Σ (μ² + σ² - log σ² - 1)`` (summed over channels, averaged over samples), and
``L_R = mean(α (L_A + L_C)) + β L_KL`` with β = 0.001. Beyond the paper (weights 0 in its form):
``L_S``, the mean of ``max(0, cos(φC(a_i), φC(c_j)))`` over pairs of different classes (without it a
constant φC minimises L_C: φC collapses), and ``L_rec``, a linear reconstruction of f from φA ⊕ φC.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FORMS", "RefactorConfig", "RefactorNet", "RefactorOutput", "RefactorLoss", "pair_losses", "kl_divergence",
           "spread_loss", "reconstruction_loss"]


@dataclass
class RefactorConfig:
    """Architecture and loss of RefactorNet.

    Attributes:
        in_dim: snippet feature size C (2048 for two-stream I3D).
        hidden_dim: width of the encoders' hidden layer(s).
        action_dim: size of the action component (none: C / 2, so that f' has C channels and can
            replace f in a detector unchanged).
        cooc_dim: size of the co-occurrence component (none: C - action_dim).
        num_layers: kernel-1 convolutions per encoder (ReLU between them).
        use_kl: KL regularization of the co-occurrence component (ablation, --no-kl: L_A & L_C only).
        action_only: f' = φA(f) (ablation of Table 5: the action component only).
        beta: weight of the KL term L_KL.
        form: ``"gated"`` (the default) or ``"paper"``: a preset of the six fields below, each of
            which may also be set on its own (None: the form's value). See :data:`FORMS`.
        residual: f' = f + γ ⊙ (φA(f) ⊕ φC(f)) with a learnt per-channel γ that starts at 0 (so stage 2
            starts from the raw features; needs ``out_dim == in_dim``). Off in the paper.
        spread_weight: weight of L_S, which keeps φC apart across classes: the mean of
            ``max(0, cos(φC(a_i), φC(c_j)))`` over pairs i, j of a batch whose classes differ (the
            negatives are other classes' coupling samples). 0 in the paper.
        recon_weight: weight of L_rec, a linear reconstruction of f from φA(f) ⊕ φC(f) (mean squared
            error over the mean squared norm of f), on the action and the coupling samples. 0 in the paper.
        stage2_weight: weight of L_R in stage 2 (``L_R w + L_P + L_D``; 1 in the paper).
        stage2_encoders: train φA and φC in stage 2 (with L_R, as in the paper); False: they keep their
            stage-1 weights and only γ and the detector learn (no L_R in stage 2).
        keep_input: f' = f ⊕ φA(f) ⊕ φC(f) (C + action_dim + cooc_dim channels): the raw feature beside
            the components rather than summed with them (exclusive with ``residual``). Off in both forms.
        temporal_kernel: 1 (both forms): the encoders see one snippet. k > 1 (odd): every encoder layer
            also has the side taps of a kernel-k temporal convolution (the neighbours t ± 1 .. k // 2;
            no bias, no centre tap, 'same' zero padding) added to its per-snippet one. They start at 0,
            so the model equals the kernel-1 one until they learn. Stage 1 trains on single snippets,
            where they receive no gradient. They learn in stage 2 and stay trainable when
            ``stage2_encoders`` is False.
    """

    in_dim: int = 2048
    hidden_dim: int = 1024
    action_dim: int | None = None
    cooc_dim: int | None = None
    num_layers: int = 2
    use_kl: bool = True
    action_only: bool = False
    beta: float = 0.001
    form: str = "gated"
    residual: bool | None = None
    spread_weight: float | None = None
    recon_weight: float | None = None
    stage2_weight: float | None = None
    stage2_encoders: bool | None = None
    keep_input: bool | None = None
    temporal_kernel: int = 1

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        for name, value in FORMS[self.form].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.action_dim is None:
            self.action_dim = self.in_dim // 2
        if self.cooc_dim is None:
            self.cooc_dim = self.in_dim - self.action_dim
        if min(self.in_dim, self.hidden_dim, self.action_dim, self.cooc_dim, self.num_layers) < 1:
            raise ValueError(f"all sizes must be >= 1: {self}")
        if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and >= 1, got {self.temporal_kernel}")
        if self.residual and self.keep_input:
            raise ValueError("residual (f + γ ⊙ components) and keep_input (f ⊕ components) exclude each other")
        if self.residual and self.out_dim != self.in_dim:
            raise ValueError(f"a residual RefactorNet (form {self.form!r}) adds φA ⊕ φC to f and needs out_dim == "
                             f"in_dim, got {self.out_dim} != {self.in_dim}; for the action-only ablation or other "
                             "component sizes use --form paper (or --no-residual)")
        if min(self.spread_weight, self.recon_weight, self.stage2_weight, self.beta) < 0:
            raise ValueError(f"loss weights must be >= 0: {self}")

    @property
    def out_dim(self) -> int:
        """Channels of f'."""
        components = self.action_dim if self.action_only else self.action_dim + self.cooc_dim
        return components + (self.in_dim if self.keep_input else 0)

    @classmethod
    def from_dict(cls, values: dict) -> RefactorConfig:
        """A configuration stored in a checkpoint; one written before forms existed is the paper's form."""
        return cls(**({"form": "paper"} | dict(values)))


# The forms of RefactorNet: the values of the fields that tell them apart. "paper" is CVPR 2022 as
# written; "gated" is this project's default (README, "When does refactoring help?"): the refactored
# components are added to f through a gate γ that starts at 0, φC is kept spread across classes (L_S),
# and the encoders keep their stage-1 weights in stage 2.
FORMS: dict[str, dict] = {
    "paper": {"residual": False, "spread_weight": 0.0, "recon_weight": 0.0, "stage2_weight": 1.0,
              "stage2_encoders": True, "keep_input": False},
    "gated": {"residual": True, "spread_weight": 1.0, "recon_weight": 0.0, "stage2_weight": 1.0,
              "stage2_encoders": False, "keep_input": False},
}


def _encoder(in_dim: int, hidden: int, out: int, layers: int) -> nn.Sequential:
    """Kernel-1 temporal convolutions: the same MLP on every snippet. (N, in, T) -> (N, out, T)."""
    mods: list[nn.Module] = []
    dims = [in_dim] + [hidden] * (layers - 1) + [out]
    for i in range(layers):
        mods.append(nn.Conv1d(dims[i], dims[i + 1], kernel_size=1))
        if i < layers - 1:
            mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


class _SideTaps(nn.Conv1d):
    """A kernel-k convolution (no bias, 'same' zero padding) whose centre tap is fixed at 0: what the
    neighbours t ± 1 .. k // 2 add to snippet t. Its weights start at 0."""

    def __init__(self, in_dim: int, out: int, kernel: int):
        super().__init__(in_dim, out, kernel, padding=kernel // 2, bias=False)
        nn.init.zeros_(self.weight)
        side = torch.ones(kernel)
        side[kernel // 2] = 0
        self.register_buffer("side", side, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight * self.side, None, padding=self.padding)


def _temporal_taps(in_dim: int, hidden: int, out: int, layers: int, kernel: int) -> nn.ModuleList:
    """One :class:`_SideTaps` per layer of :func:`_encoder`, added to it."""
    dims = [in_dim] + [hidden] * (layers - 1) + [out]
    return nn.ModuleList(_SideTaps(dims[i], dims[i + 1], kernel) for i in range(layers))


def _encode(point: nn.Sequential, taps: nn.ModuleList | None, x: Tensor, mask: Tensor | None) -> Tensor:
    """Run an encoder, (N, in, T) -> (N, out, T): its per-snippet layers, plus its temporal taps if any,
    with positions past each sequence's length (``mask`` (N, 1, T) of 0 / 1) zeroed in the input and
    between layers, so that padding never leaks into a valid snippet through a temporal tap."""
    if taps is None:
        return point(x)
    if mask is not None:
        x = x * mask
    convs = [m for m in point if isinstance(m, nn.Conv1d)]
    for i, (conv, tap) in enumerate(zip(convs, taps)):
        x = conv(x) + tap(x)
        if i < len(convs) - 1:
            x = torch.relu(x)
            if mask is not None:
                x = x * mask
    return x


@dataclass
class RefactorOutput:
    """What :class:`RefactorNet` returns (the same fields in train and eval mode).

    Attributes:
        features (Tensor[N, out_dim, T]): f' = action ⊕ cooccurrence (or action alone).
        action (Tensor[N, action_dim, T]): φA(f).
        cooccurrence (Tensor[N, cooc_dim, T]): the co-occurrence component: a sample
            ``μ + σ ε`` in training mode (with KL), ``μ`` otherwise.
        mu, logvar (Tensor[N, cooc_dim, T]): φC's mean and log-variance.
    """

    features: Tensor
    action: Tensor
    cooccurrence: Tensor
    mu: Tensor
    logvar: Tensor


class RefactorNet(nn.Module):
    """(N, C, T) snippet features -> :class:`RefactorOutput` with f' of shape (N, C', T)."""

    def __init__(self, config: RefactorConfig):
        super().__init__()
        self.config = config
        c = config
        self.phi_a = _encoder(c.in_dim, c.hidden_dim, c.action_dim, c.num_layers)
        self.phi_c = _encoder(c.in_dim, c.hidden_dim, 2 * c.cooc_dim, c.num_layers)   # μ and log σ²
        taps = c.temporal_kernel > 1
        self.phi_a_taps = _temporal_taps(c.in_dim, c.hidden_dim, c.action_dim, c.num_layers,
                                         c.temporal_kernel) if taps else None
        self.phi_c_taps = _temporal_taps(c.in_dim, c.hidden_dim, 2 * c.cooc_dim, c.num_layers,
                                         c.temporal_kernel) if taps else None
        # γ of the residual path (starts at 0: f' = f) and the linear decoder of L_rec
        self.gamma = nn.Parameter(torch.zeros(c.in_dim, 1)) if c.residual else None
        self.decoder = nn.Conv1d(c.action_dim + c.cooc_dim, c.in_dim, kernel_size=1) if c.recon_weight > 0 else None

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    def freeze_encoders(self) -> RefactorNet:
        """Stop training φA, φC and the decoder (``stage2_encoders=False``); γ and the temporal side taps
        (if ``temporal_kernel`` > 1) stay trainable. The co-occurrence component is still sampled in
        training mode (on the study's development seeds sampling it was 2.0 and 1.6 points of average
        mAP better than using μ: it regularises γ)."""
        for module in (self.phi_a, self.phi_c, self.decoder):
            if module is not None:
                module.requires_grad_(False)
        return self

    def forward(self, x: Tensor, mask: Tensor | None = None) -> RefactorOutput:
        """``x`` (N, C, T); ``mask`` (N, 1, T) of 0 / 1 marks each window's valid snippets (only the
        temporal taps need it: the per-snippet encoders give valid snippets the same output either way)."""
        if x.dim() != 3 or x.shape[1] != self.config.in_dim:
            raise ValueError(f"RefactorNet expects (N, {self.config.in_dim}, T) features, got {tuple(x.shape)}")
        action = _encode(self.phi_a, self.phi_a_taps, x, mask)
        mu, logvar = _encode(self.phi_c, self.phi_c_taps, x, mask).chunk(2, dim=1)
        if self.training and self.config.use_kl:
            cooc = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)       # reparameterization
        else:
            cooc = mu
        features = action if self.config.action_only else torch.cat([action, cooc], dim=1)
        if self.gamma is not None:
            features = x + self.gamma * features                               # (N, C, T)
        elif self.config.keep_input:
            features = torch.cat([x, features], dim=1)                         # (N, C + C', T)
        return RefactorOutput(features=features, action=action, cooccurrence=cooc, mu=mu, logvar=logvar)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) || N(0, 1)) = ½ Σ_channels (μ² + σ² − log σ² − 1), averaged over the other dims.

    Args:
        mu, logvar (Tensor[N, D, ...]): channels on dim 1.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1).mean()


def pair_losses(a: RefactorOutput, c: RefactorOutput) -> tuple[Tensor, Tensor]:
    """Per-pair L_A and L_C of action samples ``a`` and their coupling samples ``c``.

    Args:
        a, c: outputs for (P, C, 1) inputs (one pooled action feature / one coupling snippet each).

    Returns:
        (L_A, L_C), each Tensor[P]: ``max(0, cos(φA(a), φA(c)))`` and ``1 − cos(φC(a), φC(c))``.
    """
    cos_a = F.cosine_similarity(a.action.flatten(1), c.action.flatten(1), dim=1)
    cos_c = F.cosine_similarity(a.cooccurrence.flatten(1), c.cooccurrence.flatten(1), dim=1)
    return cos_a.clamp(min=0), 1 - cos_c


def spread_loss(a: RefactorOutput, c: RefactorOutput, labels: Tensor) -> Tensor:
    """L_S: mean of ``max(0, cos(φC(a_i), φC(c_j)))`` over the pairs i, j whose classes differ (0 if none).

    Args:
        a, c: outputs for (P, C, 1) inputs, as in :func:`pair_losses`.
        labels (Tensor[P] int): class of each pair's action sample.
    """
    ca = F.normalize(a.cooccurrence.flatten(1), dim=1)
    cc = F.normalize(c.cooccurrence.flatten(1), dim=1)
    other = labels[:, None] != labels[None, :]                                        # (P, P)
    if not bool(other.any()):
        return ca.sum() * 0
    return (ca @ cc.T).clamp(min=0)[other].mean()


def reconstruction_loss(decoder: nn.Module, out: RefactorOutput, x: Tensor) -> Tensor:
    """L_rec: ``mean ||D(φA ⊕ φC) − f||² / mean ||f||²`` (D linear, (N, C', T) -> (N, C, T))."""
    rec = decoder(torch.cat([out.action, out.cooccurrence], dim=1))
    return (rec - x).pow(2).sum(dim=1).mean() / x.pow(2).sum(dim=1).mean().clamp(min=1e-12)


class RefactorLoss(nn.Module):
    """``L_R = mean(α (L_A + L_C)) + β L_KL (+ λ_S L_S + λ_rec L_rec)`` for a batch of pairs (KL only if
    the model uses it; L_S and L_rec only with their weights above 0, which the paper does not use)."""

    def __init__(self, model: RefactorNet):
        super().__init__()
        self.model = model

    def forward(self, action_feats: Tensor, coupling_feats: Tensor, alpha: Tensor,
                labels: Tensor | None = None) -> dict[str, Tensor]:
        """
        Args:
            action_feats (Tensor[P, C]): pooled action samples.
            coupling_feats (Tensor[P, C]): their coupling snippets.
            alpha (Tensor[P]): similarity score of each pair.
            labels (Tensor[P] int): class of each pair (needed when ``spread_weight`` > 0).

        Returns:
            dict with ``loss`` (scalar to minimise) and its parts ``action``, ``cooccurrence``, ``kl``,
            ``spread``, ``reconstruction`` (the last two 0 when their weights are 0).
        """
        cfg = self.model.config
        xa, xc = action_feats.unsqueeze(-1), coupling_feats.unsqueeze(-1)
        a, c = self.model(xa), self.model(xc)
        l_a, l_c = pair_losses(a, c)
        loss = (alpha * (l_a + l_c)).mean()
        zero = torch.zeros((), device=loss.device)
        kl, spread, rec = zero, zero, zero
        if cfg.use_kl:
            kl = kl_divergence(torch.cat([a.mu, c.mu]), torch.cat([a.logvar, c.logvar]))
            loss = loss + cfg.beta * kl
        if cfg.spread_weight > 0:
            if labels is None:
                raise ValueError("spread_weight > 0 needs the pairs' labels")
            spread = spread_loss(a, c, labels)
            loss = loss + cfg.spread_weight * spread
        if cfg.recon_weight > 0:
            decoder = self.model.decoder
            rec = 0.5 * (reconstruction_loss(decoder, a, xa) + reconstruction_loss(decoder, c, xc))
            loss = loss + cfg.recon_weight * rec
        return {"loss": loss, "action": l_a.mean(), "cooccurrence": l_c.mean(), "kl": kl, "spread": spread,
                "reconstruction": rec}
