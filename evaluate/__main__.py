"""python -m evaluate detection|proposals|quality: ActivityNet-exact temporal detection metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.paths import safe_name, unusable_outputs
from evaluate.data import EvaluationInputError, load_detections, load_ground_truth, load_predictions, parse_thresholds
from evaluate.detection import evaluate_detection
from evaluate.plots import plot_map_vs_tiou, plot_per_class_ap, plot_recall_vs_an, plot_timeline
from evaluate.proposals import average_recall_vs_an, recall_at
from evaluate.quality import proposal_quality
from evaluate.report import detection_table, write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, predictions_flag: str, default_tiou: str) -> None:
        p.add_argument("--ground-truth", required=True,
                       help="annotations JSON (ActivityNet layout) or THUMOS14 annotation folder (<Class>_test.txt)")
        p.add_argument(predictions_flag, required=True, dest="predictions", help="results JSON (ActivityNet layout)")
        p.add_argument("--subset", required=True,
                       help="ground-truth subset, e.g. test (THUMOS14) or validation (ActivityNet)")
        p.add_argument("--tiou", default=default_tiou, help=f"start:stop:step or a comma list (default {default_tiou})")
        p.add_argument("--out", help="write the result JSON here")

    p = sub.add_parser("detection", help="mAP per tIoU threshold and their average")
    common(p, "--predictions", "0.3:0.7:0.1")
    p.add_argument("--ignore-unknown-labels", action="store_true",
                   help="drop predictions whose label is no class of the ground-truth file (default: error); "
                        "those of a class with no instance in --subset are left out either way, with a note")
    p.add_argument("--plot", metavar="DIR", help="write figures: mAP vs tIoU, per-class AP, timelines")
    p.add_argument("--timeline", action="append", default=[], metavar="VIDEO_ID",
                   help="video for a detection timeline figure (repeatable; default: the first video)")
    p.add_argument("--quiet", action="store_true", help="print only the mAP line, not the per-class table")

    p = sub.add_parser("proposals", help="average recall vs average number of proposals (AR@AN) and AUC")
    common(p, "--proposals", "0.5:0.95:0.05")
    p.add_argument("--max-avg-proposals", type=float, default=None,
                   help="AN of the last point (default: all proposals; ActivityNet uses 100)")
    p.add_argument("--an", default="50,100,200,500,1000", help="AN values to report AR at")
    p.add_argument("--plot", metavar="DIR", help="write the AR vs AN figure")

    p = sub.add_parser("quality", help="RefactorNet Table 3: accuracy and tIoU of high-quality detections")
    common(p, "--predictions", "0.7")
    p.add_argument("--top-k", type=int, default=None, help="use each video's top-k predictions by score")
    p.add_argument("--one-label", action="store_true",
                   help="examine each predicted segment once, with its best label (detectors that list every "
                        "segment once per class)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if unusable_outputs(f"evaluate {args.command}", files={"--out": args.out or None},
                        dirs={"--plot": getattr(args, "plot", None) or None}):
        return 2
    try:
        gt = load_ground_truth(args.ground_truth, args.subset)
        thresholds = parse_thresholds(args.tiou)
        if args.command == "detection":
            return _detection(args, gt, thresholds)
        if args.command == "proposals":
            return _proposals(args, gt, thresholds)
        return _quality(args, gt, thresholds)
    except EvaluationInputError as exc:
        print(f"evaluate {args.command}: {exc}", file=sys.stderr)
        return 1


def _notes(command: str, pred, subset: str) -> None:
    """One stderr line per input oddity that the metrics count as the official evaluator does."""
    if pred.reversed_segments:
        print(f"evaluate {command}: note: {pred.reversed_segments} prediction(s) end before they start; "
              "they count as false positives (tIoU 0), as in the official evaluator", file=sys.stderr)
    if pred.unknown_videos:
        print(f"evaluate {command}: note: predictions for {len(pred.unknown_videos)} video(s) without ground truth "
              f"in subset {subset!r} count as false positives (e.g. {pred.unknown_videos[0]})", file=sys.stderr)
    if pred.dropped_unknown_labels:
        print(f"evaluate {command}: note: dropped {pred.dropped_unknown_labels} prediction(s) with labels "
              "that are not ground-truth classes", file=sys.stderr)


def not_scored_note(left_out: dict[str, int], subset: str) -> str:
    """The line saying which predictions of classes without an instance in ``subset`` are left out
    (:func:`evaluate.data.load_detections`)."""
    n, k = sum(left_out.values()), len(left_out)
    names = ", ".join(repr(c) for c in list(left_out)[:5]) + (", ..." if k > 5 else "")
    return (f"note: {n} prediction{'s' if n != 1 else ''} of {k} class{'es' if k != 1 else ''} with no instance "
            f"in subset {subset!r} ({names}) {'are' if n != 1 else 'is'} not scored")


def _detection(args, gt, thresholds) -> int:
    pred, left_out = load_detections(args.predictions, gt,
                                     unknown_labels="ignore" if args.ignore_unknown_labels else "error")
    _notes("detection", pred, args.subset)
    if left_out:
        print(f"evaluate detection: {not_scored_note(left_out, args.subset)}", file=sys.stderr)
    unknown = [v for v in args.timeline if v not in gt.video_index and v not in pred.videos] if args.plot else []
    if unknown:                                             # said before anything is printed or written
        raise EvaluationInputError(f"--timeline {unknown[0]!r} is neither in the ground truth nor in the predictions")
    result = evaluate_detection(gt, pred, thresholds)
    print(detection_table(result, per_class=not args.quiet))
    if args.out:
        write_json(result.to_json(), args.out)
    if args.plot:
        folder = Path(args.plot)
        videos = args.timeline or [gt.videos[int(gt.video[0])]]
        plot_map_vs_tiou(result, folder / "map_vs_tiou.png")
        plot_per_class_ap(result, folder / "per_class_ap.png")
        for vid in videos:
            plot_timeline(gt, pred, vid, folder / f"timeline_{safe_name(vid)}.png")
        print(f"figures in {folder}")
    return 0


def _proposals(args, gt, thresholds) -> int:
    pred = load_predictions(args.predictions, gt, proposals=True)
    if pred.reversed_segments:
        print(f"evaluate proposals: note: {pred.reversed_segments} proposal(s) end before they start; they recall "
              "nothing (tIoU 0), as in the official evaluator", file=sys.stderr)
    result = average_recall_vs_an(gt, pred, thresholds, max_avg_nr_proposals=args.max_avg_proposals)
    ans = [float(a) for a in args.an.split(",") if a.strip()]
    reach = result.proposals_per_video[-1]
    beyond = [a for a in ans if a > reach + 1e-9]
    if len(beyond) < len(ans):
        print("  ".join(f"AR@{a:g} {100 * recall_at(result, a):.2f}%" for a in ans if a not in beyond))
    if beyond:
        print(f"evaluate proposals: note: {', '.join(f'AR@{a:g}' for a in beyond)} not reported: the proposals "
              f"reach an average of {reach:.1f} per video", file=sys.stderr)
    print(f"AUC {100 * result.auc / result.proposals_per_video[-1]:.2f}% (area {result.auc:.2f} over AN up to "
          f"{result.proposals_per_video[-1]:.1f})")
    if args.out:
        write_json(result.to_json(), args.out)
    if args.plot:
        plot_recall_vs_an(result, Path(args.plot) / "recall_vs_an.png")
    return 0


def _quality(args, gt, thresholds) -> int:
    if len(thresholds) != 1:
        raise EvaluationInputError("quality takes one tIoU threshold (default 0.7)")
    pred = load_predictions(args.predictions, gt, unknown_labels="ignore")
    if pred.reversed_segments:
        print(f"evaluate quality: note: {pred.reversed_segments} prediction(s) end before they start; their tIoU "
              "is 0, so none is high-quality", file=sys.stderr)
    result = proposal_quality(gt, pred, iou_threshold=float(thresholds[0]), top_k=args.top_k,
                              one_label=args.one_label)
    print(f"high-quality detections (tIoU > {thresholds[0]:g}): {result.count}; "
          f"classification accuracy {100 * result.accuracy:.2f}%; average tIoU {result.mean_tiou:.4f}")
    if args.out:
        write_json(result.to_json(), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
