"""Soft-NMS and proposal/classification fusion: hand-computed cases, a list-based loop oracle
(hypothesis), invariants, groups, bad input, and the video-score file layouts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from detect.fusion import VideoScoresError, fuse_video_scores, load_video_scores
from detect.nms import batched_soft_nms, segment_iou_matrix, soft_nms

F64 = torch.float64


def t(x, dtype=F64) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Oracle: Soft-NMS as plain Python lists, one segment at a time.


def oracle_iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def near(a: float, b: float, rel: float = 1e-9) -> bool:
    """Equal or within rounding of a few decays."""
    return abs(a - b) <= rel * max(abs(a), abs(b))


def oracle_soft_nms(segs, scores, sigma, top_k, min_score, ties=None, paths=None):
    """List-based Soft-NMS.

    ``ties`` (a list): a choice is appended where another remaining segment's score is :func:`near` the chosen one's
    but came by another path (initial score and decays): the order of two such scores is decided by the last bit
    of ``exp``, which differs between Python's math and torch's vectorised kernels (segments with the same path
    have bit-equal scores in both, and take the lowest index first). ``paths`` (a list): each kept segment's path.
    """
    s = list(scores)
    path = [(x,) for x in scores]                 # initial score, then each non-zero decay's exp argument in order
    remaining = list(range(len(segs)))
    keep, kept = [], []
    while remaining and (top_k is None or len(keep) < top_k):
        m = remaining[0]
        for i in remaining:              # highest score; ties: the lowest index (first seen)
            if s[i] > s[m]:
                m = i
        if ties is not None and ((s[m] != min_score and near(s[m], min_score))
                                 or any(near(s[i], s[m]) and path[i] != path[m] for i in remaining)):
            ties.append(m)
        if s[m] <= min_score:
            break
        keep.append(m)
        kept.append(s[m])
        if paths is not None:
            paths.append(path[m])
        remaining.remove(m)
        for i in remaining:
            arg = -oracle_iou(segs[m], segs[i]) ** 2 / sigma
            s[i] = s[i] * math.exp(arg)
            if arg:                      # exp(0) = 1 exactly everywhere: a disjoint segment's score is unchanged
                path[i] += (arg,)
    return keep, kept


@st.composite
def nms_inputs(draw, max_n=14):
    """Segments drawn from a small pool (duplicates), some zero-length, integer or float times."""
    time = st.one_of(st.integers(0, 30).map(float), st.floats(0, 30, allow_nan=False))
    length = st.one_of(st.just(0.0), st.integers(1, 15).map(float), st.floats(0, 15, allow_nan=False))
    pool = draw(st.lists(st.tuples(time, length).map(lambda sl: (sl[0], sl[0] + sl[1])), min_size=1, max_size=8))
    n = draw(st.integers(0, max_n))
    segs = [draw(st.sampled_from(pool)) for _ in range(n)]
    score = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0, 1, allow_nan=False))
    scores = [draw(score) for _ in range(n)]
    return segs, scores


def as_tensors(segs, scores, dtype=F64):
    return torch.tensor(segs, dtype=dtype).reshape(-1, 2), torch.tensor(scores, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# segment_iou_matrix


def test_iou_hand_values():
    a = t([[0, 10], [5, 15], [2, 8], [20, 30]])
    iou = segment_iou_matrix(a, a)
    # [0,10]-[5,15]: 5 / 15; [0,10]-[2,8]: 6 / 10; [5,15]-[2,8]: 3 / (10 + 6 - 3); [20,30]: disjoint
    expected = t([[1, 1 / 3, 0.6, 0], [1 / 3, 1, 3 / 13, 0], [0.6, 3 / 13, 1, 0], [0, 0, 0, 1]])
    assert torch.allclose(iou, expected, rtol=1e-12, atol=0)
    # touching at one point: intersection 0; (N, M) shape with N != M
    assert segment_iou_matrix(t([[0, 1]]), t([[1, 2], [0, 2], [0.5, 0.5]])).tolist() == [[0.0, 0.5, 0.0]]


def test_iou_empty_union_is_zero_and_shapes():
    z = t([[3, 3], [3, 3], [1, 1]])
    assert segment_iou_matrix(z, z).tolist() == [[0.0] * 3] * 3            # zero-length: never NaN
    assert segment_iou_matrix(t([[3, 3]]), t([[0, 10]])).tolist() == [[0.0]]  # inside, but zero length
    assert segment_iou_matrix(torch.zeros(0, 2), torch.zeros(4, 2)).shape == (0, 4)
    assert segment_iou_matrix(torch.tensor([[0, 4]]), torch.tensor([[2, 6]])).item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        segment_iou_matrix(torch.zeros(3), torch.zeros(3, 2))


@settings(max_examples=100, deadline=None)
@given(nms_inputs())
def test_iou_symmetric_unit_diagonal_matches_oracle(data):
    segs, _ = data
    a = torch.tensor(segs, dtype=F64).reshape(-1, 2)
    iou = segment_iou_matrix(a, a)
    assert torch.equal(iou, iou.T)
    assert ((iou >= 0) & (iou <= 1)).all()
    nonempty = a[:, 1] > a[:, 0]
    assert torch.equal(torch.diagonal(iou)[nonempty], torch.ones(int(nonempty.sum()), dtype=F64))
    expected = [[oracle_iou(p, q) for q in segs] for p in segs]
    assert torch.allclose(iou, torch.tensor(expected, dtype=F64).reshape(iou.shape), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# soft_nms: by hand


HAND_SEGS = [[0, 10], [5, 15], [2, 8], [20, 30]]
HAND_SCORES = [0.9, 0.8, 0.7, 0.5]
# IoUs: (0,1) = 5/15 = 1/3, (0,2) = 6/10 = 0.6, (1,2) = 3/13, segment 3 disjoint from all. sigma = 0.5:
# step 1: keep 0 at 0.9; s1 = 0.8 exp(-(1/3)^2 / 0.5) = 0.8 exp(-2/9) ~ 0.6406,
#         s2 = 0.7 exp(-0.6^2 / 0.5) = 0.7 exp(-0.72) ~ 0.3407, s3 = 0.5 (IoU 0)
# step 2: keep 1 at 0.8 exp(-2/9); s2 *= exp(-(3/13)^2 / 0.5) = exp(-18/169) -> ~ 0.3063; s3 = 0.5
# step 3: keep 3 at 0.5 (now above segment 2, which started above it)
# step 4: keep 2 at 0.7 exp(-0.72 - 18/169)
HAND_KEEP = [0, 1, 3, 2]
HAND_KEPT = [0.9, 0.8 * math.exp(-2 / 9), 0.5, 0.7 * math.exp(-0.72) * math.exp(-18 / 169)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_nms_hand_case(dtype):
    keep, kept = soft_nms(*as_tensors(HAND_SEGS, HAND_SCORES, dtype), sigma=0.5, top_k=None)
    assert keep.dtype == torch.long and kept.dtype == dtype
    assert keep.tolist() == HAND_KEEP
    assert torch.allclose(kept, t(HAND_KEPT, dtype), rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)


def test_soft_nms_hand_case_top_k_and_min_score():
    segs, scores = as_tensors(HAND_SEGS, HAND_SCORES)
    keep, kept = soft_nms(segs, scores, sigma=0.5, top_k=2)
    assert keep.tolist() == [0, 1] and torch.allclose(kept, t(HAND_KEPT[:2]), rtol=1e-12)
    keep, _ = soft_nms(segs, scores, sigma=0.5, top_k=None, min_score=0.4)   # 0.306 <= 0.4 stops
    assert keep.tolist() == [0, 1, 3]
    keep, _ = soft_nms(segs, scores, sigma=0.5, top_k=None, min_score=0.5)   # "<=": 0.5 itself stops
    assert keep.tolist() == [0, 1]
    assert soft_nms(segs, scores, top_k=0)[0].tolist() == []
    # a larger sigma decays less: segment 2 (0.7 exp(-0.36 / 5) exp(-(3/13)^2 / 5) ~ 0.645) stays above 3
    assert soft_nms(segs, scores, sigma=5.0, top_k=None)[0].tolist() == [0, 1, 2, 3]


def test_soft_nms_ties_take_the_lowest_index():
    segs = t([[0, 10], [50, 60], [20, 30]])
    keep, kept = soft_nms(segs, t([0.5, 0.7, 0.7]), top_k=None)
    assert keep.tolist() == [1, 2, 0] and kept.tolist() == [0.7, 0.7, 0.5]


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 3.0])
def test_identical_duplicates(sigma):
    # IoU 1: the second copy is multiplied by exp(-1 / sigma); equal scores: the first copy wins
    segs = t([[2.5, 7.0], [2.5, 7.0]])
    keep, kept = soft_nms(segs, t([0.6, 0.8]), sigma=sigma, top_k=None)
    assert keep.tolist() == [1, 0]
    assert torch.allclose(kept, t([0.8, 0.6 * math.exp(-1 / sigma)]), rtol=1e-12, atol=0)
    keep, kept = soft_nms(segs, t([0.8, 0.8]), sigma=sigma, top_k=None)
    assert keep.tolist() == [0, 1]
    assert torch.allclose(kept, t([0.8, 0.8 * math.exp(-1 / sigma)]), rtol=1e-12, atol=0)


def test_disjoint_segments_keep_their_scores_exactly():
    # touching ([0,1], [1,2]) and zero-length segments have IoU 0 with everything
    segs = t([[0, 1], [1, 2], [2, 3], [5, 5], [5, 5], [10, 20]])
    scores = t([0.3, 0.9, 0.1, 0.5, 0.5, 0.7])
    keep, kept = soft_nms(segs, scores, sigma=0.01, top_k=None)
    assert keep.tolist() == [1, 5, 3, 4, 0, 2]
    assert torch.equal(kept, scores[keep])


def test_zero_and_negative_scores_are_not_kept_by_default():
    keep, kept = soft_nms(t([[0, 1], [2, 3], [4, 5]]), t([0.0, 0.2, -1.0]))
    assert keep.tolist() == [1]
    keep, _ = soft_nms(t([[0, 1], [2, 3], [4, 5]]), t([0.0, 0.2, -1.0]), min_score=float("-inf"))
    assert keep.tolist() == [1, 0, 2]


def test_tiny_sigma_underflow_stays_finite():
    # exp(-1 / 1e-6) underflows to 0: the duplicate drops to 0 and is not kept; nothing becomes NaN
    keep, kept = soft_nms(t([[0, 1], [0, 1], [3, 4]]), t([0.9, 0.8, 0.1]), sigma=1e-6, top_k=None)
    assert keep.tolist() == [0, 2] and kept.tolist() == [0.9, 0.1]
    keep, kept = soft_nms(t([[0, 1], [0, 1], [3, 4]]), t([0.9, 0.8, 0.1]), sigma=1e-6, top_k=None,
                          min_score=-1.0)
    assert keep.tolist() == [0, 2, 1] and kept.tolist() == [0.9, 0.1, 0.0]


def test_empty_input():
    keep, kept = soft_nms(torch.zeros(0, 2), torch.zeros(0))
    assert keep.shape == (0,) and keep.dtype == torch.long and kept.shape == (0,)
    keep, kept = batched_soft_nms(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert keep.shape == (0,) and keep.dtype == torch.long and kept.shape == (0,)


# ---------------------------------------------------------------------------------------------
# soft_nms: oracle and invariants


top_ks = st.one_of(st.none(), st.integers(0, 16))
sigmas = st.one_of(st.sampled_from([0.5, 1.0]), st.floats(0.05, 3.0))
min_scores = st.one_of(st.just(0.0), st.floats(0, 0.8))


@settings(max_examples=300, deadline=None)
@given(nms_inputs(), sigmas, top_ks, min_scores)
def test_soft_nms_matches_loop_oracle(data, sigma, top_k, min_score):
    segs, scores = data
    keep, kept = soft_nms(*as_tensors(segs, scores), sigma=sigma, top_k=top_k, min_score=min_score)
    ties = []
    ref_keep, ref_kept = oracle_soft_nms(segs, scores, sigma, top_k, min_score, ties)
    assume(not ties)                          # a near tie's order is the last bit of exp (see near())
    assert keep.tolist() == ref_keep
    assert torch.allclose(kept, t(ref_kept), rtol=1e-6, atol=0)


@settings(max_examples=200, deadline=None)
@given(nms_inputs(), sigmas, top_ks)
def test_soft_nms_invariants(data, sigma, top_k):
    segs, scores = data
    segs_t, scores_t = as_tensors(segs, scores)
    keep, kept = soft_nms(segs_t, scores_t, sigma=sigma, top_k=top_k)
    n_positive = sum(s > 0 for s in scores)
    assert len(keep) <= (len(segs) if top_k is None else top_k)
    assert len(set(keep.tolist())) == len(keep)
    assert (kept[1:] <= kept[:-1]).all()                      # non-increasing
    assert (kept <= scores_t[keep]).all() and (kept > 0).all()
    assert len(keep) <= n_positive                            # min_score 0: only positive scores are kept
    # the first kept is the best original score (lowest index among ties)
    if len(keep):
        assert keep[0].item() == max(range(len(scores)), key=lambda i: (scores[i], -i))
    # a segment with IoU 0 to all others keeps its score exactly
    iou = segment_iou_matrix(segs_t, segs_t).fill_diagonal_(0)
    alone = (iou == 0).all(dim=1)
    for k, s in zip(keep.tolist(), kept):
        if alone[k]:
            assert s.item() == scores[k]


# ---------------------------------------------------------------------------------------------
# batched_soft_nms


def merged_per_group(segs, scores, groups, sigma, top_k_per_group, top_k, min_score, ties=None):
    """Oracle: list-based Soft-NMS per group (ascending), merged by a stable descending sort (near ties within a
    group or between groups' kept scores are appended to ``ties``: :func:`oracle_soft_nms`)."""
    items = []
    for g in sorted(set(groups)):
        idx = [i for i, gi in enumerate(groups) if gi == g]
        paths = []
        k, s = oracle_soft_nms([segs[i] for i in idx], [scores[i] for i in idx], sigma, top_k_per_group, min_score,
                               ties, paths)
        items += [(idx[j], sj, pj) for j, sj, pj in zip(k, s, paths)]
    if ties is not None:                        # between groups: near scores by different paths
        ties += [(i, j) for i, si, pi in items for j, sj, pj in items if near(si, sj) and pi != pj]
    items = [(i, si) for i, si, _ in items]
    items.sort(key=lambda it: -it[1])                          # Python's sort is stable
    items = items if top_k is None else items[:top_k]
    return [i for i, _ in items], [s for _, s in items]


@settings(max_examples=200, deadline=None)
@given(nms_inputs(max_n=20), st.data(), sigmas, top_ks, top_ks)
def test_batched_equals_per_group_then_merge(data, draw, sigma, top_k_per_group, top_k):
    segs, scores = data
    groups = draw.draw(st.lists(st.integers(0, 3), min_size=len(segs), max_size=len(segs)))
    keep, kept = batched_soft_nms(*as_tensors(segs, scores), torch.tensor(groups, dtype=torch.long), sigma=sigma,
                                  top_k_per_group=top_k_per_group, top_k=top_k)
    ties = []
    ref_keep, ref_kept = merged_per_group(segs, scores, groups, sigma, top_k_per_group, top_k, 0.0, ties)
    assume(not ties)                          # a near tie's order is the last bit of exp (see near())
    assert keep.tolist() == ref_keep
    assert torch.allclose(kept, t(ref_kept), rtol=1e-6, atol=0)
    # and against soft_nms itself, group by group
    segs_t, scores_t = as_tensors(segs, scores)
    for g in set(groups):
        idx = torch.tensor([i for i, gi in enumerate(groups) if gi == g], dtype=torch.long)
        k, s = soft_nms(segs_t[idx], scores_t[idx], sigma, top_k_per_group)
        mine = [(i, v) for i, v in zip(keep.tolist(), kept.tolist()) if groups[i] == g]
        full = list(zip(idx[k].tolist(), s.tolist()))
        assert mine == full[:len(mine)]                       # top_k may truncate a group's tail


def test_a_near_tie_is_recognised_and_changes_nothing_but_the_order():
    """Segments 0 and 4 reach the same score by the same two decays in the other order (a near tie hypothesis
    found: torch kept 4 before 0, the list oracle 0 before 4); the oracle flags it, and both runs keep the same
    segments with the same scores up to rounding."""
    segs = [(0.0, 10.0), (0.0, 0.0), (0.0, 0.65), (0.0, 0.0), (0.0, 0.65), (0.0, 10.0)] + [(0.0, 0.0)] * 5
    scores = [0.21875, 0.0, 0.25, 0.0, 0.21875, 0.5] + [0.0] * 5
    sigma = 2.1658759412077413
    ties = []
    ref_keep, ref_kept = oracle_soft_nms(segs, scores, sigma, None, 0.0, ties)
    assert ref_keep[:2] == [5, 2] and sorted(ref_keep[2:]) == [0, 4] and ties
    keep, kept = batched_soft_nms(*as_tensors(segs, scores), torch.zeros(len(segs), dtype=torch.long), sigma=sigma,
                                  top_k_per_group=None)
    assert keep.tolist()[:2] == [5, 2] and sorted(keep.tolist()[2:]) == [0, 4]
    torch.testing.assert_close(kept, t(ref_kept), rtol=1e-12, atol=0)


def test_groups_never_affect_each_other():
    # the same segments in two groups: each copy keeps its own score; within a group they decay
    segs = t([[0, 10], [0, 10], [0, 10], [5, 15]])
    scores = t([0.9, 0.8, 0.7, 0.6])
    keep, kept = batched_soft_nms(segs, scores, torch.tensor([0, 1, 0, 1]), sigma=0.5, top_k_per_group=None)
    # group 0: 0 at 0.9, then 2 at 0.7 exp(-2); group 1: 1 at 0.8, then 3 at 0.6 exp(-(1/3)^2 / 0.5)
    assert keep.tolist() == [0, 1, 3, 2]
    assert torch.allclose(kept, t([0.9, 0.8, 0.6 * math.exp(-2 / 9), 0.7 * math.exp(-2)]), rtol=1e-12)
    # adding a group leaves the others' keeps and scores unchanged
    more_segs = torch.cat([segs, t([[0, 10], [1, 9]])])
    more_scores = torch.cat([scores, t([1.0, 0.95])])
    k2, s2 = batched_soft_nms(more_segs, more_scores, torch.tensor([0, 1, 0, 1, 7, 7]), top_k_per_group=None)
    assert [(i, v) for i, v in zip(k2.tolist(), s2.tolist()) if i < 4] == list(zip(keep.tolist(), kept.tolist()))
    # per-group and overall top_k
    k3, _ = batched_soft_nms(segs, scores, torch.tensor([0, 1, 0, 1]), top_k_per_group=1)
    assert k3.tolist() == [0, 1]
    k4, _ = batched_soft_nms(segs, scores, torch.tensor([0, 1, 0, 1]), top_k_per_group=None, top_k=3)
    assert k4.tolist() == [0, 1, 3]


def test_batched_equal_scores_merge_by_group_then_keep_order():
    segs = t([[0, 1], [2, 3], [4, 5], [6, 7]])
    keep, _ = batched_soft_nms(segs, t([0.5, 0.5, 0.5, 0.5]), torch.tensor([3, 1, 3, 1]))
    assert keep.tolist() == [1, 3, 0, 2]


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("call, match", [
    (lambda: soft_nms(torch.zeros(3, 2), torch.zeros(4)), "scores must be"),
    (lambda: soft_nms(torch.zeros(3, 3), torch.zeros(3)), "segments must be"),
    (lambda: soft_nms(torch.zeros(3), torch.zeros(3)), "segments must be"),
    (lambda: soft_nms(torch.zeros(2, 2), torch.zeros(2), sigma=0.0), "sigma"),
    (lambda: soft_nms(torch.zeros(2, 2), torch.zeros(2), sigma=-1.0), "sigma"),
    (lambda: soft_nms(torch.zeros(2, 2), torch.zeros(2), sigma=float("nan")), "sigma"),
    (lambda: soft_nms(torch.zeros(2, 2), t([0.5, float("nan")])), "NaN"),
    (lambda: soft_nms(torch.zeros(2, 2), t([0.5, float("inf")])), "finite"),
    (lambda: soft_nms(t([[0, 1], [0, float("nan")]]), t([0.5, 0.5])), "finite"),
    (lambda: soft_nms(t([[0, 1], [3, 2]]), t([0.5, 0.5])), "end >= start"),
    (lambda: soft_nms(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)), "floating"),
    (lambda: soft_nms(torch.zeros(2, 2), torch.zeros(2), top_k=-1), "top_k"),
    (lambda: soft_nms(torch.zeros(2, 2), torch.zeros(2), min_score=float("nan")), "min_score"),
    (lambda: batched_soft_nms(torch.zeros(2, 2), torch.zeros(2), torch.zeros(3, dtype=torch.long)), "groups"),
    (lambda: batched_soft_nms(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2)), "integer"),
    (lambda: batched_soft_nms(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2, dtype=torch.long), top_k=-2), "top_k"),
])
def test_bad_input_raises_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(1)
    start = torch.rand(5000, generator=g, dtype=F64) * 300
    segs = torch.stack([start, start + torch.rand(5000, generator=g, dtype=F64) * 40], 1)
    scores = torch.rand(5000, generator=g, dtype=F64)
    groups = torch.randint(0, 5, (5000,), generator=g)
    for dtype in (torch.float32, torch.float64):
        k, s = soft_nms(segs.to(dtype), scores.to(dtype), top_k=300)
        kc, sc = soft_nms(segs.to(dtype).cuda(), scores.to(dtype).cuda(), top_k=300)
        assert kc.device.type == "cuda" and sc.device.type == "cuda" and sc.dtype == dtype
        assert torch.equal(kc.cpu(), k) if dtype == F64 else (kc.cpu()[:50] == k[:50]).all()
        assert torch.allclose(sc.cpu()[:50], s[:50], rtol=1e-5)
    k, s = batched_soft_nms(segs, scores, groups, top_k_per_group=50)
    kc, sc = batched_soft_nms(segs.cuda(), scores.cuda(), groups.cuda(), top_k_per_group=50)
    assert torch.equal(kc.cpu(), k) and torch.allclose(sc.cpu(), s, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# fusion


def test_fuse_hand_case():
    segments = np.array([[1.0, 5.0], [3.0, 8.0]])
    scores = np.array([0.9, 0.5])
    # top 2 classes: A (0.6), B (0.5); C (0.1) is dropped.
    # A x p0 = 0.54, A x p1 = 0.30, B x p0 = 0.45, B x p1 = 0.25
    out = fuse_video_scores(segments, scores, {"C": 0.1, "B": 0.5, "A": 0.6}, top_classes=2)
    assert [(lab, s0, s1) for lab, _, s0, s1 in out] == [("A", 1.0, 5.0), ("B", 1.0, 5.0), ("A", 3.0, 8.0),
                                                         ("B", 3.0, 8.0)]
    assert [score for _, score, _, _ in out] == pytest.approx([0.54, 0.45, 0.30, 0.25], rel=1e-12)
    assert all(isinstance(v, float) for d in out for v in d[1:])
    assert len(fuse_video_scores(segments, scores, {"C": 0.1, "B": 0.5, "A": 0.6}, top_classes=5)) == 6
    assert fuse_video_scores(segments, scores, {"A": 0.6}, top_classes=0) == []
    assert fuse_video_scores(np.zeros((0, 2)), np.zeros(0), {"A": 0.6}) == []


def test_fuse_ties():
    # equal class scores: label name decides the rank ("a" before "b"; "c" is third and dropped);
    # equal fused scores: class rank, then proposal order
    out = fuse_video_scores(np.array([[0, 1], [2, 3]]), np.array([0.5, 0.5]), {"b": 0.4, "c": 0.4, "a": 0.4})
    assert [(lab, s0) for lab, _, s0, _ in out] == [("a", 0), ("a", 2), ("b", 0), ("b", 2)]
    # many equal fused scores (enough to expose an unstable sort), between two distinct ones
    segments = np.stack([np.arange(40.0), np.arange(40.0) + 1], 1)
    scores = np.full(40, 0.5)
    scores[7], scores[31] = 0.9, 0.1
    out = fuse_video_scores(segments, scores, {"y": 0.2, "x": 0.2})
    expected = [("x", 7.0)] + [(lab, float(i)) for lab in "xy" for i in range(40) if i not in (7, 31)]
    expected = expected[:1] + [("y", 7.0)] + expected[1:] + [("x", 31.0), ("y", 31.0)]
    assert [(lab, s0) for lab, _, s0, _ in out] == expected


def test_fuse_bad_shapes():
    with pytest.raises(ValueError, match="scores"):
        fuse_video_scores(np.zeros((2, 2)), np.zeros(3), {"a": 1.0})
    with pytest.raises(ValueError, match="segments"):
        fuse_video_scores(np.zeros((2, 3)), np.zeros(2), {"a": 1.0})


CUHK = {"results": {"v_a": [0.1, 0.7, 0.2], "v_b": [0.5, 0.25, 0.25]}, "class": ["Run", "Jump", "Swim"],
        "version": "VERSION 1.3"}
EXPECTED = {"v_a": {"Run": 0.1, "Jump": 0.7, "Swim": 0.2}, "v_b": {"Run": 0.5, "Jump": 0.25, "Swim": 0.25}}


@pytest.mark.parametrize("content", [
    CUHK,
    {"results": EXPECTED},
    EXPECTED,
], ids=["cuhk", "results-mapping", "bare-mapping"])
def test_load_video_scores_layouts(tmp_path, content):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(content))
    assert load_video_scores(path) == EXPECTED
    assert load_video_scores(str(path)) == EXPECTED
    assert load_video_scores(content) == EXPECTED
    assert list(load_video_scores(path)["v_a"]) == ["Run", "Jump", "Swim"]


@pytest.mark.parametrize("text, match", [
    (None, "no such file"),
    ('{"results": {"v": [0.1, 0.2]', "invalid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"results": {"v": [0.1, 0.2]}, "class": ["a", "b", "c"]}), "2 scores for 3 classes"),
    (json.dumps({"results": {"v": [0.1, 0.2]}}), '"class"'),
    ('{"results": {"v": [0.1, NaN]}, "class": ["a", "b"]}', "finite"),
    ('{"v": {"a": Infinity}}', "finite"),
    ('{"results": {"v": {"a": "0.5"}}}', "number"),
    ('{"results": {"v": {"a": true}}}', "number"),
    ('{"v": 0.5}', "expected a list"),
    (json.dumps({"results": {"v": [0.1, 0.2]}, "class": ["a", "a"]}), "duplicate"),
])
def test_load_video_scores_errors(tmp_path, text, match):
    path = tmp_path / "scores.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(VideoScoresError, match=match) as info:
        load_video_scores(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
