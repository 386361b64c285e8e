"""``detect fit``: the whole run on a tiny rendered world (a random I3D, so no weights are needed), its
caching (a rerun does nothing; a changed setting reruns exactly the stages that depend on it), resumption
after kill -9 during detector training, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

from common.annotations import hold_out, read_database, write_annotations
from detect.checkpoint import load_detector
from detect.fit import (ABLATION_VARIANTS, SELECT_CANDIDATES, FitConfig, FitError, ablation_table, choose_front,
                        describe, fit)
from detect.world import WorldConfig, make_world
from extract.config import ExtractConfig
from extract.features import read_features
from extract.streams import build_streams
from refactor import load_refactor
from tests.models import random_i3d_model

REPO = Path(__file__).resolve().parents[1]
WORLD = WorldConfig(seed=5, num_classes=2, train_videos=4, test_videos=2, duration=(10.0, 12.0), action=(1.5, 3.0),
                    context=(1.0, 2.0), neutral=(1.0, 2.0), context_only=0.2, width=96, height=80)
CFG = FitConfig(stride=8, short_side=40, crop=32, refactor_epochs=2, detector_epochs=2, window_snippets=32,
                figure_videos=1, cam_reference=None, device="cpu", select_front=False)
STAGES = ["features", "refactor", "detector", "evaluate", "figures"]


def streams(cfg: FitConfig = CFG) -> list:
    ecfg = ExtractConfig(streams=cfg.streams, stride=cfg.stride, short_side=cfg.short_side, crop=cfg.crop, device="cpu")
    return build_streams(ecfg, models={"rgb": random_i3d_model()})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fitworld")
    make_world(root, WORLD, progress=False)
    return root


def run(world: Path, work: Path, cfg: FitConfig = CFG):
    return fit(world / "videos", world / "annotations.json", work, cfg, log=lambda m: None, progress=False,
               extract_streams=streams(cfg))


def with_features(fitted, work: Path) -> Path:
    """``work`` holding only the features stage of the module's fit (a run with ``CFG``'s sampling reuses them:
    extraction is what the tests below do not test)."""
    (work / "stages").mkdir(parents=True)
    shutil.copytree(fitted[0] / "features", work / "features")
    for name in ("features.json", "features.started"):
        if (fitted[0] / "stages" / name).exists():
            shutil.copy2(fitted[0] / "stages" / name, work / "stages" / name)
    return work


def first_test_video(world: Path) -> str:
    """The first test video of the world (the one figures are drawn for with ``figure_videos=1``)."""
    db = read_database(world / "annotations.json")
    return min(v for v, e in db.items() if e["subset"] == "test")


def mtimes(work: Path) -> dict[str, int]:
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def fitted(world, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return work, run(world, work)


def test_fit_writes_every_output(world, fitted):
    work, report = fitted
    assert report.ran == dict.fromkeys(STAGES, True)
    result = json.loads((work / "result.json").read_text())
    assert set(result) >= {"tiou", "mAP", "average_mAP", "per_class_AP"}
    assert result["tiou"] == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7]) and 0 <= result["average_mAP"] <= 1
    db = read_database(world / "annotations.json")
    train = {v for v, e in db.items() if e["subset"] == "validation"}
    test = {v for v, e in db.items() if e["subset"] == "test"}
    assert {p.stem for p in (work / "features").glob("*.h5")} == train | test
    predictions = json.loads((work / "predictions.json").read_text())["results"]
    assert set(predictions) == test                                        # detections on the test subset only
    _, ckpt = load_detector(work / "detector.pt")
    assert ckpt["config"]["front"] == "refactor" and len(ckpt["history"]) == CFG.detector_epochs
    assert ckpt["feature_layout"]["crop"] == CFG.crop and ckpt["feature_layout"]["short_side"] == CFG.short_side
    assert set(ckpt["subsets"]["validation"]) == train
    names = {p.name for p in (work / "figures").iterdir()}
    assert {"loss_detector.png", "map_vs_tiou.png"} <= names and any(n.startswith("timeline_") for n in names)
    assert any(n.startswith("cam_") for n in names)
    assert not [p for p in work.rglob("*") if ".partial-" in p.name]      # nothing half-written
    assert not list(work.rglob("*.state*"))                 # training states go once their checkpoint is written


def test_rerun_does_nothing(world, fitted):
    work, _ = fitted
    before = mtimes(work)
    start = time.perf_counter()
    report = run(world, work)
    assert report.ran == dict.fromkeys(STAGES, False)
    assert mtimes(work) == before
    assert time.perf_counter() - start < 20


def test_a_changed_setting_reruns_only_what_depends_on_it(world, fitted, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(fitted[0], work)          # a copy (times kept): the module's run stays as the other tests expect
    before = mtimes(work)
    report = run(world, work, replace(CFG, detector_epochs=3))
    assert report.ran == {"features": False, "refactor": False, "detector": True, "evaluate": True, "figures": True}
    after = mtimes(work)
    assert all(after[k] == v for k, v in before.items() if k.startswith("features/") or k == "refactor.pt")
    assert after["detector.pt"] != before["detector.pt"]
    report = run(world, work, replace(CFG, detector_epochs=3, tiou="0.5"))
    assert report.ran == {"features": False, "refactor": False, "detector": False, "evaluate": True, "figures": True}
    assert json.loads((work / "result.json").read_text())["tiou"] == [0.5]
    report = run(world, work, replace(CFG, detector_epochs=3, tiou="0.5", refactor_epochs=3))
    assert report.ran == {"features": False, "refactor": True, "detector": True, "evaluate": True, "figures": True}


def test_changed_ground_truth_retrains_but_keeps_the_features(world, fitted, tmp_path):
    work = tmp_path / "w"
    assert run(world, with_features(fitted, work)).ran == {"features": False} | dict.fromkeys(STAGES[1:], True)
    copy = tmp_path / "world"
    copy.mkdir()
    (copy / "videos").symlink_to(world / "videos")
    db = read_database(world / "annotations.json")
    first = next(v for v, e in db.items() if e["annotations"])
    db[first]["annotations"][0]["segment"][1] += 0.5                        # one instance moved by half a second
    (copy / "annotations.json").write_text(json.dumps({"database": db}))
    report = run(copy, work)
    assert report.ran == {"features": False, "refactor": True, "detector": True, "evaluate": True, "figures": True}


def test_new_sampling_redoes_the_features(world, fitted, tmp_path):
    work = with_features(fitted, tmp_path / "w")
    report = run(world, work, replace(CFG, stride=16, figure_videos=0))
    assert report.ran == dict.fromkeys(STAGES, True)


KILLED_RUN = """
import sys
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.test_fit import CFG, run
run(Path({world!r}), Path({work!r}), replace(CFG, detector_epochs={epochs}, figure_videos=0))
"""


def test_kill_during_detector_training_then_rerun_resumes(world, fitted, tmp_path):
    work = with_features(fitted, tmp_path / "w")
    epochs = 6
    code = KILLED_RUN.format(repo=str(REPO), world=str(world), work=str(work), epochs=epochs)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=os.environ | {"OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = work / "detector.pt.state"
    deadline = time.time() + 240
    while time.time() < deadline and not state.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert state.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no training state in time"
    proc.send_signal(signal.SIGKILL)                                      # at once: most epochs are still to run
    proc.wait()
    assert not (work / "detector.pt").exists()                            # killed before the detector was done
    killed = torch.load(state, weights_only=True)["history"]
    done = len(killed)
    assert 1 <= done < epochs
    report = run(world, work, replace(CFG, detector_epochs=epochs, figure_videos=0))
    assert report.ran["features"] is False and report.ran["refactor"] is False and report.ran["detector"] is True
    _, ckpt = load_detector(work / "detector.pt")
    assert len(ckpt["history"]) == epochs
    assert ckpt["history"][:done] == killed          # the resumed run continued the killed one's epochs
    assert not state.exists() and not (work / "detector.pt.state.key").exists()


def test_bad_input_is_one_clear_error(world, tmp_path):
    with pytest.raises(FitError, match="is not a folder"):
        fit(tmp_path / "nothing", world / "annotations.json", tmp_path / "w", CFG)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FitError, match="none of the"):
        fit(tmp_path / "empty", world / "annotations.json", tmp_path / "w", CFG)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FitError, match="exists and is not a folder"):
        fit(world / "videos", world / "annotations.json", tmp_path / "file", CFG)


def test_cli_reports_a_bad_work_folder(world, tmp_path):
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "detect", "fit", "--videos", str(world / "videos"), "--annotations",
                           str(world / "annotations.json"), "--work", str(tmp_path / "file")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2                                            # an unusable argument
    assert proc.stderr.strip().splitlines() == [f"detect fit: --work {tmp_path / 'file'} is an existing file, "
                                                "not a folder"]


def test_cli_settings_come_from_the_dataclass_with_file_and_flag_override(tmp_path):
    (tmp_path / "fit.yaml").write_text("fit:\n  detector_epochs: 7\n  stride: 8\n  streams: [rgb, flow]\n")
    proc = subprocess.run([sys.executable, "-m", "detect", "fit", "--config", str(tmp_path / "fit.yaml"), "--stride",
                           "4", "--no-cam", "--no-select-front", "--select-margin", "1.5", "--select-prefer", "deep",
                           "--print-config"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)["fit"]
    expected = replace(FitConfig(), detector_epochs=7, stride=4, streams=("rgb", "flow"), spatial=False,
                       select_front=False, select_margin=1.5, select_prefer="deep")
    assert printed == {k: list(v) if isinstance(v, tuple) else v for k, v in expected.__dict__.items()}
    (tmp_path / "bad.yaml").write_text("fit:\n  epochz: 3\n")
    proc = subprocess.run([sys.executable, "-m", "detect", "fit", "--config", str(tmp_path / "bad.yaml"),
                           "--print-config"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown key fit.epochz" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_features_of_a_killed_run_with_other_settings_are_not_mixed(world, fitted, tmp_path):
    work = with_features(fitted, tmp_path / "w")
    (work / "stages" / "features.json").unlink()              # as if the first run was killed while extracting
    stale = {p.name: p.stat().st_mtime_ns for p in (work / "features").glob("*.h5")}
    report = run(world, work, replace(CFG, stride=16, figure_videos=0))
    assert report.ran["features"] is True
    fresh = {p.name: p.stat().st_mtime_ns for p in (work / "features").glob("*.h5")}
    assert set(fresh) == set(stale) and all(fresh[k] != stale[k] for k in stale)   # every file redone


@pytest.mark.parametrize("form", ["gated", "paper"])
def test_ablation_puts_the_papers_form_beside_the_fits(world, fitted, tmp_path, form):
    """``--ablation``: every variant is scored; the main model has the fit's form and the paper's form is
    a row of its own (the main result when the fit's form is the paper's); the paper's ablations (no KL,
    action only, frozen stage 1) are of the paper's form, stage 1 reading the paper's checkpoint."""
    work = with_features(fitted, tmp_path / "work")
    cfg = replace(CFG, ablation=True, figure_videos=0, refactor_form=form, detector_epochs=1,
                  context_folds=2)                 # folds: test_context_border_boundaries_and_folds_...
    report = run(world, work, cfg)
    assert not report.ran["features"]
    figures = sorted(p.name for p in (work / "figures").iterdir())
    assert figures == ["loss_detector.png", "map_vs_tiou.png"]          # figure_videos 0: no timeline, no CAM
    table = json.loads((work / "ablation.json").read_text())
    assert list(table["variants"]) == list(ABLATION_VARIANTS)
    main = json.loads((work / "result.json").read_text())
    assert table["variants"]["refactor"]["average_mAP"] == pytest.approx(main["average_mAP"])
    assert load_refactor(work / "refactor.pt")[0].config.form == form
    assert load_detector(work / "detector.pt")[0].config.refactor.form == form
    for variant in ("no_kl", "action_only"):
        assert load_refactor(work / "ablation" / variant / "refactor.pt")[0].config.form == "paper"
    paper_ckpt = work / "refactor.pt" if form == "paper" else work / "ablation" / "paper" / "refactor.pt"
    assert (work / "ablation" / "paper").exists() == (form != "paper")
    if form == "paper":
        assert table["variants"]["paper"]["average_mAP"] == table["variants"]["refactor"]["average_mAP"]
    assert load_refactor(paper_ckpt)[0].config.form == "paper"
    frozen = sorted((work / "ablation" / "stage1" / "features").glob("*.h5"))
    assert frozen and json.loads(read_features(frozen[0]).attrs["refactor"])["checkpoint"] == str(paper_ckpt.resolve())
    assert report.ablation["variants"].keys() == table["variants"].keys()
    ctx = load_detector(work / "ablation" / "context" / "detector.pt")[0]       # the context score beside f
    assert ctx.config.front == "context" and (work / "ablation" / "context" / "context.pt").is_file()


def test_select_front_chooses_on_heldout_training_videos(world, fitted, tmp_path):
    """``--select-front``: the candidates (here all four) are trained without a held-out quarter of each
    class's training videos and scored on it alone; the best (ties: the first) becomes the main model's
    front, trained on all of them; a rerun does nothing."""
    assert FitConfig().select_candidates == ("baseline", "context", "deep")
    work = with_features(fitted, tmp_path / "work")
    every = replace(CFG, select_front=True, figure_videos=0, detector_epochs=1,
                    select_candidates=("deep", "refactor", "context", "baseline"))
    report = run(world, work, every)
    table = json.loads((work / "select.json").read_text())
    db = read_database(world / "annotations.json")
    assert table["heldout"] and table["heldout"] == hold_out(db, "validation")[1]
    assert list(table["average_mAP"]) == list(SELECT_CANDIDATES)        # tried in that order, whatever the list's
    assert load_detector(work / "select" / "context" / "detector.pt")[0].config.front == "context"
    best = max(table["average_mAP"].values())
    margin = CFG.select_margin / 100
    assert table["margin"] == CFG.select_margin and table["prefer"] == CFG.select_prefer
    scores = table["average_mAP"]
    kept = scores[CFG.select_prefer] >= best - margin       # the preferred candidate, unless beaten by more
    assert table["chosen"] == (CFG.select_prefer if kept else next(n for n, m in scores.items() if m == best))
    for name, m in table["average_mAP"].items():
        scored = json.loads((work / "select" / name / "predictions.json").read_text())["results"]
        assert set(scored) == set(table["heldout"])                     # scored on the held-out videos only
        assert json.loads((work / "select" / name / "result.json").read_text())["average_mAP"] == m
    assert load_detector(work / "detector.pt")[0].config.front == SELECT_CANDIDATES[table["chosen"]]
    assert report.selection == table
    assert f"; context preferred; margin {CFG.select_margin:g}) ->" in describe(report, work)
    again = run(world, work, every)
    assert not any(again.ran.values())
    # a margin of 100 points takes the simplest candidate; no candidate is trained again
    wide = run(world, work, replace(every, select_prefer=None, select_margin=100.0))
    assert wide.selection["chosen"] == "baseline" and wide.selection["average_mAP"] == table["average_mAP"]
    assert not any(ran for stage, ran in wide.ran.items() if stage.startswith("select"))
    assert load_detector(work / "detector.pt")[0].config.front == "none"
    assert "; margin 100)" in describe(wide, work)
    # ... and with a preference, the preferred one
    deep = run(world, work, replace(every, select_prefer="deep", select_margin=100.0))
    assert deep.selection["chosen"] == "deep" and deep.selection["average_mAP"] == table["average_mAP"]
    assert not any(ran for stage, ran in deep.ran.items() if stage.startswith("select"))
    assert "; deep preferred; margin 100)" in describe(deep, work)
    with pytest.raises(FitError, match="--select-prefer must be one of baseline, context, refactor, deep or none"):
        run(world, work, replace(CFG, select_prefer="bogus"))
    with pytest.raises(FitError, match="--select-margin must be >= 0"):
        run(world, work, replace(CFG, select_margin=-1.0))
    with pytest.raises(FitError, match="--select-candidates must be a comma list of baseline, context, refactor, "
                                       "deep, got baseline,bogus"):
        run(world, work, replace(CFG, select_candidates=("baseline", "bogus")))


scores = st.dictionaries(st.sampled_from(["baseline", "refactor", "deep", "other"]),
                         st.floats(0, 1, allow_nan=False), min_size=1)


@given(scores, st.floats(0, 1, allow_nan=False), st.floats(0, 1, allow_nan=False))
def test_choose_front_takes_the_simplest_candidate_within_the_margin(table, margin, more):
    """The choice is within ``margin`` of the best, every candidate before it is not, margin 0 is the best
    (ties: the first), and a wider margin never chooses a later candidate."""
    names = list(table)
    chosen = choose_front(table, margin)
    best = max(table.values())
    assert table[chosen] >= best - margin
    assert all(table[n] < best - margin for n in names[:names.index(chosen)])
    assert choose_front(table, 0.0) == next(n for n in names if table[n] == best)
    assert names.index(choose_front(table, margin + more)) <= names.index(chosen)


@given(scores, st.floats(0, 1, allow_nan=False), st.sampled_from(["baseline", "refactor", "deep", "other", "none"]))
def test_choose_front_keeps_the_preferred_candidate_unless_beaten_by_more_than_the_margin(table, margin, prefer):
    """``prefer`` is chosen exactly when it is within ``margin`` of the best; otherwise (or when it is not a
    candidate) the best is, whatever the margin."""
    chosen = choose_front(table, margin, prefer)
    best = max(table.values())
    if prefer in table and table[prefer] >= best - margin:
        assert chosen == prefer
    else:
        assert chosen == choose_front(table, 0.0) and table[chosen] == best


def test_choose_front_by_hand():
    table = {"baseline": 0.70, "refactor": 0.72, "deep": 0.745}
    assert choose_front(table) == "deep"
    assert choose_front(table, 0.03) == "refactor"     # 0.72 >= 0.745 - 0.03
    assert choose_front(table, 0.05) == "baseline"
    assert choose_front(table, 0.03, prefer="deep") == "deep"
    assert choose_front(table, 0.03, prefer="refactor") == "refactor"  # 0.72 >= 0.745 - 0.03
    assert choose_front(table, 0.03, prefer="baseline") == "deep"      # 0.70 < 0.715: the best, not the simplest
    assert choose_front(table, 0.05, prefer="context") == "deep"       # not a candidate: the best
    with pytest.raises(ValueError, match="margin must be >= 0"):
        choose_front(table, -0.01)
    with pytest.raises(ValueError, match="no candidates"):
        choose_front({})


def test_the_front_is_chosen_by_default_and_kept_where_nothing_can_be_held_out(world, fitted, tmp_path):
    """Selection is ``FitConfig``'s default. With one training video per class nothing can be held out: the
    fit says so in one line, records it in ``select.json`` and keeps the preferred candidate (the context
    score), training no candidate. The context front is the default one: the default score and the boundary
    score, its detector trained with 8 folds of cross-fitting."""
    assert FitConfig().select_front and FitConfig().select_prefer == "context"
    db = read_database(world / "annotations.json")
    first: dict[str, str] = {}
    for v, e in sorted(db.items()):
        if e["subset"] == "validation" and e["annotations"]:
            first.setdefault(e["annotations"][0]["label"], v)
    single = {v: e | {"subset": "spare"} if e["subset"] == "validation" and v not in first.values() else e
              for v, e in db.items()}
    ann = tmp_path / "single.json"
    write_annotations(ann, single)
    lines: list[str] = []
    work = with_features(fitted, tmp_path / "work")
    report = fit(world / "videos", ann, work, replace(CFG, select_front=True, figure_videos=0, detector_epochs=1),
                 log=lines.append,
                 progress=False, extract_streams=streams(CFG))
    note = "no class of the training subset 'validation' has two videos, so none can be held out"
    assert report.selection["chosen"] == "context" and report.selection["heldout"] == []
    assert "the preferred candidate, context, is kept" in report.selection["note"]
    assert note in report.selection["note"] and [m for m in lines if note in m] == [f"fit: {report.selection['note']}"]
    assert json.loads((work / "select.json").read_text()) == report.selection
    assert not any((work / "select" / name).exists() for name in SELECT_CANDIDATES)
    model, ckpt = load_detector(work / "detector.pt")
    assert model.config.front == "context" and (work / "context_boundaries.pt").exists()   # the default context front:
    assert len(model.front) == 2 and ckpt["train"]["context_folds"] == FitConfig().context_folds == 8   # 17th round
    assert f"front not chosen: {report.selection['note']}" in describe(report, work).splitlines()


def _no_coupling(where=lambda annotations: True):
    """A ``build_pairs`` that finds no coupling samples where ``where(annotations)`` holds."""
    from refactor.errors import NoCouplingSamples
    from refactor.pairs import build_pairs

    def fake(feature_dir, annotations, *rest):
        if where(Path(annotations)):
            raise NoCouplingSamples("class 'walk' has no coupling samples (1 such classes)")
        return build_pairs(feature_dir, annotations, *rest)
    return fake


def test_without_coupling_samples_the_fit_chooses_between_the_other_fronts(world, fitted, tmp_path, monkeypatch):
    """Where RefactorNet cannot be trained (a class without coupling samples), the default fit says so in one
    line, chooses between the baseline and the deep baseline (RefactorNet's default sizes), and the ablation
    has only their rows; a rerun trains nothing; with ``--no-select-front`` it is a one-line FitError."""
    from refactor.model import RefactorConfig
    monkeypatch.setattr("detect.fit.build_pairs", _no_coupling())
    lines: list[str] = []
    work = with_features(fitted, tmp_path / "work")
    cfg = replace(CFG, select_front=True, ablation=True, figure_videos=1, detector_epochs=1)
    report = fit(world / "videos", world / "annotations.json", work, cfg, log=lines.append, progress=False,
                 extract_streams=streams(cfg))
    assert "class 'walk' has no coupling samples" in report.no_refactor
    assert len([m for m in lines if m.startswith("fit: RefactorNet cannot be trained")]) == 1
    table = json.loads((work / "select.json").read_text())
    assert list(table["average_mAP"]) == ["baseline", "deep"] and "cannot be trained" in table["candidates_note"]
    # the preferred candidate (the context score) is not among them: the best of the two is taken
    assert table["chosen"] == choose_front(table["average_mAP"], CFG.select_margin / 100, CFG.select_prefer)
    assert table["chosen"] == max(table["average_mAP"], key=table["average_mAP"].get)
    model = load_detector(work / "detector.pt")[0]
    assert model.config.front == SELECT_CANDIDATES[table["chosen"]]
    deep = load_detector(work / "select" / "deep" / "detector.pt")[0]
    assert deep.config.refactor == RefactorConfig(in_dim=deep.config.in_dim)
    ablation = json.loads((work / "ablation.json").read_text())
    assert list(ablation["variants"]) == ["baseline", "deep"] and "left out" in ablation["note"]
    assert ablation["variants"][table["chosen"]]["average_mAP"] == report.result["average_mAP"]
    assert not (work / "refactor.pt").exists() and "RefactorNet not trained: " in describe(report, work)
    again = run(world, work, cfg)
    assert not any(again.ran.values())
    with pytest.raises(FitError, match=r"^RefactorNet cannot be trained: class 'walk' has no coupling samples "
                                       r"\(1 such classes\) \(without --no-select-front the fit chooses"):
        run(world, work, replace(cfg, select_front=False))


def test_a_refactor_candidate_without_coupling_samples_is_left_out(world, fitted, tmp_path, monkeypatch):
    """Where only the held-out split leaves a class without coupling samples, neither RefactorNet nor the context
    score is a candidate and the deep baseline candidate takes the main stage 1's sizes."""
    monkeypatch.setattr("detect.fit.build_pairs", _no_coupling(lambda ann: ann.parent.name == "select"))
    work = with_features(fitted, tmp_path / "work")
    report = run(world, work, replace(CFG, select_front=True, figure_videos=0, detector_epochs=1,
                                      select_candidates=tuple(SELECT_CANDIDATES)))
    table = report.selection
    assert list(table["average_mAP"]) == ["baseline", "deep"] and report.no_refactor is None
    note = table["candidates_note"]
    assert note.startswith("context is not a candidate: without the held-out videos class")
    assert "; refactor is not a candidate: without the held-out videos class" in note
    assert (work / "select" / "deep" / "refactor.pt").read_bytes() == (work / "refactor.pt").read_bytes()


def test_a_selected_baseline_is_the_main_model_and_the_ablation_trains_refactornet(world, fitted, tmp_path):
    """When the selection picks another front than RefactorNet (here the only candidate), the main detector
    has that front, the ablation's row of it is the main result, and RefactorNet is trained as a row of its
    own from the main stage-1 checkpoint."""
    work = with_features(fitted, tmp_path / "work")
    report = run(world, work, replace(CFG, select_front=True, ablation=True, figure_videos=1, detector_epochs=1,
                                      select_candidates=("baseline",)))
    assert report.selection["chosen"] == "baseline"
    assert load_detector(work / "detector.pt")[0].config.front == "none"
    table = json.loads((work / "ablation.json").read_text())
    main = json.loads((work / "result.json").read_text())
    assert table["variants"]["baseline"]["average_mAP"] == pytest.approx(main["average_mAP"])
    assert load_detector(work / "ablation" / "refactor" / "detector.pt")[0].config.front == "refactor"
    assert not (work / "ablation" / "baseline").exists()
    # no RefactorNet in front: stage 1's draws the CAM figures
    assert [p.name for p in (work / "figures").glob("cam_*")] == [f"cam_{first_test_video(world)}.png"]
    assert (work / "figures" / "map_vs_tiou.png").is_file()


def test_context_border_boundaries_and_folds_reach_every_context_detector(world, fitted, tmp_path):
    """``--context-border 2 --context-boundaries --context-folds 2``: the context front holds the default score,
    the border's and the boundaries' (``WORK/context_border.pt``, ``WORK/context_boundaries.pt``), its detector
    trains on cross-fitted scores and holds the scorers of those checkpoints (that such training is
    ``train_detector``'s: ``tests/test_context.py``); a rerun does nothing; bad values are one line."""
    from common.fileio import sha256_file
    from refactor import load_context

    work = with_features(fitted, tmp_path / "work")
    cfg = replace(CFG, select_front=True, select_candidates=("context",), figure_videos=0, detector_epochs=1,
                  context_border=2, context_boundaries=True, context_folds=2)
    report = run(world, work, cfg)
    assert not report.ran["features"] and report.ran["detector"]
    assert load_context(work / "context_border.pt")[1]["config"]["border"] == 2
    assert load_context(work / "context.pt")[1]["config"]["border"] == 0
    bd = load_context(work / "context_boundaries.pt")[1]["config"]
    assert (bd["targets"], bd["window"]) == ("boundaries", 4)
    model, ckpt = load_detector(work / "detector.pt")
    forms = [(c.border, c.targets, c.window) for c in model.config.context_scores]
    assert forms == [(0, "kinds", 2), (2, "kinds", 2), (0, "boundaries", 4)] and ckpt["train"]["context_folds"] == 2
    held, _ = load_detector(work / "select" / "context" / "detector.pt")
    assert [(c.border, c.targets, c.window) for c in held.config.context_scores] == forms
    files = [work / f"{name}.pt" for name in ("context", "context_border", "context_boundaries")]
    assert [c["sha256"] for c in ckpt["context_checkpoints"]] == [sha256_file(p) for p in files]
    for scorer, path in zip(model.front, files):                    # the scorers learnt on all training videos
        for name, value in load_context(path)[0].state_dict().items():
            torch.testing.assert_close(scorer.state_dict()[name], value, rtol=0, atol=0)
    assert not any(run(world, work, cfg).ran.values())
    with pytest.raises(FitError, match="--context-folds 0 or >= 2"):
        run(world, work, replace(cfg, context_folds=1))
    with pytest.raises(FitError, match="--context-boundary-window must be >= 0"):
        run(world, work, replace(cfg, context_boundary_window=-1))


def test_score_gain_reaches_the_context_detectors_only(world, fitted, tmp_path):
    """``--score-gain 4``: every detector with the context front (the main one, the selection's) is built with
    ``DetectorConfig.score_gain`` 4, the baseline's with 1; another gain is another stage (a rerun with it
    retrains the context detectors); a gain of 0 is one line."""
    work = with_features(fitted, tmp_path / "work")
    cfg = replace(CFG, select_front=True, select_candidates=("baseline", "context"), select_prefer="context",
                  select_margin=100.0, figure_videos=1, detector_epochs=1, score_gain=4.0, context_folds=0,
                  context_boundaries=False)                     # the cheapest context front: one score, no folds
    report = run(world, work, cfg)
    assert report.selection["chosen"] == "context"
    # the front is not RefactorNet: stage 1's (WORK/refactor.pt) draws the CAM figures
    assert [p.name for p in report.figures if p.name.startswith("cam_")] == [f"cam_{first_test_video(world)}.png"]
    assert load_detector(work / "detector.pt")[0].config.score_gain == 4.0
    assert load_detector(work / "select" / "context" / "detector.pt")[0].config.score_gain == 4.0
    assert load_detector(work / "select" / "baseline" / "detector.pt")[0].config.score_gain == 1.0
    again = run(world, work, replace(cfg, score_gain=2.0))
    assert again.ran["detector"] and load_detector(work / "detector.pt")[0].config.score_gain == 2.0
    assert (work / "select.json").is_file()
    run(world, work, replace(cfg, score_gain=2.0, select_front=False))
    assert not (work / "select.json").exists()                   # no choice was made: no earlier one is left
    with pytest.raises(FitError, match="--score-gain must be > 0"):
        run(world, work, replace(cfg, score_gain=0.0))


def test_ablation_table_columns_line_up_whatever_the_names():
    table = {"tiou": [0.3, 0.5, 0.7], "variants": {
        "refactor": {"name": "RefactorNet", "mAP": [0.5, 0.4, 0.3], "average_mAP": 0.4,
                     "quality": {"accuracy": 0.75, "mean_tiou": 0.612}},
        "context": {"name": "Context score beside f (cross-fitted over 8 folds, boundary score, gain 16)",
                    "mAP": [0.6, 0.5, 0.25], "average_mAP": 0.45, "quality": None}}}
    lines = ablation_table(table).splitlines()
    assert len({len(line) for line in lines}) == 1                      # every row as wide as the header
    assert lines[1].split()[-6:] == ["50.00", "40.00", "30.00", "40.00", "75.0", "0.612"]
    assert lines[2].split()[-6:] == ["60.00", "50.00", "25.00", "45.00", "-", "-"]
    assert lines[0].index("avg") == lines[1].index("40.00", lines[1].index("30.00")) + 2
