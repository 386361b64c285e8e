"""Small synthetic videos made on the fly with PyAV, for tests.

Each frame ``i`` is filled with the grey level ``level(i)`` and carries a red 8x8 square that moves
7 pixels a frame, so decoded frames identify their source index (lossless x264, ``qp=0``).
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np


def level(i: int) -> int:
    """Grey level of frame ``i``."""
    return (i * 10) % 250


def frame_image(i: int, width: int, height: int) -> np.ndarray:
    img = np.full((height, width, 3), level(i), np.uint8)
    x = (i * 7) % max(1, width - 8)
    y = height // 4
    img[y:y + 8, x:x + 8] = (255, 0, 0)
    return img


def make_video(path: str | Path, num_frames: int, width: int = 64, height: int = 48, fps: int = 25,
               pts_ms: Sequence[int] | None = None, faststart: bool = False, rotation: int = 0,
               hflip: bool = False) -> Path:
    """Write an H.264 video (lossless, yuv444p so odd sizes work).

    Args:
        pts_ms: presentation time of each frame in milliseconds (variable frame rate); default
            constant ``fps``.
        faststart: put the index (moov) first, so a truncated file still opens.
        rotation: display-matrix rotation, counter-clockwise degrees (as a phone writes it: the
            coded frames are ``width`` x ``height``; players turn them by ``rotation``).
        hflip: also mirror the display matrix.
    """
    path = Path(path)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"qp": "0"}
        if rotation or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        if pts_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            if pts_ms is not None:
                frame.pts = int(pts_ms[i])
                frame.time_base = fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def upright_image(i: int, width: int, height: int, rotation: int) -> np.ndarray:
    """Frame ``i`` of ``make_video(..., width, height, rotation=rotation)`` as a player shows it:
    the coded image turned ``rotation`` degrees counter-clockwise."""
    return np.rot90(frame_image(i, width, height), (rotation // 90) % 4)


def make_audio_only(path: str | Path) -> Path:
    """An .mp4 holding one AAC audio stream and no video."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def truncate(src: str | Path, dest: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of a file's bytes."""
    data = Path(src).read_bytes()
    Path(dest).write_bytes(data[: int(len(data) * fraction)])
    return Path(dest)


def decoded_levels(frames: np.ndarray) -> np.ndarray:
    """Source index of decoded frames (N, H, W, 3), read back from their grey level."""
    # bottom-left corner is never covered by the square
    return np.rint(frames[:, -1, 0, 1].astype(np.float64) / 10).astype(int)
