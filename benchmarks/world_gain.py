"""The context front with its scores times a gain (``DetectorConfig.score_gain``) on a rendered world's fits:
average mAP per seed and gain, paired against the fit's baseline and against gain 1 (the front as it is).

Each seed's fit (``ROOT/seedS/{world,fit}``, from ``benchmarks/world_ablation.py``) already holds the
features and the context front's score checkpoints (``fit/context.pt`` and ``fit/context_boundaries.pt``, or
the ablation's where the fit chose another front). The detector is retrained with the fit's settings (default
``DetectorConfig`` but the gain, 20 epochs, seed 0, window 256, cross-fitted over 8 folds) and scored on the
test videos; gain 1 reproduces the fit's own context row (the table says whether it does).

    python benchmarks/world_gain.py --root ROOT --seeds 30,31,32 --gains 1,4,16 [--json OUT.json]
    python benchmarks/world_gain.py --report OUT.json [MORE.json ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.world_oracle import train_and_score  # noqa: E402
from detect.config import TrainConfig  # noqa: E402
from detect.demo import DEMO_FIT  # noqa: E402
from detect.model import DetectorConfig  # noqa: E402


def front_scores(work: Path) -> list[Path]:
    """The context front's score checkpoints of a fit: its own, or its ablation's context row's."""
    for folder in (work, work / "ablation" / "context"):
        paths = [folder / "context.pt", folder / "context_boundaries.pt"]
        if all(p.is_file() for p in paths):
            return paths
    raise FileNotFoundError(f"{work} holds no context front (context.pt and context_boundaries.pt)")


def run_seed(root: Path, seed: int, gains: list[float]) -> list[dict]:
    world, work = root / f"seed{seed}" / "world", root / f"seed{seed}" / "fit"
    rows = json.loads((work / "ablation.json").read_text())["variants"]
    train = TrainConfig(epochs=DEMO_FIT.detector_epochs, seed=DEMO_FIT.seed, subset="validation",
                        window=DEMO_FIT.window_snippets, device="cpu", context_folds=DEMO_FIT.context_folds)
    out = []
    for gain in gains:
        result, _ = train_and_score(work / "features", world / "annotations.json", DetectorConfig(score_gain=gain),
                                    train, root / f"seed{seed}" / f"gain{gain:g}.pt", front="context",
                                    context_checkpoint=front_scores(work))
        out.append({"seed": seed, "gain": gain, "avg": result["average_mAP"], "mAP": result["mAP"],
                    "baseline": rows["baseline"]["average_mAP"], "fit_context": rows["context"]["average_mAP"]})
    return out


def _ms(values) -> str:
    v = np.asarray(values, dtype=np.float64) * 100
    return f"{v.mean():+.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():+.1f}"


def report(records: list[dict]) -> str:
    """Per gain: average mAP per seed, its mean, and the paired differences to the baseline and to gain 1 (its
    rerun, or the fit's own context row where gain 1 was not rerun)."""
    seeds = sorted({r["seed"] for r in records})
    gains = sorted({r["gain"] for r in records})
    by = {(r["seed"], r["gain"]): r for r in records}
    base = {r["seed"]: r["baseline"] for r in records}
    ref = {r["seed"]: by[(r["seed"], 1.0)]["avg"] if (r["seed"], 1.0) in by else r["fit_context"] for r in records}
    same = all(abs(by[(s, 1.0)]["avg"] - by[(s, 1.0)]["fit_context"]) < 1e-9 for s in seeds if (s, 1.0) in by)
    lines = [f"seeds {','.join(map(str, seeds))}; gain 1 " + ("reproduces" if same else "does NOT reproduce")
             + " the fit's context row",
             "| gain | average mAP per seed (%) | mean (%) | Δ vs baseline | Δ vs gain 1 |",
             "| ---: | --- | ---: | ---: | ---: |",
             f"| baseline | {', '.join(f'{base[s] * 100:.1f}' for s in seeds)} | "
             f"{np.mean([base[s] for s in seeds]) * 100:.1f} | — | — |"]
    for g in sorted(set(gains) | {1.0}):
        have = seeds if g == 1.0 else [s for s in seeds if (s, g) in by]
        avg = [ref[s] if g == 1.0 else by[(s, g)]["avg"] for s in have]
        lines.append(f"| {g:g} | {', '.join(f'{a * 100:.1f}' for a in avg)} | {np.mean(avg) * 100:.1f} | "
                     f"{_ms([a - base[s] for a, s in zip(avg, have)])} | "
                     f"{'—' if g == 1.0 else _ms([a - ref[s] for a, s in zip(avg, have)])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--root", type=Path, help="a world_ablation.py work root (ROOT/seedS/{world,fit})")
    p.add_argument("--seeds", default="15,16,17,18,19")
    p.add_argument("--gains", default="1,4,16")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON", help="print the table of saved runs")
    args = p.parse_args(argv)
    if args.report:
        print(report([r for path in args.report for r in json.loads(path.read_text())]))
        return 0
    if args.root is None:
        p.error("--root is required (or --report)")
    gains = [float(g) for g in args.gains.split(",")]
    records = [r for s in args.seeds.split(",") for r in run_seed(args.root, int(s), gains)]
    print(f"device: CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}; root {args.root}")
    print(report(records))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
