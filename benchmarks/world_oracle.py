"""How much room a rendered world leaves for the context: the baseline detector on the fit's own features,
and on the same features beside exact per-snippet labels (oracles), seed by seed.

The rendered worlds of ``benchmarks/world_ablation.py`` know, for every snippet, which class's scene is on
screen and whether an action is under way. Beside f (the fit's I3D features, unchanged) the oracles put

* ``oracle_scene``: K channels, one-hot of the class whose scene episode holds the snippet (before, during
  and after its action, and in episodes without one), zero in neutral scenes: a perfect φC, the most a
  context score can tell;
* ``oracle_labels``: those K channels and K more, one-hot of the class of the action under way (the snippet's
  centre inside an annotated action): a perfect φC and φA, which also tell where actions start and end.

Each is the fit's baseline detector (``detect.fit``'s settings: default ``DetectorConfig``, the fit's epochs,
seed and window), trained on the training videos and scored on the test videos (average mAP over tIoU
0.3:0.7). ``baseline`` retrains it on the raw features and must reproduce the fit's own baseline row (the
table says whether it does). Δ oracle_scene − baseline bounds what any context front can gain on that world;
the boundary columns (the best-scored detection of the right class with tIoU ≥ 0.3 per ground-truth action:
its start and end minus the action's, in s) show where the rest of the error lies.

    python benchmarks/world_oracle.py --root ROOT --seeds 15,16,17,18,19 [--scale 1] [--json OUT.json]
    python benchmarks/world_oracle.py --report OUT.json

ROOT is a ``world_ablation.py`` work root (``ROOT/seedS/{world,fit}``: the world and its fit, features cached).
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

from benchmarks.world_ablation import snippet_scenes  # noqa: E402
from common.annotations import load_ground_truth  # noqa: E402
from common.predictions import load_predictions  # noqa: E402
from common.segments import segment_iou  # noqa: E402
from detect.checkpoint import save_detector  # noqa: E402
from detect.config import TrainConfig  # noqa: E402
from detect.demo import DEMO_FIT  # noqa: E402
from detect.infer import run_detector  # noqa: E402
from detect.model import DetectorConfig  # noqa: E402
from detect.train import train_detector  # noqa: E402
from detect.world import CLASS_NAMES, SCENE_NAMES  # noqa: E402
from evaluate.data import parse_thresholds  # noqa: E402
from evaluate.detection import evaluate_detection  # noqa: E402
from extract.features import read_features, write_features  # noqa: E402

ORACLES = ("baseline", "oracle_scene", "oracle_labels")


def oracle_channels(entry: dict, times: np.ndarray, num_classes: int, actions: bool) -> np.ndarray:
    """Exact per-snippet labels of a rendered video (its annotation entry; snippet centre times in s):
    ndarray[T, K] one-hot of the class whose scene holds each snippet (zeros in neutral scenes), and with
    ``actions`` K more columns, one-hot of the class of the action whose segment holds the snippet's centre."""
    names = snippet_scenes(entry, times)
    scene = np.zeros((len(times), num_classes), dtype=np.float32)
    for t, name in enumerate(names):
        if name:
            scene[t, SCENE_NAMES.index(name)] = 1.0
    if not actions:
        return scene
    action = np.zeros_like(scene)
    for ann in entry["annotations"]:
        start, end = ann["segment"]
        action[(times >= start) & (times <= end), CLASS_NAMES.index(ann["label"])] = 1.0
    return np.concatenate([scene, action], axis=1)


def write_oracle_features(features: Path, database: dict, num_classes: int, actions: bool, out: Path,
                          scale: float = 1.0) -> Path:
    """Every feature file of ``features`` with :func:`oracle_channels` (times ``scale``) beside its features,
    into ``out`` (the same attributes; one ``rgb`` stream of C + K or C + 2K channels)."""
    out.mkdir(parents=True, exist_ok=True)
    for vid, entry in database.items():
        ff = read_features(features / f"{vid}.h5")
        extra = scale * oracle_channels(entry, ff.times, num_classes, actions)
        write_features(out / f"{vid}.h5", {"rgb": np.concatenate([ff.features, extra], axis=1)}, ff.attrs)
    return out


def boundary_offsets(annotations: Path, predictions: dict, subset: str = "test") -> dict[str, float]:
    """Per ground-truth action of ``subset``, the best-scored detection of its class with tIoU ≥ 0.3
    (``predictions``: video id -> list of {"segment", "label", "score"}): mean start and end offsets
    (detection − truth, s), the mean tIoU of those matches, and the share of actions whose match is below
    tIoU 0.7 or missing."""
    gt = load_ground_truth(annotations, subset)
    starts, ends, tious, below = [], [], [], 0
    for i, ((s, e), label) in enumerate(zip(gt.segments, gt.labels)):
        best = None
        for det in predictions.get(gt.videos[gt.video[i]], []):
            if det["label"] != gt.classes[label]:
                continue
            ds, de = det["segment"]
            tiou = float(segment_iou(np.array([s, e]), np.array([ds, de])))
            if tiou >= 0.3 and (best is None or det["score"] > best[0]):
                best = (det["score"], ds - s, de - e, tiou)
        if best is None or best[3] < 0.7:
            below += 1
        if best is not None:
            starts.append(best[1])
            ends.append(best[2])
            tious.append(best[3])
    return {"start": float(np.mean(starts)), "end": float(np.mean(ends)), "tiou": float(np.mean(tious)),
            "below_07": below / max(len(gt.labels), 1)}


def train_and_score(features: Path, annotations: Path, config: DetectorConfig, train: TrainConfig,
                    checkpoint: Path, front: str = "none", context_checkpoint: list[Path] | None = None,
                    thresholds: str = DEMO_FIT.tiou) -> tuple[dict, dict]:
    """Train a detector on ``train.subset``'s feature files, save it to ``checkpoint``, run it on the test
    videos and evaluate it as ``detect fit`` does (a predicted class without test instances ignored): ({"mAP":
    [per tIoU], "average_mAP"} as fractions, predictions: video id -> list of detections as JSON)."""
    model, meta = train_detector(features, annotations, config, train, front=front,
                                 context_checkpoint=context_checkpoint, progress=False)
    save_detector(checkpoint, model, meta)
    detections = run_detector(checkpoint, features, subset="test", progress=False)
    predictions = {vid: [d.to_json() for d in ds] for vid, ds in detections.items()}
    gt = load_ground_truth(annotations, "test")
    result = evaluate_detection(gt, load_predictions({"results": predictions}, gt, unknown_labels="ignore"),
                                parse_thresholds(thresholds))
    return {"mAP": [float(m) for m in result.mAP], "average_mAP": float(result.average_mAP)}, predictions


def run_seed(root: Path, seed: int, scale: float = 1.0) -> dict:
    world, work = root / f"seed{seed}" / "world", root / f"seed{seed}" / "fit"
    annotations = world / "annotations.json"
    database = json.loads(annotations.read_text())["database"]
    num_classes = json.loads((world / "world.json").read_text())["num_classes"]
    train = TrainConfig(epochs=DEMO_FIT.detector_epochs, seed=DEMO_FIT.seed, subset="validation",
                        window=DEMO_FIT.window_snippets, device="cpu")
    fit_baseline = json.loads((work / "ablation.json").read_text())["variants"]["baseline"]["average_mAP"]
    out = {"seed": seed, "scale": scale, "fit_baseline": fit_baseline, "variants": {}}
    for name in ORACLES:
        if name == "baseline":
            features = work / "features"
        else:
            features = write_oracle_features(work / "features", database, num_classes, name == "oracle_labels",
                                             root / f"seed{seed}" / f"{name}_x{scale:g}", scale)
        result, predictions = train_and_score(features, annotations, DetectorConfig(), train,
                                              root / f"seed{seed}" / f"{name}_x{scale:g}.pt")
        out["variants"][name] = result | {"bounds": boundary_offsets(annotations, predictions)}
    return out


def _ms(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def report(runs: list[dict]) -> str:
    same = all(abs(r["variants"]["baseline"]["average_mAP"] - r["fit_baseline"]) < 1e-9 for r in runs)
    lines = [f"seeds {','.join(str(r['seed']) for r in runs)}; oracle channels × {runs[0].get('scale', 1.0):g}; "
             "the retrained baseline "
             + ("reproduces the fit's on every seed" if same else "differs from the fit's on some seed"),
             "| variant | average mAP (%) | Δ vs baseline | mAP@0.7 (%) | start offset (s) | end offset (s) | "
             "match tIoU | actions below tIoU 0.7 (%) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = np.array([r["variants"]["baseline"]["average_mAP"] for r in runs]) * 100
    for name in ORACLES:
        rows = [r["variants"][name] for r in runs]
        avg = np.array([x["average_mAP"] for x in rows]) * 100
        b = [x["bounds"] for x in rows]
        lines.append(f"| {name} | {_ms(avg)} | {'—' if name == 'baseline' else _ms(avg - base)} | "
                     f"{_ms([x['mAP'][-1] * 100 for x in rows])} | {np.mean([x['start'] for x in b]):+.2f} | "
                     f"{np.mean([x['end'] for x in b]):+.2f} | {np.mean([x['tiou'] for x in b]):.3f} | "
                     f"{np.mean([x['below_07'] for x in b]) * 100:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--root", type=Path, help="a world_ablation.py work root (ROOT/seedS/{world,fit})")
    p.add_argument("--seeds", default="15,16,17,18,19")
    p.add_argument("--scale", type=float, default=1.0, help="the oracle channels' value (one-hot times this)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--report", type=Path, default=None, metavar="JSON", help="print the table of saved runs")
    args = p.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    if args.root is None:
        p.error("--root is required (or --report)")
    runs = [run_seed(args.root, int(s), args.scale) for s in args.seeds.split(",")]
    print(f"device: CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}; root {args.root}")
    print(report(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
