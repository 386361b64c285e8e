"""Figures of the detector: training losses, and one video's boundary probabilities with its
ground truth and detections. Drawn with :mod:`common.plotting` like every figure of the project (own
Agg figure, written atomically)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from common.plotting import GT_COLOR, PRED_COLOR, new_figure, save_figure

__all__ = ["plot_history", "plot_boundaries"]

_TOTALS = ("loss", "proposal", "detection", "refactor")
_PARTS = ("start", "end", "actionness", "cls", "com", "reg")


def plot_history(history: Sequence[dict], path: str | os.PathLike) -> Figure:
    """Loss per epoch: the total and L_P, L_D, L_R (left), and their parts (right), log scale."""
    fig = new_figure(10, 3.8)
    epochs = [h["epoch"] for h in history]
    for ax, names, title in zip(fig.subplots(1, 2), (_TOTALS, _PARTS), ("loss and its terms", "parts")):
        for name in names:
            if history and name in history[0]:
                ax.plot(epochs, [max(h[name], 1e-12) for h in history], marker=".", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
    return fig


def plot_boundaries(times: np.ndarray, probabilities: np.ndarray, path: str | os.PathLike,
                    ground_truth: Sequence[tuple[float, float, str]] = (),
                    detections: Sequence[tuple[float, float, str, float]] = (), title: str = "",
                    top: int = 10) -> Figure:
    """Actionness, start and end probabilities of one video against time, with its ground truth
    (green spans) and its ``top`` best detections (blue bars, height = score).

    Args:
        times (ndarray[T]): position times in seconds.
        probabilities (ndarray[3, T]): actionness, start, end.
        ground_truth: (start, end, label) in seconds.
        detections: (start, end, label, score) in seconds.
    """
    fig = new_figure(11, 4.2)
    ax, axd = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for (s, e, _) in ground_truth:
        ax.axvspan(s, e, color=GT_COLOR, alpha=0.15, lw=0)
        axd.axvspan(s, e, color=GT_COLOR, alpha=0.15, lw=0)
    for row, (name, style) in enumerate(zip(("actionness", "start", "end"), ("-", "--", ":"))):
        ax.plot(times, probabilities[row], style, label=name)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    best = sorted(detections, key=lambda d: -d[3])[:top]
    for i, (s, e, label, score) in enumerate(best):
        axd.barh(i, e - s, left=s, height=0.8, color=PRED_COLOR, alpha=0.35 + 0.65 * float(score))
        axd.text(s, i, f" {label} {score:.2f}", va="center", fontsize=6)
    axd.set_yticks([])
    axd.set_ylim(-0.5, max(len(best), 1) - 0.5)
    axd.invert_yaxis()
    axd.set_xlabel("time (s)")
    axd.set_ylabel(f"top {len(best)}")
    save_figure(fig, path)
    return fig
