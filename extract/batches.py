"""Snippet assembly: decode a video's needed frames in order, resize (and crop) them in chunks, and
yield batches of snippets, holding only the frames a later snippet still uses."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from extract.snippets import SnippetPlan
from extract.transforms import resize_crop
from extract.video import VideoError
from weights.specs import get_spec

__all__ = ["snippet_batches", "DECODE_CHUNK"]

DECODE_CHUNK = 32                          # decoded frames resized together (and uploaded together on CUDA)
_DEFAULT = get_spec("rgb").transform       # the registry default's geometry, when none is given


def snippet_batches(reader, plan: SnippetPlan, source_index: np.ndarray, batch_size: int,
                    short_side: int = _DEFAULT.short_side, crop: int | None = _DEFAULT.crop,
                    device: torch.device | str = "cpu") -> Iterator[tuple[int, Tensor, Tensor]]:
    """Decode and assemble snippets in order.

    Args:
        reader: an open :class:`extract.video.VideoReader`.
        plan: the snippets.
        source_index (ndarray[N]): source frame of each sampled frame.
        batch_size: snippets per batch (the last batch may be smaller).
        short_side: resize the short side to this (default: the registry default RGB spec's, 256).
        crop: centre-crop size (default: that spec's, 224), or None to keep the whole resized frame
            (the flow stream computes flow on it and crops afterwards).
        device: where frames are resized and cropped (decoded frames are uploaded in chunks of
            :data:`DECODE_CHUNK`); the snippets are returned there.

    Yields:
        (first snippet index, uint8 Tensor[B, window + extra, 3, crop, crop] on ``device``,
        int64 Tensor[B, window + extra] of sampled-frame indices).
    """
    device = torch.device(device)
    needed = plan.needed_frames()                      # sampled frames any snippet uses
    sources = np.unique(source_index[needed])          # source frames to decode, increasing
    # source frame -> its sampled frames (several when upsampling; fps above the source's)
    by_source: dict[int, list[int]] = {}
    for k in needed:
        by_source.setdefault(int(source_index[k]), []).append(int(k))
    buffer: dict[int, Tensor] = {}
    pending: list[Tensor] = []
    pending_ids: list[Tensor] = []
    next_snippet, first_in_batch = 0, 0
    chunk_idx: list[int] = []
    chunk_frames: list[np.ndarray] = []

    def flush_chunk() -> None:
        if not chunk_idx:
            return
        raw = torch.from_numpy(np.stack(chunk_frames))
        if device.type == "cuda":
            raw = raw.pin_memory().to(device, non_blocking=True)
        resized = resize_crop(raw, short_side, crop)
        for src, frame in zip(chunk_idx, resized):
            for k in by_source[src]:
                buffer[k] = frame
        chunk_idx.clear()
        chunk_frames.clear()

    decoded = iter(reader.frames(sources))
    exhausted = False
    while next_snippet < plan.num_snippets:
        frames_needed = plan.frames(next_snippet)
        while not exhausted and int(frames_needed[-1]) not in buffer:
            item = next(decoded, None)
            if item is None:
                exhausted = True
                break
            chunk_idx.append(item[0])
            chunk_frames.append(item[1])
            if len(chunk_idx) >= DECODE_CHUNK:
                flush_chunk()
        if int(frames_needed[-1]) not in buffer:
            flush_chunk()
        missing = [int(k) for k in frames_needed if int(k) not in buffer]
        if missing:
            raise VideoError(f"frames missing after decoding (sampled frame {missing[0]})")
        pending.append(torch.stack([buffer[int(k)] for k in frames_needed]))
        pending_ids.append(torch.as_tensor(frames_needed, dtype=torch.int64))
        next_snippet += 1
        if next_snippet < plan.num_snippets:  # drop frames no later snippet uses
            lowest = int(plan.frames(next_snippet)[0])
            for k in [k for k in buffer if k < lowest]:
                del buffer[k]
        if len(pending) == batch_size or next_snippet == plan.num_snippets:
            yield first_in_batch, torch.stack(pending), torch.stack(pending_ids)
            first_in_batch = next_snippet
            pending, pending_ids = [], []
