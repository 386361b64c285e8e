"""Where do RefactorNet's Grad-CAM maps put their mass on a rendered world, and why?

``python benchmarks/cam_world.py probe [--refactor R.pt]``: real Kinetics RGB I3D on hand-made 16-frame
clips at 224 x 224 (uniform grey; grey with a magenta actor circling fast at the left, centre or right;
each also mirrored left-right): the Mixed_5c energy per grid cell (sum over channels, time-averaged as
``--spatial`` stores it), and, with ``--refactor``, the Grad-CAM maps of φA and μ_C of that checkpoint.
On a uniform input every asymmetry is the network's (padding), never the content's.

``python benchmarks/cam_world.py share WORLD FEATS --refactor R.pt [--detector D.pt]``: the share of each
component's Grad-CAM mass inside the actor's box (:mod:`detect.camstats`) for the action and coupling
samples of every training video, the trained model against an untrained RefactorNet of the same config.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.camstats import cam_box_share_world, format_share_report  # noqa: E402
from extract.pretrained import load_i3d  # noqa: E402
from extract.transforms import to_unit_range  # noqa: E402
from refactor.cam import component_cams  # noqa: E402
from refactor.model import RefactorNet  # noqa: E402
from refactor.train import load_refactor  # noqa: E402

ACTOR = (255, 0, 255)
HEAD = (255, 150, 255)


def clip(kind: str, cx: float = 112.0, size: int = 224, frames: int = 16) -> np.ndarray:
    """uint8 (frames, size, size, 3): uniform grey, or grey with a 17 x 30 actor circling (radius 12 px,
    about 9 px a frame) around ``(cx, 112)``."""
    out = np.full((frames, size, size, 3), 128, np.uint8)
    if kind == "grey":
        return out
    for k in range(frames):
        x = cx + 12 * math.cos(0.8 * k) - 8
        y = 112 + 12 * math.sin(0.8 * k) - 15
        x0, y0 = int(round(x)), int(round(y))
        out[k, y0:y0 + 30, x0:x0 + 17] = ACTOR
        out[k, y0:y0 + 10, x0:x0 + 17] = HEAD
    return out


def mixed5c(model, frames: np.ndarray) -> torch.Tensor:
    """(1024, 7, 7) Mixed_5c map averaged over its time steps (as extraction stores it)."""
    x = to_unit_range(torch.from_numpy(frames).permute(3, 0, 1, 2))[None]
    with torch.no_grad():
        return model(x).spatial[0].mean(dim=1)


def grid(m: np.ndarray) -> str:
    return "\n".join("    " + " ".join(f"{v:5.2f}" for v in row) for row in m)


def summary(name: str, m: np.ndarray) -> dict:
    i, j = divmod(int(m.argmax()), m.shape[1])
    total = m.sum()
    return {"map": name, "peak_cell": [i, j], "peak_over_mean": float(m.max() / m.mean()) if m.mean() > 0 else 0.0,
            "share_right_col": float(m[:, -1].sum() / total) if total > 0 else 0.0,
            "share_left_col": float(m[:, 0].sum() / total) if total > 0 else 0.0,
            "share_top_row": float(m[0].sum() / total) if total > 0 else 0.0,
            "share_bottom_row": float(m[-1].sum() / total) if total > 0 else 0.0}


def probe(args) -> int:
    torch.set_num_threads(max(1, args.threads))
    i3d = load_i3d("rgb")
    ref = None
    if args.refactor:
        ref, ckpt = load_refactor(args.refactor)
        if tuple(ckpt["feature_layout"]["streams"]) != ("rgb",):
            raise SystemExit("probe needs an RGB-only RefactorNet")
        untrained = RefactorNet(ref.config).eval()
    clips = {"grey": clip("grey"), "actor left": clip("actor", 40), "actor centre": clip("actor", 112),
             "actor right": clip("actor", 184)}
    rows = []
    for name, frames in clips.items():
        for mirrored in (False, True):
            f = frames[:, :, ::-1].copy() if mirrored else frames
            label = name + (" (mirrored)" if mirrored else "")
            a = mixed5c(i3d, f)
            energy = a.sum(dim=0).numpy()
            rows.append(summary(f"{label}: Mixed_5c energy", energy))
            print(f"{label}: Mixed_5c channel-sum per cell / mean\n{grid(energy / energy.mean())}")
            if ref is not None:
                for tag, model in (("trained", ref), ("untrained", untrained)):
                    act, cooc = component_cams(model, a[None], a.mean(dim=(1, 2))[None])
                    for comp, m in (("phiA", act[0].numpy()), ("muC", cooc[0].numpy())):
                        rows.append(summary(f"{label}: Grad-CAM {comp} ({tag})", m))
                        if not mirrored and tag == "trained":
                            mm = m / m.max() if m.max() > 0 else m
                            print(f"{label}: Grad-CAM {comp} ({tag}) / max\n{grid(mm)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(f"{r['map']:<58} peak {tuple(r['peak_cell'])}  peak/mean {r['peak_over_mean']:5.2f}  "
              f"right col {r['share_right_col']:.3f} left col {r['share_left_col']:.3f} "
              f"top {r['share_top_row']:.3f} bottom {r['share_bottom_row']:.3f}")
    return 0


def share(args) -> int:
    torch.set_num_threads(max(1, args.threads))
    report = cam_box_share_world(args.world, args.features, args.refactor, detector=args.detector,
                                 subset=args.subset, seed=args.seed, box=args.box, reference=args.reference)
    print(format_share_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--refactor", default=None, help="RGB-only RefactorNet checkpoint (stage 1)")
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("share")
    p.add_argument("world", help="folder made by python -m detect.world (boxes.npz, annotations.json)")
    p.add_argument("features", help="its feature files, extracted with --spatial")
    p.add_argument("--refactor", required=True)
    p.add_argument("--detector", default=None, help="also a detector's RefactorNet front")
    p.add_argument("--subset", default="validation")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained RefactorNet")
    p.add_argument("--box", choices=("union", "centre"), default="union")
    p.add_argument("--reference", action="store_true", help="maps against the grey reference, not the raw maps")
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    return probe(args) if args.command == "probe" else share(args)


if __name__ == "__main__":
    sys.exit(main())
