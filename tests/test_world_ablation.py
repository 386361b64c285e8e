"""benchmarks/world_ablation.py's world flags: any WorldConfig field but the seed, over the demo's world, each
world in its own work folder."""

import argparse
import json

import numpy as np
import torch

import pytest

from benchmarks.feature_worlds import ACTION, BACKGROUND, CONTEXT
from benchmarks.refactor_study import OTHER_CONTEXT, measure_context
from benchmarks.world_ablation import (WORLD_SECTION, class_views, collapse_line, main, remeasure, snippet_kinds,
                                       tiou_table, world_settings)
from common.config import add_section_arguments
from detect.demo import DEMO_WORLD


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_section_arguments(p, WORLD_SECTION)
    return p.parse_args(argv)


def test_no_flags_is_the_demo_world_in_the_demo_folder():
    assert world_settings(_parse([])) == (DEMO_WORLD, "demo")
    # a flag equal to the demo's value changes nothing either (the folder is the demo's)
    assert world_settings(_parse(["--test-videos", str(DEMO_WORLD.test_videos)])) == (DEMO_WORLD, "demo")


def test_flags_set_fields_over_the_demo_world_and_name_a_folder_of_their_own():
    world, folder = world_settings(_parse(["--train-videos", "48", "--num-classes", "6", "--context", "2,5"]))
    assert (world.train_videos, world.num_classes, world.context) == (48, 6, (2.0, 5.0))
    assert world.test_videos == DEMO_WORLD.test_videos == 12 and world.seed == DEMO_WORLD.seed   # the demo's, kept
    assert folder.startswith("world-") and folder != "demo"
    # the same settings in another order: the same folder; other settings: another
    assert world_settings(_parse(["--num-classes", "6", "--context", "2,5", "--train-videos", "48"]))[1] == folder
    assert world_settings(_parse(["--train-videos", "48", "--num-classes", "5"]))[1] not in (folder, "demo")


def test_a_bad_world_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--num-classes", "9", "--seeds", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "num_classes must be in [1, 8], got 9" in err
    with pytest.raises(SystemExit):
        main(["--seed", "3"])                          # the seed is --seeds', not a world flag


def _run(seed: int, base: list[float], context: list[float], chosen: str | None = None) -> dict:
    variants = {"baseline": {"mAP": base, "average_mAP": sum(base) / len(base)},
                "context": {"mAP": context, "average_mAP": sum(context) / len(context)}}
    run = {"seed": seed, "ablation": {"tiou": [0.3, 0.5, 0.7], "variants": variants}}
    if chosen:
        run["selection"], run["selected"] = {"chosen": chosen}, variants[chosen]
    return run


def test_the_tiou_table_gives_each_threshold_its_mean_std_and_paired_difference():
    runs = [_run(0, [1.0, 0.9, 0.5], [1.0, 0.9, 0.7], "context"), _run(1, [1.0, 1.0, 0.6], [0.9, 1.0, 1.0], "baseline")]
    lines = tiou_table(runs).splitlines()
    assert lines[0] == "| mAP (%) at tIoU | 0.3 | 0.5 | 0.7 |"
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in lines[2:]}
    assert rows["Baseline (raw features)"] == ["100.0 ± 0.0", "95.0 ± 7.1", "55.0 ± 7.1 |"]
    # the deep baseline is in no run: no row; the chosen front is the context on seed 0, the baseline on seed 1
    assert not any(name.startswith("Deep") for name in rows)
    assert rows["Front chosen on held-out training videos"] == ["100.0 ± 0.0", "95.0 ± 7.1", "65.0 ± 7.1 |"]
    # paired: context − baseline per seed is (0, 0, 20) and (−10, 0, 40)
    context = next(v for k, v in rows.items() if k.startswith("Δ Context"))
    assert context == ["-5.0 ± 7.1", "0.0 ± 0.0", "30.0 ± 14.1 |"]


def test_report_prints_the_tables_of_saved_runs(tmp_path, capsys):
    saved = tmp_path / "runs.json"
    run = _run(0, [1.0, 0.9, 0.5], [1.0, 0.9, 0.7], "context") | {"seconds": {"features": 2.0}}
    saved.write_text(json.dumps([run]))
    assert main(["--report", str(saved)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seeds 0\n") and "| Front chosen on held-out training videos (context 1) | 86.7 |" in out
    assert "| features (I3D RGB) | 2.0 |" in out
    saved.write_text(json.dumps([run | {"score_gain": 16.0}]))         # a fit with --score-gain says so
    assert main(["--report", str(saved)]) == 0
    assert capsys.readouterr().out.startswith("seeds 0; score gain 16\n")


def test_snippet_kinds_mark_actions_inside_their_scenes_and_the_rest_background():
    entry = {"scenes": [{"scene": "pool", "segment": [1.0, 5.0], "action": True}],
             "annotations": [{"segment": [2.0, 3.0], "label": "Spin"}]}
    times = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 5.5])
    want = [BACKGROUND, CONTEXT, CONTEXT, ACTION, ACTION, ACTION, CONTEXT, CONTEXT, BACKGROUND]
    np.testing.assert_array_equal(snippet_kinds(entry, times), want)


def test_class_views_pair_each_class_s_actions_with_its_own_scene_only():
    # neutral | pool (action 2-3) | neutral | gym (no action) | pool again (action 9-10)
    entry = {"scenes": [{"scene": "pool", "segment": [1.0, 4.0], "action": True},
                        {"scene": "gym", "segment": [5.0, 7.0], "action": False},
                        {"scene": "pool", "segment": [8.0, 11.0], "action": True}],
             "annotations": [{"segment": [2.0, 3.0], "label": "Spin"}, {"segment": [9.0, 10.0], "label": "Spin"}]}
    times = np.arange(0.5, 12.0, 1.0)               # 0.5 .. 11.5
    (view,) = class_views(entry, times)             # one class with actions: one view
    B, C, A, O = BACKGROUND, CONTEXT, ACTION, OTHER_CONTEXT
    np.testing.assert_array_equal(view, [B, C, A, C, B, O, O, B, C, A, C, B])
    # two classes with actions: each sees its own scene as context and the other's (action snippets unpaired)
    entry["scenes"][1]["action"] = True
    entry["annotations"].append({"segment": [5.8, 6.2], "label": "Loop"})
    assert len(class_views(entry, times)) == 1      # an action between snippet centres has no snippet to pair
    entry["annotations"][-1]["segment"] = [6.0, 6.9]
    gym, pool = class_views(entry, times)           # in scene-name order
    np.testing.assert_array_equal(gym, [B, O, -1, O, B, C, A, B, O, -1, O, B])
    np.testing.assert_array_equal(pool, [B, C, A, C, B, O, -1, B, C, A, C, B])


class _FixedScores(torch.nn.Module):
    """A stand-in context scorer whose outputs are given: (T, K) context probabilities per video."""

    def __init__(self, scores):
        super().__init__()
        self.num_classes, self.scores, self.calls = scores[0].shape[1], list(scores), 0

    def forward(self, x):
        out = torch.from_numpy(self.scores[self.calls]).float().T[None]      # (1, K, T)
        self.calls += 1
        return torch.cat([out, torch.zeros_like(out), torch.zeros_like(out[:, :1])], dim=1)


def test_measure_context_with_views_pairs_actions_with_their_own_class_s_context():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    bg = np.array([0.6, 0.8])
    scores = np.stack([a, a, b, bg])                # action of class 0, its context, class 1's context, background
    kinds = [np.array([ACTION, CONTEXT, CONTEXT, BACKGROUND])]
    views = [[np.array([ACTION, CONTEXT, OTHER_CONTEXT, BACKGROUND])]]
    plain = measure_context(_FixedScores([scores]), [np.zeros((4, 3))], kinds)
    assert plain["phiC_ctx"] == pytest.approx(0.5)  # (1 + 0) / 2: both scenes pooled
    got = measure_context(_FixedScores([scores]), [np.zeros((4, 3))], kinds, views)
    assert got["phiC_ctx"] == pytest.approx(1.0) and got["phiC_other"] == pytest.approx(0.0)
    assert got["phiC_scene"] == pytest.approx(0.5) and got["phiC_bg"] == pytest.approx(0.6)


def test_collapse_line_averages_the_seeds_that_have_figures():
    runs = [{"phiC": {"phiC_ctx": 0.9, "phiC_bg": 0.5, "phiC_pair": 0.4}},
            {"phiC": {"phiC_ctx": 0.7, "phiC_bg": 0.3, "phiC_pair": 0.4}}, {}]
    assert collapse_line(runs) == ("φC of the context score (test videos, 2 seeds): cos(action, context) 0.80 ± 0.14, "
                                   "cos(action, background) 0.40 ± 0.14, random pairs 0.40 ± 0.00; "
                                   "context − background per seed: +0.40, +0.40")
    assert collapse_line([{}]).startswith("(no run has")
    views = [{"phiC": {"phiC_ctx": 0.9, "phiC_other": 0.1, "phiC_scene": 0.5, "phiC_bg": 0.5, "phiC_pair": 0.4}}]
    assert collapse_line(views) == ("φC of the context score (test videos, 1 seeds): cos(action, its class's context) "
                                    "0.90 ± 0.00, cos(action, other classes' context) 0.10 ± 0.00, cos(action, any "
                                    "scene's context) 0.50 ± 0.00, cos(action, background) 0.50 ± 0.00, random pairs "
                                    "0.40 ± 0.00; context − background per seed: +0.40")


def test_remeasure_refuses_a_work_folder_that_holds_another_fit(tmp_path):
    run = {"seed": 3, "ablation": {"variants": {"baseline": {"average_mAP": 0.8}}}}
    with pytest.raises(ValueError, match="does not hold seed 3's fit"):
        remeasure([run], tmp_path)                  # no folder at all
    (tmp_path / "seed3" / "fit").mkdir(parents=True)
    (tmp_path / "seed3" / "fit" / "ablation.json").write_text(json.dumps(
        {"variants": {"baseline": {"average_mAP": 0.7}}}))
    with pytest.raises(ValueError, match="does not hold seed 3's fit"):
        remeasure([run], tmp_path)                  # another fit's baseline
    run["ablation"]["variants"]["baseline"]["average_mAP"] = 0.7
    assert remeasure([run], tmp_path) == [run]      # its fit, without a context score: no φC figures to add


