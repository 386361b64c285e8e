"""RefactorNet's encoders and losses (CVPR 2022, §3.4-3.5).

Two encoders of the same structure and separate weights, applied snippet by snippet (kernel-1
temporal convolutions, i.e. an MLP per snippet):

* φA, the action encoder: f -> action component (N, action_dim, T);
* φC, the co-occurrence encoder: f -> mean μ and log-variance log σ² of the co-occurrence component
  (N, cooc_dim, T), regularized towards N(0, 1) (Lu et al., CVPR 2019): sampled ``μ + σ ε`` while
  training, ``μ`` in eval mode.

The refactored feature is ``f' = φA(f) ⊕ φC(f)`` (concatenated along channels), or ``φA(f)`` alone
for the "action component only" ablation (Table 5).

Losses per (action sample a, coupling sample c) pair with similarity α:
``L_A = max(0, cos(φA(a), φA(c)))`` pushes their action components apart,
``L_C = 1 - cos(φC(a), φC(c))`` pulls their co-occurrence components together,
``L_KL = ½ Σ (μ² + σ² - log σ² - 1)`` (summed over channels, averaged over samples), and
``L_R = mean(α (L_A + L_C)) + β L_KL`` with β = 0.001.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RefactorConfig", "RefactorNet", "RefactorOutput", "RefactorLoss", "pair_losses", "kl_divergence"]


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
    """

    in_dim: int = 2048
    hidden_dim: int = 1024
    action_dim: int | None = None
    cooc_dim: int | None = None
    num_layers: int = 2
    use_kl: bool = True
    action_only: bool = False
    beta: float = 0.001

    def __post_init__(self) -> None:
        if self.action_dim is None:
            self.action_dim = self.in_dim // 2
        if self.cooc_dim is None:
            self.cooc_dim = self.in_dim - self.action_dim
        if min(self.in_dim, self.hidden_dim, self.action_dim, self.cooc_dim, self.num_layers) < 1:
            raise ValueError(f"all sizes must be >= 1: {self}")

    @property
    def out_dim(self) -> int:
        """Channels of f'."""
        return self.action_dim if self.action_only else self.action_dim + self.cooc_dim


def _encoder(in_dim: int, hidden: int, out: int, layers: int) -> nn.Sequential:
    """Kernel-1 temporal convolutions: the same MLP on every snippet. (N, in, T) -> (N, out, T)."""
    mods: list[nn.Module] = []
    dims = [in_dim] + [hidden] * (layers - 1) + [out]
    for i in range(layers):
        mods.append(nn.Conv1d(dims[i], dims[i + 1], kernel_size=1))
        if i < layers - 1:
            mods.append(nn.ReLU(inplace=True))
    return nn.Sequential(*mods)


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

    @property
    def out_dim(self) -> int:
        return self.config.out_dim

    def forward(self, x: Tensor) -> RefactorOutput:
        if x.dim() != 3 or x.shape[1] != self.config.in_dim:
            raise ValueError(f"RefactorNet expects (N, {self.config.in_dim}, T) features, got {tuple(x.shape)}")
        action = self.phi_a(x)
        mu, logvar = self.phi_c(x).chunk(2, dim=1)
        if self.training and self.config.use_kl:
            cooc = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)       # reparameterization
        else:
            cooc = mu
        features = action if self.config.action_only else torch.cat([action, cooc], dim=1)
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


class RefactorLoss(nn.Module):
    """``L_R = mean(α (L_A + L_C)) + β L_KL`` for a batch of pairs (KL only if the model uses it)."""

    def __init__(self, model: RefactorNet):
        super().__init__()
        self.model = model

    def forward(self, action_feats: Tensor, coupling_feats: Tensor, alpha: Tensor) -> dict[str, Tensor]:
        """
        Args:
            action_feats (Tensor[P, C]): pooled action samples.
            coupling_feats (Tensor[P, C]): their coupling snippets.
            alpha (Tensor[P]): similarity score of each pair.

        Returns:
            dict with ``loss`` (scalar to minimise) and its parts ``action``, ``cooccurrence``, ``kl``.
        """
        a = self.model(action_feats.unsqueeze(-1))
        c = self.model(coupling_feats.unsqueeze(-1))
        l_a, l_c = pair_losses(a, c)
        loss = (alpha * (l_a + l_c)).mean()
        kl = torch.zeros((), device=loss.device)
        if self.model.config.use_kl:
            kl = kl_divergence(torch.cat([a.mu, c.mu]), torch.cat([a.logvar, c.logvar]))
            loss = loss + self.model.config.beta * kl
        return {"loss": loss, "action": l_a.mean(), "cooccurrence": l_c.mean(), "kl": kl}
