"""Flow-stream extraction on the CPU with TV-L1 solving the extractor's pairs in chunks of each size asked for.

    python benchmarks/flow_extract_cpu.py                      # the first 50 frames of bikes.mp4, chunks 1 and all
    python benchmarks/flow_extract_cpu.py --frames 100 --chunks 1 2 0

The extractor hands :func:`extract.flow.tvl1` every new frame pair of a batch of snippets at once (128 pairs at
the default ``batch_size`` 8 and stride 16); ``tvl1`` solves them :data:`extract.flow.CPU_CHUNK` at a time on
the CPU. This times ``extract_videos`` with the flow stream alone (a seeded random flow I3D: speed does not
depend on its weights) for each chunk (0: the whole batch at once, the behaviour before chunks), on a clip cut
from the start of a sample video and re-encoded, and checks that every run wrote the same features to the bit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import extract.flow  # noqa: E402
from extract import ExtractConfig, extract_videos, read_features  # noqa: E402
from extract.i3d import I3D  # noqa: E402
from extract.samples import fetch_samples  # noqa: E402
from extract.streams import FlowStream  # noqa: E402


def cut_clip(source: Path, frames: int, out: Path) -> Path:
    """The first ``frames`` frames of ``source`` as an H.264 file at its size and frame rate."""
    with av.open(str(source)) as inp, av.open(str(out), "w") as dst:
        video = inp.streams.video[0]
        stream = dst.add_stream("libx264", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for k, frame in enumerate(inp.decode(video=0)):
            if k == frames:
                break
            rgb = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in stream.encode(rgb):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="bikes.mp4", help="a sample clip name (extract.samples) or a path")
    parser.add_argument("--frames", type=int, default=50, help="frames cut from the start of the video")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 0], help="pairs solved together; 0: all")
    parser.add_argument("--batch", type=int, default=8, help="snippets per batch (ExtractConfig.batch_size)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = Path(args.video) if Path(args.video).is_file() else fetch_samples((args.video,))[0]
    config = ExtractConfig(streams=("flow",), batch_size=args.batch, device="cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {source.name}, first {args.frames} frames, "
          f"batch {args.batch} snippets")
    features = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = cut_clip(source, args.frames, Path(tmp) / "clip.mp4")
        for chunk in args.chunks:
            extract.flow.CPU_CHUNK = chunk or 10**9
            torch.manual_seed(0)
            stream = FlowStream(I3D(2, 400).eval(), torch.device("cpu"), None)
            out = Path(tmp) / f"chunk{chunk}"
            start = time.perf_counter()
            report = extract_videos([clip], out, config, streams=[stream], progress=False)
            seconds = time.perf_counter() - start
            if report.failed:
                raise SystemExit(f"flow_extract_cpu: extraction failed: {report.failed}")
            ff = read_features(out / "clip.h5")
            features[chunk] = np.asarray(ff.features)
            print(f"chunk {chunk or 'all':>4}: {seconds:7.1f} s, {len(ff.features)} snippets, "
                  f"{args.frames / seconds:6.2f} frames/s", flush=True)
    first = features[args.chunks[0]]
    same = all(np.array_equal(first, f) for f in features.values())
    print(f"features equal to the bit across chunks: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
