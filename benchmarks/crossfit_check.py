"""Do the out-of-fold context scorers mean what the all-data scorer means? Per fold of cross-fitting
(``detect fit --context-folds``, :func:`refactor.context.crossfit_scorers`), on the test videos:

* how often its most probable action output is the true class, on the snippets inside a ground-truth
  action (the all-data scorer's figure is the first row);
* how often its most probable output (contexts and actions) agrees with the all-data scorer's, on the
  snippets where the all-data scorer puts at least half its mass on some class.

A fold whose outputs were in another class order (the bug fixed in the nineteenth round of the
refactoring study: folds that held out a class's first video numbered the classes by their own first
appearance) shows as an agreement far below the other folds'. The detector trains on these scores, so
they should agree with the all-data scorer's about as well as two scorers learnt on slightly different
data can.

    python benchmarks/crossfit_check.py WORK/features ANNOTATIONS WORK/context.pt [--folds 8]

(``WORK``: a ``detect fit`` work folder; ``context.pt`` needs action outputs, as the default front's.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.annotations import load_ground_truth, read_database  # noqa: E402
from extract.features import read_features  # noqa: E402
from refactor import SampleConfig  # noqa: E402
from refactor.context import ContextScorer, crossfit_scorers, load_context, scorer_config  # noqa: E402


def fold_agreement(scorer: ContextScorer, reference: dict[str, np.ndarray],
                   tests: dict[str, tuple[np.ndarray, np.ndarray]], order: list[str],
                   confident: float = 0.5) -> tuple[float, float]:
    """(action accuracy, agreement with the reference scores) of ``scorer`` over ``tests``: video id -> (features
    (ndarray[T, C]), true class index per snippet (ndarray[T] int, -1 outside actions; indices into ``order``,
    the scorers' class order)). ``reference``: video id -> the all-data scorer's scores of that video (ndarray[T,
    outputs], :meth:`ContextScorer.score`, computed once for every fold). Both fractions in [0, 1]; NaN where no
    snippet qualifies."""
    k = len(order)
    hits = total = agree = counted = 0
    for vid, (features, truth) in tests.items():
        p, ref = scorer.score(features), reference[vid]
        inside = truth >= 0
        hits += int((p[inside, k:2 * k].argmax(1) == truth[inside]).sum())
        total += int(inside.sum())
        sure = ref.max(1) >= confident
        agree += int((p[sure].argmax(1) == ref[sure].argmax(1)).sum())
        counted += int(sure.sum())
    return (hits / total if total else float("nan"), agree / counted if counted else float("nan"))


def snippet_truth(feature_dir: Path, annotations, subset: str,
                  order: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Video id -> (features, per-snippet class index in ``order``, -1 outside every action) for ``subset``."""
    gt = load_ground_truth(annotations, subset)
    out = {}
    for v, vid in enumerate(gt.videos):
        path = feature_dir / f"{vid}.h5"
        if not path.is_file():
            continue
        ff = read_features(path)
        truth = np.full(len(ff.features), -1, dtype=np.int64)
        for (start, end), label in zip(gt.segments[gt.video == v], gt.labels[gt.video == v]):
            truth[(ff.times >= start) & (ff.times <= end)] = order.index(gt.classes[label])
        out[vid] = (ff.features, truth)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("features", type=Path)
    p.add_argument("annotations")
    p.add_argument("context", help="the all-data context-score checkpoint (with action outputs)")
    p.add_argument("--folds", type=int, default=8)
    p.add_argument("--train-subset", default="validation")
    p.add_argument("--test-subset", default="test")
    args = p.parse_args(argv)
    reference, ckpt = load_context(args.context)
    if not reference.actions:
        p.error(f"{args.context} has no action outputs")
    order = list(ckpt["classes"])
    database = read_database(args.annotations)
    tests = snippet_truth(args.features, database, args.test_subset, order)
    scores = {vid: reference.score(features) for vid, (features, _) in tests.items()}
    rows = [("all data", *fold_agreement(reference, scores, tests, order))]
    folds = crossfit_scorers(args.features, database, args.train_subset, scorer_config(ckpt),
                             SampleConfig(**ckpt["samples"]), args.folds, classes=order)
    for i, (scorer, held) in enumerate(folds):
        if scorer is not None:
            name = f"fold {i + 1} ({len(held)} videos held out)"
            rows.append((name, *fold_agreement(scorer, scores, tests, order)))
    print(f"{len(tests)} test videos; classes {', '.join(order)}")
    print("| scorer | action accuracy in actions (%) | agreement with the all-data scorer (%) |")
    print("| --- | ---: | ---: |")
    for name, acc, agree in rows:
        print(f"| {name} | {100 * acc:.1f} | {100 * agree:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
