"""Validation during detector training (``detect train --val-subset NAME``): average mAP of the model
being trained on a subset's feature files, the per-epoch log next to the checkpoint, and its figure.

* :class:`Validator`: reads the subset's ground truth and feature records once; called with the
  model, it detects (:func:`detect.infer.detect_batch`, the run's inference settings), scores with
  :func:`evaluate.detection.evaluate_detection` and returns ``{"val_average_mAP": x, "val_mAP": [...]}``
  (fractions in [0, 1]; one entry per tIoU of ``TrainConfig.val_tiou``).
* :func:`write_log`: the history as JSON lines (one object per epoch: ``epoch``, the losses
  and the validation entries on validated epochs), written whole and atomically after
  every epoch, so a resumed run's log is that of an uninterrupted one.
* :func:`plot_validation`: average mAP per validated epoch (``--plot DIR``: ``DIR/val_map.png``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from common.annotations import AnnotationError, load_ground_truth, read_database, same_subset
from common.fileio import atomic_path
from common.plotting import new_figure, save_figure
from common.predictions import load_predictions
from detect.config import DetectorError, InferenceConfig
from detect.data import DetectDataError, read_window, scan_videos
from detect.infer import detect_batch
from detect.model import Detector
from evaluate.data import parse_thresholds
from evaluate.detection import evaluate_detection

__all__ = ["Validator", "write_log", "read_log", "plot_validation", "VAL_KEY", "best_entry"]

VAL_KEY = "val_average_mAP"


class Validator:
    """Average mAP of a model on the feature files of one annotated subset.

    Args:
        feature_dir, annotations: as for training (every video of ``subset`` needs a feature file).
        subset: the validation subset (matched without regard to case).
        classes: the detector's classes (the training classes, in its order).
        streams: the streams the detector reads.
        temporal_scale: the detector's (``DetectorConfig.temporal_scale``).
        inference: post-processing (the checkpoint's settings).
        tiou: thresholds, ``start:stop:step`` or a comma list.
    """

    def __init__(self, feature_dir: str | os.PathLike, annotations, subset: str, classes: list[str],
                 streams: tuple[str, ...], temporal_scale: int | None, inference: InferenceConfig,
                 tiou: str, device: str | torch.device = "cpu"):
        database = read_database(annotations)
        ids = [v for v, e in database.items() if same_subset(e["subset"], subset)]
        if not ids:
            raise DetectorError(f"--val-subset: the annotations have no video in subset {subset!r}")
        try:
            self.videos, _, _, _ = scan_videos(feature_dir, streams, video_ids=set(ids), temporal_scale=temporal_scale)
        except DetectDataError as exc:
            raise DetectorError(f"--val-subset {subset}: {exc}") from exc
        missing = sorted(set(ids) - {v.video_id for v in self.videos})
        if missing:
            raise DetectorError(f"--val-subset {subset}: {len(missing)} of its {len(ids)} videos have no feature file "
                                f"in {feature_dir} (e.g. {missing[0]})")
        try:
            self.gt = load_ground_truth(annotations, subset)
            self.thresholds = parse_thresholds(tiou)
        except (AnnotationError, ValueError) as exc:
            raise DetectorError(f"--val-subset {subset}: {exc}") from exc
        self.classes, self.streams, self.inference = list(classes), tuple(streams), inference
        self.device = torch.device(device)
        self.subset = subset

    @torch.no_grad()
    def __call__(self, model: Detector) -> dict:
        """``{"val_average_mAP": x, "val_mAP": [per tIoU]}`` of ``model`` (left in eval mode)."""
        model.eval()
        results = {}
        size = self.inference.batch_size
        order = sorted(self.videos, key=lambda v: v.num_snippets)
        for first in range(0, len(order), size):
            batch = order[first:first + size]
            feats = [read_window(v, self.streams, 0, v.num_snippets) for v in batch]
            results.update(detect_batch(model, batch, feats, self.classes, self.inference, None, self.device))
        preds = {"results": {vid: [d.to_json() for d in dets] for vid, dets in results.items()}}
        result = evaluate_detection(self.gt, load_predictions(preds, self.gt, unknown_labels="ignore"),
                                    self.thresholds)
        return {VAL_KEY: float(result.average_mAP), "val_mAP": [float(m) for m in result.mAP]}


def best_entry(history: Sequence[dict]) -> dict | None:
    """The validated epoch with the highest average mAP (the earliest of ties), or None."""
    best = None
    for h in history:
        if VAL_KEY in h and (best is None or h[VAL_KEY] > best[VAL_KEY]):
            best = h
    return best


def write_log(path: str | os.PathLike, history: Sequence[dict]) -> Path:
    """The history as JSON lines, atomically (see the module docstring)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
    return path


def read_log(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_validation(history: Sequence[dict], path: str | os.PathLike) -> Figure:
    """Validation average mAP (percent) per validated epoch, the best one marked."""
    fig = new_figure(5, 3.5)
    ax = fig.subplots()
    rows = [h for h in history if VAL_KEY in h]
    ax.plot([h["epoch"] for h in rows], [100 * h[VAL_KEY] for h in rows], marker=".", label="average mAP")
    best = best_entry(rows)
    if best is not None:
        ax.plot([best["epoch"]], [100 * best[VAL_KEY]], "*", markersize=12, label=f"best (epoch {best['epoch']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation average mAP (%)")
    ax.set_ylim(0, max(100.0, *(100 * h[VAL_KEY] for h in rows)) if rows else 100.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return fig


