"""Synthetic reproduction of the question behind RefactorNet's Table 2: does refactoring the features
help the detector when actions co-occur with a strong, boundary-misleading context?

Data (two streams, rgb + flow, C = 2 x dim/2; 1 snippet a second: fps 16, window 16, stride 16, so
snippet i covers [i, i + 1) s). Per seed a new "world" of shared vectors: K classes, class k with a
strong context (scene) vector s_k (unit norm) and a weak action vector w_k (norm ``--action-norm``);
``--backgrounds`` background vectors (unit norm); per class a look-alike scene l_k (unit norm, cosine
0.6 to s_k, as in ``benchmarks/refactor_synthetic.py``). Every video belongs to one class k:

* background: stretches of 3-8 snippets, each a random background vector, or (15 %) the look-alike l_k;
* 1-3 action instances of class k, 3-15 s long at arbitrary (off-grid) times; each sits inside a stretch
  of context that begins 3-8 s before it and ends 3-8 s after it (off-grid as well);
* 1-2 context-only stretches of 6-25 s elsewhere (the scene without the action);
* a snippet's feature is ``(1 - c) b + c s_k + a w_k + noise``, where c is the fraction of the snippet's
  second covered by context, a the fraction covered by an instance (coverage-weighted, as in
  ``tests/featfiles.detection_dataset``) and b the snippet's background; noise is i.i.d. per channel
  (std ``--noise``).

So the context tells the class and roughly where an action is, but its edges lie 3-8 s off the action's
edges and it also appears without any action; only the weak w_k marks the true boundaries. The train
videos are subset "validation", the held-out test videos subset "test" of one annotation file.

Variants (all with the same DetectorConfig, detector TrainConfig and seeds; stage 1 = ``build_pairs`` +
``train_refactor`` with ``RefactorConfig(in_dim=dim, hidden_dim=--refactor-hidden, form="paper")`` (this
benchmark is the paper's Table 2; ``benchmarks/refactor_study.py`` compares the forms) and the default
SampleConfig (threshold 0.5, top-k 5), then ``save_checkpoint``):

* ``baseline``: ``train_detector(front="none")`` on the raw features;
* ``deep``: ``front="deep"`` with the stage-1 checkpoint (temporal convolutions, kernel 3, of
  RefactorNet's depth and parameter count);
* ``refactor``: RefactorNet stage 2, ``front="refactor"`` initialised from stage 1, ``L_R + L_P + L_D``;
* ``stage1``: stage 1 only: the stage-1 checkpoint applied with ``refactor.apply_refactor`` (frozen) to
  a new folder, the baseline detector trained on those f' files;
* ``no_kl``: stage 1 and 2 with ``RefactorConfig(use_kl=False)`` (L_A & L_C only);
* ``action_only``: stage 1 and 2 with ``RefactorConfig(action_only=True)`` (f' = φA(f)).

Each trained detector is saved (``save_detector``), run on the test videos (``run_detector(subset=
"test")``, thumos mode) and scored by ``evaluate_detection`` at tIoU 0.3:0.7:0.1. Everything is repeated
for ``--seeds`` seeds (seed s: world, videos, stage-1 and detector initialisation and sampling); the
table gives mean ± std (sample std, ddof 1) over seeds and the paired difference to the baseline.

φC collapse: on the test videos, the mean cosine of φC(f) (= μ) between pure action snippets (covered
by an instance for the whole second) and pure context snippets (context, no action) of the same video,
against the same between action snippets and pure background snippets (no context; look-alikes
included): a φC that maps everything to one direction scores ~1 on both. Measured for the raw features,
each stage-1 model and each stage-2 model (``model.front`` of the trained detector), with φA alongside.

    python benchmarks/detect_ablation.py [--quick] [--seeds 3]
        [--variants baseline,deep,refactor,stage1,no_kl,action_only]
        [--train-videos 48] [--test-videos 32] [--epochs 20] [--refactor-epochs 30] [--action-norm 0.3]
        [--noise 0.2] [--threads 1] [--json OUT.json]

``--quick`` (a smoke run, under a minute): 1 seed, 12 + 8 videos, 3 detector epochs, 5 stage-1 epochs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.synthetic import (World, coverage, mean_cosine, score_detector, write_database,  # noqa: E402
                                  write_two_stream)
from detect import DetectorConfig, train_detector  # noqa: E402
from detect import TrainConfig as DetectTrainConfig  # noqa: E402
from evaluate import parse_thresholds  # noqa: E402
from refactor import (RefactorConfig, SampleConfig, apply_refactor, build_pairs, load_refactor,  # noqa: E402
                      save_checkpoint, train_refactor)
from refactor import TrainConfig as RefactorTrainConfig  # noqa: E402

FPS, WINDOW, STRIDE = 16.0, 16, 16          # snippet i covers [i, i + 1) s, centred at i + 0.5 s
TIOU = "0.3:0.7:0.1"
VARIANTS = ("baseline", "deep", "refactor", "stage1", "no_kl", "action_only")
STAGE1_OF = {"deep": "full", "refactor": "full", "stage1": "full", "no_kl": "no_kl", "action_only": "action_only"}
LABELS = {"baseline": "baseline (raw f)", "deep": "deep baseline", "refactor": "RefactorNet (stage 2)",
          "stage1": "stage 1 only (frozen)", "no_kl": "RefactorNet --no-kl", "action_only": "RefactorNet --action-only"}
BACKGROUND, CONTEXT, ACTION, MIXED = 0, 1, 2, 3


# ----------------------------------------------------------------------------------------------
# synthetic data


@dataclass
class DataConfig:
    classes: int = 8
    dim: int = 64
    backgrounds: int = 12
    action_norm: float = 0.3
    noise: float = 0.2
    lookalike_p: float = 0.15
    lookalike_cos: float = 0.6
    length: tuple[int, int] = (100, 200)          # snippets (s) a video, before any stretching to fit
    instances: tuple[int, int] = (1, 3)
    duration: tuple[float, float] = (3.0, 15.0)   # instance length, s
    margin: tuple[float, float] = (3.0, 8.0)      # context before / after an instance, s
    scene_only: tuple[int, int] = (1, 2)          # context-only stretches a video
    scene_length: tuple[float, float] = (6.0, 25.0)
    min_gap: float = 2.0                          # background between events, s


class Videos:
    """The videos of one seed: its world of vectors (:class:`benchmarks.synthetic.World`, with look-alikes)."""

    def __init__(self, cfg: DataConfig, seed: int):
        self.cfg = cfg
        self.classes = [f"class{k:02d}" for k in range(cfg.classes)]
        self.world = World.draw(np.random.default_rng([seed, 7]), cfg.classes, cfg.dim, cfg.backgrounds,
                                cfg.action_norm, cfg.lookalike_cos)

    def video(self, rng: np.random.Generator, k: int) -> dict:
        """One video of class k: features (T, C), per-snippet action / context coverage and kind, instances (s)."""
        cfg = self.cfg
        n_inst = int(rng.integers(cfg.instances[0], cfg.instances[1] + 1))
        n_scene = int(rng.integers(cfg.scene_only[0], cfg.scene_only[1] + 1))
        events = []                                  # (total length, kind, (before, action, after) or length)
        for _ in range(n_inst):
            before, after = rng.uniform(*cfg.margin, size=2)
            dur = rng.uniform(*cfg.duration)
            events.append(("instance", before, dur, after))
        for _ in range(n_scene):
            events.append(("scene", 0.0, float(rng.uniform(*cfg.scene_length)), 0.0))
        rng.shuffle(events)
        busy = sum(b + d + a for _, b, d, a in events)
        t = int(rng.integers(cfg.length[0], cfg.length[1] + 1))
        t = max(t, int(np.ceil(busy + cfg.min_gap * (len(events) + 1))) + 1)
        spare = t - busy - cfg.min_gap * (len(events) + 1)
        gaps = cfg.min_gap + spare * rng.dirichlet(np.ones(len(events) + 1))
        lo = np.arange(t, dtype=np.float64)                          # snippet i covers [lo, lo + 1)

        def cover(s: float, e: float) -> np.ndarray:
            return coverage(lo, 1.0, (s, e))

        ctx = np.zeros(t)
        act = np.zeros(t)
        instances = []
        cursor = float(gaps[0])
        for j, (kind, before, dur, after) in enumerate(events):
            ctx += cover(cursor, cursor + before + dur + after)
            if kind == "instance":
                s = cursor + before
                act += cover(s, s + dur)
                instances.append((round(float(s), 3), round(float(s + dur), 3)))
            cursor += before + dur + after + float(gaps[j + 1])
        ctx = np.clip(ctx, 0, 1)
        world = self.world
        bg = np.zeros((t, cfg.dim))
        lookalike = np.zeros(t, dtype=bool)
        i = 0
        while i < t:                                                  # background stretches of 3-8 snippets
            n = int(rng.integers(3, 9))
            if rng.random() < cfg.lookalike_p:
                bg[i:i + n] = world.lookalike[k]
                lookalike[i:i + n] = True
            else:
                bg[i:i + n] = world.backgrounds[int(rng.integers(len(world.backgrounds)))]
            i += n
        feats = (1 - ctx)[:, None] * bg + ctx[:, None] * world.context[k] + act[:, None] * world.action[k]
        feats += cfg.noise * rng.standard_normal(feats.shape)
        kind = np.full(t, MIXED)
        kind[(act >= 1) & (ctx >= 1)] = ACTION
        kind[(act == 0) & (ctx >= 1)] = CONTEXT
        kind[(act == 0) & (ctx == 0)] = BACKGROUND
        return {"features": feats.astype(np.float32), "kind": kind, "instances": sorted(instances),
                "lookalike": lookalike}


def make_dataset(videos: Videos, root: Path, n_train: int, n_test: int, seed: int) -> dict:
    """Write root/*.h5 (train and test videos) and root/annotations.json; return the test videos' truth."""
    root.mkdir(parents=True, exist_ok=True)
    db, test_truth, stats = {}, {}, {"validation": [0, 0], "test": [0, 0]}
    for subset, n, stream in (("validation", n_train, 1), ("test", n_test, 2)):
        rng = np.random.default_rng([seed, stream])
        for j in range(n):
            k = j % len(videos.classes)                                # classes cycle: every class in both subsets
            vid = f"{subset}_{j:03d}_{videos.classes[k]}"
            v = videos.video(rng, k)
            write_two_stream(root / f"{vid}.h5", v["features"], FPS, WINDOW, STRIDE)
            db[vid] = {"subset": subset, "duration": float(len(v["features"])),
                       "annotations": [{"segment": list(seg), "label": videos.classes[k]} for seg in v["instances"]]}
            stats[subset][0] += len(v["features"])
            stats[subset][1] += len(v["instances"])
            if subset == "test":
                test_truth[vid] = v
    write_database(root / "annotations.json", db)
    return {"test_truth": test_truth, "snippets": {s: v[0] for s, v in stats.items()},
            "instances": {s: v[1] for s, v in stats.items()}}


# ----------------------------------------------------------------------------------------------
# measurements


def _mean_cos(spaces: list[np.ndarray], kinds: list[np.ndarray], other: int) -> float:
    """Mean cos(action snippet, ``other`` snippet of the same video), pooled over all such pairs."""
    return mean_cosine(spaces, kinds, ACTION, other)


@torch.no_grad()
def collapse(model, truth: dict) -> dict[str, float]:
    """Cosines of φA and φC (μ) on the test videos: action vs context and action vs background snippets."""
    model = model.eval()
    kinds, phi_a, phi_c = [], [], []
    for v in truth.values():
        out = model(torch.from_numpy(np.ascontiguousarray(v["features"].T))[None])
        phi_a.append(out.action[0].T.numpy())
        phi_c.append(out.mu[0].T.numpy())
        kinds.append(v["kind"])
    return {"phiC_ctx": _mean_cos(phi_c, kinds, CONTEXT), "phiC_bg": _mean_cos(phi_c, kinds, BACKGROUND),
            "phiA_ctx": _mean_cos(phi_a, kinds, CONTEXT), "phiA_bg": _mean_cos(phi_a, kinds, BACKGROUND)}


def raw_cosines(truth: dict) -> dict[str, float]:
    feats = [v["features"] for v in truth.values()]
    kinds = [v["kind"] for v in truth.values()]
    return {"ctx": _mean_cos(feats, kinds, CONTEXT), "bg": _mean_cos(feats, kinds, BACKGROUND)}


def run_seed(seed: int, args, data_cfg: DataConfig, det_cfg: DetectorConfig, det_train: DetectTrainConfig,
             thresholds: np.ndarray, tmp: Path) -> dict:
    root = tmp / f"seed{seed}"
    raw_dir, ann = root / "raw", root / "raw" / "annotations.json"
    t0 = time.perf_counter()
    data = make_dataset(Videos(data_cfg, seed), raw_dir, args.train_videos, args.test_videos, seed)
    truth = data["test_truth"]
    out = {"seed": seed, "snippets": data["snippets"], "instances": data["instances"],
           "raw_cos": raw_cosines(truth), "variants": {}, "stage1": {}, "data_s": time.perf_counter() - t0}
    train = DetectTrainConfig(**{**asdict(det_train), "seed": seed})

    # stage 1 (only the models the chosen variants need)
    needed = sorted({STAGE1_OF[v] for v in args.variants if v in STAGE1_OF})
    ckpts = {}
    if needed:
        samples = SampleConfig()
        pairs = build_pairs(raw_dir, ann, "validation", samples)
        out["pairs"] = int(len(pairs.similarity))
        for name in needed:
            t0 = time.perf_counter()
            rcfg = RefactorConfig(in_dim=data_cfg.dim, hidden_dim=args.refactor_hidden, use_kl=(name != "no_kl"),
                                  action_only=(name == "action_only"), form="paper")
            rtrain = RefactorTrainConfig(epochs=args.refactor_epochs, seed=seed)
            model, history = train_refactor(pairs, rcfg, rtrain, progress=False)
            ckpts[name] = save_checkpoint(root / f"stage1_{name}.pt", model, pairs, samples, rtrain, history)
            out["stage1"][name] = {"collapse": collapse(load_refactor(ckpts[name])[0], truth),
                                   "loss_first": history[0]["loss"], "loss_last": history[-1]["loss"],
                                   "params": int(sum(p.numel() for p in model.parameters())),
                                   "train_s": time.perf_counter() - t0}

    for variant in args.variants:
        t0 = time.perf_counter()
        feature_dir, front, ref = raw_dir, "none", None
        if variant == "deep":
            front, ref = "deep", ckpts["full"]
        elif variant in ("refactor", "no_kl", "action_only"):
            front, ref = "refactor", ckpts[STAGE1_OF[variant]]
        elif variant == "stage1":
            feature_dir = root / "refactored"
            apply_refactor(ckpts["full"], raw_dir, feature_dir, progress=False)
        model, meta = train_detector(feature_dir, ann, det_cfg, train, refactor_checkpoint=ref, front=front,
                                     progress=False)
        train_s = time.perf_counter() - t0
        rec = score_detector(model, meta, feature_dir, ann, root / f"det_{variant}.pt", thresholds)
        rec.update({"train_s": train_s, "eval_s": time.perf_counter() - t0 - train_s,
                    "front_params": 0 if model.front is None else int(sum(p.numel() for p in model.front.parameters())),
                    "loss_first": meta["history"][0]["loss"] if meta["history"] else None,
                    "loss_last": meta["history"][-1]["loss"] if meta["history"] else None})
        if front == "refactor":
            rec["collapse"] = collapse(model.front, truth)
            rec["L_R_last"] = meta["history"][-1].get("refactor") if meta["history"] else None
        out["variants"][variant] = rec
        print(f"  seed {seed} {variant:<12} avg mAP {rec['average_mAP']:.3f} "
              f"({' '.join(f'{m:.3f}' for m in rec['mAP'])}), train {train_s:.1f} s", file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------------------------
# report


def _ms(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _fmt(values: list[float], digits: int = 3) -> str:
    m, s = _ms(values)
    return f"{m:.{digits}f}±{s:.{digits}f}"


def summarize(per_seed: list[dict], variants: list[str], thresholds) -> dict:
    summary = {}
    for v in variants:
        recs = [r["variants"][v] for r in per_seed]
        avg = [r["average_mAP"] for r in recs]
        s = {"average_mAP": _ms(avg), "mAP": [_ms([r["mAP"][t] for r in recs]) for t in range(len(thresholds))],
             "train_s": _ms([r["train_s"] for r in recs]), "front_params": recs[0]["front_params"]}
        if "baseline" in variants:
            s["delta_vs_baseline"] = _ms([r["variants"][v]["average_mAP"] - r["variants"]["baseline"]["average_mAP"]
                                          for r in per_seed])
        summary[v] = s
    return summary


def print_report(results: dict) -> None:
    s, per_seed, variants = results["setup"], results["per_seed"], results["setup"]["variants"]
    thr = results["setup"]["tiou"]
    d = s["data"]
    print(f"\nDetector ablation (Table 2's question) on synthetic co-occurrence data: {d['classes']} classes, "
          f"C={d['dim']} (rgb+flow), action norm {d['action_norm']}, noise {d['noise']}/channel, context margins "
          f"{d['margin'][0]:g}-{d['margin'][1]:g} s, {d['scene_only'][0]}-{d['scene_only'][1]} context-only "
          f"stretches/video, look-alikes {d['lookalike_p']:.0%}")
    sn = per_seed[0]
    print(f"{s['train_videos']} train videos ({sn['snippets']['validation']:,} snippets, "
          f"{sn['instances']['validation']} "
          f"instances; seed {per_seed[0]['seed']}) / {s['test_videos']} test videos "
          f"({sn['snippets']['test']:,} snippets, {sn['instances']['test']} instances); detector {s['epochs']} epochs, "
          f"window {s['window']}, base {s['detector']['base_dim']}, heads {s['detector']['head_hidden']}, "
          f"max duration {s['detector']['max_duration']}; stage 1 {s['refactor_epochs']} epochs, hidden "
          f"{s['refactor_hidden']}; seeds {', '.join(str(r['seed']) for r in per_seed)} (mean±std over seeds)")
    print(f"raw f on test videos: cos(action, context snippets) {_fmt([r['raw_cos']['ctx'] for r in per_seed])}, "
          f"cos(action, background snippets) {_fmt([r['raw_cos']['bg'] for r in per_seed])}")
    head = (f"{'variant':<26} {'front params':>12} | " + " ".join(f"{'mAP@' + format(t, 'g'):>11}" for t in thr)
            + f" | {'avg mAP':>11} | {'Δ vs baseline':>13} | {'train s':>7}")
    print(head)
    print("-" * len(head))
    for v in variants:
        row = results["summary"][v]
        delta = row.get("delta_vs_baseline")
        dtxt = "" if delta is None or v == "baseline" else f"{delta[0]:+.3f}±{delta[1]:.3f}"
        params = f"{row['front_params']:,}" if v != "stage1" else f"({per_seed[0]['stage1']['full']['params']:,})"
        print(f"{LABELS[v]:<26} {params:>12} | "
              + " ".join(f"{m:.3f}±{sd:.3f}" for m, sd in row["mAP"])
              + f" | {row['average_mAP'][0]:.3f}±{row['average_mAP'][1]:.3f} | {dtxt:>13} | {row['train_s'][0]:>7.1f}")
    if "stage1" in variants:
        print("(stage 1 only: the detector has no front; its input is f' of the frozen stage-1 RefactorNet, whose "
              "parameters are in brackets)")
    rows = []
    for name in ("full", "no_kl", "action_only"):
        if all(name in r["stage1"] for r in per_seed):
            rows.append((f"stage 1 ({name})", [r["stage1"][name]["collapse"] for r in per_seed]))
    for v in ("refactor", "no_kl", "action_only"):
        if v in variants:
            rows.append((f"stage 2 ({v})", [r["variants"][v]["collapse"] for r in per_seed]))
    if rows:
        print("\nφC collapse on the test videos: mean cos between action snippets and context (ctx) / background (bg) "
              "snippets of the same video; φC ctx ≈ φC bg ≈ 1 means φC maps everything to one direction")
        head = f"{'model':<26} | {'φC ctx':>11} {'φC bg':>11} | {'φA ctx':>11} {'φA bg':>11}"
        print(head)
        print("-" * len(head))
        print(f"{'raw f':<26} | {_fmt([r['raw_cos']['ctx'] for r in per_seed]):>11} "
              f"{_fmt([r['raw_cos']['bg'] for r in per_seed]):>11} | {'':>11} {'':>11}")
        for name, cs in rows:
            print(f"{name:<26} | {_fmt([c['phiC_ctx'] for c in cs]):>11} {_fmt([c['phiC_bg'] for c in cs]):>11} | "
                  f"{_fmt([c['phiA_ctx'] for c in cs]):>11} {_fmt([c['phiA_bg'] for c in cs]):>11}")
    print(f"total {results['wall_s']:.1f} s")


def _git_state() -> dict | None:
    """The repository's HEAD and whether detect/, refactor/, evaluate/ or common/ had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "detect", "refactor", "evaluate", "common"],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"head": head, "modified": [line[3:] for line in dirty if line.strip()]}


def _csv(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in VARIANTS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"variants must be among {', '.join(VARIANTS)}, got {text!r}")
    return items


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 12 + 8 videos, 3 + 5 epochs")
    p.add_argument("--seeds", type=int, default=None, help="repetitions (seeds 0..n-1; default 3, --quick 1)")
    p.add_argument("--variants", type=_csv, default=list(VARIANTS), help=f"default {','.join(VARIANTS)}")
    p.add_argument("--train-videos", type=int, default=None, help="default 48 (--quick 12)")
    p.add_argument("--test-videos", type=int, default=None, help="default 32 (--quick 8)")
    p.add_argument("--epochs", type=int, default=None, help="detector epochs (default 20, --quick 3)")
    p.add_argument("--refactor-epochs", type=int, default=None, help="stage-1 epochs (default 30, --quick 5)")
    p.add_argument("--refactor-hidden", type=int, default=64, help="RefactorNet hidden width (default 64)")
    p.add_argument("--window", type=int, default=64, help="detector training window, snippets (default 64)")
    p.add_argument("--action-norm", type=float, default=DataConfig.action_norm)
    p.add_argument("--noise", type=float, default=DataConfig.noise, help="per-channel noise std")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--dim", type=int, default=64, help="feature size C (rgb + flow halves)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared 2-core machine 2 threads ran up to 15x slower)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    q = args.quick
    args.seeds = args.seeds or (1 if q else 3)
    args.train_videos = args.train_videos or (12 if q else 48)
    args.test_videos = args.test_videos or (8 if q else 32)
    args.epochs = args.epochs if args.epochs is not None else (3 if q else 20)
    args.refactor_epochs = args.refactor_epochs or (5 if q else 30)
    if args.dim % 2:
        p.error("--dim must be even (two streams)")
    torch.set_num_threads(max(1, args.threads))

    data_cfg = DataConfig(classes=args.classes, dim=args.dim, action_norm=args.action_norm, noise=args.noise)
    det_cfg = DetectorConfig(base_dim=64, boundary_hidden=64, head_hidden=128, max_duration=32)
    det_train = DetectTrainConfig(epochs=args.epochs, window=args.window, batch_size=16)
    thresholds = parse_thresholds(TIOU)
    results = {"setup": {"data": asdict(data_cfg), "variants": args.variants, "seeds": args.seeds,
                         "train_videos": args.train_videos, "test_videos": args.test_videos, "epochs": args.epochs,
                         "window": args.window, "refactor_epochs": args.refactor_epochs,
                         "refactor_hidden": args.refactor_hidden, "tiou": [float(t) for t in thresholds],
                         "detector": det_cfg.to_dict(), "detector_train": asdict(det_train),
                         "threads": torch.get_num_threads(), "torch": torch.__version__, "git": _git_state()}}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="detect_ablation_") as tmp:
        results["per_seed"] = [run_seed(seed, args, data_cfg, det_cfg, det_train, thresholds, Path(tmp))
                               for seed in range(args.seeds)]
    results["wall_s"] = time.perf_counter() - t_all
    results["summary"] = summarize(results["per_seed"], args.variants, thresholds)
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"figures -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
