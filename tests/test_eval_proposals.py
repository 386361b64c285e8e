"""AR@AN: a loop-by-loop oracle of the official ActivityNet rule compared exactly on random inputs
(hypothesis), hand-computed curves, AR@AN lookup, edge cases, and the real THUMOS14 test ground
truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluate.data import EvaluationInputError, load_ground_truth, load_predictions, parse_thresholds
from evaluate.proposals import ProposalResult, average_recall_vs_an, recall_at

BSN_TIOU = parse_thresholds("0.5:1.0:0.05")


# ---------------------------------------------------------------------------------------------
# Oracle: the official procedure as plain loops over videos, thresholds, points, instances and
# proposals, on the raw JSON dictionaries (independent of evaluate.data and the vectorization).


def iou1(s1: float, e1: float, s2: float, e2: float) -> float:
    """The official ``segment_iou`` arithmetic, NaN (0/0) and -0.0 (a reversed proposal longer than
    the instance) included: ``NaN >= t`` is false, so neither recalls anything."""
    inter = np.clip(np.minimum(e1, e2) - np.maximum(s1, s2), 0, None)
    union = (e1 - s1) + (e2 - s2) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(inter) / np.float64(union))


def oracle_ar(gt_db: dict, results: dict, subset: str, thresholds, max_avg=None):
    """(recall[T, 100], avg_recall, proposals_per_video, auc); ZeroDivisionError where the
    official code divides by zero."""
    gts: dict[str, list[tuple[float, float]]] = {}           # videos in order of first instance
    for vid, entry in gt_db.items():
        if entry["subset"] == subset:
            for ann in entry["annotations"]:
                gts.setdefault(vid, []).append((float(ann["segment"][0]), float(ann["segment"][1])))
    props: dict[str, list[tuple[float, float, float]]] = {}
    num_proposals = 0
    for vid, items in results.items():
        for r in items:
            props.setdefault(vid, []).append((float(r["segment"][0]), float(r["segment"][1]), float(r["score"])))
            num_proposals += 1
    videos = list(gts)
    if max_avg is None:
        max_avg = float(num_proposals) / len(videos)
    ratio = max_avg * float(len(videos)) / num_proposals

    matrices = []
    total_nr = 0
    for vid in videos:
        g = gts[vid]
        if not props.get(vid):
            matrices.append(np.zeros((len(g), 1)))
            continue
        p = props[vid]
        order = np.array([x[2] for x in p]).argsort()[::-1]
        nr = min(int(len(p) * ratio), len(p))
        total_nr += nr
        kept = [p[i] for i in order[:nr]]
        m = np.zeros((len(g), nr))
        for a, (gs, ge) in enumerate(g):
            for b, (ps, pe, _) in enumerate(kept):
                m[a, b] = iou1(gs, ge, ps, pe)
        matrices.append(m)

    pcn = np.arange(1, 101) / 100.0 * (max_avg * float(len(videos)) / total_nr)
    n_instances = sum(m.shape[0] for m in matrices)
    recall = np.zeros((len(thresholds), 100))
    for t, thr in enumerate(thresholds):
        for j in range(100):
            found = 0
            for m in matrices:
                k = min(int(m.shape[1] * pcn[j]), m.shape[1])
                for row in m:
                    if any(row[c] >= thr for c in range(k)):
                        found += 1
            recall[t, j] = found / n_instances
    avg = recall.mean(axis=0)
    ppv = pcn * (float(total_nr) / len(videos))
    auc = sum((ppv[i + 1] - ppv[i]) * (avg[i + 1] + avg[i]) / 2.0 for i in range(99))
    return recall, avg, ppv, auc


def run(gt_db: dict, results: dict, thresholds, subset="test", max_avg=None) -> ProposalResult:
    gt = load_ground_truth({"database": gt_db}, subset)
    pred = load_predictions({"results": results}, gt, proposals=True)
    return average_recall_vs_an(gt, pred, thresholds, max_avg_nr_proposals=max_avg)


# ---------------------------------------------------------------------------------------------
# Random inputs: coarse grids so that tIoUs tie and hit thresholds exactly, few distinct scores so
# that scores tie, videos without instances, without proposals, of another subset, unknown.

grid = st.integers(0, 40).map(lambda x: x * 0.5)
segment = st.tuples(grid, st.integers(0, 12).map(lambda x: x * 0.5)).map(lambda se: [se[0], se[0] + se[1]])
# proposals may end before they start (scored by the official evaluator: they recall nothing)
proposal = st.tuples(grid, st.integers(-12, 12).map(lambda x: x * 0.5)).map(lambda se: [se[0], se[0] + se[1]])


@st.composite
def problems(draw):
    n_videos = draw(st.integers(1, 5))
    gt_db, results = {}, {}
    for v in range(n_videos):
        vid = f"v{v}"
        anns = [{"segment": draw(segment), "label": "a"} for _ in range(draw(st.integers(0 if v else 1, 5)))]
        gt_db[vid] = {"subset": "test", "annotations": anns}
        if draw(st.booleans()) or v == 0:
            results[vid] = [{"segment": draw(proposal), "score": draw(st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0]))}
                            for _ in range(draw(st.integers(0, 12)))]
    if draw(st.booleans()):       # a video of another subset and an unknown video: counted in P only
        gt_db["other"] = {"subset": "validation", "annotations": [{"segment": [0.0, 5.0], "label": "a"}]}
        results["other"] = [{"segment": [0.0, 5.0], "score": 1.0}]
        results["unknown"] = [{"segment": draw(proposal), "score": 0.5} for _ in range(draw(st.integers(1, 4)))]
    thresholds = np.array(draw(st.lists(                      # any order, repeats allowed
        st.sampled_from([0.1, 0.25, 0.5, 0.6, 0.75, 0.8, 0.95, 1.0]) | st.floats(0.05, 1.0), min_size=1, max_size=4)))
    max_avg = draw(st.none() | st.sampled_from([1, 2, 3, 100]) | st.floats(0.2, 15.0))
    return gt_db, results, thresholds, max_avg


@settings(max_examples=250, deadline=None)
@given(problems())
def test_matches_oracle_exactly(problem):
    gt_db, results, thresholds, max_avg = problem
    try:
        expected = oracle_ar(gt_db, results, "test", thresholds, max_avg)
    except ZeroDivisionError:        # no proposal, or none kept: the official code divides by zero
        with pytest.raises(EvaluationInputError):
            run(gt_db, results, thresholds, max_avg=max_avg)
        return
    res = run(gt_db, results, thresholds, max_avg=max_avg)
    recall, avg, ppv, auc = expected
    assert np.array_equal(res.recall, recall)
    assert np.array_equal(res.avg_recall, avg)
    assert np.array_equal(res.proposals_per_video, ppv)
    assert res.auc == pytest.approx(auc, rel=1e-12, abs=1e-12)
    assert res.recall.shape == (len(thresholds), 100)


def test_matches_oracle_on_a_larger_random_problem():
    """Many videos, many proposals each, ties everywhere; also a check of the speed."""
    rng = np.random.default_rng(3)
    gt_db, results = {}, {}
    for v in range(25):
        starts = rng.integers(0, 200, size=rng.integers(1, 12)) * 0.5
        gt_db[f"v{v}"] = {"subset": "test", "annotations": [
            {"segment": [s, s + rng.integers(1, 30) * 0.5], "label": "a"} for s in starts]}
        if v % 7:
            starts = rng.integers(0, 200, size=60) * 0.5
            results[f"v{v}"] = [{"segment": [s, s + rng.integers(0, 30) * 0.5], "score": float(rng.integers(0, 5))}
                                for s in starts]
    thresholds = parse_thresholds("0.5:0.95:0.05")
    for max_avg in (None, 7, 40.5):
        recall, avg, ppv, auc = oracle_ar(gt_db, results, "test", thresholds, max_avg)
        res = run(gt_db, results, thresholds, max_avg=max_avg)
        assert np.array_equal(res.recall, recall) and np.array_equal(res.avg_recall, avg)
        assert res.auc == pytest.approx(auc, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Hand-computed curves


def one_video():
    """GT A=[0,10], B=[20,30]; proposals by score: A exactly (tIoU 1 with A), [22,30] (0.8 with B),
    [0,5] (0.5 with A), [20.5,30] (0.95 with B)."""
    gt_db = {"v": {"subset": "test", "annotations": [{"segment": [0, 10], "label": "x"},
                                                     {"segment": [20, 30], "label": "x"}]}}
    results = {"v": [{"segment": [0, 5], "score": 0.7}, {"segment": [22, 30], "score": 0.8},
                     {"segment": [20.5, 30], "score": 0.6}, {"segment": [0, 10], "score": 0.9}]}
    return gt_db, results


def test_hand_computed_one_video_all_proposals():
    gt_db, results = one_video()
    res = run(gt_db, results, [0.5, 0.75, 0.95])
    # P = 4, V = 1: max 4 per video, ratio 1, pcn = j / 100, k = int(4 j / 100), AN = 4 j / 100.
    assert np.allclose(res.proposals_per_video, 4 * np.arange(1, 101) / 100)
    j = np.arange(1, 101)
    k = (4 * j) // 100
    # k = 1: A at every threshold. k = 2: B at 0.5 and 0.75 (tIoU 0.8). k = 3: [0,5] adds nothing.
    # k = 4: [20.5,30] has tIoU 0.95 with B, reaching 0.95 (>= is inclusive).
    expected = np.select([k == 0, k == 1, k < 4], [np.zeros((3, 100)), 0.5, np.array([[1], [1], [0.5]])], 1.0)
    assert np.array_equal(res.recall, expected)
    assert recall_at(res, 1) == 0.5
    assert recall_at(res, 2) == pytest.approx(5 / 6)
    assert recall_at(res, 3) == pytest.approx(5 / 6)
    assert recall_at(res, 4) == 1.0
    assert recall_at(res, 0.94) == 0.0                      # between points 23 and 24, both 0
    assert recall_at(res, 0.99) == pytest.approx(0.375)     # 3/4 of the way from 0 (AN 0.96) to 0.5 (AN 1)
    # AUC: 0.04 * (sum of trapezoids of 0, 0.5 (j 25-49), 5/6 (j 50-99), 1 (j 100))
    area = 0.04 * ((0 + 0.5) / 2 + 24 * 0.5 + (0.5 + 5 / 6) / 2 + 49 * 5 / 6 + (5 / 6 + 1) / 2)
    assert res.auc == pytest.approx(area)
    assert res.auc_normalized == pytest.approx(area / 4)


def test_hand_computed_one_video_capped():
    """max 2 proposals per video: only the two best (tIoU 1 with A, 0.8 with B) are kept."""
    gt_db, results = one_video()
    res = run(gt_db, results, [0.5, 0.75, 0.95], max_avg=2)
    assert res.proposals_per_video[-1] == pytest.approx(2)
    assert recall_at(res, 1) == 0.5                          # j = 50: k = 1
    assert recall_at(res, 2) == pytest.approx(5 / 6)          # k = 2: B missed only at 0.95
    assert np.array_equal(res.recall[:, 48], [0, 0, 0])       # j = 49: k = int(0.98) = 0


def test_hand_computed_video_without_proposals_and_unknown_video():
    """Video w has 2 instances and no proposals; unknown video u's 2 proposals count in P."""
    gt_db, results = one_video()
    gt_db["w"] = {"subset": "test",
                  "annotations": [{"segment": [0, 1], "label": "x"}, {"segment": [2, 3], "label": "x"}]}
    results["u"] = [{"segment": [0, 1], "score": 1.0}, {"segment": [0, 2], "score": 1.0}]
    res = run(gt_db, results, [0.5])
    # P = 6, V = 2: max 3 per video, ratio 1, total_nr = 4 (v only), pcn = j/100 * 6/4,
    # v uses k = int(4 * 1.5 j / 100) = int(0.06 j), capped at 4; AN = j/100 * 3.
    j = np.arange(1, 101)
    k = np.minimum(np.floor(4 * (j / 100.0 * 1.5)).astype(int), 4)
    found = np.select([k == 0, k == 1], [0, 1], 2)            # B reached at k = 2 (tIoU 0.8)
    assert np.array_equal(res.recall[0], found / 4)
    assert np.allclose(res.proposals_per_video, 3 * j / 100)
    assert res.avg_recall[-1] == 0.5


def test_score_ties_follow_numpy_default_argsort():
    """Equal scores: the order of ``argsort()[::-1]`` on the video's scores in file order decides."""
    gt_db = {"v": {"subset": "test", "annotations": [{"segment": [0, 10], "label": "x"}]}}
    results = {"v": [{"segment": [0, 10], "score": 0.5}, {"segment": [50, 60], "score": 0.5}]}
    res = run(gt_db, results, [0.5])
    first = np.array([0.5, 0.5]).argsort()[::-1][0]           # proposal ranked first
    assert recall_at(res, 1) == (1.0 if first == 0 else 0.0)
    assert recall_at(res, 2) == 1.0


# ---------------------------------------------------------------------------------------------
# recall_at, result, edge cases


def test_recall_at_interpolates_between_points_and_rejects_outside():
    gt_db, results = one_video()
    res = run(gt_db, results, [0.5, 0.75, 0.95])
    # AN 1.98 lies between points 49 (AN 1.96, 0.5) and 50 (AN 2.0, 5/6).
    assert recall_at(res, 1.98) == pytest.approx(0.5 + (5 / 6 - 0.5) / 2)
    assert np.allclose(recall_at(res, [1, 2, 4]), [0.5, 5 / 6, 1])
    with pytest.raises(ValueError, match="outside"):
        recall_at(res, 5)
    with pytest.raises(ValueError, match="outside"):
        recall_at(res, 0.01)


def test_to_json_is_serializable_and_holds_standard_an():
    gt_db, results = one_video()
    res = run(gt_db, results, [0.5, 0.75, 0.95], max_avg=100)
    out = json.loads(json.dumps(res.to_json()))
    assert out["tiou"] == [0.5, 0.75, 0.95]
    assert len(out["recall"]) == 3 and len(out["recall"][0]) == 100
    assert set(out["AR@AN"]) == {"1", "5", "10", "50", "100"}
    assert out["AR@AN"]["100"] == res.avg_recall[-1] == 1.0
    assert out["AUC_normalized"] == pytest.approx(res.auc / res.proposals_per_video[-1])


def test_no_proposals_or_none_kept_raise_and_bad_max_rejected():
    gt_db, results = one_video()
    with pytest.raises(EvaluationInputError, match="no proposals"):
        run(gt_db, {}, [0.5])
    with pytest.raises(EvaluationInputError, match="keeps no proposal"):
        run(gt_db, results, [0.5], max_avg=0.1)                # int(4 * 0.025) = 0
    with pytest.raises(ValueError, match="positive"):
        run(gt_db, results, [0.5], max_avg=0)


# ---------------------------------------------------------------------------------------------
# Real THUMOS14 test ground truth


@pytest.fixture(scope="module")
def thumos(shared_data):
    path = shared_data / "thumos14" / "thumos14.json"
    if not path.is_file():
        pytest.skip(f"THUMOS14 annotations {path} are missing")
    db = json.loads(path.read_text())
    gt = load_ground_truth(db, "test")
    assert (len(gt.videos), len(gt.segments), len(gt.classes)) == (212, 3358, 20)
    return db, gt


def proposals_from(gt, segments, scores=None) -> dict:
    scores = np.ones(len(segments)) if scores is None else scores
    results: dict[str, list] = {v: [] for v in gt.videos}
    for v, seg, s in zip(gt.video, segments, scores):
        results[gt.videos[v]].append({"segment": [float(seg[0]), float(seg[1])], "score": float(s)})
    return {"results": results}


def test_thumos_ground_truth_as_proposals_recalls_everything(thumos):
    _, gt = thumos
    pred = load_predictions(proposals_from(gt, gt.segments), gt, proposals=True)
    res = average_recall_vs_an(gt, pred, BSN_TIOU)
    assert np.array_equal(res.recall[:, -1], np.ones(len(BSN_TIOU)))      # tIoU 1 reached exactly
    assert res.proposals_per_video[-1] == pytest.approx(3358 / 212)
    assert np.all(np.diff(res.avg_recall) >= 0)


def test_thumos_shifted_proposals(thumos):
    """Every segment shifted right by 10% of its length: tIoU with its own instance 0.9 / 1.1 =
    0.8181..., so all instances are recalled at thresholds up to 0.8 and none from 0.85 on, unless
    another instance of the same video is matched better (checked: none is at >= 0.85)."""
    _, gt = thumos
    length = gt.segments[:, 1] - gt.segments[:, 0]
    shifted = gt.segments + 0.1 * length[:, None]
    pred = load_predictions(proposals_from(gt, shifted), gt, proposals=True)
    res = average_recall_vs_an(gt, pred, BSN_TIOU)
    expected = np.where(BSN_TIOU <= 0.9 / 1.1, 1.0, 0.0)
    # Other instances of the same video could be matched better by some shifted segment; derive the
    # exceptions directly (best tIoU of each instance over its video's proposals).
    best = np.zeros(len(gt.segments))
    for v in np.unique(gt.video):
        members = np.flatnonzero(gt.video == v)
        iou = np.array([[_iou(gt.segments[a], shifted[b]) for b in members] for a in members])
        best[members] = iou.max(axis=1)
    derived = (best[None, :] >= BSN_TIOU[:, None]).mean(axis=1)
    assert np.array_equal(res.recall[:, -1], derived)
    assert np.allclose(res.recall[:, -1], expected, atol=0.01)      # the rule of thumb, nearly exactly
    assert np.array_equal(res.recall[BSN_TIOU <= 0.8, -1], np.ones(np.count_nonzero(BSN_TIOU <= 0.8)))


def _iou(a, b) -> float:
    return iou1(a[0], a[1], b[0], b[1])


def test_thumos_scale_random_proposals(thumos):
    """1000 proposals per video (212,000 in all), as for AR@1000 on THUMOS14 (speed:
    benchmarks/evaluate.py)."""
    _, gt = thumos
    rng = np.random.default_rng(0)
    n = 1000
    dur = np.array([gt.durations.get(v, 200.0) for v in gt.videos])
    video = np.repeat(np.arange(len(gt.videos)), n)
    start = rng.uniform(0, 1, len(video)) * dur[video]
    segs = np.stack([start, start + rng.uniform(0.5, 20, len(video))], axis=1)
    results = {v: [] for v in gt.videos}
    for v, s, sc in zip(video, segs.tolist(), rng.uniform(0, 1, len(video)).tolist()):
        results[gt.videos[v]].append({"segment": s, "score": sc})
    pred = load_predictions({"results": results}, gt, proposals=True)
    res = average_recall_vs_an(gt, pred, BSN_TIOU, max_avg_nr_proposals=1000)
    ar = recall_at(res, [50, 100, 200, 500, 1000])
    assert np.all(np.diff(ar) >= 0) and 0 < ar[-1] < 1
