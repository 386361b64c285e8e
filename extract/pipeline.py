"""Raw video to feature files: decode -> sample -> resize/crop -> snippets -> I3D -> HDF5.

Decoding and preprocessing run in background threads (one per open video, ``workers`` videos at
a time) that fill small bounded queues of snippet batches while the main thread runs I3D, so
decoding overlaps with compute and memory stays bounded: per open video at most
``queue_size + 1`` batches of ``batch_size`` snippets and one decode chunk of 32 frames are alive,
whatever the video's length. On CUDA, decoded frames are uploaded and resized on the GPU.
Features go straight into the (temporary) HDF5 file batch by batch.

A stream (:mod:`extract.streams`) is an object with ``name``, ``extra_frames`` (frames a snippet
needs beyond its window) and ``__call__(frames, window, frame_ids) -> I3DOutput`` on uint8
(B, window + extra, 3, H, W) snippets and their sampled-frame indices: :class:`RGBStream` and
:class:`FlowStream` (TV-L1, which asks for one extra frame and whole resized frames).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from common.fileio import TMP_MARK, atomic_path
from extract.features import FORMAT_VERSION
from extract.i3d import FEATURE_DIM, I3D
from extract.snippets import SnippetPlan
from extract.streams import FLOW_BOUND, FLOW_METHODS, FlowStream, RGBStream
from extract.transforms import resize_crop
from extract.video import VIDEO_EXTENSIONS, VideoError, open_video, sample_indices

__all__ = ["ExtractConfig", "ExtractionReport", "RGBStream", "FlowStream", "resolve_device", "build_streams",
           "collect_videos", "extract_video", "extract_videos", "snippet_batches"]

STREAMS = ("rgb", "flow")


@dataclass
class ExtractConfig:
    """Everything that decides the features of a video.

    Attributes:
        streams: streams to extract, a subset of ("rgb", "flow"), written in that order.
        fps: sampling rate; None keeps each video's own average rate.
        window, stride: snippet length and hop in sampled frames (CONVENTIONS.md).
        short_side, crop: resize the short side to this, then centre-crop a square.
        batch_size: snippets per I3D forward pass.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
        precision: "auto" (fp16 autocast on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16".
        spatial: also store float16 Mixed_5c maps (T, 1024, 7, 7).
        overwrite: redo videos whose feature file exists.
        backend: video decoder, "auto" (decord, PyAV fallback), "decord" or "pyav".
        queue_size: snippet batches decoded ahead of the model, per video.
        workers: videos opened and decoded at once (each in its own thread), so decoding
            several videos overlaps with the model; features are still written in input order.
        flow: flow method of the flow stream, "tvl1" (batched PyTorch, CPU or CUDA) or
            "opencv-tvl1" (OpenCV's CPU DualTVL1, the reference).
    """

    streams: tuple[str, ...] = ("rgb",)
    fps: float | None = None
    window: int = 16
    stride: int = 16
    short_side: int = 256
    crop: int = 224
    batch_size: int = 8
    device: str = "auto"
    precision: str = "auto"
    spatial: bool = False
    overwrite: bool = False
    backend: str = "auto"
    queue_size: int = 2
    workers: int = 2
    flow: str = "tvl1"

    def __post_init__(self) -> None:
        self.streams = tuple(self.streams)
        bad = [s for s in self.streams if s not in STREAMS]
        if bad or not self.streams or len(set(self.streams)) != len(self.streams):
            raise ValueError(f"streams must be distinct names among {STREAMS}, got {self.streams}")
        self.streams = tuple(s for s in STREAMS if s in self.streams)
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if min(self.window, self.stride, self.batch_size, self.queue_size, self.workers) < 1:
            raise ValueError("window, stride, batch_size, queue_size and workers must be >= 1")
        if self.crop > self.short_side:
            raise ValueError(f"crop {self.crop} is larger than short_side {self.short_side}")
        if self.flow not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {self.flow!r}; use one of {', '.join(FLOW_METHODS)}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {self.precision!r}")


@dataclass
class ExtractionReport:
    """Outcome of a batch run: written, skipped (file existed) and failed videos."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    return dev


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a precision setting; None means plain fp32.

    "auto" is fp16 on CUDA: measured on an H200 (tests/test_cuda.py, README), fp16 autocast
    features differ from fp32 by at most 0.0033 (cosine >= 0.999999) against 0.023 for bf16, and
    run faster. fp16's narrow range is guarded: a batch with non-finite output is redone in fp32.
    """
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def build_streams(config: ExtractConfig, weights_root: str | os.PathLike | None = None,
                  models: dict[str, I3D] | None = None) -> list:
    """Load each requested stream's model before any video is decoded.

    Args:
        models: ready models by stream (tests, custom weights); others come from :func:`weights.load_i3d`.

    Raises:
        weights.WeightsError: a stream's weights are missing (the flow stream says how to import them).
    """
    from weights import load_i3d

    device = resolve_device(config.device)
    autocast = _autocast_dtype(config.precision, device)
    streams = []
    for name in config.streams:
        model = (models or {}).get(name)
        if model is None:
            model = load_i3d(name, root=weights_root, fetch_missing=(name == "rgb"))
        if name == "rgb":
            streams.append(RGBStream(model, device, autocast, config.crop))
        else:
            streams.append(FlowStream(model, device, autocast, config.crop, method=config.flow))
    return streams


def collect_videos(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], dict[Path, str]]:
    """Expand files and folders (recursively, by video extension) into a sorted video list.

    Returns:
        (videos, problems): inputs that are missing, and videos whose id (file name without
        extension) repeats an earlier one, are problems with a reason.
    """
    videos: list[Path] = []
    problems: dict[Path, str] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                problems[item] = "folder holds no video files (" + ", ".join(VIDEO_EXTENSIONS) + ")"
            videos.extend(found)
        elif item.is_file():
            videos.append(item)
        else:
            problems[item] = "no such file or folder"
    seen: dict[str, Path] = {}
    unique = []
    for path in videos:
        if path.stem in seen:
            problems[path] = f"video id {path.stem!r} repeats {seen[path.stem]}"
        else:
            seen[path.stem] = path
            unique.append(path)
    return unique, problems


def snippet_batches(reader, plan: SnippetPlan, source_index: np.ndarray, batch_size: int,
                    short_side: int = 256, crop: int | None = 224,
                    device: torch.device | str = "cpu") -> Iterator[tuple[int, Tensor, Tensor]]:
    """Decode and assemble snippets in order.

    Args:
        reader: an open :class:`extract.video.VideoReader`.
        plan: the snippets.
        source_index (ndarray[N]): source frame of each sampled frame.
        device: where frames are resized and cropped (decoded frames are uploaded in chunks of
            32); the snippets are returned there.

        crop: centre-crop size, or None to keep the whole resized frame (the flow stream
            computes flow on it and crops afterwards).

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
            if len(chunk_idx) >= 32:
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


class _Prefetcher:
    """Runs an iterator in a daemon thread from construction on, ``size`` items ahead.

    Iterating yields its items in order and re-raises its exception, if any; :meth:`close`
    stops the thread (it finishes the item in hand) and drops what is queued.
    """

    def __init__(self, iterator: Iterator, size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iterator,), daemon=True, name="extract-decode")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(("error", exc))

    def __iter__(self) -> Iterator:
        try:
            while True:
                kind, payload = self._queue.get()
                if kind == "item":
                    yield payload
                elif kind == "error":
                    raise payload
                else:
                    return
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=10)


class _VideoJob:
    """One video opened, planned, and decoding in the background into a bounded queue."""

    def __init__(self, path: Path, config: ExtractConfig, extra: int, device: torch.device,
                 whole_frames: bool = False):
        self.path = path
        self.reader = open_video(path, config.backend)
        try:
            info = self.reader.info
            self.fps = float(config.fps or info.fps)
            self.source_index = sample_indices(info.starts, info.duration, self.fps, info.fps)
            self.plan = SnippetPlan(len(self.source_index), config.window, config.stride, extra)
            batches = snippet_batches(self.reader, self.plan, self.source_index, config.batch_size,
                                      config.short_side, None if whole_frames else config.crop, device)
            self.batches = _Prefetcher(batches, config.queue_size)
        except BaseException:
            self.reader.close()
            raise

    def close(self) -> None:
        if hasattr(self, "batches"):
            self.batches.close()
        self.reader.close()


def extract_video(path: str | os.PathLike, out_dir: str | os.PathLike, streams: list,
                  config: ExtractConfig, progress: bool | None = None) -> Path:
    """Extract one video's features into ``<out_dir>/<video_id>.h5`` (atomically).

    Raises:
        VideoError: the video cannot be decoded; no file is left behind.
    """
    job = _VideoJob(Path(path), config, max(s.extra_frames for s in streams), streams[0].device,
                    _needs_whole_frames(streams))
    return _write_job(job, Path(out_dir), streams, config, progress)


def _needs_whole_frames(streams: list) -> bool:
    """Whether a flow stream is present: flow is computed on whole resized frames, then cropped;
    RGB alone can be cropped at once."""
    return any(s.name == "flow" for s in streams)


def _write_job(job: _VideoJob, out_dir: Path, streams: list, config: ExtractConfig,
               progress: bool | None) -> Path:
    """Run the streams over a job's snippet batches and write its feature file; closes the job."""
    dest = out_dir / f"{job.path.stem}.h5"
    info, plan = job.reader.info, job.plan
    T = plan.num_snippets
    try:
        with atomic_path(dest) as tmp, h5py.File(tmp, "w") as h5:
            data = {s.name: h5.create_dataset(s.name, (T, FEATURE_DIM), dtype="float32") for s in streams}
            maps = {}
            if config.spatial:
                hw = config.crop // 32
                maps = {s.name: h5.create_dataset(f"{s.name}_spatial", (T, FEATURE_DIM, hw, hw), dtype="float16",
                                                  chunks=(1, FEATURE_DIM, hw, hw)) for s in streams}
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
                        data[stream.name][rows] = out.features.cpu().numpy()
                        if config.spatial:
                            maps[stream.name][rows] = out.spatial.mean(dim=2).half().cpu().numpy()
                    bar.update(len(frames))
            weights = {s.name: (s.weights.record() if s.weights is not None else {"id": "custom", "sha256": None})
                       for s in streams}
            h5.attrs.update({
                "fps": job.fps, "window": config.window, "stride": config.stride,
                "num_frames": plan.num_frames, "duration": info.duration,
                "source": str(job.path.resolve()), "weights": json.dumps(weights, sort_keys=True),
                "flow_method": next((s.flow_method for s in streams if s.flow_method), "none"),
                "format_version": FORMAT_VERSION,
                "source_fps": info.fps, "source_frames": info.num_frames, "decoder": info.backend,
                "resize": f"short side {config.short_side} bilinear (antialiased), centre crop {config.crop}",
                **({"flow_bound": FLOW_BOUND, "flow_frames": "field j of snippet i: sampled frame i*stride+j to the next, "
                    "grayscale, whole frame at short side 256, then truncated, /bound, centre-cropped"}
                   if _needs_whole_frames(streams) else {}),
            })
    finally:
        job.close()
    return dest


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
    is reported with a one-line reason and leaves no file; the others still run.

    Args:
        streams: ready stream objects (default: built from ``config`` by :func:`build_streams`,
            which loads the weights before anything is decoded).
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
    extra = max(s.extra_frames for s in streams)
    device = streams[0].device
    whole = _needs_whole_frames(streams)
    expected = (VideoError, OSError, ValueError)

    def start(video: Path) -> _VideoJob | Exception:
        try:
            return _VideoJob(video, config, extra, device, whole)
        except expected as exc:
            return exc

    # Up to `workers` videos are open and decoding at once; features are computed in input order.
    ahead: deque[tuple[Path, _VideoJob | Exception]] = deque()
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
                    report.written.append(_write_job(job, out_dir, streams, config, progress))
                except expected as exc:
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    report.failed[video] = reason
                    if on_error:
                        on_error(video, reason)
                bar.update(1)
    finally:
        for _, job in ahead:
            if isinstance(job, _VideoJob):
                job.close()
    return report

