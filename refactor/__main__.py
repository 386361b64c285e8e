"""python -m refactor train|apply|cam: RefactorNet stage 1 (encoders), refactored feature files, and
Grad-CAM figures of the action vs co-occurrence components."""

from __future__ import annotations

import argparse
import sys

from common.annotations import AnnotationError
from common.checkpoint import checkpoint_kind
from extract.features import FeatureFileError
from extract.video import VideoError
from refactor.apply import apply_refactor
from refactor.cam import add_cam_arguments, cam_options, checkpoint_samples, draw_cams
from refactor.errors import RefactorError
from refactor.model import RefactorConfig
from refactor.pairs import build_pairs
from refactor.samples import SampleConfig
from refactor.train import TrainConfig, load_refactor, save_checkpoint, train_refactor


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m refactor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="stage 1: train the action / co-occurrence encoders")
    p.add_argument("--features", required=True, help="folder of feature files (python -m extract)")
    p.add_argument("--annotations", required=True, help="ground truth JSON (ActivityNet layout)")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--subset", default="validation", help="training subset (THUMOS14: validation)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="coupling: minimum cosine similarity (-1 to disable)")
    p.add_argument("--top-k", type=int, default=5,
                   help="coupling: most similar non-action snippets per action sample (0 to disable)")
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
    add_cam_arguments(p, "RefactorNet checkpoint (refactor train; a detector's front: python -m detect cam)")
    return parser


def _cam(args) -> int:
    if checkpoint_kind(args.checkpoint, RefactorError) == "detector":
        raise RefactorError(f"{args.checkpoint} is a detector checkpoint: CAMs of a detector's front are drawn by "
                            "`python -m detect cam` with the same arguments")
    model, ckpt = load_refactor(args.checkpoint)
    streams = tuple(ckpt["feature_layout"]["streams"])
    drawn = draw_cams(model, streams, **cam_options(args), samples=checkpoint_samples(ckpt))
    for video_id, shown, dest, found in drawn:
        note = "" if found else " (source video not found: maps on grey)"
        print(f"refactor: {video_id}: snippets {', '.join(map(str, shown))} -> {dest}{note}")
    return 0


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
            last = history[-1]
            print(f"refactor: {len(pairs.similarity)} pairs from {len(pairs.videos)} videos; final loss "
                  f"{last['loss']:.4f} (L_A {last['action']:.4f}, L_C {last['cooccurrence']:.4f}, "
                  f"KL {last['kl']:.2f}) -> {args.out}")
        elif args.command == "apply":
            written = apply_refactor(args.checkpoint, args.features, args.out, overwrite=args.overwrite)
            print(f"refactor: {len(written)} refactored feature files -> {args.out}")
        else:
            return _cam(args)
        return 0
    except (RefactorError, FeatureFileError, AnnotationError, ValueError, VideoError) as exc:
        print(f"refactor {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
