"""Raw video to feature files: decode -> sample -> resize/crop -> snippets -> I3D -> HDF5.

Decoding and preprocessing run in background threads (one per open video, ``workers`` videos at
a time) that fill small bounded queues of snippet batches while the main thread runs I3D, so
decoding overlaps with compute and memory stays bounded: per open video at most
``queue_size + 1`` batches of ``batch_size`` snippets and one decode chunk of 32 frames are alive,
whatever the video's length. On CUDA, decoded frames are uploaded and resized on the GPU.
Features go straight into the (temporary) HDF5 file batch by batch.

The stages live in their own modules; this one runs them over many videos (:func:`extract_videos`)
and keeps their public names importable from one place:

* :mod:`extract.config`: :class:`ExtractConfig`, :func:`resolve_device`, :func:`autocast_dtype`;
* :mod:`extract.pretrained`: :func:`load_i3d`, the models with their weights' spec;
* :mod:`extract.streams`: :class:`RGBStream`, :class:`FlowStream` (TV-L1, which asks for one extra
  frame and whole resized frames), :func:`build_streams`, :func:`input_geometry`; a stream is an
  object with ``name``, ``extra_frames`` and ``__call__(frames, window, frame_ids) -> I3DOutput``
  on uint8 (B, window + extra, 3, H, W) snippets and their sampled-frame indices;
* :mod:`extract.collect`: :func:`collect_videos`, the folder walk;
* :mod:`extract.batches`: :func:`snippet_batches`, the snippet assembly;
* :mod:`extract.prefetch`: :class:`Prefetcher`, the background decoding thread;
* :mod:`extract.job`: :func:`extract_video`, one video's job and its feature file.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from common.fileio import TMP_MARK
from extract.batches import snippet_batches
from extract.collect import collect_videos
from extract.config import ExtractConfig, autocast_dtype, resolve_device
from extract.job import VideoJob, extract_video, frame_crop, run_job
from extract.streams import FlowStream, RGBStream, build_streams, input_geometry
from extract.video import VideoError

__all__ = ["ExtractConfig", "ExtractionReport", "RGBStream", "FlowStream", "resolve_device", "autocast_dtype",
           "build_streams", "collect_videos", "extract_video", "extract_videos", "snippet_batches"]


@dataclass
class ExtractionReport:
    """Outcome of a batch run: written, skipped (file existed) and failed videos."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _remove_stale(dest: Path) -> None:
    """Remove temporary files a killed earlier run left for ``dest``."""
    for stale in dest.parent.glob(f".{dest.name}{TMP_MARK}*"):
        with contextlib.suppress(OSError):
            pid = int(stale.name.rsplit("-", 1)[-1])
            if pid != os.getpid():
                os.kill(pid, 0)  # still running: leave it alone
                continue
        with contextlib.suppress(OSError):
            stale.unlink()


def extract_videos(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                   config: ExtractConfig | None = None, *, streams: list | None = None,
                   weights_root: str | os.PathLike | None = None, progress: bool | None = None,
                   on_error: Callable[[Path, str], None] | None = None) -> ExtractionReport:
    """Extract features for every video in ``inputs`` (files or folders) into ``out_dir``.

    Videos whose complete file exists are skipped unless ``config.overwrite``. A video that fails
    is reported with a one-line reason and leaves no file; the others still run. Frames are
    prepared at ``config.short_side`` / ``config.crop``, or where those are None at what the
    streams' weights' specs say.

    Args:
        streams: ready stream objects (default: built from ``config`` by :func:`build_streams`,
            which loads the weights before anything is decoded).
        weights_root: weights folder for :func:`build_streams` (default: the cache).
        progress: progress bars: True, False, or None (only on a terminal).
        on_error: called with (video, reason) as each failure happens.
    """
    config = config or ExtractConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos, problems = collect_videos(inputs)
    report = ExtractionReport(failed=dict(problems))
    for bad, reason in problems.items():
        if on_error:
            on_error(bad, reason)
    todo = []
    for video in videos:
        dest = out_dir / f"{video.stem}.h5"
        if dest.exists() and not config.overwrite:
            report.skipped.append(video)
        else:
            todo.append(video)
    if not todo:
        return report
    streams = streams if streams is not None else build_streams(config, weights_root)
    short_side, crop = input_geometry(streams, config.short_side, config.crop)
    extra = max(s.extra_frames for s in streams)
    device = streams[0].device
    expected = (VideoError, OSError, ValueError)

    def start(video: Path) -> VideoJob | Exception:
        try:
            return VideoJob(video, config, extra, device, short_side, frame_crop(streams, crop))
        except expected as exc:
            return exc

    # Up to `workers` videos are open and decoding at once; features are computed in input order.
    ahead: deque[tuple[Path, VideoJob | Exception]] = deque()
    upcoming = iter(todo)
    bar = tqdm(total=len(todo), desc="videos", unit="video",
               disable=(progress is False) or (progress is None and not sys.stderr.isatty()))
    try:
        with bar:
            while True:
                while len(ahead) < config.workers and (video := next(upcoming, None)) is not None:
                    _remove_stale(out_dir / f"{video.stem}.h5")
                    ahead.append((video, start(video)))
                if not ahead:
                    break
                video, job = ahead.popleft()
                try:
                    if isinstance(job, Exception):
                        raise job
                    report.written.append(run_job(job, out_dir, streams, config, (short_side, crop), progress))
                except expected as exc:
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    report.failed[video] = reason
                    if on_error:
                        on_error(video, reason)
                bar.update(1)
    finally:
        for _, job in ahead:
            if isinstance(job, VideoJob):
                job.close()
    return report

