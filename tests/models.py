"""Seeded random I3D models for tests (non-trivial batch-norm statistics, so conversions and
forward passes are exercised with values that differ per channel), and models carrying a spec."""

from __future__ import annotations

import dataclasses

import torch

from extract.i3d import I3D
from weights import get_spec


def random_i3d_model(in_channels: int = 3, num_classes: int = 400, seed: int = 0) -> I3D:
    torch.manual_seed(seed)
    model = I3D(in_channels, num_classes)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if name.endswith("bn.bias"):
                p.normal_(0, 0.1)
    return model.eval()


def with_transform(model: I3D, stream: str, **changes) -> I3D:
    """``model``, carrying (as ``model.spec``) its stream's registry spec with the input transform
    fields in ``changes`` replaced (``short_side``, ``crop``, ``value_range``, ``flow_bound``)."""
    spec = get_spec(stream)
    transform = dataclasses.replace(spec.transform, **changes)
    model.spec = dataclasses.replace(spec, id=f"test-{stream}", transform=transform)
    return model


def record_inputs(model: I3D) -> list[torch.Tensor]:
    """A list that receives (a copy of) every input ``model`` is called on, (N, C, T, H, W) each."""
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen
