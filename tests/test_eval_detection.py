"""Detection mAP: a loop-by-loop oracle of the official ActivityNet rule, hand-computed cases,
invariants (hypothesis), edge cases, the real THUMOS14 test ground truth, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluate.data import EvaluationInputError, load_detections, load_ground_truth, load_predictions, parse_thresholds
from evaluate.detection import evaluate_detection, interpolated_ap, segment_iou
from evaluate.proposals import average_recall_vs_an, recall_at
from evaluate.quality import proposal_quality

REPO = Path(__file__).resolve().parents[1]
THUMOS_TIOU = np.array([0.3, 0.4, 0.5, 0.6, 0.7])


# ---------------------------------------------------------------------------------------------
# Oracle: the official procedure written as plain loops (one prediction, one threshold, one
# ground truth at a time), independent of the vectorized implementation.


def oracle_ap(gt_db: dict, results: dict, subset: str, thresholds, literal: bool = False
              ) -> tuple[list[str], np.ndarray]:
    """AP per (threshold, class) by the official rule. ``literal``: tIoU with the official arithmetic
    (0/0 = NaN where the union is 0, and a NaN passes the ``tiou < thr`` test, so it is tried first
    and locks a free instance); otherwise NaN is 0 (the documented policy of evaluate.detection)."""
    classes: dict[str, int] = {}
    gts = []  # (video, start, end, class)
    for vid, entry in gt_db.items():
        if entry["subset"] != subset:
            continue
        for ann in entry["annotations"]:
            classes.setdefault(ann["label"], len(classes))
            gts.append((vid, float(ann["segment"][0]), float(ann["segment"][1]), classes[ann["label"]]))
    preds = [(vid, float(r["segment"][0]), float(r["segment"][1]), classes[r["label"]], float(r["score"]))
             for vid, items in results.items() for r in items]
    ap = np.zeros((len(thresholds), len(classes)))
    for c in range(len(classes)):
        cgt = [g for g in gts if g[3] == c]
        cpred = [p for p in preds if p[3] == c]
        if not cpred:
            continue
        order = np.array([p[4] for p in cpred]).argsort()[::-1]
        for t, thr in enumerate(thresholds):
            locked = [False] * len(cgt)
            tp = []
            for i in order:
                vid, s, e = cpred[i][:3]
                cands = [k for k, g in enumerate(cgt) if g[0] == vid]
                ious = [(official_iou if literal else iou1)(s, e, cgt[k][1], cgt[k][2]) for k in cands]
                hit = False
                # highest tIoU first (NaN, last in argsort, is first reversed); equal tIoU: later instance first
                for k, iou in sorted(zip(cands, ious), key=lambda x: (not np.isnan(x[1]), -np.nan_to_num(x[1]), -x[0])):
                    if iou < thr:
                        break
                    if locked[k]:
                        continue
                    locked[k], hit = True, True
                    break
                tp.append(hit)
            tp = np.array(tp, dtype=float)
            tpc, fpc = np.cumsum(tp), np.cumsum(1 - tp)
            prec, rec = tpc / (tpc + fpc), tpc / len(cgt)
            mprec, mrec = [0.0, *prec, 0.0], [0.0, *rec, 1.0]
            for i in range(len(mprec) - 2, -1, -1):
                mprec[i] = max(mprec[i], mprec[i + 1])
            # summed with np.sum, as the official code (pairwise summation; a plain loop differs by an ulp)
            ap[t, c] = np.sum(np.array([(mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec))
                                        if mrec[i] != mrec[i - 1]]))
    return list(classes), ap


def iou1(s1, e1, s2, e2) -> float:
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    union = (e1 - s1) + (e2 - s2) - inter
    return inter / union if union > 0 else 0.0


def official_iou(s1, e1, s2, e2) -> float:
    """The official ``segment_iou`` arithmetic for one pair (prediction first): NaN for a zero
    union, -0.0 for a negative one (a reversed prediction longer than the instance)."""
    inter = np.clip(np.minimum(e1, e2) - np.maximum(s1, s2), 0, None)
    union = (e2 - s2) + (e1 - s1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(inter) / np.float64(union))


def run(gt_db: dict, results: dict, subset="test", thresholds=THUMOS_TIOU, **kw):
    gt = load_ground_truth({"database": gt_db}, subset)
    pred = load_predictions({"results": results}, gt, **kw)
    return evaluate_detection(gt, pred, thresholds)


# ---------------------------------------------------------------------------------------------
# Building blocks


def test_segment_iou_known_values():
    a = np.array([[0.0, 10.0]])
    b = np.array([[0.0, 10.0], [5.0, 15.0], [10.0, 20.0], [2.0, 4.0], [-5.0, 0.0], [3.0, 3.0]])
    np.testing.assert_allclose(segment_iou(a[:, None], b[None]), [[1.0, 5 / 15, 0.0, 0.2, 0.0, 0.0]])
    assert segment_iou(np.array([2.0, 2.0]), np.array([2.0, 2.0])) == 0.0   # empty union: 0, not NaN


def test_interpolated_ap_hand_computed():
    # ranks: TP, FP, TP with 2 ground truths: precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    # monotone precision: 1, 2/3, 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3
    assert interpolated_ap(np.array([1, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(0.5 + 1 / 3)


def test_thresholds_parse():
    np.testing.assert_array_equal(parse_thresholds("0.3:0.7:0.1"), [0.3, 0.4, 0.5, 0.6, 0.7])
    assert len(parse_thresholds("0.5:0.95:0.05")) == 10 and parse_thresholds("0.5:0.95:0.05")[-1] == 0.95
    np.testing.assert_array_equal(parse_thresholds("0.5,0.75,0.95"), [0.5, 0.75, 0.95])
    for bad in ("0.7:0.3:0.1", "a,b", "0:1:0", "1.5"):
        with pytest.raises(EvaluationInputError):
            parse_thresholds(bad)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases


def db(**videos) -> dict:
    return {vid: {"subset": "test", "annotations": [{"segment": list(s), "label": l} for s, l in anns]}
            for vid, anns in videos.items()}


def test_hand_computed_two_videos():
    gt = db(v1=[((10, 20), "A"), ((30, 40), "A")], v2=[((0, 10), "A"), ((5, 15), "B")])
    results = {
        "v1": [{"label": "A", "score": 0.9, "segment": [10, 20]},      # TP (iou 1)
               {"label": "A", "score": 0.8, "segment": [11, 21]},      # same gt, already taken: FP
               {"label": "A", "score": 0.5, "segment": [30, 38]}],     # iou 0.8: TP at 0.3..0.7
        "v2": [{"label": "A", "score": 0.7, "segment": [20, 30]},      # FP
               {"label": "B", "score": 0.6, "segment": [5, 10]}],      # iou 0.5 with B: TP at <= 0.5
    }
    res = run(gt, results)
    # class A, 3 gts, ranking TP FP FP TP: precision 1, .5, 1/3, .5; recall 1/3, 1/3, 1/3, 2/3
    # AP = 1/3 * 1 + 1/3 * 0.5 = 0.5 at every threshold
    np.testing.assert_allclose(res.ap[:, 0], 0.5)
    np.testing.assert_allclose(res.ap[:, 1], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(res.mAP, [0.75, 0.75, 0.75, 0.25, 0.25])
    assert res.average_mAP == pytest.approx(0.55)
    assert res.classes == ["A", "B"]


def test_duplicate_ground_truths_need_one_prediction_each():
    gt = db(v=[((0, 10), "A"), ((0, 10), "A")])
    one = run(gt, {"v": [{"label": "A", "score": 1.0, "segment": [0, 10]}]})
    two = run(gt, {"v": [{"label": "A", "score": 1.0, "segment": [0, 10]},
                         {"label": "A", "score": 0.5, "segment": [0, 10]}]})
    np.testing.assert_allclose(one.ap, 0.5)      # recall 1/2 at precision 1
    np.testing.assert_allclose(two.ap, 1.0)


def test_tie_in_tiou_locks_the_later_instance():
    """Prediction [2, 4] has tIoU 2/3 with both [1, 4] and [2, 5]; the official order takes the
    later one, so the second prediction [1, 3.9] (better on the first instance) still finds it free."""
    gt = db(v=[((1, 4), "A"), ((2, 5), "A")])
    res = run(gt, {"v": [{"label": "A", "score": 0.9, "segment": [2, 4]},
                         {"label": "A", "score": 0.8, "segment": [1, 3.9]}]}, thresholds=[0.6])
    assert res.ap[0, 0] == 1.0
    _, oracle = oracle_ap(gt, {"v": [{"label": "A", "score": 0.9, "segment": [2, 4]},
                                     {"label": "A", "score": 0.8, "segment": [1, 3.9]}]}, "test", [0.6])
    assert oracle[0, 0] == 1.0


def test_ties_in_score_follow_the_official_order():
    """Equal scores are ranked by the official ``scores.argsort()[::-1]`` over the class's predictions
    in file order (whatever order NumPy's sort gives ties, we give the same)."""
    gt = db(v=[((0, 10), "A")])
    res = run(gt, {"v": [{"label": "A", "score": 0.5, "segment": [0, 10]},      # the TP
                         {"label": "A", "score": 0.5, "segment": [50, 60]}]}, thresholds=[0.5])
    tp_first = np.array([0.5, 0.5]).argsort()[::-1][0] == 0
    # TP ranked first: AP 1; FP first: precision 1/2 at recall 1 -> AP 0.5
    assert res.ap[0, 0] == (1.0 if tp_first else 0.5)


def test_edge_cases_policies():
    gt = db(v=[((0, 10), "A")], w=[((0, 5), "B")])
    # a class without predictions scores 0; videos without predictions count as misses
    res = run(gt, {"v": [{"label": "A", "score": 1.0, "segment": [0, 10]}]})
    np.testing.assert_allclose(res.ap, [[1.0, 0.0]] * 5)
    # predictions for an unknown video are false positives, and reported
    gtd = load_ground_truth({"database": gt}, "test")
    pred = load_predictions({"results": {"zzz": [{"label": "A", "score": 2.0, "segment": [0, 10]}],
                                         "v": [{"label": "A", "score": 1.0, "segment": [0, 10]}]}}, gtd)
    assert pred.unknown_videos == ["zzz"]
    assert evaluate_detection(gtd, pred, [0.5]).ap[0, 0] == 0.5
    # zero-length predicted segment: tIoU 0, a false positive
    assert run(gt, {"v": [{"label": "A", "score": 1.0, "segment": [3, 3]}]}).ap[0, 0] == 0.0
    # unknown label: clear error by default, dropped on request
    with pytest.raises(EvaluationInputError, match="not a ground-truth class"):
        run(gt, {"v": [{"label": "C", "score": 1.0, "segment": [0, 1]}]})
    res = run(gt, {"v": [{"label": "C", "score": 1.0, "segment": [0, 1]},
                         {"label": "A", "score": 0.5, "segment": [0, 10]}]},
              unknown_labels="ignore")
    assert res.ap[0, 0] == 1.0
    # what the official code cannot score, or would score other than the file says: refused
    for bad, msg in [({"label": "A", "score": float("nan"), "segment": [0, 1]}, "not finite"),
                     ({"label": "A", "score": 1.0, "segment": [0, float("inf")]}, "not finite"),
                     ({"label": "A", "score": 1.0, "segment": [0, 1, 2]}, r"not \[start, end\]"),
                     ({"label": "A", "score": 1.0, "segment": [0]}, r"not \[start, end\]"),
                     ({"label": "A", "score": 1.0, "segment": "0 1"}, r"not \[start, end\]"),
                     ({"label": "A", "score": 1.0, "segment": ["a", 1]}, r"not \[start, end\]"),
                     ({"label": "A", "score": 1.0, "segment": [True, 1]}, r"not \[start, end\]"),
                     ({"label": "A", "score": "0.9", "segment": [0, 1]}, "is a string"),
                     ({"label": "A", "score": None, "segment": [0, 1]}, "score"),
                     ({"label": "A", "segment": [0, 1]}, "score"),
                     ([0, 1, 0.5], "must be")]:
        with pytest.raises(EvaluationInputError, match=msg):
            run(gt, {"v": [bad]})
    # a reversed segment is scored, as the official evaluator does: a false positive, counted
    gtd = load_ground_truth({"database": gt}, "test")
    pred = load_predictions({"results": {"v": [{"label": "A", "score": 1.0, "segment": [5, 1]},
                                               {"label": "A", "score": 0.5, "segment": [0, 10]}]}}, gtd)
    assert pred.reversed_segments == 1
    np.testing.assert_array_equal(pred.segments[0], [5.0, 1.0])
    assert evaluate_detection(gtd, pred, [0.5]).ap[0, 0] == 0.5          # FP then TP: precision 1/2 at recall 1
    # numeric strings as segment times are read as the official float() reads them
    assert run(gt, {"v": [{"label": "A", "score": 1.0, "segment": ["0", "10.0"]}]}).ap[0, 0] == 1.0
    with pytest.raises(EvaluationInputError, match="ends before"):
        run(db(v=[((5, 1), "A")]), {})
    with pytest.raises(EvaluationInputError, match="no video in subset"):
        run(gt, {}, subset="training")


def test_no_predictions_at_all():
    res = run(db(v=[((0, 10), "A")]), {})
    assert res.average_mAP == 0.0


# ---------------------------------------------------------------------------------------------
# Oracle agreement and invariants


@st.composite
def problems(draw):
    classes = ["A", "B", "C"][: draw(st.integers(1, 3))]
    n_videos = draw(st.integers(1, 4))
    grid = st.integers(0, 20).map(lambda x: x / 2)   # coarse grid: ties in tIoU and score happen
    gt = {}
    for v in range(n_videos):
        anns = []
        for _ in range(draw(st.integers(0, 5))):
            s, length = draw(grid), draw(st.integers(0, 8).map(lambda x: x / 2))
            anns.append(((s, s + length), draw(st.sampled_from(classes))))
        gt[f"v{v}"] = anns
    if not any(gt.values()):
        gt["v0"] = [((1.0, 3.0), classes[0])]
    present = sorted({l for anns in gt.values() for _, l in anns})
    results = {}
    for v in range(n_videos + 1):   # one video may be unknown
        items = []
        for _ in range(draw(st.integers(0, 7))):
            # negative lengths: reversed segments (end < start), scored by the official evaluator
            s, length = draw(grid), draw(st.integers(-8, 8).map(lambda x: x / 2))
            items.append({"label": draw(st.sampled_from(present)), "score": draw(st.integers(0, 4)) / 4,
                          "segment": [s, s + length]})
        if items:
            results[f"v{v}"] = items
    return db(**gt), results


@settings(max_examples=250, deadline=None)
@given(problems(),
       st.lists(st.sampled_from([0.1, 0.25, 0.3, 0.5, 0.7, 0.95, 1.0]), min_size=1, max_size=4, unique=True))
def test_matches_oracle(problem, thresholds):
    gt, results = problem
    res = run(gt, results, thresholds=np.array(thresholds))
    classes, expected = oracle_ap(gt, results, "test", thresholds)
    assert res.classes == classes
    np.testing.assert_array_equal(res.ap, expected)
    # and the official arithmetic itself (NaN tIoU included) wherever no prediction has a zero union
    # with an instance of its class and video, the one documented difference
    if not zero_union_pairs(gt, results):
        np.testing.assert_array_equal(res.ap, oracle_ap(gt, results, "test", thresholds, literal=True)[1])


def zero_union_pairs(gt_db: dict, results: dict) -> int:
    return sum(np.isnan(official_iou(*r["segment"], *a["segment"]))
               for vid, items in results.items() for r in items
               for a in gt_db.get(vid, {}).get("annotations", []) if a["label"] == r["label"])


@settings(max_examples=100, deadline=None)
@given(problems())
def test_a_reversed_prediction_scores_as_a_prediction_far_away(problem):
    """Every reversed segment is a false positive: moving it where no instance is changes no AP."""
    gt, results = problem
    moved = {vid: [r if r["segment"][1] >= r["segment"][0] else {**r, "segment": [1000.0, 1001.0]}
                   for r in items] for vid, items in results.items()}
    thresholds = np.array([0.1, 0.5, 1.0])
    np.testing.assert_array_equal(run(gt, results, thresholds=thresholds).ap, run(gt, moved, thresholds=thresholds).ap)


def test_reversed_segments_official_rule_and_its_nan_exception():
    gt = db(v=[((10, 20), "A"), ((30, 36), "A")])
    # reversed, with unions > 0 and < 0: the official tIoU is 0 / -0.0, a false positive at every threshold
    results = {"v": [{"label": "A", "score": 0.9, "segment": [19, 11]},
                     {"label": "A", "score": 0.8, "segment": [60, 5]},
                     {"label": "A", "score": 0.7, "segment": [10, 20]}]}
    assert official_iou(19, 11, 10, 20) == 0.0 and official_iou(60, 5, 10, 20) == 0.0
    res = run(gt, results, thresholds=[0.5])
    assert res.ap[0, 0] == (1 / 3) * (1 / 2)          # TP third: precision 1/3 at recall 1/2, then nothing
    assert res.ap[0, 0] == oracle_ap(gt, results, "test", [0.5], literal=True)[1][0, 0]
    # the official NaN exception (documented): an instance with its ends swapped has union 0 -> NaN -> TP there
    swapped = {"v": [{"label": "A", "score": 0.9, "segment": [20, 10]}]}
    assert np.isnan(official_iou(20, 10, 10, 20))
    assert oracle_ap(gt, swapped, "test", [0.5], literal=True)[1][0, 0] == 0.5
    assert run(gt, swapped, thresholds=[0.5]).ap[0, 0] == 0.0


@settings(max_examples=100, deadline=None)
@given(problems())
def test_perfect_predictions_score_one(problem):
    gt, _ = problem
    results = {vid: [{"label": a["label"], "score": 1.0, "segment": a["segment"]} for a in entry["annotations"]]
               for vid, entry in gt.items()}
    # zero-length instances cannot be matched (tIoU 0): leave them out of this invariant
    gt = {vid: {"subset": "test", "annotations": [a for a in e["annotations"] if a["segment"][1] > a["segment"][0]]}
          for vid, e in gt.items()}
    if not any(e["annotations"] for e in gt.values()):
        return
    results = {vid: [r for r in items if r["segment"][1] > r["segment"][0]] for vid, items in results.items()}
    np.testing.assert_array_equal(run(gt, results, thresholds=np.array([0.5, 1.0])).ap, 1.0)


@settings(max_examples=100, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_prediction_order_does_not_matter_without_score_ties(problem, rnd):
    gt, results = problem
    # make scores distinct, then shuffle the file order
    k = 0
    for items in results.values():
        for r in items:
            k += 1
            r["score"] = k * 0.001 + r["score"]
    base = run(gt, results).ap
    shuffled = {}
    for vid in rnd.sample(list(results), len(results)):
        items = list(results[vid])
        rnd.shuffle(items)
        shuffled[vid] = items
    np.testing.assert_array_equal(run(gt, shuffled).ap, base)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_a_lower_scored_false_positive_never_raises_ap(problem):
    """With distinct scores (with ties, the official ranking of tied predictions is NumPy's
    unstable argsort, which an extra element can reorder)."""
    gt, results = problem
    for k, r in enumerate(r for items in results.values() for r in items):
        r["score"] += k * 1e-3
    base = run(gt, results).ap
    vid = next(iter(gt))
    label = next(a["label"] for e in gt.values() for a in e["annotations"])
    extra = {**results, vid: [*results.get(vid, []), {"label": label, "score": -1.0, "segment": [1000.0, 1001.0]}]}
    assert np.all(run(gt, extra).ap <= base)


# ---------------------------------------------------------------------------------------------
# Real THUMOS14 ground truth


@pytest.fixture(scope="module")
def thumos(shared_data):
    path = shared_data / "thumos14" / "thumos14.json"
    return path, json.loads(path.read_text())


def thumos_predictions(data: dict, transform) -> dict:
    return {"results": {vid: [transform(a) for a in e["annotations"]]
                        for vid, e in data.items() if e["subset"] == "test"}}


def test_thumos14_perfect_shifted_relabelled(thumos):
    path, data = thumos
    gt = load_ground_truth(path, "test")
    assert len(gt.classes) == 20 and len(gt.labels) == 3358 and len(gt.videos) == 212

    def score(transform, thresholds=THUMOS_TIOU):
        return evaluate_detection(gt, load_predictions(thumos_predictions(data, transform), gt), thresholds)

    perfect = score(lambda a: {"label": a["label"], "score": 1.0, "segment": a["segment"]})
    np.testing.assert_array_equal(perfect.ap, 1.0)

    # shift every segment right by 25% of its length: tIoU = 0.75 / 1.25 = 0.6 with its own
    # instance, so every class has AP 1 below 0.6 and 0 above (exactly at 0.6 floating-point
    # rounding decides, so that threshold is left out).
    def shift(a):
        s, e = a["segment"]
        d = 0.25 * (e - s)
        return {"label": a["label"], "score": 1.0, "segment": [s + d, e + d]}

    shifted = score(shift, np.array([0.3, 0.59, 0.61, 0.7]))
    np.testing.assert_array_equal(shifted.ap[:2], 1.0)
    np.testing.assert_array_equal(shifted.ap[2:], 0.0)

    # relabel every instance to the next class (in the ground truth's class order). In THUMOS14
    # each of the 217 CliffDiving instances is also annotated as Diving (388 instances), and
    # CliffDiving is followed by Diving: those 217 predictions are all true positives of Diving,
    # ranked first or not they give precision 1 up to recall 217/388. Every other class: AP 0.
    nxt = {c: gt.classes[(i + 1) % 20] for i, c in enumerate(gt.classes)}
    assert nxt["CliffDiving"] == "Diving"
    counts = {c: int(np.sum(gt.labels == k)) for k, c in enumerate(gt.classes)}
    assert (counts["CliffDiving"], counts["Diving"]) == (217, 388)
    relabelled = score(lambda a: {"label": nxt[a["label"]], "score": 1.0, "segment": a["segment"]})
    expected = np.zeros((5, 20))
    expected[:, gt.classes.index("Diving")] = 217 / 388
    np.testing.assert_allclose(relabelled.ap, expected, rtol=1e-15, atol=0)


def test_thumos14_sized_random_input_matches_oracle_on_a_sample(thumos):
    """Random predictions on the real ground truth (speed: benchmarks/evaluate.py): the vectorized
    result equals the loop oracle on a 10-video sample."""
    path, data = thumos
    sample = dict(list((v, e) for v, e in data.items() if e["subset"] == "test")[:10])
    rng = np.random.default_rng(0)
    classes = sorted({a["label"] for e in sample.values() for a in e["annotations"]})
    results = {}
    for vid, e in sample.items():
        s = rng.uniform(0, e["duration"], 60)
        results[vid] = [{"label": classes[int(c)], "score": float(p), "segment": [float(a), float(a + l)]}
                        for a, l, c, p in zip(s, rng.uniform(1, 20, 60), rng.integers(0, len(classes), 60),
                                              rng.random(60))]
    res = run(sample, results)
    names, expected = oracle_ap(sample, results, "test", THUMOS_TIOU)
    assert res.classes == names
    np.testing.assert_array_equal(res.ap, expected)
    assert res.average_mAP > 0


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_matches_api_and_writes_result(tmp_path):
    gt = db(v1=[((10, 20), "A"), ((30, 40), "A")], v2=[((0, 10), "A"), ((5, 15), "B")])
    results = {"v1": [{"label": "A", "score": 0.9, "segment": [10, 20]},
                      {"label": "A", "score": 0.5, "segment": [30, 38]}],
               "v2": [{"label": "B", "score": 0.6, "segment": [5, 10]}]}
    (tmp_path / "gt.json").write_text(json.dumps({"database": gt}))
    (tmp_path / "pred.json").write_text(json.dumps({"version": "x", "results": results, "external_data": {}}))
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-m", "evaluate", "detection", "--ground-truth", str(tmp_path / "gt.json"),
                           "--predictions", str(tmp_path / "pred.json"), "--subset", "test", "--tiou", "0.3:0.7:0.1",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(out.read_text())
    api = run(gt, results).to_json()
    assert written["tiou"] == api["tiou"] and written["mAP"] == api["mAP"]
    assert written["average_mAP"] == api["average_mAP"] and written["per_class_AP"] == api["per_class_AP"]
    assert "average" in proc.stdout.lower() and "%" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "evaluate", "detection", "--ground-truth", str(tmp_path / "gt.json"),
                          "--predictions", str(tmp_path / "missing.json"), "--subset", "test"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr
    # reversed segments: scored, and said on stderr
    rev = {"v1": [*results["v1"], {"label": "A", "score": 0.95, "segment": [40, 30]}], "v2": results["v2"]}
    (tmp_path / "rev.json").write_text(json.dumps({"version": "x", "results": rev, "external_data": {}}))
    proc = subprocess.run([sys.executable, "-m", "evaluate", "detection", "--ground-truth", str(tmp_path / "gt.json"),
                           "--predictions", str(tmp_path / "rev.json"), "--subset", "test", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "1 prediction(s) end before they start" in proc.stderr and "false positives" in proc.stderr
    assert json.loads(out.read_text())["per_class_AP"] == run(gt, rev).to_json()["per_class_AP"]
    assert json.loads(out.read_text())["average_mAP"] < api["average_mAP"]


def test_cli_proposals_quality_and_plots(tmp_path, thumos):
    """Every subcommand on the real THUMOS14 ground truth, against the Python API; figures written."""

    path, data = thumos
    perfect = thumos_predictions(data, lambda a: {"label": a["label"], "score": 1.0, "segment": a["segment"]})
    (tmp_path / "pred.json").write_text(json.dumps(perfect))
    base = [sys.executable, "-m", "evaluate"]
    common = ["--ground-truth", str(path), "--subset", "test"]

    det = subprocess.run(base + ["detection", *common, "--predictions", str(tmp_path / "pred.json"),
                                 "--plot", str(tmp_path / "figs"), "--timeline", "video_test_0000004", "--quiet"],
                         cwd=REPO, capture_output=True, text=True)
    assert det.returncode == 0, det.stderr
    assert "100.00" in det.stdout
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "map_vs_tiou.png", "per_class_ap.png", "timeline_video_test_0000004.png"]

    out = tmp_path / "proposals.json"
    prop = subprocess.run(base + ["proposals", *common, "--proposals", str(tmp_path / "pred.json"),
                                  "--tiou", "0.5:1.0:0.05", "--an", "1,5,10,50,100", "--out", str(out),
                                  "--plot", str(tmp_path / "figs")],
                          cwd=REPO, capture_output=True, text=True)
    assert prop.returncode == 0, prop.stderr
    gt = load_ground_truth(path, "test")
    api = average_recall_vs_an(gt, load_predictions(perfect, gt, proposals=True), parse_thresholds("0.5:1.0:0.05"))
    assert json.loads(out.read_text()) == json.loads(json.dumps(api.to_json()))
    # AN past the proposals' reach (the ground truth has about 16 a video): left out of the line and said so
    assert prop.stdout.splitlines()[0] == "  ".join(f"AR@{a} {100 * recall_at(api, a):.2f}%" for a in (1, 5, 10))
    assert prop.stderr == (f"evaluate proposals: note: AR@50, AR@100 not reported: the proposals reach an average "
                           f"of {api.proposals_per_video[-1]:.1f} per video\n")
    assert (tmp_path / "figs" / "recall_vs_an.png").is_file()

    out = tmp_path / "quality.json"
    qual = subprocess.run(base + ["quality", *common, "--predictions", str(tmp_path / "pred.json"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert qual.returncode == 0, qual.stderr
    expected = proposal_quality(gt, load_predictions(perfect, gt)).to_json()
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected))
    assert json.loads(out.read_text())["accuracy"] == 1.0 and "100.00%" in qual.stdout


# ---------------------------------------------------------------------------------------------
# Classes of the ground-truth file with no instance in the evaluated subset


def with_other_subset(gt_db: dict) -> dict:
    """``gt_db`` (subset test) plus a validation video whose classes are Loop (only there) and A."""
    return gt_db | {"val0": {"subset": "validation", "annotations": [{"segment": [0, 5], "label": "Loop"},
                                                                     {"segment": [1, 2], "label": "A"}]}}


def assert_same_predictions(a, b) -> None:
    for name in ("video", "segments", "labels", "scores"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.videos, a.unknown_videos, a.reversed_segments) == (b.videos, b.unknown_videos, b.reversed_segments)


@settings(max_examples=100, deadline=None)
@given(problems(), st.data())
def test_predictions_of_a_class_outside_the_subset_are_left_out(problem, data):
    """Predictions labelled with a class of the file that has no instance in the subset are left out: the
    arrays are those of unknown_labels="ignore", and the AP equals the oracle's on the file without them."""
    gt_db, results = problem
    gt_db = with_other_subset(gt_db)
    mixed = {vid: list(items) for vid, items in results.items()}
    n = data.draw(st.integers(1, 6))
    for _ in range(n):
        vid = data.draw(st.sampled_from(sorted({*mixed, "v0", "val0"})))
        items = mixed.setdefault(vid, [])
        start = data.draw(st.integers(0, 20)) / 2
        items.insert(data.draw(st.integers(0, len(items))),
                     {"label": "Loop", "score": data.draw(st.integers(0, 4)) / 4, "segment": [start, start + 2]})
    gt = load_ground_truth({"database": gt_db}, "test")
    assert "Loop" in gt.other_classes and "Loop" not in gt.classes
    pred, left_out = load_detections({"results": mixed}, gt)
    assert left_out == {"Loop": n}
    ignored = load_predictions({"results": mixed}, gt, unknown_labels="ignore")
    assert_same_predictions(pred, ignored)
    res = evaluate_detection(gt, pred, THUMOS_TIOU)
    assert res.to_json() == evaluate_detection(gt, ignored, THUMOS_TIOU).to_json()
    classes, expected = oracle_ap(gt_db, results, "test", THUMOS_TIOU)
    assert res.classes == classes
    np.testing.assert_array_equal(res.ap, expected)


def test_a_label_found_nowhere_in_the_ground_truth_is_still_refused():
    gt = load_ground_truth({"database": with_other_subset(db(v=[((0, 10), "A")]))}, "test")
    results = {"v": [{"label": "Loop", "score": 1.0, "segment": [0, 1]},
                     {"label": "Nope", "score": 1.0, "segment": [0, 1]},
                     {"label": "A", "score": 0.5, "segment": [0, 10]}]}
    with pytest.raises(EvaluationInputError) as info:
        load_detections({"results": results}, gt)
    assert str(info.value) == ("prediction v #1: label 'Nope' is not a ground-truth class "
                               "(use --ignore-unknown-labels to drop such predictions)")
    pred, left_out = load_detections({"results": results}, gt, unknown_labels="ignore")
    assert left_out == {"Loop": 1} and pred.dropped_unknown_labels == 1
    np.testing.assert_array_equal(pred.labels, [0])


def test_cli_leaves_out_classes_without_instance_in_the_subset(tmp_path):
    """`evaluate detection` scores a file with predictions of a class that only the other subset has: the
    numbers equal those of --ignore-unknown-labels, and one stderr line says what was left out."""
    gt_db = with_other_subset(db(v1=[((10, 20), "A"), ((30, 40), "A")], v2=[((0, 10), "A"), ((5, 15), "B")]))
    results = {"v1": [{"label": "A", "score": 0.9, "segment": [10, 20]},
                      {"label": "Loop", "score": 0.95, "segment": [30, 40]},
                      {"label": "A", "score": 0.5, "segment": [30, 38]}],
               "v2": [{"label": "Loop", "score": 0.7, "segment": [0, 10]},
                      {"label": "B", "score": 0.6, "segment": [5, 10]}]}
    (tmp_path / "gt.json").write_text(json.dumps({"database": gt_db}))
    (tmp_path / "pred.json").write_text(json.dumps({"version": "x", "results": results, "external_data": {}}))

    def cli(pred: str, out: str, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "evaluate", "detection", "--ground-truth",
                               str(tmp_path / "gt.json"), "--predictions", str(tmp_path / pred), "--subset", "test",
                               "--out", str(tmp_path / out), *flags], cwd=REPO, capture_output=True, text=True)

    plain = cli("pred.json", "plain.json")
    note = ("evaluate detection: note: 2 predictions of 1 class with no instance in subset 'test' ('Loop') "
            "are not scored\n")
    assert (plain.returncode, plain.stderr) == (0, note)
    ignoring = cli("pred.json", "ignoring.json", "--ignore-unknown-labels")
    assert (ignoring.returncode, ignoring.stderr) == (0, note)
    assert plain.stdout == ignoring.stdout
    assert (tmp_path / "plain.json").read_text() == (tmp_path / "ignoring.json").read_text()
    api = run(gt_db, results, unknown_labels="ignore").to_json()
    assert json.loads((tmp_path / "plain.json").read_text()) == json.loads(json.dumps(api))
    assert list(api["per_class_AP"]) == ["A", "B"]
    # a label found nowhere in the ground truth: refused as before
    results["v2"].append({"label": "Nope", "score": 0.1, "segment": [0, 1]})
    (tmp_path / "unknown.json").write_text(json.dumps({"results": results}))
    refused = cli("unknown.json", "refused.json")
    assert (refused.returncode, refused.stderr) == (1, "evaluate detection: prediction v2 #2: label 'Nope' is not a "
                                                       "ground-truth class (use --ignore-unknown-labels to drop such "
                                                       "predictions)\n")
    assert not (tmp_path / "refused.json").exists()
