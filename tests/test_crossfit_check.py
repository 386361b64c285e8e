"""benchmarks/crossfit_check.py: a fold scorer whose outputs name other classes shows as low agreement."""

import numpy as np
import torch

from benchmarks.crossfit_check import fold_agreement
from refactor.context import ContextScorer


def _scorer(weight: np.ndarray) -> ContextScorer:
    """A 2-d, 3-class scorer with contexts and actions (7 outputs: 3 contexts, 3 actions, none) and these
    output weights, no bias, identity standardisation."""
    scorer = ContextScorer(2, 3, contexts=True, actions=True)
    with torch.no_grad():
        scorer.linear.weight.copy_(torch.from_numpy(weight))
        scorer.linear.bias.zero_()
    return scorer.eval()


def test_agreement_and_accuracy_by_hand():
    # snippets on three rays; each class's action output points along its own ray, far stronger than the rest
    rays = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]) * 10
    w = np.zeros((7, 2))
    w[3:6] = rays / 10                                       # action outputs 3, 4, 5 <- classes 0, 1, 2
    features = np.repeat(rays, 2, axis=0).astype(np.float32)  # 6 snippets: classes 0, 0, 1, 1, 2, 2
    truth = np.array([0, 0, 1, 1, -1, 2])                     # snippet 4 outside every action
    tests = {"v": (features, truth)}
    reference = _scorer(w)
    scores = {"v": reference.score(features)}
    assert fold_agreement(reference, scores, tests, ["a", "b", "c"]) == (1.0, 1.0)
    # the same scorer with classes 0 and 2 swapped (a fold numbered by another first appearance)
    swapped = w.copy()
    swapped[[3, 5]] = w[[5, 3]]
    accuracy, agreement = fold_agreement(_scorer(swapped), scores, tests, ["a", "b", "c"])
    assert accuracy == 2 / 5 and agreement == 2 / 6            # only class 1's snippets still agree
