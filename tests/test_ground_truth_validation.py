"""Ground truth is checked once, by the shared reader (common.annotations.read_database): a malformed entry
is one line naming the file, the video and what is wrong, in every command that reads ground truth
(evaluate detection, refactor train, detect train, detect run --plot --annotations, detect video --render
--annotations), never a traceback; valid databases round-trip through write_annotations / read_database."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.annotations import (AnnotationError, load_ground_truth, read_database, video_instances,
                                write_annotations)
from detect import DetectorConfig, TrainConfig, save_detector, train_detector
from detect.__main__ import main as detect_main
from evaluate.__main__ import main as evaluate_main
from refactor.__main__ import main as refactor_main
from tests.featfiles import detection_dataset

REPO = Path(__file__).resolve().parents[1]

VALID = {"v1": {"subset": "test", "duration": 30.0, "fps": 25,
                "annotations": [{"segment": [1.0, 4.5], "label": "Jump"}]},
         "v2": {"subset": "validation", "annotations": [{"segment": ["2", "3.5"], "label": "Run"}],
                "ambiguous": [[5, 6]]}}


def malformed(**change) -> dict:
    """VALID with video v2's entry changed (a value None: that key removed; key "entry": the whole entry)."""
    db = copy.deepcopy(VALID)
    if "entry" in change:
        db["v2"] = change["entry"]
        return db
    for key, value in change.items():
        if value is None:
            db["v2"].pop(key)
        else:
            db["v2"][key] = value
    return db


# (change to video v2, what the message says after "video 'v2'")
REFUSALS = [
    ({"annotations": "oops"}, ': "annotations" is a string, not a list'),
    ({"annotations": {"segment": [1, 2], "label": "Run"}}, ': "annotations" is an object, not a list'),
    ({"annotations": ["x"]}, ": annotation 0 is a string, not an object"),
    ({"annotations": [{"segment": [1, 2], "label": "Run"}, 7]}, ": annotation 1 is a number, not an object"),
    ({"annotations": [{"segment": [1, 2, 3], "label": "Run"}]},
     ": annotation 0: segment [1, 2, 3] is not [start, end]"),
    ({"annotations": [{"label": "Run"}]}, ": annotation 0: segment None is not [start, end]"),
    ({"annotations": [{"segment": [4, 2], "label": "Run"}]}, ": annotation 0: segment [4, 2] ends before it starts"),
    ({"annotations": [{"segment": [1, 2]}]}, ": annotation 0: missing label"),
    ({"annotations": [{"segment": [1, 2], "label": 3}]}, ": annotation 0: label 3 is a number, not a string"),
    ({"duration": "abc"}, ": \"duration\" 'abc' is not a number"),
    ({"duration": True}, ': "duration" True is not a number'),
    ({"duration": [3]}, ': "duration" [3] is not a number'),
    ({"duration": "inf"}, ": \"duration\" 'inf' is not finite"),
    ({"duration": -1}, ': "duration" -1 is negative'),
    ({"subset": 3}, ': "subset" is a number, not a string'),
    ({"subset": None}, " has no 'subset'"),
    ({"ambiguous": "5 6"}, ': "ambiguous" is a string, not a list'),
    ({"ambiguous": [[6, 5]]}, ": ambiguous segment 0: segment [6, 5] ends before it starts"),
    ({"entry": "test"}, " is a string, not an object"),
    ({"entry": ["test"]}, " is a list, not an object"),
]


@pytest.mark.parametrize("change, reason", REFUSALS, ids=[r for _, r in REFUSALS])
def test_reader_names_file_video_and_what_is_wrong(tmp_path, change, reason):
    path = write_annotations(tmp_path / "GT.json", malformed(**change))
    with pytest.raises(AnnotationError) as info:
        read_database(path)
    assert str(info.value) == f"ground truth {path}: video 'v2'{reason}"
    with pytest.raises(AnnotationError) as info:            # contents given as a dict: no file to name
        read_database({"database": malformed(**change)})
    assert str(info.value) == f"ground truth: video 'v2'{reason}"
    with pytest.raises(AnnotationError) as info:            # the video is checked whatever subset is read
        load_ground_truth(path, "test")
    assert str(info.value) == f"ground truth {path}: video 'v2'{reason}"


def test_null_subset_annotations_and_duration_are_refused():
    db = copy.deepcopy(VALID)
    db["v2"]["subset"] = None
    with pytest.raises(AnnotationError) as info:
        read_database({"database": db})
    assert str(info.value) == "ground truth: video 'v2': \"subset\" is null, not a string"
    db = copy.deepcopy(VALID)
    db["v2"]["annotations"] = None
    with pytest.raises(AnnotationError) as info:
        read_database({"database": db})
    assert str(info.value) == "ground truth: video 'v2': \"annotations\" is null, not a list"
    db = copy.deepcopy(VALID)
    db["v1"]["duration"] = None
    with pytest.raises(AnnotationError) as info:
        read_database({"database": db})
    assert str(info.value) == "ground truth: video 'v1': \"duration\" None is not a number"
    db["v1"]["duration"] = float("nan")
    with pytest.raises(AnnotationError) as info:
        read_database({"database": db})
    assert str(info.value) == "ground truth: video 'v1': \"duration\" nan is not finite"


def test_valid_entries_are_read_as_written():
    db = copy.deepcopy(VALID)
    db["v1"]["duration"] = "30.5"                           # numeric strings, as segment times are read
    db["v3"] = {"subset": "Test"}                           # no annotations: a video without instances
    assert read_database({"database": db}) == db
    gt = load_ground_truth({"database": db}, "test")
    assert gt.videos == ["v1", "v3"] and gt.durations == {"v1": 30.5}
    assert gt.classes == ["Jump"] and gt.other_classes == ["Run"]
    assert video_instances({"database": db}) == {"v1": [(1.0, 4.5, "Jump")], "v2": [(2.0, 3.5, "Run")], "v3": []}


# --- property: valid databases round-trip; one corruption anywhere is named ---------------------------------

times = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def databases(draw) -> dict:
    ids = draw(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=6, unique=True))
    db = {}
    for vid in ids:
        anns = []
        for _ in range(draw(st.integers(0, 4))):
            start, end = sorted((draw(times), draw(times)))
            anns.append({"segment": [start, end], "label": draw(st.text(max_size=8))})
        entry = {"subset": draw(st.sampled_from(["validation", "test", "Training", "TEST"])), "annotations": anns}
        if draw(st.booleans()):
            entry["duration"] = draw(st.floats(min_value=0, max_value=1e5))
        if draw(st.booleans()):
            entry["fps"] = draw(st.sampled_from([25, 29.97, "30"]))          # extra keys are kept, unread
        db[vid] = entry
    return db


@settings(max_examples=100, deadline=None)
@given(databases())
def test_valid_databases_round_trip(db):
    with tempfile.TemporaryDirectory() as folder:
        path = write_annotations(Path(folder) / "gt.json", db, version="x")
        assert read_database(path) == db
        assert video_instances(path) == {vid: [(*map(float, a["segment"]), a["label"]) for a in e["annotations"]]
                                         for vid, e in db.items()}


CORRUPTIONS = [
    (lambda e: e.update(annotations="x"), ': "annotations" is a string, not a list'),
    (lambda e: e.update(duration="abc"), ": \"duration\" 'abc' is not a number"),
    (lambda e: e.update(subset=None), ': "subset" is null, not a string'),
    (lambda e: e.update(annotations=[{"segment": [0, 1], "label": None}]), ": annotation 0: missing label"),
]


@settings(max_examples=100, deadline=None)
@given(databases(), st.data())
def test_one_corrupted_video_is_named(db, data):
    vid = data.draw(st.sampled_from(sorted(db)))
    corrupt, reason = data.draw(st.sampled_from(CORRUPTIONS))
    corrupt(db[vid])
    with pytest.raises(AnnotationError) as info:
        read_database({"database": db})
    assert str(info.value) == f"ground truth: video {vid!r}{reason}"


# --- every command: one line, exit 1 ------------------------------------------------------------------------

BAD_FILES = {
    "annotations-str": (lambda e: e.update(annotations="oops"), '"annotations" is a string, not a list'),
    "duration-abc": (lambda e: e.update(duration="abc"), "\"duration\" 'abc' is not a number"),
    "subset-null": (lambda e: e.update(subset=None), '"subset" is null, not a string'),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(features, annotations, database, detector checkpoint, {name: (malformed file, its reason)})."""
    root = tmp_path_factory.mktemp("gtcheck")
    features, ann, db = detection_dataset(root, videos=4, num_snippets=(30, 40))
    config = DetectorConfig(base_dim=16, boundary_hidden=16, head_hidden=16, dropout=0.0, max_duration=16)
    model, meta = train_detector(features, ann, config, TrainConfig(epochs=0))
    ckpt = save_detector(root / "det.pt", model, meta)
    bad = {}
    for name, (corrupt, reason) in BAD_FILES.items():
        broken = copy.deepcopy(db)
        corrupt(broken["video_001"])
        bad[name] = (write_annotations(root / f"{name}.json", broken), f"video 'video_001': {reason}")
    return features, ann, db, ckpt, bad


def expect_one_line(capsys, code: int, expected_code: int, line: str) -> None:
    captured = capsys.readouterr()
    assert (code, captured.err) == (expected_code, line + "\n")


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_evaluate_detection_refuses_malformed_ground_truth(data, tmp_path, capsys, name):
    features, ann, db, ckpt, bad = data
    gt, reason = bad[name]
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {"video_000": [{"label": "Jump", "score": 1.0, "segment": [1, 2]}]}}))
    code = evaluate_main(["detection", "--ground-truth", str(gt), "--predictions", str(pred), "--subset", "validation",
                          "--out", str(tmp_path / "r.json")])
    expect_one_line(capsys, code, 1, f"evaluate detection: ground truth {gt}: {reason}")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_refactor_train_refuses_malformed_ground_truth(data, tmp_path, capsys, name):
    features, ann, db, ckpt, bad = data
    gt, reason = bad[name]
    code = refactor_main(["train", "--features", str(features), "--annotations", str(gt), "--out",
                          str(tmp_path / "r.pt")])
    expect_one_line(capsys, code, 1, f"refactor train: ground truth {gt}: {reason}")
    assert not (tmp_path / "r.pt").exists()


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_detect_train_refuses_malformed_ground_truth(data, tmp_path, capsys, name):
    features, ann, db, ckpt, bad = data
    gt, reason = bad[name]
    code = detect_main(["train", "--features", str(features), "--annotations", str(gt), "--out", str(tmp_path / "d.pt"),
                        "--epochs", "1"])
    expect_one_line(capsys, code, 1, f"detect train: ground truth {gt}: {reason}")
    assert not (tmp_path / "d.pt").exists()


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_detect_run_plot_refuses_malformed_ground_truth_before_any_work(data, tmp_path, capsys, name):
    features, ann, db, ckpt, bad = data
    gt, reason = bad[name]
    out, figs = tmp_path / "p.json", tmp_path / "figs"
    code = detect_main(["run", "--features", str(features), "--checkpoint", str(ckpt), "--out", str(out),
                        "--plot", str(figs), "--plot-videos", "video_001", "--annotations", str(gt)])
    expect_one_line(capsys, code, 1, f"detect run: ground truth {gt}: {reason}")
    assert not out.exists() and not figs.exists()


def test_detect_video_render_refuses_malformed_ground_truth_before_any_work(data, tmp_path, capsys):
    features, ann, db, ckpt, bad = data
    gt, reason = bad["annotations-str"]
    code = detect_main(["video", str(tmp_path / "clip.mp4"), "--checkpoint", str(ckpt), "--out",
                        str(tmp_path / "p.json"), "--render", str(tmp_path / "r"), "--annotations", str(gt)])
    expect_one_line(capsys, code, 1, f"detect video: ground truth {gt}: {reason}")
    assert not (tmp_path / "p.json").exists()


def test_detect_run_plot_draws_the_shared_readers_instances(data, tmp_path):
    """Segment times given as numeric strings (read as the official evaluator's float() reads them) are
    drawn as numbers: the figure's ground truth comes from common.annotations.video_instances."""
    features, ann, db, ckpt, bad = data
    spelled = copy.deepcopy(db)
    for entry in spelled.values():
        for a in entry["annotations"]:
            a["segment"] = [str(t) for t in a["segment"]]
    gt = write_annotations(tmp_path / "strings.json", spelled)
    code = detect_main(["run", "--features", str(features), "--checkpoint", str(ckpt), "--out",
                        str(tmp_path / "p.json"), "--plot", str(tmp_path / "figs"), "--plot-videos", "video_001",
                        "--annotations", str(gt)])
    assert code == 0
    assert (tmp_path / "figs" / "boundaries_video_001.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_cli_subprocess_one_line(data, tmp_path):
    """The same through `python -m evaluate` (no traceback, one line, exit 1)."""
    features, ann, db, ckpt, bad = data
    gt, reason = bad["annotations-str"]
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {}}))
    proc = subprocess.run([sys.executable, "-m", "evaluate", "detection", "--ground-truth", str(gt), "--predictions",
                           str(pred), "--subset", "test"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (1, f"evaluate detection: ground truth {gt}: {reason}\n")
