"""Throughput of one extraction folder shared by 1, 2 and 4 processes (claim files, extract.claims).

Synthetic videos (tests.videos), a seeded random I3D on CPU at 64x64 crops, one torch thread per process;
every process is started at once on the same folders and the wall time until the last one ends is measured.

    python benchmarks/extract_processes.py [--videos 12] [--frames 96] [--processes 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.videos import make_video  # noqa: E402

SCRIPT = """
import json, sys
import torch
from extract import ExtractConfig, extract_videos
from extract.pipeline import RGBStream
from tests.models import random_i3d_model
torch.set_num_threads(1)
streams = [RGBStream(random_i3d_model(), torch.device("cpu"), None)]
r = extract_videos([sys.argv[2]], sys.argv[1], ExtractConfig(short_side=64, crop=64), streams=streams, progress=False)
print(json.dumps({"written": len(r.written), "by_others": len(r.by_others)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--processes", default="1,2,4")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "videos"
        src.mkdir()
        for i in range(args.videos):
            make_video(src / f"v{i}.mp4", args.frames, 80, 48)
        print(f"{args.videos} videos x {args.frames} frames, {os.cpu_count()} CPU cores")
        for n in map(int, args.processes.split(",")):
            out = Path(tmp) / f"out{n}"
            start = time.monotonic()
            procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(src)], cwd=REPO,
                                      stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
                     for _ in range(n)]
            written = [json.loads(proc.communicate()[0])["written"] for proc in procs]
            wall = time.monotonic() - start
            print(f"{n} process(es): {wall:.1f} s, {args.videos / wall:.2f} videos/s, written per process {written}")


if __name__ == "__main__":
    main()
