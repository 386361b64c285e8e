"""Seeded random I3D models for tests (non-trivial batch-norm statistics, so conversions and
forward passes are exercised with values that differ per channel)."""

from __future__ import annotations

import torch

from extract.i3d import I3D


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
