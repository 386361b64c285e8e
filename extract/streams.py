"""The two I3D streams: RGB frames, and TV-L1 optical flow between consecutive frames.

A stream turns a batch of snippets into I3D outputs. It receives uint8 frames already resized on the
compute device, ``(B, window + extra_frames, 3, H, W)``, plus their sampled-frame indices
``(B, window + extra_frames)``, and crops them itself. What the input must look like is read from
the spec of the weights the stream runs (``model.spec``, set by :func:`extract.pretrained.load_i3d`;
a model without one uses the registry default of its stream), ``spec.transform``
(:class:`weights.InputTransform`): short side, crop, value range, flow bound. For the registered
Kinetics-400 weights that is DeepMind's preprocessing:

* RGB: the first ``window`` frames, at short side 256, centre-cropped to 224, scaled ``2 p / 255 - 1``.
* Flow: 16 flow fields from 17 frames: field ``j`` of snippet ``i`` is the TV-L1 flow from sampled
  frame ``i * stride + j`` to the next one (the last frame repeats past the end, giving zero flow),
  so the fields cover exactly the snippet's frames and its time is unchanged. As DeepMind did,
  frames are converted to grayscale and flow is computed on the whole frame resized to short side
  256 (the scale the flow weights were trained at: displacements in pixels grow with resolution,
  and the input is truncated at the flow bound, +-20 px), then truncated to [-20, 20], divided by
  20 and centre-cropped like RGB. Flow of a frame pair is computed once and reused by the
  overlapping snippets (stride < window).

:func:`build_streams` loads the models a configuration asks for and wraps them;
:func:`input_geometry` says at which short side and crop the pipeline must prepare frames for them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor

from extract.config import FLOW_METHODS, ExtractConfig, autocast_dtype, resolve_device
from extract.flow import opencv_tvl1, rgb_to_gray, tvl1
from extract.i3d import I3D, I3DOutput
from extract.pretrained import load_i3d, model_spec
from extract.transforms import center_crop, scale_flow, to_value_range

__all__ = ["RGBStream", "FlowStream", "FLOW_METHODS", "STREAM_TYPES", "register_stream", "build_streams",
           "input_geometry"]

STREAM_TYPES: dict[str, type] = {}


def register_stream(cls: type) -> type:
    """Class decorator: make a stream class (with ``name`` and a ``build`` classmethod) available to
    :func:`build_streams` under its ``name``. Its name must also be in ``extract.config.STREAMS``, the
    order in which streams are written and concatenated."""
    if cls.name in STREAM_TYPES:
        raise ValueError(f"stream {cls.name!r} is already registered")
    STREAM_TYPES[cls.name] = cls
    return cls


class _I3DStream:
    """An I3D on a device, with optional autocast and an fp32 redo when reduced precision overflows.

    Args:
        model: the I3D; its ``spec`` (or its stream's registry default) gives the input transform.
        device: where the model runs (it is moved there).
        autocast: reduced-precision dtype for autocast, or None for fp32.
        crop: centre-crop size of the stream's input; None when frames arrive cropped (the
            pipeline crops RGB-only runs itself, at :func:`input_geometry`'s crop).

    Attributes:
        spec: the weights' record; ``transform`` its input transform.
        weights: the weights' provenance (:class:`weights.LoadedWeights`), None for a model not
            loaded by :func:`extract.pretrained.load_i3d`.
    """

    name: str
    extra_frames: int
    flow_method: str | None = None

    def __init__(self, model: I3D, device: torch.device, autocast: torch.dtype | None, crop: int | None = None):
        self.model, self.device, self.autocast, self.crop = model.to(device).eval(), device, autocast, crop
        self.weights = getattr(model, "weights", None)
        self.spec = model_spec(model, self.name)
        self.transform = self.spec.transform
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed snippet shapes: let cuDNN pick its fastest kernels

    @property
    def input_crop(self) -> int:
        """Side of the square I3D input this stream is set up for: ``crop``, else its spec's crop."""
        return self.crop if self.crop is not None else self.transform.crop

    def _run(self, x: Tensor) -> I3DOutput:
        out = self._forward(x, self.autocast)
        if self.autocast is not None and not torch.isfinite(out.spatial).all():
            out = self._forward(x, None)  # reduced precision overflowed: redo this batch in fp32
        return out

    def _forward(self, x: Tensor, dtype: torch.dtype | None) -> I3DOutput:
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = self.model(x)
        return I3DOutput(logits=out.logits.float(), features=out.features.float(), spatial=out.spatial.float())


@register_stream
class RGBStream(_I3DStream):
    """RGB I3D on the first ``window`` frames of each snippet (moves ``model`` to ``device``)."""

    name = "rgb"
    extra_frames = 0

    @classmethod
    def build(cls, model: I3D, device: torch.device, autocast: torch.dtype | None, crop: int | None,
              config: ExtractConfig) -> RGBStream:
        return cls(model, device, autocast, crop)

    @torch.inference_mode()
    def __call__(self, frames: Tensor, window: int, frame_ids: Tensor | None = None) -> I3DOutput:
        # frames: uint8 (B, window + extra, 3, H, W) -> input (B, 3, window, crop, crop) in the spec's value range
        x = frames[:, :window].to(self.device, non_blocking=True)
        x = x if self.crop is None else center_crop(x, self.crop)
        x = to_value_range(x, self.transform.value_range).permute(0, 2, 1, 3, 4).contiguous()
        return self._run(x)


@register_stream
class FlowStream(_I3DStream):
    """Flow I3D on TV-L1 flow fields (see the module docstring).

    Args:
        method: ``"tvl1"`` (:func:`extract.flow.tvl1`, batched, CPU or CUDA) or ``"opencv-tvl1"``
            (OpenCV's CPU DualTVL1, the reference).
        flow_params: keyword arguments for the TV-L1 solver (OpenCV's defaults otherwise).

    Raises:
        ValueError: unknown method, OpenCV missing, a model that is not 2-channel, or weights whose
            spec gives no flow bound.
    """

    name = "flow"
    extra_frames = 1

    @classmethod
    def build(cls, model: I3D, device: torch.device, autocast: torch.dtype | None, crop: int | None,
              config: ExtractConfig) -> FlowStream:
        return cls(model, device, autocast, crop, method=config.flow)

    def __init__(self, model: I3D, device: torch.device, autocast: torch.dtype | None, crop: int | None = None,
                 method: str = "tvl1", **flow_params):
        if method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {method!r}; use one of {', '.join(FLOW_METHODS)}")
        if method == "opencv-tvl1":
            try:
                import cv2

                cv2.optflow.DualTVL1OpticalFlow_create  # noqa: B018 - the contrib module must be there
            except (ImportError, AttributeError) as exc:
                raise ValueError("--flow opencv-tvl1 needs OpenCV's contrib optflow module: "
                                 "pip install opencv-contrib-python-headless (or -e '.[opencv]')") from exc
        if model.in_channels != 2:
            raise ValueError(f"the flow stream needs a 2-channel I3D, got {model.in_channels} channels")
        super().__init__(model, device, autocast, crop)
        if self.transform.flow_bound is None:
            raise ValueError(f"weights {self.spec.id!r} give no flow bound (InputTransform.flow_bound)")
        self.flow_method, self.flow_params = method, flow_params
        self._cache: dict[int, Tensor] = {}   # first frame index -> (2, crop, crop) normalized flow

    @property
    def flow_bound(self) -> float:
        """Flow is truncated to [-bound, bound] pixels before scaling (from the weights' spec)."""
        return self.transform.flow_bound

    @torch.inference_mode()
    def __call__(self, frames: Tensor, window: int, frame_ids: Tensor | None = None) -> I3DOutput:
        # frames: uint8 (B, window + 1, 3, H, W); frame_ids: (B, window + 1) sampled-frame indices
        B, L = frames.shape[:2]
        if frame_ids is None:  # no indices: every snippet's pairs are its own, nothing is shared across calls
            self.reset()
            frame_ids = torch.arange(B * L).reshape(B, L)
        frame_ids = frame_ids.cpu()
        wanted = sorted({int(k) for k in frame_ids[:, :window].flatten()} - set(self._cache))
        if wanted:
            # frames by sampled index, and the pairs (k, next) still to compute
            where = {int(k): (b, j) for b in range(B) for j, k in enumerate(frame_ids[b].tolist())}
            nxt = {int(frame_ids[b, j]): int(frame_ids[b, j + 1]) for b in range(B) for j in range(L - 1)}
            first = torch.stack([frames[where[k]] for k in wanted])                 # (P, 3, H, W)
            second = torch.stack([frames[where[nxt[k]]] for k in wanted])
            pairs = torch.stack([first, second]).to(self.device).permute(0, 1, 3, 4, 2)
            gray = rgb_to_gray(pairs)                                                 # (2, P, H, W)
            flow = self._pairs(gray[0], gray[1])                                      # (P, 2, H, W)
            flow = scale_flow(flow, self.flow_bound, self.transform.value_range)
            flow = flow if self.crop is None else center_crop(flow, self.crop)
            self._cache.update({k: f for k, f in zip(wanted, flow)})
        x = torch.stack([torch.stack([self._cache[int(k)] for k in row[:window]]) for row in frame_ids])
        # drop flows no later snippet needs (snippets arrive in order)
        lowest = int(frame_ids[-1, 0])
        for k in [k for k in self._cache if k < lowest]:
            del self._cache[k]
        return self._run(x.permute(0, 2, 1, 3, 4).contiguous())                    # (B, 2, window, crop, crop)

    def _pairs(self, prev: Tensor, nxt: Tensor) -> Tensor:
        if self.flow_method == "tvl1":
            return tvl1(prev, nxt, **self.flow_params)
        return torch.as_tensor(opencv_tvl1(prev.cpu(), nxt.cpu(), **self.flow_params)).to(prev.device)

    def reset(self) -> None:
        """Forget cached flow (a new video starts)."""
        self._cache.clear()


def build_streams(config: ExtractConfig, weights_root: str | os.PathLike | None = None,
                  models: dict[str, I3D] | None = None) -> list:
    """Load each requested stream's model before any video is decoded, and wrap it in its stream.

    Each stream crops at ``config.crop``, or where that is None at the crop of its weights' spec.

    Args:
        models: ready models by stream (tests, custom weights); others come from
            :func:`extract.pretrained.load_i3d`.

    Raises:
        weights.WeightsError: a stream's weights are missing (the flow stream says how to import them).
        ValueError: the weights' specs and the configuration give an impossible geometry.
    """
    device = resolve_device(config.device)
    autocast = autocast_dtype(config.precision, device)
    streams = []
    for name in config.streams:
        model = (models or {}).get(name)
        if model is None:
            model = load_i3d(name, root=weights_root, fetch_missing=(name == "rgb"))
        crop = config.crop if config.crop is not None else model_spec(model, name).transform.crop
        if name not in STREAM_TYPES:
            raise ValueError(f"no stream type registered for {name!r} (known: {', '.join(STREAM_TYPES)})")
        streams.append(STREAM_TYPES[name].build(model, device, autocast, crop, config))
    input_geometry(streams, config.short_side, config.crop)
    return streams


def input_geometry(streams: Sequence[_I3DStream], short_side: int | None = None,
                   crop: int | None = None) -> tuple[int, int]:
    """(short side, crop) in pixels at which frames are prepared for ``streams``.

    Each value is the one given, else the one the streams' weights' specs agree on (the crop of
    a stream built with an explicit crop is that crop).

    Raises:
        ValueError: the streams' specs disagree where no value is given, or the crop exceeds the
            short side.
    """
    if short_side is None:
        sides = sorted({s.transform.short_side for s in streams})
        if len(sides) != 1:
            raise ValueError(f"the streams' weights expect different short sides {sides}; choose one (short_side)")
        short_side = sides[0]
    if crop is None:
        crops = sorted({s.input_crop for s in streams})
        if len(crops) != 1:
            raise ValueError(f"the streams' weights expect different crops {crops}; choose one (crop)")
        crop = crops[0]
    if crop > short_side:
        raise ValueError(f"crop {crop} is larger than short_side {short_side}")
    return short_side, crop
