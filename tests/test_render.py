"""Rendered detections (detect.render): same frames and rate as the input; the label overlay is drawn
exactly where a detection is active; the timeline strip shows ground truth and detections."""

from __future__ import annotations

import av
import numpy as np
import pytest

from detect.render import RenderConfig, active_detection, render_video, timeline_strip
from extract.video import VideoError, open_video
from tests.videos import make_video

FPS = 10


def decode(path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as c:
        rate = float(c.streams.video[0].average_rate)
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)], rate


def test_active_detection_picks_the_best_covering_one():
    dets = [{"label": "a", "score": 0.3, "segment": [0.0, 5.0]}, {"label": "b", "score": 0.9, "segment": [2.0, 3.0]}]
    assert active_detection(dets, 1.0)["label"] == "a"
    assert active_detection(dets, 2.5)["label"] == "b"
    assert active_detection(dets, 3.0)["label"] == "b"                 # ends are inclusive
    assert active_detection(dets, 6.0) is None


def test_timeline_strip_draws_ground_truth_above_and_detections_below():
    colors = {"a": np.array([200, 0, 0], np.uint8)}
    strip = timeline_strip(100, 20, 10.0, [{"label": "a", "score": 1.0, "segment": [5.0, 7.5]}],
                           [{"label": "a", "segment": [1.0, 2.0]}], colors)
    gt_cols = np.flatnonzero((strip[5] != strip[5, 0]).any(axis=1))
    det_cols = np.flatnonzero((strip[15] != strip[15, 0]).any(axis=1))
    assert (gt_cols.min(), gt_cols.max()) == (10, 19)
    assert (det_cols.min(), det_cols.max()) == (50, 74)
    np.testing.assert_array_equal(strip[15, 60], [200, 0, 0])


@pytest.mark.parametrize("size", [(64, 48), (65, 47)])
def test_rendered_video_keeps_frames_and_rate_and_draws_only_where_active(tmp_path, size):
    src = make_video(tmp_path / "in.mp4", 40, width=size[0], height=size[1], fps=FPS)
    dets = [{"label": "Jump", "score": 0.9, "segment": [1.0, 1.9]}, {"label": "Run", "score": 0.01, "segment": [0, 4]}]
    cfg = RenderConfig(min_score=0.5, strip_height=12)
    out = render_video(src, tmp_path / "out.mp4", dets, [{"label": "Jump", "segment": [1.0, 2.0]}], cfg)
    frames_in, rate_in = decode(src)
    frames_out, rate_out = decode(out)
    assert len(frames_out) == len(frames_in) == 40 and rate_out == rate_in == FPS
    with open_video(out) as reader:
        assert reader.info.num_frames == 40
    w, h = size
    box = (slice(0, 8), slice(0, 24))                                    # inside the label box when drawn
    for k, (a, b) in enumerate(zip(frames_in, frames_out)):
        a, b = a.astype(np.int16), b[:h, :w].astype(np.int16)
        active = 10 <= k <= 19                                           # t = k / 10 in [1.0, 1.9]
        changed = np.abs(a[box] - b[box]).mean()
        assert (changed > 20) == active, (k, changed)
        outside = np.ones((h, w), bool)
        outside[:16, :] = False                                          # the label box's rows at most
        assert np.abs(a - b)[outside].mean() < 4, k                      # the picture itself is untouched
    cursor = [int(np.argmax(f[h + 2:h + 5, :w].astype(int).sum(axis=(0, 2)))) for f in frames_out]
    assert cursor == sorted(cursor) and cursor[-1] > cursor[0]          # the cursor moves along the strip


def test_unreadable_video_writes_nothing(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"nope")
    with pytest.raises(VideoError):
        render_video(tmp_path / "bad.mp4", tmp_path / "o.mp4", [])
    assert not (tmp_path / "o.mp4").exists()
