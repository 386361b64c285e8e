"""Videos with their detections drawn on them, for people to watch.

Each output frame is the input frame with

* the label and score of the best detection active at that frame's time, in a box at the top
  left (nothing drawn when no shown detection is active), and
* a timeline strip appended below the frame: ground truth (when given) in the upper half, the
  shown detections in the lower half (one colour per class, brighter for higher scores), and a
  white cursor at the current time.

The output has the input's frame count and frame rate (every source frame is drawn once, at its
own presentation time) and is H.264 MP4. Text is rasterised with matplotlib's Agg canvas (no
display, no font files of our own).
"""

from __future__ import annotations

import fractions
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.fileio import atomic_path
from extract.video import open_video

__all__ = ["RenderConfig", "active_detection", "render_video", "timeline_strip"]

GT_RGB = np.array((43, 122, 61), np.uint8)          # common.plotting.GT_COLOR
STRIP_BG = np.array((24, 24, 24), np.uint8)


@dataclass(frozen=True)
class RenderConfig:
    """What is drawn.

    Attributes:
        top: detections shown per video (highest scores first).
        min_score: detections below this score are not shown.
        strip_height: pixels of the timeline strip (ground truth and detections half each).
        crf: H.264 quality of the output (lower: better).
    """

    top: int = 10
    min_score: float = 0.0
    strip_height: int = 24
    crf: int = 18


def _shown(predictions: Sequence[dict], cfg: RenderConfig) -> list[dict]:
    kept = [p for p in predictions if float(p["score"]) >= cfg.min_score]
    return sorted(kept, key=lambda p: -float(p["score"]))[:cfg.top]


def active_detection(shown: Sequence[dict], t: float) -> dict | None:
    """The highest-scoring detection whose segment ``[start, end]`` (seconds) contains time ``t``."""
    best = None
    for p in shown:
        s, e = p["segment"]
        if s <= t <= e and (best is None or float(p["score"]) > float(best["score"])):
            best = p
    return best


def _class_colors(labels: Sequence[str]) -> dict[str, np.ndarray]:
    cmap = colormaps["tab10"]
    return {lab: (np.array(cmap(i % 10)[:3]) * 255).astype(np.uint8) for i, lab in enumerate(sorted(set(labels)))}


def timeline_strip(width: int, height: int, duration: float, shown: Sequence[dict],
                   ground_truth: Sequence[dict] | None, colors: dict[str, np.ndarray]) -> np.ndarray:
    """uint8 (height, width, 3): the video's timeline without the cursor (x = t / duration * width)."""
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = STRIP_BG
    half = height // 2

    def span(seg) -> slice:
        s, e = (float(v) / max(duration, 1e-9) * width for v in seg)
        lo = int(np.clip(np.floor(s), 0, width - 1))
        return slice(lo, int(np.clip(np.ceil(e), lo + 1, width)))

    for g in ground_truth or ():
        strip[1:half - 1, span(g["segment"])] = GT_RGB
    for p in sorted(shown, key=lambda p: float(p["score"])):             # best drawn last, on top
        level = 0.35 + 0.65 * float(np.clip(p["score"], 0, 1))
        strip[half + 1:height - 1, span(p["segment"])] = (colors[p["label"]] * level).astype(np.uint8)
    return strip


@lru_cache(maxsize=256)
def _text_image(text: str, height: int) -> np.ndarray:
    """uint8 (height, w, 3) white text on a dark box, rasterised once per distinct text."""
    dpi = 100
    width_in = max(1.0, 0.62 * height * len(text) / dpi)
    fig = Figure(figsize=(width_in, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    fig.patch.set_facecolor((0.05, 0.05, 0.05))
    fig.text(0.03, 0.5, text, color="white", fontsize=0.62 * height * 72 / dpi, va="center", ha="left",
             family="DejaVu Sans")
    canvas.draw()
    img = np.asarray(canvas.buffer_rgba())[..., :3]
    inked = np.flatnonzero((img > 128).any(axis=(0, 2)))
    right = min(img.shape[1], int(inked[-1]) + 1 + height // 4) if len(inked) else img.shape[1]
    return img[:, :right].copy()


def _overlay(frame: np.ndarray, det: dict) -> None:
    """Draw ``label score`` in a box at the frame's top left, in place."""
    h, w = frame.shape[:2]
    text = _text_image(f"{det['label']} {float(det['score']):.2f}", max(10, min(24, h // 10)))
    th, tw = min(text.shape[0], h), min(text.shape[1], w)
    frame[:th, :tw] = text[:th, :tw]


def render_video(video: str | os.PathLike, dest: str | os.PathLike, predictions: Sequence[dict],
                 ground_truth: Sequence[dict] | None = None, config: RenderConfig = RenderConfig()) -> Path:
    """Write ``video`` with ``predictions`` drawn on it to ``dest`` (atomically).

    Args:
        predictions: the video's detections, as in a prediction file (``label``, ``score``,
            ``segment`` in seconds).
        ground_truth: the video's annotations (``segment``, ``label``), or None.

    Raises:
        extract.video.VideoError: the video cannot be decoded; nothing is written.
    """
    video, dest = Path(video), Path(dest)
    shown = _shown(predictions, config)
    colors = _class_colors([p["label"] for p in shown] + [g["label"] for g in ground_truth or ()])
    with open_video(video) as reader:
        info = reader.info
        width, height = info.width, info.height
        out_h = height + config.strip_height
        pad_w, pad_h = width % 2, out_h % 2                     # H.264 in yuv420p needs even sizes
        strip = timeline_strip(width, config.strip_height, info.duration, shown, ground_truth, colors)
        with atomic_path(dest) as tmp:
            with av.open(str(tmp), "w", format="mp4") as container:
                rate = _rate(video, info.fps)
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = width + pad_w, out_h + pad_h, "yuv420p"
                stream.options = {"crf": str(config.crf), "preset": "veryfast"}
                for k, frame in reader.frames(np.arange(info.num_frames)):
                    t = float(info.starts[k])
                    canvas = np.zeros((out_h + pad_h, width + pad_w, 3), np.uint8)
                    canvas[:height, :width] = frame
                    det = active_detection(shown, t)
                    if det is not None:
                        _overlay(canvas[:height, :width], det)
                    bar = strip.copy()
                    x = int(np.clip(round(t / max(info.duration, 1e-9) * width), 0, width - 1))
                    bar[:, x] = 255
                    canvas[height:out_h, :width] = bar
                    out = av.VideoFrame.from_ndarray(canvas, format="rgb24")
                    for packet in stream.encode(out):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    return dest


def _rate(video: Path, fps: float) -> fractions.Fraction:
    """The input's average frame rate as an exact fraction where the container gives one."""
    try:
        with av.open(str(video)) as c:
            rate = c.streams.video[0].average_rate
            if rate:
                return fractions.Fraction(rate)
    except (av.error.FFmpegError, IndexError):
        rate = None                     # PyAV cannot read it (decord could): the decoder's rate below
    return fractions.Fraction(fps).limit_denominator(1001)
