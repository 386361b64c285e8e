"""The flow stream: TV-L1 between consecutive sampled frames, truncated, rescaled and cropped, through
a 2-channel I3D; two-stream feature files; agreement of the PyTorch TV-L1 and OpenCV's downstream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from extract import ExtractConfig, extract_videos, read_features
from extract.flow import rgb_to_gray, tvl1
from extract.streams import FlowStream, RGBStream
from extract.transforms import center_crop, resize_crop
from tests.models import record_inputs, with_transform
from tests.videos import make_video

REPO = Path(__file__).resolve().parents[1]
FAST = dict(nscales=2, warps=2, outer_iterations=2, inner_iterations=5)   # small solver for pipeline tests

try:
    import cv2

    cv2.optflow.DualTVL1OpticalFlow_create  # noqa: B018 - the contrib module must be there
except (ImportError, AttributeError):  # pragma: no cover
    cv2 = None


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def expected_flow_input(frames: np.ndarray, window: int, stride: int, short_side: int, crop: int, bound: float = 20.0,
                        **params) -> torch.Tensor:
    """(T, 2, window, crop, crop) flow input computed directly from the definition (flow truncated to
    [-bound, bound] pixels, divided by bound)."""
    n = len(frames)
    count = max(1, -(-(n - window) // stride) + 1)
    gray = rgb_to_gray(resize_crop(frames, short_side, None).permute(0, 2, 3, 1))     # whole resized frames
    snippets = []
    for i in range(count):
        idx = np.minimum(np.arange(i * stride, i * stride + window + 1), n - 1)
        f = tvl1(gray[idx[:-1]], gray[idx[1:]], **params).clamp(-bound, bound) / bound
        snippets.append(center_crop(f, crop).permute(1, 0, 2, 3))
    return torch.stack(snippets)


@pytest.mark.parametrize("stride", [16, 4])
def test_two_stream_file_matches_direct_computation(tmp_path, random_i3d, stride):
    video = make_video(tmp_path / "clip.mp4", 30, width=80, height=48)
    rgb_model, flow_model = random_i3d(3), random_i3d(2, seed=1)
    cpu = torch.device("cpu")
    streams = [RGBStream(rgb_model, cpu, None, crop=64), FlowStream(flow_model, cpu, None, crop=64, **FAST)]
    cfg = ExtractConfig(streams=("rgb", "flow"), short_side=64, crop=64, stride=stride, batch_size=3)
    report = extract_videos([video], tmp_path / "out", cfg, streams=streams, progress=False)
    assert report.ok, report.failed
    ff = read_features(tmp_path / "out" / "clip.h5")
    assert ff.streams == ("rgb", "flow") and ff.features.shape[1] == 2048
    assert ff.attrs["flow_method"] == "tvl1" and ff.attrs["flow_bound"] == 20.0
    x = expected_flow_input(decode(video), 16, stride, 64, 64, **FAST)
    with torch.no_grad():
        expected = flow_model(x).features.numpy()
    assert ff.features.shape[0] == len(expected) == (2 if stride == 16 else 5)
    np.testing.assert_allclose(ff.features[:, 1024:], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bound, value_range", [(4.0, (-1.0, 1.0)), (20.0, (0.0, 1.0))])
def test_flow_input_follows_the_weights_spec(tmp_path, random_i3d, bound, value_range):
    """Weights whose spec truncates flow at another bound, or scales it onto another range: the flow I3D
    sees exactly that input (the square moves 7 px a frame, so a 4 px bound clips it), and the file
    records the bound."""
    video = make_video(tmp_path / "clip.mp4", 20, width=80, height=48)
    model = with_transform(random_i3d(2, seed=1), "flow", flow_bound=bound, value_range=value_range)
    seen = record_inputs(model)
    cpu = torch.device("cpu")
    cfg = ExtractConfig(streams=("flow",), short_side=64, crop=64, batch_size=2)
    report = extract_videos([video], tmp_path / "out", cfg, streams=[FlowStream(model, cpu, None, crop=64, **FAST)],
                            progress=False)
    assert report.ok, report.failed
    ff = read_features(tmp_path / "out" / "clip.h5")
    assert ff.streams == ("flow",) and ff.attrs["flow_bound"] == bound
    unit = expected_flow_input(decode(video), 16, 16, 64, 64, bound=bound, **FAST)        # in [-1, 1]
    low, high = value_range
    expected = low + (unit + 1) * (high - low) / 2
    x = torch.cat(seen)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)
    default = expected_flow_input(decode(video), 16, 16, 64, 64, **FAST)                   # bound 20, [-1, 1]
    assert (x - default).abs().max() > 0.1                                                 # what the spec changed
    with torch.no_grad():
        np.testing.assert_allclose(ff.features, model(expected).features.numpy(), rtol=1e-4, atol=1e-5)


def test_flow_stream_needs_a_flow_bound(random_i3d):
    with pytest.raises(ValueError, match="flow bound"):
        FlowStream(with_transform(random_i3d(2), "flow", flow_bound=None), torch.device("cpu"), None)


def test_flow_of_a_still_video_is_zero(tmp_path, random_i3d):
    """Identical frames: zero flow, so the input is all zeros (one short video, padded)."""
    frames = torch.full((1, 17, 3, 64, 64), 128, dtype=torch.uint8)
    stream = FlowStream(random_i3d(2), torch.device("cpu"), None, **FAST)
    out = stream(frames, 16, torch.zeros(1, 17, dtype=torch.int64))
    with torch.no_grad():
        ref = stream.model(torch.zeros(1, 2, 16, 64, 64))
    torch.testing.assert_close(out.features, ref.features)


def test_flow_stream_refuses_an_rgb_model(random_i3d):
    with pytest.raises(ValueError, match="2-channel"):
        FlowStream(random_i3d(3), torch.device("cpu"), None)
    with pytest.raises(ValueError, match="unknown flow method"):
        FlowStream(random_i3d(2), torch.device("cpu"), None, method="raft")


@pytest.mark.slow
@pytest.mark.skipif(cv2 is None, reason="opencv-contrib-python-headless (cv2.optflow) is not installed")
def test_features_from_torch_and_opencv_tvl1_agree(shared_data, random_i3d):
    """Downstream check: I3D flow features from this TV-L1 and from OpenCV's on the same real frames
    (17 frames of the UCF101 cricket clip, their central 112 x 112 pixels: a quarter of the TV-L1 work of
    the full 224 x 224, one snippet) have cosine similarity >= 0.999."""
    from PIL import Image, ImageSequence

    gif = Image.open(shared_data / "kinetics-i3d-sample" / "v_CricketShot_g04_c01_rgb.gif")
    frames = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)][:17])
    frames = np.ascontiguousarray(frames[:, 56:168, 56:168])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]           # (1, 17, 3, 112, 112) uint8
    ids = torch.arange(17)[None]
    model = random_i3d(2)
    ours = FlowStream(model, torch.device("cpu"), None, method="tvl1")(x, 16, ids).features
    ref = FlowStream(model, torch.device("cpu"), None, method="opencv-tvl1")(x, 16, ids).features
    cos = torch.nn.functional.cosine_similarity(ours, ref).item()
    assert cos >= 0.999, cos


def test_cli_says_flow_weights_are_missing_before_decoding(tmp_path):
    video = make_video(tmp_path / "v.mp4", 5)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "extract", str(video), "--out", str(out), "--streams", "rgb,flow",
                           "--weights-dir", str(tmp_path / "noweights")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ}, timeout=300)
    assert proc.returncode == 2
    assert "python -m weights import" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not out.exists() or not any(out.iterdir())


def test_calls_without_frame_ids_share_nothing(random_i3d):
    """Without sampled-frame indices two calls must not reuse each other's cached flow."""
    stream = FlowStream(random_i3d(2), torch.device("cpu"), None, **FAST)
    still = torch.full((1, 17, 3, 32, 32), 128, dtype=torch.uint8)
    moving = torch.stack([torch.roll(torch.arange(32 * 32, dtype=torch.float32).reshape(32, 32) % 251, k, dims=1)
                          for k in range(17)]).to(torch.uint8)[None, :, None].expand(1, 17, 3, 32, 32).contiguous()
    stream(still, 16)
    second = stream(moving, 16).features
    fresh = FlowStream(stream.model, torch.device("cpu"), None, **FAST)(moving, 16).features
    torch.testing.assert_close(second, fresh)


def test_every_stream_name_has_a_registered_type():
    from extract.config import STREAMS
    from extract.streams import STREAM_TYPES, FlowStream, RGBStream

    assert STREAM_TYPES == {"rgb": RGBStream, "flow": FlowStream}
    assert set(STREAM_TYPES) == set(STREAMS)
