"""Feature files and annotations made by hand, in the layouts of CONVENTIONS.md (shared by tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.annotations import write_annotations
from extract import features
from extract.snippets import SnippetPlan

FPS, WINDOW, STRIDE = 16.0, 16, 16          # snippet i is centred at i + 0.5 s, one snippet per second


def write_features(path: Path, streams: dict[str, np.ndarray], fps: float = FPS, window: int = WINDOW,
                   stride: int = STRIDE, num_frames: int | None = None,
                   spatial: dict[str, np.ndarray] | None = None) -> Path:
    """A feature file in the layout of CONVENTIONS.md (``streams``: name -> (T, D) array; ``spatial``:
    name -> (T, D, h, w) maps, for every stream), written by :func:`extract.features.write_features`.
    ``num_frames`` defaults to whole windows (``stride * (T - 1) + window``, or ``stride * T`` when
    windows do not overlap)."""
    t = len(next(iter(streams.values())))
    if num_frames is None:
        num_frames = stride * (t - 1) + window if window > stride else stride * t
    assert SnippetPlan(num_frames, window, stride).num_snippets == t
    attrs = {"fps": fps, "window": window, "stride": stride, "num_frames": num_frames, "duration": num_frames / fps,
             "source": f"/videos/{path.stem}.mp4", "flow_method": "none",
             "weights": {s: {"id": "test", "sha256": "0" * 64} for s in streams}}
    return features.write_features(path, streams, attrs, spatial)


def split_streams(feats: np.ndarray, streams: tuple[str, ...]) -> dict[str, np.ndarray]:
    return dict(zip(streams, np.split(feats, len(streams), axis=1)))


def detection_dataset(root: Path, classes=("Jump", "Run", "Swim"), videos: int = 6,
                      num_snippets: tuple[int, int] = (60, 120), dim_per_stream: int = 8,
                      streams: tuple[str, ...] = ("rgb", "flow"), noise: float = 0.2, seed: int = 0,
                      subset: str = "validation") -> tuple[Path, Path, dict]:
    """Synthetic videos for the detector: 1-3 instances per video at arbitrary (non-grid) times, 3-15 s
    long, at least 3 s apart; a snippet's feature is its background vector plus, for each instance, the
    fraction of the snippet's second the instance covers times its class vector, plus noise.

    Returns (feature_dir, annotations path, database).
    """
    rng = np.random.default_rng(seed)
    dim = dim_per_stream * len(streams)
    vectors = rng.normal(size=(len(classes), dim)) * 1.5
    background = rng.normal(size=dim) * 0.5
    db = {}
    for v in range(videos):
        t = int(rng.integers(num_snippets[0], num_snippets[1] + 1))
        duration = t * STRIDE / FPS
        anns, cursor = [], float(rng.uniform(1, 6))
        for _ in range(int(rng.integers(1, 4))):
            length = float(rng.uniform(3, 15))
            if cursor + length > duration - 1:
                break
            anns.append((cursor, cursor + length, int(rng.integers(len(classes)))))
            cursor += length + float(rng.uniform(3, 20))
        lo = np.arange(t) * STRIDE / FPS                  # snippet i covers [lo, lo + 1) seconds
        feats = background + rng.normal(scale=noise, size=(t, dim))
        for s, e, k in anns:
            cover = np.clip(np.minimum(lo + 1, e) - np.maximum(lo, s), 0, None)
            feats += cover[:, None] * vectors[k]
        vid = f"video_{v:03d}"
        write_features(root / "features" / f"{vid}.h5", split_streams(feats, streams))
        db[vid] = {"subset": subset, "duration": duration,
                   "annotations": [{"segment": [round(s, 3), round(e, 3)], "label": classes[k]} for s, e, k in anns]}
    return root / "features", write_annotations(root / "annotations.json", db), db


def features_for_annotations(root: Path, database: dict, video_ids: list[str], fps: float = 30.0, window: int = 16,
                             stride: int = 4, dim_per_stream: int = 8, noise: float = 0.2, seed: int = 0) -> Path:
    """Synthetic feature files for real annotations (e.g. THUMOS14's): each snippet holds, for every
    instance, the fraction of its window the instance covers times a vector of the instance's class
    (so a segment annotated with two classes carries both), plus noise. Returns the feature folder."""
    rng = np.random.default_rng(seed)
    classes = sorted({a["label"] for v in video_ids for a in database[v]["annotations"]})
    vectors = {c: rng.normal(size=2 * dim_per_stream) * 1.5 for c in classes}
    for vid in video_ids:
        entry = database[vid]
        num_frames = int(np.ceil(entry["duration"] * fps))
        t = SnippetPlan(num_frames, window, stride).num_snippets
        lo = np.arange(t) * stride / fps
        feats = 0.5 + rng.normal(scale=noise, size=(t, 2 * dim_per_stream))
        for a in entry["annotations"]:
            s, e = a["segment"]
            cover = np.clip(np.minimum(lo + window / fps, e) - np.maximum(lo, s), 0, None) / (window / fps)
            feats += cover[:, None] * vectors[a["label"]]
        write_features(root / f"{vid}.h5", split_streams(feats.astype(np.float32), ("rgb", "flow")), fps=fps,
                       window=window, stride=stride, num_frames=num_frames)          # the true frame count
    return root
