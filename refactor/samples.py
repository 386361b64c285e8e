"""Action samples and their coupling samples (RefactorNet §3.3).

In a training video, a snippet whose centre time lies inside a ground-truth instance is an *action
snippet* of that instance; snippets inside no instance are *non-action snippets*. The action
snippets of one instance, average-pooled, form one *action sample* with the instance's class (an
instance too short to contain a snippet centre takes the snippet whose centre is nearest to its
middle). A non-action snippet is a *coupling sample* of an action sample when their cosine
similarity is at least ``threshold`` and it is among the action sample's ``top_k`` most similar
non-action snippets (either rule can be switched off with None). Each (action, coupling) pair keeps
its similarity, which weighs its loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SampleConfig", "VideoSamples", "collect_samples", "SampleError"]


class SampleError(ValueError):
    """Samples cannot be collected from the given features and annotations."""


@dataclass(frozen=True)
class SampleConfig:
    """How coupling samples are chosen.

    Attributes:
        threshold: coupling: minimum cosine similarity (none or -1: no threshold).
        top_k: coupling: at most this many non-action snippets per action sample, the most similar
            (none or 0: all that pass the threshold).
    """

    threshold: float | None = field(default=0.5, metadata={"none_at": -1.0})
    top_k: int | None = field(default=5, metadata={"none_at": 0})

    def __post_init__(self) -> None:
        if self.threshold is None and self.top_k is None:
            raise ValueError("set a similarity threshold, a top-k, or both")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


@dataclass
class VideoSamples:
    """Samples of one video.

    Attributes:
        video_id: the video.
        action_features (ndarray[A, C]): pooled feature of each action sample.
        action_labels (ndarray[A] int): class index of each action sample.
        action_snippets: snippet indices pooled into each action sample.
        pair_action (ndarray[P] int): action sample of each pair.
        pair_snippet (ndarray[P] int): coupling snippet of each pair.
        pair_similarity (ndarray[P] float): cosine similarity of each pair.
        outside: instances left out because they lie wholly outside the video ``[0, duration]``.
    """

    video_id: str
    action_features: np.ndarray
    action_labels: np.ndarray
    action_snippets: list[np.ndarray] = field(default_factory=list)
    pair_action: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_snippet: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pair_similarity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    outside: int = 0


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, C) x (B, C) -> (A, B) cosine similarities (0 for zero vectors)."""
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na > 0, na, 1)) @ (b / np.where(nb > 0, nb, 1)).T


def collect_samples(video_id: str, features: np.ndarray, times: np.ndarray, segments: np.ndarray,
                    labels: np.ndarray, config: SampleConfig = SampleConfig(),
                    duration: float | None = None) -> VideoSamples:
    """Action samples and coupling pairs of one video.

    Args:
        features (ndarray[T, C]): snippet features.
        times (ndarray[T]): snippet centre times in seconds.
        segments (ndarray[M, 2]): ground-truth instances, (start, end) in seconds.
        labels (ndarray[M] int): their classes.
        duration: the video's length in seconds; instances starting at or after it (or ending at or
            before 0) are left out and counted in ``outside`` instead of becoming an action sample
            on the nearest (last) snippet. An instance that only overhangs the end keeps the
            snippets it covers.
    """
    features = np.asarray(features, dtype=np.float32)
    if not np.all(np.isfinite(features)):
        raise SampleError(f"{video_id}: features contain NaN or inf")
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    times = np.asarray(times, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    outside = 0
    if duration is not None and len(segments):
        within = (segments[:, 0] < duration) & (segments[:, 1] > 0)
        outside = int((~within).sum())
        segments, labels = segments[within], labels[within]
    inside = (times[None, :] >= segments[:, :1]) & (times[None, :] <= segments[:, 1:])   # (M, T)
    snippets = []
    for m in range(len(segments)):
        idx = np.flatnonzero(inside[m])
        if idx.size == 0:   # shorter than the snippet spacing: the snippet nearest to its middle
            idx = np.array([int(np.argmin(np.abs(times - segments[m].mean())))])
        snippets.append(idx)
    non_action = np.flatnonzero(~inside.any(axis=0))
    for idx in snippets:
        non_action = np.setdiff1d(non_action, idx)
    if snippets:
        pooled = np.stack([features[idx].mean(axis=0) for idx in snippets])
    else:
        pooled = np.zeros((0, features.shape[1]), np.float32)
    out = VideoSamples(video_id, pooled, labels, snippets, outside=outside)
    if len(snippets) == 0 or non_action.size == 0:
        return out
    sim = _cosine(pooled, features[non_action])                                            # (A, B)
    keep = np.ones_like(sim, dtype=bool) if config.threshold is None else sim >= config.threshold
    if config.top_k is not None and config.top_k < sim.shape[1]:
        rank = np.argsort(np.argsort(-sim, axis=1, kind="stable"), axis=1, kind="stable")  # 0 = most similar
        keep &= rank < config.top_k
    a_idx, b_idx = np.nonzero(keep)
    out.pair_action = a_idx.astype(np.int64)
    out.pair_snippet = non_action[b_idx].astype(np.int64)
    out.pair_similarity = sim[a_idx, b_idx].astype(np.float64)
    return out
