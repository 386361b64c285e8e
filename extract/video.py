"""Video decoding with torchcodec or decord (PyAV where neither can open a file), and time-based sampling.

A video is opened once to read its frame timestamps (no pixels decoded), then decoded in
increasing frame order, a bounded chunk at a time, so a long video is never held in memory.

Sampling (CONVENTIONS.md "Time and snippets"): sampled frame ``k`` sits at ``t_k = k / fps`` and
shows the source frame on screen at that time, i.e. the last frame whose presentation time is
``<= t_k`` (with a quarter-frame tolerance against timestamp rounding). At the video's own rate
and a constant frame rate this is the identity; a variable-frame-rate video is resampled to its
average rate, so sampled times stay true times.

Rotation: a video whose container carries a display matrix (phone videos filmed upright) is
decoded upright, as players show it: frames are turned by the matrix's rotation, and
:class:`VideoInfo` gives the displayed size. decord turns 180-degree videos itself but cannot
decode 90/270-degree ones; for those PyAV takes over, also when decord was asked for, and the
backend name says so. torchcodec turns every rotation itself. All backends give identical frames.

torchcodec (optional) is the fastest CPU decoder measured (``benchmarks/decode.py``); ``"auto"`` uses it
when it loads. Its PyPI wheels link against a CUDA build of torch, so beside a CPU-only torch it is
installed but cannot load: ``"auto"`` then says so once (a warning) and uses decord.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VideoError", "VideoInfo", "VideoReader", "open_video", "sample_indices",
           "num_sampled_frames", "VIDEO_EXTENSIONS", "BACKENDS", "check_backend", "torchcodec_status"]

BACKENDS = ("auto", "torchcodec", "decord", "pyav")
"""Decoder names :func:`open_video` accepts; ``auto`` tries torchcodec, decord, then PyAV."""

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".3gp", ".ts", ".gif")


class VideoError(RuntimeError):
    """A video cannot be used; the message is one line saying why."""


@dataclass(frozen=True)
class VideoInfo:
    """What is known of a video before decoding pixels.

    Attributes:
        path: the file.
        backend: ``"torchcodec"``, ``"decord"`` or ``"pyav"`` (with the reason in brackets where PyAV
            stood in for decord).
        fps: average frame rate (frames per second).
        starts (ndarray[F]): presentation time of each source frame in seconds, increasing,
            the first at 0.
        duration: seconds from the first frame's start to the last frame's end.
        width, height: displayed frame size in pixels (after rotation).
        rotation: counter-clockwise degrees, one of 0, 90, 180, 270, by which the coded frames are
            turned for display (the display-matrix convention; ffprobe's "rotation of -90 degrees"
            is 270). Frames are returned already turned.
    """

    path: Path
    backend: str
    fps: float
    starts: np.ndarray
    duration: float
    width: int
    height: int
    rotation: int = 0

    @property
    def num_frames(self) -> int:
        return len(self.starts)


def num_sampled_frames(duration: float, fps: float) -> int:
    """Frames sampled at ``fps`` from ``duration`` seconds: those with ``k / fps < duration``, at least 1.

    A relative tolerance (capped at a quarter frame) absorbs timestamp rounding: decord's float32
    timestamps put a 1.6 s video at 1.600000024 s, which must not add an 81st frame at 50 fps.
    """
    x = duration * fps
    return max(1, math.ceil(x - min(0.25, 1e-6 * max(1.0, x))))


def sample_indices(starts: np.ndarray, duration: float, fps: float, source_fps: float) -> np.ndarray:
    """Source frame index of every sampled frame.

    Args:
        starts (ndarray[F]): source frames' presentation times in seconds, increasing, from 0.
        duration: video duration in seconds.
        fps: sampling rate.
        source_fps: the source's average rate (sets the rounding tolerance).

    Returns:
        ndarray[N] int64, N = :func:`num_sampled_frames`, non-decreasing, in [0, F).
    """
    n = num_sampled_frames(duration, fps)
    times = np.arange(n, dtype=np.float64) / fps
    tol = 0.25 / max(fps, source_fps)
    idx = np.searchsorted(starts, times + tol, side="right") - 1
    return np.clip(idx, 0, len(starts) - 1).astype(np.int64)


class VideoReader:
    """Base class: timestamps up front, then frames in increasing index order."""

    info: VideoInfo

    def frames(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` for each of the strictly increasing source ``indices``;
        ``frame`` is uint8 (H, W, 3) RGB. Raises :class:`VideoError` if decoding stops early."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError("file does not exist")
    if not path.is_file():
        raise VideoError("not a regular file")
    if path.stat().st_size == 0:
        raise VideoError("file is empty")


def _finish_info(path: Path, backend: str, starts: np.ndarray, last_duration: float | None,
                 fps: float, width: int, height: int, rotation: int = 0) -> VideoInfo:
    if len(starts) == 0:
        raise VideoError("video stream has no frames")
    starts = np.sort(np.asarray(starts, dtype=np.float64))
    starts = starts - starts[0]
    if not (fps > 0 and math.isfinite(fps)):
        span = starts[-1]
        fps = (len(starts) - 1) / span if len(starts) > 1 and span > 0 else 25.0
    if last_duration is None or not (last_duration > 0):
        last_duration = 1.0 / fps
    return VideoInfo(path=path, backend=backend, fps=float(fps), starts=starts,
                     duration=float(starts[-1] + last_duration), width=width, height=height,
                     rotation=rotation)


class DecordReader(VideoReader):
    """decord.VideoReader, read with ``get_batch`` on bounded chunks of increasing indices.

    decord applies a 180-degree display rotation itself; a 90/270-degree one it cannot decode
    (its frame buffers keep the coded size), so such a file raises :class:`DecordCannotRotate`.
    """

    def __init__(self, path: Path, chunk_bytes: int = 256 << 20, header: _Header | None = None):
        import decord  # noqa: PLC0415 - optional on platforms without wheels

        header = header if header is not None else _read_header(path)
        if header.rotation in (90, 270):
            raise DecordCannotRotate(header.rotation)
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0)
            n = len(self._vr)
            if n == 0:
                raise VideoError("video stream has no frames")
            stamps = np.asarray(self._vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)
            height, width = _decord_size(self._vr)
            fps = float(self._vr.get_avg_fps())
        except (decord.DECORDError, RuntimeError) as exc:  # decord raises both on unreadable files
            raise VideoError(_one_line(exc)) from exc
        _check_declared(header.frames, n)
        # decord's timestamps are float32 (26.7 s reads 26.700000762939453): the times come from PyAV's demux
        # pass (exact time base arithmetic, a few ms a minute of video), once decord's frames are shown to be
        # the same frames at the same times.
        starts, last, _, _, _ = _pyav_index(path)
        if len(starts) != n:
            raise VideoError(f"decord finds {n} frames, the container's packets {len(starts)}")
        own = np.sort(stamps[:, 0]) - np.min(stamps[:, 0])
        if not np.allclose(own, starts - starts[0], rtol=0, atol=1e-3):
            bad = int(np.argmax(np.abs(own - (starts - starts[0]))))
            raise VideoError(f"decord places frame {bad} at {own[bad]:.6f} s, the container at "
                             f"{starts[bad] - starts[0]:.6f} s")
        self.info = _finish_info(path, "decord", starts, last, fps, width, height, header.rotation)
        self._chunk = max(1, chunk_bytes // max(1, width * height * 3))

    def frames(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        import decord  # noqa: PLC0415

        for lo in range(0, len(indices), self._chunk):
            chunk = indices[lo:lo + self._chunk]
            try:
                batch = self._vr.get_batch(list(map(int, chunk))).asnumpy()
            except (decord.DECORDError, RuntimeError) as exc:
                raise VideoError(f"decoding failed near frame {int(chunk[0])}: {_one_line(exc)}") from exc
            yield from zip(map(int, chunk), batch)

    def close(self) -> None:
        self._vr = None


def _decord_size(vr) -> tuple[int, int]:
    """(height, width) of the decoded frames."""
    shape = vr[0].shape
    vr.seek(0)
    return int(shape[0]), int(shape[1])


class PyAVReader(VideoReader):
    """PyAV: a demux pass for timestamps, then one sequential decode."""

    def __init__(self, path: Path, header: _Header | None = None, backend: str = "pyav"):
        self._path = path
        header = header if header is not None else _read_header(path)
        self._turns = header.rotation // 90
        starts, last, fps, width, height = _pyav_index(path)
        if self._turns % 2:
            width, height = height, width
        self.info = _finish_info(path, backend, starts, last, fps, width, height, header.rotation)

    def frames(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        import av  # noqa: PLC0415

        wanted = iter(map(int, indices))
        target = next(wanted, None)
        decoded = 0
        try:
            with av.open(str(self._path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    decoded = i + 1
                    if target is None:
                        break
                    if i == target:
                        image = frame.to_ndarray(format="rgb24")
                        if self._turns:
                            image = np.ascontiguousarray(np.rot90(image, self._turns))
                        yield i, image
                        target = next(wanted, None)
        except av.error.FFmpegError as exc:
            raise VideoError(f"decoding failed after {decoded} frames: {_one_line(exc)}") from exc
        if target is not None:
            raise VideoError(f"decoding stopped after {decoded} of {self.info.num_frames} frames "
                             "(truncated or corrupt file)")


def _pyav_index(path: Path) -> tuple[np.ndarray, float | None, float, int, int]:
    """A demux pass (no pixels decoded): presentation times in increasing order (seconds), the last
    frame's duration, the average rate and the coded (width, height).

    Raises:
        VideoError: no video stream, an index that lists more frames than the file holds, or a file
            FFmpeg cannot read.
    """
    import av  # noqa: PLC0415

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no video stream (audio-only or not a video)")
            stream = container.streams.video[0]
            num, den = stream.time_base.numerator, stream.time_base.denominator
            pts, durations = [], []   # seconds: integer ticks * num / den, rounded once (1.9 s is 1.9, not 1.9 + 2e-16)
            found = 0  # packets read, empty ones included (not the final flush packet)
            for packet in container.demux(stream):
                if packet.size > 0 or packet.pts is not None or packet.dts is not None:
                    found += 1
                if packet.pts is not None and packet.size > 0:
                    pts.append(packet.pts * num / den)
                    durations.append((packet.duration or 0) * num / den)
            _check_declared(_mp4_frames(container), found)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            width, height = stream.codec_context.width, stream.codec_context.height
    except av.error.FFmpegError as exc:
        raise VideoError(_one_line(exc)) from exc
    order = np.argsort(pts, kind="stable")
    last = durations[order[-1]] if len(pts) else None
    return (np.asarray(pts, dtype=np.float64)[order] if pts else np.zeros(0)), last, fps, width, height


class TorchCodecReader(VideoReader):
    """torchcodec's ``VideoDecoder`` on the CPU (exact seek mode), read with ``get_frames_at`` on
    bounded chunks of increasing indices. Timestamps come from the same demux pass as PyAV's, and
    every decoded frame's own timestamp is checked against them. torchcodec applies the display
    rotation itself."""

    def __init__(self, path: Path, chunk_bytes: int = 256 << 20, header: _Header | None = None):
        decoder_class = _load_torchcodec()
        header = header if header is not None else _read_header(path)
        starts, last, fps, _, _ = _pyav_index(path)
        try:
            self._decoder = decoder_class(str(path), dimension_order="NHWC", seek_mode="exact",
                                          num_ffmpeg_threads=0, device="cpu")
            meta = self._decoder.metadata
            n, width, height = int(meta.num_frames or 0), int(meta.width), int(meta.height)
        except (RuntimeError, ValueError) as exc:  # torchcodec raises these on unreadable files
            raise VideoError(_one_line(exc)) from exc
        self.info = _finish_info(path, "torchcodec", starts, last, fps, width, height, header.rotation)
        if n != self.info.num_frames:
            raise VideoError(f"torchcodec finds {n} frames, the container's packets {self.info.num_frames}")
        self._origin = float(np.min(starts))
        self._chunk = max(1, chunk_bytes // max(1, width * height * 3))

    def frames(self, indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, len(indices), self._chunk):
            chunk = [int(i) for i in indices[lo:lo + self._chunk]]
            try:
                batch = self._decoder.get_frames_at(chunk)
            except (RuntimeError, IndexError, ValueError) as exc:
                raise VideoError(f"decoding failed near frame {chunk[0]}: {_one_line(exc)}") from exc
            shown = batch.pts_seconds.numpy() - self._origin
            expected = self.info.starts[chunk]
            if not np.allclose(shown, expected, rtol=0, atol=1e-6):
                bad = int(np.flatnonzero(~np.isclose(shown, expected, rtol=0, atol=1e-6))[0])
                raise VideoError(f"torchcodec returned the frame at {shown[bad]:.6f} s for frame {chunk[bad]} "
                                 f"({expected[bad]:.6f} s)")
            yield from zip(chunk, batch.data.numpy())

    def close(self) -> None:
        self._decoder = None


@functools.cache
def torchcodec_status() -> tuple[object | None, str]:
    """(torchcodec's ``VideoDecoder`` class or None, why not: "" when it loads, "not installed", or
    the one-line reason an installed torchcodec cannot load, e.g. a CUDA-linked wheel beside a CPU-only
    torch). Cached: the import is tried once per process."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: PLC0415 - optional
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "torchcodec":
            return None, "not installed"
        return None, f"cannot load: {_one_line(exc)}"
    except (ImportError, OSError, RuntimeError) as exc:  # a shared library that does not load
        return None, f"cannot load: {_one_line(exc)}"
    return VideoDecoder, ""


def _load_torchcodec():
    decoder_class, why = torchcodec_status()
    if decoder_class is None:
        raise ImportError(f"torchcodec {why}")
    return decoder_class


class DecordCannotRotate(VideoError):
    """decord cannot decode a video turned by 90 or 270 degrees for display."""

    def __init__(self, rotation: int):
        super().__init__(f"decord cannot decode a video rotated by {rotation} degrees")
        self.rotation = rotation


@dataclass(frozen=True)
class _Header:
    """What PyAV reads from a file's header and first frame.

    Attributes:
        frames: frames listed by an MP4/MOV index (0 for other containers or when unknown).
        rotation: display rotation, counter-clockwise degrees in {0, 90, 180, 270}.
    """

    frames: int = 0
    rotation: int = 0


def _mp4_frames(container) -> int:
    """Frames listed by an MP4/MOV index (its sample table; exact), 0 for other containers."""
    if not container.format.name.startswith("mov") or not container.streams.video:
        return 0
    return int(container.streams.video[0].frames or 0)


def _display_rotation(frame) -> int:
    """Counter-clockwise display rotation of a decoded PyAV frame, in {0, 90, 180, 270}.

    Raises:
        VideoError: the display matrix mirrors the image, or turns it by a non-right angle.
    """
    # By position: PyAV 18's container is a Mapping (iterating gives the types), earlier ones iterate the entries.
    side_data = frame.side_data
    entries = (side_data[i] for i in range(len(side_data)))
    matrix = next((sd for sd in entries if sd.type.name == "DISPLAYMATRIX"), None)
    if matrix is None:
        return 0
    m = np.frombuffer(bytes(matrix), dtype="<i4").astype(np.float64)  # 3x3, row-major, 16.16 fixed point
    if m[0] * m[4] - m[1] * m[3] < 0:
        raise VideoError("the display matrix mirrors the image; mirrored videos are not supported")
    degrees = float(frame.rotation)
    quarter = round(degrees / 90)
    if abs(degrees - 90 * quarter) > 1:
        raise VideoError(f"the display matrix rotates by {degrees:g} degrees; only multiples of 90 are supported")
    return (90 * quarter) % 360


def _read_header(path: Path) -> _Header:
    """:class:`_Header` of a file, read with PyAV (defaults where PyAV is missing).

    Raises:
        VideoError: FFmpeg cannot open the file or it has no video stream (every backend would fail
            the same way: this reason is FFmpeg's, said once, before decord prints its own log lines),
            or an unsupported display matrix (see :func:`_display_rotation`).
    """
    try:
        import av  # noqa: PLC0415
    except ImportError:
        return _Header()
    try:
        with av.open(str(path)) as container:
            frames = _mp4_frames(container)
            if not container.streams.video:
                raise VideoError("no video stream (audio-only or not a video)")
            try:
                first = next(container.decode(container.streams.video[0]), None)
            except av.error.FFmpegError:
                first = None      # the readers say why, with the frame where decoding fails
            return _Header(frames, _display_rotation(first) if first is not None else 0)
    except av.error.FFmpegError as exc:
        raise VideoError(_one_line(exc)) from exc


def _check_declared(declared: int, found: int) -> None:
    """A file whose index lists more frames than it holds was cut at a packet boundary; its
    frames decode cleanly, so without this check it would pass silently for a shorter video."""
    if found < declared:
        raise VideoError(f"file is truncated: its index lists {declared} frames, only {found} are present")


def _one_line(exc: BaseException) -> str:
    """The reason of ``exc`` on one line, at most 300 characters; for FFmpeg's (and OS) errors their text
    alone, without ``[Errno 1094995529]`` and the path, which the caller names already."""
    strerror = getattr(exc, "strerror", None)
    text = " ".join((strerror if isinstance(strerror, str) and strerror else str(exc)).split())
    return text[:300] if text else type(exc).__name__


def open_video(path: str | os.PathLike, backend: str = "auto") -> VideoReader:
    """Open a video for sampling.

    Args:
        path: video file.
        backend: one of :data:`BACKENDS`. ``"auto"``: torchcodec when it loads, else decord, then PyAV
            if decord is missing or cannot open the file. A video rotated by 90 or 270 degrees is
            decoded with PyAV when decord is asked for (or is auto's choice); its ``info.backend``
            then reads ``"pyav (decord cannot decode a video rotated by 90 degrees)"``.

    Raises:
        VideoError: one-line reason when no backend can use the file, or when the backend asked for
            is not installed or cannot load.
    """
    path = Path(path)
    _check_file(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    header = _read_header(path)
    errors = []
    if backend == "torchcodec" or (backend == "auto" and _torchcodec_usable()):
        try:
            return TorchCodecReader(path, header=header)
        except ImportError as exc:
            raise VideoError(str(exc)) from exc
        except VideoError as exc:
            if backend == "torchcodec":
                raise
            errors.append(f"torchcodec: {exc}")
    if backend in ("auto", "decord"):
        try:
            return DecordReader(path, header=header)
        except ImportError as exc:
            if backend == "decord":
                raise VideoError("decord is not installed") from exc
        except DecordCannotRotate as exc:
            return PyAVReader(path, header, backend=f"pyav ({exc})")
        except VideoError as exc:
            if backend == "decord":
                raise
            errors.append(f"decord: {exc}")
    try:
        return PyAVReader(path, header)
    except VideoError as exc:
        # PyAV's reason is the readable one (the others' are often C++ check failures); keep theirs short.
        detail = "".join(f" ({e[:88]})" for e in errors)
        raise VideoError(f"{exc}{detail}") from exc


def check_backend(backend: str) -> None:
    """Refuse, before any video is opened, a backend that is unknown or cannot run here.

    Raises:
        ValueError: one line: an unknown name, or ``torchcodec`` asked for where it is not installed
            or cannot load (``auto`` never fails here: it falls back to decord).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "torchcodec" and torchcodec_status()[0] is None:
        raise ValueError(f"backend torchcodec: torchcodec {torchcodec_status()[1]} (see the README's Decoders)")


def _torchcodec_usable() -> bool:
    """Whether ``auto`` can use torchcodec; an installed torchcodec that cannot load is reported once."""
    decoder_class, why = torchcodec_status()
    if decoder_class is None and why != "not installed":
        _warn_once(f"torchcodec is installed but {why}; decoding with decord instead")
    return decoder_class is not None


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
