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

import argparse
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from common.annotations import video_instances
from common.plotting import new_figure, save_figure
from extract.features import has_spatial, read_features, read_spatial
from extract.transforms import resize_crop
from extract.video import open_video
from refactor.errors import RefactorError, check_feature_folder
from refactor.model import RefactorNet
from refactor.samples import SampleConfig, collect_samples

__all__ = ["component_cams", "CamResult", "video_cams", "plot_cams", "draw_cams", "add_cam_arguments",
           "cam_options", "checkpoint_samples", "frame_geometry", "grey_reference", "sample_rows",
           "upsample_map", "MAX_DEFAULT_VIDEOS", "MAX_COUPLINGS"]

MAX_DEFAULT_VIDEOS = 8
"""Videos drawn by :func:`draw_cams` when none are named: the first files with ``rgb_spatial`` maps."""

MAX_COUPLINGS = 2
"""With ground truth, each action sample's row is followed by at most this many coupling rows (the most similar)."""


def component_cams(model: RefactorNet, spatial: Tensor, features: Tensor, offset: int = 0,
                   reference: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Grad-CAM maps of the action and co-occurrence components.

    Args:
        model: RefactorNet (used in eval mode; its parameters get no gradient).
        spatial (Tensor[N, 1024, H, W]): Mixed_5c maps of the RGB stream, one per snippet.
        features (Tensor[N, C]): the snippets' full features f (all streams); columns
            ``offset : offset + 1024`` (the RGB stream) are replaced by the spatial mean of
            ``spatial``, through which the gradients flow.
        reference (Tensor[1024, H, W] | None): a neutral input's Mixed_5c map (:func:`grey_reference`);
            when given, the maps are ``ReLU(Σ_c α_c (A_c - R_c))`` with the same weights α: what the
            snippet adds to the component over the neutral input, without I3D's fixed border pattern.

    Returns:
        (action, cooccurrence), each Tensor[N, H, W] >= 0 (unnormalised).
    """
    n, channels, h, w = spatial.shape
    if features.shape[0] != n or features.shape[1] < offset + channels:
        raise ValueError(f"features {tuple(features.shape)} do not hold {channels} RGB channels at {offset} "
                         f"for {n} maps")
    if reference is not None and tuple(reference.shape) != (channels, h, w):
        raise ValueError(f"reference map {tuple(reference.shape)} does not match the maps' {(channels, h, w)}")
    base = None if reference is None else reference.detach().float()[None]
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
            act = a.detach() if base is None else a.detach() - base
            maps.append(torch.relu((alpha * act).sum(dim=1)))
    finally:
        model.train(was_training)
    return maps[0], maps[1]


@functools.lru_cache(maxsize=4)
def grey_reference(crop: int = 224, frames: int = 16, model=None) -> Tensor:
    """Tensor[1024, h, w]: the Mixed_5c map (averaged over its time steps, as ``--spatial`` stores it)
    of the pretrained RGB I3D on a uniform mid-grey clip (pixel value 128, i.e. 0.004 in [-1, 1]) of
    ``frames`` frames at ``crop x crop``.

    On an input without content every difference between grid cells is the network's own: TF "SAME"
    padding puts the extra row / column of its stride-2 layers at the bottom / right, and the map is
    far from flat (measured, 224 crop: the right-hand column holds 78 % of its channel sum, cells (0, 6),
    (1, 6), (6, 6) 13x, 15x and 8x the mean; the left column 1.3 %). DeepMind's own model shows the same
    pattern on real video (``tests/data/jax_i3d_cricket.npz``: (1, 6) 8.4x, (0, 6) 6.3x, (6, 6) 4.1x the mean).

    Args:
        model: the RGB I3D (default :func:`extract.pretrained.load_i3d`'s, fetched on first use).
    """
    from extract.pretrained import load_i3d
    from extract.transforms import to_unit_range

    model = model if model is not None else load_i3d("rgb")
    clip = torch.full((1, 3, frames, crop, crop), 128, dtype=torch.uint8)
    with torch.no_grad():
        return model(to_unit_range(clip)).spatial[0].mean(dim=1)


@dataclass
class CamResult:
    """Maps of some snippets of one video.

    Attributes:
        snippets (ndarray[S] int), times (ndarray[S]): which snippets, their centre times (s).
        action, cooccurrence (ndarray[S, H, W]): Grad-CAM maps.
        frames (ndarray[S, 224, 224, 3] uint8 | None): the centre frame of each snippet, resized and
            cropped as the RGB stream saw it, when the source video could be read.
        labels: what each row is (e.g. ``"action: Loop t=7.60 s"``); None: rows are just snippets.
        action_ref, cooccurrence_ref (ndarray[S, H, W] | None): the maps against a neutral reference
            (:func:`component_cams` with ``reference``), drawn beside the raw maps when present.
    """

    video_id: str
    snippets: np.ndarray
    times: np.ndarray
    action: np.ndarray
    cooccurrence: np.ndarray
    frames: np.ndarray | None
    labels: list[str] | None = None
    action_ref: np.ndarray | None = None
    cooccurrence_ref: np.ndarray | None = None


def sample_rows(features: np.ndarray, times: np.ndarray, instances: list[tuple[float, float, str]],
                samples: SampleConfig | None = None, count: int = 4,
                couplings: int = MAX_COUPLINGS) -> tuple[np.ndarray, list[str]]:
    """The rows of the paper's figure for one video: its action samples and their coupling samples,
    as stage 1 collects them (:func:`refactor.samples.collect_samples` on the same features).

    An action sample pools the snippets whose centre lies in its instance; its row shows the one of
    them whose centre is nearest to the instance's middle. It is followed by its ``couplings`` most
    similar coupling snippets (fewer when stage 1 couples fewer). The first ``count`` action samples
    in time order are drawn.

    Args:
        features (ndarray[T, C]): the snippets' features, as the model reads them (its streams).
        times (ndarray[T]): snippet centre times (s).
        instances: ``(start, end, label)`` per ground-truth instance.
        samples: the coupling rule (default :class:`SampleConfig`'s).

    Returns:
        (snippet indices ndarray[S] int, one label per row: ``"action: <label> t=.. s"``,
        ``"coupling of <label> α=0.83 t=.. s"``).
    """
    samples = samples or SampleConfig()
    if not instances:
        return np.zeros(0, dtype=np.int64), []
    names = sorted({label for _, _, label in instances})
    segments = np.array([(s, e) for s, e, _ in instances], dtype=np.float64)
    labels = np.array([names.index(label) for _, _, label in instances], dtype=np.int64)
    vs = collect_samples("", features, times, segments, labels, samples)
    order = sorted(range(len(instances)), key=lambda m: (segments[m, 0], segments[m, 1]))[:max(count, 0)]
    rows, text = [], []
    for m in order:
        idx = vs.action_snippets[m]
        centre = int(idx[np.argmin(np.abs(times[idx] - segments[m].mean()))])
        rows.append(centre)
        text.append(f"action: {instances[m][2]} t={times[centre]:.2f} s")
        mine = np.flatnonzero(vs.pair_action == m)
        mine = mine[np.argsort(-vs.pair_similarity[mine], kind="stable")][:couplings]
        for p in mine:
            k = int(vs.pair_snippet[p])
            rows.append(k)
            text.append(f"coupling of {instances[m][2]} α={vs.pair_similarity[p]:.2f} t={times[k]:.2f} s")
    return np.asarray(rows, dtype=np.int64), text


def _frames(source: Path, times: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    """ndarray[S, crop, crop, 3] uint8: the source frame on screen at each time, resized and cropped."""
    with open_video(source) as reader:
        idx = np.clip(np.searchsorted(reader.info.starts, times, side="right") - 1, 0, reader.info.num_frames - 1)
        unique = np.unique(idx)
        decoded = dict(reader.frames(unique))
    frames = np.stack([decoded[i] for i in idx])
    return resize_crop(frames, short_side, crop).permute(0, 2, 3, 1).numpy()


def frame_geometry(resize: str) -> tuple[int, int | None]:
    """(short side, crop) from a feature file's ``resize`` attribute (default 256, 224; crop None when
    the attribute says the frames were not cropped)."""
    side = re.search(r"short side (\d+)", resize)
    crop = re.search(r"crop (\w+)", resize)
    return (int(side.group(1)) if side else 256,
            (int(crop.group(1)) if crop.group(1).isdigit() else None) if crop else 224)


def video_cams(model: RefactorNet, path: str | os.PathLike, snippets: np.ndarray | None = None, count: int = 4,
               source: str | os.PathLike | None = None, streams: tuple[str, ...] | None = None,
               instances: list[tuple[float, float, str]] | None = None,
               samples: SampleConfig | None = None, reference: Tensor | None = None) -> CamResult:
    """Maps of ``snippets`` of one feature file, with their frames from ``source`` (default: the
    file's ``source`` attribute, when that video exists).

    Default snippets: with ``instances`` (the video's ground truth, ``(start, end, label)``; an empty
    list counts as given), its action samples and their coupling samples (:func:`sample_rows`, ``count``
    action samples), each row labelled; without, or when the video has no instance, the ``count``
    snippets with the largest action energy ``y_A``.

    Args:
        streams: the streams the model reads, in order (default: every stream of the file).
        samples: the coupling rule stage 1 used (default :class:`SampleConfig`'s).
        reference (Tensor[1024, h, w] | None): a neutral input's Mixed_5c map (:func:`grey_reference`):
            the maps against it are computed too (``action_ref``, ``cooccurrence_ref``).

    Raises:
        ValueError: the file has no ``rgb_spatial`` maps (extract with ``--spatial``) or no RGB stream.
    """
    path = Path(path)
    ff = read_features(path, streams)
    if "rgb" not in ff.streams:
        raise ValueError(f"{path.name}: CAM needs the RGB stream (streams: {', '.join(ff.streams)})")
    if not has_spatial(path, "rgb"):
        raise ValueError(f"{path.name} has no rgb_spatial maps: extract with --spatial")
    feats = torch.from_numpy(ff.features)
    offset = 0                                                                     # rgb comes first
    labels = None
    if snippets is None and instances:
        snippets, labels = sample_rows(ff.features, ff.times, instances, samples, count)
    elif snippets is None:
        with torch.no_grad():
            energy = 0.5 * model.eval()(feats.T[None]).action[0].pow(2).sum(dim=0)
        snippets = np.sort(torch.argsort(energy, descending=True)[:count].numpy())
        if instances is not None:
            labels = [f"largest action energy (no instance) t={ff.times[i]:.2f} s" for i in snippets]
    snippets = np.asarray(snippets, dtype=np.int64)
    if len(snippets) and (snippets.min() < 0 or snippets.max() >= len(feats)):
        raise ValueError(f"{path.name}: snippets must be in [0, {len(feats)})")
    spatial = torch.from_numpy(read_spatial(path, "rgb", snippets))                 # (S, 1024, 7, 7)
    action, cooc = component_cams(model, spatial, feats[snippets], offset)
    action_ref = cooc_ref = None
    if reference is not None:
        action_ref, cooc_ref = (m.numpy() for m in component_cams(model, spatial, feats[snippets], offset, reference))
    times = ff.times[snippets]
    src = Path(source) if source is not None else Path(str(ff.attrs.get("source", "")))
    frames = None
    short_side, crop = frame_geometry(str(ff.attrs.get("resize", "")))
    if src.is_file() and crop is not None:
        frames = _frames(src, times, short_side, crop)
    return CamResult(path.stem, snippets, times, action.numpy(), cooc.numpy(), frames, labels, action_ref, cooc_ref)


def upsample_map(m: np.ndarray, size: int) -> np.ndarray:
    """A (h, w) map on the Mixed_5c grid -> (size, size) over the crop the RGB stream saw.

    Grid cell ``(i, j)`` covers crop pixels ``[i * size / h, (i + 1) * size / h)`` x ``[j * size / w,
    (j + 1) * size / w)`` (the receptive-field centre of a Mixed_5c position of I3D, stride 32 on a 224
    crop, at offset 16: the cell's centre); bilinear interpolation with ``align_corners=False`` puts
    each cell's value exactly at its centre pixel and leaves the image's border half-cells constant.
    """
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def plot_cams(result: CamResult, path: str | os.PathLike) -> Figure:
    """One row per snippet: the frame, the action map and the co-occurrence map over it (each map
    scaled to its own maximum, bilinear upsampling of the 7 x 7 grid by :func:`upsample_map`, row 0 of
    the grid at the top), and, when the result has them, the two maps against the grey reference
    (labelled as such; the raw maps stay). Rows are titled by ``result.labels`` when given. Written as
    PNG atomically."""
    rows = len(result.snippets)
    panels = [("frame", None), ("action", result.action), ("co-occurrence", result.cooccurrence)]
    if result.action_ref is not None and result.cooccurrence_ref is not None:
        panels += [("action − grey ref.", result.action_ref), ("co-occ. − grey ref.", result.cooccurrence_ref)]
    fig = new_figure(2.8 * len(panels) + (1.2 if result.labels else 0.0), 2.7 * max(rows, 1))
    axes = fig.subplots(max(rows, 1), len(panels), squeeze=False)
    size = result.frames.shape[1] if result.frames is not None else 224
    for r in range(rows):
        frame = result.frames[r] if result.frames is not None else np.full((size, size, 3), 128, np.uint8)
        for c, (name, maps) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(frame, origin="upper", extent=(-0.5, size - 0.5, size - 0.5, -0.5))
            if maps is not None:
                m = upsample_map(maps[r], size)
                peak = m.max()
                ax.imshow(m / peak if peak > 0 else m, cmap="jet", alpha=0.5, vmin=0, vmax=1, origin="upper",
                          extent=(-0.5, size - 0.5, size - 0.5, -0.5))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                title = result.labels[r] if result.labels else f"frame  t = {result.times[r]:.2f} s"
            else:
                title = name
            ax.set_title(title, fontsize=8 if result.labels and c == 0 else 9)
    fig.suptitle(f"{result.video_id}: RefactorNet components (Grad-CAM)", fontsize=10)
    save_figure(fig, path)
    return fig


def draw_cams(model: RefactorNet, streams: tuple[str, ...], feature_dir: str | os.PathLike,
              out_dir: str | os.PathLike, videos: list[str] | None = None, snippets: np.ndarray | None = None,
              count: int = 4, source: str | os.PathLike | None = None, annotations=None, subset: str | None = None,
              samples: SampleConfig | None = None,
              reference: str | Tensor | None = None) -> list[tuple[str, list[int], Path, bool]]:
    """CAM figures ``<out_dir>/cam_<video>.png`` of several feature files (what ``python -m refactor cam``
    and ``python -m detect cam`` draw).

    Args:
        model: a RefactorNet (stage 1, or a detector's front).
        streams: the streams it reads, in order (its checkpoint's ``feature_layout``).
        feature_dir: folder of feature files extracted with ``--spatial``.
        videos: video ids to draw (default: the first :data:`MAX_DEFAULT_VIDEOS` files in name order
            that hold ``rgb_spatial`` maps, and, with ``annotations``, that are annotated in ``subset``).
        snippets: snippet indices, the same for every video; overrides everything below.
        count: without ground truth, per video the ``count`` snippets with the largest action energy;
            with it, ``count`` action samples per video, each followed by its (at most
            :data:`MAX_COUPLINGS`) most similar coupling samples (:func:`sample_rows`).
        source: the video file to draw frames from (exactly one video; default: each feature
            file's source attribute).
        annotations: ground truth (path or dict, ActivityNet layout) for the action / coupling rows.
        subset: its subset to use (default: every subset).
        samples: the coupling rule stage 1 used (:func:`checkpoint_samples`; default
            :class:`SampleConfig`'s).
        reference: ``"grey"``: also draw the maps against :func:`grey_reference` (I3D's map of a
            uniform grey clip at the files' crop size; needs the RGB I3D weights), labelled
            "− grey ref." beside the raw maps; or a Tensor[1024, h, w] reference map; None: raw maps only.

    Returns:
        per figure: (video id, snippets drawn, figure path, whether the source frames were found).

    Raises:
        RefactorError: ``feature_dir`` is not an existing folder, no file with ``rgb_spatial`` maps, or
            ``source`` with several videos;
        ValueError (FeatureFileError): a named file is missing, has no maps or no RGB stream;
        AnnotationError: unreadable ground truth.
    """
    folder = check_feature_folder(feature_dir)
    instances = video_instances(annotations, subset) if annotations is not None else None
    if videos:
        files = [folder / f"{v}.h5" for v in videos]
    else:
        files = [f for f in sorted(folder.glob("*.h5")) if has_spatial(f, "rgb")]
        if not files:
            raise RefactorError(f"no feature file in {folder} has rgb_spatial maps (extract with --spatial)")
        if instances is not None:
            files = [f for f in files if f.stem in instances]
            if not files:
                where = f" in subset {subset!r}" if subset is not None else ""
                raise RefactorError(f"no feature file with rgb_spatial maps in {folder} is annotated{where}")
        files = files[:MAX_DEFAULT_VIDEOS]
    if source is not None and len(files) != 1:
        raise RefactorError("--source goes with exactly one video (--videos ID)")
    if isinstance(reference, str) and reference != "grey":
        raise RefactorError(f"reference must be 'grey', got {reference!r}")
    drawn = []
    for f in files:
        mine = instances.get(f.stem, []) if instances is not None else None
        ref = reference
        if isinstance(reference, str):
            _, crop = frame_geometry(str(read_features(f, streams).attrs.get("resize", "")))
            ref = grey_reference(crop or 224)
        result = video_cams(model, f, snippets, count, source, streams, mine, samples, ref)
        dest = Path(out_dir) / f"cam_{f.stem}.png"
        plot_cams(result, dest)
        drawn.append((f.stem, result.snippets.tolist(), dest, result.frames is not None))
    return drawn


def checkpoint_samples(ckpt: dict) -> SampleConfig | None:
    """The coupling rule a stage-1 checkpoint (its ``samples`` entry) was trained with; None when it
    has none (a detector's checkpoint: pass the stage-1 checkpoint it was built from, or accept the
    default)."""
    entry = ckpt.get("samples") if isinstance(ckpt, dict) else None
    return SampleConfig(**entry) if isinstance(entry, dict) else None


def add_cam_arguments(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """Add the arguments of a CAM command to ``p`` (``python -m refactor cam``; ``python -m detect cam``
    takes the same), their values being :func:`draw_cams`'s (:func:`cam_options` turns them into its
    keywords)."""
    p.add_argument("--features", required=True, help="feature files extracted with --spatial (rgb_spatial maps)")
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--out", required=True, help="folder for cam_<video>.png")
    p.add_argument("--videos", default=None,
                   help="comma-separated video ids (default: every file with rgb_spatial, annotated in --subset "
                        "when --annotations is given; at most 8)")
    p.add_argument("--snippets", default=None,
                   help="comma-separated snippet indices, overriding the default rows (default: with --annotations "
                        "the action samples and their coupling samples, otherwise the --count with the largest "
                        "action energy)")
    p.add_argument("--count", type=int, default=4,
                   help="per video: action samples with --annotations (each with its best 2 coupling samples), "
                        "otherwise snippets (default 4)")
    p.add_argument("--source", default=None,
                   help="the video file to draw frames from (one video; default: the feature file's source)")
    p.add_argument("--annotations", default=None,
                   help="ground truth JSON: draw each video's action samples and their coupling samples as "
                        "stage 1 collects them, labelled")
    p.add_argument("--subset", default=None, help="subset of --annotations (default: every subset)")
    p.add_argument("--reference", choices=("grey",), default=None,
                   help="grey: also draw both maps against I3D's map of a uniform grey clip (its fixed bright "
                        "right-hand border, from TF SAME padding, removed), beside the raw maps")


def cam_options(args: argparse.Namespace) -> dict:
    """:func:`draw_cams`'s keywords from arguments added by :func:`add_cam_arguments`:
    ``draw_cams(model, streams, **cam_options(args), samples=...)``."""
    return {"feature_dir": args.features, "out_dir": args.out,
            "videos": args.videos.split(",") if args.videos else None,
            "snippets": np.array([int(i) for i in args.snippets.split(",")]) if args.snippets else None,
            "count": args.count, "source": args.source, "annotations": args.annotations, "subset": args.subset,
            "reference": getattr(args, "reference", None)}
