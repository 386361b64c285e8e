"""RefactorNet stage 1 (refactor/): losses on hand-computed values, sample collection on a hand-made
video, shapes and gradients, and train / checkpoint / apply / CLI end to end on synthetic feature files.

Synthetic feature files use window = stride = 16 frames at 16 fps, so snippet i is centred at
i + 0.5 seconds and a video of T snippets has num_frames = 16 T. Feature sizes are small (8 per
stream) so everything runs in seconds; nothing in refactor/ depends on the 1024-d of real I3D.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from extract.features import FeatureFileError, read_features
from refactor import (FORMS, NoCouplingSamples, RefactorConfig, RefactorError, RefactorLoss, RefactorNet,
                      RefactorOutput, SampleConfig, SampleError, TrainConfig, apply_refactor, build_pairs,
                      collect_samples, kl_divergence, load_refactor, pair_losses, save_checkpoint, train_refactor)
from refactor.__main__ import main as cli_main
from tests.featfiles import split_streams, write_features

REPO = Path(__file__).resolve().parents[1]
SQRT_HALF = 1 / math.sqrt(2)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def make_dataset(root: Path, classes=("Jump", "Run", "Swim"), videos_per_class: int = 2, num_snippets: int = 16,
                 streams: tuple[str, ...] = ("rgb", "flow"), dim_per_stream: int = 8, seed: int = 0,
                 subset: str = "validation") -> tuple[Path, Path]:
    """Feature folder + annotation JSON: class k has a context vector (in and around its actions) and an
    action vector (inside its actions only), plus noise. Returns (feature_dir, annotations)."""
    rng = np.random.default_rng(seed)
    dim = dim_per_stream * len(streams)
    context = rng.normal(size=(len(classes), dim))
    action = rng.normal(size=(len(classes), dim))
    db = {}
    for k, name in enumerate(classes):
        for j in range(videos_per_class):
            vid = f"{name.lower()}_{j}"
            feats = rng.normal(scale=0.3, size=(num_snippets, dim))
            start, end = 5 + j, 9 + j                       # snippets start..end-1 are the action
            feats[start - 3:end + 3] += context[k]
            feats[start:end] += 0.5 * action[k]
            write_features(root / "features" / f"{vid}.h5", split_streams(feats, streams))
            db[vid] = {"subset": subset, "duration": num_snippets,
                       "annotations": [{"segment": [float(start), float(end)], "label": name}]}
    ann = root / "annotations.json"
    ann.write_text(json.dumps({"database": db}))
    return root / "features", ann


def output(action, cooc) -> RefactorOutput:
    """A RefactorOutput for (P, D) action / co-occurrence rows (as (P, D, 1) tensors)."""
    a = torch.as_tensor(action, dtype=torch.float32)[..., None]
    c = torch.as_tensor(cooc, dtype=torch.float32)[..., None]
    return RefactorOutput(features=torch.cat([a, c], 1), action=a, cooccurrence=c, mu=c, logvar=torch.zeros_like(c))


def hand_model(use_kl: bool = True) -> RefactorNet:
    """in_dim 4, one layer: φA(f) = f[0:2], μ = f[2:4], log σ² = 0."""
    model = RefactorNet(RefactorConfig(in_dim=4, hidden_dim=4, action_dim=2, cooc_dim=2, num_layers=1, use_kl=use_kl,
                                       form="paper"))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.phi_a[0].weight[0, 0, 0] = 1
        model.phi_a[0].weight[1, 1, 0] = 1
        model.phi_c[0].weight[0, 2, 0] = 1
        model.phi_c[0].weight[1, 3, 0] = 1
    return model.eval()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refactor", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def model_on(model: RefactorNet, feats: np.ndarray) -> RefactorOutput:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(feats.T))[None])


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------

def test_pair_losses_hand_values():
    a = output([[1, 0], [1, 0], [1, 0]], [[1, 2], [1, 0], [3, 4]])
    c = output([[1, 1], [-1, 0], [0, 1]], [[2, 4], [0, 1], [-3, -4]])
    l_a, l_c = pair_losses(a, c)
    # cos 1/√2; opposite -> -1 clamped to 0; orthogonal -> 0
    np.testing.assert_allclose(l_a.numpy(), [SQRT_HALF, 0.0, 0.0], atol=1e-6)
    # identical direction -> 0; orthogonal -> 1; opposite -> 2
    np.testing.assert_allclose(l_c.numpy(), [0.0, 1.0, 2.0], atol=1e-6)


@pytest.mark.parametrize("d", [1, 3, 8])
def test_kl_divergence_hand_values(d):
    zeros = torch.zeros(5, d, 2)
    assert float(kl_divergence(zeros, zeros)) == pytest.approx(0.0, abs=1e-7)
    assert float(kl_divergence(torch.ones(5, d, 2), zeros)) == pytest.approx(0.5 * d, rel=1e-6)
    logvar = torch.full((5, d, 2), math.log(2))
    assert float(kl_divergence(zeros, logvar)) == pytest.approx(0.5 * d * (2 - math.log(2) - 1), rel=1e-6)
    # summed over channels, averaged over samples and time: one sample with μ = 2, one with μ = 0
    mu = torch.zeros(2, d, 1)
    mu[0] = 2
    assert float(kl_divergence(mu, torch.zeros(2, d, 1))) == pytest.approx(0.5 * 4 * d / 2, rel=1e-6)


def test_refactor_loss_hand_model():
    model = hand_model()
    a = torch.tensor([[1.0, 0, 1, 0], [2, 0, 0, 3]])
    c = torch.tensor([[1.0, 1, 0, 1], [-1, 0, 0, 5]])
    alpha = torch.tensor([0.8, 0.6])
    parts = RefactorLoss(model)(a, c, alpha)
    l_a = np.array([SQRT_HALF, 0.0])          # [1,0]·[1,1]; [2,0] vs [-1,0] -> clamped
    l_c = np.array([1.0, 0.0])                # [1,0] ⟂ [0,1]; [0,3] ∥ [0,5]
    kl = 0.5 * (1 + 9 + 1 + 25) / 4           # logvar 0: ½ Σ μ², averaged over the 4 samples
    expected = float(np.mean([0.8, 0.6] * (l_a + l_c))) + 0.001 * kl
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert parts["action"].item() == pytest.approx(l_a.mean(), abs=1e-6)
    assert parts["cooccurrence"].item() == pytest.approx(l_c.mean(), abs=1e-6)
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-6)

    parts = RefactorLoss(hand_model(use_kl=False))(a, c, alpha)
    assert parts["kl"].item() == 0.0
    assert parts["loss"].item() == pytest.approx(float(np.mean([0.8, 0.6] * (l_a + l_c))), rel=1e-6)


def test_refactor_loss_matches_components_of_random_model():
    torch.manual_seed(0)
    model = RefactorNet(RefactorConfig(in_dim=6, hidden_dim=5, beta=0.01, form="paper")).eval()
    a, c, alpha = torch.randn(7, 6), torch.randn(7, 6), torch.rand(7)
    parts = RefactorLoss(model)(a, c, alpha)
    act_a, act_c = model.phi_a(a[..., None])[..., 0], model.phi_a(c[..., None])[..., 0]
    mu_a, lv_a = model.phi_c(a[..., None])[..., 0].chunk(2, 1)
    mu_c, lv_c = model.phi_c(c[..., None])[..., 0].chunk(2, 1)

    def cos(x, y):
        return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))

    l_a = cos(act_a, act_c).clamp(min=0)
    l_c = 1 - cos(mu_a, mu_c)
    mu, lv = torch.cat([mu_a, mu_c]), torch.cat([lv_a, lv_c])
    kl = (0.5 * (mu ** 2 + lv.exp() - lv - 1).sum(1)).mean()
    expected = (alpha * (l_a + l_c)).mean() + 0.01 * kl
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["kl"].item() == pytest.approx(kl.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# sample collection on a hand-made video
# ---------------------------------------------------------------------------------------------

TIMES = np.arange(10) + 0.5
SEGMENTS = np.array([[2.0, 4.0], [7.2, 7.4]])     # snippets 2, 3 (class 0); too short -> snippet 7 (class 1)
LABELS = np.array([0, 1])


def hand_video() -> np.ndarray:
    f = np.zeros((10, 4), np.float32)
    f[2] = [2, 0, 0, 0]
    f[3] = [0, 2, 0, 0]           # action sample 0 pooled: [1, 1, 0, 0]
    f[7] = [0, 0, 1, 1]           # action sample 1: [0, 0, 1, 1]
    f[0] = [1, 0, 0, 0]           # cos with A0 1/√2, with A1 0
    f[1] = [1, 1, 0, 0]           # 1, 0
    f[4] = [0, 1, 0, 0]           # 1/√2 (ties with snippet 0), 0
    f[5] = [0, 0, 1, 0]           # 0, 1/√2
    f[6] = [1, 1, 1, 0]           # 2/√6 = 0.8165, 1/√6 = 0.4082
    f[8] = [0, 0, 0, 1]           # 0, 1/√2 (ties with snippet 5)
    f[9] = [-1, -1, 0, 0]         # -1, 0
    return f


SIM = {0: {0: SQRT_HALF, 1: 1.0, 4: SQRT_HALF, 5: 0.0, 6: 2 / math.sqrt(6), 8: 0.0, 9: -1.0},
       1: {0: 0.0, 1: 0.0, 4: 0.0, 5: SQRT_HALF, 6: 1 / math.sqrt(6), 8: SQRT_HALF, 9: 0.0}}


def pairs_of(vs) -> list[tuple[int, int]]:
    return list(zip(vs.pair_action.tolist(), vs.pair_snippet.tolist()))


def test_action_and_non_action_snippets():
    vs = collect_samples("v", hand_video(), TIMES, SEGMENTS, LABELS, SampleConfig(threshold=None, top_k=100))
    assert [s.tolist() for s in vs.action_snippets] == [[2, 3], [7]]
    np.testing.assert_allclose(vs.action_features, [[1, 1, 0, 0], [0, 0, 1, 1]])
    assert vs.action_labels.tolist() == [0, 1]
    # no threshold, top_k above the count: every non-action snippet pairs with every action sample
    assert sorted(set(vs.pair_snippet.tolist())) == [0, 1, 4, 5, 6, 8, 9]
    assert pairs_of(vs) == [(a, s) for a in (0, 1) for s in (0, 1, 4, 5, 6, 8, 9)]
    np.testing.assert_allclose(vs.pair_similarity, [SIM[a][s] for a, s in pairs_of(vs)], atol=1e-6)
    assert vs.pair_similarity.dtype == np.float64


@pytest.mark.parametrize("threshold, top_k, expected", [
    (0.5, 5, [(0, 0), (0, 1), (0, 4), (0, 6), (1, 5), (1, 8)]),
    (0.5, 2, [(0, 1), (0, 6), (1, 5), (1, 8)]),
    (0.5, 3, [(0, 0), (0, 1), (0, 6), (1, 5), (1, 8)]),      # tie 0 / 4 at 1/√2: the earlier snippet
    (0.7, None, [(0, 0), (0, 1), (0, 4), (0, 6), (1, 5), (1, 8)]),
    (0.75, None, [(0, 1), (0, 6)]),                           # action sample 1 keeps no coupling sample
    (None, 1, [(0, 1), (1, 5)]),                              # tie 5 / 8: the earlier snippet
    (None, 3, [(0, 0), (0, 1), (0, 6), (1, 5), (1, 6), (1, 8)]),
    (-1.0, None, [(a, s) for a in (0, 1) for s in (0, 1, 4, 5, 6, 8, 9)]),
    # similarity exactly at the threshold (orthogonal one-hot snippets: cos is exactly 0) is kept
    (0.0, None, [(0, 0), (0, 1), (0, 4), (0, 5), (0, 6), (0, 8)] + [(1, s) for s in (0, 1, 4, 5, 6, 8, 9)]),
])
def test_coupling_samples(threshold, top_k, expected):
    vs = collect_samples("v", hand_video(), TIMES, SEGMENTS, LABELS, SampleConfig(threshold, top_k))
    assert pairs_of(vs) == expected
    np.testing.assert_allclose(vs.pair_similarity, [SIM[a][s] for a, s in expected], atol=1e-6)


def test_sample_config_validation():
    with pytest.raises(ValueError, match="threshold, a top-k, or both"):
        SampleConfig(None, None)
    with pytest.raises(ValueError, match="top_k"):
        SampleConfig(0.5, 0)
    assert SampleConfig() == SampleConfig(0.5, 5)


def test_samples_edge_cases():
    f = hand_video()
    # instance boundaries are inclusive; an instance covering the whole video leaves no coupling sample
    vs = collect_samples("v", f, TIMES, [[2.5, 3.5]], [0])
    assert [s.tolist() for s in vs.action_snippets] == [[2, 3]]
    vs = collect_samples("v", f, TIMES, [[0, 10]], [0])
    assert vs.action_snippets[0].tolist() == list(range(10)) and len(vs.pair_action) == 0
    # a short instance's nearest snippet is never a coupling snippet, even if it lies in no instance
    vs = collect_samples("v", f, TIMES, [[7.2, 7.4]], [1], SampleConfig(-1.0, None))
    assert 7 not in vs.pair_snippet.tolist() and len(vs.pair_snippet) == 9
    # no instances at all
    vs = collect_samples("v", f, TIMES, np.zeros((0, 2)), np.zeros(0, int))
    assert vs.action_features.shape == (0, 4) and len(vs.pair_action) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_samples_reject_non_finite(bad):
    f = hand_video()
    f[5, 1] = bad
    with pytest.raises(SampleError, match="NaN or inf"):
        collect_samples("vid42", f, TIMES, SEGMENTS, LABELS)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.sampled_from([None, -0.2, 0.0, 0.3]),
       top_k=st.sampled_from([None, 1, 2, 4]))
def test_coupling_rules_property(seed, threshold, top_k):
    if threshold is None and top_k is None:
        return
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(12, 3)).astype(np.float32)
    times = np.arange(12) + 0.5
    segs, labels = np.array([[1.0, 3.0], [6.0, 6.2], [8.0, 9.0]]), np.array([0, 1, 0])
    vs = collect_samples("v", f, times, segs, labels, SampleConfig(threshold, top_k))
    action = {s for idx in vs.action_snippets for s in idx.tolist()}
    non_action = [i for i in range(12) if i not in action]
    for a in range(3):
        sims = f[non_action] @ vs.action_features[a] / (
            np.linalg.norm(f[non_action], axis=1) * np.linalg.norm(vs.action_features[a]))
        order = np.argsort(-sims, kind="stable")
        keep = np.ones(len(non_action), bool) if threshold is None else sims >= threshold - 1e-6
        if top_k is not None:
            keep &= np.isin(np.arange(len(non_action)), order[:top_k])
        got = vs.pair_snippet[vs.pair_action == a].tolist()
        # away from float ties at the threshold, exactly the expected snippets
        near = threshold is not None and np.any(np.abs(sims - threshold) < 1e-5)
        if not near:
            assert got == [non_action[i] for i in np.flatnonzero(keep)]
        assert not set(got) & action


# ---------------------------------------------------------------------------------------------
# model: shapes, modes, gradients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, shapes", [
    (dict(in_dim=16, hidden_dim=8), (16, 8, 8)),
    (dict(in_dim=7, hidden_dim=4), (7, 3, 4)),
    (dict(in_dim=16, hidden_dim=8, action_dim=5, cooc_dim=3, num_layers=3), (8, 5, 3)),
    (dict(in_dim=16, hidden_dim=8, action_only=True), (8, 8, 8)),
    (dict(in_dim=16, hidden_dim=8, action_dim=6, action_only=True), (6, 6, 10)),
])
def test_output_shapes(cfg, shapes):
    torch.manual_seed(0)
    model = RefactorNet(RefactorConfig(**cfg, form="paper"))
    out = model(torch.randn(3, cfg["in_dim"], 11))
    f_dim, a_dim, c_dim = shapes
    assert model.out_dim == f_dim
    assert out.features.shape == (3, f_dim, 11)
    assert out.action.shape == (3, a_dim, 11)
    assert out.cooccurrence.shape == out.mu.shape == out.logvar.shape == (3, c_dim, 11)
    if cfg.get("action_only"):
        assert torch.equal(out.features, out.action)
    else:
        assert torch.equal(out.features, torch.cat([out.action, out.cooccurrence], 1))


def test_config_validation():
    assert RefactorConfig().action_dim == 1024 and RefactorConfig().cooc_dim == 1024
    with pytest.raises(ValueError):
        RefactorConfig(in_dim=16, num_layers=0)
    with pytest.raises(ValueError):
        RefactorConfig(in_dim=1)          # action_dim 0


def test_bad_input_shape():
    model = RefactorNet(RefactorConfig(in_dim=16, hidden_dim=8))
    for x in (torch.randn(2, 15, 4), torch.randn(16, 4), torch.randn(1, 2, 16, 4)):
        with pytest.raises(ValueError, match=r"expects \(N, 16, T\)"):
            model(x)


def test_eval_deterministic_and_train_sampling():
    torch.manual_seed(0)
    model = RefactorNet(RefactorConfig(in_dim=8, hidden_dim=8))
    x = torch.randn(1, 8, 1).expand(1, 8, 20000).contiguous()    # one snippet, 20000 times
    with torch.no_grad():
        model.eval()
        e1, e2 = model(x), model(x)
        assert torch.equal(e1.features, e2.features)
        assert torch.equal(e1.cooccurrence, e1.mu)
        model.train()
        t = model(x)
    assert torch.equal(t.action, e1.action) and torch.allclose(t.mu, e1.mu)
    assert not torch.allclose(t.cooccurrence, t.mu)
    sigma = torch.exp(0.5 * t.logvar[0, :, 0])
    mean, std = t.cooccurrence[0].mean(1), t.cooccurrence[0].std(1)
    assert torch.all((mean - t.mu[0, :, 0]).abs() < 5 * sigma / math.sqrt(20000))
    assert torch.allclose(std, sigma, rtol=0.05)
    # without KL the co-occurrence component is μ in training too
    model.config.use_kl = False
    with torch.no_grad():
        assert torch.equal(model(x).cooccurrence, model(x).mu)


def _grads(module) -> list:
    return [p.grad for p in module.parameters()]


def test_gradients_reach_the_right_encoders():
    torch.manual_seed(0)
    model = RefactorNet(RefactorConfig(in_dim=8, hidden_dim=8, form="paper")).train()
    a = torch.randn(6, 8)
    c = a + 0.05 * torch.randn(6, 8)          # similar pairs: cos(φA) > 0, so L_A is not clamped
    parts = RefactorLoss(model)(a, c, torch.ones(6))
    parts["loss"].backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0

    out_a, out_c = model(a[..., None]), model(c[..., None])
    l_a, l_c = pair_losses(out_a, out_c)
    assert torch.all(l_a > 0)
    model.zero_grad(set_to_none=True)
    l_a.sum().backward(retain_graph=True)
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.phi_a))
    assert all(g is None for g in _grads(model.phi_c))
    model.zero_grad(set_to_none=True)
    l_c.sum().backward()
    assert all(g is None for g in _grads(model.phi_a))
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model.phi_c))


# ---------------------------------------------------------------------------------------------
# build_pairs / train / checkpoint / apply
# ---------------------------------------------------------------------------------------------

TINY = dict(hidden_dim=16)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("refactor_data"))


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    feature_dir, ann = dataset
    samples = SampleConfig()
    pairs = build_pairs(feature_dir, ann, samples=samples)
    train = TrainConfig(epochs=8, seed=1)
    model, history = train_refactor(pairs, RefactorConfig(in_dim=16, **TINY), train, progress=False)
    ckpt = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "refactor.pt", model, pairs, samples, train, history)
    return pairs, model, history, ckpt


def test_build_pairs(dataset):
    feature_dir, ann = dataset
    pairs = build_pairs(feature_dir, ann)
    assert pairs.classes == ["Jump", "Run", "Swim"] and pairs.streams == ("rgb", "flow")
    assert len(pairs.videos) == 6 and pairs.action.shape[1] == pairs.coupling.shape[1] == 16
    assert pairs.action.dtype == pairs.coupling.dtype == np.float32
    assert set(pairs.label.tolist()) == {0, 1, 2}
    assert np.all(pairs.similarity >= 0.5) and len(pairs.similarity) <= 6 * 5
    # every pair is re-derivable from the files
    row = 0
    for vs in pairs.videos:
        ff = read_features(feature_dir / f"{vs.video_id}.h5")
        for a, s in zip(vs.pair_action, vs.pair_snippet):
            np.testing.assert_array_equal(pairs.coupling[row], ff.features[s])
            np.testing.assert_allclose(pairs.action[row], ff.features[vs.action_snippets[a]].mean(0), rtol=1e-6)
            row += 1
    assert row == len(pairs.similarity)
    # the coupling snippets of the synthetic data are the context snippets around each action
    for vs in pairs.videos:
        j = int(vs.video_id[-1])
        assert set(vs.pair_snippet.tolist()) <= set(range(2 + j, 5 + j)) | set(range(9 + j, 12 + j))


def test_loss_decreases(trained):
    _, _, history, _ = trained
    assert len(history) == 8 and [h["epoch"] for h in history] == list(range(1, 9))
    assert history[0]["loss"] > history[-1]["loss"]
    assert history[0]["action"] > history[-1]["action"]
    assert history[0]["cooccurrence"] > history[-1]["cooccurrence"]


def test_training_is_seeded(dataset):
    feature_dir, ann = dataset
    pairs = build_pairs(feature_dir, ann)
    runs = [train_refactor(pairs, RefactorConfig(in_dim=16, **TINY), TrainConfig(epochs=2, seed=5), progress=False)
            for _ in range(2)]
    for (k, v), w in zip(runs[0][0].state_dict().items(), runs[1][0].state_dict().values()):
        assert torch.equal(v, w), k
    assert runs[0][1] == runs[1][1]
    with pytest.raises(RefactorError, match="expects 8-d features, the pairs are 16-d"):
        train_refactor(pairs, RefactorConfig(in_dim=8, **TINY), TrainConfig(epochs=1))


def test_checkpoint_round_trip(trained, dataset):
    pairs, model, history, ckpt_path = trained
    loaded, ckpt = load_refactor(ckpt_path)
    assert not loaded.training
    assert asdict(loaded.config) == asdict(model.config)
    assert ckpt["feature_layout"] == {"streams": ["rgb", "flow"], "dim": 16}
    assert ckpt["classes"] == ["Jump", "Run", "Swim"]
    assert ckpt["samples"] == {"threshold": 0.5, "top_k": 5}
    assert ckpt["train"]["epochs"] == 8 and ckpt["history"] == history
    assert ckpt["num_pairs"] == len(pairs.similarity)
    x = torch.randn(2, 16, 9)
    with torch.no_grad():
        ref, got = model(x), loaded(x)
    for field in ("features", "action", "cooccurrence", "mu", "logvar"):
        assert torch.equal(getattr(ref, field), getattr(got, field))
    assert load_refactor(ckpt_path, in_dim=16)[0].config.in_dim == 16
    with pytest.raises(RefactorError, match="trained on 16-d features \\(rgb\\+flow\\), these are 8-d"):
        load_refactor(ckpt_path, in_dim=8)


def test_checkpoint_format_version_checked(trained, tmp_path):
    ckpt = torch.load(trained[3], weights_only=True)
    ckpt["format_version"] = 2
    torch.save(ckpt, tmp_path / "v2.pt")
    with pytest.raises(RefactorError, match="not a RefactorNet checkpoint of format 1"):
        load_refactor(tmp_path / "v2.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(RefactorError, match="not a RefactorNet checkpoint"):
        load_refactor(tmp_path / "other.pt")
    with pytest.raises(RefactorError, match="no such RefactorNet checkpoint"):
        load_refactor(tmp_path / "missing.pt")


def test_checkpoint_kind(trained, tmp_path):
    ckpt = torch.load(trained[3], weights_only=True)
    assert ckpt["kind"] == "refactor" and ckpt["format_version"] == 1
    ckpt["kind"] = "detector"
    torch.save(ckpt, tmp_path / "det.pt")
    with pytest.raises(RefactorError, match="is not a RefactorNet checkpoint \\(its kind is 'detector'"):
        load_refactor(tmp_path / "det.pt")


def test_kindless_checkpoint_of_the_old_layout_loads(trained, dataset, tmp_path):
    """Checkpoints written before kinds and forms existed: the same entries, no ``kind``, a config
    without ``form`` and its five fields (the paper's form), saved by ``torch.save``."""
    pairs, model, history, _ = trained
    feature_dir, _ = dataset
    old_config = {k: v for k, v in asdict(model.config).items() if k not in ("form", *FORMS["paper"])}
    paper = RefactorNet(RefactorConfig(**old_config, form="paper")).eval()
    state = {k: v for k, v in model.state_dict().items() if k != "gamma"}
    paper.load_state_dict(state, strict=True)
    old = {"format_version": 1, "config": old_config, "samples": asdict(SampleConfig()),
           "train": asdict(TrainConfig(epochs=8, seed=1)),
           "feature_layout": {"streams": list(pairs.streams), "dim": int(pairs.action.shape[1])},
           "classes": pairs.classes, "num_pairs": int(len(pairs.similarity)), "history": history,
           "state_dict": {k: v.detach().cpu() for k, v in state.items()}}
    torch.save(old, tmp_path / "old.pt")
    loaded, ckpt = load_refactor(tmp_path / "old.pt", in_dim=16)
    assert "kind" not in ckpt and ckpt["classes"] == ["Jump", "Run", "Swim"]
    assert loaded.config.form == "paper" and not loaded.config.residual and loaded.gamma is None
    x = torch.randn(2, 16, 5)
    with torch.no_grad():
        assert torch.equal(loaded(x).features, paper(x).features)
        assert torch.equal(loaded(x).features, torch.cat([model(x).action, model(x).mu], 1))
    written = apply_refactor(tmp_path / "old.pt", feature_dir, tmp_path / "out", progress=False)
    assert len(written) == 6
    np.testing.assert_allclose(read_features(written[0]).features,
                               model_on(paper, read_features(feature_dir / written[0].name).features).features[0].T,
                               rtol=1e-6, atol=1e-6)


def test_apply_writes_model_outputs(trained, dataset, tmp_path):
    _, model, _, ckpt = trained
    feature_dir, _ = dataset
    written = apply_refactor(ckpt, feature_dir, tmp_path / "out", progress=False)
    assert sorted(p.name for p in written) == sorted(p.name for p in feature_dir.glob("*.h5"))
    for path in written:
        src, ff = read_features(feature_dir / path.name), read_features(path)
        out = model_on(model, src.features)
        assert ff.streams == ("action", "cooccurrence")
        assert ff.features.shape == (len(src.features), 16) and ff.features.dtype == np.float32
        np.testing.assert_allclose(ff.features[:, :8], out.action[0].T.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ff.features[:, 8:], out.mu[0].T.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(ff.times, src.times)
        for key in ("fps", "window", "stride", "num_frames", "duration", "source", "flow_method", "format_version"):
            assert ff.attrs[key] == src.attrs[key], key
        assert ff.attrs["weights"] == src.attrs["weights"]
        record = json.loads(ff.attrs["refactor"])
        assert record["checkpoint"] == str(Path(ckpt).resolve()) and len(record["sha256"]) == 64
    # existing files are skipped unless overwrite
    assert apply_refactor(ckpt, feature_dir, tmp_path / "out", progress=False) == []
    assert len(apply_refactor(ckpt, feature_dir, tmp_path / "out", overwrite=True, progress=False)) == 6


def test_apply_action_only(dataset, tmp_path):
    feature_dir, ann = dataset
    pairs = build_pairs(feature_dir, ann)
    train = TrainConfig(epochs=1)
    model, history = train_refactor(pairs, RefactorConfig(in_dim=16, action_only=True, form="paper", **TINY), train,
                                    progress=False)
    ckpt = save_checkpoint(tmp_path / "a.pt", model, pairs, SampleConfig(), train, history)
    apply_refactor(ckpt, feature_dir, tmp_path / "out", progress=False)
    ff = read_features(tmp_path / "out" / "jump_0.h5")
    assert ff.streams == ("action",) and ff.features.shape[1] == 8
    with h5py.File(tmp_path / "out" / "jump_0.h5") as h5:
        assert "cooccurrence" not in h5
    src = read_features(feature_dir / "jump_0.h5")
    np.testing.assert_allclose(ff.features, model_on(model, src.features).action[0].T.numpy(), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# CLI == API
# ---------------------------------------------------------------------------------------------

def test_cli_matches_api(dataset, tmp_path):
    feature_dir, ann = dataset
    cli_ckpt = tmp_path / "cli.pt"
    r = run_cli("train", "--features", str(feature_dir), "--annotations", str(ann), "--out", str(cli_ckpt),
                "--epochs", "2", "--hidden-dim", "16", "--seed", "3", "--threshold", "0.4", "--top-k", "3")
    assert r.returncode == 0, r.stderr
    assert "pairs from 6 videos" in r.stdout and str(cli_ckpt) in r.stdout
    r = run_cli("apply", "--features", str(feature_dir), "--checkpoint", str(cli_ckpt), "--out", str(tmp_path / "cli"))
    assert r.returncode == 0, r.stderr
    assert "6 refactored feature files" in r.stdout

    samples = SampleConfig(0.4, 3)
    pairs = build_pairs(feature_dir, ann, samples=samples)
    train = TrainConfig(epochs=2, seed=3)
    model, history = train_refactor(pairs, RefactorConfig(in_dim=16, hidden_dim=16), train, progress=False)
    api_ckpt = save_checkpoint(tmp_path / "api.pt", model, pairs, samples, train, history)
    apply_refactor(api_ckpt, feature_dir, tmp_path / "api", progress=False)

    cli = torch.load(cli_ckpt, weights_only=True)
    api = torch.load(api_ckpt, weights_only=True)
    for key in ("config", "samples", "train", "feature_layout", "classes", "num_pairs"):
        assert cli[key] == api[key], key
    for (k, h1), h2 in zip(enumerate(cli["history"]), api["history"]):
        for part in ("loss", "action", "cooccurrence", "kl"):
            assert h1[part] == pytest.approx(h2[part], rel=1e-5, abs=1e-6), (k, part)
    for name in sorted(p.name for p in (tmp_path / "api").glob("*.h5")):
        a = read_features(tmp_path / "api" / name).features
        c = read_features(tmp_path / "cli" / name).features
        np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-6, err_msg=name)


def test_cli_disables_rules(dataset, tmp_path, capsys):
    feature_dir, ann = dataset
    assert cli_main(["train", "--features", str(feature_dir), "--annotations", str(ann), "--out",
                     str(tmp_path / "c.pt"), "--epochs", "1", "--hidden-dim", "8", "--threshold", "-1",
                     "--top-k", "2"]) == 0
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert ckpt["samples"] == {"threshold": None, "top_k": 2} and ckpt["num_pairs"] == 6 * 2
    assert cli_main(["train", "--features", str(feature_dir), "--annotations", str(ann), "--out",
                     str(tmp_path / "d.pt"), "--epochs", "1", "--hidden-dim", "8", "--threshold", "-1",
                     "--top-k", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("refactor train:") and "threshold, a top-k, or both" in err[0]


# ---------------------------------------------------------------------------------------------
# bad input: one clear line
# ---------------------------------------------------------------------------------------------

def cli_error(capsys, *argv: str, code: int = 1) -> str:
    assert cli_main(list(argv)) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_features_without_annotations(dataset, tmp_path, capsys):
    feature_dir, _ = dataset
    ann = tmp_path / "other.json"
    ann.write_text(json.dumps({"database": {"unrelated": {"subset": "validation", "duration": 10,
                                                          "annotations": [{"segment": [1, 2], "label": "X"}]}}}))
    with pytest.raises(RefactorError, match="none of the 6 feature files .* has annotations in subset 'validation'"):
        build_pairs(feature_dir, ann)
    line = cli_error(capsys, "train", "--features", str(feature_dir), "--annotations", str(ann), "--out",
                     str(tmp_path / "x.pt"), "--epochs", "1")
    assert "none of the 6 feature files" in line
    # the annotated videos are in another subset
    with pytest.raises(ValueError, match="no video in subset 'test'"):
        build_pairs(feature_dir, dataset[1], subset="test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RefactorError, match="no feature files"):
        build_pairs(empty, dataset[1])
    assert not (tmp_path / "x.pt").exists()


def test_class_without_coupling_samples(tmp_path, capsys):
    """Class 'Lonely' has action snippets orthogonal to every non-action snippet of its video."""
    db = {}
    rng = np.random.default_rng(0)
    f = np.abs(rng.normal(size=(12, 8))).astype(np.float32)
    f[:, 6:] = 0
    write_features(tmp_path / "feat" / "ok.h5", {"rgb": f})
    db["ok"] = {"subset": "validation", "duration": 12, "annotations": [{"segment": [4, 6], "label": "Fine"}]}
    g = np.zeros((12, 8), np.float32)
    g[:, 0] = 1
    g[4:6] = 0
    g[4:6, 7] = 1
    write_features(tmp_path / "feat" / "lonely.h5", {"rgb": g})
    db["lonely"] = {"subset": "validation", "duration": 12, "annotations": [{"segment": [4, 6], "label": "Lonely"}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"database": db}))
    with pytest.raises(NoCouplingSamples, match="class 'Lonely' has no coupling samples \\(1 such classes\\)"):
        build_pairs(tmp_path / "feat", ann, samples=SampleConfig(0.3, 5))
    # without a threshold the top-k rule always finds some
    pairs = build_pairs(tmp_path / "feat", ann, samples=SampleConfig(None, 2))
    assert len(pairs.similarity) == 4
    # an unusable sample rule: exit 2 (the README's bad-input table), one line, no checkpoint
    r = run_cli("train", "--features", str(tmp_path / "feat"), "--annotations", str(ann), "--out",
                str(tmp_path / "x.pt"), "--threshold", "0.3")
    assert (r.returncode, r.stderr) == (2, "refactor train: class 'Lonely' has no coupling samples (1 such classes); "
                                           "lower --threshold or raise --top-k\n")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.pt.state").exists()
    line = cli_error(capsys, "context", "--features", str(tmp_path / "feat"), "--annotations", str(ann), "--out",
                     str(tmp_path / "c.pt"), "--threshold", "0.3", code=2)
    assert line == ("refactor context: class 'Lonely' has no coupling samples (1 such classes); lower --threshold "
                    "or raise --top-k")
    assert not (tmp_path / "c.pt").exists()


def test_features_folder_that_does_not_exist(dataset, tmp_path, capsys):
    """``--features`` that is not an existing folder: one line saying so and exit 2, for every command, before
    anything is read or written; the library functions say the same in a RefactorError."""
    feature_dir, ann = dataset
    missing, afile = tmp_path / "nonexist", tmp_path / "afile"
    afile.write_text("x")
    ckpt = tmp_path / "r.pt"
    assert cli_main(["train", "--features", str(feature_dir), "--annotations", str(ann), "--out", str(ckpt),
                     "--epochs", "1", "--hidden-dim", "8"]) == 0
    capsys.readouterr()
    r = run_cli("train", "--features", str(missing), "--annotations", str(ann), "--out", str(tmp_path / "x.pt"))
    assert (r.returncode, r.stderr) == (2, f"refactor train: --features {missing}: no such folder\n")
    for command, rest in (("train", ["--annotations", str(ann), "--out", str(tmp_path / "x.pt")]),
                          ("context", ["--annotations", str(ann), "--out", str(tmp_path / "x.pt")]),
                          ("apply", ["--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]),
                          ("cam", ["--checkpoint", str(ckpt), "--out", str(tmp_path / "out")])):
        line = cli_error(capsys, command, "--features", str(missing), *rest, code=2)
        assert line == f"refactor {command}: --features {missing}: no such folder"
        line = cli_error(capsys, command, "--features", str(afile), *rest, code=2)
        assert line == f"refactor {command}: --features {afile}: not a folder"
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "out").exists()
    with pytest.raises(RefactorError, match=f"^feature folder {re.escape(str(missing))}: no such folder$"):
        build_pairs(missing, ann)
    with pytest.raises(RefactorError, match=f"^feature folder {re.escape(str(afile))}: not a folder$"):
        apply_refactor(ckpt, afile, tmp_path / "out")
    with pytest.raises(RefactorError, match=f"^feature folder {re.escape(str(missing))}: no such folder$"):
        apply_refactor(ckpt, missing, tmp_path / "out")


def test_nan_features(dataset, tmp_path, capsys):
    feature_dir, ann = dataset
    bad = tmp_path / "bad"
    for p in feature_dir.glob("*.h5"):
        ff = read_features(p)
        feats = ff.features.copy()
        if p.stem == "run_1":
            feats[3, 2] = np.nan
        write_features(bad / p.name, split_streams(feats, ("rgb", "flow")))
    with pytest.raises(RefactorError, match="run_1: features contain NaN or inf"):
        build_pairs(bad, ann)
    line = cli_error(capsys, "train", "--features", str(bad), "--annotations", str(ann), "--out",
                     str(tmp_path / "x.pt"))
    assert "run_1: features contain NaN" in line


def test_apply_rejects_nan(trained, tmp_path, capsys):
    f = np.zeros((4, 16), np.float32)
    f[1, 1] = np.nan
    write_features(tmp_path / "in" / "v.h5", split_streams(f, ("rgb", "flow")))
    with pytest.raises(RefactorError, match="v.h5: features contain NaN or inf"):
        apply_refactor(trained[3], tmp_path / "in", tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "v.h5").exists()


def test_apply_other_feature_layout(trained, tmp_path, capsys):
    ckpt = trained[3]                        # trained on rgb+flow, 8 + 8 = 16-d
    rgb_only = tmp_path / "rgb_only"
    write_features(rgb_only / "v.h5", {"rgb": np.ones((5, 16), np.float32)})     # 16-d, but one stream
    with pytest.raises(FeatureFileError, match="has no 'flow' stream \\(present: rgb\\)"):
        apply_refactor(ckpt, rgb_only, tmp_path / "out", progress=False)
    line = cli_error(capsys, "apply", "--features", str(rgb_only), "--checkpoint", str(ckpt), "--out",
                     str(tmp_path / "out"))
    assert "has no 'flow' stream" in line
    wide = tmp_path / "wide"
    write_features(wide / "v.h5", {"rgb": np.ones((5, 16)), "flow": np.ones((5, 16))})   # 32-d
    with pytest.raises(RefactorError, match="v.h5: 32-d features, the checkpoint expects 16"):
        apply_refactor(ckpt, wide, tmp_path / "out", progress=False)
    line = cli_error(capsys, "apply", "--features", str(wide), "--checkpoint", str(ckpt), "--out",
                     str(tmp_path / "out"))
    assert "32-d features, the checkpoint expects 16" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.h5"))


def test_apply_rgb_checkpoint_to_two_stream_files(tmp_path):
    """A checkpoint trained on rgb only reads the rgb stream of two-stream files (the streams it was
    trained on, recorded in its feature_layout), not their 2-stream concatenation."""
    feature_dir, ann = make_dataset(tmp_path / "rgb", streams=("rgb",), dim_per_stream=16, videos_per_class=1)
    pairs = build_pairs(feature_dir, ann)
    train = TrainConfig(epochs=1)
    model, history = train_refactor(pairs, RefactorConfig(in_dim=16, **TINY), train, progress=False)
    ckpt = save_checkpoint(tmp_path / "rgb.pt", model, pairs, SampleConfig(), train, history)
    rgb = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    write_features(tmp_path / "two" / "v.h5", {"rgb": rgb, "flow": np.ones((5, 16))})
    apply_refactor(ckpt, tmp_path / "two", tmp_path / "out", progress=False)
    out = model_on(model, rgb)
    np.testing.assert_allclose(read_features(tmp_path / "out" / "v.h5").features,
                               torch.cat([out.action, out.mu], 1)[0].T.numpy(), rtol=1e-6, atol=1e-6)


def test_mixed_stream_layouts(dataset, tmp_path):
    feature_dir, ann = dataset
    mixed = tmp_path / "mixed"
    for p in feature_dir.glob("*.h5"):
        feats = read_features(p).features
        streams = {"rgb": feats} if p.stem == "swim_0" else split_streams(feats, ("rgb", "flow"))
        write_features(mixed / p.name, streams)
    with pytest.raises(RefactorError, match="swim_0.h5 has streams \\('rgb',\\), others \\('rgb', 'flow'\\)"):
        build_pairs(mixed, ann)


def test_corrupt_checkpoint(trained, dataset, tmp_path, capsys):
    feature_dir, _ = dataset
    good = Path(trained[3]).read_bytes()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all\n" * 10)
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("garbage.pt", "truncated.pt", "empty.pt"):
        with pytest.raises(RefactorError, match="is not a RefactorNet checkpoint"):
            load_refactor(tmp_path / name)
        line = cli_error(capsys, "apply", "--features", str(feature_dir), "--checkpoint", str(tmp_path / name),
                         "--out", str(tmp_path / "out"))
        assert line.startswith("refactor apply:") and "is not a RefactorNet checkpoint" in line
    # a checkpoint whose weights do not fit its config
    ckpt = torch.load(trained[3], weights_only=True)
    ckpt["config"]["hidden_dim"] = 32
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(RefactorError, match="is not a RefactorNet checkpoint"):
        load_refactor(tmp_path / "mismatch.pt")
    line = cli_error(capsys, "apply", "--features", str(feature_dir), "--checkpoint", str(tmp_path / "mismatch.pt"),
                     "--out", str(tmp_path / "out"))
    assert "mismatch.pt" in line
    assert not (tmp_path / "out").exists()


def test_cli_subprocess_error_exit(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"junk")
    write_features(tmp_path / "feat" / "v.h5", {"rgb": np.ones((3, 16))})
    r = run_cli("apply", "--features", str(tmp_path / "feat"), "--checkpoint", str(tmp_path / "bad.pt"),
                "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "is not a RefactorNet checkpoint" in r.stderr


def test_train_resumes_from_state_like_an_uninterrupted_run(tmp_path):
    """train_refactor with a state file: 2 epochs, then resumed to 5, equals 5 epochs straight; a state
    of other settings is refused."""
    feature_dir, ann = make_dataset(tmp_path)
    pairs = build_pairs(feature_dir, ann)
    config = RefactorConfig(in_dim=16, hidden_dim=8)
    straight, hist = train_refactor(pairs, config, TrainConfig(epochs=5, batch_size=4, seed=2), progress=False)
    state = tmp_path / "r.state"
    train_refactor(pairs, config, TrainConfig(epochs=2, batch_size=4, seed=2), progress=False, state_path=state)
    resumed, hist2 = train_refactor(pairs, config, TrainConfig(epochs=5, batch_size=4, seed=2), progress=False,
                                    state_path=state)
    assert [h["epoch"] for h in hist2] == [1, 2, 3, 4, 5]
    assert [h["loss"] for h in hist2] == pytest.approx([h["loss"] for h in hist], rel=1e-6)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
    with pytest.raises(RefactorError, match="other data or settings"):
        train_refactor(pairs, config, TrainConfig(epochs=5, batch_size=8, seed=2), progress=False, state_path=state)
    with pytest.raises(RefactorError, match="other data or settings"):
        train_refactor(pairs, RefactorConfig(in_dim=16, hidden_dim=9), TrainConfig(epochs=5, batch_size=4, seed=2),
                       progress=False, state_path=state)


def test_cli_train_killed_then_resumed(tmp_path, capsys):
    """`refactor train` killed (SIGKILL) once its per-epoch state exists, run again: it resumes and
    writes the model of an uninterrupted run; the state is then gone. A state left by other settings is
    a one-line error; --restart ignores it."""
    import time

    from common.checkpoint import load_checkpoint

    feature_dir, ann = make_dataset(tmp_path, videos_per_class=3, num_snippets=30)
    out = tmp_path / "r.pt"
    state = Path(str(out) + ".state")
    args = ["train", "--features", str(feature_dir), "--annotations", str(ann), "--out", str(out), "--epochs", "6",
            "--batch-size", "4", "--hidden-dim", "16", "--seed", "4"]
    proc = subprocess.Popen([sys.executable, "-m", "refactor", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not state.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before writing its state"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not out.exists()
    done = len(load_checkpoint(state, RefactorError, "state")["history"])
    assert 1 <= done < 6
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"refactor: resuming from {state} after epoch {done} of 6\n" in r.stderr
    assert out.is_file() and not state.exists()
    model, ckpt = load_refactor(out)
    pairs = build_pairs(feature_dir, ann)
    straight, hist = train_refactor(pairs, RefactorConfig(in_dim=16, hidden_dim=16),
                                    TrainConfig(epochs=6, batch_size=4, seed=4), progress=False)
    assert [h["epoch"] for h in ckpt["history"]] == list(range(1, 7))
    assert [h["loss"] for h in ckpt["history"]] == pytest.approx([h["loss"] for h in hist], rel=1e-5)
    for (k, a), b in zip(straight.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=k)
    # a state written with other settings: refused in one line, nothing written; --restart starts over
    train_refactor(pairs, RefactorConfig(in_dim=16, hidden_dim=16), TrainConfig(epochs=1, batch_size=4, seed=5),
                   progress=False, state_path=state)
    out.unlink()
    short = [a if a != "6" else "2" for a in args]
    assert cli_main(short) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("refactor train: ") and "other data or settings" in last and "--restart" in last
    assert "resuming" not in err                          # said only of a state that is taken up
    assert err.count("refactor train:") == 1 and not out.exists()
    assert cli_main([*short, "--restart"]) == 0 and out.is_file() and not state.exists()


@pytest.mark.parametrize("command", ["train", "context"])
def test_missing_flags_print_the_subcommands_usage(capsys, command):
    with pytest.raises(SystemExit) as info:
        cli_main([command, "--features", "x"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"usage: python -m refactor {command} "), err
    assert err.endswith(f"python -m refactor {command}: error: the following arguments are required: "
                        "--annotations, --out\n"), err
