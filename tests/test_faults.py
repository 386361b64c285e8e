"""Fault injection: commands killed with SIGKILL at random points, then rerun.

For each command: after every kill no visible output is partial (each file under its final name
is complete and equal to an uninterrupted run's), work finished before a kill is kept by the
rerun (same inode and modification time: skipped, not redone), and once a rerun completes the
outputs equal an uninterrupted run's and no temporary file is left.

Extraction runs as ``python -c`` (random I3D weights, which ``python -m extract`` cannot load)
calling :func:`extract.extract_videos`, the library function under ``python -m extract``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from extract import read_features
from tests.videos import make_video

REPO = Path(__file__).resolve().parents[1]

EXTRACT_SCRIPT = """
import sys
import torch
from extract import ExtractConfig, extract_videos
from extract.pipeline import RGBStream
from tests.models import random_i3d_model
torch.set_num_threads(1)
streams = [RGBStream(random_i3d_model(), torch.device("cpu"), None)]
config = ExtractConfig(short_side=64, crop=64, window=16, stride=8, batch_size=2)
report = extract_videos(sys.argv[2:], sys.argv[1], config, streams=streams, progress=False)
sys.exit(0 if report.ok else 1)
"""


def extract_cmd(out: Path, videos: list[Path]) -> list[str]:
    return [sys.executable, "-c", EXTRACT_SCRIPT, str(out), *map(str, videos)]


def run_to_end(cmd: list[str]) -> float:
    """Run ``cmd`` to completion (exit 0 required); returns its wall time in seconds."""
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.monotonic() - start


def hidden(out: Path) -> list[str]:
    """Temporary files (atomic writes: hidden names) in ``out``."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def run_and_kill(cmd: list[str], out: Path, after: float) -> bool:
    """Start ``cmd``; once it is writing an output (a temporary file of its own exists in ``out``;
    a killed run's are left until a rerun reaches their video), SIGKILL it ``after`` seconds later.
    True if it was killed, False if it ended first."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        mine = f"-{proc.pid}"
        while proc.poll() is None and not any(name.endswith(mine) for name in hidden(out)):
            time.sleep(0.005)
        proc.wait(timeout=after)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def visible(out: Path) -> dict[str, os.stat_result]:
    """Files under their final names (temporary files are hidden: leading dot)."""
    return {p.name: p.stat() for p in sorted(out.iterdir()) if not p.name.startswith(".")} if out.exists() else {}


def assert_features_equal(path: Path, ref: Path) -> None:
    """Complete and equal to the uninterrupted run's file (features, attributes but the source path)."""
    got, want = read_features(path), read_features(ref)
    np.testing.assert_array_equal(got.features, want.features)
    skip = {"source"}
    assert {k: v for k, v in got.attrs.items() if k not in skip}.keys() == \
        {k: v for k, v in want.attrs.items() if k not in skip}.keys()
    for key in want.attrs:
        if key not in skip:
            np.testing.assert_equal(got.attrs[key], want.attrs[key], err_msg=key)


@pytest.mark.slow
def test_extraction_killed_at_random_points(tmp_path):
    """Four small videos; the extraction is killed four times at a seeded random moment while it
    writes (up to 2.5 times what one video takes: within a video or past its end), each kill
    followed by the checks, then run to the end. About 25 s on 2 cores."""
    (tmp_path / "videos").mkdir()
    videos = [make_video(tmp_path / "videos" / f"v{i}.mp4", n, 80, 48) for i, n in enumerate([120, 96, 136, 104])]
    ref_out = tmp_path / "ref"
    full = run_to_end(extract_cmd(ref_out, videos))
    one = run_to_end(extract_cmd(tmp_path / "one", videos[:1]))
    names = {f"v{i}.h5" for i in range(len(videos))}
    assert set(visible(ref_out)) == names

    out = tmp_path / "out"
    rng = np.random.default_rng(14)
    kept: dict[str, os.stat_result] = {}
    kills = 0
    per_video = max(0.05, (full - one) / (len(videos) - 1))
    for after in rng.uniform(0.0, 2.5, size=4) * per_video:
        kills += run_and_kill(extract_cmd(out, videos), out, float(after))
        now = visible(out)
        assert set(now) <= names
        for name in now:                                   # nothing partial under a final name
            assert_features_equal(out / name, ref_out / name)
        for name, st in kept.items():                      # finished work is never redone
            assert (now[name].st_ino, now[name].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
        kept = now
    assert kills >= 3, "the random kill times fell after the run ended: nothing was tested"
    run_to_end(extract_cmd(out, videos))
    final = visible(out)
    assert set(final) == names
    for name, st in kept.items():
        assert (final[name].st_ino, final[name].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    for name in names:
        assert_features_equal(out / name, ref_out / name)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left

