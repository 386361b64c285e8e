"""The context score (``refactor.context``): the scorer against a NumPy reference, the rule for "none"
samples, what training learns on a small feature world, its checkpoint, the detector front that carries
it frozen, and the CLI (``refactor context``, ``detect train --context-score``) against the API."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from common.fileio import sha256_file  # noqa: E402
from benchmarks.feature_worlds import ACTION, BACKGROUND, CONTEXT, FeatureWorld, write_world  # noqa: E402
from detect import DetectorError, TrainConfig, train_detector  # noqa: E402
from detect.checkpoint import load_detector, save_detector  # noqa: E402
from detect.data import read_window, scan_videos  # noqa: E402
from detect.model import Detector, DetectorConfig  # noqa: E402
from detect.infer import run_detector  # noqa: E402
from extract.features import read_features  # noqa: E402
from refactor import (ContextConfig, ContextScorer, RefactorError, SampleConfig, build_pairs, load_context,  # noqa: E402
                      save_context, train_context)
from refactor.context import (border_snippets, crossfit_scorers, crossfit_scores, far_snippets, not_action_nll,  # noqa: E402
                             snippet_mean, with_neighbours)

WORLD = FeatureWorld(dim=64, classes=3, train_videos=12, test_videos=2, length=(60, 90))
C = WORLD.dim
FIRST = ContextConfig(actions=False, window=0)          # the first form: contexts alone, the snippet alone


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ctxworld")
    data = write_world(WORLD, 0, root)
    return root, data


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    root, _ = world
    pairs = build_pairs(root, root / "annotations.json", "validation", SampleConfig())
    scorer, info = train_context(pairs, root, FIRST)
    path = save_context(tmp_path_factory.mktemp("ctx") / "context.pt", scorer, pairs, SampleConfig(), FIRST, info)
    return pairs, scorer, info, path


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 3), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_scorer_is_a_standardised_softmax(c, k, b, t, seed):
    """p = softmax(W (x - μ) / σ + b) without its last ("none") output, per snippet, against NumPy."""
    rng = np.random.default_rng(seed)
    scorer = ContextScorer(c, k)
    mean, std = rng.normal(size=c), rng.uniform(0.5, 2, size=c)
    w, bias = rng.normal(size=(k + 1, c)), rng.normal(size=k + 1)
    with torch.no_grad():
        scorer.mean.copy_(torch.from_numpy(mean))
        scorer.std.copy_(torch.from_numpy(std))
        scorer.linear.weight.copy_(torch.from_numpy(w))
        scorer.linear.bias.copy_(torch.from_numpy(bias))
    x = rng.normal(size=(b, c, t))
    with torch.no_grad():
        p = scorer(torch.from_numpy(x).float()).numpy()
    z = np.einsum("kc,bct->btk", w, (x - mean[None, :, None]) / std[None, :, None]) + bias
    ref = np.exp(z - z.max(-1, keepdims=True))
    ref = (ref / ref.sum(-1, keepdims=True))[..., :k].transpose(0, 2, 1)
    assert p.shape == (b, k, t)
    np.testing.assert_allclose(p, ref, rtol=1e-4, atol=1e-6)
    assert np.all(p.sum(1) <= 1 + 1e-6)


def test_far_snippets_by_hand():
    """"None" samples: not taken, and below ``far`` in cosine to every action sample (none there: all untaken)."""
    f = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.2], [0.0, 0.0]])
    actions = np.array([[1.0, 0.0]])
    taken = np.array([False, False, False, False, True])
    # cosines to the action: 1, 0, 0.707, -0.98; snippet 4 is taken
    np.testing.assert_array_equal(far_snippets(f, actions, taken, 0.25), [1, 3])
    np.testing.assert_array_equal(far_snippets(f, actions, taken, 0.8), [1, 2, 3])
    np.testing.assert_array_equal(far_snippets(f, np.zeros((0, 2)), taken, 0.25), [0, 1, 2, 3])
    # non-negative features (I3D's, post-ReLU): every raw cosine is high, none is far; centred, the same
    # snippets as above are
    g = f + 10.0
    assert len(far_snippets(g, actions + 10.0, taken, 0.25)) == 0
    np.testing.assert_array_equal(far_snippets(g, actions + 10.0, taken, 0.25, mean=10.0), [1, 3])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_snippet_mean_is_that_of_all_snippets(tmp_path_factory, lengths, c, seed):
    from tests.featfiles import write_features

    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp("moments")
    feats = [rng.normal(3.0, 2.0, size=(n, c)).astype(np.float32) for n in lengths]
    paths = []
    for i, f in enumerate(feats):
        paths.append(folder / f"v{i}.h5")
        write_features(paths[-1], {"rgb": f})
    every = np.concatenate(feats).astype(np.float64)
    np.testing.assert_allclose(snippet_mean(paths), every.mean(0), rtol=1e-9, atol=1e-9)


def sampled(vs, length: int) -> np.ndarray:
    """(T,) bool: the snippets of one video in an action sample or a coupling sample."""
    taken = np.zeros(length, dtype=bool)
    for idx in vs.action_snippets:
        taken[idx] = True
    taken[vs.pair_snippet] = True
    return taken


def test_training_counts_and_learns_each_class_context(world, trained):
    """The outputs' samples are the coupling samples of each class and the far snippets of every video; on the
    test videos the learnt probability of a video's own class's context is high on its context snippets and
    low on its background."""
    root, data = world
    pairs, scorer, info, _ = trained
    counts = info["counts"]
    assert counts[:-1] == [int(np.sum(pairs.label == c)) for c in range(3)]
    far = 0
    mean = snippet_mean([root / f"{vs.video_id}.h5" for vs in pairs.videos])
    for vs in pairs.videos:
        f = read_features(root / f"{vs.video_id}.h5").features
        taken = sampled(vs, len(f))
        far += len(far_snippets(f, vs.action_features, taken, ContextConfig().far, mean))
    assert counts[-1] == far > 0
    own = {CONTEXT: [], BACKGROUND: []}
    for vid, feats in data["test"].items():
        with torch.no_grad():
            p = scorer(torch.from_numpy(feats).T[None])[0].T.numpy()
        for kind in own:
            own[kind].append(p[data["kinds"][vid] == kind, int(vid[-2:])])
    assert np.concatenate(own[CONTEXT]).mean() > 0.6 and np.concatenate(own[BACKGROUND]).mean() < 0.05


def test_border_snippets_by_hand():
    """Snippets 0..11; class 0's sample [3, 4], class 1's [8, 9]; snippet 6 is taken (a coupling sample)."""
    taken = np.zeros(12, dtype=bool)
    taken[[3, 4, 8, 9, 6]] = True
    idx, labels = border_snippets(12, [np.array([3, 4]), np.array([8, 9])], np.array([0, 1]), taken, 2)
    np.testing.assert_array_equal(idx, [1, 2, 5, 7, 10, 11])
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    idx, labels = border_snippets(12, [np.array([3, 4]), np.array([8, 9])], np.array([0, 1]), taken, 3)
    np.testing.assert_array_equal(idx, [0, 1, 2, 5, 7, 10, 11])          # 5 and 7: nearer to 4 / 8; 6 taken
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1, 1])
    idx, _ = border_snippets(12, [np.array([3, 4])], np.array([0]), np.zeros(12, dtype=bool), 0)
    assert len(idx) == 0
    idx, labels = border_snippets(12, [np.array([3, 4]), np.array([8, 9])], np.array([0, 1]), taken, 3, nearest=2)
    np.testing.assert_array_equal(idx, [0, 1, 11])                      # the snippets right next to one left out
    np.testing.assert_array_equal(labels, [0, 0, 1])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.lists(st.tuples(st.integers(0, 39), st.integers(1, 6), st.integers(0, 3)), max_size=4),
       st.integers(0, 4), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_border_snippets_are_the_untaken_snippets_nearest_a_sample(length, samples, border, nearest, seed):
    """Against the definition: every snippet not taken, outside every sample, whose distance to the nearest
    sample is in [``nearest``, ``border``], once, with that sample's class (the earlier one on a tie)."""
    rng = np.random.default_rng(seed)
    spans = [np.arange(s, min(s + n, length)) for s, n, _ in samples if s < length]
    labels = np.array([k for s, _, k in samples if s < length], dtype=np.int64)
    taken = rng.random(length) < 0.2
    for idx in spans:
        taken[idx] = True
    got, classes = border_snippets(length, spans, labels, taken, border, nearest)
    want, want_classes = [], []
    for t in range(length):
        dist = [max(int(idx.min()) - t, t - int(idx.max())) for idx in spans]
        near = [(d, j) for j, d in enumerate(dist) if 1 <= d <= border]
        if near and not taken[t] and min(near)[0] >= nearest:
            want.append(t)
            want_classes.append(labels[min(near)[1]])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(classes, want_classes)


def action_beside_actions(scorer: ContextScorer, data: dict) -> np.ndarray:
    """The scorer's probability of each test video's own action on its context snippets within 2 of an action
    (outputs: 3 contexts, then the 3 actions)."""
    beside = []
    for vid, feats in data["test"].items():
        act = (data["kinds"][vid] == ACTION).astype(float)
        nxt = (np.convolve(act, np.ones(5), mode="same") > 0) & (data["kinds"][vid] == CONTEXT)   # within 2
        with torch.no_grad():
            p = scorer(torch.from_numpy(feats).T[None])[0].T.numpy()
        beside.append(p[nxt, 3 + int(vid[-2:])])
    return np.concatenate(beside)


def test_border_adds_the_snippets_next_to_actions_as_their_class_context(world, trained):
    """With ``border``, each class's context output also learns the untaken snippets next to its action
    samples (counted there), the rest is unchanged, and the scorer's probability of the action on the test
    videos' context snippets within 2 of an action drops."""
    root, data = world
    pairs = trained[0]
    plain, base = train_context(pairs, root, ContextConfig())
    wide, info = train_context(pairs, root, ContextConfig(border=2))
    _, info_from2 = train_context(pairs, root, ContextConfig(border=2, border_from=2))
    extra, extra_from2 = np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64)
    for vs in pairs.videos:
        f = read_features(root / f"{vs.video_id}.h5").features
        taken = sampled(vs, len(f))
        extra += np.bincount(border_snippets(len(f), vs.action_snippets, vs.action_labels, taken, 2)[1], minlength=3)
        extra_from2 += np.bincount(border_snippets(len(f), vs.action_snippets, vs.action_labels, taken, 2, 2)[1],
                                   minlength=3)
    assert extra.sum() > extra_from2.sum() > 0
    assert info["counts"][:3] == [base["counts"][k] + int(extra[k]) for k in range(3)]
    assert info_from2["counts"][:3] == [base["counts"][k] + int(extra_from2[k]) for k in range(3)]
    assert info["counts"][3:6] == base["counts"][3:6] and info["counts"][-1] <= base["counts"][-1]
    plain_near, border_near = action_beside_actions(plain, data), action_beside_actions(wide, data)
    assert len(plain_near) > 10 and border_near.mean() < plain_near.mean()
    with pytest.raises(ValueError, match="border needs contexts"):
        ContextConfig(contexts=False, border=1)
    with pytest.raises(ValueError, match="window and border must be >= 0"):
        ContextConfig(border=-1)
    with pytest.raises(ValueError, match="border_from must be >= 1"):
        ContextConfig(border=2, border_from=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(2, 7), st.integers(0, 2**31 - 1))
def test_not_action_nll_is_minus_log_of_the_not_action_probability(n, outputs, seed):
    """-log Σ_{j ∈ not_action} softmax(z)_j against NumPy, for any non-empty subset of the outputs."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, outputs))
    subset = np.flatnonzero(rng.random(outputs) < 0.5)
    subset = subset if len(subset) else np.array([outputs - 1])
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    got = not_action_nll(torch.from_numpy(z), torch.from_numpy(subset)).numpy()
    np.testing.assert_allclose(got, -np.log(p[:, subset].sum(1)), rtol=1e-9, atol=1e-12)
    assert np.all(got >= -1e-12)


def test_border_as_not_action_is_a_partial_label(world, trained):
    """``border_as="not_action"``: the border snippets are counted apart (``not_action``), no output's hard
    samples change but "none" (which loses those snippets), and on the test videos' context snippets within 2
    of an action the scorer's probability of that action drops."""
    root, data = world
    pairs = trained[0]
    plain, base = train_context(pairs, root, ContextConfig())
    partial, info = train_context(pairs, root, ContextConfig(border=2, border_as="not_action"))
    extra = 0
    for vs in pairs.videos:
        f = read_features(root / f"{vs.video_id}.h5").features
        extra += len(border_snippets(len(f), vs.action_snippets, vs.action_labels, sampled(vs, len(f)), 2)[0])
    assert info["not_action"] == extra > 0 and base["not_action"] == 0
    assert info["counts"][:-1] == base["counts"][:-1] and info["counts"][-1] <= base["counts"][-1]
    plain_near, partial_near = action_beside_actions(plain, data), action_beside_actions(partial, data)
    assert len(plain_near) > 10 and partial_near.mean() < plain_near.mean()
    ContextConfig(contexts=False, border=1, border_as="not_action")          # needs the action outputs only
    with pytest.raises(ValueError, match="border needs actions"):
        ContextConfig(actions=False, border=1, border_as="not_action")
    with pytest.raises(ValueError, match="border_as must be context or not_action"):
        ContextConfig(border_as="action")


def test_crossfit_scores_each_training_video_by_a_scorer_learnt_without_it(world, trained):
    """Every training video (4 a class, 4 folds) gets scores once, from the scorer learnt on the other folds:
    fold 2's videos by hand; they differ from the scores of the scorer that saw them."""
    from common.annotations import hold_out, read_database

    root, _ = world
    scores = crossfit_scores(root, root / "annotations.json", "validation", FIRST)
    train = sorted(vs.video_id for vs in trained[0].videos)
    assert sorted(scores) == train
    rest, held = hold_out(read_database(root / "annotations.json"), "validation", fold=2)
    assert len(held) == 3                                                            # one video a class
    by_hand = train_context(build_pairs(root, rest, "validation", SampleConfig()), root, FIRST)[0]
    for vid in held:
        f = torch.from_numpy(read_features(root / f"{vid}.h5").features).T[None]
        with torch.no_grad():
            want, seen = by_hand(f)[0].T.numpy(), trained[1](f)[0].T.numpy()
        np.testing.assert_allclose(scores[vid], want, rtol=1e-6, atol=1e-7)
        assert scores[vid].shape == (f.shape[2], 3) and not np.allclose(scores[vid], seen, atol=1e-3)
    with pytest.raises(ValueError, match="folds must be >= 2"):
        crossfit_scores(root, root / "annotations.json", folds=1)


def test_every_fold_scorer_answers_in_the_class_order_of_the_all_data_scorer(world):
    """Class ids go by first appearance, so a fold that holds out each class's first video would number the
    classes otherwise than the whole training set, and its out-of-fold scores would put one class's evidence in
    another's channel (the rendered worlds' bug, nineteenth round). Here the annotations list each class's first
    video first (classes A, B, C), then the others in reverse class order: fold 3, which holds out those first
    videos, sees the classes as C, B, A. Its scores must still be in the order A, B, C: on each held-out video
    its context scores peak at the video's own class, as the all-data scorer's do."""
    from common.annotations import hold_out, load_ground_truth, read_database

    root, _ = world
    db = read_database(root / "annotations.json")
    by_class: dict[str, list[str]] = {}
    for vid in sorted(db):
        if db[vid]["subset"] == "validation" and db[vid].get("annotations"):
            by_class.setdefault(db[vid]["annotations"][0]["label"], []).append(vid)
    firsts = [vids[0] for vids in by_class.values()]
    others = [vid for vids in reversed(list(by_class.values())) for vid in vids[1:]]
    reordered = {vid: db[vid] for vid in firsts + others} | {vid: e for vid, e in db.items() if vid not in by_class
                                                           and e["subset"] != "validation"}
    order = load_ground_truth(reordered, "validation").classes
    rest, held = hold_out(reordered, "validation", fold=3)
    assert held == sorted(firsts) and load_ground_truth(rest, "validation").classes == order[::-1]   # the premise
    scores = crossfit_scores(root, reordered, "validation", FIRST)
    by_hand = train_context(build_pairs(root, rest, "validation", SampleConfig(), classes=order), root, FIRST)[0]
    all_data = train_context(build_pairs(root, reordered, "validation", SampleConfig()), root, FIRST)[0]
    for vid in held:
        f = read_features(root / f"{vid}.h5").features
        np.testing.assert_allclose(scores[vid], by_hand.score(f), rtol=1e-6, atol=1e-7)
        own = order.index(reordered[vid]["annotations"][0]["label"])
        assert scores[vid].sum(0).argmax() == all_data.score(f).sum(0).argmax() == own
    with pytest.raises(RefactorError, match="has classes not in the given class order"):
        build_pairs(root, reordered, "validation", SampleConfig(), classes=order[:-1])
    # a class in the order that no fold's videos hold: no fold can learn it, so each keeps the all-data scorer
    with pytest.warns(UserWarning, match="without its videos class 'ghost' has no samples"):
        folds = crossfit_scorers(root, reordered, "validation", FIRST, classes=order + ["ghost"])
    assert folds and all(scorer is None for scorer, _ in folds)


def test_max_negatives_draws_a_subset(world, trained):
    root, _ = world
    pairs = trained[0]
    _, info = train_context(pairs, root, replace(FIRST, max_negatives=50))
    assert info["counts"][-1] == 50 and info["counts"][:-1] == trained[2]["counts"][:-1]
    _, full = train_context(pairs, root, ContextConfig())
    _, info = train_context(pairs, root, ContextConfig(max_actions=30))
    assert sum(info["counts"][3:6]) == 30 < sum(full["counts"][3:6])
    assert info["counts"][:3] == full["counts"][:3] and info["counts"][-1] == full["counts"][-1]


def test_checkpoint_round_trip_and_one_line_errors(world, trained, tmp_path):
    root, data = world
    pairs, scorer, info, path = trained
    loaded, ckpt = load_context(path, in_dim=C)
    assert ckpt["classes"] == pairs.classes and ckpt["counts"] == info["counts"]
    assert ckpt["feature_layout"] == {"streams": list(pairs.streams), "dim": C}
    x = torch.from_numpy(np.stack([f for f in data["test"].values()][0][None])).transpose(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), scorer(x), rtol=0, atol=0)
    with pytest.raises(RefactorError, match=f"trained on {C}-d features .*these are {2 * C}-d"):
        load_context(path, in_dim=2 * C)
    with pytest.raises(RefactorError, match="no such context-score checkpoint"):
        load_context(tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RefactorError, match=r"is not a context-score checkpoint") as exc:
        load_context(bad)
    assert "\n" not in str(exc.value)
    edited = torch.load(path, weights_only=True)
    edited["classes"] = edited["classes"][:2]                       # the weights have K + 1 = 4 rows, not 3
    torch.save(edited, tmp_path / "edited.pt")
    with pytest.raises(RefactorError, match=r"is not a context-score checkpoint \(RuntimeError: ") as exc:
        load_context(tmp_path / "edited.pt")
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="far must be a cosine"):
        ContextConfig(far=2.0)
    with pytest.raises(RefactorError, match="no feature file"):
        train_context(pairs, tmp_path)


def test_the_detector_carries_the_frozen_scorer(world, trained, tmp_path):
    """Front ``context``: f' = [x, p(x)]; training leaves the scorer's weights as they were; the detector's
    checkpoint alone gives the detections (the context checkpoint moved away), and they equal the model's."""
    root, _ = world
    _, scorer, _, path = trained
    train = TrainConfig(epochs=2, window=64, seed=0)
    model, meta = train_detector(root, root / "annotations.json", train=train, front="context",
                                 context_checkpoint=path, progress=False)
    assert model.config.front == "context" and model.config.feature_dim == C + 3
    for name, value in scorer.state_dict().items():
        torch.testing.assert_close(model.front[0].state_dict()[name], value, rtol=0, atol=0)
    assert [c["sha256"] for c in meta["context_checkpoints"]] == [sha256_file(path)]
    x = torch.randn(2, C, 20)
    with torch.no_grad():
        enc = model.encode(x, torch.tensor([20, 13]))
        torch.testing.assert_close(enc.features[0], torch.cat([x[0], scorer(x[:1])[0]]))
        assert torch.all(enc.features[1, :, 13:] == 0)
    det = save_detector(tmp_path / "det.pt", model, meta)
    moved = tmp_path / "elsewhere.pt"
    path.rename(moved)
    try:
        again, _ = load_detector(det)
        assert again.config.front == "context"
        run_detector(det, root, out=tmp_path / "pred.json", subset="test", progress=False)
    finally:
        moved.rename(path)
    assert json.loads((tmp_path / "pred.json").read_text())["results"]
    with pytest.raises(DetectorError, match="front 'context' needs a context-score checkpoint"):
        train_detector(root, root / "annotations.json", train=train, front="context", progress=False)
    with pytest.raises(DetectorError, match="only used by front 'context'"):
        train_detector(root, root / "annotations.json", train=train, front="none", context_checkpoint=path,
                       progress=False)


def test_cli_and_api_agree(world, trained, tmp_path):
    """``refactor context`` writes the checkpoint the API writes (same weights); ``detect train --context-score``
    trains the context front; ``--front none`` with it is refused in one line."""
    from detect.__main__ import main as detect_main
    from refactor.__main__ import main as refactor_main

    root, _ = world
    out = tmp_path / "cli.pt"
    assert refactor_main(["context", "--features", str(root), "--annotations", str(root / "annotations.json"),
                          "--out", str(out), "--no-actions", "--window", "0"]) == 0
    cli, _ = load_context(out)
    for name, value in trained[1].state_dict().items():
        torch.testing.assert_close(cli.state_dict()[name], value, rtol=0, atol=0)
    det = tmp_path / "det.pt"
    assert detect_main(["train", "--features", str(root), "--annotations", str(root / "annotations.json"),
                        "--out", str(det), "--context-score", str(out), "--epochs", "1", "--window", "64"]) == 0
    assert load_detector(det)[0].config.front == "context"
    assert detect_main(["train", "--features", str(root), "--annotations", str(root / "annotations.json"),
                        "--out", str(tmp_path / "x.pt"), "--context-score", str(out), "--front", "none"]) != 0


def _neighbours_by_loop(x: np.ndarray, window: int, length: int) -> np.ndarray:
    """(C, T) -> (3C, length): each of the first ``length`` snippets, the mean of the ``window`` before it and of
    the ``window`` after it, indices clipped to [0, length - 1]."""
    out = np.zeros((3 * x.shape[0], length))
    for t in range(length):
        before = [x[:, min(max(t - j, 0), length - 1)] for j in range(1, window + 1)]
        after = [x[:, min(max(t + j, 0), length - 1)] for j in range(1, window + 1)]
        out[:, t] = np.concatenate([x[:, t], np.mean(before, 0), np.mean(after, 0)])
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 12), st.integers(1, 6), st.data())
def test_with_neighbours_against_a_loop(c, b, t, window, data):
    """The means before and after each snippet, the video's first and last valid snippet repeated past its ends
    (each sequence's own length under a mask); window 0 is the features themselves."""
    lengths = data.draw(st.lists(st.integers(1, t), min_size=b, max_size=b))
    x = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1))).normal(size=(b, c, t))
    mask = (np.arange(t)[None, :] < np.array(lengths)[:, None]).astype(np.float64)[:, None, :]
    got = with_neighbours(torch.from_numpy(x), window, torch.from_numpy(mask)).numpy()
    assert got.shape == (b, 3 * c, t)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(got[i, :, :n], _neighbours_by_loop(x[i], window, n), rtol=1e-12, atol=1e-12)
    full = with_neighbours(torch.from_numpy(x), window).numpy()
    np.testing.assert_allclose(full[0], _neighbours_by_loop(x[0], window, t), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(with_neighbours(torch.from_numpy(x), 0).numpy(), x)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 8), st.integers(0, 3), st.booleans(), st.booleans(),
       st.integers(0, 2**31 - 1))
def test_scorer_with_actions_and_window_against_numpy(c, k, t, window, contexts, actions, seed):
    """The outputs: softmax over [K contexts, K actions, none] of the standardised [f, mean before, mean after],
    without "none" and without the outputs switched off."""
    if not (contexts or actions):
        with pytest.raises(ValueError, match="contexts or actions"):
            ContextScorer(c, k, contexts, actions, window)
        return
    rng = np.random.default_rng(seed)
    scorer = ContextScorer(c, k, contexts, actions, window)
    inputs, out = c * (3 if window else 1), k * (contexts + actions)
    assert scorer.out_dim == out and scorer.linear.weight.shape == (out + 1, inputs)
    mean, std = rng.normal(size=inputs), rng.uniform(0.5, 2, size=inputs)
    w, bias = rng.normal(size=(out + 1, inputs)), rng.normal(size=out + 1)
    with torch.no_grad():
        for name, value in (("mean", mean), ("std", std), ("linear.weight", w), ("linear.bias", bias)):
            scorer.get_parameter(name).copy_(torch.from_numpy(value)) if "." in name else \
                scorer.get_buffer(name).copy_(torch.from_numpy(value))
    x = rng.normal(size=(c, t))
    with torch.no_grad():
        p = scorer(torch.from_numpy(x).float()[None])[0].numpy()
    g = _neighbours_by_loop(x, window, t) if window else x
    z = w @ ((g - mean[:, None]) / std[:, None]) + bias[:, None]
    ref = np.exp(z - z.max(0))
    np.testing.assert_allclose(p, (ref / ref.sum(0))[:out], rtol=1e-4, atol=1e-6)


def test_training_with_actions_and_window(world, trained, tmp_path):
    """With ``actions``: outputs K contexts (the coupling samples), K actions (each action sample's snippets), then
    the same "none" samples; on the test videos a video's own action output is high on its action snippets and
    low on background, its own context output highest on its context snippets. Without ``contexts``: the actions
    and "none" only. The checkpoint carries the shape, and a format-1 checkpoint is read as contexts only."""
    from benchmarks.feature_worlds import ACTION

    root, data = world
    pairs, base_scorer, base_info, base_path = trained
    config = ContextConfig()                                  # the default: actions, window 2
    assert (config.contexts, config.actions, config.window) == (True, True, 2)
    scorer, info = train_context(pairs, root, config)
    k = 3
    per_class = np.zeros(k, dtype=int)
    for vs in pairs.videos:
        for idx, label in zip(vs.action_snippets, vs.action_labels):
            per_class[label] += len(idx)
    assert info["counts"] == base_info["counts"][:k] + per_class.tolist() + base_info["counts"][-1:]
    own = {(kind, part): [] for kind in (ACTION, CONTEXT, BACKGROUND) for part in (0, 1)}     # part 1: actions
    for vid, feats in data["test"].items():
        with torch.no_grad():
            p = scorer(torch.from_numpy(feats).T[None])[0].T.numpy()          # (T, 2K)
        cls = int(vid[-2:])
        for kind, part in own:
            own[kind, part].append(p[data["kinds"][vid] == kind, part * k + cls])
    mean = {key: np.concatenate(v).mean() for key, v in own.items()}
    # (measured: action output 0.92 on action snippets, 0.11 on background; context output 0.34 on context
    # snippets, 0.06 on action snippets, 0.04 on background: this small world's contexts are partly taken for
    # actions, but never the other way round)
    assert mean[ACTION, 1] > 0.8 and mean[BACKGROUND, 1] < 0.15, mean
    assert mean[CONTEXT, 0] > 3 * max(mean[ACTION, 0], mean[BACKGROUND, 0]), mean
    only, only_info = train_context(pairs, root, ContextConfig(contexts=False, actions=True))
    assert only.out_dim == k and only_info["counts"] == per_class.tolist() + base_info["counts"][-1:]

    path = save_context(tmp_path / "aw.pt", scorer, pairs, SampleConfig(), config, info)
    loaded, ckpt = load_context(path, in_dim=C)
    assert (loaded.contexts, loaded.actions, loaded.window) == (True, True, 2) and ckpt["format_version"] == 3
    x = torch.from_numpy(next(iter(data["test"].values()))).T[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), scorer(x), rtol=0, atol=0)
    old = torch.load(base_path, weights_only=True)                      # as last session wrote them: format 1
    old["format_version"] = 1
    old["config"] = {key: v for key, v in old["config"].items() if key not in ("contexts", "actions", "window")}
    torch.save(old, tmp_path / "format1.pt")
    again, _ = load_context(tmp_path / "format1.pt")
    assert (again.contexts, again.actions, again.window) == (True, False, 0)
    with torch.no_grad():
        torch.testing.assert_close(again(x), base_scorer(x), rtol=0, atol=0)
    old["format_version"] = 4
    torch.save(old, tmp_path / "format4.pt")
    with pytest.raises(RefactorError, match=r"of format 1 or 2 or 3 \(it has format 4\)"):
        load_context(tmp_path / "format4.pt")
    for bad in ({"window": -1}, {"contexts": False, "actions": False}):
        with pytest.raises(ValueError):
            ContextConfig(**bad)


def test_detector_front_with_actions_and_window(world, trained, tmp_path):
    """The front takes the scorer's shape from its checkpoint (f' has C + 2K channels), applies it to each
    sequence as if alone (a padded sequence's last valid snippet repeats, not the padding), and the detector's
    checkpoint alone rebuilds it."""
    root, _ = world
    pairs = trained[0]
    config = ContextConfig(actions=True, window=3)
    scorer, info = train_context(pairs, root, config)
    path = save_context(tmp_path / "aw.pt", scorer, pairs, SampleConfig(), config, info)
    model, meta = train_detector(root, root / "annotations.json", train=TrainConfig(epochs=1, window=64, seed=0),
                                 front="context", context_checkpoint=path, progress=False)
    assert model.config.feature_dim == C + 6 and model.config.context_scores == (config,)
    x = torch.randn(2, C, 20)
    x[1, :, 13:] = 0
    with torch.no_grad():
        enc = model.encode(x, torch.tensor([20, 13]))
        torch.testing.assert_close(enc.features[1, C:, :13], scorer(x[1:2, :, :13])[0])
        torch.testing.assert_close(enc.features[0, C:], scorer(x[:1])[0])
    det = save_detector(tmp_path / "det.pt", model, meta)
    again, _ = load_detector(det)
    assert again.config.context_scores == (config,)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)


# --- several scores beside f, given scores, cross-fitted training (twelfth/thirteenth rounds) ------------------------


def _one_video_class(root: Path, tmp_path: Path) -> tuple[Path, str]:
    """The world's annotations with one class left a single training video (its others moved to the test
    subset): no fold can hold that video out. Returns (the annotation file, that video's id)."""
    db = json.loads((root / "annotations.json").read_text())
    by_class: dict[str, list[str]] = {}
    for vid in sorted(db["database"]):
        entry = db["database"][vid]
        if entry["subset"] == "validation" and entry["annotations"]:
            by_class.setdefault(entry["annotations"][0]["label"], []).append(vid)
    label = sorted(by_class)[0]
    for vid in by_class[label][1:]:
        db["database"][vid]["subset"] = "test"
    path = tmp_path / "one_video_class.json"
    path.write_text(json.dumps(db))
    return path, by_class[label][0]


@pytest.fixture(scope="module")
def second(world, trained, tmp_path_factory):
    """A second context-score checkpoint (actions and a window) beside ``trained``'s first form."""
    root, _ = world
    config = ContextConfig(actions=True, window=2)
    scorer, info = train_context(trained[0], root, config)
    path = save_context(tmp_path_factory.mktemp("ctx2") / "aw.pt", scorer, trained[0], SampleConfig(), config, info)
    return scorer, path


TWO = TrainConfig(epochs=1, window=64, seed=0, context_folds=2)


@pytest.fixture(scope="module")
def two_scores(world, trained, second):
    """A detector with both scores beside f, trained on cross-fitted scores (``TWO``), and its metadata."""
    root, _ = world
    return train_detector(root, root / "annotations.json", train=TWO, front="context",
                          context_checkpoint=[trained[3], second[1]], progress=False)


def test_two_scores_beside_f_and_old_checkpoints_load(world, trained, second, two_scores, tmp_path):
    """f' = [x, p_1(x), p_2(x)] in the order the checkpoints are given (the scorers learnt on every training
    video, also when training saw cross-fitted scores); the checkpoint alone rebuilds both scorers; a one-scorer
    checkpoint of the layout before several scorers (``context_score``, ``front.*``; or, older, no field at all)
    loads into today's and gives the same model."""
    root, _ = world
    train = TrainConfig(epochs=1, window=64, seed=0)
    model, meta = two_scores
    assert meta["train"]["context_folds"] == 2
    assert model.config.feature_dim == C + 3 + 6
    assert model.config.context_scores == (FIRST, ContextConfig(actions=True, window=2))
    x = torch.randn(2, C, 20)
    with torch.no_grad():
        enc = model.encode(x, torch.tensor([20, 20]))
        torch.testing.assert_close(enc.features, torch.cat([x, trained[1](x), second[0](x)], dim=1))
    again, _ = load_detector(save_detector(tmp_path / "two.pt", model, meta))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)

    one, meta1 = train_detector(root, root / "annotations.json", train=train, front="context",
                                context_checkpoint=trained[3], progress=False)
    ckpt = load_checkpoint(save_detector(tmp_path / "one.pt", one, meta1), DetectorError, "detector")
    old_state = {k.replace("front.0.", "front.", 1): v for k, v in ckpt["state_dict"].items()}
    assert any(k.startswith("front.linear") for k in old_state)
    for label, config in (("context_score field", ckpt["config"] | {"context_score": asdict(FIRST)}),
                          ("no field", dict(ckpt["config"]))):
        del config["context_scores"]
        payload = {k: v for k, v in ckpt.items() if k not in ("kind", "format_version")}
        path = save_checkpoint(tmp_path / f"old_{label[:2]}.pt", ckpt["kind"], ckpt["format_version"],
                               payload | {"config": config, "state_dict": old_state})
        old, _ = load_detector(path)
        assert old.config.context_scores == (FIRST,), label
        for name, value in one.state_dict().items():
            torch.testing.assert_close(old.state_dict()[name], value, rtol=0, atol=0)


def test_given_scores_replace_the_front_scores(world, trained):
    """``encode(x, lengths, scores)``: front context puts ``scores`` beside x (zero past each length) instead of
    its scorers'; a wrong shape, or scores for another front, is a one-line ValueError."""
    model = Detector(DetectorConfig(in_dim=C, num_classes=3, front="context", context_scores=(FIRST,))).eval()
    x, given = torch.randn(2, C, 20), torch.rand(2, 3, 20)
    with torch.no_grad():
        enc = model.encode(x, torch.tensor([20, 13]), given)
    torch.testing.assert_close(enc.features[0], torch.cat([x[0], given[0]]))
    torch.testing.assert_close(enc.features[1, :, :13], torch.cat([x[1], given[1]])[:, :13])
    assert torch.all(enc.features[1, :, 13:] == 0)
    with pytest.raises(ValueError, match="the front expects"):
        model.encode(x, None, torch.rand(2, 4, 20))
    plain = Detector(DetectorConfig(in_dim=C, num_classes=3, front="none"))
    with pytest.raises(ValueError, match="only front 'context' takes given scores"):
        plain.encode(x, None, given)
    with pytest.raises(ValueError, match="context_scores are for front 'context'"):
        DetectorConfig(in_dim=C, num_classes=3, front="none", context_scores=(FIRST,))


def test_score_gain_multiplies_the_scores_and_leaves_f_alone(world, trained):
    """``DetectorConfig.score_gain``: f' = f ⊕ gain · p, with the front's own scores and with given ones, zero
    past each length; it survives the config's round trip (older configs read as gain 1); other fronts ignore
    it."""
    plain = Detector(DetectorConfig(in_dim=C, num_classes=3, front="context", context_scores=(FIRST,))).eval()
    gained = Detector(DetectorConfig(in_dim=C, num_classes=3, front="context", context_scores=(FIRST,),
                                     score_gain=8.0)).eval()
    gained.load_state_dict(plain.state_dict())                # the same scorer and detector weights
    x, given = torch.randn(2, C, 20), torch.rand(2, 3, 20)
    with torch.no_grad():
        a, b = plain.encode(x, torch.tensor([20, 13])), gained.encode(x, torch.tensor([20, 13]))
        torch.testing.assert_close(b.features[:, :C], a.features[:, :C], rtol=0, atol=0)
        torch.testing.assert_close(b.features[:, C:], 8.0 * a.features[:, C:])
        assert torch.all(b.features[1, :, 13:] == 0)
        g = gained.encode(x, None, given)
    torch.testing.assert_close(g.features[0], torch.cat([x[0], 8.0 * given[0]]))
    config = gained.config.to_dict()
    assert DetectorConfig.from_dict(config).score_gain == 8.0
    assert DetectorConfig.from_dict({k: v for k, v in config.items() if k != "score_gain"}).score_gain == 1.0
    with pytest.raises(ValueError, match="score_gain must be > 0"):
        DetectorConfig(in_dim=C, num_classes=3, front="context", score_gain=0.0)
    base = Detector(DetectorConfig(in_dim=C, num_classes=3, front="none", score_gain=8.0)).eval()
    with torch.no_grad():
        torch.testing.assert_close(base.encode(x).features, x, rtol=0, atol=0)


def test_crossfit_front_scores_are_out_of_fold(world, trained, second, tmp_path):
    """Each training video's rows: the fold scorer that held it out (for each checkpoint, concatenated in
    order); a video no fold holds out (its class's only training video) keeps the scorer learnt on all."""
    from detect.train import crossfit_front_scores
    root, _ = world
    ann, alone = _one_video_class(root, tmp_path)
    videos, _, streams, _ = scan_videos(root, None, ann, "validation", require_annotations=True)
    ckpts = [load_context(p)[1] for p in (trained[3], second[1])]
    scorers = [trained[1], second[0]]
    got, kept = crossfit_front_scores(root, ann, "validation", videos, streams, scorers, ckpts, folds=2)
    assert sorted(got) == sorted(v.video_id for v in videos) and kept == [alone]
    out_of_fold = [crossfit_scores(root, ann, "validation", c, folds=2)
                   for c in (FIRST, ContextConfig(actions=True, window=2))]
    assert alone not in out_of_fold[0] and len(out_of_fold[0]) == len(videos) - 1
    for v in videos:
        x = read_window(v, streams, 0, v.num_snippets)
        expect = [held[v.video_id] if v.video_id in held else s.score(x) for s, held in zip(scorers, out_of_fold)]
        np.testing.assert_array_equal(got[v.video_id], np.concatenate(expect, axis=1))
        if v.video_id != alone:       # out of fold: not what the scorer that saw the video gives
            assert not np.allclose(got[v.video_id][:, :3], trained[1].score(x), atol=1e-3)


def test_a_fold_that_leaves_a_class_without_coupling_samples_keeps_the_all_data_scorer(world, trained, monkeypatch):
    """Where the other folds leave a class without coupling samples (here: the second fold's pairs, made to
    fail), that fold has no scorer: one warning names it, its videos keep the scorer learnt on every video
    (and are listed as kept), ``crossfit_scores`` leaves them out, and the other folds are as before."""
    import refactor.context as context
    from common.annotations import hold_out, read_database
    from detect.train import crossfit_front_scores
    from refactor import NoCouplingSamples

    root, _ = world
    ann = root / "annotations.json"
    calls = []

    def second_fails(feature_dir, annotations, *rest, **named):
        calls.append(annotations)
        if len(calls) % 4 == 2:
            raise NoCouplingSamples("class 'x' has no coupling samples (1 such classes)")
        return build_pairs(feature_dir, annotations, *rest, **named)

    videos, _, streams, _ = scan_videos(root, None, ann, "validation", require_annotations=True)
    _, fold2 = hold_out(read_database(ann), "validation", fold=1)
    assert fold2
    with monkeypatch.context() as m:
        m.setattr(context, "build_pairs", second_fails)
        with pytest.warns(UserWarning, match=r"cross-fitting, fold 2 of 4: without its videos class 'x' has no "
                                             rf"coupling samples .*; its {len(fold2)} videos keep the scores"):
            scorers = context.crossfit_scorers(root, ann, "validation", FIRST)
        assert [held for _, held in scorers][1] == fold2 and scorers[1][0] is None
        assert all(scorer is not None for i, (scorer, _) in enumerate(scorers) if i != 1)
        with pytest.warns(UserWarning, match="fold 2 of 4"):
            partial = context.crossfit_scores(root, ann, "validation", FIRST)
        with pytest.warns(UserWarning, match="fold 2 of 4"):
            got, kept = crossfit_front_scores(root, ann, "validation", videos, streams, [trained[1]],
                                              [load_context(trained[3])[1]], folds=4)
    full = crossfit_scores(root, ann, "validation", FIRST)
    assert sorted(partial) == sorted(set(full) - set(fold2)) and kept == sorted(fold2)
    for v in videos:
        x = read_window(v, streams, 0, v.num_snippets)
        want = trained[1].score(x) if v.video_id in fold2 else full[v.video_id]
        np.testing.assert_allclose(got[v.video_id], want, rtol=1e-6, atol=1e-7)


def test_context_folds_trains_on_the_given_scores(world, trained, monkeypatch):
    """With ``context_folds`` the detector trains on the scores :func:`crossfit_front_scores` gives: given the
    all-data scorer's own scores (windows longer than every video, so the front's scores are the same),
    training is the training without cross-fitting; given random scores, every step sees them (each video's
    once an epoch). (That the model keeps the scorers learnt on every video: ``two_scores``.)"""
    import detect.train as detect_train
    root, _ = world
    ann = root / "annotations.json"
    base = TrainConfig(epochs=2, window=128, seed=0, batch_size=4)   # 12 videos: 3 steps, no window repeated
    plain, meta = train_detector(root, ann, train=base, front="context", context_checkpoint=trained[3],
                                 progress=False)

    def own_scores(feature_dir, annotations, subset, videos, streams, scorers, checkpoints, folds, device, progress):
        assert folds == 2 and len(scorers) == 1
        return {v.video_id: scorers[0].score(read_window(v, streams, 0, v.num_snippets)) for v in videos}, []

    with monkeypatch.context() as m:
        m.setattr(detect_train, "crossfit_front_scores", own_scores)
        same, meta_same = train_detector(root, ann, train=replace(base, context_folds=2), front="context",
                                         context_checkpoint=trained[3], progress=False)
    for a, b in zip(meta["history"], meta_same["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    rng = np.random.default_rng(0)
    given: dict[str, np.ndarray] = {}

    def random_scores(feature_dir, annotations, subset, videos, streams, scorers, checkpoints, folds, device,
                      progress):
        given.update({v.video_id: rng.random((v.num_snippets, 3), dtype=np.float32) for v in videos})
        return given, []

    seen: list[torch.Tensor | None] = []
    encode = Detector.encode

    def spy(self, x, lengths=None, scores=None):
        seen.append(None if scores is None else scores.detach().clone())
        return encode(self, x, lengths, scores)

    with monkeypatch.context() as m:
        m.setattr(detect_train, "crossfit_front_scores", random_scores)
        m.setattr(Detector, "encode", spy)
        train_detector(root, ann, train=replace(base, context_folds=2), front="context",
                       context_checkpoint=trained[3], progress=False)
    assert len(seen) == 3 * base.epochs and all(s is not None for s in seen)
    per_epoch = len(seen) // base.epochs            # one window per video: each video's scores once an epoch
    for e in range(base.epochs):
        total = sum(float(s.double().sum()) for s in seen[e * per_epoch:(e + 1) * per_epoch])
        assert total == pytest.approx(sum(float(g.astype(np.float64).sum()) for g in given.values()), rel=1e-9)
    with pytest.raises(DetectorError, match="--context-folds cross-fits the scores of front 'context'"):
        train_detector(root, ann, train=replace(base, context_folds=2), front="none", progress=False)
    with pytest.raises(ValueError, match="context_folds must be 0"):
        TrainConfig(context_folds=1)


def test_cli_several_scores_and_folds_agree_with_the_api(world, trained, second, two_scores, tmp_path):
    """``detect train --context-score A --context-score B --context-folds 2`` trains the model the API does."""
    from detect.__main__ import main as detect_main
    root, _ = world
    out = tmp_path / "cli.pt"
    assert detect_main(["train", "--features", str(root), "--annotations", str(root / "annotations.json"),
                        "--out", str(out), "--context-score", str(trained[3]), "--context-score", str(second[1]),
                        "--context-folds", "2", "--epochs", str(TWO.epochs), "--window", str(TWO.window)]) == 0
    cli, _ = load_detector(out)
    api = two_scores[0]
    assert cli.config == api.config
    for name, value in api.state_dict().items():
        torch.testing.assert_close(cli.state_dict()[name], value, rtol=0, atol=0)


def test_crossfit_holds_out_under_a_subset_name_not_in_use(world, tmp_path):
    """Annotations that already use the subsets ``heldout`` and ``crossfit`` (``detect fit``'s selection holds
    videos out as ``heldout``) are cross-fitted as without them."""
    root, _ = world
    db = json.loads((root / "annotations.json").read_text())
    tests = sorted(v for v, e in db["database"].items() if e["subset"] == "test")
    db["database"][tests[0]]["subset"] = "Heldout"
    db["database"][tests[1]]["subset"] = "crossfit"
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(db))
    got = crossfit_scores(root, renamed, "validation", FIRST, folds=2)
    expect = crossfit_scores(root, root / "annotations.json", "validation", FIRST, folds=2)
    assert sorted(got) == sorted(expect)
    for vid in expect:
        np.testing.assert_array_equal(got[vid], expect[vid])


def _boundary_gains(scorer: ContextScorer, pairs, root: Path) -> tuple[list[float], list[float]]:
    """Per training instance of 5 snippets or more (where the labels are, so a wrong label shows): its class's
    start output at its first snippet minus the mean over its inner snippets (all but two at each end), and the
    same for the end output at its last snippet."""
    k = len(pairs.classes)
    start_gain, end_gain = [], []
    for vs in pairs.videos:
        p = scorer.score(read_features(root / f"{vs.video_id}.h5").features)
        for idx, c in zip(vs.action_snippets, vs.action_labels):
            if len(idx) >= 5:
                inner = np.sort(idx)[2:-2]
                start_gain.append(p[idx.min(), c] - p[inner, c].mean())
                end_gain.append(p[idx.max(), k + c] - p[inner, k + c].mean())
    return start_gain, end_gain


def test_boundary_targets_learn_where_actions_start_and_end(world, trained):
    """``targets="boundaries"``: K start and K end outputs learnt from the first and last snippet of each action
    sample against every other snippet (counts by hand); on every training instance of 5 snippets or more, a
    class's start output is far higher at its first snippet than inside it, and its end output at its last."""
    root, data = world
    pairs = trained[0]
    k = len(pairs.classes)
    config = ContextConfig(targets="boundaries", window=2)
    assert config.outputs(k) == 2 * k
    scorer, info = train_context(pairs, root, config)
    assert scorer.out_dim == 2 * k
    per_class = np.bincount(np.concatenate([vs.action_labels for vs in pairs.videos]), minlength=k)
    snippets = sum(len(read_features(root / f"{vs.video_id}.h5").features) for vs in pairs.videos)
    edges = sum(len({int(i.min()) for i in vs.action_snippets} | {int(i.max()) for i in vs.action_snippets})
                for vs in pairs.videos)
    assert info["counts"][:k] == per_class.tolist() and info["counts"][k:2 * k] == per_class.tolist()
    assert info["counts"][2 * k] == snippets - edges
    start_gain, end_gain = _boundary_gains(scorer, pairs, root)
    assert len(start_gain) >= 10 and min(start_gain) > 0.5 and min(end_gain) > 0.5     # measured: 0.92, 0.90
    with pytest.raises(ValueError, match="border is a rule of targets 'kinds'"):
        ContextConfig(targets="boundaries", border=2)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6), st.integers(0, 2), st.integers(1, 5),
       st.integers(0, 2**31 - 1))
def test_hidden_scorer_against_numpy(c, k, t, window, hidden, seed):
    """``hidden`` > 0: softmax(W2 relu(W1 (g - μ) / σ + b1) + b2) without "none"; the L2 penalty covers W1 and W2."""
    rng = np.random.default_rng(seed)
    scorer = ContextScorer(c, k, True, True, window, hidden)
    inputs, out = c * (3 if window else 1), 2 * k
    assert scorer.hidden.weight.shape == (hidden, inputs) and scorer.linear.weight.shape == (out + 1, hidden)
    assert [tuple(w.shape) for w in scorer.weights()] == [(out + 1, hidden), (hidden, inputs)]
    values = {"mean": rng.normal(size=inputs), "std": rng.uniform(0.5, 2, size=inputs),
              "hidden.weight": rng.normal(size=(hidden, inputs)), "hidden.bias": rng.normal(size=hidden),
              "linear.weight": rng.normal(size=(out + 1, hidden)), "linear.bias": rng.normal(size=out + 1)}
    scorer.load_state_dict({name: torch.from_numpy(v).float() for name, v in values.items()}, strict=True)
    x = rng.normal(size=(c, t))
    with torch.no_grad():
        p = scorer(torch.from_numpy(x).float()[None])[0].numpy()
    g = _neighbours_by_loop(x, window, t) if window else x
    h = np.maximum(values["hidden.weight"] @ ((g - values["mean"][:, None]) / values["std"][:, None])
                   + values["hidden.bias"][:, None], 0)
    z = values["linear.weight"] @ h + values["linear.bias"][:, None]
    ref = np.exp(z - z.max(0))
    np.testing.assert_allclose(p, (ref / ref.sum(0))[:out], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="hidden must be >= 0"):
        ContextConfig(hidden=-1)


def test_hidden_boundary_scorer_learns_saves_and_loads(world, trained, tmp_path):
    """A boundary scorer with a hidden layer learns where actions start and end as the linear one does (on the
    training videos), its checkpoint (format 3) rebuilds it exactly, a format-2 checkpoint (no ``hidden``) loads as
    a linear scorer, and a detector's context front built from it carries the hidden layer."""
    root, data = world
    pairs = trained[0]
    k = len(pairs.classes)
    config = ContextConfig(targets="boundaries", window=2, hidden=16)
    scorer, info = train_context(pairs, root, config)
    assert scorer.hidden is not None and scorer.hidden.weight.shape == (16, 3 * C)
    linear, linear_info = train_context(pairs, root, replace(config, hidden=0))
    assert info["counts"] == linear_info["counts"]
    # 16 ReLU units can hold the linear scorer's 2K + 1 = 7 logits (rank <= 7, two units a direction), so the
    # seeded fit from scratch ends lower on the training samples
    assert info["final_loss"] < linear_info["final_loss"], (info["final_loss"], linear_info["final_loss"])
    start_gain, end_gain = _boundary_gains(scorer, pairs, root)
    assert len(start_gain) >= 10 and min(start_gain) > 0.5 and min(end_gain) > 0.5
    path = save_context(tmp_path / "hidden.pt", scorer, pairs, SampleConfig(), config, info)
    loaded, ckpt = load_context(path, in_dim=C)
    assert ckpt["format_version"] == 3 and loaded.hidden.out_features == 16
    x = torch.from_numpy(next(iter(data["test"].values()))).T[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), scorer(x), rtol=0, atol=0)
    lin_path = save_context(tmp_path / "linear.pt", linear, pairs, SampleConfig(), replace(config, hidden=0),
                            linear_info)
    old = torch.load(lin_path, weights_only=True)                      # as format 2 wrote it: no ``hidden``
    old["format_version"] = 2
    old["config"] = {key: v for key, v in old["config"].items() if key != "hidden"}
    torch.save(old, tmp_path / "format2.pt")
    again, _ = load_context(tmp_path / "format2.pt")
    assert again.hidden is None
    with torch.no_grad():
        torch.testing.assert_close(again(x), linear(x), rtol=0, atol=0)
    model = Detector(DetectorConfig(in_dim=C, num_classes=k, front="context", context_scores=(config,)))
    assert model.state_dict()["front.0.hidden.weight"].shape == (16, 3 * C)
