"""How well each form of the context score tells a class's action, its context and background apart, per snippet
(the mechanism behind the refactoring study's ninth round; README, "When does refactoring help?").

For each seed of a synthetic feature world (``benchmarks/feature_worlds.py``) the context score
(:mod:`refactor.context`) is trained in each form on the training videos and applied to the test videos,
whose snippet kinds are known. Printed per form, mean ± std over seeds:

* ``ctx AUC``: the video's own class's context probability, context snippets against background ones;
* ``ctx/act AUC``: the same probability, context snippets against action ones;
* ``act AUC``: its own class's action probability, action snippets against context ones (the two the
  detector must tell apart at an action's boundaries);
* ``act/ctx AUC``: the same pair, ranked by p(action) − p(context) of its own class;
* ``class acc``: on action snippets, the share whose largest action probability (first form: context
  probability) is their own class's.

With ``--boundaries`` it measures the boundary score's forms instead (``targets="boundaries"``: window 2, window
4, a hidden layer of 64; sixteenth round), on the training videos (which the scorer learnt from) and on the
test videos, starts and ends together: per action boundary, the share of snippets whose output (its own
class's start output at the action's first snippet, end output at its last) is below the boundary's (ties
half), averaged over boundaries, among

* ``all AUC``: every other snippet of its video;
* ``near AUC``: the snippets 1 and 2 away from it (what decides a segment's tIoU at 0.7).

    python benchmarks/context_separation.py --seeds 30,31,32,33,34
    python benchmarks/context_separation.py --boundaries --world train_videos=200 --seeds 30,31,32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.feature_worlds import ACTION, BACKGROUND, CONTEXT, write_world  # noqa: E402
from benchmarks.refactor_study import BOUNDARY_FORMS as STUDY_BOUNDARY_FORMS  # noqa: E402
from benchmarks.refactor_study import VARIANTS, _world_overrides, world_from_overrides  # noqa: E402
from extract.features import read_features  # noqa: E402
from refactor import ContextConfig, SampleConfig, build_pairs, train_context  # noqa: E402

FORMS = {
    "first (contexts, window 0)": {"actions": False, "window": 0},
    "contexts + actions, window 0": {"actions": True, "window": 0},
    "contexts, window 2": {"actions": False, "window": 2},
    "actions alone, window 2": {"contexts": False, "actions": True, "window": 2},
    "default (contexts + actions, window 2)": {},
}
# the boundary score (the second score) of the study's context_bd_x and of the sixteenth round's other forms
BOUNDARY_FORMS = {name: VARIANTS[name].scores[1] for name in ("context_bd_x", *STUDY_BOUNDARY_FORMS)}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive's score > a negative's) + ½ P(tie): the area under the ROC curve (nan when a side is empty)."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores[order][np.r_[False, np.diff(scores[order]) == 0]]):   # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[:len(positive)].sum() - len(positive) * (len(positive) + 1) / 2)
                 / (len(positive) * len(negative)))


def separation(config: ContextConfig, root: Path, data: dict, classes: int) -> dict[str, float]:
    """The four figures of the module docstring for one trained form on one seed's test videos."""
    pairs = build_pairs(root, root / "annotations.json", "validation", SampleConfig())
    scorer, _ = train_context(pairs, root, config)
    k = classes
    parts = {"ctx": {CONTEXT: [], BACKGROUND: [], ACTION: []}, "act": {ACTION: [], CONTEXT: []},
             "diff": {ACTION: [], CONTEXT: []}}
    hits = []
    for vid, feats in data["test"].items():
        with torch.no_grad():
            p = scorer(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).T[None])[0].T.numpy()
        cls, kinds = int(vid[-2:]), data["kinds"][vid]
        ctx = p[:, cls] if config.contexts else None
        act = p[:, k * config.contexts + cls] if config.actions else None
        for kind in (CONTEXT, BACKGROUND, ACTION):
            if ctx is not None:
                parts["ctx"][kind].append(ctx[kinds == kind])
        for kind in (ACTION, CONTEXT):
            if act is not None:
                parts["act"][kind].append(act[kinds == kind])
            if act is not None and ctx is not None:
                parts["diff"][kind].append((act - ctx)[kinds == kind])
        block = p[:, k * config.contexts:k * config.contexts + k] if config.actions else p[:, :k]
        hits.append(block[kinds == ACTION].argmax(1) == cls)

    def area(name: str, pos: int, neg: int) -> float:
        if not parts[name][pos]:
            return float("nan")
        return auc(np.concatenate(parts[name][pos]), np.concatenate(parts[name][neg]))

    return {"ctx AUC": area("ctx", CONTEXT, BACKGROUND), "ctx/act AUC": area("ctx", CONTEXT, ACTION),
            "act AUC": area("act", ACTION, CONTEXT),
            "act/ctx AUC": area("diff", ACTION, CONTEXT), "class acc": float(np.concatenate(hits).mean())}


def action_runs(kinds: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) snippet of each run of ACTION snippets in ``kinds`` (T,), in order."""
    edge = np.diff(np.r_[0, (kinds == ACTION).astype(int), 0])
    return list(zip(np.flatnonzero(edge == 1), np.flatnonzero(edge == -1) - 1))


def boundary_separation(config: ContextConfig, root: Path, data: dict, classes: int) -> dict[str, float]:
    """The two figures of ``--boundaries`` (module docstring) on the training and on the test videos."""
    pairs = build_pairs(root, root / "annotations.json", "validation", SampleConfig())
    scorer, _ = train_context(pairs, root, config)
    out = {}
    for split in ("train", "test"):
        pos, rest, near = [], [], []
        for vid, kinds in data["kinds"].items():
            if vid.startswith("test") != (split == "test"):
                continue
            feats = data["test"][vid] if split == "test" else read_features(root / f"{vid}.h5").features
            p, cls = scorer.score(feats), int(vid[-2:])
            for first, last in action_runs(kinds):
                for t, col in ((first, cls), (last, classes + cls)):
                    others = np.ones(len(kinds), dtype=bool)
                    others[t] = False
                    close = [u for u in (t - 2, t - 1, t + 1, t + 2) if 0 <= u < len(kinds)]
                    pos.append(p[t, col])
                    rest.append(p[others, col])
                    near.append(p[close, col])
        out[f"{split} all AUC"] = float(np.mean([auc(np.array([a]), b) for a, b in zip(pos, rest)]))
        out[f"{split} near AUC"] = float(np.mean([auc(np.array([a]), b) for a, b in zip(pos, near)]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=_world_overrides, default={}, help="centre overrides, e.g. context_overlap=0.6")
    p.add_argument("--seeds", default="30,31,32,33,34")
    p.add_argument("--boundaries", action="store_true", help="the boundary score's forms and figures")
    args = p.parse_args(argv)
    world = world_from_overrides(args.world)
    seeds = [int(s) for s in args.seeds.split(",")]
    forms, measure = (BOUNDARY_FORMS, boundary_separation) if args.boundaries else (FORMS, separation)
    results: dict[str, list[dict]] = {name: [] for name in forms}
    for seed in tqdm(seeds, desc="seeds", unit="seed"):
        with tempfile.TemporaryDirectory() as tmp:
            data = write_world(world, seed, Path(tmp))
            for name, overrides in forms.items():
                results[name].append(measure(ContextConfig(seed=seed, **overrides), Path(tmp), data, world.classes))
    keys = list(next(iter(results.values()))[0])
    print(f"world: {args.world or 'centre'}; seeds {args.seeds}; mean ± std over seeds\n")
    print("| form | " + " | ".join(keys) + " |")
    print("| --- |" + " ---: |" * len(keys))
    for name, rows in results.items():
        cells = []
        for key in keys:
            v = np.array([r[key] for r in rows])
            cells.append("—" if np.all(np.isnan(v)) else f"{v.mean():.3f} ± {v.std():.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
