"""Synthetic co-occurrence benchmark for RefactorNet stage 1 (refactor/): does φA separate an action from
the scene it co-occurs with, and does φC keep what they share?

Data (two-stream layout, rgb + flow, C = 2 x dim/2): K classes; class k has a strong context vector s_k
(unit norm) and a weak action vector w_k (norm 0.3), both random; backgrounds b_1..b_M (unit norm) and,
per class, a look-alike scene l_k (unit norm, cos(l_k, s_k) = 0.6: similar to the context, but not it).

* inside an action of class k:              f = s_k + w_k + noise
* context ("coupling") snippets around it
  and scene-only stretches elsewhere:        f = s_k + noise
* everything else:                           f = b_m + noise (a random background per stretch; 15 % of
                                             the stretches show l_k of the video's class instead)

Training videos go through ``build_pairs`` + ``train_refactor`` (paper defaults: threshold 0.5, top-k 5,
Adam 1e-3, 30 epochs, hidden 1024); held-out videos (same vectors, new draws) measure:

(a) cosine gap: mean cos(action snippet, context snippet of the same video) in raw f, in φA(f) (lower =
    action separated from its scene) and in φC(f) = μ (higher = the co-occurrence is captured);
(b) linear probe (logistic regression, full-batch L-BFGS on standardized features, trained on half the
    held-out videos, tested on the other half): action vs context snippets from raw f, φA(f), φC(f) and
    f' = φA ⊕ φC;
(c) the sample-collection rule: pairs, their precision (coupling snippet is a true context snippet) and
    the metrics above for several (threshold, top_k) (look-alike snippets are false coupling samples).

    python benchmarks/refactor_synthetic.py [--quick] [--json OUT.json] [--epochs 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.synthetic import World, mean_cosine, write_database, write_two_stream  # noqa: E402
from extract.features import read_features  # noqa: E402
from refactor import RefactorConfig, SampleConfig, TrainConfig, build_pairs, train_refactor  # noqa: E402

FPS, WINDOW, STRIDE = 16.0, 16, 16          # snippet i is centred at i + 0.5 s
SETTINGS = [(0.5, 5), (0.8, 5), (None, 1), (0.5, None), (0.3, None)]
ACTION, CONTEXT, BACKGROUND = 2, 1, 0


class Videos:
    """The videos of one run, drawn from a world of shared vectors (:class:`benchmarks.synthetic.World`)."""

    def __init__(self, classes: int, dim: int, backgrounds: int, action_norm: float, noise: float, seed: int):
        self.classes = [f"class{k:02d}" for k in range(classes)]
        self.world = World.draw(np.random.default_rng(seed), classes, dim, backgrounds, action_norm, lookalike_cos=0.6)
        self.noise, self.dim = noise, dim

    def video(self, rng: np.random.Generator, k: int, length: int) -> tuple[np.ndarray, np.ndarray, list]:
        """(features (T, C), kind (T,) in {BACKGROUND, CONTEXT, ACTION}, instances [(start, end) s])."""
        world = self.world
        kind = np.zeros(length, np.int64)
        feats = np.zeros((length, self.dim))
        t = 0
        while t < length:                                   # background stretches of 3-8 snippets
            n = int(rng.integers(3, 9))
            pick = int(rng.integers(len(world.backgrounds)))
            feats[t:t + n] = world.lookalike[k] if rng.random() < 0.15 else world.backgrounds[pick]
            t += n
        instances = []
        for start in (int(rng.integers(4, length // 2 - 12)), int(rng.integers(length // 2 + 4, length - 12))):
            n = int(rng.integers(3, 7))                      # action of 3-6 snippets with 3-4 context each side
            before, after = int(rng.integers(3, 5)), int(rng.integers(3, 5))
            feats[start - before:start + n + after] = world.context[k]
            kind[start - before:start + n + after] = CONTEXT
            feats[start:start + n] += world.action[k]
            kind[start:start + n] = ACTION
            instances.append((float(start), float(start + n)))
        if rng.random() < 0.5:                              # a scene-only stretch away from the actions
            s = int(rng.integers(length // 2 - 8, length // 2 - 3))
            if np.all(kind[s - 1:s + 5] == BACKGROUND):
                feats[s:s + 4] = world.context[k]
                kind[s:s + 4] = CONTEXT
        feats += self.noise * rng.normal(size=feats.shape)
        return feats.astype(np.float32), kind, instances


def make_split(videos: Videos, root: Path, per_class: int, length: int, seed: int, subset: str) -> dict:
    """Write feature files + annotations; return {video_id: (kind, label)}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    db, truth = {}, {}
    for k, name in enumerate(videos.classes):
        for j in range(per_class):
            vid = f"{subset}_{name}_{j:03d}"
            feats, kind, instances = videos.video(rng, k, length)
            write_two_stream(root / f"{vid}.h5", feats, FPS, WINDOW, STRIDE)
            db[vid] = {"subset": subset, "duration": float(length),
                       "annotations": [{"segment": list(seg), "label": name} for seg in instances]}
            truth[vid] = (kind, k)
    write_database(root / "annotations.json", db)
    return truth


@torch.no_grad()
def components(model, feats: np.ndarray) -> dict[str, np.ndarray]:
    out = model(torch.from_numpy(np.ascontiguousarray(feats.T))[None])
    return {"raw": feats, "phiA": out.action[0].T.numpy(), "phiC": out.mu[0].T.numpy(),
            "f_prime": out.features[0].T.numpy()}


def cosine_gap(views: list[dict], kinds: list[np.ndarray], other: int = CONTEXT) -> dict[str, float]:
    """Mean cos(action snippet, ``other`` snippet of the same video), pooled over all such pairs
    (other = CONTEXT: the cosine gap; other = BACKGROUND: the control, high only if a space collapsed)."""
    return {space: mean_cosine([v[space] for v in views], kinds, ACTION, other) for space in ("raw", "phiA", "phiC")}


def logistic_probe(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray,
                   weight_decay: float = 1e-3) -> float:
    """Test accuracy of an L2-regularized logistic regression (standardized inputs, L-BFGS)."""
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    xt = torch.from_numpy((x_tr - mean) / std).double()
    xe = torch.from_numpy((x_te - mean) / std).double()
    yt = torch.from_numpy(y_tr).double()
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (xe @ w + b) > 0
    return float((pred.numpy() == y_te.astype(bool)).mean())


def probe(views: list[dict], kinds: list[np.ndarray]) -> dict[str, float]:
    """Action (1) vs context (0) snippets; first half of the videos trains, second half tests."""
    half = len(views) // 2
    res = {}
    for space in ("raw", "phiA", "phiC", "f_prime"):
        parts = []
        for sel in (slice(0, half), slice(half, None)):
            xs, ys = [], []
            for v, kind in zip(views[sel], kinds[sel]):
                m = kind != BACKGROUND
                xs.append(v[space][m].astype(np.float64))
                ys.append((kind[m] == ACTION).astype(np.float64))
            parts.append((np.concatenate(xs), np.concatenate(ys)))
        res[space] = logistic_probe(*parts[0], *parts[1])
    return res


def pair_precision(pairs, truth: dict) -> float:
    good = total = 0
    for vs in pairs.videos:
        kind = truth[vs.video_id][0]
        good += int(np.sum(kind[vs.pair_snippet] == CONTEXT))
        total += len(vs.pair_snippet)
    return good / max(total, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer videos and epochs (a smoke run)")
    p.add_argument("--epochs", type=int, default=None, help="stage-1 epochs (default 30, --quick 8)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--dim", type=int, default=64, help="feature size C (rgb + flow halves)")
    p.add_argument("--noise", type=float, default=0.09, help="per-channel noise std")
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    epochs = args.epochs or (8 if args.quick else 30)
    train_per_class, test_per_class, length = (4, 4, 48) if args.quick else (12, 10, 64)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    videos = Videos(args.classes, args.dim, backgrounds=12, action_norm=0.3, noise=args.noise, seed=args.seed)
    results = {"setup": {"classes": args.classes, "dim": args.dim, "noise": args.noise, "epochs": epochs,
                         "hidden_dim": args.hidden_dim, "train_videos": train_per_class * args.classes,
                         "test_videos": test_per_class * args.classes, "snippets_per_video": length,
                         "seed": args.seed}, "settings": []}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="refactor_bench_") as tmp:
        tmp = Path(tmp)
        train_truth = make_split(videos, tmp / "train", train_per_class, length, args.seed + 1, "validation")
        test_truth = make_split(videos, tmp / "test", test_per_class, length, args.seed + 2, "test")
        # interleave classes so both probe halves hold every class
        test_ids = sorted(test_truth, key=lambda v: (int(v.rsplit("_", 1)[1]), v))
        test_feats = [read_features(tmp / "test" / f"{v}.h5").features for v in test_ids]
        kinds = [test_truth[v][0] for v in test_ids]
        raw_views = [{"raw": f} for f in test_feats]
        raw3 = [{**v, "phiA": v["raw"], "phiC": v["raw"]} for v in raw_views]
        results["raw"] = {"cos": cosine_gap(raw3, kinds)["raw"],
                          "cos_background": cosine_gap(raw3, kinds, BACKGROUND)["raw"]}

        for threshold, top_k in SETTINGS:
            samples = SampleConfig(threshold, top_k)
            t0 = time.perf_counter()
            pairs = build_pairs(tmp / "train", tmp / "train" / "annotations.json", "validation", samples)
            config = RefactorConfig(in_dim=args.dim, hidden_dim=args.hidden_dim, form="paper")
            model, history = train_refactor(pairs, config, TrainConfig(epochs=epochs, seed=args.seed), progress=False)
            train_s = time.perf_counter() - t0
            views = [components(model, f) for f in test_feats]
            row = {"threshold": threshold, "top_k": top_k, "pairs": int(len(pairs.similarity)),
                   "pair_precision": pair_precision(pairs, train_truth),
                   "mean_alpha": float(pairs.similarity.mean()),
                   "loss_first": history[0]["loss"], "loss_last": history[-1]["loss"],
                   "L_A_last": history[-1]["action"], "L_C_last": history[-1]["cooccurrence"],
                   "cos": cosine_gap(views, kinds), "cos_background": cosine_gap(views, kinds, BACKGROUND),
                   "probe": probe(views, kinds), "train_s": train_s}
            results["settings"].append(row)
            print(f"  threshold={threshold} top_k={top_k}: {row['pairs']} pairs, {train_s:.1f} s", file=sys.stderr)
    results["wall_s"] = time.perf_counter() - t_all

    s = results["setup"]
    print(f"\nRefactorNet stage 1 on synthetic co-occurrence data: {s['classes']} classes, C={s['dim']}, "
          f"noise {s['noise']}, {s['train_videos']} train / {s['test_videos']} held-out videos x "
          f"{s['snippets_per_video']} snippets, {epochs} epochs, hidden {s['hidden_dim']}, seed {s['seed']}")
    print("cos = mean cos(action snippet, context snippet of its video) on held-out videos (raw f: {:.3f}); "
          "bg = the same vs background snippets (raw f: {:.3f}; near 1 would mean a collapsed space); "
          "acc = action-vs-context linear probe, test accuracy".format(results["raw"]["cos"],
                                                                        results["raw"]["cos_background"]))
    head = (f"{'thr':>5} {'top_k':>5} {'pairs':>6} {'prec':>5} {'loss0':>6} {'lossN':>6} | {'cos raw':>7} "
            f"{'cos φA':>7} {'cos φC':>7} {'bg φA':>6} {'bg φC':>6} | {'acc raw':>7} {'acc φA':>7} {'acc φC':>7} "
            f"{'acc f′':>7} | {'s':>5}")
    print(head)
    print("-" * len(head))
    for r in results["settings"]:
        print(f"{str(r['threshold']):>5} {str(r['top_k']):>5} {r['pairs']:>6d} {r['pair_precision']:>5.2f} "
              f"{r['loss_first']:>6.3f} {r['loss_last']:>6.3f} | {r['cos']['raw']:>7.3f} {r['cos']['phiA']:>7.3f} "
              f"{r['cos']['phiC']:>7.3f} {r['cos_background']['phiA']:>6.3f} {r['cos_background']['phiC']:>6.3f} | "
              f"{r['probe']['raw']:>7.3f} {r['probe']['phiA']:>7.3f} "
              f"{r['probe']['phiC']:>7.3f} {r['probe']['f_prime']:>7.3f} | {r['train_s']:>5.1f}")
    print(f"total {results['wall_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"figures -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
