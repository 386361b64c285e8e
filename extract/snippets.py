"""Snippet arithmetic of CONVENTIONS.md: which sampled frames each snippet covers, and when it is.

Snippet ``i`` covers sampled frames ``[i * stride, i * stride + window)``; its time is the centre
``(i * stride + window / 2) / fps``. Snippets start every ``stride`` frames until every sampled
frame is covered, and never past the last frame:
``T = max(1, min(ceil((N - window) / stride) + 1, ceil(N / stride)))`` (the second term only
matters for stride > window, where frames between windows are skipped). Frames past the end (a video
shorter than one window, or the last snippet of a video whose length does not fit the stride) repeat
the last frame. The flow stream needs one frame more per snippet (``extra = 1``: 16 flow fields
from frames ``j -> j + 1``), also padded by repetition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SnippetPlan", "snippet_times"]


def snippet_times(num_snippets: int, fps: float, window: int, stride: int) -> np.ndarray:
    """(T,) snippet centre times in seconds: ``(i * stride + window / 2) / fps``."""
    return (np.arange(num_snippets) * stride + window / 2) / fps


@dataclass(frozen=True)
class SnippetPlan:
    """Snippets of a video of ``num_frames`` sampled frames.

    Attributes:
        num_frames: N, sampled frames in the video (>= 1).
        window: frames per snippet.
        stride: frames between snippet starts.
        extra: frames each snippet needs beyond its window (1 for flow, else 0).
    """

    num_frames: int
    window: int = 16
    stride: int = 16
    extra: int = 0

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.window < 1 or self.stride < 1 or self.extra < 0:
            raise ValueError(f"need window >= 1, stride >= 1, extra >= 0; "
                             f"got {self.window}, {self.stride}, {self.extra}")

    @property
    def num_snippets(self) -> int:
        covering = math.ceil((self.num_frames - self.window) / self.stride) + 1
        return max(1, min(covering, math.ceil(self.num_frames / self.stride)))

    def frames(self, i: int) -> np.ndarray:
        """Sampled frame indices of snippet ``i`` (``window + extra`` of them), padded by
        repeating the last frame."""
        start = i * self.stride
        return np.minimum(np.arange(start, start + self.window + self.extra), self.num_frames - 1)

    def times(self, fps: float) -> np.ndarray:
        """(T,) snippet centre times in seconds."""
        return snippet_times(self.num_snippets, fps, self.window, self.stride)

    def needed_frames(self) -> np.ndarray:
        """Sorted unique sampled frames used by any snippet."""
        return np.unique(np.concatenate([self.frames(i) for i in range(self.num_snippets)]))
