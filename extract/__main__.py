"""python -m extract VIDEOS_OR_DIRS... --out DIR: raw video to I3D feature files (CONVENTIONS.md)."""

from __future__ import annotations

import argparse
import sys

from extract.pipeline import ExtractConfig, extract_videos
from weights.hub import WeightsError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m extract", description=__doc__)
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR",
                   help="video files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder for <video_id>.h5")
    p.add_argument("--streams", default="rgb", help="comma-separated streams: rgb, flow (default rgb)")
    p.add_argument("--flow", default="tvl1", choices=["tvl1", "opencv-tvl1"],
                   help="flow method: tvl1 (batched PyTorch TV-L1, CPU or CUDA) "
                        "or opencv-tvl1 (OpenCV's CPU reference)")
    p.add_argument("--fps", type=float, default=None, help="resample to this rate (default: each video's own)")
    p.add_argument("--window", type=int, default=16, help="frames per snippet (default 16)")
    p.add_argument("--stride", type=int, default=16,
                   help="frames between snippet starts (default 16; 4 is common on THUMOS14)")
    p.add_argument("--batch-size", type=int, default=8, help="snippets per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: fp16 autocast on CUDA (fp32 redo on overflow), fp32 on CPU")
    p.add_argument("--workers", type=int, default=2, help="videos decoded at once, in threads (default 2)")
    p.add_argument("--spatial", action="store_true", help="also store float16 Mixed_5c maps (T, 1024, 7, 7)")
    p.add_argument("--overwrite", action="store_true", help="redo videos whose feature file exists")
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"], help="video decoder")
    p.add_argument("--weights-dir", default=None, help="converted weights folder (default: the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = ExtractConfig(streams=tuple(s.strip() for s in args.streams.split(",") if s.strip()),
                               fps=args.fps, window=args.window, stride=args.stride,
                               batch_size=args.batch_size, device=args.device, precision=args.precision,
                               spatial=args.spatial, overwrite=args.overwrite, backend=args.backend,
                               workers=args.workers, flow=args.flow)
    except ValueError as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return 2

    def on_error(video, reason):
        print(f"extract: {video}: {reason}", file=sys.stderr)

    try:
        report = extract_videos(args.inputs, args.out, config, weights_root=args.weights_dir,
                                progress=False if args.quiet else None, on_error=on_error)
    except (WeightsError, ValueError) as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return 2
    print(f"extract: {len(report.written)} written, {len(report.skipped)} skipped (already done), "
          f"{len(report.failed)} failed -> {args.out}")
    if report.failed:
        print("extract: failed: " + "; ".join(f"{v} ({r})" for v, r in report.failed.items()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
