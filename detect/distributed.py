"""torch.distributed helpers of detector training (launched by torchrun; gloo on CPU, NCCL on CUDA).

Every rank holds the whole model and takes its own share of each batch; after the backward pass the
gradients are averaged over the ranks (:func:`average_gradients`), so every rank applies the same
update and ends with the same weights (:func:`check_replicas` verifies it). Outside a distributed
job :func:`rank_and_world` is (0, 1) and nothing here is needed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["rank_and_world", "average_gradients", "mean_over_ranks", "check_replicas"]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed job, (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(model: nn.Module, world: int) -> None:
    """All-reduce the gradients of every rank into their mean (one collective for all of them); a
    parameter without a gradient on some rank counts as a zero gradient there."""
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


def mean_over_ranks(values: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    """The mean of each scalar over the ranks (every rank passes the same keys)."""
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    return dict(zip(keys, (packed / world).tolist()))


def check_replicas(model: nn.Module, device: torch.device) -> None:
    """Every rank must end with the same weights (they apply the same averaged updates); RuntimeError if not."""
    with torch.no_grad():
        mine = torch.stack([p.double().sum() for p in model.parameters()]).to(device)
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError("distributed training: the ranks' weights diverged")
