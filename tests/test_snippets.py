"""Tests of the snippet arithmetic (extract.snippets) and frame preparation (extract.transforms).

Conventions under test: CONVENTIONS.md "Time and snippets".
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from extract.snippets import SnippetPlan
from extract.transforms import crop_offsets, resize_crop, resized_size, to_unit_range

plans = st.builds(SnippetPlan,
                  num_frames=st.integers(1, 500),
                  window=st.integers(1, 32),
                  stride=st.integers(1, 32),
                  extra=st.integers(0, 1))


def window_frames(plan: SnippetPlan, i: int) -> set[int]:
    """Real (unpadded) sampled frames inside snippet ``i``'s window."""
    start = i * plan.stride
    return set(range(start, min(start + plan.window, plan.num_frames)))


# --------------------------------------------------------------------------- SnippetPlan properties

@settings(max_examples=300, deadline=None)
@given(plans)
def test_snippet_count_formula_and_minimality(plan):
    """T = max(1, ceil((N - window) / stride) + 1); the windows reach the last frame, and one
    snippet fewer would not."""
    n, w, s = plan.num_frames, plan.window, plan.stride
    t = plan.num_snippets
    assert t == max(1, min(math.ceil((n - w) / s) + 1, math.ceil(n / s)))
    assert (t - 1) * s < n  # no snippet starts past the last frame
    if s > w:
        return  # sparse sampling: frames between windows are skipped by design
    assert (t - 1) * s + w >= n  # last window reaches frame N - 1
    if t > 1:
        assert (t - 2) * s + w < n  # T - 1 snippets leave the last frame uncovered
        assert (n - 1) not in set().union(*(window_frames(plan, i) for i in range(t - 1)))


@settings(max_examples=300, deadline=None)
@given(plans)
def test_every_frame_covered(plan):
    """With stride <= window every sampled frame is in some snippet's window. With stride > window
    the gaps between windows are skipped, and no snippet starts past the end."""
    t = plan.num_snippets
    covered = set().union(*(window_frames(plan, i) for i in range(t)))
    if plan.stride <= plan.window:
        assert plan.num_frames - 1 in plan.frames(t - 1)
        assert covered == set(range(plan.num_frames))
    else:
        gaps = {f for f in range(plan.num_frames) if f % plan.stride >= plan.window}
        assert covered == set(range(plan.num_frames)) - gaps


@settings(max_examples=300, deadline=None)
@given(plans)
def test_snippet_frames(plan):
    """frames(i): window + extra indices, consecutive from i * stride, then repeats of N - 1."""
    n = plan.num_frames
    for i in range(plan.num_snippets):
        f = plan.frames(i)
        assert f.shape == (plan.window + plan.extra,)
        assert np.issubdtype(f.dtype, np.integer)
        assert np.all(np.diff(f) >= 0)
        assert f[0] == min(i * plan.stride, n - 1)
        for j, v in enumerate(f):
            expected = i * plan.stride + j
            assert v == (expected if expected < n else n - 1)
        assert f.min() >= 0 and f.max() <= n - 1


@settings(max_examples=200, deadline=None)
@given(plans, st.sampled_from([1.0, 10.0, 24.0, 25.0, 29.97, 30.0, 60.0]))
def test_times(plan, fps):
    """times(fps)[i] == (i * stride + window / 2) / fps."""
    times = plan.times(fps)
    assert times.shape == (plan.num_snippets,)
    for i, t in enumerate(times):
        assert t == pytest.approx((i * plan.stride + plan.window / 2) / fps, rel=1e-12, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(plans)
def test_needed_frames_is_sorted_union(plan):
    """needed_frames() is the sorted, duplicate-free union of every snippet's frames."""
    needed = plan.needed_frames()
    union = set()
    for i in range(plan.num_snippets):
        union.update(int(v) for v in plan.frames(i))
    assert np.all(np.diff(needed) > 0)
    assert needed.tolist() == sorted(union)


# --------------------------------------------------------------------------- SnippetPlan, by hand

def test_one_frame_video_is_padded():
    """N = 1, window 16: one snippet, 16 copies of frame 0 (17 for flow)."""
    plan = SnippetPlan(1, window=16, stride=16)
    assert plan.num_snippets == 1
    assert plan.frames(0).tolist() == [0] * 16
    assert SnippetPlan(1, 16, 16, extra=1).frames(0).tolist() == [0] * 17
    assert plan.needed_frames().tolist() == [0]


def test_short_video_is_padded_not_dropped():
    """N = 5 < window: one snippet, frames 0..4 then eleven 4s."""
    plan = SnippetPlan(5, window=16, stride=4)
    assert plan.num_snippets == 1
    assert plan.frames(0).tolist() == [0, 1, 2, 3, 4] + [4] * 11


def test_forty_frames_stride_16():
    """N = 40, window = stride = 16: 3 snippets, the last 32..39 then eight 39s."""
    plan = SnippetPlan(40, window=16, stride=16)
    assert plan.num_snippets == 3
    assert plan.frames(0).tolist() == list(range(16))
    assert plan.frames(1).tolist() == list(range(16, 32))
    assert plan.frames(2).tolist() == list(range(32, 40)) + [39] * 8
    assert plan.needed_frames().tolist() == list(range(40))


def test_forty_frames_stride_4():
    """N = 40, window 16, stride 4: 7 snippets, the last exactly 24..39 (no padding)."""
    plan = SnippetPlan(40, window=16, stride=4)
    assert plan.num_snippets == 7
    assert plan.frames(6).tolist() == list(range(24, 40))
    for i in range(7):
        assert plan.frames(i).tolist() == list(range(4 * i, 4 * i + 16))


def test_flow_needs_one_more_frame():
    """extra = 1: the flow snippet of 40 frames at stride 16 ends on a repeated 39."""
    plan = SnippetPlan(40, 16, 16, extra=1)
    assert plan.frames(0).tolist() == list(range(17))
    assert plan.frames(2).tolist() == list(range(32, 40)) + [39] * 9
    # exact fit: 32 frames, the second snippet's extra frame is padding
    assert SnippetPlan(32, 16, 16, extra=1).frames(1).tolist() == list(range(16, 32)) + [31]


def test_times_by_hand():
    """fps 25, window = stride = 16: centres at 0.32, 0.96, 1.60 s."""
    np.testing.assert_allclose(SnippetPlan(40, 16, 16).times(25.0), [0.32, 0.96, 1.60], rtol=0, atol=1e-12)
    np.testing.assert_allclose(SnippetPlan(40, 16, 4).times(25.0),
                               [0.32, 0.48, 0.64, 0.80, 0.96, 1.12, 1.28], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(num_frames=0), dict(num_frames=-3),
    dict(num_frames=10, window=0), dict(num_frames=10, window=-1),
    dict(num_frames=10, stride=0), dict(num_frames=10, stride=-16),
    dict(num_frames=10, extra=-1),
])
def test_invalid_plan(kwargs):
    with pytest.raises(ValueError):
        SnippetPlan(**kwargs)


# --------------------------------------------------------------------------- transforms

@pytest.mark.parametrize("hw, expected", [
    ((272, 640), (256, 602)),    # 640 * 256 / 272 = 602.35
    ((97, 175), (256, 462)),     # 461.86
    ((720, 1280), (256, 455)),   # 455.11
    ((1080, 1920), (256, 455)),  # 455.11
    ((256, 256), (256, 256)),
    ((480, 480), (256, 256)),
    ((640, 272), (602, 256)),    # portrait
    ((1280, 720), (455, 256)),
    ((175, 97), (462, 256)),
])
def test_resized_size(hw, expected):
    assert resized_size(*hw, 256) == expected


@pytest.mark.parametrize("hw, crop, expected", [
    ((256, 256), 224, (16, 16)),
    ((256, 455), 224, (16, 115)),   # 231 margin: 115 left, 116 right
    ((257, 602), 224, (16, 189)),   # 33 margin: 16 top, 17 bottom; 378: 189 / 189
    ((225, 225), 224, (0, 0)),      # odd margin of 1 goes to bottom / right
    ((224, 224), 224, (0, 0)),
])
def test_crop_offsets(hw, crop, expected):
    assert crop_offsets(*hw, crop) == expected


def test_crop_offsets_too_small():
    with pytest.raises(ValueError):
        crop_offsets(200, 300, 224)


@pytest.mark.parametrize("hw", [(48, 64), (97, 175), (256, 256), (720, 1280), (640, 272)])
def test_resize_crop_constant_colour(hw):
    """A constant frame stays exactly that colour; output is uint8 (n, 3, 224, 224)."""
    colour = np.array([10, 200, 37], np.uint8)
    frames = np.broadcast_to(colour, (2, *hw, 3)).copy()
    out = resize_crop(frames)
    assert out.dtype == torch.uint8
    assert out.shape == (2, 3, 224, 224)
    assert torch.equal(out, torch.as_tensor(colour).view(1, 3, 1, 1).expand(2, 3, 224, 224))


def test_resize_crop_no_resize_is_exact_crop():
    """At 256 x 256 there is no resize: the output is the centre crop, pixel for pixel."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    out = resize_crop(frames).numpy()
    np.testing.assert_array_equal(out, frames[:, 16:240, 16:240].transpose(0, 3, 1, 2))


@pytest.mark.parametrize("hw", [(97, 175), (720, 1280), (300, 256)])
def test_resize_crop_matches_pil_bilinear(hw):
    """Resize + crop agrees with PIL's bilinear resize to within 1 grey level."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    nh, nw = resized_size(*hw, 256)
    top, left = crop_offsets(nh, nw, 224)
    ref = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    ref = ref[top:top + 224, left:left + 224].transpose(2, 0, 1).astype(int)
    out = resize_crop(img[None])[0].numpy().astype(int)
    assert np.abs(out - ref).max() <= 1


def test_resize_crop_rejects_bad_input():
    with pytest.raises(ValueError):
        resize_crop(np.zeros((2, 256, 256, 3), np.float32))
    with pytest.raises(ValueError):
        resize_crop(np.zeros((256, 256, 3), np.uint8))
    with pytest.raises(ValueError):
        resize_crop(np.zeros((1, 256, 256, 4), np.uint8))


def test_to_unit_range():
    """p -> 2p/255 - 1: 0 -> -1, 255 -> 1, exact at the ends, 1e-6 elsewhere."""
    p = torch.arange(256, dtype=torch.uint8)
    y = to_unit_range(p)
    assert y.dtype == torch.float32
    assert y[0].item() == -1.0 and y[255].item() == 1.0
    expected = 2 * np.arange(256, dtype=np.float64) / 255 - 1
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-6)
    assert to_unit_range(p, torch.float64).dtype == torch.float64
    # the midpoint 127.5 (as float input) maps to 0
    assert abs(to_unit_range(torch.tensor([127.5])).item()) < 1e-6
