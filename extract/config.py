"""What decides a run's features (:class:`ExtractConfig`), and the device and precision it runs at."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from common.config import Section
from weights.specs import get_spec

__all__ = ["ExtractConfig", "STREAMS", "PRECISIONS", "FLOW_METHODS", "BACKENDS", "resolve_device", "autocast_dtype",
           "SECTION"]

STREAMS = ("rgb", "flow")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FLOW_METHODS = ("tvl1", "opencv-tvl1")
BACKENDS = ("auto", "decord", "pyav")


@dataclass
class ExtractConfig:
    """Everything that decides the features of a video.

    Attributes:
        streams: streams to extract (comma list of rgb, flow), written in that order.
        fps: sampling rate (none: each video's own average rate).
        window: frames per snippet.
        stride: frames between snippet starts (4 is common on THUMOS14).
        short_side: resize the short side to this many pixels (none: the weights' spec, 256 for every
            registered I3D).
        crop: centre crop, pixels (none: the weights' spec, 224); at most short_side.
        batch_size: snippets per I3D forward pass.
        device: auto (CUDA when present), cpu, cuda, cuda:N.
        precision: auto (fp16 autocast on CUDA with an fp32 redo on overflow, fp32 on CPU), fp32, bf16
            or fp16.
        spatial: also store float16 Mixed_5c maps (T, 1024, 7, 7).
        overwrite: redo videos whose feature file exists.
        backend: video decoder: auto (decord, PyAV fallback), decord or pyav.
        queue_size: snippet batches decoded ahead of the model, per video.
        workers: videos decoded at once, in threads (features are still written in input order).
        flow: flow method: tvl1 (batched PyTorch TV-L1, CPU or CUDA) or opencv-tvl1 (OpenCV's CPU
            reference).
    """

    streams: tuple[str, ...] = ("rgb",)
    fps: float | None = None
    window: int = 16
    stride: int = 16
    short_side: int | None = None
    crop: int | None = None
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
        if any(v is not None and v < 1 for v in (self.short_side, self.crop)):
            raise ValueError(f"short_side and crop must be >= 1, got {self.short_side}, {self.crop}")
        # a crop given alone is checked against the registry default's short side here; whatever the
        # weights' specs fill in is checked when the streams are built (extract.streams.input_geometry)
        if self.crop is not None:
            short_side = get_spec(self.streams[0]).transform.short_side if self.short_side is None else self.short_side
            if self.crop > short_side:
                raise ValueError(f"crop {self.crop} is larger than short_side {short_side}")
        if self.flow not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {self.flow!r}; use one of {', '.join(FLOW_METHODS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")


SECTION = Section("extract", ExtractConfig, choices={"precision": PRECISIONS, "backend": BACKENDS,
                                                     "flow": FLOW_METHODS})
"""The ``extract`` section of ``python -m extract --config FILE`` (:mod:`common.config`)."""


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when present, else the CPU; otherwise the named device (CUDA must exist)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a precision setting; None means plain fp32.

    "auto" is fp16 on CUDA: measured on an H200 (tests/test_cuda.py, README), fp16 autocast
    features differ from fp32 by at most 0.0033 (cosine >= 0.999999) against 0.023 for bf16, and
    run faster. fp16's narrow range is guarded: a batch with non-finite output is redone in fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
