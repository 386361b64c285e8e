"""Figures: valid PNGs written atomically, and the plotted data equal to the results."""

from __future__ import annotations

import os

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from PIL import Image

from evaluate.data import load_ground_truth, load_predictions
from evaluate.detection import DetectionResult
from evaluate.plots import plot_map_vs_tiou, plot_per_class_ap, plot_recall_vs_an, plot_timeline, save_figure
from evaluate.proposals import average_recall_vs_an


def check_png(path, min_size=(300, 200)):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        assert im.size[0] <= 3000 and im.size[1] <= 3000
        assert len(np.unique(np.asarray(im.convert("L")))) > 2   # not blank
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]   # no temporary left
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask                 # usual permissions


@pytest.fixture
def detection_result():
    return DetectionResult(thresholds=np.array([0.3, 0.4, 0.5, 0.6, 0.7]),
                           ap=np.array([[0.9, 0.5, 0.2], [0.8, 0.45, 0.1], [0.7, 0.4, 0.05],
                                        [0.5, 0.3, 0.0], [0.3, 0.2, 0.0]]),
                           classes=["HighJump", "CricketBowling", "Diving"])


def test_map_vs_tiou(tmp_path, detection_result):
    fig = plot_map_vs_tiou(detection_result, tmp_path / "map.png")
    check_png(tmp_path / "map.png")
    ax = fig.axes[0]
    x, y = ax.lines[0].get_data()
    assert np.array_equal(x, detection_result.thresholds)
    assert np.allclose(y, 100 * detection_result.mAP)
    assert "%" in ax.get_ylabel() and "tIoU" in ax.get_xlabel()


@pytest.mark.parametrize("tiou_index", [None, 0, 4])
def test_per_class_ap_bar_heights(tmp_path, detection_result, tiou_index):
    fig = plot_per_class_ap(detection_result, tmp_path / "ap.png", tiou_index=tiou_index)
    check_png(tmp_path / "ap.png")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    ap = detection_result.ap.mean(axis=0) if tiou_index is None else detection_result.ap[tiou_index]
    assert np.allclose(heights, 100 * ap)
    assert [t.get_text() for t in ax.get_xticklabels()] == detection_result.classes
    assert ax.get_ylabel() == "AP (%)"


def gt_and_pred():
    gt_db = {"v": {"subset": "test", "duration": 60.0, "annotations": [
        {"segment": [5, 10], "label": "x"}, {"segment": [20, 30], "label": "y"}, {"segment": [40, 42], "label": "x"}]},
        "w": {"subset": "test", "annotations": [{"segment": [1, 2], "label": "x"}, {"segment": [3, 4], "label": "z"}]}}
    results = {"v": [{"segment": [4, 11], "label": "x", "score": 0.9},
                     {"segment": [21, 29], "label": "y", "score": 0.8},
                     {"segment": [50, 55], "label": "z", "score": 0.1},
                     {"segment": [0, 60], "label": "x", "score": 0.05}],
               "w": [{"segment": [1, 2], "label": "x", "score": 1.0}]}
    gt = load_ground_truth({"database": gt_db}, "test")
    return gt, load_predictions({"results": results}, gt)


def test_timeline_rectangles(tmp_path):
    gt, pred = gt_and_pred()
    fig = plot_timeline(gt, pred, "v", tmp_path / "t.png", top_k=3)
    check_png(tmp_path / "t.png")
    ax = fig.axes[0]
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    gt_r = sorted((r.get_x(), r.get_width(), r.get_y()) for r in rects if r.get_gid() == "gt")
    pred_r = sorted((r.get_x(), r.get_width(), r.get_y()) for r in rects if r.get_gid() == "pred")
    assert [(x, w) for x, w, _ in gt_r] == [(5, 5), (20, 10), (40, 2)]
    # top 3 by score: 0.9, 0.8, 0.1 (the 0.05 one is left out)
    assert [(x, w) for x, w, _ in pred_r] == [(4, 7), (21, 8), (50, 5)]
    lanes = [t.get_text() for t in ax.get_yticklabels()]
    assert lanes == ["x", "y", "z"]
    lane_of = {x: round(y) for x, _, y in gt_r + pred_r}        # rectangles sit in their label's lane
    assert (lane_of[5], lane_of[20], lane_of[40]) == (0, 1, 0)
    assert (lane_of[4], lane_of[21], lane_of[50]) == (0, 1, 2)
    assert ax.yaxis_inverted() and max(y for *_, y in gt_r if y < 0.5) < min(y for *_, y in pred_r if y < 0.5)
    assert ax.get_xlim() == (0, 60.0)                            # the video's duration
    assert "s" in ax.get_xlabel()


def test_timeline_unknown_video(tmp_path):
    gt, pred = gt_and_pred()
    with pytest.raises(KeyError):
        plot_timeline(gt, pred, "nope", tmp_path / "t.png")
    assert not (tmp_path / "t.png").exists()


def test_recall_vs_an(tmp_path):
    gt_db = {"v": {"subset": "test", "annotations": [{"segment": [0, 10], "label": "x"},
                                                     {"segment": [20, 30], "label": "x"}]}}
    results = {"v": [{"segment": [0, 10], "score": 0.9}, {"segment": [22, 30], "score": 0.8}]}
    gt = load_ground_truth({"database": gt_db}, "test")
    res = average_recall_vs_an(gt, load_predictions({"results": results}, gt, proposals=True), [0.5, 0.9])
    for log_x in (False, True):
        fig = plot_recall_vs_an(res, tmp_path / "ar.png", log_x=log_x)
        check_png(tmp_path / "ar.png")
        ax = fig.axes[0]
        x, y = ax.lines[-1].get_data()                           # the average, drawn last
        assert np.array_equal(x, res.proposals_per_video) and np.allclose(y, 100 * res.avg_recall)
        for line, r in zip(ax.lines[:-1], res.recall):
            assert np.allclose(line.get_ydata(), 100 * r)
        assert "recall (%)" == ax.get_ylabel()


def test_save_is_atomic_and_overwrites(tmp_path, detection_result):
    path = tmp_path / "sub" / "map.png"
    plot_map_vs_tiou(detection_result, path)
    first = path.read_bytes()
    fig = plot_per_class_ap(detection_result, path)
    assert path.read_bytes() != first
    check_png(path)

    class Boom(Exception):
        pass

    def fail(*args, **kwargs):
        raise Boom

    fig.savefig = fail
    with pytest.raises(Boom):
        save_figure(fig, path)
    check_png(path)                                                # old file intact, no temporary left
