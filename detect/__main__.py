"""python -m detect train|run|video|cam|fit: the BSN-style detector (boundary proposals, RoI heads, Soft-NMS),
Grad-CAM figures of its RefactorNet front, and the whole mission from raw videos in one cached run."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from common.annotations import AnnotationError, subset_videos, video_instances
from common.checkpoint import checkpoint_kind
from common.config import (ConfigError, add_config_arguments, add_section_arguments, check_settings, dump_settings,
                           effective_settings, read_config_file, resolve_settings)
from common.datasets import dataset_names, detect_dataset, get_dataset
from common.paths import safe_name, unusable_outputs
from detect.checkpoint import load_detector, require_file, run_files, save_detector
from detect.config import DetectorError, InferenceConfig, TrainConfig
from detect.data import DetectDataError, read_window, scan_videos
from detect.fit import FIT_SECTION, FitConfig, FitError, ablation_table, describe, fit
from detect.fusion import VideoScoresError
from detect.infer import boundary_probabilities, run_detector, subset_members
from detect.model import DetectorConfig
from detect.plots import plot_boundaries, plot_history
from detect.render import RenderConfig, render_video
from detect.settings import RUN_INFERENCE, detector_settings, train_sections
from detect.train import train_detector
from detect.validation import VAL_KEY, plot_validation
from detect.video import detect_videos
from extract.features import FeatureFileError
from extract.collect import collect_videos
from extract.video import VideoError
from refactor import RefactorError, RefactorNet, load_refactor
from refactor.cam import add_cam_arguments, cam_options, checkpoint_samples, draw_cams
from refactor.errors import check_feature_folder
from refactor.samples import SampleConfig
from weights import WeightsError


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train the detector on feature files + annotations",
                       description="Train the detector. Every setting below has one default (its dataclass); "
                                   "--config FILE (YAML or JSON, {model: {...}, train: {...}, inference: {...}}) "
                                   "sets any of them and flags override the file.")
    p.add_argument("--features", help="folder of feature files (python -m extract / refactor apply); required")
    p.add_argument("--annotations", help="ground truth: ActivityNet-layout JSON or THUMOS14 annotation folder; "
                                         "required")
    p.add_argument("--out", help="checkpoint to write (next to it: OUT.best.pt with --val-subset, OUT.log.jsonl, "
                                 "and OUT.state while unfinished); required")
    front = p.add_mutually_exclusive_group()
    front.add_argument("--refactor", metavar="CKPT",
                       help="RefactorNet stage-1 checkpoint: train it end to end with the detector (stage 2; "
                            "front refactor)")
    front.add_argument("--context-score", metavar="CKPT", action="append",
                       help="context-score checkpoint (python -m refactor context): the detector sees f beside "
                            "each class's context and action probabilities, the scorer frozen inside it (front "
                            "context); repeat it to put several scores beside f, in that order (--context-folds "
                            "N: train on cross-fitted scores)")
    front.add_argument("--baseline", action="store_true", help="raw features, no front (front none, the default)")
    front.add_argument("--deep-baseline", action="store_true",
                       help="temporal 1-D convolutions with RefactorNet's parameter count and depth in front "
                            "(Table 2; front deep); --refactor-config CKPT copies a stage-1 checkpoint's sizes")
    p.add_argument("--refactor-config", metavar="CKPT",
                   help="with --deep-baseline: take RefactorNet's sizes from this checkpoint")
    p.add_argument("--dataset", choices=(*dataset_names(), "auto"), default=None,
                   help="apply a dataset's conventions below --config and flags (common.datasets: training subset, "
                        "inference mode, temporal scale); auto: from the annotations' subset names")
    p.add_argument("--plot", metavar="DIR", help="write the loss curves (loss.png) and, with --val-subset, val_map.png")
    p.add_argument("--restart", action="store_true",
                   help="ignore the training state OUT.state left by an interrupted run (default: resume from it)")
    add_config_arguments(p)
    for section in train_sections():
        add_section_arguments(p.add_argument_group(f"{section.name} settings ({section.cls.__name__})"), section)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)

    for name, what in (("run", "detections for a folder of feature files"),
                       ("video", "raw video to detections in one step")):
        p = sub.add_parser(name, help=what)
        if name == "run":
            p.add_argument("--features", required=True, help="folder of feature files")
            p.add_argument("--subset", default=None,
                           help="only the videos of this subset of the training annotations")
            p.add_argument("--plot", metavar="DIR", help="write boundary-probability figures of some videos")
            p.add_argument("--plot-videos", default=None,
                           help="comma-separated video ids to plot (default: the first 3)")
            p.add_argument("--annotations", default=None, help="ground truth JSON to draw in the figures")
        else:
            p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files and/or folders")
            p.add_argument("--features-out", default=None, help="keep the extracted feature files here")
            p.add_argument("--weights-dir", default=None, help="converted I3D weights folder (default: the cache)")
            p.add_argument("--render", metavar="DIR", default=None,
                           help="also write each video with its detections drawn on it (DIR/<video>.mp4)")
            p.add_argument("--annotations", default=None,
                           help="ground truth JSON: drawn on the rendered timelines")
            p.add_argument("--summary-top", type=int, default=5, help="detections listed per video (default 5)")
        p.add_argument("--checkpoint", required=True, help="detector checkpoint (python -m detect train)")
        p.add_argument("--out", required=True, help="predictions JSON to write (ActivityNet results layout)")
        p.add_argument("--video-scores", default=None,
                       help="anet: video-level classification scores (CUHK-style JSON)")
        p.add_argument("--device", default="cpu" if name == "run" else "auto",
                       help="cpu, cuda, cuda:N (video: auto)")
        p.add_argument("--config", metavar="FILE", default=None,
                       help="YAML or JSON settings file (detect train's layout): its inference section overrides "
                            "the checkpoint's; flags override both")
        p.add_argument("--print-config", action="store_true",
                       help="print the effective inference settings as YAML and exit")
        add_section_arguments(p.add_argument_group("inference settings (InferenceConfig; default: the checkpoint's)"),
                              RUN_INFERENCE, defaults={f: "the checkpoint's" for f in
                                                       ("mode", "sigma", "top_k", "top_classes", "regress",
                                                        "min_score", "batch_size")})

    p = sub.add_parser("cam", help="Grad-CAM figures of a detector's RefactorNet front (as python -m refactor cam)")
    add_cam_arguments(p, "detector checkpoint with a RefactorNet front (detect train --refactor), or a stage-1 "
                         "RefactorNet checkpoint (refactor train)")
    _fit_parser(sub)
    for p in sub.choices.values():
        p.set_defaults(usage_error=p.error)         # a subcommand's own usage with its errors (main's checks)
    return parser


def _fit_parser(sub) -> None:
    p = sub.add_parser("fit", help="raw videos + ground truth to features, RefactorNet, detector, results, figures "
                                   "(cached stages)")
    p.add_argument("--videos", help="folder of the videos (searched recursively; id = file name); required")
    p.add_argument("--annotations",
                   help="ground truth: ActivityNet-layout JSON or THUMOS14 annotation folder; required")
    p.add_argument("--work", help="work folder: features/, refactor.pt, detector.pt, predictions.json, result.json, "
                                  "figures/, stages/; required")
    p.add_argument("--weights-dir", default=None, help="converted I3D weights folder (default: the cache)")
    add_config_arguments(p)
    add_section_arguments(p.add_argument_group("fit settings (FitConfig; --config FILE: {fit: {...}})"), FIT_SECTION)


def fit_config(args) -> FitConfig:
    """The :class:`FitConfig` of ``detect fit``'s arguments (defaults, then ``--config``, then flags)."""
    return FitConfig(**resolve_settings([FIT_SECTION], args, args.config)["fit"])


def _fit(args) -> int:
    cfg = fit_config(args)
    if args.print_config:
        print(dump_settings(effective_settings([(FIT_SECTION, cfg)])), end="")
        return 0
    report = fit(args.videos, args.annotations, args.work, cfg, weights_root=args.weights_dir)
    print(describe(report, Path(args.work)))
    if report.ablation is not None:
        print(ablation_table(report.ablation))
    return 0


def summary(results: dict, top: int = 5) -> str:
    """Per video, its ``top`` detections by score: label, start-end (seconds), score."""
    lines = []
    for vid, dets in results.items():
        best = sorted(dets, key=lambda d: -d.score)[:top]
        lines.append(f"{vid}: {len(dets)} detections" + (", best:" if best else ""))
        lines += [f"  {d.label:<24} {d.segment[0]:8.2f} - {d.segment[1]:8.2f} s   {d.score:.3f}" for d in best]
    return "\n".join(lines)


def _render(args, results: dict, instances: dict[str, list[tuple[float, float, str]]]) -> dict[Path, str]:
    """``detect video --render``: every detected video drawn, with its ground truth where ``instances``
    (:func:`common.annotations.video_instances`) has it; failures are returned, not raised."""
    paths, _ = collect_videos(args.videos)
    failed = {}
    for path in paths:
        if path.stem not in results:
            continue
        dest = Path(args.render) / f"{path.stem}.mp4"
        gt = ([{"segment": [start, end], "label": label} for start, end, label in instances[path.stem]]
              if path.stem in instances else None)
        try:
            render_video(path, dest, [d.to_json() for d in results[path.stem]], gt, RenderConfig())
            print(f"detect: rendered {dest}")
        except (VideoError, OSError) as exc:
            failed[path] = f"rendering failed: {exc}"
    return failed


def _inference(args, base: dict) -> InferenceConfig:
    """``detect run`` / ``video``: the checkpoint's inference settings, then the ``inference`` section of
    ``--config``, then the flags."""
    config = None
    if args.config is not None:
        data = read_config_file(args.config)
        check_settings(data, train_sections(), args.config)              # the whole file must make sense
        config = {k: v for k, v in data.items() if k == "inference"}
    over = resolve_settings([RUN_INFERENCE], args, config)["inference"]
    return InferenceConfig.from_dict(dict(base) | over)


class _ArgumentValueError(Exception):
    """An argument value that cannot be used, found before any work: one line on stderr, exit 2."""


def _plot_video_ids(args, ckpt: dict) -> list[str] | None:
    """``detect run --plot-videos``: the ids asked for (None: not given), each checked before any work to
    have a feature file in ``--features`` (and, with ``--subset``, to be a video of that subset);
    :class:`_ArgumentValueError` otherwise."""
    if args.plot_videos is None:
        return None
    wanted = [v for v in args.plot_videos.split(",") if v]
    if not wanted:
        raise _ArgumentValueError("--plot-videos names no video")
    folder = Path(args.features)
    if folder.is_dir():                                   # (no folder: run_detector says so)
        have = {f.stem for f in folder.glob("*.h5")}
        absent = [v for v in wanted if v not in have]
        if absent:
            more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
            raise _ArgumentValueError(f"--plot-videos: no feature file for video {absent[0]!r} in {folder}{more}")
    if args.subset is not None:
        members = subset_members(ckpt, args.subset)
        outside = [v for v in wanted if v not in members]
        if outside:
            raise _ArgumentValueError(f"--plot-videos: video {outside[0]!r} is not in subset {args.subset!r}")
    return wanted


def _plot_videos(args, results: dict, inference: InferenceConfig, wanted: list[str] | None,
                 instances: dict[str, list[tuple[float, float, str]]]) -> None:
    """Boundary probabilities, ground truth (``instances``, :func:`common.annotations.video_instances`) and
    detections of the chosen videos (``wanted``; None: the first 3), one PNG each."""
    model, ckpt = load_detector(args.checkpoint, args.device)
    wanted = wanted or list(results)[:3]
    missing = [v for v in wanted if v not in results]
    if missing:
        raise DetectorError(f"--plot-videos: no detections were made for {missing[0]!r}")
    videos, _, _, _ = scan_videos(args.features, tuple(ckpt["feature_layout"]["streams"]), video_ids=set(wanted),
                                  temporal_scale=model.config.temporal_scale)
    streams = tuple(ckpt["feature_layout"]["streams"])
    for v in videos:
        probs = boundary_probabilities(model, read_window(v, streams, 0, v.num_snippets), args.device)
        gt = instances.get(v.video_id, [])
        dets = [(d.segment[0], d.segment[1], d.label, d.score) for d in results[v.video_id]]
        plot_boundaries(v.axis.to_time(np.arange(v.num_snippets)), probs,
                        Path(args.plot) / f"boundaries_{safe_name(v.video_id)}.png", gt, dets,
                        title=f"{v.video_id} ({inference.mode} mode)")


def _cam_model(path: str) -> tuple[RefactorNet, tuple[str, ...], SampleConfig | None]:
    """(RefactorNet, the streams it reads, its coupling rule) from a detector checkpoint's front, or from a
    stage-1 RefactorNet checkpoint. A detector's coupling rule is its stage-1 checkpoint's, when that file
    is still there (else the default)."""
    require_file(path, "a checkpoint")
    if checkpoint_kind(path, DetectorError) == "detector":
        detector, ckpt = load_detector(path)
        if not isinstance(detector.front, RefactorNet):
            raise DetectorError(f"{path} is a detector without a RefactorNet front (front {detector.config.front!r}); "
                                "CAM figures need one (detect train --refactor)")
        stage1 = (ckpt.get("refactor_checkpoint") or {}).get("path")
        samples = checkpoint_samples(load_refactor(stage1)[1]) if stage1 and Path(stage1).is_file() else None
        return detector.front.eval(), tuple(ckpt["feature_layout"]["streams"]), samples
    model, ckpt = load_refactor(path)
    return model, tuple(ckpt["feature_layout"]["streams"]), checkpoint_samples(ckpt)


def _cam(args) -> int:
    """``detect cam``: the figures of :func:`refactor.cam.draw_cams`, one line per figure."""
    model, streams, samples = _cam_model(args.checkpoint)
    drawn = draw_cams(model, streams, **cam_options(args), samples=samples)
    for video_id, shown, path, found in drawn:
        note = "" if found else " (source video not found: maps on grey)"
        print(f"detect: {video_id}: snippets {', '.join(map(str, shown))} -> {path}{note}")
    return 0


def train_settings(args) -> tuple[DetectorConfig, TrainConfig, InferenceConfig]:
    """The settings of ``detect train``: dataclass defaults < ``--dataset`` < ``--config`` < flags
    (``--refactor`` / ``--context-score`` / ``--baseline`` / ``--deep-baseline`` are flags setting ``model.front``)."""
    presets = None
    if args.dataset is not None:
        if args.dataset == "auto":
            if args.annotations is None:
                raise DetectorError("--dataset auto needs --annotations")
            dataset = detect_dataset(subset_videos(args.annotations))
        else:
            dataset = get_dataset(args.dataset)
        presets = dataset.presets()
    settings = resolve_settings(train_sections(), args, args.config, presets)
    flags = {"refactor": ("--refactor", args.refactor), "context": ("--context-score", args.context_score),
             "deep": ("--deep-baseline", args.deep_baseline), "none": ("--baseline", args.baseline)}
    legacy = next((name for name, (_flag, given) in flags.items() if given), None)
    if legacy is not None:
        given = getattr(args, "model.front", legacy)
        if given != legacy:
            raise DetectorError(f"--front {given} contradicts {flags[legacy][0]}")
        settings["model"]["front"] = legacy
    config = DetectorConfig(**settings["model"])
    if args.refactor_config and config.front != "deep":
        raise DetectorError("--refactor-config goes with --deep-baseline")
    return config, TrainConfig(**settings["train"]), InferenceConfig(**settings["inference"])


def _train(args) -> int:
    """``detect train``; under torchrun (WORLD_SIZE > 1) every process trains on its share of each
    batch (gloo on CPU, NCCL on CUDA, one GPU per process) and rank 0 writes the checkpoint (and
    validates, with --val-subset)."""
    config, train, inference = train_settings(args)
    if args.print_config:
        print(dump_settings(detector_settings(config, train, inference)), end="")
        return 0
    device, world = train.device, int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        cuda = device.startswith("cuda")
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    train = replace(train, device=device)
    try:
        rank = dist.get_rank() if world > 1 else 0
        files = run_files(args.out)
        state = files["state"]
        if args.restart and rank == 0:
            state.unlink(missing_ok=True)
            files["best"].unlink(missing_ok=True)
        if world > 1:
            dist.barrier()
        model, meta = train_detector(args.features, args.annotations, config, train,
                                     refactor_checkpoint=args.refactor or args.refactor_config, front=config.front,
                                     context_checkpoint=args.context_score,
                                     state_path=state, inference=inference,
                                     best_path=files["best"] if train.val_subset is not None else None,
                                     log_path=files["log"])
        if rank != 0:
            return 0
        meta["world_size"] = world
        save_detector(args.out, model, meta, asdict(inference))
        state.unlink(missing_ok=True)
        if args.plot:
            plot_history(meta["history"], Path(args.plot) / "loss.png")
            if "best_epoch" in meta:
                plot_validation(meta["history"], Path(args.plot) / "val_map.png")
        last = meta["history"][-1] if meta["history"] else {}
        best = (f"; best validation average mAP {100 * meta[VAL_KEY]:.2f}% at epoch {meta['best_epoch']} -> "
                f"{files['best']}" if "best_epoch" in meta else "")
        print(f"detect: trained on {meta['num_windows']} windows of {meta['num_videos']} videos ({config.front} front"
              f"{f', {world} processes' if world > 1 else ''}); final loss {last.get('loss', float('nan')):.4f} "
              f"-> {args.out}{best}")
        return 0
    finally:
        if world > 1:
            dist.destroy_process_group()


# per command: (argument, attribute, is a folder) of its output arguments
_OUTPUTS = {"train": [("--out", "out", False), ("--plot", "plot", True)],
            "run": [("--out", "out", False), ("--plot", "plot", True)],
            "video": [("--out", "out", False), ("--features-out", "features_out", True), ("--render", "render", True)],
            "cam": [("--out", "out", True)],
            "fit": [("--work", "work", True)]}


def output_arguments(args) -> tuple[dict, dict]:
    """The output files and folders of ``args.command``: ({flag: value}, {flag: value})."""
    files: dict = {}
    dirs: dict = {}
    for flag, attr, folder in _OUTPUTS.get(args.command, []):
        (dirs if folder else files)[flag] = getattr(args, attr, None)
    return files, dirs


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    required = {"train": ("features", "annotations", "out"), "fit": ("videos", "annotations", "work")}
    if args.command in required and not args.print_config:
        missing = [f"--{n}" for n in required[args.command] if getattr(args, n) is None]
        if missing:
            args.usage_error(f"the following arguments are required: {', '.join(missing)}")
    if unusable_outputs(f"detect {args.command}", *output_arguments(args)):
        return 2
    if getattr(args, "features", None) is not None and not getattr(args, "print_config", False):
        try:
            check_feature_folder(args.features, "--features")
        except RefactorError as exc:
            print(f"detect {args.command}: {exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "cam":
            return _cam(args)
        if args.command == "fit":
            return _fit(args)
        _, ckpt = load_detector(args.checkpoint)
        inference = _inference(args, ckpt.get("inference", {}))
        if args.print_config:
            print(dump_settings({"inference": asdict(inference)}), end="")
            return 0
        if args.command == "run":
            wanted = _plot_video_ids(args, ckpt)                          # checked before any work
            instances = video_instances(args.annotations) if args.plot and args.annotations else {}
            failed: dict = {}
            results = run_detector(args.checkpoint, args.features, args.out, subset=args.subset, config=inference,
                                   device=args.device, video_scores=args.video_scores, failures=failed)
            print(f"detect: {sum(map(len, results.values()))} detections in {len(results)} videos -> {args.out}")
            if args.plot:
                _plot_videos(args, results, inference, wanted, instances)
            if failed:
                print("detect: failed: " + "; ".join(f"{v} ({r})" for v, r in failed.items()), file=sys.stderr)
                return 1
            return 0
        instances = video_instances(args.annotations) if args.render and args.annotations else {}

        def on_error(video, reason):
            print(f"detect: {video}: {reason}", file=sys.stderr)

        try:
            results, failed = detect_videos(args.videos, args.checkpoint, args.out, args.features_out, inference,
                                            args.device, weights_root=args.weights_dir, video_scores=args.video_scores,
                                            on_error=on_error)
        except WeightsError as exc:
            raise DetectorError(str(exc)) from exc
        print(summary(results, args.summary_top))
        print(f"detect: {sum(map(len, results.values()))} detections in {len(results)} videos -> "
              f"{args.out if results else '(nothing written)'}")
        if args.render and results:
            failed |= _render(args, results, instances)
        if failed:
            print("detect: failed: " + "; ".join(f"{v} ({r})" for v, r in failed.items()), file=sys.stderr)
            return 1
        return 0
    except _ArgumentValueError as exc:
        print(f"detect {args.command}: {exc}", file=sys.stderr)
        return 2
    except (DetectorError, DetectDataError, VideoScoresError, FeatureFileError, AnnotationError, RefactorError,
            VideoError, FitError, WeightsError, ConfigError, ValueError) as exc:
        print(f"detect {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
