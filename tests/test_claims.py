"""Several extraction processes on one folder: claim files (extract.claims) and their use by extract_videos.

Extraction runs in subprocesses as ``python -c`` with a seeded random I3D on CPU (as tests/test_faults.py),
printing its :class:`extract.ExtractionReport` as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from extract import read_features
from extract.claims import ClaimInfo, ClaimSet, claim_is_live, claim_path, read_claim
from extract.config import ExtractConfig, rank_device
from tests.videos import make_video

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()

SCRIPT = """
import json, sys
import torch
from extract import ExtractConfig, extract_videos
from extract.pipeline import RGBStream
from tests.models import random_i3d_model
torch.set_num_threads(1)
streams = [RGBStream(random_i3d_model(), torch.device("cpu"), None)]
config = ExtractConfig(short_side=64, crop=64, window=16, stride=8, batch_size=2, **json.loads(sys.argv[2]))
r = extract_videos(sys.argv[3:], sys.argv[1], config, streams=streams, progress=False)
names = lambda paths: sorted(p.stem + ".h5" for p in paths)   # written: files; the others: videos
print(json.dumps({"written": names(r.written), "skipped": names(r.skipped), "failed": names(r.failed),
                  "by_others": names(r.by_others), "in_progress": names(r.in_progress),
                  "taken_over": names(r.taken_over)}))
"""


def start(out: Path, videos: list[Path], **settings) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), json.dumps(settings), *map(str, videos)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def finish(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def assert_same_features(got: Path, want: Path) -> None:
    a, b = read_features(got), read_features(want)
    np.testing.assert_array_equal(a.features, b.features)
    assert {k: v for k, v in a.attrs.items() if k != "source"}.keys() == b.attrs.keys() - {"source"}


# --- the claim rules ---------------------------------------------------------------------------------------

def info(host: str | None, pid: int | None, heartbeat: float) -> ClaimInfo:
    return ClaimInfo(host, pid, "t", heartbeat, b"")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_liveness_rules():
    now = 1000.0
    me, dead = os.getpid(), dead_pid()
    assert claim_is_live(info("elsewhere", 1, now - 5), 10, now=now, host=HOST)       # fresh, other machine
    assert not claim_is_live(info("elsewhere", 1, now - 11), 10, now=now, host=HOST)  # stale heartbeat
    assert claim_is_live(info(HOST, me, now - 5), 10, now=now, host=HOST)             # fresh, running here
    assert not claim_is_live(info(HOST, dead, now - 1), 10, now=now, host=HOST)       # fresh, but dead here
    assert not claim_is_live(info(HOST, me, now - 11), 10, now=now, host=HOST)        # running, but hung
    assert claim_is_live(info(None, None, now - 5), 10, now=now, host=HOST)           # unreadable: by its age
    assert not claim_is_live(info(None, None, now - 11), 10, now=now, host=HOST)


def test_claims_are_exclusive_refreshed_and_released(tmp_path):
    dest = tmp_path / "v.h5"
    with ClaimSet(heartbeat=0.05, timeout=5) as a, ClaimSet(heartbeat=0.05, timeout=5) as b:
        assert a.acquire(dest) == "new" and a.holds(dest)
        first = read_claim(claim_path(dest))
        assert (first.host, first.pid) == (HOST, os.getpid())
        assert b.acquire(dest) is None and b.state(dest) == "live"
        time.sleep(0.3)
        assert read_claim(claim_path(dest)).heartbeat > first.heartbeat + 0.1     # the thread refreshes it
        b.release(dest)                                                           # not b's: nothing happens
        assert claim_path(dest).exists()
        a.release(dest)
        assert not claim_path(dest).exists() and b.state(dest) == "free"
        assert b.acquire(dest) == "new" and a.acquire(dest) is None
        assert a.acquire(tmp_path / "w.h5") == "new"
    assert hidden(tmp_path) == []                                                 # closing released all


def write_claim(dest: Path, host: str, pid: int, heartbeat: float) -> None:
    claim_path(dest).write_text(json.dumps({"host": host, "pid": pid, "token": "x", "heartbeat": heartbeat}))
    os.utime(claim_path(dest), (heartbeat, heartbeat))


def test_dead_owners_claims_are_taken_over(tmp_path):
    now = time.time()
    write_claim(tmp_path / "dead.h5", HOST, dead_pid(), now)           # this machine, pid gone: at once
    write_claim(tmp_path / "stale.h5", "elsewhere", 1, now - 30)       # another machine, heartbeat lapsed
    write_claim(tmp_path / "live.h5", "elsewhere", 1, now)             # another machine, fresh
    with ClaimSet(heartbeat=1, timeout=10) as claims:
        assert claims.acquire(tmp_path / "dead.h5") == "taken over"
        assert claims.acquire(tmp_path / "stale.h5") == "taken over"
        assert claims.acquire(tmp_path / "live.h5") is None
        assert read_claim(claim_path(tmp_path / "dead.h5")).pid == os.getpid()
    assert hidden(tmp_path) == [".live.h5.claim"]


def test_one_taker_wins_a_race_for_a_stale_claim(tmp_path):
    for trial in range(20):
        dest = tmp_path / f"v{trial}.h5"
        write_claim(dest, "elsewhere", 1, time.time() - 100)
        sets = [ClaimSet(heartbeat=1, timeout=10) for _ in range(6)]
        barrier = threading.Barrier(len(sets))
        results: list = [None] * len(sets)

        def take(i: int, sets=sets, barrier=barrier, results=results, dest=dest) -> None:
            barrier.wait()
            results[i] = sets[i].acquire(dest)

        threads = [threading.Thread(target=take, args=(i,)) for i in range(len(sets))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is not None for r in results) == 1, results
        winner = sets[next(i for i, r in enumerate(results) if r is not None)]
        assert read_claim(claim_path(dest)).token == winner._held[claim_path(dest)][1]
        for s in sets:
            s.close()
        assert hidden(tmp_path) == []


def test_rank_device():
    torchrun = {"LOCAL_RANK": "3"}
    assert rank_device("auto", torchrun, 8) == "cuda:3"
    assert rank_device("cuda", torchrun, 8) == "cuda:3"
    assert rank_device("auto", torchrun, 2) == "cuda:1"            # more processes than GPUs: they share
    assert rank_device("auto", {}, 8) == "cuda"
    assert rank_device("auto", torchrun, 0) == "cpu"
    assert rank_device("cuda", torchrun, 0) == "cuda"              # resolve_device then says CUDA is missing
    assert rank_device("cuda:0", torchrun, 8) == "cuda:0"          # explicit choices are kept
    assert rank_device("cpu", torchrun, 8) == "cpu"
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        rank_device("auto", {"LOCAL_RANK": "x"}, 8)


def test_claim_settings_are_checked():
    with pytest.raises(ValueError, match="claim_timeout"):
        ExtractConfig(claim_heartbeat=5, claim_timeout=9)
    with pytest.raises(ValueError, match="claim_heartbeat"):
        ExtractConfig(claim_heartbeat=0)


# --- several processes --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Eight small videos in a read-only folder, and one process's features of them."""
    root = tmp_path_factory.mktemp("claims")
    videos_dir = root / "videos"
    videos_dir.mkdir()
    videos = [make_video(videos_dir / f"v{i}.mp4", n, 80, 48) for i, n in enumerate([40, 56, 32, 48, 64, 40, 24, 56])]
    for v in videos:
        v.chmod(stat.S_IRUSR | stat.S_IRGRP)
    videos_dir.chmod(stat.S_IRUSR | stat.S_IXUSR)
    ref = root / "ref"
    report = finish(start(ref, [videos_dir]))
    assert report["written"] == [f"v{i}.h5" for i in range(8)]
    yield videos_dir, videos, ref
    videos_dir.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("processes", [2, 3])
def test_processes_share_a_folder_and_write_each_video_once(tmp_path, folder, processes):
    videos_dir, videos, ref = folder
    out = tmp_path / "out"
    reports = [finish(p) for p in [start(out, [videos_dir]) for _ in range(processes)]]
    names = [f"v{i}.h5" for i in range(len(videos))]
    written = [name for r in reports for name in r["written"]]
    assert sorted(written) == names                                  # each video exactly once
    for r in reports:
        # the rest is counted as the others': written while it ran, or (a process that started late, as on a
        # loaded machine) already there when it started
        assert sorted(r["written"] + r["by_others"] + r["skipped"]) == names
        assert r["failed"] == r["in_progress"] == r["taken_over"] == []
    assert sorted(p.name for p in out.iterdir()) == names            # no claim or temporary file left
    for name in names:
        assert_same_features(out / name, ref / name)


def wait_for(predicate, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> tuple[Path, Path]:
    """A 400-frame video (long enough to be killed mid-way) and one uninterrupted process's features of it."""
    root = tmp_path_factory.mktemp("long")
    long = make_video(root / "long.mp4", 400, 80, 48)
    finish(start(root / "single", [long]))
    return long, root / "single" / "long.h5"


@pytest.mark.parametrize("where", ["this machine", "another machine"])
def test_a_killed_process_claim_is_taken_over(tmp_path, folder, long_video, where):
    """kill -9 mid-video leaves the claim; on this machine the dead pid frees it at once, from another
    machine (the claim's host rewritten, its heartbeat fresh) only once the heartbeat has lapsed."""
    videos_dir, videos, ref = folder
    out = tmp_path / "out"
    out.mkdir()
    long, single = long_video
    victim = start(out, [long], claim_heartbeat=0.2, claim_timeout=2.0)
    wait_for(lambda: any(n.startswith(f".long.h5.partial-{victim.pid}") for n in hidden(out)) or victim.poll())
    assert victim.poll() is None, "the victim ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    claim = read_claim(claim_path(out / "long.h5"))
    assert claim is not None and claim.pid == victim.pid
    timeout = 4.0 if where == "another machine" else 60.0
    beat = time.time()
    if where == "another machine":
        write_claim(out / "long.h5", "another-machine", victim.pid, beat)
    t0 = time.monotonic()
    taker = start(out, [long, videos[0]], claim_heartbeat=0.2, claim_timeout=timeout)
    if where == "another machine":                                   # left alone while the heartbeat is fresh
        time.sleep(max(0.0, beat + timeout - 0.3 - time.time()))
        assert read_claim(claim_path(out / "long.h5")).host == "another-machine" and taker.poll() is None
    report = finish(taker)
    assert report["written"] == ["long.h5", "v0.h5"] and report["taken_over"] == ["long.h5"]
    if where == "this machine":
        assert time.monotonic() - t0 < timeout                       # the dead pid freed it at once
    assert sorted(p.name for p in out.iterdir()) == ["long.h5", "v0.h5"]
    assert_same_features(out / "long.h5", single)


def test_waits_for_a_live_claim_or_leaves_it(tmp_path, folder):
    """A video claimed by a live process (this test) is counted as in progress without waiting, and is
    taken and written once that process lets it go without a file."""
    videos_dir, videos, ref = folder
    out = tmp_path / "out"
    out.mkdir()
    with ClaimSet(heartbeat=0.2, timeout=2) as held:
        held.acquire(out / "v1.h5")
        report = finish(start(out, videos[:2], wait_for_others=False))
        assert report["written"] == ["v0.h5"] and report["in_progress"] == ["v1.h5"]
        waiting = start(out, videos[:2], claim_heartbeat=0.2, claim_timeout=2.0)
        time.sleep(3.0)                                              # past the timeout: the heartbeat keeps it
        assert waiting.poll() is None and not (out / "v1.h5").exists()
    report = finish(waiting)
    assert report["written"] == ["v1.h5"] and report["skipped"] == ["v0.h5"] and report["taken_over"] == []
    assert_same_features(out / "v1.h5", ref / "v1.h5")
    assert hidden(out) == []


def test_a_dead_owners_claim_beside_a_finished_file_is_removed(tmp_path, folder):
    """A process killed between writing a file and releasing its claim leaves the claim beside a finished
    output (seen in tests/test_faults.py's random kills): the next run skips the file and removes that claim,
    whether other videos are left to do or not; a live claim beside a finished file is left to its owner."""
    videos_dir, videos, ref = folder
    out = tmp_path / "out"
    out.mkdir()
    (out / "v0.h5").write_bytes((ref / "v0.h5").read_bytes())
    write_claim(out / "v0.h5", HOST, dead_pid(), time.time())
    report = finish(start(out, videos[:2]))
    assert report["skipped"] == ["v0.h5"] and report["written"] == ["v1.h5"] and hidden(out) == []
    write_claim(out / "v1.h5", "elsewhere", 1, time.time() - 120)             # nothing left to do: still removed
    assert finish(start(out, videos[:2]))["skipped"] == ["v0.h5", "v1.h5"] and hidden(out) == []
    with ClaimSet(heartbeat=0.2, timeout=2) as held:
        held.acquire(out / "v0.h5")
        assert finish(start(out, videos[:2]))["skipped"] == ["v0.h5", "v1.h5"]
        assert hidden(out) == [".v0.h5.claim"]
    assert hidden(out) == []


def test_sigterm_removes_the_claims(tmp_path):
    out = tmp_path / "out"
    long = make_video(tmp_path / "long.mp4", 400, 80, 48)
    proc = start(out, [long])
    wait_for(lambda: out.exists() and any(n.startswith(".long.h5.partial-") for n in hidden(out)) or proc.poll())
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert hidden(out) == [] and list(out.iterdir()) == []
