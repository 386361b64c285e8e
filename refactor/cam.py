"""Grad-CAM maps of RefactorNet's action and co-occurrence components (the paper's qualitative figures).

A snippet's RGB feature is the spatial mean of I3D's Mixed_5c map ``A`` (1024 x 7 x 7, averaged over
its time steps; stored as ``rgb_spatial`` by ``python -m extract --spatial``). For a score ``y`` of
the refactored feature, Grad-CAM (Selvaraju et al., ICCV 2017) weighs each channel by its mean
gradient, ``α_c = mean_xy ∂y/∂A_c(x, y)``, and maps ``ReLU(Σ_c α_c A_c(x, y))``. The scores are the
energies of the two components, ``y_A = ½ ||φA(f)||²`` and ``y_C = ½ ||μ_C(f)||²`` (μ: the
co-occurrence component in eval mode), so the action map shows where in the frame the action
component comes from, the co-occurrence map where the context comes from. Other streams (flow)
enter ``f`` unchanged and get no map.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from refactor.model import RefactorNet

__all__ = ["component_cams", "CamResult", "video_cams", "plot_cams"]


def component_cams(model: RefactorNet, spatial: Tensor, features: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
    """Grad-CAM maps of the action and co-occurrence components.

    Args:
        model: RefactorNet (used in eval mode; its parameters get no gradient).
        spatial (Tensor[N, 1024, H, W]): Mixed_5c maps of the RGB stream, one per snippet.
        features (Tensor[N, C]): the snippets' full features f (all streams); columns
            ``offset : offset + 1024`` (the RGB stream) are replaced by the spatial mean of
            ``spatial``, through which the gradients flow.

    Returns:
        (action, cooccurrence), each Tensor[N, H, W] >= 0 (unnormalised).
    """
    n, channels, h, w = spatial.shape
    if features.shape[0] != n or features.shape[1] < offset + channels:
        raise ValueError(f"features {tuple(features.shape)} do not hold {channels} RGB channels at {offset} for {n} maps")
    was_training = model.training
    model.eval()
    maps = []
    try:
        for part in ("action", "cooccurrence"):
            a = spatial.detach().float().clone().requires_grad_(True)
            f = features.detach().float().clone()
            f = torch.cat([f[:, :offset], a.mean(dim=(2, 3)), f[:, offset + channels:]], dim=1)
            out = model(f[:, :, None])
            comp = out.action if part == "action" else out.mu
            score = 0.5 * comp.pow(2).sum()
            (grad,) = torch.autograd.grad(score, a)
            alpha = grad.mean(dim=(2, 3), keepdim=True)                         # (N, C, 1, 1)
            maps.append(torch.relu((alpha * a.detach()).sum(dim=1)))
    finally:
        model.train(was_training)
    return maps[0], maps[1]


@dataclass
class CamResult:
    """Maps of some snippets of one video.

    Attributes:
        snippets (ndarray[S] int), times (ndarray[S]): which snippets, their centre times (s).
        action, cooccurrence (ndarray[S, H, W]): Grad-CAM maps.
        frames (ndarray[S, 224, 224, 3] uint8 | None): the centre frame of each snippet, resized and
            cropped as the RGB stream saw it, when the source video could be read.
    """

    video_id: str
    snippets: np.ndarray
    times: np.ndarray
    action: np.ndarray
    cooccurrence: np.ndarray
    frames: np.ndarray | None


def _frames(source: Path, times: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    from extract.transforms import resize_crop
    from extract.video import open_video

    with open_video(source) as reader:
        idx = np.clip(np.searchsorted(reader.info.starts, times, side="right") - 1, 0, reader.info.num_frames - 1)
        unique = np.unique(idx)
        decoded = dict(reader.frames(unique))
    frames = np.stack([decoded[i] for i in idx])
    return resize_crop(frames, short_side, crop).permute(0, 2, 3, 1).numpy()


def _geometry(resize: str) -> tuple[int, int | None]:
    """(short side, crop) from a feature file's ``resize`` attribute (default 256, 224)."""
    import re

    side = re.search(r"short side (\d+)", resize)
    crop = re.search(r"crop (\w+)", resize)
    return (int(side.group(1)) if side else 256,
            (int(crop.group(1)) if crop.group(1).isdigit() else None) if crop else 224)


def video_cams(model: RefactorNet, path: str | os.PathLike, snippets: np.ndarray | None = None, count: int = 4,
               source: str | os.PathLike | None = None, streams: tuple[str, ...] | None = None) -> CamResult:
    """Maps of ``snippets`` of one feature file (default: the ``count`` snippets with the largest
    action energy ``y_A``), with their frames from ``source`` (default: the file's ``source``
    attribute, when that video exists).

    Raises:
        ValueError: the file has no ``rgb_spatial`` maps (extract with ``--spatial``) or no RGB stream.
    """
    import h5py

    from extract.features import read_features

    path = Path(path)
    ff = read_features(path, streams)
    if "rgb" not in ff.streams:
        raise ValueError(f"{path.name}: CAM needs the RGB stream (streams: {', '.join(ff.streams)})")
    with h5py.File(path, "r") as h5:
        if "rgb_spatial" not in h5:
            raise ValueError(f"{path.name} has no rgb_spatial maps: extract with --spatial")
        spatial_ds = h5["rgb_spatial"]
        feats = torch.from_numpy(ff.features)
        offset = 0                                                                 # rgb comes first
        if snippets is None:
            with torch.no_grad():
                energy = 0.5 * model.eval()(feats.T[None]).action[0].pow(2).sum(dim=0)
            snippets = np.sort(torch.argsort(energy, descending=True)[:count].numpy())
        snippets = np.asarray(snippets, dtype=np.int64)
        if len(snippets) and (snippets.min() < 0 or snippets.max() >= len(feats)):
            raise ValueError(f"{path.name}: snippets must be in [0, {len(feats)})")
        spatial = torch.from_numpy(np.stack([spatial_ds[int(i)] for i in snippets]).astype(np.float32))
    action, cooc = component_cams(model, spatial, feats[snippets], offset)
    times = ff.times[snippets]
    src = Path(source) if source is not None else Path(str(ff.attrs.get("source", "")))
    frames = None
    short_side, crop = _geometry(str(ff.attrs.get("resize", "")))
    if src.is_file() and crop is not None:
        frames = _frames(src, times, short_side, crop)
    return CamResult(path.stem, snippets, times, action.numpy(), cooc.numpy(), frames)


def plot_cams(result: CamResult, path: str | os.PathLike):
    """One row per snippet: the frame, the action map and the co-occurrence map over it (each map
    scaled to its own maximum, bilinear upsampling of the 7 x 7 grid)."""
    import torch.nn.functional as F

    from evaluate.plots import _figure, save_figure

    rows = len(result.snippets)
    fig = _figure(8.4, 2.7 * max(rows, 1))
    axes = fig.subplots(max(rows, 1), 3, squeeze=False)
    size = result.frames.shape[1] if result.frames is not None else 224
    for r in range(rows):
        frame = result.frames[r] if result.frames is not None else np.full((size, size, 3), 128, np.uint8)
        for c, (name, maps) in enumerate((("frame", None), ("action", result.action), ("co-occurrence", result.cooccurrence))):
            ax = axes[r, c]
            ax.imshow(frame)
            if maps is not None:
                m = torch.from_numpy(maps[r])[None, None]
                m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
                peak = m.max()
                ax.imshow(m / peak if peak > 0 else m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}" + (f"  t = {result.times[r]:.2f} s" if c == 0 else ""), fontsize=9)
    fig.suptitle(f"{result.video_id}: RefactorNet components (Grad-CAM)", fontsize=10)
    save_figure(fig, path)
    return fig
