"""Speed of `evaluate` on a THUMOS14-sized input: the real test ground truth (212 videos, 3,358
instances) and 200 random predictions a video (42,400), at tIoU 0.3:0.7:0.1 and 0.5:0.95:0.05;
AR@AN with 1,000 random proposals a video (212,000).

    python benchmarks/evaluate.py [--ground-truth ../shared/data/thumos14/thumos14.json] [--per-video 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluate.data import load_ground_truth, load_predictions, parse_thresholds  # noqa: E402
from evaluate.detection import evaluate_detection  # noqa: E402
from evaluate.proposals import average_recall_vs_an  # noqa: E402


def random_results(gt, per_video: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    results = {}
    for vid in gt.videos:
        dur = gt.durations.get(vid, 200.0)
        starts = rng.uniform(0, dur, per_video)
        results[vid] = [{"label": gt.classes[int(c)], "score": float(p), "segment": [float(s), float(s + l)]}
                        for s, l, c, p in zip(starts, rng.uniform(1, 20, per_video),
                                              rng.integers(0, len(gt.classes), per_video), rng.random(per_video))]
    return {"results": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ground-truth", default=str(REPO.parent / "shared" / "data" / "thumos14" / "thumos14.json"))
    p.add_argument("--per-video", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    gt = load_ground_truth(args.ground_truth, "test")
    data = random_results(gt, args.per_video)
    t0 = time.perf_counter()
    pred = load_predictions(data, gt)
    load_s = time.perf_counter() - t0
    print(f"{len(gt.labels)} ground truths in {len(gt.videos)} videos, {len(pred.scores)} predictions; "
          f"parsing {load_s * 1000:.0f} ms")
    for spec in ("0.3:0.7:0.1", "0.5:0.95:0.05"):
        thresholds = parse_thresholds(spec)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = evaluate_detection(gt, pred, thresholds)
            times.append(time.perf_counter() - t0)
        print(f"tIoU {spec:<14} ({len(thresholds):2d} thresholds): median {1000 * np.median(times):6.1f} ms, "
              f"best {1000 * min(times):6.1f} ms  (average mAP {100 * res.average_mAP:.2f}%)")
    # proposals: 1000 a video (AR@1000 on THUMOS14), BSN's thresholds 0.5:1.0:0.05
    props = random_results(gt, 1000, seed=1)
    pred = load_predictions(props, gt, proposals=True)
    thresholds = parse_thresholds("0.5:1.0:0.05")
    times = []
    for _ in range(max(1, args.repeat // 2)):
        t0 = time.perf_counter()
        res = average_recall_vs_an(gt, pred, thresholds, max_avg_nr_proposals=1000)
        times.append(time.perf_counter() - t0)
    print(f"proposals: {len(pred.scores)} ({len(thresholds)} thresholds, AN up to 1000): median "
          f"{1000 * np.median(times):6.1f} ms (AUC {100 * res.auc_normalized:.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
