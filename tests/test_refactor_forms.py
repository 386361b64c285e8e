"""RefactorNet's forms: the paper's and the gated default (residual path with a gate γ that starts at 0,
L_S keeping φC spread across classes, encoders fixed in stage 2), the extra losses by hand, and that
L_S does what it is for (φC does not collapse)."""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from detect import DetectorConfig, train_detector
from detect import TrainConfig as DetectTrainConfig
from refactor import (FORMS, RefactorConfig, RefactorLoss, RefactorNet, RefactorOutput, SampleConfig, TrainConfig,
                      build_pairs, load_refactor, pair_losses, reconstruction_loss, save_checkpoint, spread_loss,
                      train_refactor)
from refactor.__main__ import main as refactor_cli
from refactor.train import settings_of

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def output(cooc_a) -> RefactorOutput:
    c = torch.as_tensor(cooc_a, dtype=torch.float32)[..., None]
    return RefactorOutput(features=c, action=c, cooccurrence=c, mu=c, logvar=torch.zeros_like(c))


# ---------------------------------------------------------------------------------------------
# losses by hand


def test_spread_loss_hand_values():
    a = output([[1, 0], [0, 1], [1, 1]])
    c = output([[1, 0], [1, 0], [0, 1]])
    labels = torch.tensor([0, 1, 1])
    # pairs of different classes: (a0, c1) cos 1, (a0, c2) 0, (a1, c0) 0, (a2, c0) 1/√2
    assert spread_loss(a, c, labels).item() == pytest.approx((1 + 0 + 0 + 1 / math.sqrt(2)) / 4, rel=1e-6)
    # negative cosines do not count (clamped), one class only: 0
    assert spread_loss(output([[1, 0], [0, 1]]), output([[0, -1], [-1, 0]]), torch.tensor([0, 1])).item() == 0
    assert spread_loss(a, c, torch.zeros(3, dtype=torch.long)).item() == 0


def test_reconstruction_loss_hand_values():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])[..., None]               # (2, 2, 1)
    out = RefactorOutput(features=x, action=x[:, :1], cooccurrence=x[:, 1:], mu=x[:, 1:], logvar=x[:, 1:] * 0)
    identity = torch.nn.Conv1d(2, 2, 1, bias=False)
    zero = torch.nn.Conv1d(2, 2, 1, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(2)[..., None])
        zero.weight.zero_()
    assert reconstruction_loss(identity, out, x).item() == pytest.approx(0.0, abs=1e-7)
    assert reconstruction_loss(zero, out, x).item() == pytest.approx(1.0, rel=1e-6)       # ||f||² / ||f||²
    with torch.no_grad():
        identity.weight.mul_(0.5)                                            # D(φ) = f / 2: error ||f||² / 4
    assert reconstruction_loss(identity, out, x).item() == pytest.approx(0.25, rel=1e-6)


def test_refactor_loss_adds_the_weighted_extra_terms():
    torch.manual_seed(0)
    cfg = RefactorConfig(in_dim=6, hidden_dim=5, form="paper", spread_weight=0.7, recon_weight=0.3)
    model = RefactorNet(cfg).eval()
    a, c, alpha, labels = torch.randn(8, 6), torch.randn(8, 6), torch.rand(8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    parts = RefactorLoss(model)(a, c, alpha, labels)
    oa, oc = model(a[..., None]), model(c[..., None])
    l_a, l_c = pair_losses(oa, oc)
    spread = spread_loss(oa, oc, labels)
    rec = 0.5 * (reconstruction_loss(model.decoder, oa, a[..., None])
                 + reconstruction_loss(model.decoder, oc, c[..., None]))
    expected = (alpha * (l_a + l_c)).mean() + cfg.beta * parts["kl"] + 0.7 * spread + 0.3 * rec
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["spread"].item() == pytest.approx(spread.item(), rel=1e-6) and parts["spread"].item() > 0
    assert parts["reconstruction"].item() == pytest.approx(rec.item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs the pairs' labels"):
        RefactorLoss(model)(a, c, alpha)


# ---------------------------------------------------------------------------------------------
# forms and the residual path


def test_forms_are_presets_that_fields_override():
    gated, paper = RefactorConfig(in_dim=8), RefactorConfig(in_dim=8, form="paper")
    assert gated.form == "gated"
    for name, value in FORMS["gated"].items():
        assert getattr(gated, name) == value
    for name, value in FORMS["paper"].items():
        assert getattr(paper, name) == value
    assert (gated.residual, gated.spread_weight, gated.stage2_encoders) == (True, 1.0, False)
    assert (paper.residual, paper.spread_weight, paper.stage2_encoders) == (False, 0.0, True)
    assert RefactorConfig(in_dim=8, spread_weight=0.25).spread_weight == 0.25            # a field wins
    assert RefactorConfig(in_dim=8, form="paper", residual=True).residual is True
    with pytest.raises(ValueError, match="form must be one of"):
        RefactorConfig(in_dim=8, form="nope")
    with pytest.raises(ValueError, match="needs out_dim == in_dim, got 4 != 8; for the action-only ablation"):
        RefactorConfig(in_dim=8, action_only=True)
    assert RefactorConfig(in_dim=8, action_only=True, form="paper").out_dim == 4
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        RefactorConfig(in_dim=8, spread_weight=-1)
    # a stored config without form (written before forms) is the paper's
    old = {k: v for k, v in asdict(paper).items() if k not in ("form", *FORMS["paper"])}
    assert RefactorConfig.from_dict(old) == paper
    assert RefactorConfig.from_dict(asdict(gated)) == gated


def test_residual_path_starts_at_the_raw_features():
    torch.manual_seed(0)
    model = RefactorNet(RefactorConfig(in_dim=8, hidden_dim=6)).eval()
    x = torch.randn(2, 8, 5)
    with torch.no_grad():
        out = model(x)
        assert model.gamma.shape == (8, 1) and torch.equal(out.features, x)        # γ = 0: f' = f exactly
        model.gamma.copy_(torch.linspace(-1, 2, 8)[:, None])
        out = model(x)
    comp = torch.cat([out.action, out.cooccurrence], 1)
    torch.testing.assert_close(out.features, x + torch.linspace(-1, 2, 8)[None, :, None] * comp)


def test_keep_input_puts_the_raw_feature_beside_the_components():
    torch.manual_seed(0)
    cfg = RefactorConfig(in_dim=8, hidden_dim=6, form="paper", keep_input=True)
    assert cfg.out_dim == 16 and RefactorConfig(in_dim=8, form="paper", keep_input=True, action_only=True).out_dim == 12
    model = RefactorNet(cfg).eval()
    x = torch.randn(2, 8, 5)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out.features, torch.cat([x, out.action, out.mu], 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="exclude each other"):
        RefactorConfig(in_dim=8, keep_input=True)                  # the default form is residual


def test_gated_stage1_trains_the_encoders_not_the_gate():
    torch.manual_seed(0)
    model = RefactorNet(RefactorConfig(in_dim=8, hidden_dim=8)).train()
    a = torch.randn(6, 8)
    parts = RefactorLoss(model)(a, a + 0.05 * torch.randn(6, 8), torch.ones(6), torch.tensor([0, 1, 0, 1, 2, 2]))
    parts["loss"].backward()
    assert model.gamma.grad is None                            # γ is not in L_R: it only learns in stage 2
    for module in (model.phi_a, model.phi_c):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def _with_random_taps(model: RefactorNet, seed: int = 1) -> RefactorNet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tap in [*model.phi_a_taps, *model.phi_c_taps]:
            tap.weight.copy_(0.3 * torch.randn(tap.weight.shape, generator=g))    # the centre is not used
    return model


def _hand_encoder(point: torch.nn.Sequential, taps, x: torch.Tensor) -> torch.Tensor:
    """The encoder written out for one video (N = 1): per layer, the per-snippet affine map plus Σ_j W_j
    x[t + j − k // 2] over the side taps j ≠ k // 2 (zero outside the video), ReLU between layers."""
    convs = [m for m in point if isinstance(m, torch.nn.Conv1d)]
    h = x[0]                                                                  # (C, T)
    for i, (conv, tap) in enumerate(zip(convs, taps)):
        k = tap.weight.shape[-1]
        out = conv.weight[:, :, 0] @ h + conv.bias[:, None]
        padded = torch.nn.functional.pad(h, (k // 2, k // 2))
        for j in range(k):
            if j != k // 2:
                out = out + tap.weight[:, :, j] @ padded[:, j:j + h.shape[1]]
        h = torch.relu(out) if i < len(convs) - 1 else out
    return h[None]


def test_temporal_taps_start_at_zero_then_see_the_neighbours():
    torch.manual_seed(0)
    point = RefactorNet(RefactorConfig(in_dim=8, hidden_dim=6)).eval()
    temporal = RefactorNet(RefactorConfig(in_dim=8, hidden_dim=6, temporal_kernel=3)).eval()
    missing = temporal.load_state_dict(point.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [f"phi_{e}_taps.{i}.weight" for e in "ac" for i in range(2)]
    with torch.no_grad():
        temporal.gamma.fill_(1.0)
        point.gamma.fill_(1.0)
    x = torch.randn(1, 8, 7)
    with torch.no_grad():
        torch.testing.assert_close(temporal(x).features, point(x).features, rtol=0, atol=0)   # taps at 0
        _with_random_taps(temporal)
        out = temporal(x)
        torch.testing.assert_close(out.action, _hand_encoder(temporal.phi_a, temporal.phi_a_taps, x))
        mu, logvar = _hand_encoder(temporal.phi_c, temporal.phi_c_taps, x).chunk(2, dim=1)
        torch.testing.assert_close(out.mu, mu)
        torch.testing.assert_close(out.logvar, logvar)
        # two layers of kernel 3: snippet 3 sees snippets 1..5 and nothing further
        y = x.clone()
        y[:, :, 6] += 1.0
        changed = (temporal(y).features - out.features).abs().amax(1)[0] > 0
        assert changed.tolist() == [False, False, False, False, True, True, True]
    for bad in (0, 2, 4):
        with pytest.raises(ValueError, match="temporal_kernel"):
            RefactorConfig(in_dim=8, temporal_kernel=bad)


def test_temporal_taps_never_see_padding():
    """A padded window (garbage past its length) gives its valid snippets the outputs of the video alone."""
    torch.manual_seed(0)
    model = _with_random_taps(RefactorNet(RefactorConfig(in_dim=8, hidden_dim=6, temporal_kernel=3)).eval())
    video = torch.randn(1, 8, 5)
    window = torch.cat([video, 100 * torch.randn(1, 8, 4)], dim=2)
    mask = torch.cat([torch.ones(1, 1, 5), torch.zeros(1, 1, 4)], dim=2)
    with torch.no_grad():
        alone, padded = model(video), model(window, mask)
    for name in ("action", "mu", "logvar"):
        torch.testing.assert_close(getattr(padded, name)[..., :5], getattr(alone, name))


def test_temporal_taps_learn_only_in_stage2(small_world, tmp_path):
    """Stage 1 (single snippets) leaves the taps at 0; stage 2 of the gated form trains them and γ while the
    per-snippet encoders keep their stage-1 weights."""
    feats, ann = small_world
    samples = SampleConfig(threshold=None, top_k=3)
    pairs = build_pairs(feats, ann, "validation", samples)
    cfg = RefactorConfig(in_dim=16, hidden_dim=8, temporal_kernel=3)
    ref, hist = train_refactor(pairs, cfg, TrainConfig(epochs=2), progress=False)
    taps = [k for k in ref.state_dict() if "_taps." in k]
    assert len(taps) == 4 and all(torch.count_nonzero(ref.state_dict()[k]) == 0 for k in taps)
    ckpt = save_checkpoint(tmp_path / "r.pt", ref, pairs, samples, TrainConfig(epochs=2), hist)
    model, meta = train_detector(feats, ann, DetectorConfig(base_dim=8, boundary_hidden=8, head_hidden=8,
                                                            max_duration=8),
                                 DetectTrainConfig(epochs=2, window=32, batch_size=2), refactor_checkpoint=ckpt,
                                 front="refactor", progress=False)
    assert model.config.refactor.temporal_kernel == 3
    before, after = ref.state_dict(), model.front.state_dict()
    assert all(torch.count_nonzero(after[k]) > 0 and torch.count_nonzero(after[k][:, :, 1]) == 0 for k in taps)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("phi_a.", "phi_c.")))
    # the detector checkpoint rebuilds the taps from its stored configuration alone
    from detect import load_detector, save_detector
    loaded, _ = load_detector(save_detector(tmp_path / "d.pt", model, meta))
    x = torch.randn(1, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded.front(x).features, model.eval().front(x).features, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# training: stage 2 of each form, checkpoints, settings


def _detection_data(root: Path):
    from benchmarks.feature_worlds import FeatureWorld, write_world

    world = FeatureWorld(dim=16, classes=2, train_videos=4, test_videos=2, length=(40, 60), context_alone=0.5)
    write_world(world, 3, root)
    return root, root / "annotations.json"


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    return _detection_data(tmp_path_factory.mktemp("forms_world"))


@pytest.mark.parametrize("form", ["gated", "paper"])
def test_stage2_of_each_form(small_world, tmp_path, form):
    """Gated: the encoders keep their stage-1 weights, γ learns, no L_R. Paper: everything learns with L_R."""
    feats, ann = small_world
    pairs = build_pairs(feats, ann, "validation", SampleConfig(threshold=None, top_k=3))
    ref, hist = train_refactor(pairs, RefactorConfig(in_dim=16, hidden_dim=8, form=form), TrainConfig(epochs=2),
                               progress=False)
    ckpt = save_checkpoint(tmp_path / "r.pt", ref, pairs, SampleConfig(threshold=None, top_k=3), TrainConfig(epochs=2),
                           hist)
    model, meta = train_detector(feats, ann, DetectorConfig(base_dim=8, boundary_hidden=8, head_hidden=8,
                                                            max_duration=8),
                                 DetectTrainConfig(epochs=2, window=32, batch_size=2), refactor_checkpoint=ckpt,
                                 front="refactor", progress=False)
    assert model.config.refactor.form == form
    before = dict(ref.state_dict())
    after = model.front.state_dict()
    encoders_same = all(torch.equal(before[k], after[k]) for k in before if k.startswith(("phi_a", "phi_c")))
    if form == "gated":
        assert encoders_same and "refactor" not in meta["history"][-1]
        assert after["gamma"].abs().sum() > 0 and torch.equal(before["gamma"], torch.zeros_like(before["gamma"]))
    else:
        assert not encoders_same and meta["history"][-1]["refactor"] > 0 and "gamma" not in after


def test_checkpoint_and_settings_of_each_form(small_world, tmp_path, capsys):
    feats, ann = small_world
    for form in ("gated", "paper"):
        out = tmp_path / f"{form}.pt"
        assert refactor_cli(["train", "--features", str(feats), "--annotations", str(ann), "--out", str(out),
                             "--epochs", "1", "--hidden-dim", "8", "--form", form, "--threshold", "-1",
                             "--top-k", "3"]) == 0
        model, ckpt = load_refactor(out)
        assert model.config.form == form and (model.gamma is not None) == (form == "gated")
        stored = ckpt["settings"]["model"]
        assert stored["form"] == form
        assert all(stored[k] is None for k in FORMS[form])            # the form's own values are not repeated
    # the settings a checkpoint stores rebuild the same configuration
    cfg = RefactorConfig(in_dim=16, hidden_dim=8, spread_weight=0.5)
    settings = settings_of(cfg, SampleConfig(), TrainConfig())["model"]
    assert settings["spread_weight"] == 0.5 and settings["residual"] is None
    assert RefactorConfig(in_dim=16, **settings) == cfg
    capsys.readouterr()
    # the action-only ablation is of the paper's form: with the default form, one line that says so
    assert refactor_cli(["train", "--features", str(feats), "--annotations", str(ann), "--out",
                         str(tmp_path / "a.pt"), "--action-only", "--epochs", "1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use --form paper" in err[0] and not (tmp_path / "a.pt").exists()
    assert refactor_cli(["train", "--features", str(feats), "--annotations", str(ann), "--out",
                         str(tmp_path / "x.pt"), "--form", "paper", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "form: paper" in printed and "residual: null" in printed


def test_spread_keeps_phi_c_apart_where_the_paper_collapses(tmp_path):
    """Stage 1 on a world of the study's family: with the paper's losses φC maps action and background
    snippets to nearly one direction; with L_S the action–context cosine stays well above the
    action–background one (the issue's criterion for 'no collapse')."""
    from benchmarks.feature_worlds import ACTION, BACKGROUND, CONTEXT, FeatureWorld, write_world
    from benchmarks.synthetic import mean_cosine

    world = FeatureWorld(dim=128, classes=8, train_videos=32, test_videos=4)
    data = write_world(world, 11, tmp_path)
    pairs = build_pairs(tmp_path, tmp_path / "annotations.json", "validation")
    kinds = [data["kinds"][v] for v in data["test"]]
    gap = {}
    for form in ("paper", "gated"):
        model, _ = train_refactor(pairs, RefactorConfig(in_dim=128, hidden_dim=128, form=form),
                                  TrainConfig(epochs=30, batch_size=32, seed=0), progress=False)
        with torch.no_grad():
            mus = [model(torch.from_numpy(np.ascontiguousarray(f.T))[None]).mu[0].T.numpy()
                   for f in data["test"].values()]
        ctx, bg = mean_cosine(mus, kinds, ACTION, CONTEXT), mean_cosine(mus, kinds, ACTION, BACKGROUND)
        gap[form] = (ctx, bg)
    assert gap["paper"][1] > 0.9 and gap["paper"][0] - gap["paper"][1] < 0.05   # collapse: one direction
    assert gap["gated"][0] > 0.8 and gap["gated"][0] - gap["gated"][1] > 0.5    # context close, background far
