"""A small rendered action dataset that shows the co-occurrence problem RefactorNet addresses.

``python -m detect.world OUT --seed N`` renders MP4 videos with exact ground truth:

* every class has its own **scene** (its co-occurring context: a pool, a field, a court, ...), a
  textured background that pans slowly; a scene episode shows the scene for a while *before*,
  *during* and *after* the class's action, and some episodes show the scene with no action at all;
* **neutral scenes** (grey textures) fill the time between episodes;
* one small **actor** (a magenta figure, the same in every class) walks slowly everywhere; the
  **action** is its fast class-specific motion (a closed curve traced at several pixels a frame:
  circles, ellipses, figures of eight of different sizes, speeds and directions), only ever inside
  the class's own scene.

So the context predicts the class but not the action's extent: a detector that leans on the
scene fires over the whole episode, one that sees the motion finds the action.

Time (CONVENTIONS.md): frame ``k`` sits at ``k / fps``. An action occupying frames ``[a, b)`` has
the segment ``[a / fps, b / fps]``; exactly its frames ``a .. b - 1`` are the ones at which the
actor has moved fast since the previous frame (at least :attr:`WorldConfig.min_action_speed`
pixels), every other frame moves at most the idle speed. Outputs in ``OUT``:

* ``videos/<id>.mp4`` (H.264);
* ``annotations.json``: ActivityNet layout; training videos in subset ``validation``, test videos in
  ``test`` (THUMOS14's convention); each entry also has ``fps``, ``frames`` and ``scenes`` (the
  episodes: scene name, segment, and whether it holds an action);
* ``boxes.npz``: per video id, int array (frames, 4) of the actor's box ``x0, y0, x1, y1`` in
  pixels (``x1``, ``y1`` exclusive) in every frame;
* ``world.json``: the :class:`WorldConfig` that made it.

Every video is rendered from its own random stream ``(seed, index)``, written atomically, and
skipped when it exists, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import av
import numpy as np
from tqdm.auto import tqdm

from common.annotations import write_annotations
from common.fileio import atomic_path
from common.paths import unusable_outputs

__all__ = ["WorldConfig", "Episode", "VideoPlan", "class_motions", "plan_video", "render_frames", "make_world",
           "ACTOR_COLOR", "CLASS_NAMES", "SCENE_NAMES", "actor_area", "actor_mask", "scene_textures"]

CLASS_NAMES = ("Spin", "Loop", "Swing", "Whirl", "Orbit", "Twirl", "Circle", "Wave")
SCENE_NAMES = ("pool", "field", "court", "track", "beach", "ice", "gym", "forest")
# scene base colours (RGB); none is near the actor's magenta
SCENE_COLORS = ((40, 110, 200), (50, 150, 60), (200, 120, 50), (160, 70, 60), (220, 200, 130), (170, 220, 230),
                (150, 110, 70), (30, 80, 40))
ACTOR_COLOR = (255, 0, 255)
HEAD_COLOR = (255, 150, 255)
ACTOR_W, ACTOR_H = 8, 14


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides a world (one default per field).

    Attributes:
        seed: the world's random seed (scenes, motions, timelines).
        num_classes: action classes, each with its scene (at most 8).
        train_videos: training videos (subset ``validation``, THUMOS14's convention).
        test_videos: test videos (subset ``test``).
        motions: distinct action motions; class ``c`` performs motion ``c mod motions``, so classes ``c`` and
            ``c + motions`` look alike during their actions and differ only in their scene (0: one per class).
        close_up: during an action the camera cuts to a close-up of the actor on a neutral background (the
            first neutral texture) and back after it, as broadcasts do: the scene is then seen only around the
            action, so classes that share a motion differ only in their context.
        fps, width, height: frame rate and size of the videos.
        duration: (min, max) seconds of a video.
        action: (min, max) seconds of an action.
        context: (min, max) seconds the scene is on screen before and, separately, after its action.
        context_only: probability that a scene episode holds no action.
        neutral: (min, max) seconds of a neutral scene between episodes.
        idle_speed: the actor's walking speed outside actions, pixels per frame.
        min_action_speed: the slowest an action moves, pixels per frame.
        crf: H.264 quality (lower: better).
    """

    seed: int = 0
    num_classes: int = 3
    train_videos: int = 18
    test_videos: int = 6
    fps: float = 10.0
    width: int = 160
    height: int = 120
    duration: tuple[float, float] = (24.0, 36.0)
    action: tuple[float, float] = (1.5, 4.0)
    context: tuple[float, float] = (3.0, 8.0)
    context_only: float = 0.4
    neutral: tuple[float, float] = (1.5, 4.0)
    idle_speed: float = 0.5
    min_action_speed: float = 3.0
    crf: int = 18
    motions: int = 0
    close_up: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= len(CLASS_NAMES):
            raise ValueError(f"num_classes must be in [1, {len(CLASS_NAMES)}], got {self.num_classes}")
        if self.width < 96 or self.height < 80 or self.width % 2 or self.height % 2:
            raise ValueError(f"frame size must be even and at least 96x80, got {self.width}x{self.height}")
        if self.fps <= 0 or self.train_videos < 1 or self.test_videos < 0:
            raise ValueError("fps must be positive, train_videos >= 1, test_videos >= 0")
        for name in ("duration", "action", "context", "neutral"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {(lo, hi)}")
        if not 0 <= self.motions <= self.num_classes:
            raise ValueError(f"motions must be in [0, num_classes={self.num_classes}], got {self.motions}")
        if self.idle_speed >= self.min_action_speed:
            raise ValueError("idle_speed must be below min_action_speed")

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASS_NAMES[:self.num_classes]


@dataclass(frozen=True)
class Motion:
    """A class's action: a closed curve ``(ax sin(w t + p), ay sin(k w t))`` in pixels, t in frames."""

    ax: float
    ay: float
    omega: float          # radians per frame
    phase: float
    k: int                # 1: ellipse / circle, 2: figure of eight

    def offset(self, t: np.ndarray) -> np.ndarray:
        """(n, 2) displacement from the start of the action after ``t`` frames (0 at t = 0)."""
        x = self.ax * (np.sin(self.omega * t + self.phase) - math.sin(self.phase))
        y = self.ay * np.sin(self.k * self.omega * t)
        return np.stack([x, y], axis=1)

    def extent(self) -> tuple[float, float, float, float]:
        """(min x, max x, min y, max y) of :meth:`offset` over a period."""
        o = self.offset(np.linspace(0, 2 * math.pi / self.omega, 400))
        return o[:, 0].min(), o[:, 0].max(), o[:, 1].min(), o[:, 1].max()


def class_motions(cfg: WorldConfig) -> list[Motion]:
    """The motion of each class (drawn from ``(seed, 0)``): ``cfg.motions`` distinct ones (one per class when 0)
    shared round-robin, each at least ``min_action_speed`` pixels a frame everywhere."""
    rng = np.random.default_rng([cfg.seed, 0])
    out = []
    for c in range(cfg.motions or cfg.num_classes):
        k = 1 + c % 2
        size = min(cfg.width, cfg.height)            # curves fit the actor's area (the central square)
        ax = size * rng.uniform(0.1, 0.16)
        ay = size * rng.uniform(0.07, 0.12) * (1 if c % 4 < 2 else 0.6)
        phase = math.pi / 2 if k == 1 else 0.0
        sign = -1.0 if (c // 2) % 2 else 1.0
        # slowest speed along the curve is min over t of |(ax w cos, ay k w cos(k .))| = w * floor
        t = np.linspace(0, 2 * math.pi, 2000)
        floor = np.hypot(ax * np.cos(t + phase), ay * k * np.cos(k * t)).min()
        omega = max(cfg.min_action_speed * rng.uniform(1.2, 1.6) / floor, 2 * math.pi / (cfg.fps * 1.5))
        out.append(Motion(ax, ay, sign * omega, phase, k))
    return [out[c % len(out)] for c in range(cfg.num_classes)]


def _texture(rng: np.random.Generator, base: tuple[int, int, int], width: int, height: int,
             saturation: float = 1.0) -> np.ndarray:
    """A pannable (height, 2 * width, 3) uint8 texture: stripes at a random angle and frequency,
    blobs of a second tone, and fine noise, around ``base``."""
    w2 = 2 * width
    yy, xx = np.mgrid[0:height, 0:w2].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(10, 28)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    img = np.asarray(base, np.float32)[None, None] * (1 + 0.18 * stripes[..., None])
    for _ in range(int(rng.integers(3, 7))):                           # static objects of the scene
        cx, cy = rng.uniform(0, w2), rng.uniform(0, height)
        rx, ry = rng.uniform(6, 20), rng.uniform(4, 14)
        blob = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        img[blob] = img[blob] * rng.uniform(0.55, 0.8)
    img += rng.normal(0, 6, img.shape)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + saturation * (img - grey)
    img = np.clip(img, 0, 255)
    img[actor_mask(img), 1] = 235           # keep every scene pixel away from the actor's colours
    return img.astype(np.uint8)


def actor_mask(frames: np.ndarray) -> np.ndarray:
    """bool (..., H, W): pixels of the actor's colours (body and head, with margin for compression)
    in RGB frames (..., H, W, 3); no scene pixel matches."""
    f = frames.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (r > 190) & (b > 190) & (g < 190) & (r - g > 60)


@dataclass
class Episode:
    """A stretch of one scene: frames ``[start, stop)``; ``action`` frames ``[a, b)`` or None."""

    scene: str
    start: int
    stop: int
    label: str | None = None
    action: tuple[int, int] | None = None


@dataclass
class VideoPlan:
    """One video's timeline and the actor's path (everything rendering needs)."""

    video_id: str
    subset: str
    num_frames: int
    episodes: list[Episode]
    positions: np.ndarray = field(repr=False)    # (F, 2) float: the actor's top-left corner per frame

    def boxes(self, width: int, height: int) -> np.ndarray:
        """(F, 4) int: ``x0, y0, x1, y1`` of the actor (exclusive ends), clipped to the frame."""
        x0 = np.rint(self.positions[:, 0]).astype(np.int64)
        y0 = np.rint(self.positions[:, 1]).astype(np.int64)
        return np.stack([np.clip(x0, 0, width), np.clip(y0, 0, height),
                         np.clip(x0 + ACTOR_W, 0, width), np.clip(y0 + ACTOR_H, 0, height)], axis=1)


def _frames(seconds: float, fps: float) -> int:
    return max(1, int(round(seconds * fps)))


def plan_video(cfg: WorldConfig, index: int) -> VideoPlan:
    """The timeline and actor path of video ``index`` (training videos first), from ``(seed, index)``."""
    rng = np.random.default_rng([cfg.seed, 1, index])
    motions = class_motions(cfg)
    subset = "validation" if index < cfg.train_videos else "test"
    prefix = "train" if subset == "validation" else "test"
    number = index if subset == "validation" else index - cfg.train_videos
    total = _frames(rng.uniform(*cfg.duration), cfg.fps)
    uniform = lambda lo_hi: _frames(rng.uniform(*lo_hi), cfg.fps)  # noqa: E731 - local shorthand
    episodes: list[Episode] = []
    t = 0
    turn = int(rng.integers(cfg.num_classes))
    while t < total:
        n = uniform(cfg.neutral)
        episodes.append(Episode(f"neutral{int(rng.integers(3))}", t, min(t + n, total)))
        t += n
        if t >= total:
            break
        c = turn % cfg.num_classes                       # classes take turns; order differs per video
        turn += 1 + int(rng.integers(0, 2))
        before, length, after = uniform(cfg.context), uniform(cfg.action), uniform(cfg.context)
        stop = t + before + length + after
        if stop > total:                                 # no room: the video ends before this episode
            episodes[-1].stop = total
            break
        ep = Episode(SCENE_NAMES[c], t, stop)
        if rng.uniform() >= cfg.context_only:
            ep.label, ep.action = CLASS_NAMES[c], (t + before, t + before + length)
        episodes.append(ep)
        t = stop
    total = episodes[-1].stop
    positions = _actor_path(cfg, episodes, motions, total, rng)
    return VideoPlan(f"world_{prefix}_{number:03d}", subset, total, episodes, positions)


def actor_area(cfg: WorldConfig) -> tuple[float, float, float, float]:
    """(x_lo, y_lo, x_hi, y_hi): where the actor's top-left corner may be. The actor stays inside the
    frame's central square, less a margin of 1/16 of its side on each side, so that I3D's centre crop
    (224 of 256, 112 of 128: 7/8 of the short side) always sees it whole."""
    side = min(cfg.width, cfg.height)
    margin = side / 16 + 1
    x0, y0 = (cfg.width - side) / 2 + margin, (cfg.height - side) / 2 + margin
    return x0, y0, x0 + side - 2 * margin - ACTOR_W, y0 + side - 2 * margin - ACTOR_H


def _actor_path(cfg: WorldConfig, episodes: list[Episode], motions: list[Motion], total: int,
                rng: np.random.Generator) -> np.ndarray:
    """(F, 2) top-left corners: a slow walk (turning at the margins of :func:`actor_area`) and, inside
    actions, the class's curve started from where the actor stands, placed so that it stays inside the
    area."""
    x_min, y_min, x_max, y_max = actor_area(cfg)
    pos = np.zeros((total, 2))
    p = np.array([rng.uniform(x_min + 4, x_max - 4), rng.uniform(y_min + 4, y_max - 4)])
    heading = rng.uniform(0, 2 * math.pi)
    actions = {ep.action[0]: (ep.action[1], CLASS_NAMES.index(ep.label)) for ep in episodes if ep.action}
    k = 0
    while k < total:
        if k in actions:
            end, c = actions[k]
            motion = motions[c]
            x_lo, x_hi, y_lo, y_hi = motion.extent()
            # move the start so the whole curve fits, then trace it: frame k is the first fast step
            p = np.array([np.clip(p[0], x_min - x_lo, x_max - x_hi), np.clip(p[1], y_min - y_lo, y_max - y_hi)])
            steps = np.arange(1, end - k + 1, dtype=np.float64)
            pos[k:end] = p + motion.offset(steps)
            p = pos[end - 1].copy()
            k = end
            continue
        heading += rng.normal(0, 0.15)
        step = cfg.idle_speed * np.array([math.cos(heading), math.sin(heading)])
        nxt = p + step
        if not (x_min <= nxt[0] <= x_max and y_min <= nxt[1] <= y_max):
            heading += math.pi                              # turn back at the margins
            nxt = p - step
        p = np.clip(nxt, [x_min, y_min], [x_max, y_max])
        pos[k] = p
        k += 1
    return pos


def scene_textures(cfg: WorldConfig) -> dict[str, np.ndarray]:
    """Scene name -> pannable uint8 texture (height, 2 * width, 3): one scene per class, three neutral."""
    rng = np.random.default_rng([cfg.seed, 2])
    out = {SCENE_NAMES[c]: _texture(rng, SCENE_COLORS[c], cfg.width, cfg.height) for c in range(cfg.num_classes)}
    for i, base in enumerate(((128, 128, 128), (100, 105, 110), (150, 145, 140))):
        out[f"neutral{i}"] = _texture(rng, base, cfg.width, cfg.height, saturation=0.2)
    return out


def render_frames(cfg: WorldConfig, plan: VideoPlan, scenes: dict[str, np.ndarray] | None = None):
    """Yield the video's frames, uint8 (height, width, 3), in order."""
    scenes = scenes or scene_textures(cfg)
    boxes = plan.boxes(cfg.width, cfg.height)
    head = ACTOR_H // 3
    for ep in plan.episodes:
        for k in range(ep.start, ep.stop):
            close = cfg.close_up and ep.action is not None and ep.action[0] <= k < ep.action[1]
            tex = scenes["neutral0" if close else ep.scene]
            shift = (k // 2) % cfg.width                              # the camera pans half a pixel a frame
            frame = tex[:, shift:shift + cfg.width].copy()
            x0, y0, x1, y1 = boxes[k]
            frame[y0:y1, x0:x1] = ACTOR_COLOR
            frame[y0:min(y0 + head, y1), x0:x1] = HEAD_COLOR
            yield frame


def _write_video(path: Path, cfg: WorldConfig, frames) -> None:
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(cfg.fps) if float(cfg.fps).is_integer() else cfg.fps)
            stream.width, stream.height, stream.pix_fmt = cfg.width, cfg.height, "yuv420p"
            stream.options = {"crf": str(cfg.crf), "preset": "veryfast"}
            for img in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def _entry(cfg: WorldConfig, plan: VideoPlan) -> dict:
    fps = cfg.fps
    return {"subset": plan.subset, "duration": plan.num_frames / fps, "fps": fps, "frames": plan.num_frames,
            "annotations": [{"segment": [ep.action[0] / fps, ep.action[1] / fps], "label": ep.label}
                            for ep in plan.episodes if ep.action],
            "scenes": [{"scene": ep.scene, "segment": [ep.start / fps, ep.stop / fps], "action": ep.action is not None}
                       for ep in plan.episodes if not ep.scene.startswith("neutral")]}


def make_world(out: str | os.PathLike, cfg: WorldConfig = WorldConfig(), progress: bool | None = None) -> Path:
    """Render the world into ``out`` (see the module docstring); existing videos are kept.

    Returns:
        the annotation file's path.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    world_file = out / "world.json"
    # a field missing from an older world.json had its default then (fields are only ever added with the
    # default that keeps earlier worlds as they were)
    made = {f.name: f.default for f in fields(WorldConfig)} | (json.loads(world_file.read_text())
                                                              if world_file.is_file() else {})
    if world_file.is_file() and json.loads(json.dumps(made)) != json.loads(json.dumps(asdict(cfg))):
        raise ValueError(f"{out} holds a world made with other settings; use another folder")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    with atomic_path(world_file) as tmp:
        tmp.write_text(json.dumps(asdict(cfg), indent=1))
    scenes = scene_textures(cfg)
    database, boxes = {}, {}
    count = cfg.train_videos + cfg.test_videos
    show = not ((progress is False) or (progress is None and not sys.stderr.isatty()))
    for i in tqdm(range(count), desc="world", unit="video", disable=not show):
        plan = plan_video(cfg, i)
        dest = out / "videos" / f"{plan.video_id}.mp4"
        if not dest.is_file():
            _write_video(dest, cfg, render_frames(cfg, plan, scenes))
        database[plan.video_id] = _entry(cfg, plan)
        boxes[plan.video_id] = plan.boxes(cfg.width, cfg.height).astype(np.int16)
    with atomic_path(out / "boxes.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **boxes)
    return write_annotations(out / "annotations.json", database, version=f"refactornet world seed {cfg.seed}",
                             classes=list(cfg.classes))


def main(argv: list[str] | None = None) -> int:
    d = WorldConfig()
    p = argparse.ArgumentParser(prog="python -m detect.world", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (videos/, annotations.json, boxes.npz, world.json)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"world seed (default {d.seed})")
    p.add_argument("--classes", type=int, default=d.num_classes, help=f"action classes (default {d.num_classes})")
    p.add_argument("--train-videos", type=int, default=d.train_videos, help=f"default {d.train_videos}")
    p.add_argument("--test-videos", type=int, default=d.test_videos, help=f"default {d.test_videos}")
    p.add_argument("--fps", type=float, default=d.fps, help=f"frame rate (default {d.fps:g})")
    p.add_argument("--size", default=f"{d.width}x{d.height}", help=f"WIDTHxHEIGHT (default {d.width}x{d.height})")
    p.add_argument("--motions", type=int, default=d.motions,
                   help="distinct action motions, shared round-robin by the classes (default: one per class)")
    p.add_argument("--close-up", action="store_true",
                   help="show each action on a neutral close-up background (the scene only around it)")
    args = p.parse_args(argv)
    if unusable_outputs("detect.world", dirs={"out": args.out}):
        return 2
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        cfg = WorldConfig(seed=args.seed, num_classes=args.classes, train_videos=args.train_videos,
                          test_videos=args.test_videos, fps=args.fps, width=width, height=height,
                          motions=args.motions, close_up=args.close_up)
        ann = make_world(args.out, cfg)
    except (ValueError, OSError) as exc:
        print(f"detect.world: {exc}", file=sys.stderr)
        return 2
    db = json.loads(ann.read_text())["database"]
    n = sum(len(v["annotations"]) for v in db.values())
    print(f"detect.world: {len(db)} videos, {n} action instances, classes {', '.join(cfg.classes)} -> {ann}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
