"""The refactoring study's world family (benchmarks/feature_worlds.py) does what its axes say, and the
study's measurements (benchmarks/refactor_study.py) are right on data with known answers."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.feature_worlds import (ACTION, BACKGROUND, CONTEXT, MIXED, FeatureWorld, draw_vectors,  # noqa: E402
                                       make_video, write_world)
from benchmarks.refactor_study import (coupling_quality, latest_records, linear_r2, load_records,  # noqa: E402
                                       main as study_main, points, report, summarize, verdict)
from common.annotations import read_database  # noqa: E402
from common.fileio import append_line  # noqa: E402
from extract.features import read_features  # noqa: E402
from refactor import ContextConfig, SampleConfig, build_pairs, train_context  # noqa: E402


@given(overlap=st.floats(0, 0.95), action_norm=st.floats(0.05, 2), context_norm=st.just(0.0) | st.floats(0.01, 2),
       rank=st.integers(0, 5))
@settings(max_examples=25, deadline=None)
def test_vectors_have_the_axes_geometry(overlap, action_norm, context_norm, rank):
    world = FeatureWorld(dim=32, classes=3, action_norm=action_norm, context_norm=context_norm,
                         context_overlap=overlap, nuisance_rank=rank)
    v = draw_vectors(world, seed=4)
    np.testing.assert_allclose(np.linalg.norm(v.action, axis=1), action_norm, rtol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(v.context, axis=1), context_norm, rtol=1e-9, atol=1e-12)
    if context_norm > 0:
        cos = (v.action * v.context).sum(1) / (action_norm * context_norm)
        np.testing.assert_allclose(cos, overlap, atol=1e-9)                      # context leans on the action
        cos_d = (v.distractor * v.context).sum(1) / context_norm
        np.testing.assert_allclose(cos_d, 0.6, atol=1e-9)                        # the look-alike
    assert v.nuisance.shape == (rank, 32)
    if rank:
        np.testing.assert_allclose(np.linalg.norm(v.nuisance, axis=1), 1, rtol=1e-9)
        # half of each nuisance direction lies in the span of the action directions
        q, _ = np.linalg.qr(v.action.T)
        inside = np.linalg.norm(v.nuisance @ q, axis=1)
        assert np.all(inside > 0.5)


@pytest.mark.parametrize("extent, alone", [(0.0, 0.0), (8.0, 0.0), (8.0, 3.0)])
def test_videos_follow_their_timeline(extent, alone):
    world = FeatureWorld(dim=16, classes=2, context_extent=extent, context_alone=alone, noise=0.0, nuisance_rank=0,
                         distractor_p=0.0)
    vectors = draw_vectors(world, 0)
    rng = np.random.default_rng(1)
    for _ in range(10):
        v = make_video(world, vectors, rng, k=1)
        t = len(v["features"])
        act = np.zeros(t, bool)
        for s, e in v["instances"]:
            assert 0 <= s < e <= t and 3.0 <= e - s <= 15.0
            act[int(np.ceil(s)):int(np.floor(e))] = True                     # snippets wholly inside
        assert np.all(v["kind"][act] == ACTION)
        # noise-free features: an action snippet is exactly context + action
        np.testing.assert_allclose(v["features"][v["kind"] == ACTION], (vectors.context[1] + vectors.action[1])[None]
                                   .repeat((v["kind"] == ACTION).sum(), 0), atol=1e-5)
        ctx = v["kind"] == CONTEXT
        if alone == 0 and extent == 0:
            assert not ctx.any()                                         # context exactly on the actions
        if alone == 0 and extent > 0:
            # context only next to an action: within `extent` seconds of an instance
            near = np.zeros(t, bool)
            for s, e in v["instances"]:
                near[max(0, int(s - extent) - 1):int(e + extent) + 2] = True
            assert np.all(near[ctx])
        assert set(np.unique(v["kind"])) <= {BACKGROUND, CONTEXT, ACTION, MIXED}


def test_noise_norm_does_not_depend_on_dim():
    for dim in (16, 256):
        world = FeatureWorld(dim=dim, classes=1, context_norm=0.0, action_norm=1e-9, nuisance_rank=0, distractor_p=0,
                             context_alone=0, instances=(1, 1), backgrounds=1)
        vectors = draw_vectors(world, 0)
        v = make_video(world, vectors, np.random.default_rng(0), 0)
        resid = v["features"] - vectors.backgrounds[0]
        assert np.mean(np.linalg.norm(resid, axis=1)) == pytest.approx(1.6, rel=0.05)


def test_write_world_files_and_pairs(tmp_path):
    world = FeatureWorld(dim=16, classes=2, train_videos=4, test_videos=2, length=(40, 60))
    data = write_world(world, 5, tmp_path)
    db = json.loads((tmp_path / "annotations.json").read_text())["database"]
    assert sorted(db) == sorted(data["kinds"]) and len(data["test"]) == 2
    for vid in db:
        ff = read_features(tmp_path / f"{vid}.h5")
        assert ff.features.shape == (len(data["kinds"][vid]), 16) and ff.streams == ("rgb", "flow")
        np.testing.assert_allclose(ff.times, np.arange(len(ff.features)) + 0.5)    # snippet i covers [i, i + 1)
        if vid in data["test"]:
            np.testing.assert_array_equal(ff.features, data["test"][vid])
    assert sum(len(e["annotations"]) for e in db.values() if e["subset"] == "validation") == \
        data["instances"]["validation"]
    # the same seed gives the same world
    again = write_world(world, 5, tmp_path / "again")
    for vid in data["test"]:
        np.testing.assert_array_equal(again["test"][vid], data["test"][vid])
    pairs = build_pairs(tmp_path, tmp_path / "annotations.json", "validation")
    q = coupling_quality(pairs, data["kinds"])
    assert q["pairs"] == len(pairs.label)
    assert sum(q[f"coupling_{k}"] for k in ("background", "context", "action", "mixed")) == pytest.approx(1.0)
    assert q["coupling_action"] == 0                              # couplings are non-action snippets


def test_linear_r2_known_answers():
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(50, 6)) for _ in range(6)]
    m = rng.normal(size=(6, 4))
    assert linear_r2(x, [a @ m + 1.0 for a in x]) == pytest.approx(1.0, abs=1e-4)      # exactly linear
    assert abs(linear_r2(x, [rng.normal(size=(50, 4)) for _ in x])) < 0.1               # unrelated
    half = [np.concatenate([a[:, :3], np.zeros((50, 3))], 1) for a in x]                 # half the channels lost
    assert linear_r2(half, x) == pytest.approx(0.5, abs=0.1)


def _rec(world, seed, variant, mAP):
    return {"world": world, "seed": seed, "variant": variant, "average_mAP": mAP, "coupling": {"pairs": 1}}


def test_summary_pairs_differences_by_seed(tmp_path):
    w = FeatureWorld().to_dict()
    recs = [_rec(w, s, "baseline", b) for s, b in zip(range(3), (0.5, 0.6, 0.7))]
    recs += [_rec(w, s, "default", d) for s, d in zip(range(3), (0.52, 0.61, 0.75))]
    recs += [_rec(w, s, "deep", d) for s, d in zip((0, 2), (0.4, 0.8))]
    row = summarize(recs)[json.dumps(w, sort_keys=True)]
    diffs = 100 * np.array([0.02, 0.01, 0.05])
    assert row["default"]["delta_baseline"] == pytest.approx((diffs.mean(), diffs.std(ddof=1)))
    assert row["default"]["delta_deep"] == pytest.approx((100 * np.mean([0.12, -0.05]),
                                                          100 * np.std([0.12, -0.05], ddof=1)))
    assert row["baseline"]["average_mAP"] == pytest.approx((60.0, 10.0))
    # against the better plain front, on the seeds that have both: seed 0 max(0.5, 0.4), seed 2 max(0.7, 0.8)
    assert row["default"]["below_best"] == pytest.approx({0: 2.0, 2: -5.0})
    assert "below_best" not in row["baseline"] and "below_best" not in row["deep"]
    # select (its held-out scores choose the baseline on seed 0, the default on seed 1, the deep baseline on
    # seed 2): 0 on seeds 0 and 2
    held = {0: {"baseline": 0.6, "default": 0.5, "deep": 0.5}, 1: {"baseline": 0.5, "default": 0.6, "deep": 0.5},
            2: {"baseline": 0.5, "default": 0.5, "deep": 0.6}}
    chosen = recs + [_rec(w, s, "select", m) | {"selected": c, "heldout_mAP": held[s]}
                     for s, c, m in ((0, "baseline", 0.5), (1, "default", 0.61), (2, "deep", 0.8))]
    assert "| centre | 2 | -1.5 | -5.0 | +0.0 | +0.0 |" in report(chosen)
    report(chosen, figures=tmp_path / "figs")
    for name in ("delta_along_axes", "mechanism", "oracle_bound", "select_map"):
        assert (tmp_path / "figs" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the map row: Δ deep on seeds 0 and 2 (-10, +10); default - deep (+12, -5); "gain": within noise of
    # both and at least 2 points above the baseline
    assert "| centre | 3 | 60.0 ± 10.0 | +0.0 ± 14.1 | — | +2.7 ± 2.1 | +3.5 ± 12.0 | gain |" in report(recs)
    oracle = recs + [_rec(w, s, "oracle_split", o) for s, o in zip(range(3), (0.54, 0.62, 0.79))]
    assert "| centre | 3 | 60.0 ± 10.0 | — | +5.0 ± 3.6 | — | — | — | — | — | — | +2.7 ± 2.1 | 0.53 |" in report(oracle)
    # along an axis only worlds that differ from the centre in that field alone: not one whose instances differ too
    from benchmarks.refactor_study import _along
    wide, wide_many = FeatureWorld(dim=512).to_dict(), FeatureWorld(dim=1024, instances=(10, 20)).to_dict()
    along = oracle + [_rec(ww, s, v, m) for ww in (wide, wide_many) for s in range(2)
                      for v, m in (("baseline", 0.5), ("default", 0.6))]
    xs, ms, _ = _along(summarize(along), w, "dim", "default")
    assert list(xs) == [256, 512] and ms == pytest.approx([100 * 0.08 / 3, 10.0])
    # runs under other study settings (the project's default detector) are a world of their own
    other = [r | {"settings": {"detector": "default", "detector_epochs": 20}} for r in recs]
    both = summarize(recs + other)
    assert both[json.dumps(w, sort_keys=True)]["default"]["delta_baseline"] == pytest.approx(
        (diffs.mean(), diffs.std(ddof=1)))
    assert len(both) == 2 and "| detector=default | 3 | 60.0 ± 10.0 |" in report(recs + other)
    xs, _, _ = _along(both, w, "dim", "default")
    assert list(xs) == [256]
    from benchmarks.refactor_study import StudySettings, study_point
    assert study_point(w, asdict(StudySettings())) == w                        # the defaults add nothing
    assert study_point(w, asdict(StudySettings(detector="default"))) == w | {"detector": "default"}
    thumos = FeatureWorld(classes=20, instances=(10, 20)).to_dict()
    assert "| classes=20, instances=10/20 | 1 |" in report([_rec(thumos, 0, "baseline", 0.9)])
    assert verdict({"baseline": {}, "default": {"delta_baseline": (-3.0, 2.0)}}) == "loss"
    assert verdict({"baseline": {}, "default": {"delta_baseline": (-1.0, 2.0)}}) == "ok"
    assert verdict({"baseline": {}, "deep": {}, "default": {"delta_baseline": (2.5, 1.0), "delta_deep": (-2.0, 1.0)}}) \
        == "loss"
    # records survive a kill: a partial last line is ignored, a rerun appends
    path = tmp_path / "r.jsonl"
    for r in recs[:2]:
        append_line(path, json.dumps(r))
    with open(path, "a") as fh:
        fh.write('{"world": ')
    assert load_records(path) == json.loads(json.dumps(recs[:2]))


def test_a_later_record_of_the_same_world_seed_and_variant_supersedes_the_earlier(tmp_path, capsys):
    """Reruns after a fix: the report keeps the last record per (world with its settings, seed, variant),
    in the order given, and says how many it dropped."""
    w, other = FeatureWorld().to_dict(), FeatureWorld(classes=20).to_dict()
    old, new = _rec(w, 0, "context_bdw4_x8", 0.70), _rec(w, 0, "context_bdw4_x8", 0.80)
    base = _rec(w, 0, "baseline", 0.60)
    elsewhere = _rec(other, 0, "context_bdw4_x8", 0.5)
    slow = _rec(w, 0, "context_bdw4_x8", 0.9) | {"settings": {"detector": "default"}}   # other settings: kept apart
    kept, dropped = latest_records([old, base, elsewhere, slow, new])
    assert kept == [base, elsewhere, slow, new] and dropped == 1
    assert latest_records([new, old]) == ([old], 1)                                   # the order given decides
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps(old) + "\n" + json.dumps(base) + "\n")
    second.write_text(json.dumps(new) + "\n")
    assert study_main(["--report", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("(1 records superseded by later ones of the same world, seed and variant)")
    assert "+20.0" in out and "+10.0" not in out                                # Δ 80 − 60, not 70 − 60


def test_reselect_replays_the_selection_with_a_margin():
    """``reselect``: from each ``select`` record's held-out scores, the choice under a margin and the chosen
    variant's own record on that seed; margin 0 gives back the recorded choices; the report's rule table
    compares the margins against the better plain front per seed."""
    from benchmarks.refactor_study import reselect
    w = FeatureWorld().to_dict()
    own = {"baseline": (0.60, 0.70), "default": (0.64, 0.66), "deep": (0.50, 0.75)}     # test mAP, seeds 0 and 1
    recs = [_rec(w, s, v, m[s]) for v, m in own.items() for s in (0, 1)]
    held = {0: {"baseline": 0.495, "default": 0.515, "deep": 0.53},
            1: {"baseline": 0.39, "default": 0.45, "deep": 0.41}}
    recs += [_rec(w, s, "select", own[max(held[s], key=held[s].get)][s])
             | {"selected": max(held[s], key=held[s].get), "heldout_mAP": held[s]} for s in (0, 1)]
    zero = {r["seed"]: r for r in reselect(recs, 0.0)}
    assert {s: (r["selected"], r["average_mAP"], r["variant"]) for s, r in zero.items()} == {
        0: ("deep", 0.50, "select@0"), 1: ("default", 0.66, "select@0")}
    # seed 0: default 0.515 is within 2 points of deep's 0.53, baseline 0.495 is not; seed 1: default stays
    two = {r["seed"]: (r["selected"], r["average_mAP"]) for r in reselect(recs, 2.0)}
    assert two == {0: ("default", 0.64), 1: ("default", 0.66)}
    assert [r["selected"] for r in reselect(recs, 5.0)] == ["baseline", "default"]
    assert {r["selected"] for r in reselect(recs, 10.0)} == {"baseline"}
    # a choice without its own record is left out
    assert [r["seed"] for r in reselect([r for r in recs if not (r["variant"] == "baseline" and r["seed"] == 0)],
                                        5.0)] == [1]
    # best of baseline / deep: seed 0 0.60, seed 1 0.75. Margins 0 and 1: -10 and -9 points (Δ baseline -10
    # and -4: "loss"); margins 2 and 3: +4 and -9; margin 5: 0 and -9
    table = report(recs)
    assert ("| centre | 2 | -9.5 / -10.0 loss | -9.5 / -10.0 loss | -2.5 / -9.0 ok | -2.5 / -9.0 ok | "
            "-4.5 / -9.0 ok |") in table
    assert "| mean of 1 worlds | | -9.50 | -9.50 | -2.50 | -2.50 | -4.50 |" in table
    assert "| verdicts (ok / gain / loss) | | 0/0/1 | 0/0/1 | 1/0/0 | 1/0/0 | 1/0/0 |" in table
    # a preference: the refactor role (the default form) is kept within the margin of the best, the rest as before
    pref = {r["seed"]: (r["selected"], r["variant"]) for r in reselect(recs, 1.0, prefer="refactor")}
    assert pref == {0: ("deep", "select@refactor+1"), 1: ("default", "select@refactor+1")}
    assert [r["selected"] for r in reselect(recs, 1.6, prefer="refactor")] == ["default", "default"]
    assert [r["selected"] for r in reselect(recs, 5.0, prefer="deep")] == ["deep", "deep"]
    # beaten by more than the margin: the best, not the simplest (seed 0: baseline is within 5 of deep)
    assert [r["selected"] for r in reselect(recs, 2.0, prefer="baseline")] == ["deep", "default"]
    # the four-fold selection beside it, on the seeds with both (here it takes the baseline on seeds 0 and 1)
    k4 = [_rec(w, s, "select_k4", own["baseline"][s]) | {"selected": "baseline"} for s in (0, 1)]
    assert ("| centre | 2 | -9.5 / -10.0 | -2.5 / -5.0 | deep 1, default 1 | baseline 2 |"
            in report(recs + k4))


def test_detector_choices():
    from benchmarks.refactor_study import detector_config
    from detect import DetectorConfig

    assert detector_config("default") == DetectorConfig()
    assert (detector_config().base_dim, detector_config().head_hidden, detector_config().max_duration) == (64, 128, 32)
    with pytest.raises(ValueError, match="small or default"):
        detector_config("huge")


def test_points_cover_each_axis_once():
    centre = FeatureWorld()
    pts = points(centre, {"dim": None, "classes": ["4", "8"]})
    assert pts[0] == ("centre", None, centre)
    assert [(a, v) for a, v, _ in pts[1:]] == [("dim", 64), ("dim", 1024), ("dim", 2048), ("classes", "4")]
    assert all(w.dim == 256 or a == "dim" for a, _, w in pts)
    assert pts[-1][2].classes == 4
    assert points(centre, {}, with_centre=False) == []


def test_run_point_records_and_skips(tmp_path):
    """One seed of two worlds through the study: each variant's record has its scores and, for RefactorNet,
    the measurements; without any context there are no coupling samples, so RefactorNet's variants are
    recorded as skipped (with the reason) and the baseline still runs."""
    from benchmarks.refactor_study import StudySettings, run_point

    fast = StudySettings(detector_epochs=1, refactor_epochs=1)
    world = FeatureWorld(dim=16, classes=2, train_videos=4, test_videos=2, length=(40, 60))
    recs: list[dict] = []
    run_point(world, 0, ["baseline", "paper", "default"], fast, tmp_path / "a", set(), recs.append)
    assert [r["variant"] for r in recs] == ["baseline", "paper", "default"]
    assert all(0 <= r["average_mAP"] <= 1 and len(r["mAP"]) == 5 for r in recs)
    assert "stage2" not in recs[0] and recs[2]["stage2"]["phiA_drift"] == pytest.approx(0, abs=1e-6)  # frozen
    assert recs[2]["stage2"]["recon_r2"] > 0.99 and 0 <= recs[1]["stage2"]["recon_r2"] <= 1        # residual keeps f
    done: list[dict] = []
    run_point(world, 0, ["baseline", "paper"], fast, tmp_path / "a", {"baseline", "paper"}, done.append)
    assert done == []                                                                              # resumed: nothing
    control = FeatureWorld(dim=256, classes=2, train_videos=4, test_videos=2, length=(40, 60), context_norm=0.0)
    recs = []
    run_point(control, 0, ["baseline", "paper", "oracle_split"], fast, tmp_path / "b", set(), recs.append)
    assert "average_mAP" in recs[0] and "no coupling samples" in recs[1]["skipped"]
    assert "average_mAP" in recs[2]                              # an oracle needs no coupling samples
    assert list(summarize(recs).values())[0].keys() == {"baseline", "oracle_split"}
    assert read_features(tmp_path / "b" / next(p.name for p in (tmp_path / "b").iterdir()) / "oracle_split" /
                         "test_000_class00.h5").features.shape[1] == 512           # [f − context, context]


def test_context_files_write_f_beside_each_score(tmp_path):
    """Layout ``context_files``: the detector's features are f, then each listed context score (the default form's,
    then the border's) applied to the whole video, as the scorers ``train_context`` learns from the same pairs."""
    from benchmarks.refactor_study import VARIANTS, StudySettings, run_point

    world = FeatureWorld(dim=32, classes=2, train_videos=6, test_videos=2, length=(50, 70))
    recs: list[dict] = []
    run_point(world, 0, ["context_files_b2"], StudySettings(detector_epochs=1), tmp_path, set(), recs.append)
    assert 0 <= recs[0]["average_mAP"] <= 1
    root = next(tmp_path.iterdir())
    raw = root / "raw"
    pairs = build_pairs(raw, raw / "annotations.json", "validation", SampleConfig())
    scorers = [train_context(pairs, raw, ContextConfig(seed=0, **c))[0] for c in VARIANTS["context_files_b2"].scores]
    for name in ("test_000_class00.h5", "validation_000_class00.h5"):
        f = read_features(raw / name).features
        got = read_features(root / "scored_context_files_b2" / name).features
        assert got.shape == (len(f), 32 + 2 * 4)
        np.testing.assert_array_equal(got[:, :32], f)
        for j, scorer in enumerate(scorers):
            with torch.no_grad():
                p = scorer(torch.from_numpy(f).T[None])[0].T.numpy()
            np.testing.assert_allclose(got[:, 32 + 4 * j:36 + 4 * j], p, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[:, 32:36], got[:, 36:40])              # the border changes the score


def test_crossfit_scores_each_training_video_without_it(tmp_path):
    """``crossfit``: a training video's scores come from the scorer learnt on the other three quarters of the
    training videos (the fold that holds it out), a test video's from the scorer learnt on them all."""
    from benchmarks.refactor_study import StudySettings, run_point, write_heldout

    world = FeatureWorld(dim=32, classes=2, train_videos=8, test_videos=2, length=(50, 70))
    run_point(world, 0, ["context_files_x"], StudySettings(detector_epochs=1), tmp_path, set(), lambda r: None)
    root = next(p for p in tmp_path.iterdir() if (p / "raw").is_dir())
    raw = root / "raw"

    def score(annotations: Path, name: str) -> np.ndarray:
        pairs = build_pairs(raw, annotations, "validation", SampleConfig())
        scorer = train_context(pairs, raw, ContextConfig(seed=0))[0]
        with torch.no_grad():
            return scorer(torch.from_numpy(read_features(raw / name).features).T[None])[0].T.numpy()

    held = write_heldout(raw / "annotations.json", tmp_path / "fold1" / "annotations.json", fold=1)
    for name, want in ((f"{held[0]}.h5", score(tmp_path / "fold1" / "annotations.json", f"{held[0]}.h5")),
                       ("test_000_class00.h5", score(raw / "annotations.json", "test_000_class00.h5"))):
        got = read_features(root / "scored_context_files_x" / name).features[:, 32:]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    on_all = score(raw / "annotations.json", f"{held[0]}.h5")        # the scorer that saw the video differs
    assert not np.allclose(read_features(root / "scored_context_files_x" / f"{held[0]}.h5").features[:, 32:], on_all)


def test_heldout_split_is_a_quarter_of_each_class(tmp_path):
    """write_heldout moves every 4th training video of each class (in sorted order) to the held-out subset
    and leaves everything else as it was."""
    from benchmarks.refactor_study import HELDOUT, write_heldout

    world = FeatureWorld(dim=16, classes=3, train_videos=14, test_videos=2, length=(40, 60))
    write_world(world, 0, tmp_path / "w")
    before = read_database(tmp_path / "w" / "annotations.json")
    held = write_heldout(tmp_path / "w" / "annotations.json", tmp_path / "h" / "annotations.json")
    after = read_database(tmp_path / "h" / "annotations.json")
    per_class = {}
    for vid in sorted(v for v in before if before[v]["subset"] == "validation"):
        per_class.setdefault(before[vid]["annotations"][0]["label"], []).append(vid)
    assert sorted(held) == sorted(v for vids in per_class.values() for v in vids[3::4])   # 5, 5, 4 videos: 1 each
    assert {before[v]["annotations"][0]["label"] for v in held} == set(per_class)
    assert {v for v in after if after[v]["subset"] == HELDOUT} == set(held)
    assert all(after[v] == before[v] for v in before if v not in held)
    assert all(after[v] | {"subset": "validation"} == before[v] for v in held)


def test_select_scores_the_choice_made_on_heldout_videos(tmp_path):
    """The ``select`` variant records the held-out mAP of each candidate, picks the best, and scores that
    candidate trained on every training video: the same numbers as the candidate's own run. ``select_k4``
    scores on four folds and chooses by their mean."""
    from benchmarks.refactor_study import VARIANTS, StudySettings, run_point

    fast = StudySettings(detector_epochs=1, refactor_epochs=1)
    world = FeatureWorld(dim=16, classes=2, train_videos=8, test_videos=2, length=(40, 60))
    recs: list[dict] = []
    run_point(world, 0, ["select", "select_k4"], fast, tmp_path / "a", set(), recs.append)
    sel, k4 = recs
    scores = sel["heldout_mAP"]
    assert set(scores) == set(VARIANTS["select"].select) and sel["heldout_videos"] == 2
    assert scores[sel["selected"]] == max(scores.values())
    assert sel["selected"] == next(c for c in VARIANTS["select"].select if scores[c] == max(scores.values()))
    alone: list[dict] = []
    run_point(world, 0, [sel["selected"]], fast, tmp_path / "b", set(), alone.append)
    assert alone[0]["average_mAP"] == sel["average_mAP"] and alone[0]["mAP"] == sel["mAP"]
    # 4-fold: each of the 8 training videos held out once, fold 0 is select's split, the mean chooses
    folds = k4["heldout_folds"]
    assert len(folds) == 4 and folds[0] == scores and k4["heldout_videos"] == 8
    assert k4["heldout_mAP"] == {c: pytest.approx(np.mean([f[c] for f in folds])) for c in scores}
    assert k4["heldout_mAP"][k4["selected"]] == max(k4["heldout_mAP"].values())


def test_boundary_table_pairs_the_two_context_forms_by_seed():
    """The report's boundary table: context_bd_x − context_a_w2 paired by seed (mean ± std over the seeds both
    have, with the baseline and the deep baseline), and the composed selection's choice and verdict."""
    from benchmarks.refactor_study import compose_select
    w = FeatureWorld().to_dict()
    own = {"baseline": (0.60, 0.70, 0.65), "deep": (0.50, 0.75, 0.55), "context_a_w2": (0.70, 0.72, 0.80),
           "context_bd_x": (0.74, 0.73, 0.79)}
    recs = [_rec(w, s, v, m[s]) for v, m in own.items() for s in range(3)]
    recs += [_rec(w, s, "select_aw", own["context_a_w2"][s]) | {
        "selected": "context_a_w2", "heldout_videos": 4,
        "heldout_mAP": {"baseline": 0.5, "context_a_w2": 0.6, "deep": 0.45 + 0.1 * (s == 1)}} for s in range(3)]
    recs += [{"world": w, "seed": s, "variant": "heldout_bd_x", "heldout_mAP": {"context_bd_x": 0.56 - 0.1 * s}}
             for s in range(3)]
    chosen = {r["seed"]: r["selected"] for r in compose_select(recs)}
    assert chosen == {0: "context_bd_x", 1: "deep", 2: "baseline"}        # the best held-out score
    gaps = 100 * np.array([0.04, 0.01, -0.01])
    line = next(x for x in report(recs).splitlines() if x.startswith("| centre |") and "(3)" in x)
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[8] == f"{gaps.mean():+.1f} ± {gaps.std(ddof=1):.1f} (3)"
    # detect fit's rule keeps the context front unless beaten by more than 10 points (seed 1: deep by 9, kept;
    # seed 2: the baseline by 14, taken)
    assert cells[9].endswith("(baseline 1, context_bd_x 2)")
    assert cells[9].startswith(f"{100 * np.mean([0.14, 0.03, 0.0]):+.1f} ± ")


def test_the_selection_around_the_default_front_is_replayed_from_held_out_scores():
    """``heldout_front`` holds only the held-out scores of ``detect fit``'s three candidates around its context front
    (context_bdw4_x8); the report replays ``detect fit``'s rule on them (the context front unless another beats it by
    more than 10 points) and takes the choice's own record on all training videos: the eight-fold table's select
    column."""
    from benchmarks.refactor_study import reselect
    w = FeatureWorld().to_dict()
    own = {"baseline": (0.60, 0.70, 0.65), "deep": (0.50, 0.75, 0.55), "context_a_w2": (0.70, 0.72, 0.80),
           "context_bdw4_x8": (0.74, 0.73, 0.79)}
    recs = [_rec(w, s, v, m[s]) for v, m in own.items() for s in range(3)]
    held = ({"baseline": 0.5, "context_bdw4_x8": 0.6, "deep": 0.45}, {"baseline": 0.5, "context_bdw4_x8": 0.6,
            "deep": 0.69}, {"baseline": 0.75, "context_bdw4_x8": 0.6, "deep": 0.2})
    recs += [{"world": w, "seed": s, "variant": "heldout_front", "heldout_mAP": held[s]} for s in range(3)]
    chosen = {r["seed"]: (r["selected"], r["average_mAP"]) for r in reselect(recs, 10.0, "context", "heldout_front")}
    # seed 0: the context front is best; seed 1: deep beats it by 9 points (kept); seed 2: the baseline by 15 (taken)
    assert chosen == {0: ("context_bdw4_x8", 0.74), 1: ("context_bdw4_x8", 0.73), 2: ("baseline", 0.65)}
    text = report(recs).splitlines()
    title = next(i for i, x in enumerate(text) if x.startswith("Cross-fitting on 8 folds") and "context_a_w2" in x)
    cells = [c.strip() for c in text[title + 4].split("|")[1:-1]]
    assert cells[0] == "centre" and text[title + 2].split("|")[10].strip() == "Δ select_bdw4_x8 (chosen)"
    gaps = 100 * np.array([0.74 - 0.60, 0.73 - 0.70, 0.0])
    assert cells[9] == f"{gaps.mean():+.1f} ± {gaps.std(ddof=1):.1f} (baseline 1, context_bdw4_x8 2)"


def test_the_selection_around_the_gain_16_front_composes_two_held_out_runs():
    """``heldout_g16`` holds only the gain-16 front's held-out score; the report puts it beside ``heldout_front``'s
    baseline and deep baseline (the same held-out videos), replays ``detect fit``'s rule (the context front unless
    another beats it by more than 10 points) and takes the choice's own record: the gain table's select column.
    A seed without a ``heldout_g16`` record is left out."""
    w = FeatureWorld().to_dict()
    own = {"baseline": (0.60, 0.70, 0.65, 0.5), "deep": (0.50, 0.75, 0.55, 0.5),
           "context_bdw4_x8": (0.74, 0.73, 0.79, 0.5), "context_bdw4_x8_g16": (0.80, 0.71, 0.90, 0.9)}
    recs = [_rec(w, s, v, m[s]) for v, m in own.items() for s in range(4)]
    # heldout_front's own context score (0.9) must not count for the gain-16 front
    held = ({"baseline": 0.5, "deep": 0.45}, {"baseline": 0.5, "deep": 0.69}, {"baseline": 0.75, "deep": 0.2},
            {"baseline": 0.5, "deep": 0.5})
    recs += [{"world": w, "seed": s, "variant": "heldout_front", "heldout_mAP": held[s] | {"context_bdw4_x8": 0.9},
              "heldout_videos": 4} for s in range(4)]
    recs += [{"world": w, "seed": s, "variant": "heldout_g16", "heldout_mAP": {"context_bdw4_x8_g16": 0.6},
              "heldout_videos": 4} for s in range(3)]
    text = report(recs).splitlines()
    title = next(i for i, x in enumerate(text) if x.startswith("A gain on the front's scores") and "g16" in x)
    assert text[title + 2].split("|")[10].strip() == "Δ select_context_bdw4_x8_g16 (chosen)"
    cells = [c.strip() for c in text[title + 4].split("|")[1:-1]]
    # seed 0: the gain-16 front is best; seed 1: deep beats it by 9 points (kept); seed 2: the baseline by 15
    # (taken); seed 3: no heldout_g16 record
    gaps = 100 * np.array([0.80 - 0.60, 0.71 - 0.70, 0.0])
    assert cells[0] == "centre"
    assert cells[9] == f"{gaps.mean():+.1f} ± {gaps.std(ddof=1):.1f} (baseline 1, context_bdw4_x8_g16 2)"


def test_boundary_form_tables_pair_against_context_bd_x_without_a_deep_baseline():
    """The sixteenth round's tables: each boundary form (window 4, hidden layer) minus context_bd_x paired by
    seed, over the seeds both have, also where the deep baseline was not run (development seeds)."""
    w = FeatureWorld().to_dict()
    own = {"baseline": (0.60, 0.70, 0.65, 0.9), "context_bd_x": (0.74, 0.73, 0.79, 0.9),
           "context_bdw4_x": (0.75, 0.70, 0.83), "context_bdh_x": (0.70, 0.73, 0.80, 0.91)}
    recs = [_rec(w, s, v, m[s]) for v, m in own.items() for s in range(len(m))]
    text = report(recs)
    for form, gaps in (("context_bdw4_x", [0.01, -0.03, 0.04]), ("context_bdh_x", [-0.04, 0.0, 0.01, 0.01])):
        title = next(i for i, x in enumerate(text.splitlines()) if x.startswith(f"The boundary score in another "
                                                                                 f"form (sixteenth round): {form}"))
        line = text.splitlines()[title + 4]
        cells = [c.strip() for c in line.split("|")[1:-1]]
        g = 100 * np.array(gaps)
        assert cells[0] == "centre" and cells[8] == f"{g.mean():+.1f} ± {g.std(ddof=1):.1f} ({len(g)})", line
        assert cells[5] == "—"                                                     # no deep baseline run


def test_composed_selection_equals_the_selection_it_stands_for(tmp_path, monkeypatch):
    """``heldout_bd_x`` scores the boundary context front on ``select_aw``'s held-out videos only (no model on
    all videos); :func:`compose_select` puts that score in place of ``select_aw``'s context candidate: the
    held-out scores, the choice and the final record equal those of a selection run among the baseline,
    ``context_bd_x`` and the deep baseline; the report shows it with ``detect fit``'s rule."""
    from benchmarks.refactor_study import VARIANTS, StudySettings, Variant, compose_select, run_point

    monkeypatch.setitem(VARIANTS, "select_bdx_run", Variant("none", select=("baseline", "context_bd_x", "deep")))
    fast = StudySettings(detector_epochs=1, refactor_epochs=1)
    world = FeatureWorld(dim=16, classes=2, train_videos=8, test_videos=2, length=(40, 60))
    recs: list[dict] = []
    run_point(world, 0, ["baseline", "deep", "context_bd_x", "select_aw", "heldout_bd_x", "select_bdx_run"], fast,
              tmp_path, set(), recs.append)
    by = {r["variant"]: r for r in recs}
    held = by["heldout_bd_x"]
    assert "average_mAP" not in held and list(held["heldout_mAP"]) == ["context_bd_x"] and held["heldout_videos"] == 2
    (composed,) = compose_select(recs)
    truth = by["select_bdx_run"]
    assert composed["variant"] == "select_bdx" and composed["heldout_mAP"] == truth["heldout_mAP"]
    assert composed["selected"] == truth["selected"]
    assert composed["average_mAP"] == truth["average_mAP"] and composed["mAP"] == truth["mAP"]
    assert composed["average_mAP"] == by[truth["selected"]]["average_mAP"]
    assert compose_select([r for r in recs if r["variant"] != "heldout_bd_x"]) == []
    table = report(recs)                                   # the held-out-only record is left out of the means
    assert "| Δ context_bd_x | above baseline |" in table and "| Δ select_bdx (chosen) |" in table


@given(seed=st.integers(0, 2**16), k=st.integers(0, 2))
@settings(max_examples=10, deadline=None)
def test_oracle_layouts_are_exact_splits_of_the_same_video(seed, k):
    world = FeatureWorld(dim=16, classes=3, length=(40, 60))
    vectors = draw_vectors(world, seed)
    raw, no_ctx, split = (make_video(world, vectors, np.random.default_rng(seed), k, layout)
                          for layout in ("raw", "no_context", "split"))
    assert raw["instances"] == split["instances"] and np.array_equal(raw["kind"], split["kind"])
    f = raw["features"].astype(np.float64)
    action_part, context_part = split["features"][:, :16], split["features"][:, 16:]
    np.testing.assert_allclose(action_part + context_part, f, atol=1e-5)          # nothing lost
    np.testing.assert_array_equal(no_ctx["features"], action_part)
    # the co-occurrence part is the class's context, noise-free: s_k on context snippets, 0 on background
    kind = raw["kind"]
    np.testing.assert_allclose(context_part[kind == CONTEXT], np.broadcast_to(vectors.context[k],
                               ((kind == CONTEXT).sum(), 16)), atol=1e-6)
    assert np.all(context_part[kind == BACKGROUND] == 0)
    # the projections: f beside f · ŝ_j for every class j (computed from f, so linear in it)
    projected = make_video(world, vectors, np.random.default_rng(seed), k, "projected")["features"]
    assert projected.shape == (len(f), 16 + 3)
    np.testing.assert_array_equal(projected[:, :16], raw["features"])
    unit = vectors.context / np.linalg.norm(vectors.context, axis=1, keepdims=True)
    np.testing.assert_allclose(projected[:, 16:], f @ unit.T, atol=1e-5)
    # removed: [f − P f, P f], P f in the span of the context directions, the rest orthogonal to all of them
    removed = make_video(world, vectors, np.random.default_rng(seed), k, "removed")["features"].astype(np.float64)
    outside, inside = removed[:, :16], removed[:, 16:]
    np.testing.assert_allclose(outside + inside, f, atol=1e-5)
    np.testing.assert_allclose(outside @ unit.T, 0, atol=1e-5)
    coef = np.linalg.lstsq(unit.T, inside.T, rcond=None)[0]                          # inside = unit.T @ coef
    np.testing.assert_allclose(unit.T @ coef, inside.T, atol=1e-5)
    # labels: f beside the exact context and action coverage of class k (one-hot over the 3 classes)
    labels = make_video(world, vectors, np.random.default_rng(seed), k, "labels")["features"]
    assert labels.shape == (len(f), 16 + 2 * 3)
    np.testing.assert_array_equal(labels[:, :16], raw["features"])
    ctx, act = labels[:, 16:19], labels[:, 19:22]
    others = [j for j in range(3) if j != k]
    assert np.all(ctx[:, others] == 0) and np.all(act[:, others] == 0)
    assert np.all(ctx[kind == CONTEXT, k] == 1) and np.all(act[kind == CONTEXT, k] == 0)
    assert np.all(ctx[kind == ACTION, k] == 1) and np.all(act[kind == ACTION, k] == 1)
    assert np.all(labels[kind == BACKGROUND, 16:] == 0)
    for s, e in raw["instances"]:                                  # the action's coverage integrates to its length
        inside = slice(int(np.floor(s)), int(np.ceil(e)))
        assert act[inside, k].sum() == pytest.approx(e - s, abs=2e-3)
    # hard labels: action where the snippet's centre is inside an instance, context where it covers half
    hard = make_video(world, vectors, np.random.default_rng(seed), k, "labels_hard")["features"]
    np.testing.assert_array_equal(hard[:, :16], raw["features"])
    centre = np.arange(len(f)) + 0.5
    within = np.zeros(len(f), bool)
    for s, e in raw["instances"]:
        within |= (centre >= s) & (centre <= e)
    np.testing.assert_array_equal(hard[:, 19 + k], within)
    np.testing.assert_array_equal(hard[:, 16 + k], ctx[:, k] >= 0.5)
    assert np.all(hard[:, 16:][:, [j for j in range(6) if j not in (k, 3 + k)]] == 0)
    assert np.all(hard[kind == ACTION, 19 + k] == 1) and np.all(hard[kind == BACKGROUND, 16:] == 0)
    with pytest.raises(ValueError, match="layout must be one of"):
        make_video(world, vectors, np.random.default_rng(seed), k, "ideal")


@given(k=st.integers(1, 5), c=st.integers(6, 12), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_span_projector_is_the_orthogonal_projection(k, c, seed):
    from benchmarks.feature_worlds import span_projector

    d = np.random.default_rng(seed).standard_normal((k, c))
    p = span_projector(np.concatenate([d, np.zeros((1, c))]))                       # a zero row is ignored
    np.testing.assert_allclose(p, p.T, atol=1e-10)
    np.testing.assert_allclose(p @ p, p, atol=1e-10)
    np.testing.assert_allclose(d @ p, d, atol=1e-10)                                # the span is kept
    assert np.trace(p) == pytest.approx(k)                                          # and nothing else
    assert np.array_equal(span_projector(np.zeros((2, c))), np.zeros((c, c)))


def test_linear_split_and_context_score_from_coupling_samples(tmp_path):
    """The ``linear`` variant's directions, estimated from the coupling samples alone, point along the true
    contexts (centred), and its files are [f − P f, P f] of the same videos; ``context_score``'s files are f
    beside the context score of ``refactor.context``."""
    from benchmarks.feature_worlds import span_projector
    from benchmarks.refactor_study import context_directions, write_linear
    from refactor import SampleConfig, build_pairs

    world = FeatureWorld(dim=64, classes=3, train_videos=12, test_videos=2, length=(60, 90))
    write_world(world, 0, tmp_path / "raw")
    pairs = build_pairs(tmp_path / "raw", tmp_path / "raw" / "annotations.json", "validation", SampleConfig())
    est = context_directions(pairs)
    true = draw_vectors(world, 0).context
    true = true - true.mean(0)
    cos = (est * true).sum(1) / np.linalg.norm(est, axis=1) / np.linalg.norm(true, axis=1)
    assert cos.min() > 0.9, cos
    write_linear(tmp_path / "raw", tmp_path / "lin", pairs)
    name = "test_000_class00.h5"
    f = read_features(tmp_path / "raw" / name).features.astype(np.float64)
    g = read_features(tmp_path / "lin" / name).features.astype(np.float64)
    proj = span_projector(est)
    np.testing.assert_allclose(g, np.concatenate([f - f @ proj, f @ proj], axis=1), atol=1e-5)
    assert (tmp_path / "lin" / "annotations.json").read_bytes() == (tmp_path / "raw" / "annotations.json").read_bytes()


def test_study_context_variants_are_the_library_forms():
    """The study's context variants are ContextConfigs; ``context_a_w2`` (and ``select_aw``'s candidate) is the
    library's default, what ``detect fit`` trains; ``context_score`` is the first form (eighth round)."""
    from benchmarks.refactor_study import VARIANTS
    from refactor.context import ContextConfig

    forms = {name: ContextConfig(**v.context) for name, v in VARIANTS.items() if v.layout == "context_score"}
    assert forms["context_a_w2"] == ContextConfig()
    assert "context_a_w2" in VARIANTS["select_aw"].select
    first = forms["context_score"]
    assert (first.contexts, first.actions, first.window) == (True, False, 0)
    assert (forms["action_w4"].contexts, forms["action_w4"].actions) == (False, True)


def test_fit_context_fronts_are_the_study_variants():
    """``detect fit``'s default context front is the study's ``context_bdw4_x8`` (since the seventeenth round):
    the default score and the boundary score of window 4 beside f, the detector trained on scores cross-fitted
    over 8 folds; ``--context-folds 4`` gives ``context_bdw4_x``, and with ``--context-boundary-window 2``
    ``context_bd_x``; ``--no-context-boundaries --context-folds 0`` is ``context_a_w2``."""
    from benchmarks.refactor_study import CROSSFIT_FOLDS, VARIANTS
    from detect.fit import FitConfig, context_score_forms

    default, eight = FitConfig(), VARIANTS["context_bdw4_x8"]
    assert [changes for _, changes in context_score_forms(default)] == list(eight.scores)
    assert default.context_folds == eight.crossfit == 8
    chosen, before = VARIANTS["context_bdw4_x"], VARIANTS["context_a_w2"]
    cfg = replace(FitConfig(), context_boundaries=True, context_folds=4)
    assert [changes for _, changes in context_score_forms(cfg)] == list(chosen.scores)
    assert chosen.crossfit == cfg.context_folds == CROSSFIT_FOLDS == 4
    assert eight.scores == chosen.scores
    two = replace(cfg, context_boundary_window=2)
    assert [ContextConfig(**changes) for _, changes in context_score_forms(two)] == [
        ContextConfig(**changes) for changes in VARIANTS["context_bd_x"].scores]
    assert ContextConfig(**chosen.scores[0]) == ContextConfig(**before.context) == ContextConfig()
    old = replace(cfg, context_boundaries=False, context_folds=0)
    assert context_score_forms(old) == [("context", {})] and before.crossfit == 0
    assert [name for name, _ in context_score_forms(replace(cfg, context_border=2))] == [
        "context", "context_border", "context_boundaries"]


def test_world_overrides_take_ranges():
    from benchmarks.refactor_study import _world_overrides

    assert _world_overrides("dim=1024,instances=10/20,duration=2/8") == {
        "dim": "1024", "instances": (10, 20), "duration": (2.0, 8.0)}
    from benchmarks.refactor_study import world_from_overrides
    assert world_from_overrides(_world_overrides("dim=32,noise=0.5,instances=10/20")) == replace(
        FeatureWorld(), dim=32, noise=0.5, instances=(10, 20))        # scalars cast to their field types
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="min/max"):
        _world_overrides("instances=10")
    with pytest.raises(argparse.ArgumentTypeError, match="keys must be among"):
        _world_overrides("colour=3")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=12), st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_auc_is_the_pairwise_win_rate(pos, neg):
    """``context_separation.auc`` (ranks, ties averaged) = the share of (positive, negative) pairs the positive
    wins, ties counting half; small integers so that ties are common."""
    from benchmarks.context_separation import auc

    pos, neg = np.array(pos, dtype=float), np.array(neg, dtype=float)
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(pos, neg) == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([ACTION, CONTEXT, BACKGROUND]), min_size=1, max_size=30))
def test_action_runs_are_the_maximal_runs_of_action_snippets(kinds):
    """``context_separation.action_runs``: (first, last) of each maximal run of ACTION, against a loop."""
    from benchmarks.context_separation import action_runs

    expected, start = [], None
    for t, kind in enumerate(kinds + [BACKGROUND]):
        if kind == ACTION and start is None:
            start = t
        elif kind != ACTION and start is not None:
            expected.append((start, t - 1))
            start = None
    assert [(int(a), int(b)) for a, b in action_runs(np.array(kinds))] == expected
