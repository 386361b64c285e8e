"""How much of each RefactorNet component's Grad-CAM mass falls on the actor (issue 10; paper Figure 4).

The paper claims φA looks at the action and φC at the scene. On a rendered world
(:mod:`detect.world`) the actor's box is known in every frame, so the claim can be measured: for a
snippet, the share of a Grad-CAM map's mass (:func:`refactor.cam.component_cams`) that lies inside
the actor's box.

Geometry (exactly as extraction prepared the frames, :mod:`extract.transforms`): a frame of
``width x height`` pixels is resized so its short side is ``short_side`` (scale ``W'/width``,
``H'/height`` with the rounded resized size), then centre-cropped to ``crop x crop`` at
:func:`extract.transforms.crop_offsets`. A box ``x0, y0, x1, y1`` (pixel edges, ``x1`` / ``y1``
exclusive) becomes ``x * W'/width - left`` etc. in crop pixels, clipped to the crop. The Mixed_5c map
is an ``h x w`` grid (7 x 7) over the crop; cell ``(i, j)`` covers crop pixels ``[i * crop/h,
(i + 1) * crop/h) x [j * crop/w, (j + 1) * crop/w)`` and its mass is taken as spread uniformly over
that square. The share inside a box is therefore ``Σ m_ij * area(cell_ij ∩ box) / area(cell) / Σ m``:
exact for that reading of the map, independent of any drawing.

The box of a snippet (``box="union"``, the default) is the union of the actor's boxes over the
snippet's frames: a snippet's Mixed_5c map is averaged over its 16 frames, so the actor anywhere in
them may contribute. ``box="centre"`` takes the box at the snippet's centre frame instead (the frame
the CAM figure shows). Beside every share stands its *chance level*: the box's area as a fraction
of the crop, what a map spread evenly over the crop would give. A box that lies entirely outside
the crop (the world's actor can walk out of the centre crop) has no share (NaN) and is counted apart.

Samples are those stage 1 collects (:func:`refactor.samples.collect_samples`): *action* rows are
every snippet pooled into an action sample, *coupling* rows every distinct coupling snippet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from common.annotations import video_instances
from extract.features import read_features, read_spatial
from extract.transforms import crop_offsets, resized_size
from refactor.cam import checkpoint_samples, component_cams, frame_geometry, grey_reference
from refactor.model import RefactorNet
from refactor.samples import SampleConfig, collect_samples
from refactor.train import load_refactor

__all__ = ["box_to_crop", "snippet_boxes", "box_share", "cam_box_share", "cam_box_share_world",
           "summarise_shares", "format_share_report"]


def box_to_crop(boxes: np.ndarray, width: int, height: int, short_side: int = 256, crop: int = 224) -> np.ndarray:
    """Boxes ``(..., 4)`` ``x0, y0, x1, y1`` in frame pixels (edges) -> the same in crop pixels, clipped
    to ``[0, crop]`` (an empty box has ``x1 <= x0`` or ``y1 <= y0``)."""
    nh, nw = resized_size(height, width, short_side)
    top, left = crop_offsets(nh, nw, crop)
    b = np.asarray(boxes, dtype=np.float64)
    sx, sy = nw / width, nh / height
    out = np.stack([b[..., 0] * sx - left, b[..., 1] * sy - top, b[..., 2] * sx - left, b[..., 3] * sy - top], -1)
    return np.clip(out, 0.0, float(crop))


def snippet_boxes(boxes: np.ndarray, frame_fps: float, snippets: np.ndarray, fps: float, window: int, stride: int,
                  num_frames: int, mode: str = "union") -> np.ndarray:
    """The actor's box of each snippet, in frame pixels.

    Args:
        boxes (ndarray[F, 4]): the actor's box in every frame of the video (frame ``k`` at ``k / frame_fps``).
        snippets: snippet indices of a feature file sampled at ``fps`` with ``window`` / ``stride``, of
            ``num_frames`` sampled frames (frames past the end repeat the last one).
        mode: ``"union"`` over the snippet's sampled frames, or ``"centre"``: the frame at its centre time.

    Returns:
        ndarray[S, 4] float: ``x0, y0, x1, y1``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if mode not in ("union", "centre"):
        raise ValueError(f"mode must be 'union' or 'centre', got {mode!r}")

    def frame_of(sampled: np.ndarray) -> np.ndarray:      # the source frame on screen at k / fps
        k = np.minimum(sampled, num_frames - 1)
        return np.clip(np.floor(k / fps * frame_fps + 0.25).astype(np.int64), 0, len(boxes) - 1)

    out = np.zeros((len(snippets), 4))
    for r, i in enumerate(np.asarray(snippets, dtype=np.int64)):
        if mode == "centre":
            centre = (i * stride + window / 2) / fps
            out[r] = boxes[int(np.clip(np.floor(centre * frame_fps + 0.25), 0, len(boxes) - 1))]
        else:
            b = boxes[frame_of(np.arange(i * stride, i * stride + window))]
            out[r] = [b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]
    return out


def box_share(maps: np.ndarray, boxes: np.ndarray, crop: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Share of each map's mass inside its box, with its chance level.

    Args:
        maps (ndarray[S, h, w]) >= 0: maps on the grid over the ``crop x crop`` crop.
        boxes (ndarray[S, 4]): boxes in crop pixels (:func:`box_to_crop`).

    Returns:
        (share ndarray[S], box area / crop area ndarray[S]); share is NaN for an empty box or a map
        without mass.
    """
    maps = np.asarray(maps, dtype=np.float64)
    s, h, w = maps.shape
    ys, xs = np.arange(h + 1) * crop / h, np.arange(w + 1) * crop / w
    share, chance = np.full(s, np.nan), np.zeros(s)
    for r in range(s):
        x0, y0, x1, y1 = boxes[r]
        if x1 <= x0 or y1 <= y0:
            continue
        oy = np.clip(np.minimum(ys[1:], y1) - np.maximum(ys[:-1], y0), 0, None) / (crop / h)   # (h,) fraction
        ox = np.clip(np.minimum(xs[1:], x1) - np.maximum(xs[:-1], x0), 0, None) / (crop / w)   # (w,)
        total = maps[r].sum()
        chance[r] = (x1 - x0) * (y1 - y0) / crop ** 2
        if total > 0:
            share[r] = float((maps[r] * oy[:, None] * ox[None, :]).sum() / total)
    return share, chance


def cam_box_share(model: RefactorNet, streams: tuple[str, ...], feature_file: str | os.PathLike, boxes: np.ndarray,
                  instances: list[tuple[float, float, str]], frame_size: tuple[int, int], frame_fps: float,
                  samples: SampleConfig | None = None, box: str = "union",
                  reference: torch.Tensor | None = None) -> dict:
    """Shares of the action and co-occurrence Grad-CAM mass inside the actor's box, for the action and
    coupling samples stage 1 collects in one video.

    Args:
        model, streams: the RefactorNet and the streams it reads (its checkpoint's ``feature_layout``).
        feature_file: the video's feature file, extracted with ``--spatial``.
        boxes (ndarray[F, 4]): the actor's box per source frame (``boxes.npz`` of :mod:`detect.world`).
        instances: the video's ground truth, ``(start, end, label)`` in seconds.
        frame_size: (width, height) of the source frames; frame_fps: their rate.
        samples: stage 1's coupling rule (default :class:`SampleConfig`'s).
        box: ``"union"`` or ``"centre"`` (:func:`snippet_boxes`).
        reference (Tensor[1024, h, w] | None): measure the maps against this neutral map
            (:func:`refactor.cam.grey_reference`) instead of the raw maps.

    Returns:
        ``{"video_id", "rows": [{"kind": "action" | "coupling", "label", "snippet", "time",
        "share_action", "share_cooccurrence", "chance", "in_crop"}]}``; a share is None where the box
        lies outside the crop.
    """
    path = Path(feature_file)
    ff = read_features(path, streams)
    width, height = frame_size
    short_side, crop = frame_geometry(str(ff.attrs.get("resize", "")))
    if crop is None:
        raise ValueError(f"{path.name}: frames were not centre-cropped; the grid cannot be placed")
    rows: list[dict] = []
    if instances:
        names = sorted({label for _, _, label in instances})
        segments = np.array([(s, e) for s, e, _ in instances], dtype=np.float64)
        labels = np.array([names.index(label) for _, _, label in instances], dtype=np.int64)
        vs = collect_samples(path.stem, ff.features, ff.times, segments, labels, samples or SampleConfig())
        for m, idx in enumerate(vs.action_snippets):
            rows += [{"kind": "action", "label": instances[m][2], "snippet": int(i)} for i in idx]
        seen: set[int] = set()
        for a, i in zip(vs.pair_action.tolist(), vs.pair_snippet.tolist()):
            if i not in seen:
                seen.add(i)
                rows.append({"kind": "coupling", "label": instances[a][2], "snippet": int(i)})
    if not rows:
        return {"video_id": path.stem, "rows": []}
    idx = np.array([r["snippet"] for r in rows], dtype=np.int64)
    spatial = torch.from_numpy(read_spatial(path, "rgb", idx))
    feats = torch.from_numpy(ff.features[idx])
    action, cooc = component_cams(model, spatial, feats, streams.index("rgb") * spatial.shape[1], reference)
    frame_boxes = snippet_boxes(boxes, frame_fps, idx, ff.fps, ff.window, ff.stride, ff.num_frames, box)
    crop_boxes = box_to_crop(frame_boxes, width, height, short_side, crop)
    share_a, chance = box_share(action.numpy(), crop_boxes, crop)
    share_c, _ = box_share(cooc.numpy(), crop_boxes, crop)
    for r, row in enumerate(rows):
        inside = bool(chance[r] > 0)
        row.update({"time": float(ff.times[row["snippet"]]), "chance": float(chance[r]), "in_crop": inside,
                    "share_action": float(share_a[r]) if inside and np.isfinite(share_a[r]) else None,
                    "share_cooccurrence": float(share_c[r]) if inside and np.isfinite(share_c[r]) else None})
    return {"video_id": path.stem, "rows": rows}


def summarise_shares(videos: list[dict]) -> dict:
    """Per sample kind: ``n`` (rows with the actor in the crop), ``outside`` (rows without), the mean and
    median share of each component, and the mean chance level."""
    out = {}
    for kind in ("action", "coupling"):
        rows = [r for v in videos for r in v["rows"] if r["kind"] == kind]
        ok = [r for r in rows if r["in_crop"] and r["share_action"] is not None and r["share_cooccurrence"] is not None]
        a = np.array([r["share_action"] for r in ok])
        c = np.array([r["share_cooccurrence"] for r in ok])
        ch = np.array([r["chance"] for r in ok])
        out[kind] = {"n": len(ok), "outside": len(rows) - len(ok),
                     "action_mean": float(a.mean()) if len(ok) else None,
                     "action_median": float(np.median(a)) if len(ok) else None,
                     "cooccurrence_mean": float(c.mean()) if len(ok) else None,
                     "cooccurrence_median": float(np.median(c)) if len(ok) else None,
                     "chance_mean": float(ch.mean()) if len(ok) else None}
    return out


def _load_world(world: Path) -> tuple[dict[str, np.ndarray], tuple[int, int], float]:
    cfg = json.loads((world / "world.json").read_text())
    with np.load(world / "boxes.npz") as z:
        boxes = {k: z[k] for k in z.files}
    return boxes, (int(cfg["width"]), int(cfg["height"])), float(cfg["fps"])


def cam_box_share_world(world: str | os.PathLike, feature_dir: str | os.PathLike, refactor: str | os.PathLike,
                        detector: str | os.PathLike | None = None, subset: str | None = "validation", seed: int = 0,
                        box: str = "union", reference: bool = False) -> dict:
    """:func:`cam_box_share` over every video of a rendered world (``python -m detect.world``) that has
    a feature file, for the stage-1 RefactorNet ``refactor``, an untrained RefactorNet of the same
    config (``torch.manual_seed(seed)``), and, when given, a detector's RefactorNet front. Samples
    follow the stage-1 checkpoint's coupling rule. ``reference``: measure the maps against
    :func:`refactor.cam.grey_reference` (needs the RGB I3D weights) instead of the raw maps.

    Returns:
        ``{"box": box, "subset": subset, "models": {name: {"summary": summarise_shares(...),
        "videos": [...]}}}`` with names ``trained``, ``untrained`` (and ``detector``).
    """
    world, folder = Path(world), Path(feature_dir)
    boxes, size, frame_fps = _load_world(world)
    instances = video_instances(world / "annotations.json", subset)
    trained, ckpt = load_refactor(refactor)
    streams = tuple(ckpt["feature_layout"]["streams"])
    samples = checkpoint_samples(ckpt)
    torch.manual_seed(seed)
    models = {"trained": trained, "untrained": RefactorNet(trained.config).eval()}
    if detector is not None:
        from detect.checkpoint import load_detector

        det, dckpt = load_detector(detector)
        if not isinstance(det.front, RefactorNet):
            raise ValueError(f"{detector} has no RefactorNet front")
        if tuple(dckpt["feature_layout"]["streams"]) != streams:
            raise ValueError(f"{detector} reads {dckpt['feature_layout']['streams']}, {refactor} reads {streams}")
        models["detector"] = det.front.eval()
    videos = [v for v in sorted(instances) if (folder / f"{v}.h5").is_file() and v in boxes]
    report = {"box": box, "subset": subset, "videos": videos, "reference": "grey" if reference else None, "models": {}}
    ref = None
    if reference and videos:
        _, crop = frame_geometry(str(read_features(folder / f"{videos[0]}.h5", streams).attrs.get("resize", "")))
        ref = grey_reference(crop or 224)
    for name, model in models.items():
        per_video = [cam_box_share(model, streams, folder / f"{v}.h5", boxes[v], instances[v], size, frame_fps,
                                   samples, box, ref) for v in videos]
        report["models"][name] = {"summary": summarise_shares(per_video), "videos": per_video}
    return report


def format_share_report(report: dict) -> str:
    """The summary of :func:`cam_box_share_world` as a table for people (percent)."""
    def pct(x):
        return "   -" if x is None else f"{100 * x:5.1f}"

    what = "maps against the grey reference" if report.get("reference") else "raw maps"
    lines = [f"Grad-CAM mass inside the actor's box ({what}; {report['box']} box of each snippet; subset "
             f"{report['subset']}; {len(report['videos'])} videos); mean (median) %",
             f"{'model':<10} {'samples':<9} {'n':>4} {'out':>4} {'φA':>15} {'μ_C':>15} {'chance':>7}"]
    for name, entry in report["models"].items():
        for kind, s in entry["summary"].items():
            lines.append(f"{name:<10} {kind:<9} {s['n']:>4} {s['outside']:>4} "
                         f"{pct(s['action_mean']):>7} ({pct(s['action_median'])}) "
                         f"{pct(s['cooccurrence_mean']):>7} ({pct(s['cooccurrence_median'])}) "
                         f"{pct(s['chance_mean']):>7}")
    return "\n".join(lines)
