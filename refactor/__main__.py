"""python -m refactor train|apply|cam: RefactorNet stage 1 (encoders), refactored feature files, and
Grad-CAM figures of the action vs co-occurrence components."""

from __future__ import annotations

import argparse
import sys

from evaluate.data import EvaluationInputError
from extract.features import FeatureFileError
from extract.video import VideoError
from refactor.model import RefactorConfig
from refactor.samples import SampleConfig
from refactor.train import (RefactorError, TrainConfig, apply_refactor, build_pairs, save_checkpoint,
                            train_refactor)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m refactor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="stage 1: train the action / co-occurrence encoders")
    p.add_argument("--features", required=True, help="folder of feature files (python -m extract)")
    p.add_argument("--annotations", required=True, help="ground truth JSON (ActivityNet layout)")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--subset", default="validation", help="training subset (THUMOS14: validation)")
    p.add_argument("--threshold", type=float, default=0.5, help="coupling: minimum cosine similarity (-1 to disable)")
    p.add_argument("--top-k", type=int, default=5, help="coupling: most similar non-action snippets per action sample (0 to disable)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--no-kl", action="store_true", help="ablation: L_A & L_C only")
    p.add_argument("--action-only", action="store_true", help="ablation: f' = φA(f)")
    p.add_argument("--beta", type=float, default=0.001, help="weight of the KL term")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("apply", help="write refactored feature files f'")
    p.add_argument("--features", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("cam", help="Grad-CAM figures: where the action and co-occurrence components come from")
    p.add_argument("--features", required=True, help="feature files extracted with --spatial (rgb_spatial maps)")
    p.add_argument("--checkpoint", required=True, help="RefactorNet checkpoint (refactor train) or detector checkpoint with a RefactorNet front")
    p.add_argument("--out", required=True, help="folder for cam_<video>.png")
    p.add_argument("--videos", default=None, help="comma-separated video ids (default: every file with rgb_spatial, at most 8)")
    p.add_argument("--snippets", default=None, help="comma-separated snippet indices (default: the --count with the largest action energy)")
    p.add_argument("--count", type=int, default=4, help="snippets per video (default 4)")
    p.add_argument("--source", default=None, help="the video file to draw frames from (one video; default: the feature file's source)")
    return parser


def _cam(args) -> int:
    from pathlib import Path

    import h5py
    import numpy as np

    from refactor.cam import plot_cams, video_cams

    model, streams = _cam_model(args.checkpoint)
    folder = Path(args.features)
    if args.videos:
        files = [folder / f"{v}.h5" for v in args.videos.split(",")]
    else:
        files = []
        for f in sorted(folder.glob("*.h5")):
            with h5py.File(f, "r") as h5:
                if "rgb_spatial" in h5:
                    files.append(f)
        files = files[:8]
        if not files:
            raise RefactorError(f"no feature file in {folder} has rgb_spatial maps (extract with --spatial)")
    if args.source and len(files) != 1:
        raise RefactorError("--source goes with exactly one video (--videos ID)")
    snippets = np.array([int(i) for i in args.snippets.split(",")]) if args.snippets else None
    for f in files:
        result = video_cams(model, f, snippets, args.count, args.source, streams)
        dest = Path(args.out) / f"cam_{f.stem}.png"
        plot_cams(result, dest)
        note = "" if result.frames is not None else " (source video not found: maps on grey)"
        print(f"refactor: {f.stem}: snippets {', '.join(map(str, result.snippets))} -> {dest}{note}")
    return 0


def _cam_model(path):
    """(RefactorNet, streams) from a stage-1 checkpoint or from a detector checkpoint's front."""
    from common.checkpoint import load_checkpoint
    from refactor.model import RefactorNet
    from refactor.train import load_refactor

    ckpt = load_checkpoint(path, RefactorError, "checkpoint")
    if ckpt.get("kind") == "detector":
        from detect.train import load_detector

        det, ckpt = load_detector(path)
        if not isinstance(det.front, RefactorNet):
            raise RefactorError(f"{path} is a detector without a RefactorNet front (front {det.config.front!r})")
        return det.front.eval(), tuple(ckpt["feature_layout"]["streams"])
    model, ckpt = load_refactor(path)
    return model, tuple(ckpt["feature_layout"]["streams"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            samples = SampleConfig(threshold=None if args.threshold < -1 + 1e-9 else args.threshold,
                                   top_k=args.top_k or None)
            pairs = build_pairs(args.features, args.annotations, args.subset, samples)
            config = RefactorConfig(in_dim=pairs.action.shape[1], hidden_dim=args.hidden_dim,
                                    use_kl=not args.no_kl, action_only=args.action_only, beta=args.beta)
            train = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                subset=args.subset, device=args.device)
            model, history = train_refactor(pairs, config, train)
            save_checkpoint(args.out, model, pairs, samples, train, history)
            print(f"refactor: {len(pairs.similarity)} pairs from {len(pairs.videos)} videos; final loss "
                  f"{history[-1]['loss']:.4f} (L_A {history[-1]['action']:.4f}, L_C {history[-1]['cooccurrence']:.4f}, "
                  f"KL {history[-1]['kl']:.2f}) -> {args.out}")
        elif args.command == "apply":
            written = apply_refactor(args.checkpoint, args.features, args.out, overwrite=args.overwrite)
            print(f"refactor: {len(written)} refactored feature files -> {args.out}")
        else:
            return _cam(args)
        return 0
    except (RefactorError, FeatureFileError, EvaluationInputError, ValueError, VideoError) as exc:
        print(f"refactor {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
