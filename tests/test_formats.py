"""The format modules of ``common`` and ``extract.features``: round trips, refusals, atomicity, and
segment geometry (one implementation for NumPy and torch)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common.annotations import (HELDOUT, AnnotationError, default_subsets, hold_out, load_ground_truth, read_database,
                                same_subset, subset_videos, write_annotations)
from common.checkpoint import checkpoint_kind, load_checkpoint, save_checkpoint
from common.fileio import TMP_MARK, atomic_path
from common.predictions import load_predictions, write_predictions
from common.segments import segment_intersection, segment_iou
from extract.features import (FORMAT_VERSION, FeatureFileError, FeatureWriter, has_spatial, read_features,
                              read_spatial, write_features)

# --- segments -----------------------------------------------------------------------------------------------

def test_segment_iou_hand_cases():
    a = np.array([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0], [5.0, 5.0], [3.0, 3.0]])
    b = np.array([[5.0, 15.0], [0.0, 10.0], [20.0, 30.0], [5.0, 5.0], [0.0, 6.0]])
    np.testing.assert_array_equal(segment_iou(a, b), [5 / 15, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(segment_intersection(a, b), [5.0, 10.0, 0.0, 0.0, 0.0])


segments = st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(0, 1e3)).map(lambda t: (t[0], t[0] + t[1])),
                    min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(segments, segments)
def test_segment_iou_numpy_equals_torch_and_brute_force(a, b):
    a, b = np.array(a), np.array(b)
    ours = segment_iou(a[:, None], b[None])
    theirs = segment_iou(torch.from_numpy(a)[:, None], torch.from_numpy(b)[None]).numpy()
    np.testing.assert_array_equal(ours, theirs)
    for i, (s1, e1) in enumerate(a):
        for j, (s2, e2) in enumerate(b):
            inter = max(0.0, min(e1, e2) - max(s1, s2))
            union = (e1 - s1) + (e2 - s2) - inter
            assert ours[i, j] == (inter / union if union > 0 else 0.0)
    assert np.all((ours >= 0) & (ours <= 1))
    np.testing.assert_array_equal(ours, segment_iou(b[None], a[:, None]))       # symmetric


# --- checkpoints --------------------------------------------------------------------------------------------

class Oops(ValueError):
    pass


def test_checkpoint_round_trip_and_kind(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "detector", 3, {"config": {"a": 1}, "w": torch.arange(3.0)})
    ckpt = load_checkpoint(path, Oops, "detector checkpoint", kind="detector", format_version=3)
    assert ckpt["kind"] == "detector" and ckpt["format_version"] == 3 and ckpt["config"] == {"a": 1}
    assert torch.equal(ckpt["w"], torch.arange(3.0))
    assert checkpoint_kind(path, Oops) == "detector"
    with pytest.raises(Oops, match="its kind is 'detector', expected 'refactor'"):
        load_checkpoint(path, Oops, "RefactorNet checkpoint", kind="refactor")
    with pytest.raises(Oops, match="of format 4"):
        load_checkpoint(path, Oops, "detector checkpoint", kind="detector", format_version=4)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]                        # nothing left beside it


def test_checkpoint_legacy_kindless_and_refusals(tmp_path):
    torch.save({"format_version": 1, "state_dict": {}}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt", Oops, "x", kind="refactor", legacy_kindless=True)["format_version"] == 1
    assert checkpoint_kind(tmp_path / "old.pt", Oops) is None
    with pytest.raises(Oops, match="its kind is None"):
        load_checkpoint(tmp_path / "old.pt", Oops, "x", kind="refactor")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Oops, match="is not a x"):
        load_checkpoint(tmp_path / "junk.pt", Oops, "x")
    with pytest.raises(Oops, match="no such x"):
        load_checkpoint(tmp_path / "missing.pt", Oops, "x")
    with pytest.raises(ValueError, match="must not set"):
        save_checkpoint(tmp_path / "m.pt", "k", 1, {"kind": "other"})


# --- annotations and predictions ----------------------------------------------------------------------------

DB = {"v1": {"subset": "validation", "duration": 30.0,
             "annotations": [{"segment": [1.0, 4.5], "label": "Jump"}, {"segment": [10, 12], "label": "Run"}]},
      "v2": {"subset": "test", "duration": 20.0, "annotations": [{"segment": [2.0, 3.0], "label": "Run"}]},
      "v3": {"subset": "validation", "annotations": []}}


def test_annotations_round_trip(tmp_path):
    path = write_annotations(tmp_path / "gt.json", DB, version="x")
    assert json.loads(path.read_text()) == {"database": DB, "version": "x"}
    assert read_database(path) == DB
    assert read_database({"v1": DB["v1"]}) == {"v1": DB["v1"]}             # a bare video mapping is accepted
    assert subset_videos(path) == {"validation": ["v1", "v3"], "test": ["v2"]}
    gt = load_ground_truth(path, "validation")
    assert gt.classes == ["Jump", "Run"] and gt.videos == ["v1", "v3"]
    np.testing.assert_array_equal(gt.segments, [[1.0, 4.5], [10.0, 12.0]])
    assert gt.durations == {"v1": 30.0}


def test_subsets_match_without_case_and_defaults_follow_the_dataset():
    db = {"a": {"subset": "Validation", "annotations": [{"segment": [1, 2], "label": "x"}]},
          "b": {"subset": "TEST", "annotations": [{"segment": [1, 2], "label": "x"}]}}
    assert same_subset("Validation", "validation") and not same_subset("val", "validation")
    assert load_ground_truth(db, "validation").videos == ["a"] == load_ground_truth(db, "VALIDATION").videos
    assert default_subsets(db) == ("Validation", "TEST")                       # THUMOS14: validation / test
    anet = {"a": {"subset": "training"}, "b": {"subset": "validation"}, "c": {"subset": "testing"}}
    assert default_subsets(anet) == ("training", "validation")                 # ActivityNet: training / validation


@pytest.mark.parametrize("data, message", [
    ({"database": {"v": {"annotations": []}}}, "has no 'subset'"),
    ({"database": []}, "must be"),
    ({"database": {"v": {"subset": "test", "annotations": [{"segment": [3, 1], "label": "a"}]}}}, "ends before"),
    ({"database": {"v": {"subset": "test", "annotations": [{"segment": [1, 3]}]}}}, "missing label"),
    ({"database": {"v": {"subset": "test", "annotations": [{"segment": [1, 3, 5], "label": "a"}]}}},
     r"not \[start, end\]"),                                                 # never silently the first two
    ({"database": {"v": {"subset": "test", "ambiguous": [[2, 1]], "annotations": []}}}, "ambiguous segment 0"),
    ({"version": "1", "results": {"v": []}, "external_data": {}}, "has no 'database'.*a predictions file"),
])
def test_annotations_refusals(data, message):
    with pytest.raises(AnnotationError, match=message):
        load_ground_truth(data, "test")


@given(sizes=st.lists(st.integers(0, 11), min_size=1, max_size=5), every=st.integers(2, 5),
       unlabelled=st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_hold_out_takes_every_nth_video_of_each_class(sizes, every, unlabelled):
    """hold_out moves n // every videos of each class with n videos (at least one when n >= 2, never
    one when n = 1), spread over the class in sorted order, and changes nothing else."""
    db = {f"v{k}_{i:02d}": {"subset": "Validation", "annotations": [{"label": f"c{k}", "segment": [0, 1]}]}
          for k, n in enumerate(sizes) for i in range(n)}
    db |= {f"u{i}": {"subset": "validation", "annotations": []} for i in range(unlabelled)}
    db |= {"t0": {"subset": "test", "annotations": [{"label": "c0", "segment": [0, 1]}]}}
    before = json.loads(json.dumps(db))
    out, held = hold_out(db, "validation", every)
    assert db == before and held == sorted(held) and set(out) == set(db)
    for k, n in enumerate(sizes):
        mine = [f"v{k}_{i:02d}" for i in range(n)]
        picked = [v for v in mine if v in held]
        assert len(picked) == (n // every or (1 if n > 1 else 0))
        assert n // every == 0 or picked == mine[every - 1::every]
        assert n == 0 or len(picked) < n                           # every class keeps a training video
    assert {v for v in out if out[v]["subset"] == HELDOUT} == set(held)
    assert all(out[v] == db[v] for v in db if v not in held)
    assert all(out[v] | {"subset": db[v]["subset"]} == db[v] for v in held)
    if held:
        with pytest.raises(AnnotationError, match="already use it"):
            hold_out(out, "validation", every)             # the held-out subset name is taken


@given(sizes=st.lists(st.integers(0, 11), min_size=1, max_size=5), every=st.integers(2, 5))
@settings(max_examples=60, deadline=None)
def test_hold_out_folds_hold_each_video_out_once(sizes, every):
    """The ``every`` folds of hold_out: fold 0 is the plain split; a class of n >= every videos has each
    video held out in exactly one fold; a smaller class (n >= 2) gives one video per fold and keeps the
    others; a single video is never held out."""
    db = {f"v{k}_{i:02d}": {"subset": "validation", "annotations": [{"label": f"c{k}", "segment": [0, 1]}]}
          for k, n in enumerate(sizes) for i in range(n)}
    folds = [hold_out(db, "validation", every, fold=f)[1] for f in range(every)]
    assert folds[0] == hold_out(db, "validation", every)[1]
    for k, n in enumerate(sizes):
        mine = [f"v{k}_{i:02d}" for i in range(n)]
        per_fold = [[v for v in mine if v in held] for held in folds]
        if n >= every:
            assert sorted(v for picked in per_fold for v in picked) == mine          # each exactly once
        else:
            assert all(len(picked) == (1 if n > 1 else 0) for picked in per_fold)
    with pytest.raises(ValueError, match="fold must be in"):
        hold_out(db, "validation", every, fold=every)


def test_predictions_round_trip(tmp_path):
    gt = load_ground_truth(DB, "validation")
    results = {"v1": [{"label": "Run", "score": 0.9, "segment": [9.5, 12.0]},
                      {"label": "Jump", "score": 0.4, "segment": [1.0, 5.0]}], "v9": []}
    path = write_predictions(tmp_path / "p.json", results, version="t 1", external_data={"k": 1})
    assert json.loads(path.read_text()) == {"version": "t 1", "results": results, "external_data": {"k": 1}}
    pred = load_predictions(path, gt)
    np.testing.assert_array_equal(pred.labels, [1, 0])
    np.testing.assert_array_equal(pred.scores, [0.9, 0.4])
    np.testing.assert_array_equal(pred.segments, [[9.5, 12.0], [1.0, 5.0]])
    assert pred.videos[:2] == ["v1", "v3"] and pred.unknown_videos == [] and pred.reversed_segments == 0
    # a reversed segment is kept as written and counted (the evaluator scores it as a false positive)
    results["v1"].append({"label": "Run", "score": 0.1, "segment": [7.0, 6.5]})
    pred = load_predictions(write_predictions(tmp_path / "p.json", results, version="t"), gt)
    assert pred.reversed_segments == 1
    np.testing.assert_array_equal(pred.segments[-1], [7.0, 6.5])


# --- feature files ------------------------------------------------------------------------------------------

ATTRS = {"fps": 16.0, "window": 16, "stride": 8, "num_frames": 40, "duration": 2.5, "source": "/v/a.mp4",
         "weights": {"rgb": {"id": "t", "sha256": None}}, "flow_method": "none"}


def test_features_round_trip_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    rgb, flow = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    maps = rng.normal(size=(4, 6, 2, 2)).astype(np.float16)
    path = write_features(tmp_path / "a.h5", {"flow": flow, "rgb": rgb}, ATTRS | {"extra": "kept"},
                          spatial={"rgb": maps, "flow": maps})
    ff = read_features(path)
    assert ff.streams == ("rgb", "flow")                                     # CONVENTIONS order, not dict order
    np.testing.assert_array_equal(ff.features, np.concatenate([rgb, flow], axis=1))
    assert ff.attrs["format_version"] == FORMAT_VERSION and ff.attrs["extra"] == "kept"
    assert ff.attrs["weights"] == ATTRS["weights"]
    np.testing.assert_array_equal(ff.times, (np.arange(4) * 8 + 8) / 16.0)
    assert has_spatial(path) and has_spatial(path, "flow") and not has_spatial(tmp_path / "none.h5")
    np.testing.assert_array_equal(read_spatial(path, "rgb", np.array([2, 0])), maps[[2, 0]].astype(np.float32))
    with pytest.raises(FeatureFileError, match="no action_spatial"):
        read_spatial(path, "action", np.array([0]))


def test_feature_writer_rows_and_refusals(tmp_path):
    with FeatureWriter(tmp_path / "w.h5", 4, ("rgb",), 3) as w:
        w.write("rgb", slice(0, 2), np.ones((2, 3)))
        w.write("rgb", slice(2, 4), 2 * np.ones((2, 3)))
        w.set_attrs(**ATTRS)
    np.testing.assert_array_equal(read_features(tmp_path / "w.h5").features[:, 0], [1, 1, 2, 2])
    with pytest.raises(FeatureFileError, match="not set"):
        write_features(tmp_path / "x.h5", {"rgb": np.ones((4, 3))}, {"fps": 16.0})
    with pytest.raises(FeatureFileError, match="attributes give 4"):
        write_features(tmp_path / "y.h5", {"rgb": np.ones((5, 3))}, ATTRS)
    with pytest.raises(FeatureFileError, match="among"):
        write_features(tmp_path / "z.h5", {"depth": np.ones((4, 3))}, ATTRS)
    with pytest.raises(RuntimeError, match="boom"), FeatureWriter(tmp_path / "b.h5", 4, ("rgb",), 3) as w:
        w.set_attrs(**ATTRS)
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]            # failures leave nothing behind
    with h5py.File(tmp_path / "w.h5") as f:
        assert f["rgb"].dtype == np.float32


def test_atomic_path_removes_temporaries_of_dead_writers_only(tmp_path):
    dead = tmp_path / f".out.json{TMP_MARK}999999"               # a writer killed with SIGKILL
    alive = tmp_path / f".out.json{TMP_MARK}{os.getppid()}"      # a writer still running
    other = tmp_path / f".other.json{TMP_MARK}999999"            # another output's
    for p in (dead, alive, other):
        p.write_text("half")
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert not dead.exists() and alive.exists() and other.exists()
    with atomic_path(tmp_path / "other.json", clean_stale=False) as tmp:
        tmp.write_text("{}")
    assert other.exists()                                        # shared-folder writers clean up themselves
