"""Inception-v1 I3D (Carreira & Zisserman, CVPR 2017), numerically faithful to DeepMind's.

DeepMind's Sonnet/TF model differs from a naive PyTorch port in three places, all kept here:

* "SAME" padding is computed from the input size: ``pad = max((ceil(n/s) - 1) * s + k - n, 0)``,
  split with the extra element on the far side (``before = pad // 2``). Stride-2 layers on even
  sizes are therefore padded asymmetrically.
* Max-pooling pads with ``-inf`` (TF ignores the padding), not with zeros.
* Batch norm has ``eps = 1e-3`` and no learned scale (``scale = 1``); the layer keeps a ``weight``
  parameter, initialised to one, so that checkpoints fine-tuned in PyTorch load losslessly.

Input: ``x`` (N, C, T, H, W) float in [-1, 1], C = 3 (RGB) or 2 (flow), H = W = 224 for the
pretrained weights. Output: :class:`I3DOutput` with ``logits`` (N, num_classes), ``features``
(N, 1024) and ``spatial`` (N, 1024, T', H/32, W/32), where T' = ceil(T / 8).

``features`` is DeepMind's logits-branch pooling made explicit: average pool (2, 7, 7) with stride
1 and VALID padding over Mixed_5c, then the mean over the remaining positions. Since the logits
are the time average of a 1x1 convolution of that pooled map, ``logits == features @ W.T + b``
exactly (up to float rounding); for a 16-frame snippet (T' = 2) it is the global average of
Mixed_5c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["map_size", "I3D", "I3DOutput", "same_padding", "FEATURE_DIM"]

FEATURE_DIM = 1024

Triple = tuple[int, int, int]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF/Sonnet "SAME" padding for one dimension.

    Args:
        size: input length along the dimension.
        kernel: kernel length.
        stride: stride.

    Returns:
        (before, after) padding; ``after - before`` is 0 or 1. The output length is
        ``ceil(size / stride)``.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_args(x: Tensor, kernel: Triple, stride: Triple) -> list[int]:
    """F.pad argument (last dim first) for SAME padding of a (N, C, T, H, W) tensor."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(same_padding(size, k, s))
    return pads



def map_size(pixels: int) -> int:
    """Side of the Mixed_5c map for an input side of ``pixels`` (five stride-2 stages with TF SAME
    padding, each ``ceil(n / 2)``): 224 -> 7, 112 -> 4."""
    for _ in range(5):
        pixels = -(-pixels // 2)
    return pixels

class Unit3D(nn.Module):
    """Conv3d (no bias) -> BatchNorm (eps 1e-3) -> ReLU, with TF SAME padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=False)
        # Sonnet's moving-average decay 0.999 is PyTorch momentum 0.001.
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.001)

    def forward(self, x: Tensor) -> Tensor:
        pads = _pad_args(x, self.kernel, self.stride)
        if any(pads):
            if pads[0::2] == pads[1::2]:  # symmetric: let the convolution pad (no copy)
                x = F.conv3d(x, self.conv.weight, None, self.stride, tuple(reversed(pads[0::2])))
            else:
                x = self.conv(F.pad(x, pads))
        else:
            x = self.conv(x)
        return F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    """Max-pooling with TF SAME padding; padded positions never win (-inf)."""

    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        pads = _pad_args(x, self.kernel, self.stride)
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class Inception(nn.Module):
    """Inception block: four branches concatenated along channels.

    ``channels`` = (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1 after 3x3 max-pool).
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int, int, int, int]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3b = channels
        self.branch0 = Unit3D(in_channels, c0)
        self.branch1a = Unit3D(in_channels, c1a)
        self.branch1b = Unit3D(c1a, c1b, (3, 3, 3))
        self.branch2a = Unit3D(in_channels, c2a)
        self.branch2b = Unit3D(c2a, c2b, (3, 3, 3))
        self.branch3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.branch3b = Unit3D(in_channels, c3b)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch0(x),
            self.branch1b(self.branch1a(x)),
            self.branch2b(self.branch2a(x)),
            self.branch3b(self.branch3a(x)),
        ], dim=1)


@dataclass
class I3DOutput:
    """What :class:`I3D` returns.

    Attributes:
        logits (Tensor[N, num_classes]): class logits averaged over time.
        features (Tensor[N, 1024]): pooled Mixed_5c feature (see module docstring).
        spatial (Tensor[N, 1024, T', H', W']): the Mixed_5c map, H' = W' = 7 at 224x224.
    """

    logits: Tensor
    features: Tensor
    spatial: Tensor


class I3D(nn.Module):
    """Inception-v1 I3D; layer names follow DeepMind's end points.

    Args:
        in_channels: 3 for the RGB stream, 2 for the flow stream.
        num_classes: size of the logits layer (400 for Kinetics-400).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 400):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = Inception(192, (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = Inception(256, (128, 128, 192, 32, 96, 64))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = Inception(480, (192, 96, 208, 16, 48, 64))
        self.Mixed_4c = Inception(512, (160, 112, 224, 24, 64, 64))
        self.Mixed_4d = Inception(512, (128, 128, 256, 24, 64, 64))
        self.Mixed_4e = Inception(512, (112, 144, 288, 32, 64, 64))
        self.Mixed_4f = Inception(528, (256, 160, 320, 32, 128, 128))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = Inception(832, (256, 160, 320, 32, 128, 128))
        self.Mixed_5c = Inception(832, (384, 192, 384, 48, 128, 128))
        # DeepMind's Logits/Conv3d_0c_1x1 is a 1x1x1 convolution: a linear map per position.
        self.logits = nn.Linear(FEATURE_DIM, num_classes)

    def mixed_5c(self, x: Tensor) -> Tensor:
        """(N, C, T, H, W) input -> (N, 1024, T', H/32, W/32) Mixed_5c map."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects (N, {self.in_channels}, T, H, W) input, got {tuple(x.shape)}")
        for layer in (self.Conv3d_1a_7x7, self.MaxPool3d_2a_3x3, self.Conv3d_2b_1x1,
                      self.Conv3d_2c_3x3, self.MaxPool3d_3a_3x3, self.Mixed_3b, self.Mixed_3c,
                      self.MaxPool3d_4a_3x3, self.Mixed_4b, self.Mixed_4c, self.Mixed_4d,
                      self.Mixed_4e, self.Mixed_4f, self.MaxPool3d_5a_2x2, self.Mixed_5b,
                      self.Mixed_5c):
            x = layer(x)
        return x

    @staticmethod
    def pool(spatial: Tensor) -> Tensor:
        """Mixed_5c map (N, 1024, T', H', W') -> pooled feature (N, 1024).

        Average pool (2, 7, 7), stride 1, VALID (clipped to the map for T' = 1 or small
        inputs), then the mean over the remaining positions.
        """
        kt, kh, kw = (min(k, s) for k, s in zip((2, 7, 7), spatial.shape[2:]))
        return F.avg_pool3d(spatial, (kt, kh, kw), stride=1).mean(dim=(2, 3, 4))

    def forward(self, x: Tensor) -> I3DOutput:
        spatial = self.mixed_5c(x)
        features = self.pool(spatial)
        return I3DOutput(logits=self.logits(features), features=features, spatial=spatial)
