"""What decides a run's features (:class:`ExtractConfig`), and the device and precision it runs at."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from common.config import Section
from extract.video import BACKENDS
from weights.specs import get_spec

__all__ = ["ExtractConfig", "STREAMS", "PRECISIONS", "FLOW_METHODS", "BACKENDS", "resolve_device", "rank_device",
           "autocast_dtype", "SECTION"]

STREAMS = ("rgb", "flow")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FLOW_METHODS = ("tvl1", "opencv-tvl1")


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
        backend: video decoder: auto (torchcodec when it loads, else decord; PyAV where neither can
            open a file), torchcodec, decord or pyav. All give the same frames.
        queue_size: snippet batches decoded ahead of the model, per video.
        workers: videos decoded at once, in threads (features are still written in input order).
        flow: flow method: tvl1 (batched PyTorch TV-L1, CPU or CUDA) or opencv-tvl1 (OpenCV's CPU
            reference).
        claim_heartbeat: seconds between refreshes of this process's claim files (extract.claims:
            several processes share one output folder).
        claim_timeout: seconds after its last heartbeat that a claim counts as abandoned and is taken
            over (its owner on this machine is checked at once by pid); at least 2 x claim_heartbeat.
        wait_for_others: once its own videos are done, wait for those other live processes are
            writing (and take them over if their owner dies), so that a finished run means a finished
            folder; --no-wait-for-others: count them as in progress and end.
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
    claim_heartbeat: float = 10.0
    claim_timeout: float = 60.0
    wait_for_others: bool = True

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
        if not (self.claim_heartbeat > 0 and self.claim_timeout >= 2 * self.claim_heartbeat):
            raise ValueError(f"claim_heartbeat must be > 0 and claim_timeout >= 2 x claim_heartbeat, "
                             f"got {self.claim_heartbeat}, {self.claim_timeout}")


SECTION = Section("extract", ExtractConfig, choices={"precision": PRECISIONS, "backend": BACKENDS,
                                                     "flow": FLOW_METHODS})
"""The ``extract`` section of ``python -m extract --config FILE`` (:mod:`common.config`)."""


def rank_device(device: str, env: Mapping[str, str], cuda_count: int) -> str:
    """The device one process uses: ``device``, except that ``"auto"`` and ``"cuda"`` become
    ``cuda:LOCAL_RANK`` (modulo the GPU count) when ``env`` has ``LOCAL_RANK`` (torchrun sets it,
    one per process on a machine) and there are ``cuda_count`` > 0 GPUs; ``"auto"`` without GPUs is
    ``"cpu"``, without LOCAL_RANK ``"cuda"``. An explicit ``cuda:N`` or ``cpu`` is kept."""
    if device not in ("auto", "cuda"):
        return device
    if cuda_count < 1:
        return "cpu" if device == "auto" else device
    rank = env.get("LOCAL_RANK", "").strip()
    if not rank:
        return "cuda"
    if not rank.isdigit():
        raise ValueError(f"LOCAL_RANK must be a non-negative integer, got {rank!r}")
    return f"cuda:{int(rank) % cuda_count}"


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when present, else the CPU; otherwise the named device (CUDA must exist).
    Under torchrun, ``"auto"`` and ``"cuda"`` are each process's own GPU (:func:`rank_device`)."""
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    dev = torch.device(rank_device(device, os.environ, cuda_count))
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
