"""BSN-style boundary-matching proposals from start / end probabilities.

A snippet is a candidate start (end) where its start (end) probability is a local peak or exceeds
``ratio`` (0.5) times the sequence's maximum (BSN, ECCV 2018, §3.3, with the half-maximum rule of
this project). Every candidate start ``s`` is paired with every candidate end ``e`` with
``s < e <= s + max_duration``; the proposal ``(s, e)`` (snippet-index coordinates) scores
``p_start[s] * p_end[e]``.

Long videos: the pairs per start are capped by ``max_duration`` (snippets), so their number is at
most ``T * max_duration``; starts are processed in chunks of at most ``chunk_pairs`` pairs and
only the ``max_proposals`` best are kept between chunks, so memory stays ``O(chunk_pairs +
max_proposals)`` whatever the video's length.
"""

from __future__ import annotations

import numpy as np

__all__ = ["boundary_candidates", "generate_proposals"]


def boundary_candidates(prob: np.ndarray, ratio: float = 0.5) -> np.ndarray:
    """Indices (ascending) where ``prob`` is a local peak or ``> ratio * max(prob)``.

    A peak is strictly higher than both neighbours (the first and last snippet have one
    neighbour). A flat plateau is not a peak; it is a candidate only if above the ratio rule.

    Args:
        prob (ndarray[T]): probabilities of one sequence.
    """
    prob = np.asarray(prob, dtype=np.float64).reshape(-1)
    t = len(prob)
    if t == 0:
        return np.zeros(0, dtype=np.int64)
    left = np.concatenate([[-np.inf], prob[:-1]])
    right = np.concatenate([prob[1:], [-np.inf]])
    peak = (prob > left) & (prob > right)
    high = prob > ratio * prob.max()
    return np.flatnonzero(peak | high).astype(np.int64)


def generate_proposals(p_start: np.ndarray, p_end: np.ndarray, max_duration: int, max_proposals: int | None = None,
                       ratio: float = 0.5, chunk_pairs: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Pair candidate starts with later candidate ends.

    Args:
        p_start, p_end (ndarray[T]): boundary probabilities.
        max_duration: longest proposal, in snippets (``e - s <= max_duration``).
        max_proposals: keep only the best this many (None: all).
        ratio: candidate rule of :func:`boundary_candidates`.

    Returns:
        (segments (ndarray[P, 2] int64) ``(s, e)`` snippet indices, scores (ndarray[P] float64)),
        sorted by score descending (ties: by start, then end).
    """
    if max_duration < 1:
        raise ValueError(f"max_duration must be >= 1 snippet, got {max_duration}")
    p_start = np.asarray(p_start, dtype=np.float64).reshape(-1)
    p_end = np.asarray(p_end, dtype=np.float64).reshape(-1)
    starts = boundary_candidates(p_start, ratio)
    ends = boundary_candidates(p_end, ratio)
    lo = np.searchsorted(ends, starts, side="right")                  # first end > s
    hi = np.searchsorted(ends, starts + max_duration, side="right")   # past the last end <= s + max_duration
    counts = hi - lo
    kept_seg = np.zeros((0, 2), dtype=np.int64)
    kept_score = np.zeros(0)
    bounds = np.cumsum(counts)
    first = 0
    while first < len(starts):
        # starts [first, last) hold at most chunk_pairs pairs (at least one start per chunk)
        base = bounds[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(bounds, base + chunk_pairs, side="right")))
        n = counts[first:last]
        s_idx = np.repeat(np.arange(first, last), n)
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        e_idx = lo[s_idx] + offset
        seg = np.stack([starts[s_idx], ends[e_idx]], axis=1)
        score = p_start[seg[:, 0]] * p_end[seg[:, 1]]
        kept_seg = np.concatenate([kept_seg, seg])
        kept_score = np.concatenate([kept_score, score])
        if max_proposals is not None and len(kept_score) > max_proposals:
            order = np.lexsort((kept_seg[:, 1], kept_seg[:, 0], -kept_score))[:max_proposals]
            kept_seg, kept_score = kept_seg[order], kept_score[order]
        first = last
    order = np.lexsort((kept_seg[:, 1], kept_seg[:, 0], -kept_score))
    return kept_seg[order], kept_score[order]
