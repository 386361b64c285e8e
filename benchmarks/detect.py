"""Speed of the detector (detect/) on a THUMOS14-sized input: training snippets/s and inference
videos/s, on the CPU and on CUDA where present.

The dataset described is THUMOS14-sized: ``--videos`` (200) videos whose lengths are drawn
uniformly from ``--lengths`` (1,000-10,000 snippets), two-stream features (rgb + flow, 1024-d each,
2048-d) sampled as THUMOS14 usually is (30 fps, 16-frame windows, stride 4), 20 classes. Writing all
of it would take ~9 GB, so only the files the measurements read are generated: ``--train-videos``
(8) training videos (subset "validation") and ``--infer-videos`` (16) test videos (subset "test"),
real HDF5 feature files in the layout of CONVENTIONS.md plus an annotation JSON in the ActivityNet
layout (3-15 instances a video, 2-12 s each). Everything is deterministic in ``--seed``; with
``--data DIR`` the files are kept there and reused (a file already holding the right number of
snippets is not rewritten); without it they go to a temporary folder that is removed at the end.
The features are synthetic (background / context / action vectors plus noise, so that RefactorNet's
sample collection finds coupling pairs); the speed does not depend on their values beyond how many
proposals an untrained model produces.

Training, per device and front (``--fronts``: none = baseline, refactor = RefactorNet stage 2,
deep = deep baseline): the real ``detect.train_detector`` with the default DetectorConfig and
``TrainConfig(epochs=--epochs (1), batch_size=16, window=256)``, progress bars off. The front
"refactor" needs a stage-1 checkpoint: one is trained for a single epoch on the generated training
videos (``refactor.build_pairs`` + ``train_refactor``; not timed). Reported:

* ``fit s``: wall time of the epochs alone, the sum of the ``seconds`` that ``train_detector`` reports
  through its public timing hook ``on_epoch`` (:class:`detect.train.EpochReport`); it includes reading
  the windows from HDF5, proposal sampling, forward, backward and the Adam step; on CUDA the clock
  stops after ``torch.cuda.synchronize()``.
* ``train snippets/s`` = windows x window length (256; the training videos are never shorter) /
  ``fit s``. With overlap 0.5 every video snippet is seen about twice an epoch, so this counts
  snippet-windows processed, not distinct video snippets.
* ``total s``: the whole ``train_detector`` call (scanning the files, building the model, and for
  "refactor" collecting the (action, coupling) pairs, plus the epoch loop).
* an extrapolation: 20 epochs (the paper's) over the described dataset (its windows x 256
  snippets) at the measured rate; not a measurement.

A one-video warm-up training run precedes the measurements on each device (not reported).

Inference, per device and mode (``--modes``: thumos, and anet without a video-scores file): a
checkpoint is written from the model trained with each of ``--infer-fronts`` (default: the
baseline, "none") by ``save_detector``; one warm-up ``run_detector`` call on the shortest test
video, then ``run_detector(ckpt, folder, out=None, config=InferenceConfig(mode, batch_size=
--infer-batch (8)), device=...)`` over all generated test videos is timed (it includes loading the
checkpoint, scanning the folder, reading the features, the forward pass, proposals, heads and
Soft-NMS). Reported: videos/s, snippets/s (video snippets), and the extrapolated time for
``--videos`` test videos of the described length distribution (described snippets / snippets/s).

    python benchmarks/detect.py [--quick] [--videos 200] [--train-videos 8] [--infer-videos 16]
        [--fronts none,refactor,deep] [--infer-fronts none] [--modes thumos,anet] [--devices cpu[,cuda]]
        [--epochs 1] [--infer-batch 8] [--threads N] [--data DIR] [--seed 0] [--json OUT.json]

``--quick`` (a smoke run, well under a minute on 2 cores): 2 training videos and 2 test videos of
1,000-2,000 snippets, front "none" only (the described dataset for the extrapolation is unchanged).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.synthetic import (World, holds_snippets, whole_window_frames, write_database,  # noqa: E402
                                  write_two_stream)
from detect import (DetectorConfig, EpochReport, InferenceConfig, TrainConfig, make_windows,  # noqa: E402
                    run_detector, save_detector, train_detector)
from refactor import RefactorConfig, SampleConfig, build_pairs, save_checkpoint, train_refactor  # noqa: E402
from refactor import TrainConfig as RefactorTrain  # noqa: E402

FPS, WINDOW, STRIDE = 30.0, 16, 4           # THUMOS14's usual I3D sampling: snippet every 4 frames at 30 fps
STREAM_DIM = 1024                           # rgb + flow = 2048-d
CLASSES = ["BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling",
           "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow",
           "LongJump", "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus", "VolleyballSpiking"]
SPLITS = {"validation": 1, "test": 2}       # subset -> rng stream
NOISE = 0.015                               # per channel (noise norm ~0.68 against unit-norm vectors)


# ----------------------------------------------------------------------------------------------
# synthetic data


def draw_world(seed: int, dim: int = 2 * STREAM_DIM) -> World:
    """Vectors shared by every video: per class a context (scene) and an action vector (norm 0.5);
    8 backgrounds; float32."""
    world = World.draw(np.random.default_rng([seed, 99]), len(CLASSES), dim, backgrounds=8, action_norm=0.5)
    return World(*(v.astype(np.float32) for v in (world.context, world.action, world.backgrounds)))


def video_plan(seed: int, subset: str, index: int, lengths: tuple[int, int], label_base: int):
    """(video id, T, instances [(start, end) snippet indices], labels) of one generated video, and its rng.

    Instances: 3-15, one in each of as many equal slots of the video, 15-90 snippets (2-12 s) long
    with at least 4 snippets of context either side; labels cycle through the 20 classes from
    ``label_base`` (so a handful of videos covers every class).
    """
    rng = np.random.default_rng([seed, SPLITS[subset], index])
    t = int(rng.integers(lengths[0], lengths[1] + 1))
    n = int(rng.integers(3, 16))
    slot = t // n
    instances, labels = [], []
    for j in range(n):
        dur = int(rng.integers(15, max(16, min(91, slot - 10))))
        start = j * slot + 5 + int(rng.integers(0, max(1, slot - dur - 10)))
        instances.append((start, min(start + dur, t - 5)))
        labels.append((label_base + j) % len(CLASSES))
    return f"video_{subset}_{index + 1:07d}", t, instances, labels, rng


def plans(seed: int, subset: str, count: int, lengths: tuple[int, int]) -> list:
    out, base = [], 0
    for i in range(count):
        plan = video_plan(seed, subset, i, lengths, base)
        base += len(plan[2])
        out.append(plan)
    return out


def _num_frames(t: int) -> int:
    return whole_window_frames(t, WINDOW, STRIDE)          # (t - 1) * STRIDE + WINDOW: SnippetPlan gives t


def write_video(path: Path, world: World, t: int, instances, labels, rng: np.random.Generator) -> None:
    """rgb (T, 1024) and flow (T, 1024) float32 with the attributes of CONVENTIONS.md."""
    feats = NOISE * rng.standard_normal((t, 2 * STREAM_DIM), dtype=np.float32)
    scene = np.zeros(t, dtype=bool)
    for (a, b), k in zip(instances, labels):                        # context 4 snippets either side, action inside
        lo, hi = max(0, a - 4), min(t, b + 4)
        feats[lo:hi] += world.context[k]
        feats[a:b] += world.action[k]
        scene[lo:hi] = True
    s = 0
    while s < t:                                                     # elsewhere background stretches of 20-200 snippets
        n = int(rng.integers(20, 201))
        rows = s + np.flatnonzero(~scene[s:s + n])
        feats[rows] += world.backgrounds[int(rng.integers(len(world.backgrounds)))]
        s += n
    write_two_stream(path, feats, FPS, WINDOW, STRIDE)


def make_dataset(root: Path, seed: int, train_videos: int, infer_videos: int, lengths: tuple[int, int]) -> dict:
    """Write root/validation/*.h5, root/test/*.h5 and root/annotations.json; return what was done."""
    world = draw_world(seed)
    database, info = {}, {}
    for subset, count in (("validation", train_videos), ("test", infer_videos)):
        written = reused = 0
        snippets = []
        for vid, t, inst, labs, rng in plans(seed, subset, count, lengths):
            path = root / subset / f"{vid}.h5"
            if holds_snippets(path, t, 2 * STREAM_DIM, WINDOW, STRIDE):
                reused += 1
            else:
                write_video(path, world, t, inst, labs, rng)
                written += 1
            snippets.append(t)
            dt = STRIDE / FPS
            t0 = WINDOW / (2 * FPS)
            database[vid] = {"subset": subset, "duration": _num_frames(t) / FPS,
                             "annotations": [{"segment": [round(t0 + a * dt, 3), round(t0 + b * dt, 3)],
                                              "label": CLASSES[k]} for (a, b), k in zip(inst, labs)]}
        info[subset] = {"videos": count, "written": written, "reused": reused, "snippets": snippets,
                        "bytes": sum(f.stat().st_size for f in (root / subset).glob("*.h5")) if count else 0}
    write_database(root / "annotations.json", database)
    return info


# ----------------------------------------------------------------------------------------------
# measurements


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def window_snippets(lengths, window: int, overlap: float) -> tuple[int, int]:
    """(windows, snippets inside them) of videos of these lengths."""
    wins = [w for t in lengths for w in make_windows(int(t), window, overlap)]
    return len(wins), sum(e - s for s, e in wins)


def stage1_checkpoint(root: Path, path: Path, seed: int) -> Path:
    """A RefactorNet stage-1 checkpoint trained for one epoch on the generated training videos."""
    samples = SampleConfig()
    pairs = build_pairs(root / "validation", root / "annotations.json", "validation", samples)
    train = RefactorTrain(epochs=1, seed=seed)
    model, history = train_refactor(pairs, RefactorConfig(in_dim=pairs.action.shape[1]), train, progress=False)
    return save_checkpoint(path, model, pairs, samples, train, history)


def measure_training(root: Path, device: str, front: str, train: TrainConfig, lengths, refactor_ckpt: Path | None):
    record: dict = {"device": device, "front": front}
    epochs: list[EpochReport] = []
    _sync(device)
    t0 = time.perf_counter()
    model, meta = train_detector(root / "validation", root / "annotations.json", DetectorConfig(), train,
                                 refactor_checkpoint=refactor_ckpt if front == "refactor" else None,
                                 front=front, progress=False, on_epoch=epochs.append)
    _sync(device)
    record["total_s"] = time.perf_counter() - t0
    record["fit_s"] = sum(e.seconds for e in epochs)
    windows, snippets = window_snippets(lengths, train.window, train.overlap)
    fit_s = record["fit_s"] if epochs else record["total_s"]
    record.update(videos=len(lengths), video_snippets=int(sum(lengths)), windows=windows * train.epochs,
                  window_snippets=snippets * train.epochs, steps=math.ceil(windows / train.batch_size) * train.epochs,
                  epochs=train.epochs, num_classes=model.config.num_classes,
                  snippets_per_s=snippets * train.epochs / fit_s,
                  parameters=sum(p.numel() for p in model.parameters()),
                  final_loss=meta["history"][-1].get("loss") if meta.get("history") else None)
    return record, model.cpu(), meta


def measure_inference(ckpt: Path, folder: Path, device: str, front: str, mode: str, batch: int, lengths, warm_id: str):
    config = InferenceConfig(mode=mode, batch_size=batch)
    run_detector(ckpt, folder, out=None, config=config, device=device, video_ids={warm_id}, progress=False)   # warm-up
    _sync(device)
    t0 = time.perf_counter()
    results = run_detector(ckpt, folder, out=None, config=config, device=device, progress=False)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"device": device, "front": front, "mode": mode, "videos": len(results), "video_snippets": int(sum(lengths)),
            "seconds": seconds, "videos_per_s": len(results) / seconds, "snippets_per_s": sum(lengths) / seconds,
            "detections": int(sum(len(d) for d in results.values())), "batch_size": batch}


# ----------------------------------------------------------------------------------------------
# reporting


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _range(text: str) -> tuple[int, int]:
    lo, hi = (int(v) for v in text.split(","))
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"need 1 <= LO <= HI, got {text}")
    return lo, hi


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 + 2 videos of 1,000-2,000 snippets, front none")
    p.add_argument("--videos", type=int, default=200, help="videos of the dataset described (for the extrapolation)")
    p.add_argument("--lengths", type=_range, default=(1000, 10000), metavar="LO,HI",
                   help="snippets per video, uniform (default 1000,10000)")
    p.add_argument("--train-videos", type=int, default=None, help="training videos generated (default 8, --quick 2)")
    p.add_argument("--infer-videos", type=int, default=None, help="test videos generated (default 16, --quick 2)")
    p.add_argument("--fronts", type=_csv, default=None, help="default none,refactor,deep (--quick: none)")
    p.add_argument("--infer-fronts", type=_csv, default=["none"],
                   help="fronts whose trained model is also run (default none)")
    p.add_argument("--modes", type=_csv, default=["thumos", "anet"], help="inference modes (default thumos,anet)")
    p.add_argument("--devices", type=_csv, default=None, help="default cpu, plus cuda when available")
    p.add_argument("--epochs", type=int, default=1, help="training epochs measured (default 1)")
    p.add_argument("--batch-size", type=int, default=16, help="training windows per step (default 16)")
    p.add_argument("--window", type=int, default=256, help="training window, snippets (default 256)")
    p.add_argument("--infer-batch", type=int, default=8, help="inference videos per forward pass (default 8)")
    p.add_argument("--full-epochs", type=int, default=20, help="epochs of the extrapolated training run (default 20)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--data", help="keep (and reuse) the generated files here instead of a temporary folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    train_n = args.train_videos if args.train_videos is not None else (2 if args.quick else 8)
    infer_n = args.infer_videos if args.infer_videos is not None else (2 if args.quick else 16)
    gen_lengths = (1000, 2000) if args.quick else args.lengths
    fronts = args.fronts or (["none"] if args.quick else ["none", "refactor", "deep"])
    infer_fronts = [f for f in args.infer_fronts if f in fronts]
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    if train_n < 1 or infer_n < 1:
        p.error("need at least one training and one test video")
    for d in devices:
        if d.startswith("cuda") and not torch.cuda.is_available():
            p.error(f"device {d}: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, window=args.window, seed=args.seed)

    # the dataset described: its lengths drawn from the same distribution (not generated)
    described = np.random.default_rng([args.seed, 0]).integers(args.lengths[0], args.lengths[1] + 1, args.videos)
    desc_windows, desc_window_snippets = window_snippets(described, train_cfg.window, train_cfg.overlap)

    print(f"torch {torch.__version__}, Python {platform.python_version()}")
    for d in devices:
        print(f"device {d}: {device_name(d)}")
    print(f"dataset described: {args.videos} videos of {args.lengths[0]:,}-{args.lengths[1]:,} snippets "
          f"(uniform; drawn: {int(described.sum()):,} snippets, {desc_windows:,} training windows of "
          f"{train_cfg.window}), "
          f"2048-d (rgb + flow 1024-d), {FPS:g} fps, window {WINDOW}, stride {STRIDE}, {len(CLASSES)} classes")

    results: dict = {"setup": {"torch": torch.__version__, "devices": {d: device_name(d) for d in devices},
                               "described_videos": args.videos, "lengths": list(args.lengths),
                               "described_snippets": int(described.sum()), "described_windows": desc_windows,
                               "train_config": {"epochs": train_cfg.epochs, "batch_size": train_cfg.batch_size,
                                                "window": train_cfg.window, "overlap": train_cfg.overlap},
                               "infer_batch": args.infer_batch, "seed": args.seed},
                     "train": [], "infer": []}
    t_all = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.data:
            root = Path(args.data)
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="detect_bench_")))
        t0 = time.perf_counter()
        info = make_dataset(root, args.seed, train_n, infer_n, gen_lengths)
        gen_s = time.perf_counter() - t0
        results["setup"]["generated"] = {**info, "seconds": gen_s}
        for subset, v in info.items():
            print(f"generated {subset}: {v['videos']} videos ({v['written']} written, {v['reused']} reused) of "
                  f"{min(v['snippets']):,}-{max(v['snippets']):,} snippets, {sum(v['snippets']):,} in all, "
                  f"{v['bytes'] / 2**30:.2f} GiB in {root / subset}")
        print(f"data generation {gen_s:.1f} s (not part of any figure)", flush=True)

        train_lengths = info["validation"]["snippets"]
        test_lengths = info["test"]["snippets"]
        warm_id = plans(args.seed, "test", infer_n, gen_lengths)[int(np.argmin(test_lengths))][0]
        refactor_ckpt = None
        if "refactor" in fronts:
            t0 = time.perf_counter()
            refactor_ckpt = stage1_checkpoint(root, root / "refactor_stage1.pt", args.seed)
            print(f"stage-1 RefactorNet checkpoint (1 epoch, not timed): {time.perf_counter() - t0:.1f} s", flush=True)

        for device in devices:
            # warm-up: one epoch on the shortest training video (not reported)
            shortest = plans(args.seed, "validation", train_n, gen_lengths)[int(np.argmin(train_lengths))][0]
            ann = json.loads((root / "annotations.json").read_text())
            warm_ann = {"database": {k: v for k, v in ann["database"].items() if k == shortest}}
            t0 = time.perf_counter()
            train_detector(root / "validation", warm_ann, DetectorConfig(),
                           TrainConfig(epochs=1, batch_size=args.batch_size, window=args.window, seed=args.seed,
                                       device=device), progress=False)
            print(f"[{device}] warm-up (1 video) {time.perf_counter() - t0:.1f} s", flush=True)
            for front in fronts:
                cfg = dataclasses.replace(train_cfg, device=device)
                rec, model, meta = measure_training(root, device, front, cfg, train_lengths, refactor_ckpt)
                rec["extrapolated_s"] = args.full_epochs * desc_window_snippets / rec["snippets_per_s"]
                results["train"].append(rec)
                print(f"[{device}] train front={front}: {rec['windows']} windows in {rec['steps']} steps, "
                      f"fit {rec['fit_s']:.1f} s, total {rec['total_s']:.1f} s, "
                      f"{rec['snippets_per_s']:,.0f} snippets/s", flush=True)
                if front in infer_fronts:
                    ckpt = save_detector(root / f"detector_{front}.pt", model, meta)
                    for mode in args.modes:
                        r = measure_inference(ckpt, root / "test", device, front, mode, args.infer_batch,
                                              test_lengths, warm_id)
                        r["extrapolated_s"] = int(described.sum()) / r["snippets_per_s"]
                        results["infer"].append(r)
                        print(f"[{device}] infer front={front} mode={mode}: {r['videos']} videos in "
                              f"{r['seconds']:.1f} s, {r['videos_per_s']:.2f} videos/s", flush=True)
                del model
        if args.data is None:
            shutil.rmtree(root, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - t_all

    s = results["setup"]
    print()
    print(f"Training: {train_n} generated videos ({sum(train_lengths):,} snippets), {train_cfg.epochs} epoch(s), "
          f"batch {train_cfg.batch_size} windows of {train_cfg.window} (overlap {train_cfg.overlap}), "
          "default DetectorConfig. "
          f"snippets/s = windows x {train_cfg.window} / fit s (fit = epoch loop; total = whole train_detector call)")
    head = (f"{'device':<6} | {'front':<8} | {'windows':>7} | {'steps':>5} | {'fit s':>7} | {'total s':>7} | "
            f"{'train snippets/s':>16} | {f'{args.full_epochs} ep x {args.videos} videos (extrapolated)':>33}")
    print(head)
    print("-" * len(head))
    for r in results["train"]:
        print(f"{r['device']:<6} | {r['front']:<8} | {r['windows']:>7d} | {r['steps']:>5d} | {r['fit_s']:>7.1f} | "
              f"{r['total_s']:>7.1f} | {r['snippets_per_s']:>16,.0f} | {hms(r['extrapolated_s']):>33}")
    print(f"(extrapolated = {args.full_epochs} epochs x {desc_window_snippets:,} window snippets of the {args.videos} "
          f"described videos / the measured snippets/s; an estimate, not a measurement)")
    if results["infer"]:
        print()
        print(f"Inference: {infer_n} generated test videos ({sum(test_lengths):,} snippets), batch {args.infer_batch} "
              f"videos, run_detector timed whole after a 1-video warm-up; anet without a video-scores file")
        head = (f"{'device':<6} | {'front':<8} | {'mode':<6} | {'s':>6} | {'infer videos/s':>14} | "
                f"{'snippets/s':>10} | "
                f"{f'{args.videos} videos (extrapolated)':>28}")
        print(head)
        print("-" * len(head))
        for r in results["infer"]:
            print(f"{r['device']:<6} | {r['front']:<8} | {r['mode']:<6} | {r['seconds']:>6.1f} | "
                  f"{r['videos_per_s']:>14.2f} | {r['snippets_per_s']:>10,.0f} | {hms(r['extrapolated_s']):>28}")
        print(f"(extrapolated = {s['described_snippets']:,} snippets of the {args.videos} described videos / the "
              f"measured snippets/s; an estimate, not a measurement)")
    print(f"total {results['wall_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"figures -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
