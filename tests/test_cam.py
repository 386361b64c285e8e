"""Grad-CAM figures of RefactorNet's components (refactor/cam.py, python -m refactor cam)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from refactor.cam import component_cams, plot_cams, video_cams
from refactor.model import RefactorConfig, RefactorNet
from tests.featfiles import write_features

REPO = Path(__file__).resolve().parents[1]


def linear_model(in_dim: int, seed: int = 0) -> RefactorNet:
    torch.manual_seed(seed)
    return RefactorNet(RefactorConfig(in_dim=in_dim, hidden_dim=8, num_layers=1)).eval()


def test_cams_equal_grad_cam_by_hand():
    # one linear layer: y_A = ½ ||W f + b||², dy/df = Wᵀ (W f + b); α_c = (dy/df_c) / (H W)
    model = linear_model(1024 + 6)
    g = torch.Generator().manual_seed(1)
    spatial = torch.randn(3, 1024, 7, 7, generator=g, dtype=torch.float64)
    flow = torch.randn(3, 6, generator=g, dtype=torch.float64)
    f = torch.cat([spatial.mean(dim=(2, 3)), flow], 1)
    action, cooc = component_cams(model, spatial, torch.cat([torch.zeros(3, 1024, dtype=torch.float64), flow], 1))
    conv_a, conv_c, k = model.phi_a[0], model.phi_c[0], model.config.cooc_dim
    for maps, w, b in ((action, conv_a.weight[:, :, 0].double(), conv_a.bias.double()),
                       (cooc, conv_c.weight[:k, :, 0].double(), conv_c.bias[:k].double())):   # μ: first half of φC
        grad_f = (f @ w.T + b) @ w                                         # (3, C)
        alpha = grad_f[:, :1024] / 49
        expected = torch.relu(torch.einsum("nc,nchw->nhw", alpha, spatial))
        torch.testing.assert_close(maps.double(), expected, rtol=1e-4, atol=1e-5)


def test_action_map_finds_the_action_location():
    # φA reads direction v; v is present at one location of the map only: the action map peaks there,
    # the co-occurrence map (reading direction u, spread everywhere) does not single it out
    model = linear_model(1024)
    v, u = torch.zeros(1024), torch.zeros(1024)
    v[:16], u[16:32] = 1.0, 1.0
    with torch.no_grad():
        model.phi_a[0].weight.zero_()
        model.phi_a[0].weight[0, :, 0] = v
        model.phi_a[0].bias.zero_()
        model.phi_c[0].weight.zero_()
        model.phi_c[0].weight[0, :, 0] = u
        model.phi_c[0].bias.zero_()
    spatial = 0.01 * torch.rand(1, 1024, 7, 7, generator=torch.Generator().manual_seed(0))
    spatial[0, :, 2, 5] += v
    spatial[0] += u[:, None, None]
    action, cooc = component_cams(model, spatial, torch.zeros(1, 1024))
    assert divmod(int(action[0].argmax()), 7) == (2, 5)
    assert action[0].max() > 10 * action[0].flatten().sort().values[-2]
    assert cooc[0].min() > 0.9 * cooc[0].max()                      # uniform: the context is everywhere


def spatial_file(path: Path, t: int = 5, source: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    spatial = rng.random((t, 1024, 7, 7)).astype(np.float16)
    write_features(path, {"rgb": spatial.astype(np.float32).mean(axis=(2, 3)), "flow": rng.normal(size=(t, 1024)).astype(np.float32)})
    with h5py.File(path, "a") as h5:
        h5.create_dataset("rgb_spatial", data=spatial)
        if source:
            h5.attrs["source"] = source
            h5.attrs["resize"] = "short side 256 bilinear (antialiased), centre crop 224"
    return path


def test_video_cams_and_figure(tmp_path):
    from tests.videos import make_video

    video = make_video(tmp_path / "clip.mp4", 80, width=96, height=64, fps=16)
    path = spatial_file(tmp_path / "feats" / "clip.h5", source=str(video))
    model = RefactorNet(RefactorConfig(in_dim=2048, hidden_dim=16)).eval()
    result = video_cams(model, path, count=3)
    assert len(result.snippets) == 3 and result.frames.shape == (3, 224, 224, 3) and result.frames.dtype == np.uint8
    with torch.no_grad():                                     # default snippets: largest action energy
        from extract.features import read_features
        energy = 0.5 * model(torch.from_numpy(read_features(path).features).T[None]).action[0].pow(2).sum(0)
    assert set(result.snippets.tolist()) == set(torch.argsort(energy, descending=True)[:3].tolist())
    np.testing.assert_allclose(result.times, (result.snippets * 16 + 8) / 16)
    fig = plot_cams(result, tmp_path / "cam.png")
    assert len(fig.axes) == 9 and (tmp_path / "cam.png").read_bytes()[:4] == b"\x89PNG"
    bare = video_cams(model, spatial_file(tmp_path / "feats" / "nosrc.h5"), snippets=np.array([0, 4]))
    assert bare.frames is None and bare.snippets.tolist() == [0, 4]
    write_features(tmp_path / "plain" / "x.h5", {"rgb": np.zeros((3, 1024), np.float32), "flow": np.zeros((3, 1024), np.float32)})
    with pytest.raises(ValueError, match="--spatial"):
        video_cams(model, tmp_path / "plain" / "x.h5")


def test_cam_cli(tmp_path):
    from refactor.train import PairSet, TrainConfig, save_checkpoint
    from refactor.samples import SampleConfig

    spatial_file(tmp_path / "feats" / "a.h5")
    model = RefactorNet(RefactorConfig(in_dim=2048, hidden_dim=16)).eval()
    pairs = PairSet(np.zeros((1, 2048), np.float32), np.zeros((1, 2048), np.float32), np.ones(1), np.zeros(1, int),
                    ["X"], ("rgb", "flow"), [])
    save_checkpoint(tmp_path / "ref.pt", model, pairs, SampleConfig(), TrainConfig(epochs=0), [])
    run = lambda *a: subprocess.run([sys.executable, "-m", "refactor", "cam", *a], cwd=REPO, capture_output=True, text=True)  # noqa: E731
    proc = run("--features", str(tmp_path / "feats"), "--checkpoint", str(tmp_path / "ref.pt"), "--out", str(tmp_path / "figs"),
               "--snippets", "1,3")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "figs" / "cam_a.png").is_file() and "snippets 1, 3" in proc.stdout
    proc = run("--features", str(tmp_path), "--checkpoint", str(tmp_path / "ref.pt"), "--out", str(tmp_path / "figs"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "--spatial" in proc.stderr
