"""A family of synthetic snippet-feature worlds for the refactoring study (``benchmarks/refactor_study.py``).

Every axis the question "when does refactoring help?" depends on is a field of :class:`FeatureWorld`.
One world is a set of shared vectors (float64, drawn from ``(seed, 7)``):

* per class k a **context** (scene) direction ``s_k`` of norm ``context_norm``, leaning on its action's
  direction by ``context_overlap`` (``s_k ∝ ρ ŵ_k + sqrt(1 − ρ²) r_k`` with ``r_k ⟂ ŵ_k``);
* per class an **action** vector ``w_k`` of norm ``action_norm`` (the weak cue that marks the boundaries);
* ``backgrounds`` background directions (norm 1) and per class a **distractor** scene of norm 1 at cosine
  0.6 to ``s_k`` (a look-alike: similar to the scene, but not it), which fills a background stretch with
  probability ``distractor_p``;
* a low-rank **nuisance**: ``nuisance_rank`` directions, each half in the span of the action directions
  and half random, added to every snippet with i.i.d. N(0, ``nuisance_std``²) coefficients.

A video of class k (1 snippet a second: snippet i covers [i, i + 1) s):

* background stretches of 3-8 snippets (a random background, or the distractor);
* ``instances`` action instances of ``duration`` seconds at off-grid times, each inside a stretch of
  context that begins and ends ``U(extent / 2, extent)`` seconds before and after it (``context_extent``
  0: the context covers exactly the action);
* Poisson(``context_alone``) stretches of context without any action, 6-25 s long;
* a snippet's feature is ``(1 − c) b + c s_k + a w_k + nuisance + noise``, with c, a the fractions of the
  snippet's second covered by context and by an action, b its background, noise i.i.d. N(0, ``noise``² / C).

The videos of a world are written as the project's feature files and annotation file (training videos
in subset ``validation``, test videos in ``test``); :func:`write_world` returns the per-snippet kinds
(background, context, action, mixed) the study's measurements need.

Oracle layouts (:data:`LAYOUTS`) write the same videos (the same draws) as an ideal refactoring would
present them, to bound what any learnt refactoring can gain: ``no_context`` is f − c s_k (the
co-occurring context removed exactly, everything else, noise included, kept), and ``split`` is
[f − c s_k, c s_k] (2C channels: the perfect decomposition into an action part and a noise-free
co-occurrence part; f is their sum, so nothing is lost). ``projected`` is f ⊕ (f · ŝ_j)_j, f beside its
projections on every class's unit context direction (C + K channels): what an ideal *linear* φC that
knew the context directions would add, computed from f alone (noise included), so it adds no
information to f. ``removed`` is [f − P f, P f] with P the orthogonal projection on the span of the
context directions (2C channels): ``split`` as a linear map of f that knows the directions but not the
context's amount, so it too adds no information to f. ``labels`` is f ⊕ (c e_k) ⊕ (a e_k), f beside the
exact coverage of its class's context c and action a, each as a one-hot row over the K classes (C + 2K
channels): the context score (:mod:`refactor.context`) as it would be with perfect probabilities, the
ceiling of any front that names per snippet which class's context and action it holds. ``labels_hard`` is
the same with hard labels, as the context score is trained: action 1 where the snippet's centre lies in an
instance (:func:`refactor.samples.collect_samples`' rule), context 1 where the context covers at least half
the snippet, 0 elsewhere; it drops where inside its snippet a boundary lies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from benchmarks.synthetic import coverage, normalize_rows, unit_vectors, write_database, write_two_stream

__all__ = ["FeatureWorld", "WorldVectors", "draw_vectors", "make_video", "write_world", "span_projector", "AXES",
           "KINDS", "SCALARS", "LAYOUTS", "BACKGROUND", "CONTEXT", "ACTION", "MIXED", "FPS", "WINDOW", "STRIDE"]

FPS, WINDOW, STRIDE = 16.0, 16, 16          # snippet i covers [i, i + 1) s, centred at i + 0.5 s
BACKGROUND, CONTEXT, ACTION, MIXED = 0, 1, 2, 3
KINDS = ("background", "context", "action", "mixed")
LAYOUTS = ("raw", "no_context", "split", "projected", "removed", "labels", "labels_hard")


@dataclass(frozen=True)
class FeatureWorld:
    """One point of the world family (one default per field: the study's centre).

    Attributes:
        dim: feature size C (rgb + flow halves; even).
        classes: action classes (each with its context).
        train_videos, test_videos: videos in subsets ``validation`` and ``test`` (classes cycle).
        instances: (min, max) action instances a video.
        duration: (min, max) seconds of an instance.
        action_norm: norm of the action vector (the context's is ``context_norm``).
        context_norm: norm of the context vector (0: no context, the control world).
        context_overlap: cosine between a class's context and its action direction.
        context_extent: the context reaches ``U(extent / 2, extent)`` s before and after each action.
        context_alone: mean number of context stretches without an action a video (Poisson).
        distractor_p: probability that a background stretch is the class's look-alike scene.
        nuisance_rank: number of nuisance directions (0: none).
        nuisance_std: std of each nuisance coefficient.
        noise: expected norm of a snippet's noise (i.i.d. per channel with std ``noise / sqrt(dim)``, so
            the signal-to-noise ratio does not depend on ``dim``; 1.6 is 0.2 a channel at C = 64).
        backgrounds: background directions.
        length: (min, max) snippets a video before stretching to fit its events.
    """

    dim: int = 256
    classes: int = 8
    train_videos: int = 64
    test_videos: int = 32
    instances: tuple[int, int] = (1, 3)
    duration: tuple[float, float] = (3.0, 15.0)
    action_norm: float = 0.3
    context_norm: float = 1.0
    context_overlap: float = 0.3
    context_extent: float = 8.0
    context_alone: float = 1.5
    distractor_p: float = 0.15
    nuisance_rank: int = 4
    nuisance_std: float = 0.3
    noise: float = 1.6
    backgrounds: int = 12
    length: tuple[int, int] = (100, 200)

    def __post_init__(self) -> None:
        if self.dim < 2 or self.dim % 2:
            raise ValueError(f"dim must be even and >= 2, got {self.dim}")
        if not 0 <= self.context_overlap < 1:
            raise ValueError(f"context_overlap must be in [0, 1), got {self.context_overlap}")

    def with_axis(self, axis: str, value) -> FeatureWorld:
        """This world with one number-valued field (an axis of :data:`AXES` or another) set to ``value``."""
        if axis not in SCALARS:
            raise ValueError(f"a world's number-valued fields are {', '.join(SCALARS)}, got {axis!r}")
        return replace(self, **{axis: type(getattr(self, axis))(value)})

    def to_dict(self) -> dict:
        return asdict(self)


AXES = ("dim", "classes", "train_videos", "action_norm", "context_norm", "context_overlap", "context_extent",
        "context_alone", "distractor_p", "nuisance_rank")
SCALARS = tuple(f.name for f in fields(FeatureWorld) if f.type in ("int", "float"))
assert set(AXES) <= set(SCALARS)


@dataclass
class WorldVectors:
    """The vectors every video of a world shares (see the module docstring)."""

    context: np.ndarray        # (K, C)
    action: np.ndarray         # (K, C)
    backgrounds: np.ndarray    # (M, C)
    distractor: np.ndarray     # (K, C)
    nuisance: np.ndarray       # (R, C), norm 1


def draw_vectors(world: FeatureWorld, seed: int) -> WorldVectors:
    rng = np.random.default_rng([seed, 7])
    k, c = world.classes, world.dim
    action_dir = unit_vectors(rng, k, c)
    rest = unit_vectors(rng, k, c)
    rest = normalize_rows(rest - (rest * action_dir).sum(1, keepdims=True) * action_dir)   # ⟂ ŵ_k
    rho = world.context_overlap
    context_dir = rho * action_dir + np.sqrt(1 - rho * rho) * rest
    backgrounds = unit_vectors(rng, world.backgrounds, c)
    other = unit_vectors(rng, k, c)
    other = normalize_rows(other - (other * context_dir).sum(1, keepdims=True) * context_dir)
    distractor = 0.6 * context_dir + 0.8 * other
    r = world.nuisance_rank
    mix = rng.standard_normal((r, k))
    nuisance = normalize_rows(normalize_rows(mix @ action_dir) + unit_vectors(rng, r, c)) if r else np.zeros((0, c))
    return WorldVectors(world.context_norm * context_dir, world.action_norm * action_dir, backgrounds, distractor,
                        nuisance)


def make_video(world: FeatureWorld, vectors: WorldVectors, rng: np.random.Generator, k: int,
               layout: str = "raw") -> dict:
    """One video of class k: ``features`` (T, C) float32 (T, 2C for ``layout="split"`` and ``"removed"``,
    T, C + K for ``"projected"``, T, C + 2K for ``"labels"`` and ``"labels_hard"``; see :data:`LAYOUTS`),
    ``kind`` (T,) int, ``instances`` [(start, end)] s. The layout does not change the draws."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    n_inst = int(rng.integers(world.instances[0], world.instances[1] + 1))
    n_alone = int(rng.poisson(world.context_alone))
    events = []                                   # (kind, before, length, after)
    for _ in range(n_inst):
        before, after = rng.uniform(world.context_extent / 2, world.context_extent, size=2)
        events.append(("instance", float(before), float(rng.uniform(*world.duration)), float(after)))
    for _ in range(n_alone):
        events.append(("scene", 0.0, float(rng.uniform(6.0, 25.0)), 0.0))
    rng.shuffle(events)
    min_gap = 2.0
    busy = sum(b + d + a for _, b, d, a in events)
    t = int(rng.integers(world.length[0], world.length[1] + 1))
    t = max(t, int(np.ceil(busy + min_gap * (len(events) + 1))) + 1)
    gaps = min_gap + (t - busy - min_gap * (len(events) + 1)) * rng.dirichlet(np.ones(len(events) + 1))
    lo = np.arange(t, dtype=np.float64)
    ctx, act, instances = np.zeros(t), np.zeros(t), []
    cursor = float(gaps[0])
    for j, (kind, before, dur, after) in enumerate(events):
        ctx += coverage(lo, 1.0, (cursor, cursor + before + dur + after))
        if kind == "instance":
            s = cursor + before
            act += coverage(lo, 1.0, (s, s + dur))
            instances.append((round(s, 3), round(s + dur, 3)))
        cursor += before + dur + after + float(gaps[j + 1])
    ctx = np.clip(ctx, 0, 1)
    bg = np.zeros((t, world.dim))
    i = 0
    while i < t:
        n = int(rng.integers(3, 9))
        bg[i:i + n] = (vectors.distractor[k] if rng.random() < world.distractor_p
                       else vectors.backgrounds[int(rng.integers(len(vectors.backgrounds)))])
        i += n
    context = ctx[:, None] * vectors.context[k]                                         # c s_k, (T, C)
    feats = (1 - ctx)[:, None] * bg + context + act[:, None] * vectors.action[k]
    if len(vectors.nuisance):
        feats += world.nuisance_std * rng.standard_normal((t, len(vectors.nuisance))) @ vectors.nuisance
    feats += world.noise / np.sqrt(world.dim) * rng.standard_normal(feats.shape)
    if layout == "no_context":
        feats = feats - context
    elif layout == "split":
        feats = np.concatenate([feats - context, context], axis=1)
    elif layout == "projected":
        unit = normalize_rows(vectors.context) if world.context_norm > 0 else np.zeros_like(vectors.context)
        feats = np.concatenate([feats, feats @ unit.T], axis=1)                       # (T, C + K)
    elif layout == "removed":
        inside = feats @ span_projector(vectors.context)                               # P f, (T, C)
        feats = np.concatenate([feats - inside, inside], axis=1)                       # (T, 2C)
    elif layout in ("labels", "labels_hard"):
        c_lab, a_lab = ctx, act
        if layout == "labels_hard":
            centre = lo + 0.5
            a_lab = np.zeros(t)
            for s, e in instances:
                a_lab[(centre >= s) & (centre <= e)] = 1.0
            c_lab = (ctx >= 0.5).astype(np.float64)
        onehot = np.eye(world.classes)[k]                                              # (K,)
        feats = np.concatenate([feats, c_lab[:, None] * onehot, a_lab[:, None] * onehot], axis=1)   # (T, C + 2K)
    kind = np.full(t, MIXED)
    kind[(act >= 1) & (ctx >= 1)] = ACTION
    kind[(act == 0) & (ctx >= 1)] = CONTEXT
    kind[(act == 0) & (ctx == 0)] = BACKGROUND
    return {"features": feats.astype(np.float32), "kind": kind, "instances": sorted(instances)}


def span_projector(directions: np.ndarray) -> np.ndarray:
    """(C, C) orthogonal projection on the span of the rows of ``directions`` (K, C), zero rows ignored."""
    d = directions[np.linalg.norm(directions, axis=1) > 0].astype(np.float64)
    if not len(d):
        return np.zeros((directions.shape[1],) * 2)
    q, _ = np.linalg.qr(d.T)                                                           # (C, K) orthonormal
    return q @ q.T


def write_world(world: FeatureWorld, seed: int, root: Path, layout: str = "raw") -> dict:
    """Write ``root/*.h5`` and ``root/annotations.json`` for one seed of a world (features in ``layout``,
    :data:`LAYOUTS`; the videos, annotations and kinds do not depend on it).

    Returns:
        ``{"kinds": {video: kind (T,)}, "test": {video: features (T, C)}, "snippets": {subset: n},
        "instances": {subset: n}}``.
    """
    root.mkdir(parents=True, exist_ok=True)
    vectors = draw_vectors(world, seed)
    names = [f"class{k:02d}" for k in range(world.classes)]
    db, kinds, test = {}, {}, {}
    stats = {"validation": [0, 0], "test": [0, 0]}
    for subset, n, stream in (("validation", world.train_videos, 1), ("test", world.test_videos, 2)):
        rng = np.random.default_rng([seed, stream])
        for j in range(n):
            k = j % world.classes
            vid = f"{subset}_{j:03d}_{names[k]}"
            v = make_video(world, vectors, rng, k, layout)
            write_two_stream(root / f"{vid}.h5", v["features"], FPS, WINDOW, STRIDE)
            db[vid] = {"subset": subset, "duration": float(len(v["features"])),
                       "annotations": [{"segment": list(seg), "label": names[k]} for seg in v["instances"]]}
            kinds[vid] = v["kind"]
            if subset == "test":
                test[vid] = v["features"]
            stats[subset][0] += len(v["features"])
            stats[subset][1] += len(v["instances"])
    write_database(root / "annotations.json", db)
    return {"kinds": kinds, "test": test, "snippets": {s: v[0] for s, v in stats.items()},
            "instances": {s: v[1] for s, v in stats.items()}}
