"""Fault injection: commands killed with SIGKILL at random points, then rerun.

Commands: extraction, ``refactor train`` and ``detect train`` (resume from ``OUT.state``),
``refactor apply`` (one output file per input) and ``detect run`` (one predictions JSON), on small
synthetic feature files (:func:`tests.featfiles.detection_dataset`).

For each command: after every kill no visible output is partial (each file under its final name
is complete and equal to an uninterrupted run's), work finished before a kill is kept by the
rerun (same inode and modification time: skipped, not redone), and once a rerun completes the
outputs equal an uninterrupted run's and no temporary file is left.

Extraction runs as ``python -c`` (random I3D weights, which ``python -m extract`` cannot load)
calling :func:`extract.extract_videos`, the library function under ``python -m extract``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import torch

from common.checkpoint import load_checkpoint
from detect.checkpoint import load_detector
from extract import read_features
from refactor import RefactorError, load_refactor
from tests.featfiles import detection_dataset
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


ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_to_end(cmd: list[str]) -> float:
    """Run ``cmd`` to completion (exit 0 required); returns its wall time in seconds."""
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.monotonic() - start


def hidden(out: Path) -> list[str]:
    """Temporary files (atomic writes: hidden names) in ``out``."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def run_and_kill(cmd: list[str], out: Path, after: float) -> bool:
    """Start ``cmd``; once it is writing an output (a temporary file of its own exists in ``out``;
    a killed run's are left until a rerun reaches their video), SIGKILL it ``after`` seconds later.
    True if it was killed, False if it ended first."""
    mine = None

    def writing() -> bool:
        return any(name.endswith(mine) for name in hidden(out))
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    mine = f"-{proc.pid}"
    return kill_after(proc, writing, after)


def kill_after(proc: subprocess.Popen, started, after: float) -> bool:
    """Once ``started()`` is true (polled every 5 ms), SIGKILL ``proc`` ``after`` seconds later.
    True if it was killed, False if it ended first."""
    try:
        while proc.poll() is None and not started():
            time.sleep(0.005)
        deadline = time.monotonic() + after
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
        if proc.poll() is not None:
            return False
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


def check_final(out: Path, ref_out: Path, names: set[str], kept: dict) -> None:
    """After the run to the end: exactly the expected files, each file kept across the kills untouched
    (same inode and time), and every file equal to the uninterrupted run's."""
    final = visible(out)
    assert set(final) == names
    for name, st in kept.items():
        assert (final[name].st_ino, final[name].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    for name in names:
        assert_features_equal(out / name, ref_out / name)


def check_after_kill(out: Path, ref_out: Path, names: set[str], kept: dict) -> dict:
    """After a kill: only expected files, none partial (each equals the reference), and every file kept
    from before the kill untouched (same inode and time). Returns the files now visible."""
    now = visible(out)
    assert set(now) <= names
    for name in now:                                   # nothing partial under a final name
        assert_features_equal(out / name, ref_out / name)
    for name, st in kept.items():                      # finished work is never redone
        assert (now[name].st_ino, now[name].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), name
    return now


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
    followed by the checks, then run to the end. About 25 s on 2 cores. Kill times scale with the
    videos left; where a run ends before its kill (the machine was faster than measured), the checks
    still run, then the folder starts over and the time per video is halved."""
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
    for _ in range(10):
        left = len(names) - len(visible(out))
        after = rng.uniform(0.0, min(2.5, left)) * per_video
        killed = run_and_kill(extract_cmd(out, videos), out, float(after))
        kept = check_after_kill(out, ref_out, names, kept)
        kills += killed
        if not killed:                     # everything was written before the kill: start over, kill sooner
            assert set(kept) == names
            shutil.rmtree(out)
            kept, per_video = {}, per_video / 2
        if kills == 4:
            break
    assert kills >= 3, "the random kill times fell after the run ended: nothing was tested"
    run_to_end(extract_cmd(out, videos))
    check_final(out, ref_out, names, kept)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left



# ---- RefactorNet training, detector training, refactor apply, detect run ----------------------------------

REFACTOR_EPOCHS, DETECT_EPOCHS = 20, 6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(feature folder, annotations, a scratch folder): 10 synthetic videos of 40-80 snippets, 2 x 16 dims."""
    root = tmp_path_factory.mktemp("faults")
    features, ann, _ = detection_dataset(root / "data", videos=10, num_snippets=(40, 80), dim_per_stream=16, seed=1)
    return features, ann, root


def refactor_train_cmd(data, out: Path) -> list[str]:
    features, ann, _ = data
    return [sys.executable, "-m", "refactor", "train", "--features", str(features), "--annotations", str(ann),
            "--out", str(out), "--epochs", str(REFACTOR_EPOCHS), "--batch-size", "4", "--hidden-dim", "16",
            "--seed", "3"]


def detect_train_cmd(data, out: Path) -> list[str]:
    features, ann, _ = data
    return [sys.executable, "-m", "detect", "train", "--features", str(features), "--annotations", str(ann),
            "--out", str(out), "--epochs", str(DETECT_EPOCHS), "--window", "32", "--batch-size", "8",
            "--max-duration", "16", "--base-dim", "16", "--boundary-hidden", "16", "--head-hidden", "32",
            "--seed", "5"]


def timed_run(cmd: list[str], started) -> tuple[float, float, float]:
    """Run ``cmd`` to completion (exit 0 required): (seconds until ``started()`` first held, seconds until
    it last held, total seconds); the first two are the total when it never held."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    first = last = None
    while proc.poll() is None:
        if started():
            last = time.monotonic() - t0
            first = last if first is None else first
        time.sleep(0.002)
    total = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    return (total if first is None else first), (total if last is None else last), total


def stamp(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None


@pytest.fixture(scope="module")
def refactor_ref(data):
    """The uninterrupted `refactor train`: (checkpoint, seconds from its first per-epoch state to the
    state's removal, i.e. its training time; writing the checkpoint and the interpreter's exit come after)."""
    out = data[2] / "ref_refactor" / "r.pt"
    state = Path(str(out) + ".state")
    first, last, _ = timed_run(refactor_train_cmd(data, out), state.exists)
    return out, last - first


@pytest.fixture(scope="module")
def detect_ref(data):
    """The uninterrupted `detect train`: (checkpoint, seconds from its first per-epoch state to the state's
    removal: its training time)."""
    out = data[2] / "ref_detect" / "det.pt"
    state = Path(str(out) + ".state")
    first, last, _ = timed_run(detect_train_cmd(data, out), state.exists)
    return out, last - first


def assert_same_model(got: tuple, want: tuple) -> None:
    """(model, checkpoint dict) pairs: equal weights (CPU, one thread: bit for bit) and history."""
    assert got[1]["history"] == want[1]["history"]
    for (k, a), b in zip(want[0].state_dict().items(), got[0].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)


def kill_training(cmd: list[str], out: Path, ref_history: list[dict], span: float, read_state, seed: int,
                  check_out) -> set[str]:
    """Kill a training command 3 times, each time a seeded random moment after this run saved its first
    per-epoch state: up to half of the training time it has left (``span``, the uninterrupted run's
    training time, times the share of epochs still to do after that first state), so that the kill
    lands while it trains even when this run is faster than the uninterrupted one was. After each kill
    the state file is complete (its history a prefix of the uninterrupted run's) and never loses an epoch,
    and the checkpoint ``out`` is either absent or complete (``check_out``). Returns the killed runs'
    temporary-name suffixes (``-PID``)."""
    state = Path(str(out) + ".state")
    rng = np.random.default_rng(seed)
    killed, done = set(), 0
    for share in rng.uniform(0.0, 0.5, size=3):
        after = share * span * max(len(ref_history) - done - 1, 0) / len(ref_history)
        before = stamp(state)
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        if not kill_after(proc, lambda b=before: stamp(state) not in (None, b), float(after)):
            break                                           # it finished: a rerun would train anew
        killed.add(f"-{proc.pid}")
        if out.exists():                                    # killed between the checkpoint and the state's removal
            check_out()
        if state.exists():
            history = read_state(state)
            assert history == ref_history[:len(history)], "the state's history differs from an uninterrupted run's"
            assert len(history) >= done, "a resumed run lost finished epochs"
            done = len(history)
        else:                                               # killed after its work was done (exiting)
            assert out.exists(), "killed with neither a state nor a checkpoint"
            break                                           # a rerun would train anew
    return killed


@pytest.mark.slow
def test_refactor_train_killed_at_random_points(data, refactor_ref, tmp_path):
    """`refactor train` SIGKILLed at 3 seeded random moments while it trains, rerun each time: it resumes
    from OUT.state and the final checkpoint equals an uninterrupted run's (weights bit for bit, history);
    no state is left (temporary files: only a killed run's, test_stale_temporaries_removed_by_rerun)."""
    ref_out, span = refactor_ref
    want = load_refactor(ref_out)
    out = tmp_path / "r.pt"
    cmd = refactor_train_cmd(data, out)

    def read_state(path: Path) -> list[dict]:
        return list(load_checkpoint(path, RefactorError, "RefactorNet training state")["history"])

    killed = kill_training(cmd, out, want[1]["history"], span, read_state, seed=141,
                           check_out=lambda: assert_same_model(load_refactor(out), want))
    assert len(killed) >= 2, "the random kill times fell after the run ended: nothing was tested"
    run_to_end(cmd)
    assert_same_model(load_refactor(out), want)
    assert list(visible(tmp_path)) == ["r.pt"]                           # no state left
    assert hidden(tmp_path) == []                                        # killed writers' temporaries removed


@pytest.mark.slow
def test_detect_train_killed_at_random_points(data, detect_ref, tmp_path):
    """`detect train` SIGKILLed at 3 seeded random moments while it trains, rerun each time: it resumes
    from OUT.state; the final checkpoint and its log OUT.log.jsonl equal an uninterrupted run's."""
    from detect.validation import read_log

    ref_out, span = detect_ref
    want = load_detector(ref_out)
    out = tmp_path / "det.pt"
    cmd = detect_train_cmd(data, out)

    def read_state(path: Path) -> list[dict]:
        return list(torch.load(path, weights_only=True)["history"])

    killed = kill_training(cmd, out, want[1]["history"], span, read_state, seed=142,
                           check_out=lambda: assert_same_model(load_detector(out), want))
    assert len(killed) >= 2, "the random kill times fell after the run ended: nothing was tested"
    run_to_end(cmd)
    assert_same_model(load_detector(out), want)
    assert read_log(tmp_path / "det.log.jsonl") == read_log(ref_out.parent / "det.log.jsonl") == want[1]["history"]
    assert list(visible(tmp_path)) == ["det.log.jsonl", "det.pt"]        # no state left
    assert hidden(tmp_path) == []                                        # killed writers' temporaries removed


@pytest.mark.slow
def test_refactor_apply_killed_at_random_points(data, refactor_ref, tmp_path):
    """`refactor apply` SIGKILLed 4 times at a seeded random moment after it starts writing (up to
    twice what one file takes: within a file or past its end), rerun each time: every file under its
    final name equals the uninterrupted run's, files written before a kill are skipped by the rerun
    (same inode and time), and the last rerun completes the folder."""
    ckpt, _ = refactor_ref                      # longer videos than it was trained on: each file takes a while
    features, _, _ = detection_dataset(tmp_path / "long", videos=10, num_snippets=(8000, 12000), dim_per_stream=16,
                                       seed=2)
    names = {p.name for p in features.glob("*.h5")}

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "refactor", "apply", "--features", str(features), "--checkpoint", str(ckpt),
                "--out", str(out)]
    ref_out = tmp_path / "ref"
    run_to_end(cmd(ref_out))
    done = sorted(st.st_mtime_ns for st in visible(ref_out).values())
    assert len(done) == len(names)
    per_file = max(0.002, (done[-1] - done[0]) / 1e9 / (len(names) - 1))       # from the files' times

    out = tmp_path / "out"
    rng = np.random.default_rng(143)
    kept: dict[str, os.stat_result] = {}
    kills, killed = 0, set()
    for after in rng.uniform(0.0, 2.0, size=4) * per_file:
        start = set(visible(out))
        proc = subprocess.Popen(cmd(out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        mine = f"-{proc.pid}"
        if kill_after(proc, lambda s=start, m=mine: any(n.endswith(m) for n in hidden(out)) or
                      set(visible(out)) != s, float(after)):
            kills += 1
            killed.add(mine)
        kept = check_after_kill(out, ref_out, names, kept)
    assert kills >= 2, "the random kill times fell after the run ended: nothing was tested"
    run_to_end(cmd(out))
    check_final(out, ref_out, names, kept)
    assert hidden(out) == []                                             # killed writers' temporaries removed


def test_stale_temporaries_removed_by_rerun(data, refactor_ref, tmp_path):
    """A run killed while writing leaves its temporary file (atomic write, hidden); the rerun that
    writes that output must remove it, as extraction does (extract.pipeline)."""
    features, _, _ = data
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".video_000.h5.partial-999999"          # what SIGKILL during that file's write leaves
    stale.write_bytes(b"\x89HDF half")
    run_to_end([sys.executable, "-m", "refactor", "apply", "--features", str(features), "--checkpoint",
                str(refactor_ref[0]), "--out", str(out)])
    assert (out / "video_000.h5").is_file()
    assert hidden(out) == []


@pytest.mark.slow
def test_detect_run_killed_at_random_points(data, detect_ref, tmp_path):
    """`detect run` SIGKILLed 3 times at a seeded random moment (up to the uninterrupted run's time),
    rerun each time: the predictions JSON is absent or equal to the uninterrupted run's, never partial,
    and the last rerun writes it, equal."""
    import json

    features, _, _ = data
    ckpt, _ = detect_ref

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "detect", "run", "--features", str(features), "--checkpoint", str(ckpt),
                "--out", str(out)]
    ref = tmp_path / "ref.json"
    _, _, total = timed_run(cmd(ref), lambda: False)
    want = json.loads(ref.read_text())
    assert set(want["results"]) == {p.stem for p in features.glob("*.h5")}

    out = tmp_path / "out" / "pred.json"
    rng = np.random.default_rng(144)
    kills, marks = 0, set()
    for after in rng.uniform(0.3, 1.0, size=3) * total:
        proc = subprocess.Popen(cmd(out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        killed = kill_after(proc, lambda: True, float(after))
        kills += killed
        marks |= {f"-{proc.pid}"} if killed else set()
        if out.exists():                                   # never partial
            assert json.loads(out.read_text()) == want
        if killed:
            out.unlink(missing_ok=True)                    # the next kill must find no finished output
    assert kills >= 2, "the random kill times fell after the run ended: nothing was tested"
    run_to_end(cmd(out))
    assert json.loads(out.read_text()) == want
    assert hidden(out.parent) == []                                      # killed writers' temporaries removed
