"""The detector (detect/): targets, proposals, RoI pooling, losses, model, training, inference, CLI.

Soft-NMS and video-score fusion are tested in tests/test_detect_nms.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from common.annotations import load_ground_truth
from common.predictions import load_predictions
from detect import (DetectDataError, Detector, DetectorConfig, DetectorError, InferenceConfig, TimeAxis, TrainConfig,
                    assign_proposals, balanced_bce, boundary_candidates, boundary_targets, decode_regression,
                    deep_baseline_hidden, encode_regression, generate_proposals, load_detector, make_windows,
                    roi_pool_1d, run_detector, save_detector, train_detector)
from detect.__main__ import main as cli_main
from detect.data import rescale_features, scan_videos
from detect.fronts import DeepBaseline
from detect.infer import boundary_probabilities, detect_batch
from detect.labels import BACKGROUND, FOREGROUND, IGNORED, INCOMPLETE
from detect.losses import HeadSamples, detector_losses, sample_head_proposals
from detect.model import Encoded, HeadOutput
from detect.plots import plot_boundaries, plot_history
from detect.roi import bin_centres
from detect.video import detect_videos
from evaluate.data import parse_thresholds
from evaluate.detection import evaluate_detection
from extract.features import read_features
from refactor import SampleConfig, build_pairs, save_checkpoint, train_refactor
from refactor import TrainConfig as RefTrain
from refactor.model import RefactorConfig, RefactorNet
from tests.featfiles import (FPS, STRIDE, WINDOW, detection_dataset, features_for_annotations, split_streams,
                             write_features)

REPO = Path(__file__).resolve().parents[1]
SMALL = DetectorConfig(base_dim=32, boundary_hidden=32, head_hidden=64, dropout=0.0, max_duration=32)
FAST = TrainConfig(epochs=30, window=64, batch_size=8)


# ---------------------------------------------------------------------------------------------
# targets and losses
# ---------------------------------------------------------------------------------------------

def test_boundary_targets_hand_values():
    # instance (2, 12): length 10, region width max(1, 1) = 1 -> start region [1.5, 2.5], end [11.5, 12.5]
    t = boundary_targets(np.array([[2.0, 12.0]]), 16)
    expected_action = np.zeros(16)
    expected_action[3:12] = 1
    expected_action[[2, 12]] = 0.5                     # snippet 2 is [1.5, 2.5]: half inside (2, 12)
    np.testing.assert_allclose(t[0], expected_action)
    np.testing.assert_allclose(t[1], np.eye(16)[2])
    np.testing.assert_allclose(t[2], np.eye(16)[12])
    # instance (2.25, 32.25): length 30, width 3 -> start region [0.75, 3.75]
    t = boundary_targets(np.array([[2.25, 32.25]]), 40)
    np.testing.assert_allclose(t[1][:6], [0, 0.75, 1, 1, 0.25, 0])
    np.testing.assert_allclose(t[2][30:35], [0, 0.75, 1, 1, 0.25])
    # two instances: the larger coverage wins; a boundary between two snippets marks both (>= 0.5)
    t = boundary_targets(np.array([[3.5, 8.0], [8.0, 9.0]]), 12)
    assert t[1][3] == 0.5 and t[1][4] == 0.5 and (t[1] >= 0.5).sum() == 3     # snippets 3, 4 and 8
    assert t.dtype == np.float32 and boundary_targets(np.zeros((0, 2)), 5).sum() == 0


def test_balanced_bce_hand_values():
    logits = torch.tensor([0.0, math.log(3), -math.log(3), 0.0])
    targets = torch.tensor([1.0, 0.9, 0.1, 0.0])       # positives: first two
    # p = 0.5, 0.75, 0.25, 0.5; -(mean log p over pos)/2 - (mean log(1-p) over neg)/2
    expected = -(math.log(0.5) + math.log(0.75)) / 4 - (math.log(0.75) + math.log(0.5)) / 4
    assert balanced_bce(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    mask = torch.tensor([True, False, True, True])
    expected = -math.log(0.5) / 2 - (math.log(0.75) + math.log(0.5)) / 4
    assert balanced_bce(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)
    only_neg = balanced_bce(logits[2:], targets[2:])
    assert only_neg.item() == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 4, rel=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_balanced_bce_equals_bsn_weighting(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, generator=g, dtype=torch.float64) * 3
    targets = torch.rand(64, generator=g, dtype=torch.float64)
    pmask = (targets >= 0.5).double()
    n, n_pos = 64.0, pmask.sum().item()
    if n_pos in (0, 64):
        return
    ratio = n / n_pos                                   # BSN: coef_0 = 0.5 r / (r - 1), coef_1 = 0.5 r
    coef_0, coef_1 = 0.5 * ratio / (ratio - 1), 0.5 * ratio
    p = torch.sigmoid(logits)
    bsn = -torch.mean(coef_1 * pmask * torch.log(p) + coef_0 * (1 - pmask) * torch.log(1 - p))
    assert balanced_bce(logits, targets).item() == pytest.approx(bsn.item(), rel=1e-9)


def test_assign_proposals_hand_cases():
    gt, labels = np.array([[10.0, 20.0], [40.0, 60.0]]), np.array([1, 0])
    props = np.array([[10, 20], [11, 20], [12, 14], [30, 38], [5, 15], [18, 25], [45, 47], [41, 61]], dtype=float)
    a = assign_proposals(props, gt, labels)
    assert a.kind.tolist() == [FOREGROUND, FOREGROUND, INCOMPLETE, BACKGROUND, IGNORED, IGNORED, INCOMPLETE, FOREGROUND]
    assert a.label.tolist() == [1, 1, 1, -1, -1, -1, 0, 0]
    np.testing.assert_allclose(a.tiou[:3], [1.0, 0.9, 0.2])
    np.testing.assert_array_equal(a.segment[6], [40, 60])
    assert np.isnan(a.segment[3]).all()
    none = assign_proposals(props, np.zeros((0, 2)), np.zeros(0))
    assert (none.kind == BACKGROUND).all()
    # class sets: a segment annotated twice (labels 1 and 2) gives both; background and ignored none
    twice = assign_proposals(props, np.array([[10.0, 20.0], [40.0, 60.0], [10.0, 20.0]]), np.array([1, 0, 2]),
                             num_classes=3)
    assert twice.classes.tolist() == [[False, True, True], [False, True, True], [False, True, True], [False] * 3,
                                      [False] * 3, [False] * 3, [True, False, False], [True, False, False]]
    assert a.classes is None


def test_regression_hand_values():
    p, t = torch.tensor([[0.0, 10.0]]), torch.tensor([[1.0, 13.0]])
    d = encode_regression(p, t)
    assert d[0, 0].item() == pytest.approx((7 - 5) / 10 / 0.1)
    assert d[0, 1].item() == pytest.approx(math.log(12 / 10) / 0.2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(1, 50), st.floats(-100, 100), st.floats(1, 50)),
                min_size=1, max_size=8))
def test_regression_round_trip(rows):
    r = torch.tensor(rows, dtype=torch.float64)
    p = torch.stack([r[:, 0], r[:, 0] + r[:, 1]], 1)
    t = torch.stack([r[:, 2], r[:, 2] + r[:, 3]], 1)
    torch.testing.assert_close(decode_regression(p, encode_regression(p, t)), t, rtol=1e-9, atol=1e-9)


def test_detector_losses_by_hand():
    cfg = TrainConfig()
    # two windows of 3 snippets, the second with one padded snippet
    logits = torch.tensor([[[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]],
                           [[1.0, 1.0, 9.0], [-2.0, 1.0, 9.0], [0.0, -1.0, 9.0]]])
    targets = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
                            [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]])
    enc = type("Enc", (), {"boundary_logits": logits, "lengths": torch.tensor([3, 2])})()
    heads = HeadOutput(class_logits=torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.5, 0.5, 0.5]]),
                       completeness=torch.tensor([[0.5, -2.0], [0.0, 0.0], [0.3, -0.4], [9.0, 9.0]]),
                       regression=torch.tensor([[0.5, -0.2], [7.0, 7.0], [7.0, 7.0], [7.0, 7.0]]))
    samples = HeadSamples(rois=np.array([[0, 0, 10], [0, 3, 5], [1, 0, 4], [1, 1, 2]], dtype=float),
                          kind=np.array([FOREGROUND, BACKGROUND, INCOMPLETE, IGNORED]),
                          label=np.array([0, -1, 1, -1]),
                          target=np.array([[1, 13], [np.nan, np.nan], [0, 20], [np.nan, np.nan]]))
    parts = detector_losses(enc, heads, samples, targets, cfg)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    for i, name in enumerate(("actionness", "start", "end")):
        assert parts[name].item() == pytest.approx(balanced_bce(logits[:, i], targets[:, i], mask).item())
    assert parts["proposal"].item() == pytest.approx(parts["start"].item() + parts["end"].item()
                                                     + parts["actionness"].item())
    # classification: foreground row 0 has class 0 -> target 1; background row 1 -> target 0
    ce = (-(F.log_softmax(torch.tensor([0.0, 2.0, 0.0]), 0)[1])
          - F.log_softmax(torch.tensor([1.0, 0.0, 0.0]), 0)[0]) / 2
    assert parts["cls"].item() == pytest.approx(ce.item())
    # completeness hinge: foreground row 0 score of class 0 = 0.5 -> 0.5; incomplete row 2 class 1 = -0.4 -> 0.6
    assert parts["com"].item() == pytest.approx((0.5 + 0.6) / 2)
    # regression: target (2, log(1.2)/0.2) vs (0.5, -0.2), smooth-L1 with beta 1
    dl = math.log(1.2) / 0.2
    sl1 = lambda x: 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5  # noqa: E731
    assert parts["reg"].item() == pytest.approx((sl1(2 - 0.5) + sl1(dl + 0.2)) / 2, rel=1e-6)
    assert parts["detection"].item() == pytest.approx(parts["cls"].item() + 0.5 * parts["com"].item()
                                                      + 0.5 * parts["reg"].item())


# ---------------------------------------------------------------------------------------------
# proposals
# ---------------------------------------------------------------------------------------------

def test_boundary_candidates_hand():
    prob = np.array([0.1, 0.3, 0.2, 0.9, 0.8, 0.5, 0.6, 0.1])
    # > 0.45: 3, 4, 5, 6; peaks: 1 (0.3 > 0.1, 0.2), 3, 6
    assert boundary_candidates(prob).tolist() == [1, 3, 4, 5, 6]
    # plateau: ratio rule only
    assert boundary_candidates(np.array([0.2, 0.2, 0.1, 0.05, 0.08, 0.01])).tolist() == [0, 1, 4]
    # edges with one neighbour
    assert boundary_candidates(np.array([0.7, 0.1, 0.2])).tolist() == [0, 2]
    assert boundary_candidates(np.zeros(0)).tolist() == []


def brute_force(p_start, p_end, max_duration, max_proposals, ratio):
    starts, ends = boundary_candidates(p_start, ratio), boundary_candidates(p_end, ratio)
    rows = [(-p_start[s] * p_end[e], s, e) for s in starts for e in ends if s < e <= s + max_duration]
    rows.sort()
    rows = rows[:max_proposals] if max_proposals is not None else rows
    return np.array([[s, e] for _, s, e in rows]).reshape(-1, 2), np.array([-r[0] for r in rows])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40), st.integers(0, 2**31), st.integers(1, 12),
       st.one_of(st.none(), st.integers(1, 30)), st.integers(1, 50), st.sampled_from([0.5, 0.0, 0.9]))
def test_proposals_equal_brute_force(p_start, seed, max_duration, max_proposals, chunk, ratio):
    p_start = np.array(p_start)
    p_end = np.random.default_rng(seed).random(len(p_start)).round(2)       # rounding makes ties
    seg, score = generate_proposals(p_start, p_end, max_duration, max_proposals, ratio, chunk_pairs=chunk)
    ref_seg, ref_score = brute_force(p_start, p_end, max_duration, max_proposals, ratio)
    np.testing.assert_array_equal(seg, ref_seg)
    np.testing.assert_array_equal(score, ref_score)


def test_proposals_hand_and_long_video_bound():
    p_s = np.array([0.9, 0.1, 0.1, 0.6, 0.1, 0.1])
    p_e = np.array([0.1, 0.1, 0.8, 0.1, 0.1, 0.7])
    seg, score = generate_proposals(p_s, p_e, max_duration=3)
    # starts {0, 3}, ends {2, 5}: (0, 2) 0.72, (3, 5) 0.42; (0, 5) is longer than 3
    assert seg.tolist() == [[0, 2], [3, 5]] and score.tolist() == pytest.approx([0.72, 0.42])
    # a 100,000-snippet video with every snippet a candidate: at most T * max_duration pairs, top 1000 kept
    rng = np.random.default_rng(0)
    flat = 0.9 + 0.01 * rng.random(100_000)
    seg, score = generate_proposals(flat, flat, max_duration=64, max_proposals=1000, chunk_pairs=1 << 16)
    assert len(seg) == 1000 and (np.diff(score) <= 0).all() and ((seg[:, 1] - seg[:, 0]) <= 64).all()
    with pytest.raises(ValueError, match="max_duration"):
        generate_proposals(p_s, p_e, 0)


# ---------------------------------------------------------------------------------------------
# RoI pooling
# ---------------------------------------------------------------------------------------------

def test_roi_pool_hand_values():
    feats = torch.tensor([[[0.0, 10.0, 20.0, 30.0]]])                    # (1, 1, 4): 10 per snippet
    out = roi_pool_1d(feats, torch.tensor([[0.0, 1.0, 2.0]]), bins=(0, 2, 0), samples=1)
    torch.testing.assert_close(out, torch.tensor([[[12.5, 17.5]]]))      # bin centres 1.25, 1.75
    # context: (1, 2) with context 0.5 -> [0.5, 1] and [2, 2.5]; 2 samples per bin
    out = roi_pool_1d(feats, torch.tensor([[0.0, 1.0, 2.0]]), bins=(1, 1, 1), context=0.5, samples=2)
    torch.testing.assert_close(out, torch.tensor([[[7.5, 15.0, 22.5]]]))
    # outside the sequence: the border snippet's value; positions past `lengths` are never read
    feats = torch.tensor([[[0.0, 10.0, 20.0, 1000.0]]])
    out = roi_pool_1d(feats, torch.tensor([[0.0, 1.0, 3.0]]), bins=(2, 2, 2), samples=4, lengths=torch.tensor([3]))
    # bin [0, 0.5]: mean of 10 x (0.0625 ... 0.4375)
    assert out.max().item() == 20.0 and out[0, 0, -1].item() == 20.0 and out[0, 0, 0].item() == pytest.approx(2.5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3), st.sampled_from([(2, 8, 2), (1, 4, 1), (0, 3, 0), (3, 5, 2)]),
       st.floats(0.0, 1.0), st.integers(1, 6))
def test_roi_pool_of_linear_features_is_the_bin_centre(seed, batch, bins, context, samples):
    # features linear in the position: each bin's mean equals the feature at its centre (inside the sequence)
    g = torch.Generator().manual_seed(seed)
    t = 50
    slope = torch.randn(batch, 5, 1, generator=g, dtype=torch.float64)
    offset = torch.randn(batch, 5, 1, generator=g, dtype=torch.float64)
    feats = slope * torch.arange(t, dtype=torch.float64) + offset
    n = 6
    b = torch.randint(batch, (n,), generator=g).double()
    d = torch.rand(n, generator=g, dtype=torch.float64) * 10
    lo = context * d + torch.rand(n, generator=g, dtype=torch.float64) * (t - 1 - (1 + 2 * context) * d)
    rois = torch.stack([b, lo, lo + d], 1)
    out = roi_pool_1d(feats, rois, bins, context, samples)
    centres = bin_centres(rois, bins, context)                                  # (n, nb)
    expected = slope[b.long()] * centres[:, None, :] + offset[b.long()]
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


def test_roi_pool_gradient():
    feats = torch.randn(2, 3, 12, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 2.3, 7.9], [1, 0.0, 11.0], [1, 5.5, 5.5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_pool_1d(f, rois, (1, 3, 1), 0.3, 3), (feats,))


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------

def test_deep_baseline_matches_refactornet_size_and_depth():
    for rc in (RefactorConfig(in_dim=2048), RefactorConfig(in_dim=64, hidden_dim=48),
               RefactorConfig(in_dim=32, num_layers=3)):
        ref = sum(p.numel() for p in RefactorNet(rc).parameters())
        det = Detector(DetectorConfig(in_dim=rc.in_dim, front="deep", refactor=rc))
        deep = sum(p.numel() for p in det.front.parameters())
        assert abs(deep - ref) / ref < 0.01 or rc.in_dim == 64, (deep, ref)
        # the closest width: one hidden unit more or fewer is no nearer (at C = 64 a unit is 1.5 %)
        h = deep_baseline_hidden(rc, 3)
        for other in (h - 1, h + 1):
            alt = DeepBaseline(rc.in_dim, other, rc.out_dim, rc.num_layers, 3)
            assert abs(sum(p.numel() for p in alt.parameters()) - ref) >= abs(deep - ref), (other, h)
        assert len(det.front.convs) == rc.num_layers and det.front.convs[-1].out_channels == rc.out_dim
    assert deep_baseline_hidden(RefactorConfig(in_dim=2048), 3) == 598    # (7,347,200 - 2048) / 12289, γ in


@pytest.mark.parametrize("front", ["none", "refactor", "deep"])
def test_padded_batch_equals_single_sequences(front):
    torch.manual_seed(0)
    cfg = DetectorConfig(in_dim=16, num_classes=3, front=front, refactor=RefactorConfig(in_dim=16, hidden_dim=8),
                         base_dim=8, boundary_hidden=8, head_hidden=16)
    model = Detector(cfg).eval()
    seqs = [torch.randn(16, n) for n in (20, 7, 13)]
    x = torch.zeros(3, 16, 20)
    for i, s in enumerate(seqs):
        x[i, :, :s.shape[1]] = s
    rois = torch.tensor([[0, 1.0, 9.0], [1, 0.0, 6.0], [2, 3.5, 12.0], [1, 5.0, 6.0]])
    with torch.no_grad():
        enc, heads = model(x, rois, torch.tensor([20, 7, 13]))
        for i, s in enumerate(seqs):
            single, h = model(s[None], torch.cat([torch.zeros(len(rois), 1), rois[:, 1:]], 1)[rois[:, 0] == i])
            n = s.shape[1]
            torch.testing.assert_close(enc.boundary_logits[i, :, :n], single.boundary_logits[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(heads.class_logits[rois[:, 0] == i], h.class_logits, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(heads.completeness[rois[:, 0] == i], h.completeness, rtol=1e-5, atol=1e-6)


def test_config_validation_and_confidence():
    with pytest.raises(ValueError, match="front"):
        DetectorConfig(front="transformer")
    with pytest.raises(ValueError, match="bins"):
        DetectorConfig(bins=(1, 0, 1))
    with pytest.raises(ValueError, match="expects"):
        DetectorConfig(in_dim=64, front="refactor", refactor=RefactorConfig(in_dim=32))
    with pytest.raises(ValueError, match="detector expects"):
        Detector(DetectorConfig(in_dim=8, num_classes=2)).encode(torch.zeros(1, 9, 4))
    h = HeadOutput(class_logits=torch.log(torch.tensor([[0.5, 0.3, 0.2]])), completeness=torch.tensor([[0.0, 2.0]]),
                   regression=torch.zeros(1, 2))
    torch.testing.assert_close(h.confidence(), torch.tensor([[0.3 * 0.5, 0.2 / (1 + math.exp(-2))]]))


def test_time_axis_and_windows():
    axis = TimeAxis.of(fps=30.0, window=16, stride=4)
    assert axis.t0 == pytest.approx(16 / 60) and axis.dt == pytest.approx(4 / 30)
    np.testing.assert_allclose(axis.to_time([0, 10]), [16 / 60, 16 / 60 + 40 / 30])
    np.testing.assert_allclose(axis.to_index(axis.to_time([-3.5, 2.25, 100])), [-3.5, 2.25, 100])
    assert make_windows(5, 8) == [(0, 5)]
    assert make_windows(20, 8, 0.5) == [(0, 8), (4, 12), (8, 16), (12, 20)]
    assert make_windows(21, 8, 0.5) == [(0, 8), (4, 12), (8, 16), (12, 20), (13, 21)]
    covered = set()
    for s, e in make_windows(1000, 256, 0.25):
        assert e - s == 256
        covered |= set(range(s, e))
    assert covered == set(range(1000))


# ---------------------------------------------------------------------------------------------
# training and inference end to end
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return detection_dataset(tmp_path_factory.mktemp("detect"), videos=6)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    features, ann, _ = dataset
    model, meta = train_detector(features, ann, SMALL, FAST)
    path = save_detector(tmp_path_factory.mktemp("ckpt") / "det.pt", model, meta)
    return model, meta, path


def evaluate(ann, predictions, subset="validation") -> dict:
    gt = load_ground_truth(ann, subset)
    return evaluate_detection(gt, load_predictions(predictions, gt), parse_thresholds("0.3:0.7:0.1")).to_json()


def test_overfit_reaches_near_perfect_map(dataset, trained, tmp_path):
    """Training, proposal decoding and the time axis line up: a handful of synthetic videos whose
    instances start and end at arbitrary (off-grid) times are detected almost perfectly."""
    features, ann, db = dataset
    _, meta, ckpt = trained
    assert meta["history"][-1]["loss"] < 0.5 * meta["history"][0]["loss"]
    run_detector(ckpt, features, tmp_path / "pred.json", subset="validation")
    result = evaluate(ann, tmp_path / "pred.json")
    assert min(result["mAP"]) >= 0.95, result
    # the best-scoring overlapping detection of each instance: boundaries within a snippet (1 s), mostly far closer
    pred = json.loads((tmp_path / "pred.json").read_text())["results"]
    errors = []
    for vid, entry in db.items():
        for a in entry["annotations"]:
            same = [d for d in pred[vid] if d["label"] == a["label"]]
            best = max(same, key=lambda d: d["score"] * (min(d["segment"][1], a["segment"][1])
                                                         > max(d["segment"][0], a["segment"][0])))
            errors += [abs(best["segment"][0] - a["segment"][0]), abs(best["segment"][1] - a["segment"][1])]
    assert max(errors) < 1.0 and np.mean(errors) < 0.5, errors


class ScriptedDetector(torch.nn.Module):
    """Stands in for a trained model: boundary logits, class logits and regression given by hand."""

    def __init__(self, config, logits, class_logits, regression):
        super().__init__()
        self.config, self.logits, self.class_logits, self.regression = config, logits, class_logits, regression

    def encode(self, x, lengths):
        return Encoded(x, None, x, self.logits[:, :, :x.shape[-1]], lengths)

    def heads(self, enc, rois):
        n = len(rois)
        return HeadOutput(self.class_logits.expand(n, -1), torch.full((n, 1), 20.0), self.regression.expand(n, -1))


@pytest.mark.parametrize("delta", [(0.0, 0.0), (1.0, 0.0), (0.0, -5.0)])
def test_time_axis_of_detections_is_exact(delta, tmp_path):
    """Start peak at snippet 3, end peak at snippet 8, fps 30, window 16, stride 4: the detection is
    (t(3), t(8)) with t(i) = (4 i + 8) / 30 s, moved by the regression exactly as decoded."""

    write_features(tmp_path / "v.h5", {"rgb": np.zeros((12, 2), np.float32)}, fps=30.0, window=16, stride=4)
    videos, _, _, _ = scan_videos(tmp_path)
    logits = torch.full((1, 3, 12), -10.0)
    logits[0, 1, 3] = logits[0, 2, 8] = 10.0
    cfg = DetectorConfig(in_dim=2, num_classes=1)
    model = ScriptedDetector(cfg, logits, torch.tensor([[-20.0, 20.0]]), torch.tensor([delta]))
    dets = detect_batch(model, videos, [np.zeros((12, 2), np.float32)], ["Act"], InferenceConfig())["v"]
    assert len(dets) == 1 and dets[0].label == "Act" and dets[0].score == pytest.approx(1.0)
    start, end = (4 * 3 + 8) / 30, (4 * 8 + 8) / 30
    c, d = (start + end) / 2 + delta[0] * 0.1 * (end - start), (end - start) * math.exp(delta[1] * 0.2)
    assert dets[0].segment == pytest.approx((c - d / 2, c + d / 2), abs=1e-9)


def test_predictions_layout(dataset, trained, tmp_path):
    features, _, db = dataset
    _, _, ckpt = trained
    results = run_detector(ckpt, features, tmp_path / "p.json", config=InferenceConfig(top_k=7))
    data = json.loads((tmp_path / "p.json").read_text())
    assert set(data) == {"version", "results", "external_data"} and set(data["results"]) == set(db)
    for vid, dets in data["results"].items():
        assert 0 < len(dets) <= 7 and [d.to_json() for d in results[vid]] == dets
        scores = [d["score"] for d in dets]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert all(0 <= d["segment"][0] <= d["segment"][1] <= db[vid]["duration"] for d in dets)
        assert {d["label"] for d in dets} <= {"Jump", "Run", "Swim"}


def test_batched_inference_equals_one_by_one(dataset, trained):
    features, _, _ = dataset
    _, _, ckpt = trained
    one = run_detector(ckpt, features, config=InferenceConfig(batch_size=1))
    many = run_detector(ckpt, features, config=InferenceConfig(batch_size=4))
    assert one.keys() == many.keys()
    for vid in one:
        a, b = one[vid], many[vid]
        assert [d.label for d in a] == [d.label for d in b]
        np.testing.assert_allclose([d.score for d in a], [d.score for d in b], rtol=1e-5)
        np.testing.assert_allclose([d.segment for d in a], [d.segment for d in b], atol=1e-4)


def test_anet_mode_fuses_video_scores(dataset, trained, tmp_path):
    features, ann, _ = dataset
    _, _, ckpt = trained
    scores = {"results": {"video_000": [0.1, 0.7, 0.2], "video_001": [0.6, 0.0, 0.4]}, "class": ["Jump", "Run", "Swim"]}
    (tmp_path / "cuhk.json").write_text(json.dumps(scores))
    cfg = InferenceConfig(mode="anet", top_k=10)
    res = run_detector(ckpt, features, config=cfg, video_scores=tmp_path / "cuhk.json")
    for vid, ranked in (("video_000", ["Run", "Swim"]), ("video_001", ["Jump", "Swim"])):
        dets = res[vid]
        assert len(dets) == 20 and {d.label for d in dets} == set(ranked)
        first = [d for d in dets if d.label == ranked[0]]
        second = [d for d in dets if d.label == ranked[1]]
        s = scores["results"][vid]
        c = {name: s[i] for i, name in enumerate(scores["class"])}
        # the same 10 proposals, scored proposal confidence x class score
        assert [d.segment for d in first] == [d.segment for d in second]
        np.testing.assert_allclose([d.score / c[ranked[0]] for d in first], [d.score / c[ranked[1]] for d in second])
    # without a file: the detector's own video-level classes; still two classes per video
    own = run_detector(ckpt, features, config=cfg)
    assert all(len({d.label for d in dets}) == 2 for dets in own.values())


def test_training_is_seeded(dataset):
    features, ann, _ = dataset
    a, _ = train_detector(features, ann, SMALL, TrainConfig(epochs=1, window=64, batch_size=8, seed=3))
    b, _ = train_detector(features, ann, SMALL, TrainConfig(epochs=1, window=64, batch_size=8, seed=3))
    c, _ = train_detector(features, ann, SMALL, TrainConfig(epochs=1, window=64, batch_size=8, seed=4))
    # equal up to float summation order (oneDNN's threaded reductions vary by ~1e-9, which Adam can amplify to ~1e-6)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-4,
                                   msg=lambda m, k=k, va=va, vb=vb: f"{k}: {(va - vb).abs().max().item()}")
    assert max((va - vc).abs().max().item() for va, vc in zip(a.state_dict().values(), c.state_dict().values())) > 1e-3


def test_checkpoint_round_trip_and_errors(trained, dataset, tmp_path):
    model, meta, ckpt = trained
    loaded, data = load_detector(ckpt)
    assert data["classes"] == meta["classes"] and data["feature_layout"]["dim"] == 16
    assert data["feature_layout"] == {"streams": ["rgb", "flow"], "dim": 16, "window": WINDOW, "stride": STRIDE,
                                      "fps": FPS, "short_side": None, "crop": None}      # test files record no geometry
    assert sorted(data["subsets"]["validation"]) == sorted(dataset[2])
    for (k, va), vb in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(va, vb), k
    assert loaded.config == model.config and not loaded.training
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"format_version": 1, "state_dict": {}}, tmp_path / "refactor_like.pt")
    for bad in (tmp_path / "junk.pt", tmp_path / "refactor_like.pt", tmp_path / "missing.pt"):
        with pytest.raises(DetectorError) as info:
            load_detector(bad)
        assert "\n" not in str(info.value)


def test_refactor_front_stage2(dataset, tmp_path):

    features, ann, _ = dataset
    pairs = build_pairs(features, ann)
    ref, hist = train_refactor(pairs, RefactorConfig(in_dim=16, hidden_dim=8, form="paper"), RefTrain(epochs=2),
                               progress=False)
    save_checkpoint(tmp_path / "ref.pt", ref, pairs, SampleConfig(), RefTrain(epochs=2), hist)
    zero, _ = train_detector(features, ann, SMALL, TrainConfig(epochs=0), refactor_checkpoint=tmp_path / "ref.pt",
                             front="refactor")
    for (k, v), w in zip(ref.state_dict().items(), zero.front.state_dict().values()):
        assert torch.equal(v, w), k                                                      # starts from stage 1
    model, meta = train_detector(features, ann, SMALL, TrainConfig(epochs=2, window=64, batch_size=8),
                                 refactor_checkpoint=tmp_path / "ref.pt", front="refactor")
    assert "refactor" in meta["history"][0] and meta["history"][0]["refactor"] > 0        # L_R is in the loss
    assert any(not torch.equal(v, w) for v, w in zip(ref.state_dict().values(), model.front.state_dict().values()))
    assert meta["refactor_checkpoint"]["sha256"] and model.config.refactor == ref.config
    # the deep baseline copies the stage-1 sizes
    deep, _ = train_detector(features, ann, SMALL, TrainConfig(epochs=0), refactor_checkpoint=tmp_path / "ref.pt",
                             front="deep")
    assert deep.config.refactor == ref.config
    with pytest.raises(DetectorError, match="--refactor"):
        train_detector(features, ann, SMALL, TrainConfig(epochs=0), front="refactor")


def test_cam_cli(tmp_path):
    """`detect cam` draws the Grad-CAM figures of a detector's RefactorNet front (as `refactor cam` does for
    a stage-1 checkpoint); a detector without that front is refused in one line."""
    rng = np.random.default_rng(0)
    spatial = {s: rng.random((5, 1024, 7, 7)).astype(np.float16) for s in ("rgb", "flow")}
    write_features(tmp_path / "feats" / "a.h5", {s: m.astype(np.float32).mean(axis=(2, 3)) for s, m in spatial.items()},
                   spatial=spatial)
    meta = {"classes": ["A", "B"],
            "feature_layout": {"streams": ["rgb", "flow"], "dim": 2048, "window": WINDOW, "stride": STRIDE, "fps": FPS}}
    sizes = {"in_dim": 2048, "num_classes": 2, "base_dim": 16, "boundary_hidden": 16, "head_hidden": 16}
    torch.manual_seed(0)
    front = Detector(DetectorConfig(**sizes, front="refactor", refactor=RefactorConfig(in_dim=2048, hidden_dim=16)))
    save_detector(tmp_path / "front.pt", front.eval(), meta)
    save_detector(tmp_path / "plain.pt", Detector(DetectorConfig(**sizes)).eval(), meta)
    args = ["--features", str(tmp_path / "feats"), "--out", str(tmp_path / "figs")]
    proc = run_cli("cam", *args, "--checkpoint", str(tmp_path / "front.pt"), "--snippets", "1,3")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "figs" / "cam_a.png").read_bytes()[:4] == b"\x89PNG" and "a: snippets 1, 3" in proc.stdout
    proc = run_cli("cam", *args, "--checkpoint", str(tmp_path / "plain.pt"))
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "RefactorNet front" in proc.stderr, proc.stderr


def test_bad_inputs(dataset, trained, tmp_path):
    features, ann, _ = dataset
    _, _, ckpt = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetectorError, match="no feature files"):
        train_detector(tmp_path / "empty", ann, SMALL, FAST)
    with pytest.raises(DetectorError, match="subset"):
        train_detector(features, ann, SMALL, TrainConfig(subset="training"))
    with pytest.raises(DetectorError, match="no subset 'test'"):
        run_detector(ckpt, features, subset="test")
    other = tmp_path / "other"
    write_features(other / "x.h5", split_streams(np.zeros((10, 24), np.float32), ("rgb", "flow")))
    with pytest.raises(DetectorError, match="24-d"):
        run_detector(ckpt, other)
    write_features(other / "y.h5", {"rgb": np.zeros((10, 16), np.float32)})
    with pytest.raises((DetectorError, DetectDataError), match="flow"):
        run_detector(ckpt, other)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detect", *args], cwd=REPO, capture_output=True, text=True)


def test_cli_matches_api(dataset, trained, tmp_path):
    features, ann, _ = dataset
    model, _, ckpt = trained
    # training through the CLI gives the API's model (same defaults, same seed)
    assert cli_main(["train", "--features", str(features), "--annotations", str(ann), "--out", str(tmp_path / "cli.pt"),
                     "--epochs", "1", "--window", "64", "--batch-size", "8", "--max-duration", "32"]) == 0
    api, _ = train_detector(features, ann, DetectorConfig(max_duration=32),
                            TrainConfig(epochs=1, window=64, batch_size=8))
    cli, _ = load_detector(tmp_path / "cli.pt")
    assert cli.config == api.config
    for (k, va), vb in zip(api.state_dict().items(), cli.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-4,
                                   msg=lambda m, k=k, va=va, vb=vb: f"{k}: {(va - vb).abs().max().item()}")
    # detections through the CLI (a subprocess) equal the API's
    proc = run_cli("run", "--features", str(features), "--checkpoint", str(ckpt), "--out", str(tmp_path / "cli.json"),
                   "--subset", "validation", "--top-k", "50")
    assert proc.returncode == 0, proc.stderr
    api_res = run_detector(ckpt, features, config=InferenceConfig(top_k=50))
    cli_res = json.loads((tmp_path / "cli.json").read_text())["results"]
    assert cli_res == {vid: [d.to_json() for d in dets] for vid, dets in api_res.items()}
    # unusable input: exit 1, one line on stderr
    proc = run_cli("run", "--features", str(tmp_path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no feature files" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_detect_video_extracts_like_training_and_detects(tmp_path, random_i3d):
    """`detect video` = extract with the checkpoint's feature layout (streams, window, stride, fps) +
    `detect run` on those files."""
    from extract.streams import RGBStream
    from tests.videos import make_video

    features, ann, _ = detection_dataset(tmp_path / "train", videos=3, num_snippets=(20, 30), dim_per_stream=1024,
                                         streams=("rgb",))
    model, meta = train_detector(features, ann, SMALL, TrainConfig(epochs=1, window=32))
    ckpt = save_detector(tmp_path / "det.pt", model, meta)
    (tmp_path / "clips").mkdir()
    make_video(tmp_path / "clips" / "a.mp4", 60, fps=25)
    make_video(tmp_path / "clips" / "b.mp4", 90, fps=25)
    streams = [RGBStream(random_i3d(), torch.device("cpu"), None)]
    results, failed = detect_videos([tmp_path / "clips"], ckpt, tmp_path / "pred.json", features_dir=tmp_path / "feats",
                                    device="cpu", extract_streams=streams, progress=False)
    assert not failed and set(results) == {"a", "b"}
    ff = read_features(tmp_path / "feats" / "a.h5")
    assert (ff.fps, ff.window, ff.stride, ff.streams) == (FPS, WINDOW, STRIDE, ("rgb",))   # the training layout
    assert ff.num_frames == math.ceil(60 / 25 * FPS)
    direct = run_detector(ckpt, tmp_path / "feats")
    written = json.loads((tmp_path / "pred.json").read_text())["results"]
    assert written == {vid: [d.to_json() for d in dets] for vid, dets in direct.items()} and all(written.values())


def test_detect_video_refuses_refactored_layouts(dataset, tmp_path):
    features, ann, _ = dataset
    refactored = tmp_path / "refactored"
    for path in sorted(features.glob("*.h5")):
        f = read_features(path).features
        write_features(refactored / path.name, {"action": f[:, :8], "cooccurrence": f[:, 8:]})
    model, meta = train_detector(refactored, ann, SMALL, TrainConfig(epochs=0))
    ckpt = save_detector(tmp_path / "det.pt", model, meta)
    with pytest.raises(DetectorError, match="not extracted from video"):
        detect_videos([tmp_path], ckpt)


def test_run_skips_unreadable_files_and_lists_them(dataset, trained, tmp_path):
    features, _, _ = dataset
    _, _, ckpt = trained
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("video_000.h5", "video_001.h5"):
        (mixed / name).write_bytes((features / name).read_bytes())
    (mixed / "broken.h5").write_bytes(b"\x89HDF\r\n not really")
    write_features(mixed / "rgb_only.h5", {"rgb": np.zeros((10, 8), np.float32)})
    proc = run_cli("run", "--features", str(mixed), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.json"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "broken.h5" in proc.stderr and "rgb_only.h5" in proc.stderr and "'flow'" in proc.stderr
    written = json.loads((tmp_path / "p.json").read_text())["results"]
    assert set(written) == {"video_000", "video_001"}
    rerun = run_detector(ckpt, features, video_ids=set(written))
    assert written == {k: [d.to_json() for d in v] for k, v in rerun.items()}


def test_rescale_features_hand_values_and_axis():

    f = np.array([[0.0], [10.0], [20.0], [30.0]], dtype=np.float32)
    # L = 2: parts [-0.5, 1.5] and [1.5, 3.5], 4 points each (at -0.25, 0.25, 0.75, 1.25; clamped below 0)
    np.testing.assert_allclose(rescale_features(f, 2)[:, 0],
                               [(0 + 2.5 + 7.5 + 12.5) / 4, (17.5 + 22.5 + 27.5 + 30) / 4])
    np.testing.assert_allclose(rescale_features(f[:1], 5)[:, 0], np.zeros(5))                # one snippet: constant
    ramp = np.arange(300, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], dtype=np.float32)
    out = rescale_features(ramp, 100)                                                         # part j centred at 3j + 1
    np.testing.assert_allclose(out[1:-1, 0], 3 * np.arange(1, 99) + 1, rtol=1e-6)
    np.testing.assert_allclose(out[1:-1, 1], -2 * (3 * np.arange(1, 99) + 1), rtol=1e-6)
    axis = TimeAxis.of(fps=30.0, window=16, stride=4)
    scaled = axis.rescaled(300, 100)
    np.testing.assert_allclose(scaled.to_time(np.arange(100)), axis.to_time(3 * np.arange(100) + 1))
    np.testing.assert_allclose(scaled.to_time([-0.5, 99.5]), axis.to_time([-0.5, 299.5]))   # the span is kept


def test_temporal_scale_end_to_end(dataset, tmp_path):
    """ActivityNet-style rescaling to 64 positions a video: the detector still finds every instance."""
    features, ann, _ = dataset
    cfg = DetectorConfig(base_dim=32, boundary_hidden=32, head_hidden=64, dropout=0.0, max_duration=64,
                         temporal_scale=64)
    model, meta = train_detector(features, ann, cfg, TrainConfig(epochs=30, window=64, batch_size=8))
    assert meta["num_windows"] == 6                                                   # one window a video
    ckpt = save_detector(tmp_path / "det.pt", model, meta)
    run_detector(ckpt, features, tmp_path / "pred.json")
    result = evaluate(ann, tmp_path / "pred.json")
    assert min(result["mAP"][:3]) >= 0.9, result                                      # tIoU 0.3-0.5
    assert load_detector(ckpt)[0].config.temporal_scale == 64


def test_interrupted_training_resumes_to_the_same_model(dataset, tmp_path):
    features, ann, _ = dataset
    cfg = TrainConfig(epochs=3, window=64, batch_size=8)
    straight, meta = train_detector(features, ann, SMALL, cfg)
    # "interrupted" after 2 epochs: the state file holds epoch 2; a rerun with 3 epochs resumes from it
    state = tmp_path / "det.pt.state"
    train_detector(features, ann, SMALL, TrainConfig(epochs=2, window=64, batch_size=8), state_path=state)
    assert len(torch.load(state, weights_only=True)["history"]) == 2
    resumed, meta2 = train_detector(features, ann, SMALL, cfg, state_path=state)
    assert [h["epoch"] for h in meta2["history"]] == [1, 2, 3]
    for a, b in zip(meta["history"], meta2["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for (k, va), vb in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-4, msg=k)
    # another configuration must not pick up this state
    refusal = r"other data or settings; delete it to start over \(detect train --restart\)$"
    with pytest.raises(DetectorError, match=refusal):
        train_detector(features, ann, SMALL, TrainConfig(epochs=3, window=32), state_path=state)
    (tmp_path / "bad.state").write_bytes(b"junk")
    with pytest.raises(DetectorError, match="delete it"):
        train_detector(features, ann, SMALL, cfg, state_path=tmp_path / "bad.state")


def test_cli_train_resumes_and_cleans_up(dataset, tmp_path):
    features, ann, _ = dataset
    out = tmp_path / "det.pt"
    common = ["train", "--features", str(features), "--annotations", str(ann), "--out", str(out), "--window", "64",
              "--batch-size", "8", "--max-duration", "32"]
    train_detector(features, ann, DetectorConfig(max_duration=32), TrainConfig(epochs=1, window=64, batch_size=8),
                   state_path=Path(str(out) + ".state"))                       # an interrupted run left epoch 1
    proc = run_cli(*common, "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert f"detect: resuming from {out}.state after epoch 1 of 2\n" in proc.stderr
    assert out.is_file() and not Path(str(out) + ".state").exists()
    assert [h["epoch"] for h in load_detector(out)[1]["history"]] == [1, 2]


def test_figures(dataset, trained, tmp_path):

    features, ann, db = dataset
    model, meta, ckpt = trained
    fig = plot_history(meta["history"], tmp_path / "loss.png")
    left = fig.axes[0]
    assert [line.get_label() for line in left.lines] == ["loss", "proposal", "detection"]
    np.testing.assert_allclose(left.lines[0].get_ydata(), [h["loss"] for h in meta["history"]])
    ff = read_features(features / "video_000.h5")
    probs = boundary_probabilities(model, ff.features)
    assert probs.shape == (3, len(ff.features)) and probs.min() >= 0 and probs.max() <= 1
    gt = [(a["segment"][0], a["segment"][1], a["label"]) for a in db["video_000"]["annotations"]]
    fig = plot_boundaries(ff.times, probs, tmp_path / "b.png", gt, [(1.0, 5.0, "Run", 0.9), (2.0, 3.0, "Jump", 0.2)])
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), probs[1])                     # start probability
    assert len(fig.axes[1].patches) == len(gt) + 2 and (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    # through the CLI
    proc = run_cli("run", "--features", str(features), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.json"),
                   "--plot", str(tmp_path / "figs"), "--plot-videos", "video_001,video_002", "--annotations", str(ann))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["boundaries_video_001.png",
                                                                     "boundaries_video_002.png"]


def _torchrun(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_distributed_gradient_average(tmp_path):
    """2 gloo processes: each rank's gradient becomes the mean over ranks (a missing one counts as 0),
    and diverged replicas are detected."""
    proc = _torchrun(str(REPO / "tests" / "dist_worker.py"), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    g0, g1 = (torch.load(tmp_path / f"grads{r}.pt", weights_only=True) for r in (0, 1))
    for i, (a, b) in enumerate(zip(g0, g1)):
        rank0 = 0.0 if i == 3 else 10 * i + 1
        torch.testing.assert_close(a, torch.full_like(a, (rank0 + 10 * i + 2) / 2))
        torch.testing.assert_close(a, b)
    assert all("diverged" in (tmp_path / f"check{r}.txt").read_text() for r in (0, 1))


@pytest.mark.slow
def test_torchrun_training(dataset, tmp_path):
    """`torchrun --nproc_per_node 2 -m detect train` (gloo, CPU): both ranks train, rank 0 writes a
    checkpoint that detects as well as a single-process one."""
    features, ann, _ = dataset
    out = tmp_path / "ddp.pt"
    proc = _torchrun("-m", "detect", "train", "--features", str(features), "--annotations", str(ann), "--out", str(out),
                     "--epochs", "30", "--window", "64", "--batch-size", "4", "--max-duration", "32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 processes" in proc.stdout and proc.stdout.count("detect: trained") == 1
    model, ckpt = load_detector(out)
    assert ckpt["world_size"] == 2 and ckpt["history"][-1]["loss"] < 0.3 * ckpt["history"][0]["loss"]
    run_detector(out, features, tmp_path / "pred.json")
    assert min(evaluate(ann, tmp_path / "pred.json")["mAP"]) >= 0.9


@pytest.mark.slow
def test_detect_video_cli_with_real_weights(weights_root, tmp_path):
    """`python -m detect video` end to end in a subprocess: real RGB I3D weights, a real H.264 file."""
    from tests.videos import make_video

    features, ann, _ = detection_dataset(tmp_path / "train", videos=3, num_snippets=(20, 30), dim_per_stream=1024,
                                         streams=("rgb",))
    model, meta = train_detector(features, ann, SMALL, TrainConfig(epochs=1, window=32))
    ckpt = save_detector(tmp_path / "det.pt", model, meta)
    video = make_video(tmp_path / "clip.mp4", 50, width=96, height=80, fps=25)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {"clip": {"subset": "test", "annotations": [{"segment": [0.5, 1.2],
                                                                                      "label": "Jump"}]}}}))
    proc = run_cli("video", str(video), str(tmp_path / "missing.mp4"), "--checkpoint", str(ckpt), "--out",
                   str(tmp_path / "pred.json"), "--weights-dir", str(weights_root), "--features-out",
                   str(tmp_path / "f"), "--device", "cpu", "--top-k", "5", "--render", str(tmp_path / "render"),
                   "--annotations", str(gt), "--summary-top", "2")
    assert proc.returncode == 1 and "missing.mp4" in proc.stderr, proc.stderr          # one bad input: listed, exit 1
    results = json.loads((tmp_path / "pred.json").read_text())["results"]
    assert list(results) == ["clip"] and 0 < len(results["clip"]) <= 5
    best = sorted(results["clip"], key=lambda d: -d["score"])[:2]                        # the readable summary
    assert proc.stdout.splitlines()[0] == f"clip: {len(results['clip'])} detections, best:"
    for line, d in zip(proc.stdout.splitlines()[1:3], best):
        assert line.split()[0] == d["label"] and f"{d['score']:.3f}" in line and f"{d['segment'][0]:.2f}" in line
    with av.open(str(tmp_path / "render" / "clip.mp4")) as rendered, av.open(str(video)) as source:
        assert rendered.streams.video[0].average_rate == source.streams.video[0].average_rate
        assert sum(1 for _ in rendered.decode(video=0)) == 50
    assert all(0 <= d["segment"][0] <= d["segment"][1] <= 50 / 25 + 1e-6 for d in results["clip"])
    rerun = run_detector(ckpt, tmp_path / "f", config=InferenceConfig(top_k=5))
    assert results == {k: [d.to_json() for d in v] for k, v in rerun.items()}


def test_segments_annotated_twice_train_both_classes():
    """THUMOS14 annotates each CliffDiving instance again as Diving: the classification target is
    uniform over both, and completeness is trained for both."""
    segs, labs = np.array([[10.0, 20.0], [10.0, 20.0], [40.0, 50.0]]), np.array([2, 0, 1])
    samples = sample_head_proposals([np.zeros((0, 2))], [(segs, labs)], [64],
                                    TrainConfig(proposals_per_window=64, ratio=(1, 1, 1)), 32,
                                    np.random.default_rng(0), num_classes=3)
    fg = samples.kind == FOREGROUND
    inside_first = fg & (np.abs(samples.target[:, 0] - 10) < 1e-9)
    assert inside_first.any() and (samples.classes[inside_first] == [True, False, True]).all()
    assert (samples.classes[fg & (samples.target[:, 0] == 40)] == [False, True, False]).all()
    assert not samples.classes[samples.kind == BACKGROUND].any()
    # the losses: one foreground row of the doubly annotated segment, one background row
    logits = torch.tensor([[0.0, 1.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0]])
    heads = HeadOutput(class_logits=logits, completeness=torch.tensor([[0.5, -3.0, 2.0], [0.0, 0.0, 0.0]]),
                       regression=torch.zeros(2, 2))
    two = HeadSamples(rois=np.array([[0, 10, 20], [0, 30, 35]], dtype=float), kind=np.array([FOREGROUND, BACKGROUND]),
                      label=np.array([2, -1]), target=np.array([[10, 20], [np.nan, np.nan]]),
                      classes=np.array([[True, False, True], [False, False, False]]))
    enc = type("Enc", (), {"boundary_logits": torch.zeros(1, 3, 4), "lengths": torch.tensor([4])})()
    parts = detector_losses(enc, heads, two, torch.zeros(1, 3, 4), TrainConfig())
    logp = F.log_softmax(logits, dim=1)
    assert parts["cls"].item() == pytest.approx((-(logp[0, 1] + logp[0, 3]) / 2 - logp[1, 0]).item() / 2)
    assert parts["com"].item() == pytest.approx((0.5 + 0.0) / 2)          # hinge 1 - 0.5 and 1 - 2 (clamped)


def test_real_thumos14_annotations(shared_data, tmp_path):
    """The real THUMOS14 annotation file (a bare video mapping, 30 fps, stride 4 windows, instances
    from 0.2 s to minutes, CliffDiving annotated twice) with synthetic features built from it: the
    detector learns them, including Diving on the doubly annotated segments."""

    database = json.loads((shared_data / "thumos14" / "thumos14.json").read_text())
    shortest = sorted((v["duration"], k) for k, v in database.items() if v["subset"] == "validation")[:6]
    ids = [k for _, k in shortest] + ["video_validation_0000161", "video_validation_0000177"]   # CliffDiving; 152 s
    assert {"CliffDiving", "Diving"} <= {a["label"] for a in database["video_validation_0000161"]["annotations"]}
    features = features_for_annotations(tmp_path / "feats", database, ids)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({k: database[k] for k in ids}))
    cfg = DetectorConfig(base_dim=32, boundary_hidden=32, head_hidden=64, dropout=0.0, max_duration=200)
    model, meta = train_detector(features, gt, cfg, TrainConfig(epochs=20, window=256, batch_size=8))
    assert meta["feature_layout"] == {"streams": ["rgb", "flow"], "dim": 16, "window": 16, "stride": 4,
                                      "fps": 30.0, "short_side": None, "crop": None}
    ckpt = save_detector(tmp_path / "det.pt", model, meta)
    run_detector(ckpt, features, tmp_path / "pred.json", subset="validation")
    result = evaluate(gt, tmp_path / "pred.json")
    assert min(result["mAP"][:3]) >= 0.9 and result["average_mAP"] >= 0.85, result             # tIoU 0.3-0.5
    assert min(result["per_class_AP"]["Diving"][:3]) >= 0.9 and min(result["per_class_AP"]["CliffDiving"][:3]) >= 0.9


# ---------------------------------------------------------------------------------------------
# CLI and run: subset names, missing checkpoints, usage of subcommands, --plot-videos
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelled, asked", [("test", "Test"), ("TEST", "test")])
def test_run_subset_matches_without_regard_to_case(dataset, tmp_path, capsys, spelled, asked):
    """CONVENTIONS.md: subset names match without regard to case, whichever side spells them otherwise."""
    features, _, db = dataset
    ids = sorted(db)
    mixed = {vid: entry | {"subset": spelled if k >= 4 else entry["subset"].upper()}
             for k, (vid, entry) in enumerate(sorted(db.items()))}
    ann = tmp_path / "mixed.json"
    ann.write_text(json.dumps({"database": mixed}))
    model, meta = train_detector(features, ann, SMALL, TrainConfig(epochs=0))       # trains on VALIDATION
    assert sorted(meta["subsets"]) == sorted({spelled, "VALIDATION"})
    ckpt = save_detector(tmp_path / "det.pt", model, meta)
    assert sorted(run_detector(ckpt, features, subset=asked)) == ids[4:]
    assert sorted(run_detector(ckpt, features, subset="validation")) == ids[:4]
    out = tmp_path / "p.json"
    assert cli_main(["run", "--features", str(features), "--checkpoint", str(ckpt), "--out", str(out),
                     "--subset", asked]) == 0
    assert sorted(json.loads(out.read_text())["results"]) == ids[4:]
    capsys.readouterr()
    with pytest.raises(DetectorError) as info:
        run_detector(ckpt, features, subset="training")
    assert str(info.value) == ("the checkpoint's annotations have no subset 'training' "
                               f"(subsets: {', '.join(sorted({spelled, 'VALIDATION'}))})")
    # --plot-videos outside the subset asked for: refused before any work
    code = cli_main(["run", "--features", str(features), "--checkpoint", str(ckpt), "--out", str(tmp_path / "q.json"),
                     "--subset", asked, "--plot", str(tmp_path / "figs"), "--plot-videos", f"{ids[4]},{ids[0]}"])
    assert (code, capsys.readouterr().err) == (2, f"detect run: --plot-videos: video {ids[0]!r} is not in subset "
                                                  f"{asked!r}\n")
    assert not (tmp_path / "q.json").exists() and not (tmp_path / "figs").exists()


def test_missing_checkpoint_is_named_as_a_missing_file(dataset, tmp_path, capsys):
    features, _, _ = dataset
    missing = tmp_path / "nonexist.pt"
    with pytest.raises(DetectorError) as info:
        load_detector(missing)
    assert str(info.value) == f"no such file: {missing}"
    with pytest.raises(DetectorError) as info:
        load_detector(tmp_path)
    assert str(info.value) == f"{tmp_path} is a folder, not a detector checkpoint"
    commands = {"video": ["video", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "p.json")],
                "run": ["run", "--features", str(features), "--out", str(tmp_path / "p.json")],
                "cam": ["cam", "--features", str(features), "--out", str(tmp_path / "figs")]}
    for name, args in commands.items():
        assert cli_main([*args, "--checkpoint", str(missing)]) == 1
        assert capsys.readouterr().err == f"detect {name}: no such file: {missing}\n"
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("args, usage, missing", [
    (["fit", "--videos", "v"], "usage: python -m detect fit ", "--annotations, --work"),
    (["train", "--features", "f"], "usage: python -m detect train ", "--annotations, --out"),
    (["run", "--features", "f"], "usage: python -m detect run ", "--checkpoint, --out"),
    (["video", "v.mp4"], "usage: python -m detect video ", "--checkpoint, --out"),
    (["cam", "--features", "f"], "usage: python -m detect cam ", "--checkpoint, --out"),
])
def test_missing_flags_print_the_subcommands_usage(capsys, args, usage, missing):
    with pytest.raises(SystemExit) as info:
        cli_main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(usage), err
    command = usage.split()[-1]
    assert err.endswith(f"python -m detect {command}: error: the following arguments are required: {missing}\n"), err


def test_run_refuses_unknown_plot_videos_before_any_work(dataset, tmp_path, capsys):
    features, ann, _ = dataset
    ckpt = save_detector(tmp_path / "det.pt", *train_detector(features, ann, SMALL, TrainConfig(epochs=0)))
    out, figs = tmp_path / "p.json", tmp_path / "figs"
    base = ["run", "--features", str(features), "--checkpoint", str(ckpt), "--out", str(out), "--plot", str(figs)]
    assert cli_main([*base, "--plot-videos", "video_001,nope"]) == 2
    assert capsys.readouterr().err == f"detect run: --plot-videos: no feature file for video 'nope' in {features}\n"
    assert cli_main([*base, "--plot-videos", "nope,gone,video_001"]) == 2
    assert capsys.readouterr().err == (f"detect run: --plot-videos: no feature file for video 'nope' in {features} "
                                       "(and 1 more)\n")
    assert cli_main([*base, "--plot-videos", ","]) == 2
    assert capsys.readouterr().err == "detect run: --plot-videos names no video\n"
    assert not out.exists() and not figs.exists()
