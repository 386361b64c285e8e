"""The rendered world (detect.world): ground truth frame-exact in the decoded videos, determinism,
resumption, refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from detect.world import (ACTOR_COLOR, CLASS_NAMES, SCENE_NAMES, WorldConfig, actor_mask, class_motions, main,
                          make_world, plan_video, render_frames, scene_textures)
from extract.video import open_video

SMALL = WorldConfig(seed=3, num_classes=2, train_videos=2, test_videos=1, duration=(10.0, 12.0), action=(1.5, 3.0),
                    context=(1.0, 2.0), neutral=(1.0, 2.0), context_only=0.2, min_action_speed=5.0)


def actor_centres(video) -> np.ndarray:
    """(F, 2) centre of the magenta actor in every decoded frame."""
    with open_video(video) as reader:
        frames = [f for _, f in reader.frames(np.arange(reader.info.num_frames))]
    out = []
    for f in frames:
        ys, xs = np.nonzero(actor_mask(f))
        out.append((xs.mean() + 0.5, ys.mean() + 0.5) if len(xs) else (np.nan, np.nan))
    return np.array(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return root, make_world(root, SMALL, progress=False)


def test_ground_truth_is_frame_exact(world):
    root, ann = world
    db = json.loads(ann.read_text())["database"]
    boxes = np.load(root / "boxes.npz")
    assert set(db) == {"world_train_000", "world_train_001", "world_test_000"}
    assert [db[v]["subset"] for v in sorted(db)] == ["test", "validation", "validation"]
    instances = 0
    for vid, entry in db.items():
        centres = actor_centres(root / "videos" / f"{vid}.mp4")
        box = boxes[vid].astype(np.float64)
        assert len(centres) == len(box) == entry["frames"]
        assert entry["duration"] == pytest.approx(entry["frames"] / SMALL.fps)
        # the actor is where its box says, in every frame
        np.testing.assert_allclose(centres, (box[:, :2] + box[:, 2:]) / 2, atol=1.0)
        # the frames at which the actor moved fast are exactly the annotated action frames
        speed = np.r_[0.0, np.hypot(*np.diff(centres, axis=0).T)]
        acting = np.zeros(len(speed), dtype=bool)
        for a in entry["annotations"]:
            start, stop = (int(round(t * SMALL.fps)) for t in a["segment"])
            assert (start / SMALL.fps, stop / SMALL.fps) == tuple(a["segment"])
            acting[start:stop] = True
            instances += 1
        assert np.all(speed[acting] > 0.7 * SMALL.min_action_speed), speed[acting].min()
        assert np.all(speed[~acting] < SMALL.idle_speed + 2.0), speed[~acting].max()   # integer boxes, codec
        # every action lies inside an episode of its own class's scene
        for a in entry["annotations"]:
            (s0, s1), scenes = a["segment"], entry["scenes"]
            scene = [s for s in scenes if s["segment"][0] <= s0 and s1 <= s["segment"][1]]
            assert len(scene) == 1 and scene[0]["action"]
            assert scene[0]["scene"] == SCENE_NAMES[CLASS_NAMES.index(a["label"])]
    assert instances >= 2


def test_scenes_surround_actions_and_appear_without_them():
    cfg = replace(SMALL, train_videos=30, test_videos=0)
    plans = [plan_video(cfg, i) for i in range(30)]
    episodes = [ep for p in plans for ep in p.episodes if not ep.scene.startswith("neutral")]
    with_action = [ep for ep in episodes if ep.action]
    assert 0 < len(episodes) - len(with_action) < len(episodes)             # some scenes have no action
    for ep in with_action:
        a, b = ep.action
        assert ep.start + round(cfg.context[0] * cfg.fps) <= a and b + round(cfg.context[0] * cfg.fps) <= ep.stop
    for p in plans:                                                      # the timeline tiles the video
        assert p.episodes[0].start == 0 and p.episodes[-1].stop == p.num_frames
        assert all(e.stop == f.start for e, f in zip(p.episodes, p.episodes[1:]))


def test_seeds_give_different_worlds_and_a_seed_the_same(world, tmp_path):
    a, b = plan_video(SMALL, 0), plan_video(SMALL, 0)
    np.testing.assert_array_equal(a.positions, b.positions)
    c = plan_video(replace(SMALL, seed=4), 0)
    assert a.num_frames != c.num_frames or not np.array_equal(a.positions, c.positions)


def test_rerun_keeps_videos_and_refuses_other_settings(world):
    root, ann = world
    video = root / "videos" / "world_train_000.mp4"
    before = video.stat().st_mtime_ns
    assert make_world(root, SMALL, progress=False) == ann
    assert video.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="other settings"):
        make_world(root, replace(SMALL, seed=9), progress=False)


def test_shared_motions_make_classes_differ_only_in_their_scene(tmp_path):
    four = replace(SMALL, num_classes=4)
    own, shared = class_motions(four), class_motions(replace(four, motions=2))
    assert len(set(own)) == 4 and len(set(shared)) == 2
    assert shared[0] == shared[2] == own[0] and shared[1] == shared[3] == own[1]
    # motions = num_classes draws the same as one per class (0): the worlds made before the field are unchanged
    assert class_motions(replace(four, motions=4)) == own
    a, b = plan_video(four, 0), plan_video(replace(four, motions=4), 0)
    np.testing.assert_array_equal(a.positions, b.positions)
    scenes = scene_textures(four)
    assert not np.array_equal(scenes[SCENE_NAMES[0]], scenes[SCENE_NAMES[2]])
    with pytest.raises(ValueError, match="motions must be"):
        replace(four, motions=5)


def test_close_up_shows_the_neutral_background_exactly_during_actions():
    cfg = replace(SMALL, close_up=True)
    plan = plan_video(cfg, 0)
    scenes = scene_textures(cfg)
    frames = list(render_frames(cfg, plan, scenes))
    plain = list(render_frames(SMALL, plan_video(SMALL, 0), scenes))
    boxes = plan.boxes(cfg.width, cfg.height)
    acting = 0
    for ep in plan.episodes:
        for k in range(ep.start, ep.stop):
            close = ep.action is not None and ep.action[0] <= k < ep.action[1]
            shift = (k // 2) % cfg.width
            want = scenes["neutral0" if close else ep.scene][:, shift:shift + cfg.width]
            away = np.ones((cfg.height, cfg.width), dtype=bool)            # every pixel but the actor's
            x0, y0, x1, y1 = boxes[k]
            away[y0:y1, x0:x1] = False
            np.testing.assert_array_equal(frames[k][away], want[away])
            np.testing.assert_array_equal(frames[k][~away], plain[k][~away])   # the actor is drawn as before
            acting += close
    assert acting > 0 and plan.episodes == plan_video(SMALL, 0).episodes      # the timeline is unchanged


def test_a_world_json_from_before_a_field_existed_is_still_accepted(world):
    root, ann = world
    made = json.loads((root / "world.json").read_text())
    older = {k: v for k, v in made.items() if k != "motions"}
    (root / "world.json").write_text(json.dumps(older))
    assert make_world(root, SMALL, progress=False) == ann
    assert json.loads((root / "world.json").read_text()) == made
    with pytest.raises(ValueError, match="other settings"):
        make_world(root, replace(SMALL, motions=1), progress=False)


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "w"), "--seed", "1", "--classes", "2", "--train-videos", "1", "--test-videos", "0",
                 "--size", "96x80", "--motions", "1", "--close-up"]) == 0
    assert "1 videos" in capsys.readouterr().out
    made = json.loads((tmp_path / "w" / "world.json").read_text())
    assert made["motions"] == 1 and made["close_up"] is True
    (tmp_path / "file").write_text("x")
    assert main([str(tmp_path / "file")]) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err
    assert main([str(tmp_path / "x"), "--classes", "9"]) == 2


def test_actor_colour_never_in_scenes():
    for tex in scene_textures(replace(SMALL, num_classes=8)).values():
        assert not actor_mask(tex).any()
    assert ACTOR_COLOR == (255, 0, 255)


@pytest.mark.parametrize("size", [(160, 120), (96, 80), (128, 128)])
def test_actor_stays_inside_the_i3d_crop(size):
    cfg = replace(SMALL, width=size[0], height=size[1], train_videos=6)
    side = min(size)
    crop = side * 7 / 8                                 # 224 of 256: what extraction's centre crop keeps
    x0, y0 = (size[0] - crop) / 2, (size[1] - crop) / 2
    for i in range(6):
        boxes = plan_video(cfg, i).boxes(*size)
        assert boxes[:, 0].min() >= x0 and boxes[:, 2].max() <= x0 + crop
        assert boxes[:, 1].min() >= y0 and boxes[:, 3].max() <= y0 + crop
