"""Inference: feature files to detections in the ActivityNet results layout of CONVENTIONS.md.

Per video: boundary probabilities -> proposals (:mod:`detect.proposals`, at most
``max_proposals``) -> heads on RoI-pooled features -> refined boundaries (regression) -> scores ->
Soft-NMS -> seconds.

* ``mode="thumos"``: every (proposal, class) is a detection with confidence
  ``P(class | proposal) x sigmoid(completeness_class)``; Gaussian Soft-NMS per class
  (σ 0.5), at most ``top_k`` (200) per video.
* ``mode="anet"``: class-agnostic proposals with confidence ``Σ_k P(k) sigmoid(c_k)`` (the
  probability that the proposal is a complete action of some class), Soft-NMS (σ 0.5), at most
  ``top_k`` (100), then fused with video-level class scores (a CUHK-style file given as
  ``video_scores``; without one, the detector's own class probabilities averaged over the kept
  proposals, weighted by their confidence): each of the video's ``top_classes`` (2) best classes
  labels every proposal, scored proposal confidence x class score.

Videos are processed ``batch_size`` at a time, padded to the longest; padding never changes a
result (the model zeroes every layer past a sequence's length).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.annotations import same_subset
from common.predictions import write_predictions as write_prediction_file
from detect.checkpoint import load_detector
from detect.config import DetectorError, InferenceConfig
from detect.data import DetectDataError, VideoRecord, read_window, scan_videos
from detect.fusion import fuse_video_scores, load_video_scores
from detect.labels import decode_regression
from detect.model import Detector
from detect.nms import batched_soft_nms, soft_nms
from detect.proposals import generate_proposals

__all__ = ["InferenceConfig", "detect_batch", "run_detector", "write_predictions", "Detection",
           "boundary_probabilities", "subset_members", "PREDICTIONS_VERSION"]

PREDICTIONS_VERSION = "refactornet-detect 0.1"      # the ``version`` of the prediction files written here


@dataclass
class Detection:
    """One detection: class name, confidence and ``(start, end)`` in seconds."""

    label: str
    score: float
    segment: tuple[float, float]

    def to_json(self) -> dict:
        """The entry of a prediction file: ``{"label", "score", "segment": [start, end]}`` (seconds)."""
        return {"label": self.label, "score": float(self.score),
                "segment": [float(self.segment[0]), float(self.segment[1])]}


@torch.no_grad()
def _video_outputs(model: Detector, x: torch.Tensor, lengths: list[int]):
    """Per-video proposals (ndarray[P_i, 2], snippet indices), all of them as rois (P, 3), and the
    heads' outputs on them, for a padded batch (B, C, T)."""
    cfg = model.config
    len_t = torch.as_tensor(lengths, device=x.device)
    enc = model.encode(x, len_t)
    prob = torch.sigmoid(enc.boundary_logits).float().cpu().numpy()
    per_video = [generate_proposals(prob[i, 1, :n], prob[i, 2, :n], cfg.max_duration, cfg.max_proposals,
                                    cfg.candidate_ratio)[0].astype(np.float64) for i, n in enumerate(lengths)]
    rois = np.concatenate([np.concatenate([np.full((len(s), 1), i, dtype=np.float64), s], axis=1)
                           for i, s in enumerate(per_video)]).reshape(-1, 3)
    rois_t = torch.as_tensor(rois, dtype=x.dtype, device=x.device)
    heads = model.heads(enc, rois_t)
    return per_video, rois_t, heads


def detect_batch(model: Detector, videos: list[VideoRecord], feats: list[np.ndarray], classes: list[str],
                 config: InferenceConfig, video_scores: dict[str, dict[str, float]] | None = None,
                 device: str | torch.device = "cpu") -> dict[str, list[Detection]]:
    """Detections of a few videos processed as one padded batch.

    Args:
        feats: per video, ndarray[T_i, C] features (the model's feature layout).
        video_scores: anet mode, ``{video_id: {label: score}}``; videos missing from it use the
            detector's own class probabilities.
    """
    device = torch.device(device)
    lengths = [len(f) for f in feats]
    x = np.zeros((len(feats), max(lengths), feats[0].shape[1]), dtype=np.float32)
    for i, f in enumerate(feats):
        x[i, :len(f)] = f
    x_t = torch.from_numpy(x).to(device).transpose(1, 2)
    per_video, rois, heads = _video_outputs(model, x_t, lengths)
    if config.regress:
        refined = decode_regression(rois[:, 1:].double(), heads.regression.double())
    else:
        refined = rois[:, 1:].double()
    conf = heads.confidence().double()                                                  # (P, K)
    cls_prob = torch.softmax(heads.class_logits.double(), dim=1)[:, 1:]
    out: dict[str, list[Detection]] = {}
    first = 0
    for v, seg in zip(videos, per_video):
        sl = slice(first, first + len(seg))
        first += len(seg)
        times = torch.as_tensor(v.axis.to_time(refined[sl].cpu().numpy())).clamp(0, v.duration)   # (P, 2) seconds
        times[:, 1] = torch.maximum(times[:, 1], times[:, 0])
        c = conf[sl].cpu()
        if config.mode == "thumos":
            k = c.shape[1]
            flat = c.reshape(-1)
            segs = times.repeat_interleave(k, dim=0)
            groups = torch.arange(k).repeat(len(times))
            keep_mask = flat > config.min_score
            idx = torch.nonzero(keep_mask).flatten()
            kept, scores = batched_soft_nms(segs[idx], flat[idx], groups[idx], sigma=config.sigma,
                                            top_k_per_group=config.keep, top_k=config.keep)
            sel = idx[kept]
            out[v.video_id] = [Detection(classes[int(groups[j])], float(s), (float(segs[j, 0]), float(segs[j, 1])))
                               for j, s in zip(sel.tolist(), scores.tolist())]
        else:
            agnostic = c.sum(dim=1)
            idx = torch.nonzero(agnostic > config.min_score).flatten()
            kept, scores = soft_nms(times[idx], agnostic[idx], sigma=config.sigma, top_k=config.keep)
            sel = idx[kept]
            if video_scores is not None and v.video_id in video_scores:
                vs = video_scores[v.video_id]
            else:
                w = agnostic[sel]
                p = cls_prob[sl].cpu()[sel]
                p = p / p.sum(dim=1, keepdim=True).clamp(min=1e-12)
                mean = (w[:, None] * p).sum(0) / w.sum().clamp(min=1e-12)
                vs = {classes[j]: float(mean[j]) for j in range(len(classes))}
            dets = fuse_video_scores(times[sel].numpy(), scores.numpy(), vs, config.top_classes)
            out[v.video_id] = [Detection(lab, float(s), (float(a), float(b))) for lab, s, a, b in dets]
    return out


@torch.no_grad()
def boundary_probabilities(model: Detector, features: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Actionness, start and end probabilities (ndarray[3, T]) of one video's (T, C) features."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device).T[None]
    return torch.sigmoid(model.encode(x).boundary_logits[0]).float().cpu().numpy()


def write_predictions(path: str | os.PathLike, results: dict[str, list[Detection]], meta: dict | None = None) -> Path:
    """Write detections as a prediction file (:func:`common.predictions.write_predictions`, atomic), with
    ``meta`` as its ``external_data``."""
    return write_prediction_file(path, {vid: [d.to_json() for d in dets] for vid, dets in results.items()},
                                 version=PREDICTIONS_VERSION, external_data=meta)


def subset_members(ckpt: dict, subset: str) -> set[str]:
    """The video ids of ``subset`` of a detector checkpoint's training annotations (its ``subsets``), the name
    matched without regard to case (CONVENTIONS.md; spellings that differ only in case are one subset);
    :class:`DetectorError` naming the subsets there are if it has none of that name."""
    subsets = ckpt.get("subsets") or {}
    names = [name for name in subsets if same_subset(name, subset)]
    if not names:
        raise DetectorError(f"the checkpoint's annotations have no subset {subset!r} "
                            f"(subsets: {', '.join(sorted(map(str, subsets))) or 'none'})")
    return {vid for name in names for vid in subsets[name]}


def run_detector(checkpoint: str | os.PathLike, feature_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 subset: str | None = None, config: InferenceConfig | None = None, device: str = "cpu",
                 video_scores: str | os.PathLike | dict | None = None, video_ids: set[str] | None = None,
                 progress: bool | None = None, failures: dict[Path, str] | None = None) -> dict[str, list[Detection]]:
    """Detections for the feature files of a folder (``subset``: only the videos of that subset
    of the training annotations, as recorded in the checkpoint, the name matched without regard to case:
    :func:`subset_members`); writes ``out`` if given.

    Args:
        config: post-processing (default: the checkpoint's).
        video_scores: anet mode, a CUHK-style video classification file (see detect.fusion).
        failures: if given, unreadable feature files are recorded here (path -> reason) and
            skipped, and the other videos still get detections; otherwise the first one raises.
    """
    model, ckpt = load_detector(checkpoint, device)
    config = config or InferenceConfig.from_dict(ckpt.get("inference", {}))
    layout = ckpt["feature_layout"]
    streams = tuple(layout["streams"])
    ids = video_ids
    if subset is not None:
        members = subset_members(ckpt, subset)
        ids = members if ids is None else ids & members
    try:
        videos, _, _, dim = scan_videos(feature_dir, streams, video_ids=ids, failures=failures,
                                        temporal_scale=model.config.temporal_scale, expected_dim=layout["dim"])
    except DetectDataError as exc:
        raise DetectorError(str(exc)) from exc
    if dim != layout["dim"]:
        raise DetectorError(f"the features in {feature_dir} are {dim}-d, the checkpoint expects {layout['dim']}-d "
                            f"({'+'.join(streams)})")
    scores = None
    if video_scores is not None:
        scores = load_video_scores(video_scores)
    classes = list(ckpt["classes"])
    order = sorted(range(len(videos)), key=lambda i: videos[i].num_snippets)
    results: dict[str, list[Detection]] = {}
    show = not ((progress is False) or (progress is None and not sys.stderr.isatty()))
    with tqdm(total=len(videos), desc="detect", unit="video", disable=not show) as bar:
        for first in range(0, len(order), config.batch_size):
            batch, feats = [], []
            for i in order[first:first + config.batch_size]:
                try:
                    feats.append(read_window(videos[i], streams, 0, videos[i].num_snippets))
                    batch.append(videos[i])
                except DetectDataError as exc:
                    if failures is None:
                        raise DetectorError(str(exc)) from exc
                    failures[videos[i].path] = str(exc)
            if batch:
                results.update(detect_batch(model, batch, feats, classes, config, scores, device))
            bar.update(len(batch))
    results = {v.video_id: results[v.video_id] for v in videos if v.video_id in results}        # file order
    if out is not None:
        write_predictions(out, results, {"checkpoint": str(Path(checkpoint).resolve()), "inference": asdict(config)})
    return results
