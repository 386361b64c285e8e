"""Throughput of TV-L1 optical flow: :func:`extract.flow.tvl1` (PyTorch) against OpenCV.

    python benchmarks/flow.py                               # CPU, and CUDA when present
    python benchmarks/flow.py --devices cpu --batches 1 8 --threads 1
    python benchmarks/flow.py --devices cpu --batches 16 --chunks 1 2 4 16 --sizes 340x256 --opencv-pairs 1

Prints frame pairs per second for our TV-L1 at each batch size and for OpenCV's
``DualTVL1OpticalFlow`` (one pair at a time; its batch column is the number of pairs timed), side
by side (``--chunks``: the batch solved that many pairs at a time; default: ``tvl1``'s own choice,
printed as ``-``), at 224x224 (Kinetics sample GIF) and 340x256 (bikes.mp4, resized), plus the endpoint
error of ours against OpenCV on the timed pairs. Real frames matter: the solver stops early per
pair, so run time depends on the motion. ``--threads`` sets both torch's and OpenCV's CPU threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extract.flow import opencv_tvl1, tvl1  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"


def gif_pairs(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive-frame grayscale pairs (uint8 [count, 224, 224]) of the Kinetics sample."""
    import cv2
    from PIL import Image, ImageSequence

    with Image.open(SHARED_DATA / "kinetics-i3d-sample" / "v_CricketShot_g04_c01_rgb.gif") as im:
        frames = [cv2.cvtColor(np.asarray(f.convert("RGB")), cv2.COLOR_RGB2GRAY) for f in ImageSequence.Iterator(im)]
    return _cycle(np.stack(frames), count)


def video_pairs(count: int, size: tuple[int, int] = (340, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive-frame grayscale pairs (uint8 [count, 256, 340]) of bikes.mp4."""
    import av
    import cv2

    from extract.samples import fetch_samples

    (path,) = fetch_samples(("bikes.mp4",))
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = cv2.resize(frame.to_ndarray(format="rgb24"), size, interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
            if len(frames) > min(count, 64):
                break
    return _cycle(np.stack(frames), count)


def _cycle(frames: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(count) % (len(frames) - 1)
    return frames[idx], frames[idx + 1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_ours(prev: np.ndarray, nxt: np.ndarray, device: torch.device, repeats: int,
               chunk: int | None = None) -> tuple[float, np.ndarray]:
    """(pairs per second, flow) of one batched call, best of ``repeats`` after a warm-up."""
    a = torch.from_numpy(prev).float().to(device)
    b = torch.from_numpy(nxt).float().to(device)
    flow = tvl1(a[:1], b[:1])  # warm-up (allocator, CUDA context)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        flow = tvl1(a, b, chunk=chunk)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return len(prev) / best, flow.cpu().numpy()


def bench_opencv(prev: np.ndarray, nxt: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    flow = opencv_tvl1(prev, nxt)
    return len(prev) / (time.perf_counter() - start), flow


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--sizes", nargs="+", default=["224x224", "340x256"], choices=["224x224", "340x256"])
    parser.add_argument("--opencv-pairs", type=int, default=4, help="pairs OpenCV is timed on (at most the batch)")
    parser.add_argument("--chunks", nargs="+", type=int, default=[None],
                        help="pairs solved together within a batch (default: tvl1's default for the device)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and OpenCV")
    args = parser.parse_args(argv)
    import cv2

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, torch threads {torch.get_num_threads()}, "
          f"OpenCV threads {cv2.getNumThreads()}")
    print(f"{'size':>8} {'device':>6} {'batch':>5} {'chunk':>5} {'ours pairs/s':>13} {'OpenCV pairs/s':>15} "
          f"{'speed-up':>8} {'mean EPE':>9} {'p99 EPE':>8}")
    for size in args.sizes:
        load = gif_pairs if size == "224x224" else video_pairs
        prev, nxt = load(max(args.batches))
        cv_rate, cv_flow = bench_opencv(prev[:args.opencv_pairs], nxt[:args.opencv_pairs])
        for name in devices:
            device = torch.device(name)
            for batch in args.batches:
                for chunk in args.chunks:
                    rate, flow = bench_ours(prev[:batch], nxt[:batch], device, args.repeats, chunk)
                    k = min(batch, args.opencv_pairs)
                    epe = np.sqrt(((flow[:k] - cv_flow[:k]) ** 2).sum(1))
                    print(f"{size:>8} {name:>6} {batch:>5} {chunk or '-':>5} {rate:>13.2f} {cv_rate:>15.2f} "
                          f"{rate / cv_rate:>8.2f} {epe.mean():>9.4f} {np.percentile(epe, 99):>8.4f}", flush=True)


if __name__ == "__main__":
    main()
