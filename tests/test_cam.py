"""Grad-CAM figures of RefactorNet's components (refactor/cam.py, python -m refactor cam)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from common.annotations import write_annotations
from common.checkpoint import save_checkpoint as write_checkpoint
from extract.features import read_features
from refactor.cam import (
    CamResult,
    component_cams,
    draw_cams,
    grey_reference,
    plot_cams,
    sample_rows,
    upsample_map,
    video_cams,
)
from refactor.model import RefactorConfig, RefactorNet
from refactor.samples import SampleConfig, collect_samples
from refactor.train import PairSet, TrainConfig, save_checkpoint
from tests.featfiles import write_features
from tests.videos import make_video

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
    write_features(path, {"rgb": spatial.astype(np.float32).mean(axis=(2, 3)),
                          "flow": rng.normal(size=(t, 1024)).astype(np.float32)})
    with h5py.File(path, "a") as h5:
        h5.create_dataset("rgb_spatial", data=spatial)
        if source:
            h5.attrs["source"] = source
            h5.attrs["resize"] = "short side 256 bilinear (antialiased), centre crop 224"
    return path


def test_video_cams_and_figure(tmp_path):
    video = make_video(tmp_path / "clip.mp4", 80, width=96, height=64, fps=16)
    path = spatial_file(tmp_path / "feats" / "clip.h5", source=str(video))
    model = RefactorNet(RefactorConfig(in_dim=2048, hidden_dim=16)).eval()
    result = video_cams(model, path, count=3)
    assert len(result.snippets) == 3 and result.frames.shape == (3, 224, 224, 3) and result.frames.dtype == np.uint8
    with torch.no_grad():                                     # default snippets: largest action energy
        energy = 0.5 * model(torch.from_numpy(read_features(path).features).T[None]).action[0].pow(2).sum(0)
    assert set(result.snippets.tolist()) == set(torch.argsort(energy, descending=True)[:3].tolist())
    np.testing.assert_allclose(result.times, (result.snippets * 16 + 8) / 16)
    fig = plot_cams(result, tmp_path / "cam.png")
    assert len(fig.axes) == 9 and (tmp_path / "cam.png").read_bytes()[:4] == b"\x89PNG"
    bare = video_cams(model, spatial_file(tmp_path / "feats" / "nosrc.h5"), snippets=np.array([0, 4]))
    assert bare.frames is None and bare.snippets.tolist() == [0, 4]
    write_features(tmp_path / "plain" / "x.h5",
                   {"rgb": np.zeros((3, 1024), np.float32), "flow": np.zeros((3, 1024), np.float32)})
    with pytest.raises(ValueError, match="--spatial"):
        video_cams(model, tmp_path / "plain" / "x.h5")


def stage1_checkpoint(path: Path) -> tuple[RefactorNet, Path]:
    model = RefactorNet(RefactorConfig(in_dim=2048, hidden_dim=16)).eval()
    pairs = PairSet(np.zeros((1, 2048), np.float32), np.zeros((1, 2048), np.float32), np.ones(1), np.zeros(1, int),
                    ["X"], ("rgb", "flow"), [])
    return model, save_checkpoint(path, model, pairs, SampleConfig(), TrainConfig(epochs=0), [])


def run_cam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refactor", "cam", *args], cwd=REPO, capture_output=True, text=True)


def test_cam_cli(tmp_path):
    spatial_file(tmp_path / "feats" / "a.h5")
    _, ckpt = stage1_checkpoint(tmp_path / "ref.pt")
    proc = run_cam("--features", str(tmp_path / "feats"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "figs"),
                   "--snippets", "1,3")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "figs" / "cam_a.png").is_file() and "snippets 1, 3" in proc.stdout
    proc = run_cam("--features", str(tmp_path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "figs"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "--spatial" in proc.stderr


def test_cam_cli_sends_detector_checkpoints_to_detect_cam(tmp_path):
    spatial_file(tmp_path / "feats" / "a.h5")
    write_checkpoint(tmp_path / "det.pt", "detector", 1, {"state_dict": {}})
    proc = run_cam("--features", str(tmp_path / "feats"), "--checkpoint", str(tmp_path / "det.pt"),
                   "--out", str(tmp_path / "figs"))
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
    assert "python -m detect cam" in proc.stderr and "same arguments" in proc.stderr
    assert not (tmp_path / "figs").exists()


def test_draw_cams(tmp_path):
    spatial_file(tmp_path / "feats" / "a.h5")
    spatial_file(tmp_path / "feats" / "b.h5", t=3)
    write_features(tmp_path / "feats" / "plain.h5", {"rgb": np.zeros((3, 1024)), "flow": np.zeros((3, 1024))})
    model, _ = stage1_checkpoint(tmp_path / "ref.pt")
    drawn = draw_cams(model, ("rgb", "flow"), tmp_path / "feats", tmp_path / "figs", count=2)
    assert [d[0] for d in drawn] == ["a", "b"]                     # files with rgb_spatial maps only
    for video_id, snippets, path, found in drawn:
        assert len(snippets) == 2 and all(isinstance(i, int) for i in snippets)
        assert path == tmp_path / "figs" / f"cam_{video_id}.png" and path.read_bytes()[:4] == b"\x89PNG"
        assert found is False                                       # the synthetic files' source does not exist
    drawn = draw_cams(model, ("rgb", "flow"), tmp_path / "feats", tmp_path / "one", videos=["b"],
                      snippets=np.array([0, 2]))
    assert [(d[0], d[1]) for d in drawn] == [("b", [0, 2])]
    with pytest.raises(ValueError, match="exactly one video"):
        draw_cams(model, ("rgb", "flow"), tmp_path / "feats", tmp_path / "x", source=tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="no feature file in .* has rgb_spatial maps"):
        draw_cams(model, ("rgb", "flow"), tmp_path / "figs", tmp_path / "x")


# ---- default rows with ground truth: the action samples and coupling samples stage 1 collects ----

def sample_world(folder: Path) -> tuple[Path, dict]:
    """One video of 22 one-second snippets (centres i + 0.5 s) with hand-made features whose cosine
    similarities are known: e0 is the Jump direction, e1 the Run direction, every other snippet has a
    direction of its own (orthogonal to everything: similarity 0, never coupled)."""
    t, dim = 22, 1024
    feats = np.zeros((t, dim), np.float32)
    for k in range(t):
        feats[k, 2 + k] = 1.0                           # each snippet's own direction
    for k in (3, 4, 5):                                  # Jump [3.2, 5.9]: snippets 3, 4, 5 (middle 4.55 -> 4)
        feats[k] = 0.0
        feats[k, 0] = 1.0
    feats[12] = 0.0
    feats[12, 1] = 1.0                                   # Run [12.0, 12.3]: no centre inside, nearest 12
    feats[9, 2 + 9] = 0.0
    feats[9, 0] = 1.0                                    # coupling of Jump, α = 1
    feats[15, 0] = 1.0                                   # e0 + e17: α = 1/√2
    feats[7, 0], feats[7, 2 + 7] = 1.0, 2.0              # α = 1/√5 < 0.5: never coupled
    feats[17, 1], feats[17, 2 + 17] = 1.0, 0.5           # coupling of Run, α = 1/√1.25 = 0.894
    feats[18, 1] = 1.0                                   # α = 1/√2
    feats[19, 1], feats[19, 2 + 19] = 1.0, 1.5           # α = 1/√3.25 = 0.555: coupled, third best
    spatial = np.repeat(np.repeat(feats[:, :, None, None], 7, axis=2), 7, axis=3)
    write_features(folder / "vid.h5", {"rgb": feats}, spatial={"rgb": spatial})
    write_features(folder / "empty.h5", {"rgb": feats}, spatial={"rgb": spatial})
    write_features(folder / "other.h5", {"rgb": feats}, spatial={"rgb": spatial})
    db = {"vid": {"subset": "validation", "duration": 22.0,
                  "annotations": [{"segment": [12.0, 12.3], "label": "Run"}, {"segment": [3.2, 5.9], "label": "Jump"}]},
          "empty": {"subset": "Validation", "duration": 22.0, "annotations": []},
          "other": {"subset": "test", "duration": 22.0, "annotations": [{"segment": [3.2, 5.9], "label": "Jump"}]}}
    return folder, db


EXPECTED_ROWS = [4, 9, 15, 12, 17, 18]
EXPECTED_LABELS = ["action: Jump t=4.50 s", "coupling of Jump α=1.00 t=9.50 s", "coupling of Jump α=0.71 t=15.50 s",
                   "action: Run t=12.50 s", "coupling of Run α=0.89 t=17.50 s", "coupling of Run α=0.71 t=18.50 s"]


def test_sample_rows_are_the_action_and_coupling_samples_of_stage_1(tmp_path):
    folder, db = sample_world(tmp_path / "feats")
    ff = read_features(folder / "vid.h5")
    instances = [(a["segment"][0], a["segment"][1], a["label"]) for a in db["vid"]["annotations"]]
    rows, labels = sample_rows(ff.features, ff.times, instances)
    assert rows.tolist() == EXPECTED_ROWS and labels == EXPECTED_LABELS
    rows, labels = sample_rows(ff.features, ff.times, instances, count=1)            # first action sample in time
    assert rows.tolist() == [4, 9, 15] and labels == EXPECTED_LABELS[:3]
    rows, _ = sample_rows(ff.features, ff.times, instances, SampleConfig(threshold=0.5, top_k=1))
    assert rows.tolist() == [4, 9, 12, 17]                                            # stage 1's rule decides
    rows, _ = sample_rows(ff.features, ff.times, instances, SampleConfig(threshold=0.8, top_k=None))
    assert rows.tolist() == [4, 9, 12, 17]
    # the coupling rows are exactly among stage 1's pairs, the action rows among its pooled snippets
    vs = collect_samples("vid", ff.features, ff.times, np.array([i[:2] for i in instances]), np.array([0, 1]))
    assert {9, 15, 17, 18} <= set(vs.pair_snippet.tolist()) and 19 in vs.pair_snippet.tolist()
    assert vs.action_snippets[1].tolist() == [3, 4, 5] and vs.action_snippets[0].tolist() == [12]


def test_draw_cams_with_annotations(tmp_path):
    folder, db = sample_world(tmp_path / "feats")
    model = linear_model(1024)
    drawn = draw_cams(model, ("rgb",), folder, tmp_path / "figs", annotations={"database": db}, subset="validation")
    assert [d[0] for d in drawn] == ["empty", "vid"]                  # annotated in the subset only ("Validation")
    assert drawn[1][1] == EXPECTED_ROWS
    result = video_cams(model, folder / "vid.h5", instances=[(12.0, 12.3, "Run"), (3.2, 5.9, "Jump")])
    assert result.labels == EXPECTED_LABELS
    fig = plot_cams(result, tmp_path / "cam.png")
    assert [fig.axes[3 * r].get_title() for r in range(6)] == EXPECTED_LABELS
    empty = video_cams(model, folder / "empty.h5", count=2, instances=[])        # annotated, no instance: energy
    assert len(empty.snippets) == 2 and all(label.startswith("largest action energy") for label in empty.labels)
    drawn = draw_cams(model, ("rgb",), folder, tmp_path / "figs", annotations={"database": db})   # every subset
    assert [d[0] for d in drawn] == ["empty", "other", "vid"]
    drawn = draw_cams(model, ("rgb",), folder, tmp_path / "figs", videos=["vid"], annotations={"database": db},
                      snippets=np.array([0, 1]))                                   # --snippets overrides
    assert drawn[0][1] == [0, 1]
    drawn = draw_cams(model, ("rgb",), folder, tmp_path / "figs", videos=["vid"], annotations={"database": db},
                      samples=SampleConfig(top_k=1), count=1)
    assert drawn[0][1] == [4, 9]
    with pytest.raises(ValueError, match="no video in subset 'nothing'"):
        draw_cams(model, ("rgb",), folder, tmp_path / "figs", annotations={"database": db}, subset="nothing")
    ghost = {"ghost": {"subset": "test", "duration": 3.0, "annotations": []}}
    with pytest.raises(ValueError, match="is annotated in subset 'test'"):
        draw_cams(model, ("rgb",), folder, tmp_path / "figs", annotations={"database": ghost}, subset="test")


def test_cam_cli_with_annotations_uses_the_checkpoints_sample_rule(tmp_path):
    folder, db = sample_world(tmp_path / "feats")
    gt = write_annotations(tmp_path / "gt.json", db)
    model = linear_model(1024)
    pairs = PairSet(np.zeros((1, 1024), np.float32), np.zeros((1, 1024), np.float32), np.ones(1), np.zeros(1, int),
                    ["Jump", "Run"], ("rgb",), [])
    ckpt = save_checkpoint(tmp_path / "ref.pt", model, pairs, SampleConfig(threshold=0.5, top_k=1),
                           TrainConfig(epochs=0), [])
    proc = run_cam("--features", str(folder), "--checkpoint", str(ckpt), "--out", str(tmp_path / "figs"),
                   "--annotations", str(gt), "--subset", "validation", "--videos", "vid")
    assert proc.returncode == 0, proc.stderr
    assert "vid: snippets 4, 9, 12, 17 ->" in proc.stdout
    proc = run_cam("--features", str(folder), "--checkpoint", str(ckpt), "--out", str(tmp_path / "figs"),
                   "--annotations", str(gt), "--videos", "vid", "--snippets", "2,3")
    assert proc.returncode == 0 and "vid: snippets 2, 3 ->" in proc.stdout, proc.stderr


# ---- the drawing: grid cell (i, j) over its own pixels ----

@pytest.mark.parametrize("size", [224, 112])
def test_upsampled_cell_lies_over_its_pixels(size):
    step = size // 7
    for i in range(7):
        for j in range(7):
            m = np.zeros((7, 7), np.float32)
            m[i, j] = 1.0
            up = upsample_map(m, size)
            y, x = divmod(int(up.argmax()), size)
            assert i * step <= y < (i + 1) * step and j * step <= x < (j + 1) * step
            inside = up[i * step:(i + 1) * step, j * step:(j + 1) * step].sum()
            assert inside > 0.5 * up.sum()
            if 0 < i < 6 and 0 < j < 6:                  # interior: the mass is centred on the cell's centre
                ys, xs = np.mgrid[:size, :size]
                assert abs((up * ys).sum() / up.sum() - (i + 0.5) * step + 0.5) < 1e-3
                assert abs((up * xs).sum() / up.sum() - (j + 0.5) * step + 0.5) < 1e-3


def test_figure_draws_a_hot_cell_over_that_cells_pixels(tmp_path):
    action = np.zeros((1, 7, 7), np.float32)
    action[0, 1, 5] = 1.0                                  # row 1 (top), column 5 (right)
    cooc = np.zeros((1, 7, 7), np.float32)
    cooc[0, 6, 0] = 2.0                                    # bottom-left corner
    frame = np.zeros((1, 224, 224, 3), np.uint8)
    result = CamResult("v", np.array([0]), np.array([0.5]), action, cooc, frame)
    fig = plot_cams(result, tmp_path / "cam.png")
    for ax, (i, j) in ((fig.axes[1], (1, 5)), (fig.axes[2], (6, 0))):
        base, overlay = ax.images
        assert base.get_extent() == overlay.get_extent() == [-0.5, 223.5, 223.5, -0.5]
        assert ax.get_ylim()[0] > ax.get_ylim()[1]                 # y grows downwards: row 0 at the top
        data = np.asarray(overlay.get_array())
        y, x = divmod(int(data.argmax()), 224)
        assert 32 * i <= y < 32 * (i + 1) and 32 * j <= x < 32 * (j + 1)


# ---- the corner hot spots are I3D's: a neutral reference removes them, beside the raw maps ----

def test_deepminds_mixed5c_is_brightest_in_the_right_hand_column():
    # DeepMind's own model (the JAX reference run on a real clip, tests/data) has the border pattern
    m = np.load(REPO / "tests" / "data" / "jax_i3d_cricket.npz")["mixed5c_16_tmean"].sum(-1)      # (7, 7)
    assert divmod(int(m.argmax()), 7) == (1, 6) and m[1, 6] > 8 * m.mean()
    assert m[:, 6].sum() > 10 * m[:, 0].sum()


def test_grey_reference_is_the_models_border_pattern(rgb_model):
    ref = grey_reference(224, model=rgb_model)
    assert tuple(ref.shape) == (1024, 7, 7)
    energy = ref.sum(dim=0)
    # a uniform input has no left or right: every difference is the network's (TF SAME padding)
    assert energy[:, 6].sum() > 0.7 * energy.sum() and energy[:, 0].sum() < 0.03 * energy.sum()
    assert divmod(int(energy.argmax()), 7) in {(0, 6), (1, 6)}


def test_cams_against_a_reference():
    model = linear_model(1024 + 6)
    g = torch.Generator().manual_seed(3)
    spatial = torch.rand(2, 1024, 7, 7, generator=g)
    reference = torch.rand(1024, 7, 7, generator=g)
    flow = torch.randn(2, 6, generator=g)
    feats = torch.cat([torch.zeros(2, 1024), flow], 1)
    raw = component_cams(model, spatial, feats)
    against = component_cams(model, spatial, feats, reference=reference)
    f = torch.cat([spatial.mean(dim=(2, 3)), flow], 1)
    conv_a = model.phi_a[0]
    w, b = conv_a.weight[:, :, 0], conv_a.bias
    alpha = ((f @ w.T + b) @ w)[:, :1024] / 49                          # the same α as the raw map
    expected = torch.relu(torch.einsum("nc,nchw->nhw", alpha, spatial - reference))
    torch.testing.assert_close(against[0], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(raw[0], against[0])
    with pytest.raises(ValueError, match="reference map"):
        component_cams(model, spatial, feats, reference=reference[:, :5])


def test_figure_with_reference_keeps_the_raw_maps(tmp_path):
    spatial_file(tmp_path / "feats" / "a.h5")
    model, _ = stage1_checkpoint(tmp_path / "ref.pt")
    reference = torch.rand(1024, 7, 7, generator=torch.Generator().manual_seed(0))
    result = video_cams(model, tmp_path / "feats" / "a.h5", snippets=np.array([1, 2]), reference=reference)
    assert result.action_ref.shape == result.action.shape == (2, 7, 7)
    plain = video_cams(model, tmp_path / "feats" / "a.h5", snippets=np.array([1, 2]))
    np.testing.assert_array_equal(plain.action, result.action)
    fig = plot_cams(result, tmp_path / "cam.png")
    assert len(fig.axes) == 10
    assert [ax.get_title() for ax in fig.axes[1:5]] == ["action", "co-occurrence", "action − grey ref.",
                                                        "co-occ. − grey ref."]
    drawn = draw_cams(model, ("rgb", "flow"), tmp_path / "feats", tmp_path / "figs", snippets=np.array([0]),
                      reference=reference)
    assert drawn[0][2].is_file()
    with pytest.raises(ValueError, match="reference must be 'grey'"):
        draw_cams(model, ("rgb", "flow"), tmp_path / "feats", tmp_path / "figs", reference="black")
