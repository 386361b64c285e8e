"""benchmarks/world_oracle.py: exact per-snippet labels of a rendered video, and where detections fall."""

import json

import numpy as np
import pytest

from benchmarks.world_oracle import boundary_offsets, oracle_channels, report, write_oracle_features
from extract.features import read_features, write_features

# neutral | field (Loop from 2 to 3 s) | neutral | pool, no action
ENTRY = {"subset": "test", "duration": 9.0,
         "scenes": [{"scene": "field", "segment": [1.0, 4.0], "action": True},
                    {"scene": "pool", "segment": [6.0, 8.0], "action": False}],
         "annotations": [{"segment": [2.0, 3.0], "label": "Loop"}]}
TIMES = np.arange(0.5, 9.0, 1.0)        # 0.5 .. 8.5


def test_oracle_channels_mark_each_scene_s_class_and_each_action_s_class():
    scene = oracle_channels(ENTRY, TIMES, 2, actions=False)
    # field is class 1's scene (Loop), pool class 0's (Spin); neutral snippets are zeros
    np.testing.assert_array_equal(scene.argmax(1)[scene.sum(1) > 0], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(np.flatnonzero(scene.sum(1)), [1, 2, 3, 6, 7])
    both = oracle_channels(ENTRY, TIMES, 2, actions=True)
    np.testing.assert_array_equal(both[:, :2], scene)
    np.testing.assert_array_equal(both[:, 2:], [[0, 0], [0, 0], [0, 1]] + [[0, 0]] * 6)   # only 2.5 s is in Loop


def test_write_oracle_features_puts_the_labels_beside_the_features(tmp_path):
    f = np.random.default_rng(0).standard_normal((len(TIMES), 3)).astype(np.float32)
    attrs = {"fps": 10.0, "window": 10, "stride": 10, "num_frames": 90, "duration": 9.0, "source": "v.mp4",
             "flow_method": "none", "weights": {"rgb": {"id": "x", "sha256": "0" * 64}}}
    (tmp_path / "in").mkdir()
    write_features(tmp_path / "in" / "v.h5", {"rgb": f}, attrs)
    np.testing.assert_allclose(read_features(tmp_path / "in" / "v.h5").times, TIMES)
    out = write_oracle_features(tmp_path / "in", {"v": ENTRY}, 2, True, tmp_path / "out", scale=3.0)
    got = read_features(out / "v.h5")
    np.testing.assert_array_equal(got.features, np.concatenate([f, 3 * oracle_channels(ENTRY, TIMES, 2, True)], 1))
    assert (got.fps, got.window, got.stride, got.num_frames) == (10.0, 10, 10, 90)


def test_boundary_offsets_take_the_best_scored_match_of_the_right_class(tmp_path):
    database = {"v": ENTRY | {"annotations": [{"segment": [2.0, 4.0], "label": "Loop"},
                                              {"segment": [6.0, 7.0], "label": "Spin"}]}}
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"database": database}))
    predictions = {"v": [{"segment": [1.5, 4.5], "label": "Loop", "score": 0.9},    # tIoU 2/3
                         {"segment": [2.0, 4.0], "label": "Loop", "score": 0.5},    # exact, lower score
                         {"segment": [2.0, 4.0], "label": "Spin", "score": 1.0},    # wrong class
                         {"segment": [6.9, 9.0], "label": "Spin", "score": 1.0}]}   # tIoU 0.1/3 < 0.3: no match
    got = boundary_offsets(ann, predictions)
    assert got["start"] == pytest.approx(-0.5) and got["end"] == pytest.approx(0.5)
    assert got["tiou"] == pytest.approx(2 / 3) and got["below_07"] == 1.0    # both actions below 0.7 or unmatched


def test_report_says_whether_the_retrained_baseline_is_the_fit_s():
    def run(seed, base, fit, scene):
        v = lambda m: {"average_mAP": m, "mAP": [m], "bounds": {"start": 0.0, "end": 0.1, "tiou": 0.8,  # noqa: E731
                                                               "below_07": 0.2}}
        return {"seed": seed, "fit_baseline": fit, "variants": {"baseline": v(base), "oracle_scene": v(scene),
                                                                "oracle_labels": v(scene)}}
    text = report([run(0, 0.8, 0.8, 0.9), run(1, 0.6, 0.6, 0.9)])
    assert "reproduces the fit's on every seed" in text
    assert "| oracle_scene | 90.0 ± 0.0 | 20.0 ± 14.1 | 90.0 ± 0.0 | +0.00 | +0.10 | 0.800 | 20 |" in text
    assert "differs from the fit's" in report([run(0, 0.8, 0.7, 0.9)])


def test_world_gain_report_pairs_each_gain_with_the_baseline_and_gain_1():
    from benchmarks.world_gain import report as gain_report

    def rec(seed, gain, avg, base, fit):
        return {"seed": seed, "gain": gain, "avg": avg, "mAP": [avg], "baseline": base, "fit_context": fit}
    records = [rec(0, 1.0, 0.80, 0.70, 0.80), rec(0, 4.0, 0.90, 0.70, 0.80),
               rec(1, 1.0, 0.60, 0.70, 0.60), rec(1, 4.0, 0.80, 0.70, 0.60)]
    text = gain_report(records)
    assert text.startswith("seeds 0,1; gain 1 reproduces the fit's context row")
    assert "| baseline | 70.0, 70.0 | 70.0 | — | — |" in text
    assert "| 1 | 80.0, 60.0 | 70.0 | +0.0 ± 14.1 | — |" in text
    assert "| 4 | 90.0, 80.0 | 85.0 | +15.0 ± 7.1 | +15.0 ± 7.1 |" in text
    # without a gain-1 rerun the fit's own context row is the reference; a rerun that differs is flagged
    alone = gain_report([rec(0, 4.0, 0.90, 0.70, 0.80)])
    assert "| 1 | 80.0 | 80.0 | +10.0 | — |" in alone and "| 4 | 90.0 | 90.0 | +20.0 | +10.0 |" in alone
    assert "does NOT reproduce" in gain_report([rec(0, 1.0, 0.75, 0.70, 0.80)])
