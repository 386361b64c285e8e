"""Bad input as a new user gives it (issue 14): names built from data stay in their folder, unusable
output arguments are one line and exit 2, one bad file does not stop a batch, and odd data is counted
aloud instead of being accepted silently."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.paths import MAX_NAME, OutputPathError, check_output_dir, check_output_file, safe_name, unusable_outputs
from detect import DetectorConfig, TrainConfig, save_detector, scan_videos, train_detector
from refactor import SampleConfig, build_pairs, save_checkpoint, train_refactor
from refactor.model import RefactorConfig
from refactor.samples import collect_samples
from refactor.train import TrainConfig as RefTrain
from tests.featfiles import detection_dataset, split_streams, write_features

REPO = Path(__file__).resolve().parents[1]
HOSTILE = ["x/../../name", "/abs", "..", ".", "a\x00b", "a\nb", "v" * 300, "", "..\\..\\win", "-12345678",
           "abc-12345678"]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def in_process(args: list[str], cwd: Path, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS...`` run by the module's ``main(argv)`` in this process, in ``cwd`` (what the
    command line does, without a second of interpreter and torch start-up per case)."""
    assert args[0] == "-m"
    spec = importlib.util.find_spec(args[1])
    module = importlib.import_module(args[1] + (".__main__" if spec.submodule_search_locations else ""))
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        code = module.main(list(args[2:]))
    except SystemExit as exc:                            # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def one_line_exit(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------
# 1. file names from data
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", HOSTILE)
def test_safe_name_stays_in_its_folder(tmp_path, text):
    name = safe_name(text)
    assert 0 < len(name) <= MAX_NAME and "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and "\n" not in name
    dest = tmp_path / f"timeline_{name}.png"
    assert dest.resolve().parent == tmp_path.resolve()
    dest.write_bytes(b"x")                                   # a name the file system takes
    assert name != text                                      # every hostile id here had to change


def test_safe_name_keeps_safe_names_and_never_collides():
    for text in ["video_001", "v_-8ab_cd", "Jump.Rope+2", "Ünïcode-ok"]:
        assert safe_name(text) == text
    texts = HOSTILE + ["video_001", "x_.._.._name", "a_b", "a\tb", "v" * 301, safe_name("a\x00b")]
    names = [safe_name(t) for t in texts]
    assert len(set(names)) == len(texts)                     # distinct inputs, distinct names
    assert safe_name("a/b") == safe_name("a/b")              # deterministic


def _gt_and_predictions(root: Path, video_ids: list[str]) -> tuple[Path, Path]:
    db = {v: {"subset": "test", "duration": 20.0, "annotations": [{"segment": [2.0, 6.0], "label": "Jump"}]}
          for v in video_ids}
    results = {v: [{"label": "Jump", "score": 0.9, "segment": [2.5, 6.0]}] for v in video_ids}
    (root / "gt.json").write_text(json.dumps({"database": db}))
    (root / "pred.json").write_text(json.dumps({"results": results}))
    return root / "gt.json", root / "pred.json"


def test_evaluate_timelines_of_hostile_ids_stay_in_the_plot_folder(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    ids = ["x/../../name", "/abs", "..", "n\nl", "v" * 300]
    gt, pred = _gt_and_predictions(work, ids)
    figs = work / "figs"
    args = ["-m", "evaluate", "detection", "--ground-truth", str(gt), "--predictions", str(pred), "--subset", "test",
            "--plot", str(figs)]
    for v in ids:
        args += ["--timeline", v]
    proc = cli(*args, cwd=work)
    assert proc.returncode == 0, proc.stderr
    made = sorted(p.name for p in figs.iterdir())
    assert made == sorted(["map_vs_tiou.png", "per_class_ap.png"] + [f"timeline_{safe_name(v)}.png" for v in ids])
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and figs not in p.parents]
    assert sorted(p.name for p in outside) == ["gt.json", "pred.json"]
    assert not Path("/abs.png").exists() and not (tmp_path / "name.png").exists()


def test_evaluate_unknown_timeline_video_is_one_line(tmp_path):
    gt, pred = _gt_and_predictions(tmp_path, ["v1"])
    proc = cli("-m", "evaluate", "detection", "--ground-truth", str(gt), "--predictions", str(pred), "--subset",
               "test", "--plot", str(tmp_path / "figs"), "--timeline", "nope", "--quiet", "--out",
               str(tmp_path / "result.json"))
    one_line_exit(proc, 1, "'nope'")
    assert proc.stdout == ""                                  # said before any result is printed or written
    assert not (tmp_path / "figs").exists() and not (tmp_path / "result.json").exists()


# ---------------------------------------------------------------------------------------------
# 4. output arguments
# ---------------------------------------------------------------------------------------------

def test_check_output_paths(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputPathError, match="existing file, not a folder"):
        check_output_dir(afile)
    with pytest.raises(OutputPathError, match="is not a folder"):
        check_output_dir(afile / "sub")
    with pytest.raises(OutputPathError, match="is a folder, not a file"):
        check_output_file(tmp_path)
    with pytest.raises(OutputPathError, match="is not a folder"):
        check_output_file(afile / "x.json")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_file(afile) == afile                 # a file to replace
    assert not (tmp_path / "new").exists()                   # checks create nothing
    # what the tools call: one line "prog: reason" for the first unusable argument, None values skipped
    err = io.StringIO()
    assert not unusable_outputs("tool", files={"--out": afile, "--json": None}, dirs={"--plot": tmp_path / "new"},
                                stream=err)
    assert unusable_outputs("tool sub", files={"--out": tmp_path}, dirs={"--plot": afile}, stream=err)
    assert err.getvalue() == f"tool sub: --out {tmp_path} is a folder, not a file\n"
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(OutputPathError, match="permission denied"):
                check_output_dir(locked / "out")
            with pytest.raises(OutputPathError, match="permission denied"):
                check_output_file(locked / "x.json")
        finally:
            locked.chmod(0o700)


@pytest.fixture(scope="module")
def afile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("afile") / "AFILE"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("command", [
    ["-m", "extract", "clip.mp4", "--out", "{afile}"],
    ["-m", "extract.npy", "import", "npys", "--out", "{afile}"],
    ["-m", "extract.npy", "export", "feats", "--out", "{afile}"],
    ["-m", "extract.npy", "export", "feats", "--out", "{dir}/o", "--json-out", "{dir}"],
    ["-m", "refactor", "apply", "--features", "f", "--checkpoint", "c.pt", "--out", "{afile}"],
    ["-m", "refactor", "train", "--features", "f", "--annotations", "a.json", "--out", "{dir}"],
    ["-m", "refactor", "cam", "--features", "f", "--checkpoint", "c.pt", "--out", "{afile}"],
    ["-m", "detect", "train", "--features", "f", "--annotations", "a.json", "--out", "{dir}"],
    ["-m", "detect", "train", "--features", "f", "--annotations", "a.json", "--out", "{dir}/d.pt", "--plot",
     "{afile}"],
    ["-m", "detect", "run", "--checkpoint", "c.pt", "--features", "f", "--out", "{dir}"],
    ["-m", "detect", "run", "--checkpoint", "c.pt", "--features", "f", "--out", "{afile}/p.json"],
    ["-m", "detect", "run", "--checkpoint", "c.pt", "--features", "f", "--out", "{dir}/p.json", "--plot", "{afile}"],
    ["-m", "detect", "video", "v", "--checkpoint", "c.pt", "--out", "{dir}/p.json", "--render",
     "{afile}"],
    ["-m", "detect", "cam", "--features", "f", "--checkpoint", "c.pt", "--out", "{afile}"],
    ["-m", "detect", "fit", "--videos", "v", "--annotations", "a.json", "--work", "{afile}"],
    ["-m", "evaluate", "detection", "--ground-truth", "g.json", "--predictions", "p.json", "--subset", "test",
     "--out", "{dir}"],
    ["-m", "evaluate", "detection", "--ground-truth", "g.json", "--predictions", "p.json", "--subset", "test",
     "--plot", "{afile}"],
    ["-m", "evaluate", "proposals", "--ground-truth", "g.json", "--proposals", "p.json", "--subset", "test",
     "--plot", "{afile}"],
    ["-m", "weights", "--cache", "{afile}", "import", "x.pt", "--stream", "rgb"],
    ["-m", "weights", "fetch", "--cache", "{afile}"],
], ids=lambda c: " ".join(c[1:4]) + " " + c[-2])
def test_unusable_output_argument_is_one_line_and_exit_2(afile, tmp_path, command, monkeypatch, capsys):
    args = [a.format(afile=afile, dir=tmp_path) for a in command]
    proc = in_process(args, tmp_path, monkeypatch, capsys)   # the real command line: test_unusable_output_cli
    one_line_exit(proc, 2)
    assert "not a folder" in proc.stderr or "not a file" in proc.stderr
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("module", ["extract", "refactor", "detect", "evaluate"])
def test_unusable_output_cli(afile, tmp_path, module):
    """The same through ``python -m`` itself, one command per package (the exit status reaches the shell)."""
    args = {"extract": ["clip.mp4", "--out", str(afile)],
            "refactor": ["apply", "--features", "f", "--checkpoint", "c.pt", "--out", str(afile)],
            "detect": ["cam", "--features", "f", "--checkpoint", "c.pt", "--out", str(afile)],
            "evaluate": ["detection", "--ground-truth", "g.json", "--predictions", "p.json", "--subset", "test",
                         "--plot", str(afile)]}[module]
    proc = cli("-m", module, *args, cwd=tmp_path)
    one_line_exit(proc, 2, "is an existing file, not a folder")


@pytest.mark.parametrize("command", [
    ["train", "--features", "{features}", "--annotations", "g.json", "--out", "{dir}/x.pt"],
    ["run", "--features", "{features}", "--checkpoint", "c.pt", "--out", "{dir}/x.json"],
    ["cam", "--features", "{features}", "--checkpoint", "c.pt", "--out", "{dir}/out"],
], ids=lambda c: c[0])
def test_detect_features_that_are_no_folder_are_one_line_and_exit_2(afile, tmp_path, command, monkeypatch, capsys):
    """``detect train/run/cam --features`` naming nothing or a file: the line ``refactor`` gives for the same
    mistake, exit 2, before any other argument is looked at (the checkpoint and annotations here do not exist)."""
    for features, why in ((tmp_path / "nonexist", "no such folder"), (afile, "not a folder")):
        args = ["-m", "detect", *(a.format(features=features, dir=tmp_path) for a in command)]
        proc = in_process(args, tmp_path, monkeypatch, capsys)
        assert (proc.returncode, proc.stderr) == (2, f"detect {command[0]}: --features {features}: {why}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == []      # nothing written


# ---------------------------------------------------------------------------------------------
# 3. one bad file does not stop a batch
# ---------------------------------------------------------------------------------------------

def test_detect_run_finishes_the_good_files_and_lists_the_bad_one(tmp_path):
    features, ann, db = detection_dataset(tmp_path / "data", videos=3, num_snippets=(30, 40))
    config = DetectorConfig(base_dim=16, boundary_hidden=16, head_hidden=16, dropout=0.0, max_duration=16)
    model, meta = train_detector(features, ann, config, TrainConfig(epochs=1, window=32, batch_size=4))
    ckpt = save_detector(tmp_path / "det.pt", model, meta)
    good = sorted(p.stem for p in features.glob("*.h5"))
    rng = np.random.default_rng(0)
    write_features(features / "aaa_wide.h5", split_streams(rng.normal(size=(20, 32)), ("rgb", "flow")))  # sorts first
    write_features(features / "zzz_narrow.h5", split_streams(rng.normal(size=(20, 4)), ("rgb", "flow")))
    out = tmp_path / "pred.json"
    proc = cli("-m", "detect", "run", "--checkpoint", str(ckpt), "--features", str(features), "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert sorted(json.loads(out.read_text())["results"]) == good
    failed = [line for line in proc.stderr.splitlines() if line.startswith("detect: failed")]
    assert len(failed) == 1
    assert "aaa_wide.h5 has 32-d features (rgb+flow), the checkpoint expects 16-d" in failed[0]
    assert "zzz_narrow.h5 has 4-d features (rgb+flow), the checkpoint expects 16-d" in failed[0]
    assert not any(g in failed[0] for g in good)


def two_class_features(folder: Path, rng: np.random.Generator) -> dict:
    """Four 16-snippet, 16-d two-stream feature files (Jump_0/1, Run_0/1; each class a shift on snippets
    3-10) in ``folder``; returns their ground-truth database (one instance [5, 8] s each, subset validation)."""
    db = {}
    for k, name in enumerate(["Jump", "Run"]):
        for j in range(2):
            vid = f"{name}_{j}"
            x = rng.normal(scale=0.3, size=(16, 16))
            x[3:11] += k + 1
            write_features(folder / f"{vid}.h5", split_streams(x, ("rgb", "flow")))
            db[vid] = {"subset": "validation", "duration": 16.0,
                       "annotations": [{"segment": [5.0, 8.0], "label": name}]}
    return db


def test_refactor_apply_finishes_the_good_files_and_lists_the_bad_ones(tmp_path):
    rng = np.random.default_rng(1)
    feats = tmp_path / "feats"
    db = two_class_features(feats, rng)
    (tmp_path / "gt.json").write_text(json.dumps({"database": db}))
    pairs = build_pairs(feats, tmp_path / "gt.json", samples=SampleConfig(threshold=None, top_k=3))
    model, hist = train_refactor(pairs, RefactorConfig(in_dim=16, hidden_dim=8), RefTrain(epochs=1), progress=False)
    ckpt = save_checkpoint(tmp_path / "ref.pt", model, pairs, SampleConfig(threshold=None, top_k=3), RefTrain(epochs=1),
                           hist)
    write_features(feats / "Jump_5_bad.h5", split_streams(rng.normal(size=(10, 8)), ("rgb", "flow")))   # in the middle
    nan = rng.normal(size=(10, 16))
    nan[3, 2] = np.nan
    write_features(feats / "Kaput.h5", split_streams(nan, ("rgb", "flow")))
    (feats / "Broken.h5").write_bytes(b"not hdf5")
    out = tmp_path / "out"
    proc = cli("-m", "refactor", "apply", "--features", str(feats), "--checkpoint", str(ckpt), "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{v}.h5" for v in db)
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("refactor: failed (3): ")
    assert "Jump_5_bad.h5: 8-d features, the checkpoint expects 16" in line
    assert "Kaput.h5: features contain NaN or inf" in line and "Broken.h5" in line


# ---------------------------------------------------------------------------------------------
# 5. silent acceptance
# ---------------------------------------------------------------------------------------------

def test_instance_past_the_end_is_left_out_and_counted():
    times = np.arange(10) + 0.5                             # 10 snippets, video 10 s long
    feats = np.eye(10, 4, dtype=np.float32) + 0.1
    segs = np.array([[2.0, 4.0], [12.0, 14.0], [9.2, 15.0], [-5.0, -1.0]])
    vs = collect_samples("v", feats, times, segs, np.array([0, 1, 2, 3]), SampleConfig(), duration=10.0)
    assert vs.outside == 2
    assert vs.action_labels.tolist() == [0, 2]
    assert [s.tolist() for s in vs.action_snippets] == [[2, 3], [9]]    # overhanging end: the snippet it covers
    old = collect_samples("v", feats, times, segs, np.array([0, 1, 2, 3]), SampleConfig())
    assert old.outside == 0 and len(old.action_labels) == 4             # without a duration: as before


def test_build_pairs_warns_about_past_end_instances_and_missing_feature_files(tmp_path, capsys):
    rng = np.random.default_rng(2)
    db = two_class_features(tmp_path / "f", rng)
    db["Jump_0"]["annotations"].append({"segment": [30.0, 32.0], "label": "Jump"})
    db["ghost"] = {"subset": "validation", "duration": 16.0, "annotations": [{"segment": [1.0, 2.0], "label": "Run"}]}
    (tmp_path / "gt.json").write_text(json.dumps({"database": db}))
    pairs = build_pairs(tmp_path / "f", tmp_path / "gt.json", samples=SampleConfig(threshold=None, top_k=3))
    err = capsys.readouterr().err
    assert "1 annotated instance(s) in 1 video(s) lie wholly past the video's end" in err and "'Jump_0'" in err
    assert "1 of the 5 annotated videos of subset 'validation' have no feature file" in err and "'ghost'" in err
    assert sum(len(v.action_labels) for v in pairs.videos) == 4


def test_detector_training_set_warns_about_missing_feature_files(tmp_path, capsys):
    features, ann, db = detection_dataset(tmp_path, videos=3, num_snippets=(20, 30))
    removed = sorted(features.glob("*.h5"))[0]
    removed.unlink()
    videos, _, _, _ = scan_videos(features, None, ann, "validation", require_annotations=True)
    err = capsys.readouterr().err
    assert len(videos) == 2
    assert err.count("\n") == 1 and "1 of the 3 annotated videos" in err and repr(removed.stem) in err


def test_prediction_with_three_numbers_and_ground_truth_without_database(tmp_path):
    gt, pred = _gt_and_predictions(tmp_path, ["v1"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": {"v1": [{"label": "Jump", "score": 0.9, "segment": [1, 2, 3]}]}}))
    proc = cli("-m", "evaluate", "detection", "--ground-truth", str(gt), "--predictions", str(bad), "--subset", "test")
    one_line_exit(proc, 1, "segment [1, 2, 3] is not [start, end]")
    nodb = tmp_path / "nodb.json"
    nodb.write_text(json.dumps({"videos": json.loads(gt.read_text())["database"]}))
    proc = cli("-m", "evaluate", "detection", "--ground-truth", str(nodb), "--predictions", str(pred), "--subset",
               "test")
    one_line_exit(proc, 1, "has no 'database'")
