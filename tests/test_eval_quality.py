"""Table 3 metrics (classification accuracy and mean tIoU of high-quality predictions): hand-computed
cases, a loop oracle on random inputs (hypothesis), invariants, and the real THUMOS14 test ground
truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluate.data import Predictions, load_ground_truth, load_predictions
from evaluate.quality import QualityResult, best_label_per_segment, best_overlap, proposal_quality, top_k_per_video


def iou1(s1: float, e1: float, s2: float, e2: float) -> float:
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    union = (e1 - s1) + (e2 - s2) - inter
    return inter / union if union > 0 else 0.0


def load(gt_db: dict, results: dict):
    gt = load_ground_truth({"database": gt_db}, "test")
    return gt, load_predictions({"results": results}, gt)


# ---------------------------------------------------------------------------------------------
# Hand-computed


def hand_case():
    """Video v: A=[0,10] x, B=[0,10] y (same segment as A, later), C=[20,30] y."""
    gt_db = {"v": {"subset": "test", "annotations": [
        {"segment": [0, 10], "label": "x"}, {"segment": [0, 10], "label": "y"}, {"segment": [20, 30], "label": "y"}]},
        "w": {"subset": "test", "annotations": []}}
    results = {"v": [
        {"segment": [0, 10], "label": "x", "score": 0.9},     # tIoU 1 with A and B: A (earlier) -> correct
        {"segment": [0, 10], "label": "y", "score": 0.8},     # same, labelled y: wrong under "first"
        {"segment": [21, 30], "label": "y", "score": 0.5},    # 0.9 with C: correct
        {"segment": [22, 30], "label": "x", "score": 0.6},    # 0.8 with C: wrong
        {"segment": [23, 30], "label": "y", "score": 0.95},   # 0.7 exactly: not high-quality (strict)
        {"segment": [0, 5], "label": "x", "score": 0.99}],    # 0.5: not high-quality
        "w": [{"segment": [0, 10], "label": "x", "score": 1.0}],       # video without instances
        "u": [{"segment": [0, 10], "label": "x", "score": 1.0}]}       # unknown video
    return load(gt_db, results)


def test_hand_computed():
    gt, pred = hand_case()
    best_iou, best_gt = best_overlap(gt, pred)
    assert np.allclose(best_iou, [1, 1, 0.9, 0.8, 0.7, 0.5, 0, 0])
    assert best_gt.tolist() == [0, 0, 2, 2, 2, 0, -1, -1]
    res = proposal_quality(gt, pred, ties="first")
    assert (res.count, res.total) == (4, 8)
    assert res.accuracy == 0.5
    assert proposal_quality(gt, pred).accuracy == 0.75     # default "any": the y prediction on A/B is right
    assert res.mean_tiou == pytest.approx((1 + 1 + 0.9 + 0.8) / 4)


def test_ties_any_counts_a_label_of_any_best_instance():
    gt, pred = hand_case()
    res = proposal_quality(gt, pred, ties="any")
    assert (res.count, res.accuracy) == (4, 0.75)           # the y prediction on A=B is now correct
    with pytest.raises(ValueError):
        proposal_quality(gt, pred, ties="last")


def test_threshold_is_strict_and_adjustable():
    gt, pred = hand_case()
    assert proposal_quality(gt, pred, iou_threshold=0.6999).count == 5
    res = proposal_quality(gt, pred, iou_threshold=0.85, ties="first")
    assert (res.count, res.accuracy) == (3, 2 / 3)
    assert res.mean_tiou == pytest.approx((1 + 1 + 0.9) / 3)


def test_top_k_per_video():
    gt, pred = hand_case()
    # v by score: [0,5] 0.99, [23,30] 0.95, [0,10]x 0.9, [0,10]y 0.8, ...
    assert top_k_per_video(pred, 3).tolist() == [0, 4, 5, 6, 7]
    res = proposal_quality(gt, pred, top_k=3, ties="first")
    assert (res.count, res.total, res.accuracy, res.mean_tiou) == (1, 5, 1.0, 1.0)
    res = proposal_quality(gt, pred, top_k=4, ties="first")
    assert (res.count, res.accuracy) == (2, 0.5)
    assert top_k_per_video(pred, 0).tolist() == []


def test_top_k_ties_keep_file_order():
    gt = load_ground_truth({"database": {"v": {"subset": "test", "annotations": [{"segment": [0, 1], "label": "a"}]}}},
                           "test")
    pred = load_predictions({"results": {"v": [{"segment": [0, 1], "label": "a", "score": 0.5}] * 3}}, gt)
    assert top_k_per_video(pred, 2).tolist() == [0, 1]


def test_no_high_quality_prediction_is_nan_and_null():
    gt, pred = hand_case()
    res = proposal_quality(gt, pred, iou_threshold=1.0)      # nothing exceeds tIoU 1
    assert res.count == 0 and math.isnan(res.accuracy) and math.isnan(res.mean_tiou)
    assert json.loads(json.dumps(res.to_json())) == {"count": 0, "accuracy": None, "mean_tiou": None,
                                                     "total": 8, "iou_threshold": 1.0}
    empty = Predictions(video=np.zeros(0, dtype=np.int64), videos=list(gt.videos), segments=np.zeros((0, 2)),
                        labels=np.zeros(0, dtype=np.int64), scores=np.zeros(0))
    res = proposal_quality(gt, empty)
    assert (res.count, res.total) == (0, 0) and math.isnan(res.accuracy)


def test_to_json():
    gt, pred = hand_case()
    out = json.loads(json.dumps(proposal_quality(gt, pred, ties="first").to_json()))
    assert out == {"count": 4, "accuracy": 0.5, "mean_tiou": pytest.approx(0.925), "total": 8, "iou_threshold": 0.7}


# ---------------------------------------------------------------------------------------------
# Oracle on random inputs


def oracle(gt_db, results, thr, top_k=None, ties="first"):
    classes = {}
    gts = []  # (video, s, e, class) in order
    for vid, entry in gt_db.items():
        for ann in entry["annotations"]:
            gts.append((vid, *map(float, ann["segment"]), classes.setdefault(ann["label"], len(classes))))
    n_total, ious, correct = 0, [], []
    for vid, items in results.items():
        idx = sorted(range(len(items)), key=lambda i: (-items[i]["score"], i))
        if top_k is not None:
            idx = sorted(idx[:top_k])
        for i in idx:
            n_total += 1
            s, e = map(float, items[i]["segment"])
            best, labels = 0.0, []
            for g in gts:
                if g[0] != vid:
                    continue
                iou = iou1(s, e, g[1], g[2])
                if iou > best:
                    best, labels = iou, [g[3]]
                elif iou == best and labels:
                    labels.append(g[3])
            if best > thr:
                ious.append(best)
                lab = classes[items[i]["label"]]
                correct.append(lab == labels[0] if ties == "first" else lab in labels)
    return n_total, len(ious), correct, ious


grid = st.integers(0, 30).map(lambda x: x * 0.5)
segment = st.tuples(grid, st.integers(0, 10).map(lambda x: x * 0.5)).map(lambda se: [se[0], se[0] + se[1]])
label = st.sampled_from(["a", "b", "c"])
# predictions may end before they start: tIoU 0, never high-quality, still examined
pred_segment = st.tuples(grid, st.integers(-10, 10).map(lambda x: x * 0.5)).map(lambda se: [se[0], se[0] + se[1]])


@st.composite
def problems(draw):
    gt_db, results = {}, {}
    for v in range(draw(st.integers(1, 4))):
        anns = [{"segment": draw(segment), "label": draw(label)} for _ in range(draw(st.integers(0, 5)))]
        gt_db[f"v{v}"] = {"subset": "test", "annotations": anns}
        results[f"v{v}"] = [{"segment": draw(pred_segment), "label": draw(label),
                             "score": draw(st.sampled_from([0.1, 0.5, 0.9]))}
                            for _ in range(draw(st.integers(0, 8)))]
    # every predicted label a ground-truth class; three instances with the same segment (ties)
    gt_db["v0"]["annotations"] += [{"segment": [0.0, 3.0], "label": c} for c in "abc"]
    if draw(st.booleans()):
        results["unknown"] = [{"segment": [0.0, 3.0], "label": "a", "score": 1.0}]
    thr = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.8]))
    top_k = draw(st.none() | st.integers(0, 5))
    return gt_db, results, thr, top_k


@settings(max_examples=200, deadline=None)
@given(problems(), st.sampled_from(["first", "any"]))
def test_matches_oracle(problem, ties):
    gt_db, results, thr, top_k = problem
    gt, pred = load(gt_db, results)
    res = proposal_quality(gt, pred, iou_threshold=thr, top_k=top_k, ties=ties)
    n_total, count, correct, ious = oracle(gt_db, results, thr, top_k, ties)
    assert (res.total, res.count) == (n_total, count)
    if count == 0:
        assert math.isnan(res.accuracy) and math.isnan(res.mean_tiou)
    else:
        assert res.accuracy == pytest.approx(np.mean(correct), abs=1e-15)
        assert res.mean_tiou == pytest.approx(np.mean(ious), abs=1e-15)
        assert res.mean_tiou > thr and 0 <= res.accuracy <= 1


@settings(max_examples=100, deadline=None)
@given(problems())
def test_relabelling_as_best_instance_gives_full_accuracy(problem):
    """Invariant: predictions relabelled with their best instance's label are all correct, and
    relabelling changes neither count nor mean tIoU."""
    gt_db, results, thr, _ = problem
    gt, pred = load(gt_db, results)
    before = proposal_quality(gt, pred, iou_threshold=thr)
    _, best_gt = best_overlap(gt, pred)
    pred.labels = np.where(best_gt >= 0, gt.labels[best_gt], pred.labels)
    after = proposal_quality(gt, pred, iou_threshold=thr)
    assert (after.count, after.total) == (before.count, before.total)
    if after.count:
        assert after.accuracy == 1.0 and after.mean_tiou == before.mean_tiou


# ---------------------------------------------------------------------------------------------
# Real THUMOS14 test ground truth


def test_thumos_ground_truth_as_predictions(shared_data):
    path = shared_data / "thumos14" / "thumos14.json"
    if not path.is_file():
        pytest.skip(f"THUMOS14 annotations {path} are missing")
    gt = load_ground_truth(path, "test")
    pred = Predictions(video=gt.video.copy(), videos=list(gt.videos), segments=gt.segments.copy(),
                       labels=gt.labels.copy(), scores=np.ones(len(gt.labels)))
    res = proposal_quality(gt, pred, ties="first")
    assert (res.count, res.mean_tiou) == (3358, 1.0)
    # THUMOS14 annotates CliffDiving instances again as Diving with the same segment (and one
    # ThrowDiscus instance duplicates a Shotput one): under "first" the copies labelled as the
    # later duplicate count as wrong; under "any" all are right.
    _, best_gt = best_overlap(gt, pred)
    wrong = np.flatnonzero(gt.labels[best_gt] != gt.labels)
    assert np.array_equal(gt.segments[best_gt[wrong]], gt.segments[wrong])
    assert np.all(best_gt[wrong] < wrong)
    assert res.accuracy == pytest.approx(1 - len(wrong) / 3358)
    assert {gt.classes[c] for c in gt.labels[wrong]} <= {"Diving", "ThrowDiscus"}
    assert proposal_quality(gt, pred).accuracy == 1.0       # the default, "any"
    assert isinstance(res, QualityResult)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 2), st.sampled_from([0.1, 0.5, 0.9])),
                min_size=0, max_size=25))
def test_best_label_per_segment_equals_brute_force(rows):
    """Per (video, segment), the kept prediction is the highest-scored, the first in file order on ties."""
    segs = np.array([[start, start + 1 + label % 2] for _, start, label, _ in rows], dtype=np.float64).reshape(-1, 2)
    pred = Predictions(video=np.array([r[0] for r in rows], dtype=np.int64), videos=["a", "b", "c"], segments=segs,
                       labels=np.array([r[2] for r in rows], dtype=np.int64),
                       scores=np.array([r[3] for r in rows], dtype=np.float64))
    expected = {}
    for i in range(len(rows)):
        key = (int(pred.video[i]), *segs[i])
        if key not in expected or pred.scores[i] > pred.scores[expected[key]]:
            expected[key] = i
    assert best_label_per_segment(pred).tolist() == sorted(expected.values())


def test_one_label_classifies_each_segment_once():
    gt = load_ground_truth({"v": {"subset": "test", "annotations": [{"segment": [0, 10], "label": "A"}]}}, "test")
    results = {"v": [{"label": "A", "score": 0.9, "segment": [0, 10]},
                     {"label": "B", "score": 0.2, "segment": [0, 10]}]}
    pred = load_predictions({"results": results}, gt, unknown_labels="ignore")
    assert proposal_quality(gt, pred).total == 1                   # B is not a ground-truth class: dropped
    gt2 = load_ground_truth({"v": {"subset": "test", "annotations": [{"segment": [0, 10], "label": "A"},
                                                                     {"segment": [20, 30], "label": "B"}]}}, "test")
    pred = load_predictions({"results": results}, gt2)
    assert proposal_quality(gt2, pred).accuracy == 0.5              # once per class: half of them wrong
    assert proposal_quality(gt2, pred, one_label=True).accuracy == 1.0   # each segment's best label: right
