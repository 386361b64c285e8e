"""python -m extract.npy: community (T, C) .npy features in and out of feature files. Round trips are
bit-exact (raw and refactored), snippet times are exactly CONVENTIONS.md's, fps comes from the
annotations or --fps, and a batch lists its bad files, finishes the good ones and exits 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.annotations import write_annotations, write_thumos_folder
from common.fileio import TMP_MARK
from extract.features import read_features, write_features
from extract.npy import NpyError, NpyImportConfig, export_folder, import_folder, import_npy, main
from extract.snippets import SnippetPlan

REPO = Path(__file__).resolve().parents[1]


def tricky(rng, t: int, c: int) -> np.ndarray:
    """float32 (t, c) with bit patterns that a float conversion on the way would change: -0.0,
    subnormals, the extremes, values one ulp apart."""
    a = rng.normal(size=(t, c)).astype(np.float32)
    special = np.array([-0.0, 1e-45, -1e-45, 1.1754942e-38, np.finfo(np.float32).max, np.finfo(np.float32).min,
                        np.nextafter(np.float32(1), np.float32(2)), 1.0], dtype=np.float32)
    flat = a.reshape(-1)
    flat[: min(len(flat), len(special))] = special[: len(flat)]
    return a


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and a.tobytes() == b.tobytes()


# ActionFormer's THUMOS14 JSON layout: "database", capitalised subsets, fps per video, extra keys
ACTIONFORMER_GT = {"version": "Thumos14-30fps", "database": {
    "video_validation_0000051": {"subset": "Validation", "duration": 169.95, "fps": 30.0, "annotations": [
        {"label": "BaseballPitch", "segment": [4.7, 8.2], "segment(frames)": [141.0, 246.0], "label_id": 7}]},
    "video_test_0000004": {"subset": "Test", "duration": 33.5, "fps": 25.0, "annotations": [
        {"label": "CricketBowling", "segment": [0.2, 1.1], "segment(frames)": [5.0, 27.0], "label_id": 5},
        {"label": "BaseballPitch", "segment": [3.0, 4.0], "segment(frames)": [75.0, 100.0], "label_id": 7}]},
    "video_test_0000007": {"subset": "Test", "duration": 20.0, "annotations": []},      # no fps: --fps
}}


@pytest.fixture
def npy_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "npy"
    folder.mkdir()
    arrays = {"video_validation_0000051": tricky(rng, 100, 2048), "video_test_0000004": tricky(rng, 1, 2048),
              "video_test_0000007": tricky(rng, 7, 2048)}
    for vid, a in arrays.items():
        np.save(folder / f"{vid}.npy", a)
    write_annotations(tmp_path / "gt.json", ACTIONFORMER_GT["database"], version=ACTIONFORMER_GT["version"])
    return folder, arrays, tmp_path / "gt.json"


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "extract.npy", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True)


def test_import_export_round_trip_through_the_cli(npy_dir, tmp_path):
    folder, arrays, gt = npy_dir
    proc = run_cli("import", folder, "--annotations", gt, "--out", tmp_path / "feats", "--fps", 29.97)
    assert proc.returncode == 0, proc.stderr
    assert "3 written, 0 skipped" in proc.stdout
    fps = {"video_validation_0000051": 30.0, "video_test_0000004": 25.0, "video_test_0000007": 29.97}
    duration = {"video_validation_0000051": 169.95, "video_test_0000004": 33.5, "video_test_0000007": 20.0}
    for vid, a in arrays.items():
        ff = read_features(tmp_path / "feats" / f"{vid}.h5")
        t = len(a)
        assert ff.streams == ("rgb", "flow")                                     # C = 2048: RGB first, then flow
        assert same_bits(ff.features, a)
        assert same_bits(read_features(tmp_path / "feats" / f"{vid}.h5", ("flow",)).features,
                         np.ascontiguousarray(a[:, 1024:]))
        assert (ff.fps, ff.window, ff.stride) == (fps[vid], 16, 4)
        assert ff.num_frames == (t - 1) * 4 + 16 and SnippetPlan(ff.num_frames, 16, 4).num_snippets == t
        assert ff.duration == duration[vid]
        np.testing.assert_array_equal(ff.times, [(i * 4 + 16 / 2) / fps[vid] for i in range(t)])
        assert ff.attrs["imported_from"] == "npy" and ff.attrs["source"] == str(folder / f"{vid}.npy")
        assert ff.attrs["weights"]["rgb"]["verified"] is False
    proc = run_cli("export", tmp_path / "feats", "--out", tmp_path / "back")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == sorted(f"{v}.npy" for v in arrays)
    for vid, a in arrays.items():
        assert same_bits(np.load(tmp_path / "back" / f"{vid}.npy"), a)
    # a rerun skips what exists
    proc = run_cli("import", folder, "--annotations", gt, "--out", tmp_path / "feats", "--fps", 29.97)
    assert proc.returncode == 0 and "0 written, 3 skipped" in proc.stdout, proc.stdout


def test_without_annotations_every_video_needs_fps_and_duration_is_the_covered_span(npy_dir, tmp_path):
    folder, arrays, _ = npy_dir
    report = import_folder(folder, tmp_path / "feats", NpyImportConfig(fps=30.0, window=16, stride=4))
    assert len(report.written) == 3 and not report.failed
    ff = read_features(tmp_path / "feats" / "video_test_0000007.h5")
    assert ff.duration == (6 * 4 + 16) / 30.0
    with pytest.raises(NpyError, match="no fps"):
        import_npy(folder / "video_test_0000007.npy", tmp_path / "x", NpyImportConfig())


@pytest.mark.parametrize("c, streams, expected", [
    (2048, "auto", ("rgb", "flow")), (512, "auto", ("rgb",)), (2048, "rgb", ("rgb",)), (2048, "flow", ("flow",)),
    (768, "rgb,flow", ("rgb", "flow")), (1024, "action,cooccurrence", ("action", "cooccurrence")),
])
def test_stream_layouts(tmp_path, c, streams, expected):
    a = tricky(np.random.default_rng(c), 5, c)
    np.save(tmp_path / "v.npy", a)
    ff = read_features(import_npy(tmp_path / "v.npy", tmp_path / "f", NpyImportConfig(fps=25.0, streams=streams)))
    assert ff.streams == expected and same_bits(ff.features, a)
    if len(expected) == 2:
        assert same_bits(read_features(tmp_path / "f" / "v.h5", expected[:1]).features,
                         np.ascontiguousarray(a[:, : c // 2]))
    assert ff.attrs["flow_method"] == ("unknown" if "flow" in expected else "none")


@pytest.mark.parametrize("streams", ["depth", "flow,rgb", "rgb,rgb", "rgb,flow,action", ""])
def test_bad_stream_settings(streams):
    with pytest.raises(NpyError, match="streams"):
        NpyImportConfig(streams=streams)


def test_refactored_files_export_action_then_cooccurrence_and_come_back(tmp_path):
    rng = np.random.default_rng(1)
    action, cooc = tricky(rng, 9, 1024), rng.normal(size=(9, 1024)).astype(np.float32)
    attrs = {"fps": 25.0, "window": 16, "stride": 4, "num_frames": 48, "duration": 1.92, "source": "/v.mp4",
             "weights": {}, "flow_method": "tvl1", "refactor": "ckpt"}
    write_features(tmp_path / "feats" / "v.h5", {"cooccurrence": cooc, "action": action}, attrs)
    report = export_folder(tmp_path / "feats", tmp_path / "npy")
    assert report.written == [tmp_path / "npy" / "v.npy"]
    out = np.load(tmp_path / "npy" / "v.npy")
    assert same_bits(out, np.concatenate([action, cooc], axis=1))                 # f' = action ⊕ co-occurrence
    back = read_features(import_npy(tmp_path / "npy" / "v.npy", tmp_path / "again",
                                    NpyImportConfig(fps=25.0, streams="action,cooccurrence")))
    assert back.streams == ("action", "cooccurrence") and same_bits(back.features, out)
    assert back.num_frames == 48 and np.array_equal(back.times, read_features(tmp_path / "feats" / "v.h5").times)


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 40), window=st.integers(1, 32), stride=st.integers(1, 32),
       fps=st.sampled_from([24.0, 25.0, 29.97, 30.0, 30000 / 1001, 7.5]) | st.floats(0.5, 240.0))
def test_times_are_exactly_the_conventions(tmp_path_factory, t, window, stride, fps):
    folder = tmp_path_factory.mktemp("times")
    np.save(folder / "v.npy", np.arange(t * 3, dtype=np.float32).reshape(t, 3))
    ff = read_features(import_npy(folder / "v.npy", folder, NpyImportConfig(window=window, stride=stride, fps=fps)))
    assert len(ff.features) == t and ff.num_frames == (t - 1) * stride + window
    assert ff.times.tolist() == [(i * stride + window / 2) / fps for i in range(t)]
    assert ff.duration == ff.num_frames / fps


def test_exact_conversions_accepted_inexact_refused(tmp_path):
    a16 = np.random.default_rng(2).normal(size=(4, 8)).astype(np.float16)
    np.save(tmp_path / "h.npy", a16)
    ff = read_features(import_npy(tmp_path / "h.npy", tmp_path / "f", NpyImportConfig(fps=30.0)))
    assert np.array_equal(ff.features.astype(np.float16), a16) and ff.features.dtype == np.float32
    a64 = a16.astype(np.float64)                                           # every value a float32
    np.save(tmp_path / "d.npy", a64)
    assert np.array_equal(read_features(import_npy(tmp_path / "d.npy", tmp_path / "f",
                                                   NpyImportConfig(fps=30.0))).features, a64)


def test_batch_lists_bad_files_finishes_good_ones_and_exits_1(npy_dir, tmp_path):
    folder, arrays, gt = npy_dir
    np.save(folder / "flat.npy", np.zeros(10, dtype=np.float32))
    np.save(folder / "ints.npy", np.zeros((3, 4), dtype=np.int32))
    np.save(folder / "nan.npy", np.array([[1.0, np.nan]], dtype=np.float32))
    np.save(folder / "f64.npy", np.array([[0.1, 0.2]], dtype=np.float64))
    np.save(folder / "empty.npy", np.zeros((0, 2048), dtype=np.float32))
    np.save(folder / "odd.npy", np.zeros((2, 3), dtype=np.float32))
    np.save(folder / "objects.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    (folder / "junk.npy").write_bytes(b"not numpy")
    proc = run_cli("import", folder, "--annotations", gt, "--out", tmp_path / "feats", "--streams", "rgb,flow")
    assert proc.returncode == 1
    assert "2 written, 0 skipped" in proc.stdout and "9 failed" in proc.stdout
    reasons = {line.split(": ")[1]: line for line in proc.stderr.splitlines()[:-1]}
    assert set(reasons) == {"empty.npy", "f64.npy", "flat.npy", "ints.npy", "junk.npy", "nan.npy", "objects.npy",
                            "odd.npy", "video_test_0000007.npy"}
    assert "no fps" in reasons["video_test_0000007.npy"] and "cannot hold exactly" in reasons["f64.npy"]
    assert "not finite" in reasons["nan.npy"] and "dtype int32" in reasons["ints.npy"]
    assert "cannot be split" in reasons["odd.npy"] and "shape (10,)" in reasons["flat.npy"]
    assert reasons["junk.npy"].endswith("junk.npy: not a .npy file (it does not start with NumPy's header)")
    assert "pickle" not in reasons["junk.npy"]          # np.load's advice to load it unsafely is not passed on
    assert "not a readable .npy array (Object arrays cannot be loaded when allow_pickle=False)" in \
        reasons["objects.npy"]
    assert proc.stderr.splitlines()[-1].startswith("extract.npy import: failed: ")
    assert sorted(p.name for p in (tmp_path / "feats").iterdir()) == ["video_test_0000004.h5",
                                                                      "video_validation_0000051.h5"]
    assert not any(TMP_MARK in p.name for p in (tmp_path / "feats").iterdir())
    assert main(["import", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--fps", "30"]) == 2


def test_export_writes_actionformer_json_and_lists_bad_files(npy_dir, tmp_path):
    folder, arrays, gt = npy_dir
    import_folder(folder, tmp_path / "feats", NpyImportConfig(fps=29.97), gt)
    (tmp_path / "feats" / "broken.h5").write_bytes(b"not hdf5")
    write_features(tmp_path / "feats" / "unannotated.h5", {"rgb": np.ones((2, 4), np.float32)},
                   {"fps": 10.0, "window": 16, "stride": 4, "num_frames": 20, "duration": 2.0, "source": "x",
                    "weights": {}, "flow_method": "none"})
    # the ground truth as the project's JSON without fps (THUMOS14 text files give no duration either)
    plain = {v: {k: x for k, x in e.items() if k != "fps"} for v, e in ACTIONFORMER_GT["database"].items()}
    plain["video_test_0000099"] = {"subset": "Test", "annotations": [{"label": "Zebra", "segment": [1, 2]}]}
    write_annotations(tmp_path / "plain.json", plain)
    proc = run_cli("export", tmp_path / "feats", "--out", tmp_path / "out", "--annotations", tmp_path / "plain.json")
    assert proc.returncode == 1 and "broken.h5" in proc.stderr
    assert "5 written" in proc.stdout                      # 4 arrays and the JSON
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    db = data["database"]
    assert list(db) == list(ACTIONFORMER_GT["database"])   # exported videos with ground truth, in its order
    assert db["video_test_0000004"] == {"subset": "Test", "duration": 33.5, "fps": 25.0, "annotations": [
        {"label": "CricketBowling", "segment": [0.2, 1.1], "label_id": 1},
        {"label": "BaseballPitch", "segment": [3.0, 4.0], "label_id": 0}]}
    assert db["video_test_0000007"]["fps"] == 29.97 and db["video_test_0000007"]["duration"] == 20.0
    # what ActionFormer's THUMOS14 reader needs: lower-cased subsets, fps, duration, label -> label_id
    label_dict = {a["label"]: a["label_id"] for e in db.values() for a in e["annotations"]}
    assert label_dict == {"BaseballPitch": 0, "CricketBowling": 1}
    assert {e["subset"].lower() for e in db.values()} == {"validation", "test"}
    # a THUMOS14 folder as the ground truth: the same instances (durations from the feature files)
    write_thumos_folder(tmp_path / "th14", {v: {**e, "subset": e["subset"]} for v, e in plain.items()
                                            if v != "video_test_0000099"})
    report = export_folder(tmp_path / "feats", tmp_path / "npy2", tmp_path / "th14", tmp_path / "af.json")
    db2 = json.loads((tmp_path / "af.json").read_text())["database"]
    assert db2["video_test_0000004"]["annotations"] == sorted(db["video_test_0000004"]["annotations"],
                                                              key=lambda a: a["label"])
    assert db2["video_test_0000004"]["duration"] == read_features(tmp_path / "feats" / "video_test_0000004.h5").duration
    assert list(report.failed) == ["broken.h5"]


def test_config_file_and_print_config(tmp_path, capsys, npy_dir):
    folder, _, _ = npy_dir
    (tmp_path / "c.yaml").write_text("import:\n  stride: 8\n  fps: 30\n")
    assert main(["import", str(folder), "--out", str(tmp_path / "f"), "--config", str(tmp_path / "c.yaml"),
                 "--window", "8", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "stride: 8" in out and "window: 8" in out and "fps: 30.0" in out
    (tmp_path / "bad.yaml").write_text("import:\n  strid: 8\n")
    assert main(["import", str(folder), "--out", str(tmp_path / "f"), "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown key import.strid" in capsys.readouterr().err
