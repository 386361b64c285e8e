"""One video's extraction: open, plan, decode in the background, run the streams, write its feature file.

:class:`VideoJob` opens a video and starts decoding its snippet batches in a background thread
(:class:`extract.prefetch.Prefetcher`) as soon as it is created, so that several jobs can decode while
the model works on an earlier one; :func:`run_job` runs the streams over a job's batches and writes
the features row by row through :class:`extract.features.FeatureWriter` (atomically: a failure leaves
no file). :func:`extract_video` does both for one video.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from extract.batches import snippet_batches
from extract.config import ExtractConfig
from extract.features import FeatureWriter
from extract.i3d import FEATURE_DIM, map_size
from extract.prefetch import Prefetcher
from extract.snippets import SnippetPlan
from extract.streams import input_geometry
from extract.video import open_video, sample_indices

__all__ = ["VideoJob", "run_job", "extract_video", "frame_crop"]


def frame_crop(streams: list, crop: int) -> int | None:
    """The crop the pipeline applies to decoded frames: ``crop``, or None (whole resized frames)
    when a flow stream is present: flow is computed on whole frames, then cropped by the stream."""
    return None if any(s.name == "flow" for s in streams) else crop


class VideoJob:
    """One video opened, planned, and decoding in the background into a bounded queue.

    Args:
        path: the video.
        config: sampling (fps, window, stride), batch and queue sizes, decoder.
        extra: frames each snippet needs beyond its window (the streams' largest ``extra_frames``).
        device: where frames are resized and cropped.
        short_side, crop: frame geometry (crop None: whole resized frames).

    Raises:
        extract.video.VideoError: the video cannot be opened (nothing is left open).
    """

    def __init__(self, path: Path, config: ExtractConfig, extra: int, device: torch.device, short_side: int,
                 crop: int | None):
        self.path = path
        self.reader = open_video(path, config.backend)
        try:
            info = self.reader.info
            self.fps = float(config.fps or info.fps)
            self.source_index = sample_indices(info.starts, info.duration, self.fps, info.fps)
            self.plan = SnippetPlan(len(self.source_index), config.window, config.stride, extra)
            batches = snippet_batches(self.reader, self.plan, self.source_index, config.batch_size,
                                      short_side, crop, device)
            self.batches = Prefetcher(batches, config.queue_size)
        except BaseException:
            self.reader.close()
            raise

    def close(self) -> None:
        if hasattr(self, "batches"):
            self.batches.close()
        self.reader.close()


def run_job(job: VideoJob, out_dir: Path, streams: list, config: ExtractConfig, geometry: tuple[int, int],
            progress: bool | None) -> Path:
    """Run the streams over a job's snippet batches and write ``<out_dir>/<video_id>.h5``; closes the job.

    Args:
        geometry: (short side, crop) the frames were prepared at (:func:`extract.streams.input_geometry`).
        progress: a bar of snippets: True, False, or None (only on a terminal, for 64 snippets or more).
    """
    short_side, crop = geometry
    dest = out_dir / f"{job.path.stem}.h5"
    T = job.plan.num_snippets
    spatial = (map_size(crop), map_size(crop)) if config.spatial else None
    try:
        # stale temporaries are removed under the video's claim (extract.pipeline), which also knows other hosts
        with FeatureWriter(dest, T, tuple(s.name for s in streams), FEATURE_DIM, spatial, clean_stale=False) as writer:
            bar = tqdm(total=T, desc=job.path.name, unit="snippet", leave=False,
                       disable=(progress is False) or (progress is None and (T < 64 or not sys.stderr.isatty())))
            for stream in streams:
                if hasattr(stream, "reset"):
                    stream.reset()
            with bar:
                for first, frames, frame_ids in job.batches:
                    rows = slice(first, first + len(frames))
                    for stream in streams:
                        out = stream(frames, config.window, frame_ids)
                        maps = out.spatial.mean(dim=2).half().cpu().numpy() if config.spatial else None
                        writer.write(stream.name, rows, out.features.cpu().numpy(), maps)
                    bar.update(len(frames))
            writer.set_attrs(**_attributes(job, streams, config, short_side, crop))
    finally:
        job.close()
    return dest


def _attributes(job: VideoJob, streams: list, config: ExtractConfig, short_side: int, crop: int) -> dict:
    """The feature file's attributes (CONVENTIONS.md, and the README's extras)."""
    info = job.reader.info
    weights = {s.name: (s.weights.record() if s.weights is not None else {"id": "custom", "sha256": None})
               for s in streams}
    attrs = {
        "fps": job.fps, "window": config.window, "stride": config.stride,
        "num_frames": job.plan.num_frames, "duration": info.duration,
        "source": str(job.path.resolve()), "weights": weights,
        "flow_method": next((s.flow_method for s in streams if s.flow_method), "none"),
        "source_fps": info.fps, "source_frames": info.num_frames, "decoder": info.backend,
        "resize": f"short side {short_side} bilinear (antialiased), centre crop {crop}",
        "short_side": short_side, "crop": crop,
    }
    flow = next((s for s in streams if s.name == "flow"), None)
    if flow is not None:
        attrs["flow_bound"] = flow.flow_bound
        attrs["flow_frames"] = ("field j of snippet i: sampled frame i*stride+j to the next, grayscale, "
                                f"whole frame at short side {short_side}, then truncated, /bound, centre-cropped")
    return attrs


def extract_video(path: str | os.PathLike, out_dir: str | os.PathLike, streams: list,
                  config: ExtractConfig, progress: bool | None = None) -> Path:
    """Extract one video's features into ``<out_dir>/<video_id>.h5`` (atomically).

    Frames are prepared at ``config.short_side`` / ``config.crop``, or where those are None at
    what the streams' weights' specs say (:func:`extract.streams.input_geometry`).

    Raises:
        VideoError: the video cannot be decoded; no file is left behind.
    """
    short_side, crop = input_geometry(streams, config.short_side, config.crop)
    job = VideoJob(Path(path), config, max(s.extra_frames for s in streams), streams[0].device,
                   short_side, frame_crop(streams, crop))
    return run_job(job, Path(out_dir), streams, config, (short_side, crop), progress)
