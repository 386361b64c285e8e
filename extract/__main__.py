"""python -m extract VIDEOS_OR_DIRS... --out DIR: raw video to I3D feature files (CONVENTIONS.md)."""

from __future__ import annotations

import argparse
import sys

from common.config import (ConfigError, add_config_arguments, add_section_arguments, dump_settings,
                           effective_settings, resolve_settings)
from common.paths import unusable_outputs
from extract.config import SECTION, ExtractConfig
from extract.pipeline import extract_videos
from weights.hub import WeightsError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m extract", description=__doc__)
    p.add_argument("inputs", nargs="*", metavar="VIDEO_OR_DIR",
                   help="video files and/or folders (searched recursively)")
    p.add_argument("--out", help="output folder for <video_id>.h5; required")
    add_config_arguments(p)
    add_section_arguments(p.add_argument_group("extraction settings (ExtractConfig; --config FILE: {extract: {...}})"),
                          SECTION)
    p.add_argument("--weights-dir", default=None, help="converted weights folder (default: the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = ExtractConfig(**resolve_settings([SECTION], args, args.config)["extract"])
    except (ConfigError, ValueError) as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_settings(effective_settings([(SECTION, config)])), end="")
        return 0
    missing = [what for what, given in (("VIDEO_OR_DIR", args.inputs), ("--out", args.out)) if not given]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    if unusable_outputs("extract", dirs={"--out": args.out}):
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
          f"{len(report.by_others)} written by other processes, {len(report.in_progress)} in progress elsewhere, "
          f"{len(report.failed)} failed -> {args.out}")
    if report.other_settings:
        shown = "; ".join(f"{v.stem}.h5 ({why})" for v, why in list(report.other_settings.items())[:5])
        more = len(report.other_settings) - 5
        print(f"extract: warning: {len(report.other_settings)} existing file(s) made with other settings were kept "
              f"(--overwrite redoes them): {shown}" + (f"; and {more} more" if more > 0 else ""), file=sys.stderr)
    if report.failed:
        print("extract: failed: " + "; ".join(f"{v} ({r})" for v, r in report.failed.items()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
