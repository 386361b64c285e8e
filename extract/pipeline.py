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
* :mod:`extract.job`: :func:`extract_video`, one video's job and its feature file;
* :mod:`extract.claims`: :class:`ClaimSet`, the claim files that let several processes share a folder.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from common.fileio import TMP_MARK
from extract.batches import snippet_batches
from extract.claims import ClaimSet, claim_path
from extract.collect import collect_videos
from extract.config import ExtractConfig, autocast_dtype, resolve_device
from extract.features import STREAM_ORDER, FeatureFileError, has_spatial, read_features
from extract.job import VideoJob, extract_video, frame_crop, run_job
from extract.streams import FlowStream, RGBStream, build_streams, input_geometry
from extract.video import VideoError, check_backend

__all__ = ["ExtractConfig", "ExtractionReport", "RGBStream", "FlowStream", "resolve_device", "autocast_dtype",
           "build_streams", "collect_videos", "extract_video", "extract_videos", "settings_differ", "snippet_batches"]


@dataclass
class ExtractionReport:
    """Outcome of a batch run in one process.

    Attributes:
        written: videos whose feature file this process wrote.
        skipped: videos whose complete file existed when the run started.
        other_settings: those of ``skipped`` whose file was made with other settings than this run's,
            with how (``"stride 4, not 16"``), or that cannot be read; kept as they are (``overwrite``
            redoes them).
        failed: videos this process could not extract, with a one-line reason (a video that fails is
            released, and a process waiting for it retries it: each reports it).
        by_others: videos whose file another process wrote during this run.
        in_progress: videos another live process was still writing when this one ended (only with
            ``wait_for_others`` off).
        taken_over: videos whose claim this process took over from a dead owner (also in ``written``
            or ``failed``).
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    other_settings: dict[Path, str] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)
    by_others: list[Path] = field(default_factory=list)
    in_progress: list[Path] = field(default_factory=list)
    taken_over: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def settings_differ(path: str | os.PathLike, config: ExtractConfig) -> str:
    """How the feature file at ``path`` differs from what ``config`` would write, in words
    (``"stride 4, not 16; streams rgb, not rgb+flow"``), or "" where it does not.

    Compared: the streams, ``window``, ``stride``, and where ``config`` sets them, ``fps``,
    ``short_side``, ``crop``, the flow method and the spatial maps (settings left to each video or to
    the weights' spec cannot differ). A file that cannot be read says why.
    """
    try:
        existing = read_features(path, rows=slice(0, 0))
    except FeatureFileError as exc:
        return f"unreadable ({exc})"
    attrs = existing.attrs
    pairs = [("streams", "+".join(existing.streams), "+".join(s for s in STREAM_ORDER if s in config.streams)),
             ("window", existing.window, config.window), ("stride", existing.stride, config.stride)]
    if config.fps is not None:
        pairs.append(("fps", f"{existing.fps:g}", f"{config.fps:g}"))
    for key in ("short_side", "crop"):
        if getattr(config, key) is not None:
            pairs.append((key, attrs.get(key), getattr(config, key)))
    if "flow" in config.streams and "flow" in existing.streams:
        pairs.append(("flow method", attrs.get("flow_method"), config.flow))
    if config.spatial:
        pairs.append(("spatial maps", "none" if not has_spatial(path, existing.streams[0]) else "yes", "yes"))
    return "; ".join(f"{name} {old}, not {new}" for name, old, new in pairs if old != new)


def _remove_partials(dest: Path) -> None:
    """Remove temporary files that killed earlier owners of ``dest`` left (call while holding its claim)."""
    for stale in dest.parent.glob(f".{dest.name}{TMP_MARK}*"):
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

    Any number of processes (one per GPU under torchrun, or on several machines sharing the disk)
    may run on the same ``out_dir`` at once: each claims a video before decoding it
    (:mod:`extract.claims`), skips videos that are done or claimed by a live process, takes over
    claims of dead processes, and (``config.wait_for_others``) waits at the end for the videos
    others are still writing. With ``overwrite``, a file written since this process started counts
    as done by another process.

    Args:
        streams: ready stream objects (default: built from ``config`` by :func:`build_streams`,
            which loads the weights before anything is decoded).
        weights_root: weights folder for :func:`build_streams` (default: the cache).
        progress: progress bars: True, False, or None (only on a terminal).
        on_error: called with (video, reason) as each failure happens.

    Raises:
        ValueError: ``config.backend`` cannot run here (``torchcodec`` not installed or not loadable),
            before anything is decoded.
    """
    config = config or ExtractConfig()
    check_backend(config.backend)
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos, problems = collect_videos(inputs)
    report = ExtractionReport(failed=dict(problems))
    for bad, reason in problems.items():
        if on_error:
            on_error(bad, reason)

    def dest_of(video: Path) -> Path:
        return out_dir / f"{video.stem}.h5"

    def done(video: Path) -> bool:
        """A complete file exists (with overwrite: one written since this run started)."""
        try:
            mtime = dest_of(video).stat().st_mtime
        except FileNotFoundError:
            return False
        return not config.overwrite or mtime >= started

    upcoming: deque[Path] = deque()
    for video in videos:
        if dest_of(video).exists() and not config.overwrite:
            report.skipped.append(video)
            differ = settings_differ(dest_of(video), config)
            if differ:
                report.other_settings[video] = differ
        else:
            upcoming.append(video)
    if any(claim_path(dest_of(v)).exists() for v in report.skipped):   # left by processes killed after writing
        with ClaimSet(config.claim_heartbeat, config.claim_timeout) as claims:
            for video in report.skipped:
                claims.clear_stale(dest_of(video))
    if not upcoming:
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

    # Up to `workers` videos are claimed, open and decoding at once; features are computed in claim order.
    ahead: deque[tuple[Path, VideoJob | Exception]] = deque()
    busy: list[Path] = []                   # claimed by a live process when we reached them
    poll = min(config.claim_heartbeat, 2.0)
    bar = tqdm(total=len(upcoming), desc="videos", unit="video",
               disable=(progress is False) or (progress is None and not sys.stderr.isatty()))
    try:
        with bar, ClaimSet(config.claim_heartbeat, config.claim_timeout) as claims:
            while True:
                while len(ahead) < config.workers and upcoming:
                    video = upcoming.popleft()
                    if done(video):
                        claims.clear_stale(dest_of(video))
                        report.by_others.append(video)
                        bar.update(1)
                        continue
                    how = claims.acquire(dest_of(video))
                    if how is None:
                        busy.append(video)
                        continue
                    if done(video):              # finished by its owner between our two looks
                        claims.release(dest_of(video))
                        report.by_others.append(video)
                        bar.update(1)
                        continue
                    if how == "taken over":
                        report.taken_over.append(video)
                    _remove_partials(dest_of(video))
                    ahead.append((video, start(video)))
                if not ahead:
                    if not busy:
                        break
                    if not config.wait_for_others:
                        report.in_progress.extend(busy)
                        break
                    time.sleep(poll)             # wait for others' videos: done, or free/stale to take
                    still = []
                    for video in busy:
                        if done(video):
                            report.by_others.append(video)
                            bar.update(1)
                        elif claims.state(dest_of(video)) == "live":
                            still.append(video)
                        else:
                            upcoming.append(video)
                    busy = still
                    continue
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
                finally:
                    claims.release(dest_of(video))
                bar.update(1)
    finally:
        for _, job in ahead:
            if isinstance(job, VideoJob):
                job.close()
    return report
