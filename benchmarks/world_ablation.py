"""The demo's ablation on several rendered worlds: mean ± std over seeds, paired differences to the
baseline, the time of each stage, and the Grad-CAM mass on the actor.

Each seed is exactly ``python -m detect.demo --seed S --work ROOT/seedS`` (the same world and fit
settings, ``detect.demo.DEMO_WORLD`` / ``DEMO_FIT``), so a seed already run (by this script or by the
demo) is read from its cache in seconds.

    python benchmarks/world_ablation.py [--seeds 0,1,2] [--root DIR] [--json OUT.json] [--select-front]
                                        [--score-gain 16]
                                        [--train-videos 48 --num-classes 6 ...]
    python benchmarks/world_ablation.py --report OUT.json [OUT2.json ...]     # the tables of saved runs
    python benchmarks/world_ablation.py --report OUT.json --remeasure ROOT --json NEW.json   # φC measured again

The demo's fit keeps RefactorNet as the main model (``DEMO_FIT.select_front`` is off); ``--select-front``
fits with the front selection of ``detect fit``'s default (the same work folders: only the selection and,
where it picks another front, the main detector are new) and adds the chosen front's row; the Grad-CAM
table then covers the seeds whose choice is RefactorNet.

Any field of :class:`detect.world.WorldConfig` but the seed is a flag (``--train-videos 48``,
``--num-classes 6``, ``--context-only 0.6``): a world other than the demo's, in its own work folders
(``<cache>/world-<digest of the settings>``, :func:`world_settings`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.config import Section, add_section_arguments, section_values  # noqa: E402
from common.fileio import cache_dir  # noqa: E402
from detect.demo import DEMO_FIT, DEMO_WORLD, cam_share  # noqa: E402
from detect.fit import ABLATION_VARIANTS, VARIANT_NAMES, fit  # noqa: E402
from detect.world import WorldConfig, make_world  # noqa: E402
from extract.features import read_features  # noqa: E402
from refactor.context import load_context  # noqa: E402
from benchmarks.refactor_study import OTHER_CONTEXT, measure_context  # noqa: E402
from benchmarks.feature_worlds import ACTION, BACKGROUND, CONTEXT  # noqa: E402

STAGE_GROUPS = {"features (I3D RGB)": ("features",), "RefactorNet stage 1": ("refactor",),
                "detector, stage 2": ("detector",), "evaluation": ("evaluate",), "figures": ("figures",)}


# the rendered world's settings as flags (the seed is --seeds'); the demo's world where none is given
WORLD_SECTION = Section("world", WorldConfig, exclude=("seed",))


def world_settings(args: argparse.Namespace) -> tuple[WorldConfig, str]:
    """The world the flags of :data:`WORLD_SECTION` give (over :data:`detect.demo.DEMO_WORLD`) and the name of its
    work folder under the cache: ``demo`` (the demo's own) without flags, else ``world-`` and a digest of the
    settings that differ from the demo's, so two worlds never share (or clash in) one folder."""
    world = replace(DEMO_WORLD, **section_values(args, WORLD_SECTION))      # WorldConfig's checks run here
    changed = {k: v for k, v in asdict(world).items() if v != getattr(DEMO_WORLD, k)}
    if not changed:
        return world, "demo"
    return world, "world-" + hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:12]


def snippet_kinds(entry: dict, times: np.ndarray) -> np.ndarray:
    """(T,) int kind of each snippet of a rendered video (its annotation entry, snippet centre times in s):
    ACTION inside an action, CONTEXT elsewhere inside its class's scene, BACKGROUND in a neutral scene."""
    kinds = np.full(len(times), BACKGROUND, dtype=np.int64)
    for spans, kind in ((entry["scenes"], CONTEXT), (entry["annotations"], ACTION)):
        for span in spans:
            start, end = span["segment"]
            kinds[(times >= start) & (times <= end)] = kind
    return kinds


def snippet_scenes(entry: dict, times: np.ndarray) -> np.ndarray:
    """(T,) object array: the name of the scene episode that holds each snippet of a rendered video (its
    annotation entry, snippet centre times in s), "" in neutral scenes."""
    scene = np.full(len(times), "", dtype=object)
    for span in entry["scenes"]:
        start, end = span["segment"]
        scene[(times >= start) & (times <= end)] = span["scene"]
    return scene


def class_views(entry: dict, times: np.ndarray) -> list[np.ndarray]:
    """The snippets of a rendered video (its annotation entry, snippet centre times in s) as each of its scenes
    with an action sees them: per such scene (one per class), a (T,) int kind array with ACTION that scene's
    action snippets, CONTEXT the rest of that scene (in every episode of it: its class's context),
    :data:`benchmarks.refactor_study.OTHER_CONTEXT` the non-action snippets of the other scenes (other classes'
    context), BACKGROUND the neutral snippets, and -1 the other scenes' action snippets (not paired)."""
    kinds = snippet_kinds(entry, times)
    scene = snippet_scenes(entry, times)
    views = []
    for name in sorted({span["scene"] for span in entry["scenes"] if span["action"]}):
        own = scene == name
        if not (own & (kinds == ACTION)).any():
            continue                                   # its actions fall between snippet centres
        view = np.full(len(times), -1, dtype=np.int64)
        view[kinds == BACKGROUND] = BACKGROUND
        view[~own & (kinds == CONTEXT)] = OTHER_CONTEXT
        view[own & (kinds == CONTEXT)] = CONTEXT
        view[own & (kinds == ACTION)] = ACTION
        views.append(view)
    return views


def context_collapse(world: Path, work: Path, subset: str = "test") -> dict[str, float] | None:
    """The issue's collapse figures for the fit's context score (``work/context.pt``, else
    ``work/ablation/context/context.pt``; None without either) on
    the world's ``subset`` videos: φC = its class-context probabilities, mean cosine between each action
    snippet and its own class's context snippets in its video (``phiC_ctx``), the other classes' context
    snippets there (``phiC_other``), every context snippet there (``phiC_scene``, this figure's definition until
    the twentieth round), its video's background snippets (``phiC_bg``), and between random snippets
    (``phiC_pair``): :func:`benchmarks.refactor_study.measure_context` with :func:`class_views`."""
    # the main model's score, or where the fit chose another front, the ablation's context row's (the same
    # training videos and settings)
    found = [path for path in (work / "context.pt", work / "ablation" / "context" / "context.pt") if path.is_file()]
    if not found:
        return None
    scorer, _ = load_context(found[0])
    database = json.loads((world / "annotations.json").read_text())["database"]
    feats, kinds, views = [], [], []
    for vid, entry in database.items():
        if entry["subset"] == subset:
            ff = read_features(work / "features" / f"{vid}.h5")
            feats.append(ff.features)
            kinds.append(snippet_kinds(entry, ff.times))
            views.append(class_views(entry, ff.times))
    return measure_context(scorer, feats, kinds, views)


def run_seed(root: Path, seed: int, select_front: bool = False, world_cfg: WorldConfig = DEMO_WORLD,
             score_gain: float = DEMO_FIT.score_gain) -> dict:
    world = root / f"seed{seed}" / "world"
    work = root / f"seed{seed}" / "fit"
    make_world(world, replace(world_cfg, seed=seed), progress=False)
    report = fit(world / "videos", world / "annotations.json", work,
                 replace(DEMO_FIT, device="cpu", select_front=select_front, score_gain=score_gain),
                 log=lambda m: None, progress=False)
    out = {"seed": seed, "world": asdict(replace(world_cfg, seed=seed)), "ablation": report.ablation,
           "seconds": report.seconds, "score_gain": score_gain}
    if report.selection is not None:
        out["selection"], out["selected"] = report.selection, report.result
    collapse = context_collapse(world, work)
    if collapse is not None:
        out["phiC"] = collapse
    if report.selection is None or report.selection["chosen"] == "refactor":
        out["cam"] = cam_share(world, work)
    return out


def _ms(values) -> str:
    v = np.asarray(values, dtype=np.float64) * 100
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def _defined(values) -> list[float]:
    """The values that are numbers (a Table 3 entry is null when no prediction is high-quality)."""
    return [float(v) for v in values if v is not None and v == v]


def summarize(runs: list[dict]) -> str:
    lines = ["| variant | average mAP (%) | Δ vs baseline (paired) | mAP@0.5 (%) | Table 3 acc. (%) | Table 3 tIoU |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    tiou = np.asarray(runs[0]["ablation"]["tiou"])
    at05 = int(np.argmin(np.abs(tiou - 0.5)))
    base = [r["ablation"]["variants"]["baseline"]["average_mAP"] for r in runs]
    for name in ABLATION_VARIANTS:
        if not all(name in r["ablation"]["variants"] for r in runs):
            continue                                     # runs saved before a variant existed
        rows = [r["ablation"]["variants"][name] for r in runs]
        avg = [row["average_mAP"] for row in rows]
        acc = _defined(row.get("quality", {}).get("accuracy") for row in rows)
        miou = _defined(row.get("quality", {}).get("mean_tiou") for row in rows)
        delta = np.subtract(avg, base)
        lines.append(f"| {VARIANT_NAMES[name]} | {_ms(avg)} | {'—' if name == 'baseline' else _ms(delta)} | "
                     f"{_ms([row['mAP'][at05] for row in rows])} | {_ms(acc) if acc else '—'} | "
                     + (f"{np.mean(miou):.3f} |" if miou else "— |"))
    if all("selected" in r for r in runs):
        avg = [r["selected"]["average_mAP"] for r in runs]
        chosen = [r["selection"]["chosen"] for r in runs]
        counts = ", ".join(f"{c} {chosen.count(c)}" for c in sorted(set(chosen)))
        acc = _defined(r["selected"].get("quality", {}).get("accuracy") for r in runs)
        miou = _defined(r["selected"].get("quality", {}).get("mean_tiou") for r in runs)
        lines.append(f"| Front chosen on held-out training videos ({counts}) | {_ms(avg)} | "
                     f"{_ms(np.subtract(avg, base))} | {_ms([r['selected']['mAP'][at05] for r in runs])} | "
                     f"{_ms(acc) if acc else '—'} | " + (f"{np.mean(miou):.3f} |" if miou else "— |"))
    return "\n".join(lines)


def tiou_table(runs: list[dict], variants: tuple[str, ...] = ("baseline", "deep", "context")) -> str:
    """mAP (%) at each tIoU threshold, mean ± std over seeds, of ``variants`` (those every run has) and of the
    chosen front, then each one's paired difference to the baseline: where in tIoU a difference lies (a
    better label shows at every threshold, a better boundary only at the strict ones)."""
    tiou = runs[0]["ablation"]["tiou"]
    rows = {VARIANT_NAMES[v]: [r["ablation"]["variants"][v]["mAP"] for r in runs]
            for v in variants if all(v in r["ablation"]["variants"] for r in runs)}
    if all("selected" in r for r in runs):
        rows["Front chosen on held-out training videos"] = [r["selected"]["mAP"] for r in runs]
    base = np.asarray(rows[VARIANT_NAMES["baseline"]], dtype=np.float64)
    lines = ["| mAP (%) at tIoU | " + " | ".join(f"{t:g}" for t in tiou) + " |",
             "| --- |" + " ---: |" * len(tiou)]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(_ms(col) for col in np.asarray(m, dtype=np.float64).T) + " |")
    for name, m in rows.items():
        if name != VARIANT_NAMES["baseline"]:
            diff = np.asarray(m, dtype=np.float64) - base
            lines.append(f"| Δ {name} − baseline | " + " | ".join(_ms(col) for col in diff.T) + " |")
    return "\n".join(lines)


def collapse_line(runs: list[dict]) -> str:
    """The context score's φC cosines (:func:`context_collapse`), mean ± std over the runs that have them, and
    the smallest per-seed margin of cos(action, own class's context) over cos(action, background)."""
    rows = [r["phiC"] for r in runs if "phiC" in r]
    if not rows:
        return "(no run has the context score's φC figures)"
    spread = (lambda v: np.std(v, ddof=1)) if len(rows) > 1 else (lambda v: 0.0)
    names = {"phiC_ctx": "cos(action, context)", "phiC_other": "cos(action, other classes' context)",
             "phiC_scene": "cos(action, any scene's context)", "phiC_bg": "cos(action, background)",
             "phiC_pair": "random pairs"}
    if all("phiC_other" in x for x in rows):
        names["phiC_ctx"] = "cos(action, its class's context)"
    cells = [f"{label} {np.mean([x[k] for x in rows]):.2f} ± {spread([x[k] for x in rows]):.2f}"
             for k, label in names.items() if all(k in x for x in rows)]
    margin = [x["phiC_ctx"] - x["phiC_bg"] for x in rows]
    return (f"φC of the context score (test videos, {len(rows)} seeds): " + ", ".join(cells)
            + f"; context − background per seed: {', '.join(f'{m:+.2f}' for m in margin)}")


def remeasure(runs: list[dict], root: Path) -> list[dict]:
    """``runs`` with their φC figures measured again (:func:`context_collapse`) from their work folders,
    ``root/seedS/{world,fit}``; a folder whose ablation is not the run's (another world or fit) is an error."""
    out = []
    for run in runs:
        world, work = root / f"seed{run['seed']}" / "world", root / f"seed{run['seed']}" / "fit"
        saved = json.loads((work / "ablation.json").read_text()) if (work / "ablation.json").is_file() else None
        if saved is None or saved["variants"]["baseline"] != run["ablation"]["variants"]["baseline"]:
            raise ValueError(f"{work} does not hold seed {run['seed']}'s fit (its baseline differs or is missing)")
        collapse = context_collapse(world, work)
        out.append(run | ({"phiC": collapse} if collapse is not None else {}))
    return out


def stage_times(runs: list[dict]) -> str:
    lines = ["| stage | seconds (mean over seeds) |", "| --- | ---: |"]
    for label, names in STAGE_GROUPS.items():
        lines.append(f"| {label} | {np.mean([sum(r['seconds'].get(n, 0.0) for n in names) for r in runs]):.1f} |")
    ablation = [sum(v for k, v in r["seconds"].items() if k.startswith("ablation-")) for r in runs]
    lines.append(f"| ablation ({len(ABLATION_VARIANTS) - 1} more models) | {np.mean(ablation):.1f} |")
    lines.append(f"| total | {np.mean([sum(r['seconds'].values()) for r in runs]):.1f} |")
    return "\n".join(lines)


def cam_table(runs: list[dict]) -> str:
    lines = ["| model | samples | φA (%) | μ_C (%) | chance (%) |", "| --- | --- | ---: | ---: | ---: |"]
    runs = [r for r in runs if "cam" in r]
    if not runs:
        return "(no seed has RefactorNet as its main model)"
    first = runs[0]["cam"]["models"]
    for model in first:
        for kind in first[model]["summary"]:
            rows = [r["cam"]["models"][model]["summary"][kind] for r in runs]
            lines.append(f"| {model} | {kind} | {_ms([x['action_mean'] for x in rows])} | "
                         f"{_ms([x['cooccurrence_mean'] for x in rows])} | {_ms([x['chance_mean'] for x in rows])} |")
    return "\n".join(lines)


def report(runs: list[dict]) -> str:
    return "\n\n".join([summarize(runs), tiou_table(runs), collapse_line(runs), stage_times(runs), cam_table(runs)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--root", default=None, help="default: <cache>/demo (the demo's own work folders), or "
                   "<cache>/world-<digest> for another world")
    p.add_argument("--json", default=None)
    p.add_argument("--select-front", action="store_true", help="fit with --select-front and add its row")
    p.add_argument("--score-gain", type=float, default=DEMO_FIT.score_gain,
                   help="the fit's --score-gain (its context front's scores times this); the same work folders: "
                   "only the context front's detectors are trained again (folders from before the field existed, "
                   "twentieth round, retrain every detector once)")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="print the tables of runs saved with --json (no fitting); several files: their seeds together")
    p.add_argument("--remeasure", default=None, metavar="ROOT",
                   help="with --report: measure the runs' φC again from their work folders ROOT/seedS (and with --json "
                   "save the runs so updated)")
    demo = {k: f"{v} (the demo's)" for k, v in asdict(DEMO_WORLD).items() if v != getattr(WorldConfig(), k)}
    add_section_arguments(p.add_argument_group("the rendered world (default: the demo's, detect.demo.DEMO_WORLD)"),
                          WORLD_SECTION, demo)
    args = p.parse_args(argv)
    if args.report:
        runs = [run for name in args.report for run in json.loads(Path(name).read_text())]
        if args.remeasure:
            runs = remeasure(runs, Path(args.remeasure))
            if args.json:
                Path(args.json).write_text(json.dumps(runs, indent=1, default=float))
        world = runs[0].get("world")                     # runs saved before the world was recorded lack it
        gains = sorted({r.get("score_gain", 1.0) for r in runs})        # runs saved before the flag: gain 1
        print(f"seeds {','.join(str(r['seed']) for r in runs)}" + (f"; world {json.dumps(world)}" if world else "")
              + ("" if gains == [1.0] else f"; score gain {', '.join(f'{g:g}' for g in gains)}"))
        print(report(runs))
        return 0
    try:
        world, folder = world_settings(args)
    except ValueError as exc:
        p.error(str(exc))
    root = Path(args.root) if args.root else cache_dir() / folder
    runs = [run_seed(root, int(s), args.select_front, world, args.score_gain) for s in args.seeds.split(",")]
    print(f"device: CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}; seeds {args.seeds}; world {json.dumps(asdict(replace(world, seed=0)))}"
          + ("" if args.score_gain == 1.0 else f"; score gain {args.score_gain:g}"))
    print(report(runs))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
