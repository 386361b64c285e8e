"""CUDA paths (run only where CUDA exists): autocast features against fp32, and the pipeline on GPU."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from extract.pipeline import RGBStream, autocast_dtype
from tests.test_i3d import load_gif

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def snippets(shared_data) -> torch.Tensor:
    """Four real 16-frame snippets (the UCF101 cricket clip) as uint8 (4, 16, 3, 224, 224)."""
    x = load_gif(shared_data / "kinetics-i3d-sample" / "v_CricketShot_g04_c01_rgb.gif")[0]   # (3, T, 224, 224)
    pixels = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return torch.stack([pixels[:, 16 * i:16 * (i + 1)].permute(1, 0, 2, 3) for i in range(4)])


def test_autocast_feature_difference_against_fp32(rgb_model, snippets):
    rgb_model = copy.deepcopy(rgb_model)   # the session's model stays on the CPU
    device = torch.device("cuda")
    torch.backends.cudnn.allow_tf32 = False      # a true fp32 reference
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = RGBStream(rgb_model, device, None)(snippets, 16)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    cpu = RGBStream(copy.deepcopy(rgb_model).to("cpu"), torch.device("cpu"), None)(snippets, 16)
    report = {"fp32_cuda_vs_cpu_max_abs": (ref.features.cpu() - cpu.features).abs().max().item()}
    for name in ("bf16", "fp16"):
        out = RGBStream(rgb_model, device, autocast_dtype(name, device))(snippets, 16)
        diff = (out.features - ref.features).abs()
        cos = torch.nn.functional.cosine_similarity(out.features, ref.features, dim=1)
        report[name] = {"max_abs": diff.max().item(),
                        "max_rel_to_feature_max": (diff.max() / ref.features.abs().max()).item(),
                        "min_cosine": cos.min().item(),
                        "top1_same": bool((out.logits.argmax(1) == ref.logits.argmax(1)).all())}
        assert report[name]["min_cosine"] > 0.999
        assert report[name]["top1_same"]
    assert report["fp32_cuda_vs_cpu_max_abs"] < 1e-3
    assert report["fp16"]["max_abs"] < 0.02      # measured on an H200: 0.0033 (bf16: 0.023)
    print("\nautocast vs fp32 features:", json.dumps(report, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "autocast_report.json").write_text(json.dumps(report, indent=1))


def test_overflow_in_reduced_precision_falls_back_to_fp32(random_i3d):
    """A batch whose fp16 output is not finite is recomputed in fp32."""
    model = random_i3d()
    with torch.no_grad():
        model.Mixed_5c.branch0.bn.bias.fill_(1e5)      # > fp16 max (65504) after the last block
    stream = RGBStream(model, torch.device("cuda"), torch.float16)
    frames = torch.randint(0, 256, (2, 16, 3, 64, 64), dtype=torch.uint8)
    out = stream(frames, 16)
    assert torch.isfinite(out.features).all()
    ref = RGBStream(model, torch.device("cuda"), None)(frames, 16)
    torch.testing.assert_close(out.features, ref.features)
