"""Video decoders side by side: torchcodec, decord and PyAV on the same clips, frames per second and
whether the frames are the same.

    python benchmarks/decode.py                        # the three sample clips, every decoder installed
    python benchmarks/decode.py --videos a.mp4 --repeats 5 --json decode.json

For every clip and decoder, through :func:`extract.video.open_video` as the extractor uses it:

* ``open ms``: opening the file and reading every frame's timestamp (no pixels);
* ``frames/s``: decoding every frame to uint8 RGB (H, W, 3) numpy arrays, best of ``--repeats``;
* ``same``: every frame equal to PyAV's, bit for bit.

``torchcodec-cuda`` (torchcodec's NVDEC decoding, frames left on the GPU as the pipeline would want them)
is timed where torchcodec loads and CUDA is present; NVDEC converts colours itself, so its ``same``
column gives the largest difference to PyAV's frames in grey levels instead. A decoder that is not
installed or cannot load is listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extract.samples import SAMPLES, fetch_samples  # noqa: E402
from extract.video import VideoError, open_video, torchcodec_status  # noqa: E402

BACKENDS = ("pyav", "decord", "torchcodec")


def decode_all(path: Path, backend: str) -> tuple[float, float, np.ndarray]:
    """(seconds to open, seconds to decode every frame, the frames (F, H, W, 3) uint8)."""
    start = time.perf_counter()
    with open_video(path, backend) as reader:
        opened = time.perf_counter()
        frames = [f for _, f in reader.frames(np.arange(reader.info.num_frames))]
        done = time.perf_counter()
    return opened - start, done - opened, np.stack(frames)


def decode_cuda(path: Path) -> tuple[float, torch.Tensor]:
    """Seconds to decode every frame with torchcodec on the GPU, and the frames (F, H, W, 3) uint8 on it."""
    decoder_class, _ = torchcodec_status()
    torch.cuda.synchronize()
    start = time.perf_counter()
    decoder = decoder_class(str(path), device="cuda", dimension_order="NHWC", seek_mode="exact")
    n = decoder.metadata.num_frames
    chunks = [decoder.get_frames_at(list(range(lo, min(n, lo + 64)))).data for lo in range(0, n, 64)]
    frames = torch.cat(chunks)
    torch.cuda.synchronize()
    return time.perf_counter() - start, frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", nargs="*", type=Path, help="videos (default: the three real sample clips)")
    p.add_argument("--repeats", type=int, default=3, help="decode each clip this many times, keep the best")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    videos = args.videos or fetch_samples(tuple(SAMPLES))

    tc_class, tc_why = torchcodec_status()
    cuda = torch.cuda.is_available() and tc_class is not None
    import av
    versions = {"pyav": av.__version__, "torchcodec": "-" if tc_class is None else __import__("torchcodec").__version__}
    try:
        import decord
        versions["decord"] = decord.__version__
    except ImportError:
        versions["decord"] = "-"
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
          + f"; torch {torch.__version__}, " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if tc_class is None:
        print(f"# torchcodec {tc_why}")

    rows = []
    for path in videos:
        ref = None
        for backend in BACKENDS:
            if backend == "torchcodec" and tc_class is None:
                continue
            try:
                runs = [decode_all(path, backend) for _ in range(max(1, args.repeats))]
            except VideoError as exc:
                rows.append({"video": path.name, "decoder": backend, "error": str(exc)})
                continue
            frames = runs[0][2]
            if ref is None:
                ref = frames
            h, w = frames.shape[1:3]
            rows.append({"video": path.name, "size": f"{w}x{h}", "frames": len(frames), "decoder": backend,
                         "open_ms": 1000 * min(r[0] for r in runs),
                         "frames_per_s": len(frames) / min(r[1] for r in runs),
                         "same": bool(np.array_equal(frames, ref))})
        if cuda:
            decode_cuda(path)  # warm-up: CUDA context, NVDEC
            runs = [decode_cuda(path) for _ in range(max(1, args.repeats))]
            frames = runs[0][1].cpu().numpy()
            diff = int(np.abs(frames.astype(int) - ref.astype(int)).max()) if frames.shape == ref.shape else -1
            rows.append({"video": path.name, "size": f"{frames.shape[2]}x{frames.shape[1]}", "frames": len(frames),
                         "decoder": "torchcodec-cuda", "open_ms": float("nan"),
                         "frames_per_s": len(frames) / min(r[0] for r in runs), "same": diff == 0,
                         "max_diff": diff})

    print(f"{'video':<24} {'size':>9} {'frames':>6} {'decoder':<16} {'open ms':>8} {'frames/s':>9}  same as PyAV")
    for r in rows:
        if "error" in r:
            print(f"{r['video']:<24} {'':>9} {'':>6} {r['decoder']:<16} error: {r['error']}")
            continue
        same = "yes" if r["same"] else ("no" if "max_diff" not in r else f"no (max diff {r['max_diff']})")
        print(f"{r['video']:<24} {r['size']:>9} {r['frames']:>6} {r['decoder']:<16} {r['open_ms']:>8.1f} "
              f"{r['frames_per_s']:>9.0f}  {same}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
