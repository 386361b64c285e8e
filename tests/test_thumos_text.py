"""THUMOS14's original annotation folder (``<Class>_val.txt`` / ``<Class>_test.txt``) as ground truth:
a hand-made folder with every oddity of the real files, the real THUMOS14 annotations written out as
text files (same database, same arrays, same mAP as the JSON), refusals, and every reader on top."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.annotations import (AnnotationError, default_subsets, ground_truth_digest, load_ground_truth,
                                read_database, subset_videos, write_thumos_folder)
from common.predictions import load_predictions
from evaluate.detection import evaluate_detection

REPO = Path(__file__).resolve().parents[1]
THUMOS_TIOU = np.array([0.3, 0.4, 0.5, 0.6, 0.7])


def write(path: Path, text: str, newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())


@pytest.fixture
def hand_folder(tmp_path) -> Path:
    """THUMOS14's layout: validation and test folders side by side, CRLF endings in one file, blank
    lines, runs of spaces and tabs, an Ambiguous file, a video annotated only as ambiguous, files
    that are not annotations."""
    root = tmp_path / "th14"
    write(root / "validation" / "annotation" / "HighJump_val.txt",
          "video_validation_0000002 10.5 14.2\nvideo_validation_0000001  3.0\t4.25\n\n")
    write(root / "validation" / "annotation" / "BaseballPitch_val.txt",
          "video_validation_0000002 1.0 2.0\r\nvideo_validation_0000002 0.1 0.3\r\n", newline="")
    write(root / "validation" / "annotation" / "Ambiguous_val.txt", "video_validation_0000001 7.0 8.0\n")
    write(root / "test" / "annotation" / "HighJump_test.txt", "video_test_0000010 5.0 9.5\n")
    write(root / "test" / "annotation" / "Ambiguous_test.txt",
          "video_test_0000010 1.0 2.0\nvideo_test_0001292 3.0 4.0\nvideo_test_0000010 0.5 0.7\n")
    write(root / "test" / "detclasslist.txt", "7 BaseballPitch\n")         # not an annotation file
    write(root / "README.md", "THUMOS14\n")
    return root


# the same ground truth as JSON, in the order the folder gives (videos sorted; per video: classes in
# sorted file-name order, then lines)
HAND_DB = {
    "video_test_0000010": {"subset": "test", "annotations": [{"segment": [5.0, 9.5], "label": "HighJump"}],
                           "ambiguous": [[1.0, 2.0], [0.5, 0.7]]},
    "video_test_0001292": {"subset": "test", "annotations": [], "ambiguous": [[3.0, 4.0]]},
    "video_validation_0000001": {"subset": "validation",
                                 "annotations": [{"segment": [3.0, 4.25], "label": "HighJump"}],
                                 "ambiguous": [[7.0, 8.0]]},
    "video_validation_0000002": {"subset": "validation",
                                 "annotations": [{"segment": [1.0, 2.0], "label": "BaseballPitch"},
                                                 {"segment": [0.1, 0.3], "label": "BaseballPitch"},
                                                 {"segment": [10.5, 14.2], "label": "HighJump"}]},
}


def assert_same_ground_truth(a, b) -> None:
    assert a.classes == b.classes and a.videos == b.videos and a.durations == b.durations
    for name in ("video", "segments", "labels"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert a.ambiguous.keys() == b.ambiguous.keys()
    for vid in a.ambiguous:
        np.testing.assert_array_equal(a.ambiguous[vid], b.ambiguous[vid])


def test_hand_made_folder_reads_as_the_equivalent_json(hand_folder, tmp_path):
    db = read_database(hand_folder)
    assert db == HAND_DB
    assert list(db) == list(HAND_DB)                                         # order too
    (tmp_path / "gt.json").write_text(json.dumps({"database": HAND_DB}))
    for subset in ("validation", "test", "Validation"):
        assert_same_ground_truth(load_ground_truth(hand_folder, subset),
                                 load_ground_truth(tmp_path / "gt.json", subset))
    gt = load_ground_truth(hand_folder, "validation")
    assert gt.classes == ["HighJump", "BaseballPitch"]                       # first appearance (video 1 first)
    np.testing.assert_array_equal(gt.segments, [[3.0, 4.25], [1.0, 2.0], [0.1, 0.3], [10.5, 14.2]])
    np.testing.assert_array_equal(gt.labels, [0, 1, 1, 0])
    np.testing.assert_array_equal(gt.ambiguous["video_validation_0000001"], [[7.0, 8.0]])
    test = load_ground_truth(hand_folder, "test")
    assert test.videos == ["video_test_0000010", "video_test_0001292"]       # the ambiguous-only video is listed
    assert len(test.labels) == 1                                             # ambiguous segments are no instances
    assert subset_videos(hand_folder) == {"test": ["video_test_0000010", "video_test_0001292"],
                                          "validation": ["video_validation_0000001", "video_validation_0000002"]}
    assert default_subsets(hand_folder) == ("validation", "test")
    # the folder of one subset alone
    assert list(read_database(hand_folder / "test")) == ["video_test_0000010", "video_test_0001292"]


def test_writer_round_trip_and_digest(hand_folder, tmp_path):
    out = tmp_path / "written"
    files = write_thumos_folder(out, hand_folder)
    assert [f.name for f in files] == ["Ambiguous_test.txt", "Ambiguous_val.txt", "BaseballPitch_val.txt",
                                       "HighJump_test.txt", "HighJump_val.txt"]
    assert (out / "BaseballPitch_val.txt").read_text() == ("video_validation_0000002 1.0 2.0\n"
                                                           "video_validation_0000002 0.1 0.3\n")
    assert read_database(out) == HAND_DB
    assert sorted(p.name for p in out.iterdir()) == [f.name for f in files]   # no temporary file left
    before = ground_truth_digest(out)
    assert before == ground_truth_digest(out) and len(before) == 64
    write(out / "HighJump_val.txt", "video_validation_0000001 3.0 4.5\n")
    assert ground_truth_digest(out) != before
    with pytest.raises(AnnotationError, match="subset 'training' has no THUMOS14 file"):
        write_thumos_folder(tmp_path / "x", {"v": {"subset": "training", "annotations": []}})


@pytest.mark.parametrize("files, message", [
    ({"A_val.txt": "v1 1.0\n"}, r"A_val.txt:1: expected 'video start end'"),
    ({"A_val.txt": "v1 1.0 2.0\nv2 1.0 2.0 3.0\n"}, r"A_val.txt:2: expected 'video start end'"),
    ({"A_val.txt": "v1 x 2.0\n"}, r"A_val.txt:1: segment .* is not \[start, end\]"),
    ({"A_val.txt": "v1 nan 2.0\n"}, r"A_val.txt:1: segment .* is not finite"),
    ({"A_val.txt": "v1 3.0 2.0\n"}, r"A_val.txt:1: segment .* ends before it starts"),
    ({"A_val.txt": "v1 1 2\n", "B_test.txt": "v1 1 2\n"}, "also annotated in subset"),
    ({"a/A_val.txt": "v1 1 2\n", "b/A_val.txt": "v2 1 2\n"}, "both annotate class 'A'"),
    ({"notes.txt": "v1 1 2\n", "A_train.txt": "v1 1 2\n"}, "holds no THUMOS14 annotation file"),
])
def test_folder_refusals(tmp_path, files, message):
    for name, text in files.items():
        write(tmp_path / "gt" / name, text)
    with pytest.raises(AnnotationError, match=message):
        load_ground_truth(tmp_path / "gt", "validation")


def test_a_file_that_is_no_ground_truth_gets_a_clear_error(tmp_path):
    predictions = {"version": "x", "results": {"v": [{"label": "A", "score": 1.0, "segment": [0, 1]}]},
                   "external_data": {}}
    (tmp_path / "pred.json").write_text(json.dumps(predictions))
    with pytest.raises(AnnotationError, match=r"has no 'database' and is not a mapping of video ids.*"
                                              r"'version', 'results', 'external_data' \(a predictions file\?\)"):
        load_ground_truth(tmp_path / "pred.json", "test")
    with pytest.raises(AnnotationError, match="top-level keys are 'videos'"):
        read_database({"videos": {"v": {"annotations": []}}})
    with pytest.raises(AnnotationError, match="not a JSON list"):
        (tmp_path / "list.json").write_text("[1, 2]")
        read_database(tmp_path / "list.json")
    with pytest.raises(AnnotationError, match="video 'w' has no 'subset'"):           # a video mapping, one bad
        read_database({"v": {"subset": "test"}, "w": {"annotations": []}})


# --- the real THUMOS14 annotations -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thumos(shared_data, tmp_path_factory):
    """(the JSON's database, a folder of THUMOS14 text files written from it by hand, here)."""
    data = json.loads((shared_data / "thumos14" / "thumos14.json").read_text())
    database = data.get("database", data)
    folder = tmp_path_factory.mktemp("thumos14_text")
    lines: dict[str, list[str]] = {}
    for vid, entry in database.items():
        suffix = {"validation": "val", "test": "test"}[entry["subset"]]
        for ann in entry["annotations"]:
            s, e = ann["segment"]
            lines.setdefault(f"{ann['label']}_{suffix}.txt", []).append(f"{vid} {float(s)!r} {float(e)!r}\n")
    for name, text in lines.items():
        (folder / name).write_text("".join(text))
    return database, folder


def folder_order(database: dict) -> dict:
    """``database`` as the folder gives it: subset and annotations only, videos sorted, each video's
    instances by class name (stable: the JSON's order within a class)."""
    return {vid: {"subset": database[vid]["subset"],
                  "annotations": sorted(({"segment": [float(x) for x in a["segment"]], "label": a["label"]}
                                         for a in database[vid]["annotations"]), key=lambda a: a["label"])}
            for vid in sorted(database)}


def test_real_thumos14_as_text_files_equals_the_json(thumos):
    database, folder = thumos
    assert len(list(folder.iterdir())) == 40                                  # 20 classes x 2 subsets
    assert read_database(folder) == folder_order(database)
    for subset in ("validation", "test"):
        from_json = load_ground_truth(database, subset)
        from_text = load_ground_truth(folder, subset)
        # exactly equal arrays against the JSON in the folder's order
        assert_same_ground_truth(from_text, load_ground_truth(folder_order(database), subset))
        # against the JSON in its own order: the same videos, classes and instances; only the order
        # (hence the class numbering) differs, and durations are not in text files
        assert sorted(from_text.videos) == sorted(from_json.videos)
        assert sorted(from_text.classes) == sorted(from_json.classes)

        def instances(gt):
            return sorted((gt.videos[v], float(s), float(e), gt.classes[c])
                          for v, (s, e), c in zip(gt.video, gt.segments, gt.labels))

        assert instances(from_text) == instances(from_json)
    test = load_ground_truth(folder, "test")
    assert len(test.classes) == 20 and len(test.labels) == 3358 and len(test.videos) == 212


def test_real_thumos14_text_files_give_the_jsons_map(thumos):
    """Random detections on every test video: the same AP per class (matched by name) from either."""
    database, folder = thumos
    rng = np.random.default_rng(0)
    classes = sorted({a["label"] for e in database.values() for a in e["annotations"]})
    results = {}
    for vid, entry in database.items():
        if entry["subset"] != "test":
            continue
        n = 30
        start = rng.uniform(0, entry["duration"], n)
        results[vid] = [{"label": classes[int(c)], "score": float(p), "segment": [float(a), float(a + length)]}
                        for a, length, c, p in zip(start, rng.uniform(0.5, 15, n), rng.integers(0, 20, n),
                                                   rng.random(n))]
    # plus the ground truth itself, so that every class has true positives
    for vid, entry in database.items():
        if entry["subset"] == "test":
            results[vid] += [{"label": a["label"], "score": float(rng.random()), "segment": a["segment"]}
                             for a in entry["annotations"][::3]]
    scored = {}
    for name, source in (("json", database), ("text", folder)):
        gt = load_ground_truth(source, "test")
        scored[name] = evaluate_detection(gt, load_predictions({"results": results}, gt), THUMOS_TIOU).to_json()
    assert scored["json"]["per_class_AP"] == scored["text"]["per_class_AP"]
    np.testing.assert_allclose(scored["json"]["mAP"], scored["text"]["mAP"], rtol=1e-14, atol=0)
    assert 0.05 < scored["json"]["average_mAP"] < 0.95


def test_evaluate_cli_takes_a_folder(thumos, tmp_path):
    database, folder = thumos
    perfect = {"version": "x", "external_data": {},
               "results": {vid: [{"label": a["label"], "score": 1.0, "segment": a["segment"]}
                                 for a in e["annotations"]] for vid, e in database.items() if e["subset"] == "test"}}
    (tmp_path / "pred.json").write_text(json.dumps(perfect))
    proc = subprocess.run([sys.executable, "-m", "evaluate", "detection", "--ground-truth", str(folder),
                           "--predictions", str(tmp_path / "pred.json"), "--subset", "test", "--quiet",
                           "--out", str(tmp_path / "r.json")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["average_mAP"] == 1.0
