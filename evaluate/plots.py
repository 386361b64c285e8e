"""Figures of evaluation results, written as PNG.

Every function draws on its own figure from :func:`common.plotting.new_figure` (Agg canvas: no
pyplot, no global backend or state, safe without a display and in threads), writes it with
:func:`common.plotting.save_figure` (atomically: a PNG that exists is whole), and returns the figure
so callers and tests can inspect what was drawn. Colours are the project's (``GT_COLOR``,
``PRED_COLOR``); ``save_figure`` and the colours stay importable from here.

Percentages are shown for people (mAP, AP, recall); results stay fractions in files.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from common.annotations import GroundTruth
from common.plotting import GT_COLOR, PRED_COLOR, new_figure, save_figure
from common.predictions import Predictions
from evaluate.detection import DetectionResult
from evaluate.proposals import ProposalResult

__all__ = ["save_figure", "plot_map_vs_tiou", "plot_per_class_ap", "plot_timeline", "plot_recall_vs_an",
           "GT_COLOR", "PRED_COLOR"]


def plot_map_vs_tiou(result: DetectionResult, path: str | os.PathLike) -> Figure:
    """mAP (%) against the tIoU threshold, one marker per threshold, average mAP in the title."""
    fig = new_figure(5.5, 3.8)
    ax = fig.add_subplot()
    ax.plot(result.thresholds, 100 * result.mAP, marker="o", color=PRED_COLOR, label="mAP")
    ax.axhline(100 * result.average_mAP, color="0.5", linestyle="--", linewidth=1,
               label=f"average {100 * result.average_mAP:.1f}%")
    for t, m in zip(result.thresholds, 100 * result.mAP):
        ax.annotate(f"{m:.1f}", (t, m), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks(result.thresholds)
    ax.set_xlabel("tIoU threshold")
    ax.set_ylabel("mAP (%)")
    ax.set_ylim(0, max(100.0, 100 * float(result.mAP.max()) * 1.1) if len(result.mAP) else 100.0)
    ax.set_title(f"mAP vs tIoU (average {100 * result.average_mAP:.1f}%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, path)
    return fig


def plot_per_class_ap(result: DetectionResult, path: str | os.PathLike, tiou_index: int | None = None) -> Figure:
    """AP (%) of each class as bars, at threshold ``result.thresholds[tiou_index]`` or, by default,
    averaged over the thresholds; classes in ``result.classes`` order; the mAP as a dashed line."""
    if tiou_index is None:
        ap = result.ap.mean(axis=0)
        what = f"average over tIoU {_span(result.thresholds)}"
    else:
        ap = result.ap[tiou_index]
        what = f"tIoU {result.thresholds[tiou_index]:g}"
    fig = new_figure(max(6.0, 0.35 * len(result.classes) + 2), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(result.classes))
    ax.bar(x, 100 * ap, color=PRED_COLOR, width=0.7)
    ax.axhline(100 * ap.mean(), color="0.3", linestyle="--", linewidth=1, label=f"mAP {100 * ap.mean():.1f}%")
    ax.set_xticks(x, result.classes, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(x) - 0.4)
    ax.set_ylim(0, 100)
    ax.set_ylabel("AP (%)")
    ax.set_title(f"AP per class ({what})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, path)
    return fig


def _span(thresholds: np.ndarray) -> str:
    return f"{thresholds[0]:g}" if len(thresholds) == 1 else f"{thresholds[0]:g}-{thresholds[-1]:g}"


def plot_timeline(gt: GroundTruth, pred: Predictions, video_id: str, path: str | os.PathLike,
                  top_k: int = 10, class_names: list[str] | None = None) -> Figure:
    """Ground truth against the ``top_k`` highest-scored predictions of one video over time.

    One lane per label (labels of the video's ground truth first, then predicted ones); in each
    lane the ground-truth segments are drawn above the predictions, whose opacity and the number
    under them show the score. Patches carry ``gid`` ``"gt"`` or ``"pred"``; x in seconds.

    Args:
        class_names: names of ``pred.labels`` (default ``gt.classes``).
    """
    names = gt.classes if class_names is None else class_names
    v_gt = gt.video_index.get(video_id, -1)
    v_pred = pred.videos.index(video_id) if video_id in pred.videos else -1
    if v_gt < 0 and v_pred < 0:
        raise KeyError(f"video {video_id!r} is neither in the ground truth nor in the predictions")
    g = np.flatnonzero(gt.video == v_gt)
    p = np.flatnonzero(pred.video == v_pred)
    p = p[np.lexsort((p, -pred.scores[p]))][:top_k]                # highest scores, file order on ties
    lanes = list(dict.fromkeys([gt.classes[c] for c in gt.labels[g]] + [names[c] for c in pred.labels[p]]))
    lane = {name: i for i, name in enumerate(lanes)}

    fig = new_figure(9.0, 1.2 + 0.6 * max(1, len(lanes)))
    ax = fig.add_subplot()
    # y grows downwards (lanes listed top to bottom): in lane y, ground truth above, predictions
    # below, their scores under them.
    for i in g:
        s, e = gt.segments[i]
        y = lane[gt.classes[gt.labels[i]]]
        ax.add_patch(Rectangle((s, y - 0.42), e - s, 0.34, color=GT_COLOR, gid="gt"))
    for i in p:
        s, e = pred.segments[i]
        y = lane[names[pred.labels[i]]]
        alpha = float(np.clip(0.25 + 0.75 * pred.scores[i], 0.25, 1.0))
        ax.add_patch(Rectangle((s, y - 0.02), e - s, 0.3, facecolor=PRED_COLOR, alpha=alpha,
                               edgecolor="black", linewidth=0.5, gid="pred"))
        ax.text((s + e) / 2, y + 0.38, f"{pred.scores[i]:.2f}", ha="center", va="center", fontsize=6.5,
                clip_on=True)
    ends = np.concatenate([gt.segments[g, 1], pred.segments[p, 1]])
    duration = gt.durations.get(video_id, float(ends.max()) if ends.size else 1.0)
    ax.set_xlim(0, max(duration, float(ends.max()) if ends.size else 0.0) or 1.0)
    ax.set_ylim(-0.5, max(1, len(lanes)) - 0.5)
    ax.set_yticks(np.arange(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_title(f"{video_id}: ground truth vs top-{top_k} predictions")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=GT_COLOR, label="ground truth"),
                       Patch(color=PRED_COLOR, label="prediction (score below)")],
              loc="upper center", bbox_to_anchor=(0.5, -0.25 if lanes else -0.4), ncol=2, fontsize=8, frameon=False)
    save_figure(fig, path)
    return fig


def plot_recall_vs_an(result: ProposalResult, path: str | os.PathLike, log_x: bool = False) -> Figure:
    """Average recall (%) against the average number of proposals per video, with the recall at
    each tIoU threshold as thin lines and the normalized AUC in the title."""
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    x = result.proposals_per_video
    colors = colormaps["viridis"](np.linspace(0.0, 0.9, len(result.thresholds)))
    for t, r, c in zip(result.thresholds, result.recall, colors):
        ax.plot(x, 100 * r, linewidth=0.9, color=c, alpha=0.8, label=f"tIoU {t:g}")
    ax.plot(x, 100 * result.avg_recall, color="black", linewidth=2.2, label="average")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlim(x[0] if log_x else 0, x[-1])
    ax.set_ylim(0, 100)
    ax.set_xlabel("average number of proposals per video")
    ax.set_ylabel("recall (%)")
    ax.set_title(f"AR vs AN (AUC {100 * result.auc_normalized:.2f}%, tIoU {_span(result.thresholds)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    save_figure(fig, path)
    return fig
