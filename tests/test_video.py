"""Tests of extract.video: timestamps, decoding, time-based sampling and unusable files.

Videos are made on the fly (tests/videos.py): lossless H.264 whose frame ``i`` has grey level
``level(i) = 10 i mod 250`` and a red square at x = ``7 i mod (width - 8)``, so a decoded frame
reveals its source index.
"""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import extract.video as video
from extract.video import (DecordReader, TorchCodecReader, VideoError, num_sampled_frames, open_video, sample_indices,
                           torchcodec_status)
from tests.videos import decoded_levels, frame_image, make_audio_only, make_video, truncate, upright_image

# torchcodec is optional: its PyPI wheels need a CUDA build of torch, so on CPU-only machines (CI) its
# cases are skipped and the reader's own logic is tested with a stand-in decoder (end of this file).
HAS_TORCHCODEC = torchcodec_status()[0] is not None
TORCHCODEC = pytest.param("torchcodec", marks=pytest.mark.skipif(
    not HAS_TORCHCODEC, reason=f"torchcodec {torchcodec_status()[1]}"))
AUTO_CHOICE = "torchcodec" if HAS_TORCHCODEC else "decord"
BACKENDS = ["decord", "pyav", TORCHCODEC]
# pts (ms) of a variable-frame-rate video. No start lies within 25 ms after a multiple of 100 ms,
# so at 10 fps the quarter-frame rounding tolerance of sample_indices cannot change the answer.
VFR_PTS_MS = [0, 40, 80, 200, 240, 500, 540, 580, 650, 1000, 1040, 1080, 1160, 1500]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def read(reader, indices) -> tuple[list[int], np.ndarray]:
    """Decode ``indices``; returns the yielded indices and the stacked frames."""
    pairs = list(reader.frames(np.asarray(indices, dtype=np.int64)))
    return [i for i, _ in pairs], np.stack([f for _, f in pairs])


def assert_same_frames(frames: np.ndarray, expected: np.ndarray, what: str) -> None:
    """``assert_array_equal``'s verdict on uint8 frames without its NaN and inf passes, which take 18 s on
    the sample clips' 500 frames; a failure names the first frame and pixel that differ."""
    assert frames.shape == expected.shape, (what, frames.shape, expected.shape)
    if not np.array_equal(frames, expected):
        first = tuple(int(i) for i in np.argwhere(frames != expected)[0])
        raise AssertionError(f"{what}: frame {first[0]} differs first at {first[1:]}: {frames[first[:3]]} vs "
                             f"{expected[first[:3]]}")


def square_x(frame: np.ndarray) -> int:
    """Left edge of the red square (row height // 4)."""
    row = frame[frame.shape[0] // 4].astype(int)
    red = np.flatnonzero((row[:, 0] > 200) & (row[:, 1] < 50) & (row[:, 2] < 50))
    return int(red[0])


def assert_one_line_error(excinfo, *causes: str) -> None:
    """The VideoError message is one non-empty line mentioning one of ``causes``."""
    msg = str(excinfo.value)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    assert any(c in msg.lower() for c in causes), f"{msg!r} names none of {causes}"


# --------------------------------------------------------------------------- info

def test_info_constant_rate(tmp_path, backend):
    """40 frames, 25 fps, 64x48: rate, count, per-frame starts, duration, size."""
    path = make_video(tmp_path / "v.mp4", 40, 64, 48, fps=25)
    with open_video(path, backend) as reader:
        info = reader.info
    assert info.backend == backend
    assert info.path == path
    assert info.fps == pytest.approx(25.0, abs=1e-6)
    assert info.num_frames == 40
    # times rounded once from the exact k / 25 (what a snippet's end is compared with), every backend
    np.testing.assert_array_equal(info.starts, np.arange(40) / 25)
    assert info.duration == 1.6                                # decord's own float32 stamps say 1.600000023841858
    assert (info.width, info.height) == (64, 48)


def test_odd_size(tmp_path, backend):
    """175x97, 10 frames: odd sizes survive, frames decode at full size and in order."""
    path = make_video(tmp_path / "odd.mp4", 10, 175, 97)
    with open_video(path, backend) as reader:
        assert (reader.info.width, reader.info.height) == (175, 97)
        assert reader.info.num_frames == 10
        assert reader.info.duration == pytest.approx(0.4, abs=1e-5)
        idx, frames = read(reader, np.arange(10))
    assert idx == list(range(10))
    assert frames.shape == (10, 97, 175, 3) and frames.dtype == np.uint8
    assert decoded_levels(frames).tolist() == list(range(10))
    assert [square_x(f) for f in frames] == [7 * i % (175 - 8) for i in range(10)]


def test_one_frame_video(tmp_path, backend):
    """A single frame: one start at 0, one frame's duration, sampled once at any rate."""
    path = make_video(tmp_path / "one.mp4", 1)
    with open_video(path, backend) as reader:
        info = reader.info
        assert info.num_frames == 1
        assert info.starts.tolist() == [0.0]
        assert info.fps == pytest.approx(25.0, abs=1e-6)
        assert info.duration == pytest.approx(0.04, abs=1e-5)
        for fps in (25.0, 10.0, 1.0):
            assert sample_indices(info.starts, info.duration, fps, info.fps).tolist() == [0]
        idx, frames = read(reader, [0])
    assert idx == [0]
    assert frames.shape == (1, 48, 64, 3)
    assert decoded_levels(frames).tolist() == [0]


def test_ten_frame_video(tmp_path, backend):
    """10 frames: every frame decodes to its own source index, within 1 grey level of the source."""
    path = make_video(tmp_path / "ten.mp4", 10)
    with open_video(path, backend) as reader:
        assert reader.info.num_frames == 10
        assert reader.info.duration == pytest.approx(0.4, abs=1e-5)
        idx, frames = read(reader, np.arange(10))
    assert idx == list(range(10))
    source = np.stack([frame_image(i, 64, 48) for i in range(10)]).astype(int)
    assert np.abs(frames.astype(int) - source).max() <= 1


# --------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("indices", [
    [0, 1, 5, 17, 24, 25, 26, 38, 39],
    [39],
    [3, 30],
    list(range(0, 40, 3)),
])
def test_decoded_frames_are_the_requested_ones(tmp_path, backend, indices):
    """A strictly increasing subset decodes to exactly those source frames (grey level gives
    i mod 25, the square's position i mod 8: together they pin i in 0..39)."""
    path = make_video(tmp_path / "v.mp4", 40)
    with open_video(path, backend) as reader:
        idx, frames = read(reader, indices)
    assert idx == indices
    assert decoded_levels(frames).tolist() == [i % 25 for i in indices]
    assert [square_x(f) for f in frames] == [7 * i % 56 for i in indices]


def test_no_indices_no_frames(tmp_path, backend):
    path = make_video(tmp_path / "v.mp4", 5)
    with open_video(path, backend) as reader:
        assert list(reader.frames(np.zeros(0, np.int64))) == []


def test_backends_agree(tmp_path):
    """decord, PyAV (and torchcodec where it loads) give identical pixels on a lossless video."""
    path = make_video(tmp_path / "v.mp4", 40, 175, 97)
    with open_video(path, "pyav") as ref:
        _, expected = read(ref, np.arange(40))
        starts, duration = ref.info.starts, ref.info.duration
    for b in ["decord"] + ["torchcodec"] * HAS_TORCHCODEC:
        with open_video(path, b) as reader:
            np.testing.assert_array_equal(reader.info.starts, starts)
            assert reader.info.duration == duration
            _, frames = read(reader, np.arange(40))
        np.testing.assert_array_equal(frames, expected)


@pytest.mark.slow
def test_backends_agree_on_the_sample_clips():
    """The three real sample clips (H.264 4:2:0, 176x144 to 1280x720): every backend decodes every frame
    to the same pixels and the same times."""
    from extract.samples import SAMPLES, fetch_samples

    for path in fetch_samples(tuple(SAMPLES)):
        with open_video(path, "pyav") as ref:
            _, expected = read(ref, np.arange(ref.info.num_frames))
            starts, duration = ref.info.starts, ref.info.duration
        for b in ["decord"] + ["torchcodec"] * HAS_TORCHCODEC:
            with open_video(path, b) as reader:
                np.testing.assert_array_equal(reader.info.starts, starts)
                assert reader.info.duration == duration, f"{b} on {path.name}"
                _, frames = read(reader, np.arange(reader.info.num_frames))
            assert_same_frames(frames, expected, f"{b} on {path.name}")


def test_decord_small_chunks(tmp_path):
    """decord decodes in bounded chunks; chunks of 3 frames give the same frames as one chunk."""
    path = make_video(tmp_path / "v.mp4", 40)
    small = DecordReader(path, chunk_bytes=3 * 64 * 48 * 3)
    assert small._chunk == 3
    indices = [0, 2, 3, 7, 8, 9, 10, 20, 33, 39]
    idx, frames = read(small, indices)
    _, ref = read(DecordReader(path), indices)
    assert idx == indices
    np.testing.assert_array_equal(frames, ref)
    assert decoded_levels(frames).tolist() == [i % 25 for i in indices]


def test_auto_backend(tmp_path):
    """"auto" opens a good file with torchcodec where it loads, else with decord."""
    path = make_video(tmp_path / "v.mp4", 5)
    with open_video(path) as reader:
        assert reader.info.backend == AUTO_CHOICE
        assert reader.info.num_frames == 5


# --------------------------------------------------------------------------- rotation (display matrix)

ROTATIONS = [0, 90, 180, 270]


def red_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), half-open, of the red square in a frame."""
    f = frame.astype(int)
    rows, cols = np.nonzero((f[..., 0] > 200) & (f[..., 1] < 50) & (f[..., 2] < 50))
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def expected_box(i: int, w: int, h: int, rotation: int) -> tuple[int, int, int, int]:
    """Where a player shows frame i's square: the coded square at rows [y, y+8), columns [x, x+8)
    of the w x h image, turned ``rotation`` degrees counter-clockwise (written out by hand)."""
    x, y = (i * 7) % (w - 8), h // 4
    return {0: (y, y + 8, x, x + 8),
            90: (w - x - 8, w - x, y, y + 8),  # left edge comes to the bottom
            180: (h - y - 8, h - y, w - x - 8, w - x),
            270: (x, x + 8, h - y - 8, h - y)}[rotation]  # left edge comes to the top (a phone's -90)


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_rotated_video_upright(tmp_path, backend, rotation):
    """A 64x48 video with a display rotation decodes upright with both backends: the displayed
    size, the square where a player shows it, and the whole image equal to the turned source."""
    w, h = 64, 48
    path = make_video(tmp_path / f"r{rotation}.mp4", 12, w, h, rotation=rotation)
    with open_video(path, backend) as reader:
        info = reader.info
        idx, frames = read(reader, np.arange(12))
    assert info.rotation == rotation
    assert (info.width, info.height) == ((h, w) if rotation in (90, 270) else (w, h))
    assert info.num_frames == 12 and info.duration == pytest.approx(12 / 25, abs=1e-5)
    assert idx == list(range(12))
    assert frames.shape == (12, info.height, info.width, 3)
    assert [red_box(f) for f in frames] == [expected_box(i, w, h, rotation) for i in range(12)]
    for i, f in enumerate(frames):  # lossless up to RGB <-> YUV rounding
        assert np.abs(f.astype(int) - upright_image(i, w, h, rotation)).max() <= 3


@pytest.mark.parametrize("rotation", [90, 270])
def test_quarter_turn_falls_back_to_pyav(tmp_path, rotation):
    """decord cannot decode 90/270-degree videos: "decord" (and "auto" without torchcodec) use PyAV,
    say so in ``info.backend``, and give exactly PyAV's frames; torchcodec turns them itself."""
    path = make_video(tmp_path / "r.mp4", 10, 175, 97, rotation=rotation)
    with open_video(path, "pyav") as ref:
        assert ref.info.backend == "pyav"
        _, expected = read(ref, np.arange(10))
    fallback = f"pyav (decord cannot decode a video rotated by {rotation} degrees)"
    for b, name in [("auto", "torchcodec" if HAS_TORCHCODEC else fallback), ("decord", fallback)]:
        with open_video(path, b) as reader:
            assert reader.info.backend == name
            assert (reader.info.width, reader.info.height) == (97, 175)
            _, frames = read(reader, np.arange(10))
        np.testing.assert_array_equal(frames, expected)
    with pytest.raises(VideoError, match="rotated by"):
        DecordReader(path)


def test_half_turn_backends_agree(tmp_path):
    """decord turns a 180-degree video itself; its frames equal PyAV's exactly (odd size)."""
    path = make_video(tmp_path / "r.mp4", 20, 175, 97, rotation=180)
    with open_video(path, "decord") as a, open_video(path, "pyav") as b:
        assert a.info.backend == "decord" and b.info.backend == "pyav"
        _, fa = read(a, np.arange(20))
        _, fb = read(b, np.arange(20))
    np.testing.assert_array_equal(fa, fb)
    assert [red_box(f) for f in fa] == [expected_box(i, 175, 97, 180) for i in range(20)]


def test_phone_minus_90(tmp_path):
    """The reported case: a landscape-coded phone video with display rotation -90 (ffprobe's
    "rotation of -90 degrees") opens with the default backend and shows portrait frames."""
    path = make_video(tmp_path / "phone.mp4", 8, 64, 48, rotation=-90)
    with open_video(path) as reader:
        assert reader.info.rotation == 270
        assert (reader.info.width, reader.info.height) == (48, 64)
        _, frames = read(reader, np.arange(8))
    assert [red_box(f) for f in frames] == [expected_box(i, 64, 48, 270) for i in range(8)]


@pytest.mark.parametrize("b", ["auto", "decord", "pyav"])
def test_mirrored_display_matrix_refused(tmp_path, b):
    """A mirroring display matrix is not silently ignored: one-line error."""
    path = make_video(tmp_path / "m.mp4", 4, rotation=90, hflip=True)
    with pytest.raises(VideoError) as excinfo:
        open_video(path, b)
    assert_one_line_error(excinfo, "mirror")


# --------------------------------------------------------------------------- sampling

def expected_indices(starts_ms: list[int], num: int, step_ms: int) -> list[int]:
    """Last frame whose start is <= k * step_ms, for k < num (exact integer arithmetic)."""
    return [max(j for j, s in enumerate(starts_ms) if s <= k * step_ms) for k in range(num)]


def test_variable_frame_rate(tmp_path, backend):
    """VFR: starts are the true pts; at 10 fps each sample shows the last frame started by then."""
    path = make_video(tmp_path / "vfr.mp4", len(VFR_PTS_MS), pts_ms=VFR_PTS_MS)
    with open_video(path, backend) as reader:
        info = reader.info
        assert info.num_frames == len(VFR_PTS_MS)
        np.testing.assert_allclose(info.starts, np.array(VFR_PTS_MS) / 1000, rtol=0, atol=1e-3)
        assert 1.5 < info.duration <= 1.6

        idx = sample_indices(info.starts, info.duration, 10.0, info.fps)
        n = num_sampled_frames(info.duration, 10.0)
        assert n == math.ceil(info.duration * 10 - 1e-6)
        assert idx.dtype == np.int64
        assert idx.tolist() == expected_indices(VFR_PTS_MS, n, 100)
        # the sampled frames are really those source frames
        unique = np.unique(idx)
        got, frames = read(reader, unique)
    assert got == unique.tolist()
    assert decoded_levels(frames).tolist() == (unique % 25).tolist()


@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_native_rate_is_identity(tmp_path, backend, fps):
    """At its own constant rate a video's sampled frames are its frames, one for one."""
    path = make_video(tmp_path / "v.mp4", 50, fps=fps)
    with open_video(path, backend) as reader:
        info = reader.info
    assert info.fps == pytest.approx(fps, rel=1e-6)
    idx = sample_indices(info.starts, info.duration, info.fps, info.fps)
    np.testing.assert_array_equal(idx, np.arange(50))


def test_upsampling_repeats_frames(tmp_path, backend):
    """50 fps from 25 fps: each frame twice."""
    path = make_video(tmp_path / "v.mp4", 40)
    with open_video(path, backend) as reader:
        info = reader.info
    idx = sample_indices(info.starts, info.duration, 50.0, info.fps)
    np.testing.assert_array_equal(idx, np.repeat(np.arange(40), 2))


@pytest.mark.parametrize("fps, step", [(12.5, 2), (5.0, 5)])
def test_downsampling_skips_frames(tmp_path, backend, fps, step):
    """12.5 fps from 25 fps takes every 2nd frame, 5 fps every 5th."""
    path = make_video(tmp_path / "v.mp4", 40)
    with open_video(path, backend) as reader:
        info = reader.info
    idx = sample_indices(info.starts, info.duration, fps, info.fps)
    np.testing.assert_array_equal(idx, np.arange(0, 40, step))


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.integers(1, 200), min_size=1, max_size=60),
       fps=st.floats(0.5, 120.0, allow_nan=False, allow_infinity=False))
def test_sample_indices_definition(gaps, fps):
    """For random increasing starts (ms gaps) and rates: N = num_sampled_frames, and sample k is
    the last frame with start <= k / fps + tol, tol = 0.25 / max(fps, source_fps)."""
    starts = np.concatenate([[0.0], np.cumsum(gaps[:-1])]) / 1000
    duration = starts[-1] + gaps[-1] / 1000
    source_fps = len(starts) / duration
    idx = sample_indices(starts, duration, fps, source_fps)

    n = num_sampled_frames(duration, fps)
    assert n == 1 or (n - 1) / fps < duration  # only frames that start inside the video
    assert n >= duration * fps - 0.25          # and all of them, up to rounding
    assert idx.shape == (n,) and idx.dtype == np.int64
    tol = 0.25 / max(fps, source_fps)
    for k, j in enumerate(idx):
        t = k / fps + tol
        assert starts[j] <= t
        assert j == len(starts) - 1 or starts[j + 1] > t
    assert np.all(np.diff(idx) >= 0)


@pytest.mark.parametrize("duration, fps, expected", [
    (10.0, 25.0, 250),
    (1.6, 25.0, 40),
    (1.6000000238, 25.0, 40),  # decord's float32 timestamp noise does not add a frame
    (1.6000000238, 50.0, 80),
    (3600.0001, 25.0, 90000),
    (3600.01, 25.0, 90001),    # a quarter frame past the last start: sampled
    (0.04, 25.0, 1),
    (0.041, 25.0, 2),          # t = 0.04 < 0.041: a second frame
    (1e-9, 25.0, 1),
    (0.0, 25.0, 1),
    (1.0, 29.97, 30),
    (1.54, 10.0, 16),
])
def test_num_sampled_frames(duration, fps, expected):
    assert num_sampled_frames(duration, fps) == expected


# --------------------------------------------------------------------------- unusable files

ALL_BACKENDS = ["auto", "decord", "pyav", TORCHCODEC]


@pytest.mark.parametrize("b", ALL_BACKENDS)
def test_missing_file(tmp_path, b):
    with pytest.raises(VideoError) as excinfo:
        open_video(tmp_path / "nope.mp4", b)
    assert_one_line_error(excinfo, "does not exist")


@pytest.mark.parametrize("b", ALL_BACKENDS)
def test_empty_file(tmp_path, b):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoError) as excinfo:
        open_video(path, b)
    assert_one_line_error(excinfo, "empty")


@pytest.mark.parametrize("b", ALL_BACKENDS)
def test_directory(tmp_path, b):
    with pytest.raises(VideoError) as excinfo:
        open_video(tmp_path, b)
    assert_one_line_error(excinfo, "not a regular file")


# decord's own messages for unreadable input are "Error reading <path>..." (its log has the rest)
# (torchcodec's reader reads timestamps with PyAV first, so it gives PyAV's reasons)
UNREADABLE = {"auto": ("invalid data",), "pyav": ("invalid data",), "decord": ("invalid data",),
              "torchcodec": ("invalid data",)}


@pytest.mark.parametrize("b", ALL_BACKENDS)
def test_garbage_bytes(tmp_path, b):
    path = tmp_path / "junk.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError) as excinfo:
        open_video(path, b)
    assert_one_line_error(excinfo, *UNREADABLE[b])
    assert str(excinfo.value) == "Invalid data found when processing input"   # FFmpeg's words, no errno, no path


@pytest.mark.parametrize("b", ALL_BACKENDS)
def test_audio_only(tmp_path, b):
    path = make_audio_only(tmp_path / "audio.mp4")
    with pytest.raises(VideoError) as excinfo:
        open_video(path, b)
    assert_one_line_error(excinfo, "no video stream (audio-only or not a video)")


@pytest.mark.parametrize("b", ALL_BACKENDS)
def test_truncated_without_faststart(tmp_path, b):
    """Index (moov) at the end: half the file has no index and cannot be opened."""
    full = make_video(tmp_path / "full.mp4", 60)
    path = truncate(full, tmp_path / "half.mp4", 0.5)
    with pytest.raises(VideoError) as excinfo:
        open_video(path, b)
    assert_one_line_error(excinfo, *UNREADABLE[b])


def cut_after_packet(src, dest, k: int):
    """Copy ``src`` up to the end of its k-th video packet (a cut at a packet boundary)."""
    with av.open(str(src)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size > 0]
    dest.write_bytes(src.read_bytes()[:packets[k].pos + packets[k].size])
    return dest


@pytest.mark.parametrize("b", ALL_BACKENDS)
@pytest.mark.parametrize("cut", ["half", "packet boundary", "one packet short"])
def test_truncated_faststart_never_short(tmp_path, b, cut):
    """Index first, data cut: the file may open, but then decoding must fail - never a silently
    shorter video. Cutting exactly after a packet leaves frames that all decode cleanly."""
    full = make_video(tmp_path / "full.mp4", 60, faststart=True)
    dest = tmp_path / "cut.mp4"
    path = {"half": lambda: truncate(full, dest, 0.5),
            "packet boundary": lambda: cut_after_packet(full, dest, 29),
            "one packet short": lambda: cut_after_packet(full, dest, 58)}[cut]()
    assert path.stat().st_size < full.stat().st_size
    with pytest.raises(VideoError) as excinfo:
        with open_video(path, b) as reader:
            list(reader.frames(np.arange(reader.info.num_frames)))
    msg = str(excinfo.value)
    assert msg and "\n" not in msg


def test_truncated_faststart_message(tmp_path):
    """Every backend says why: the index lists 60 frames, the file holds 30."""
    full = make_video(tmp_path / "full.mp4", 60, faststart=True)
    path = cut_after_packet(full, tmp_path / "cut.mp4", 29)
    for b in ["auto", "decord", "pyav"] + ["torchcodec"] * HAS_TORCHCODEC:
        with pytest.raises(VideoError) as excinfo:
            open_video(path, b)
        assert_one_line_error(excinfo, "truncated")
        assert "60" in str(excinfo.value) and "30" in str(excinfo.value)


def test_unknown_backend(tmp_path):
    path = make_video(tmp_path / "v.mp4", 2)
    with pytest.raises(ValueError):
        open_video(path, "opencv")


# ------------------------------------------------------------ torchcodec: loading and the reader's checks

def test_torchcodec_status_says_why():
    """Not installed and installed-but-unloadable are told apart (a CUDA-linked wheel beside a CPU torch)."""
    import importlib.util

    decoder_class, why = torchcodec_status()
    if importlib.util.find_spec("torchcodec") is None:
        assert (decoder_class, why) == (None, "not installed")
    elif decoder_class is None:
        assert why.startswith("cannot load: ") and "\n" not in why
    else:
        assert why == ""


def test_auto_warns_once_when_torchcodec_cannot_load(tmp_path, monkeypatch):
    """An installed torchcodec that cannot load: "auto" says so once and decodes with decord;
    asking for torchcodec by name is a one-line error."""
    token = np.random.default_rng().integers(1 << 40)  # a reason not seen before in this process
    reason = f"cannot load: libnvrtc.so.13: cannot open shared object file ({token})"
    monkeypatch.setattr(video, "torchcodec_status", lambda: (None, reason))
    path = make_video(tmp_path / "v.mp4", 5)
    with pytest.warns(RuntimeWarning, match="torchcodec is installed but cannot load: libnvrtc"):
        with open_video(path) as reader:
            assert reader.info.backend == "decord"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_video(path) as reader:  # no second warning
            assert reader.info.backend == "decord"
    with pytest.raises(VideoError) as excinfo:
        open_video(path, "torchcodec")
    assert str(excinfo.value) == f"torchcodec {reason}"


def test_torchcodec_not_installed(tmp_path, monkeypatch):
    """Not installed: "auto" is quiet and uses decord; "torchcodec" by name says it is not installed."""
    monkeypatch.setattr(video, "torchcodec_status", lambda: (None, "not installed"))
    path = make_video(tmp_path / "v.mp4", 5)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_video(path) as reader:
            assert reader.info.backend == "decord"
    with pytest.raises(VideoError, match="^torchcodec not installed$"):
        open_video(path, "torchcodec")


class _Batch:
    def __init__(self, data, pts):
        import torch

        self.data = torch.from_numpy(np.stack(data))
        self.pts_seconds = torch.tensor(pts, dtype=torch.float64)


class StandInDecoder:
    """torchcodec.decoders.VideoDecoder's interface as TorchCodecReader uses it, over PyAV's frames;
    ``shift`` moves one frame's reported time (a decoder returning the wrong frame)."""

    shift: dict[int, float] = {}
    calls: list[list[int]] = []

    def __init__(self, path, **kwargs):
        assert kwargs == {"dimension_order": "NHWC", "seek_mode": "exact", "num_ffmpeg_threads": 0, "device": "cpu"}
        with av.open(path) as container:
            stream = container.streams.video[0]
            frames = [(f.pts * float(stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        frames.sort(key=lambda x: x[0])
        self._frames = frames
        h, w = frames[0][1].shape[:2]
        self.metadata = type("Meta", (), {"num_frames": len(frames), "width": w, "height": h})()

    def get_frames_at(self, indices):
        StandInDecoder.calls.append(list(indices))
        return _Batch([self._frames[i][1] for i in indices],
                      [self._frames[i][0] + self.shift.get(i, 0.0) for i in indices])


def test_torchcodec_reader_logic_with_a_stand_in(tmp_path, monkeypatch):
    """The reader's chunking and its check of every frame's own time, on a decoder that behaves like
    torchcodec: chunks of 3 frames give PyAV's frames; a frame reported at the wrong time is a
    one-line error naming it."""
    monkeypatch.setattr(video, "torchcodec_status", lambda: (StandInDecoder, ""))
    monkeypatch.setattr(StandInDecoder, "calls", [])
    path = make_video(tmp_path / "v.mp4", 40, 64, 48)
    indices = [0, 2, 3, 7, 8, 9, 10, 20, 33, 39]
    reader = TorchCodecReader(path, chunk_bytes=3 * 64 * 48 * 3)
    assert reader.info.backend == "torchcodec" and reader.info.num_frames == 40
    idx, frames = read(reader, indices)
    assert StandInDecoder.calls == [[0, 2, 3], [7, 8, 9], [10, 20, 33], [39]]
    with open_video(path, "pyav") as ref:
        _, expected = read(ref, indices)
    assert idx == indices
    np.testing.assert_array_equal(frames, expected)
    monkeypatch.setattr(StandInDecoder, "shift", {20: 0.04})
    with pytest.raises(VideoError, match=r"^torchcodec returned the frame at 0\.840000 s for frame 20 "
                                         r"\(0\.800000 s\)$"):
        read(TorchCodecReader(path, chunk_bytes=3 * 64 * 48 * 3), indices)
