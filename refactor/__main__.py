"""python -m refactor train|context|apply|cam: RefactorNet stage 1 (encoders), the context score (a supervised
co-occurrence component, refactor.context), refactored feature files, and Grad-CAM figures of the action vs
co-occurrence components. Exit status 2 for unusable arguments (a --features that is not a folder, an unusable
output, a sample rule that leaves a class without coupling samples), 1 for other unusable input."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from common.annotations import AnnotationError, default_subsets, subset_videos
from common.checkpoint import checkpoint_kind
from common.config import (ConfigError, Section, add_config_arguments, add_section_arguments, dump_settings,
                           resolve_settings)
from common.datasets import dataset_names, detect_dataset, get_dataset
from common.paths import unusable_outputs
from extract.features import FeatureFileError
from extract.video import VideoError
from refactor.apply import apply_refactor
from refactor.cam import add_cam_arguments, cam_options, checkpoint_samples, draw_cams
from refactor.context import ContextConfig, save_context, train_context
from refactor.errors import NoCouplingSamples, RefactorError, check_feature_folder
from refactor.model import RefactorConfig
from refactor.pairs import build_pairs
from refactor.samples import SampleConfig
from refactor.train import TrainConfig, load_refactor, save_checkpoint, sections, settings_of, train_refactor


def _training_inputs(p: argparse.ArgumentParser, out_help: str) -> None:
    """``--features``, ``--annotations`` and ``--out`` of a command that trains from a feature folder."""
    p.add_argument("--features", help="folder of feature files (python -m extract); required")
    p.add_argument("--annotations",
                   help="ground truth: ActivityNet-layout JSON or THUMOS14 annotation folder; required")
    p.add_argument("--out", help=out_help)


def _settings_arguments(p: argparse.ArgumentParser, settings: list[Section]) -> None:
    """``--config``, ``--print-config`` and one flag per field of each settings section."""
    add_config_arguments(p)
    for section in settings:
        add_section_arguments(p.add_argument_group(f"{section.name} settings ({section.cls.__name__})"), section)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m refactor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="stage 1: train the action / co-occurrence encoders",
                       description="RefactorNet stage 1. Every setting below has one default (its dataclass); "
                                   "--config FILE (YAML or JSON, {model: {...}, samples: {...}, train: {...}}) sets "
                                   "any of them and flags override the file. An interrupted run resumes from "
                                   "OUT.state.")
    _training_inputs(p, "checkpoint to write (OUT.state while unfinished); required")
    p.add_argument("--dataset", choices=(*dataset_names(), "auto"), default=None,
                   help="apply a dataset's conventions below --config and flags (its training subset); auto: from "
                        "the annotations' subset names")
    p.add_argument("--restart", action="store_true",
                   help="ignore the training state OUT.state left by an interrupted run (default: resume from it)")
    _settings_arguments(p, sections())

    p = sub.add_parser("context", help="learn the context score p(context | f), p(action | f) from the action "
                                       "and coupling samples",
                       description="The context score (refactor.context): a logistic regression telling each class's "
                                   "coupling samples (its context) and action snippets from snippets far from every "
                                   "action, each snippet seen with the means of its neighbours (--window); `detect "
                                   "train --context-score OUT` puts it beside f. --config FILE: "
                                   "{samples: {...}, context: {...}}.")
    _training_inputs(p, "checkpoint to write; required")
    p.add_argument("--subset", default=None,
                   help="training subset (default: THUMOS14 validation, ActivityNet training, from the annotations)")
    _settings_arguments(p, context_sections())

    p = sub.add_parser("apply", help="write refactored feature files f'")
    p.add_argument("--features", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("cam", help="Grad-CAM figures: where the action and co-occurrence components come from")
    add_cam_arguments(p, "RefactorNet checkpoint (refactor train; a detector's front: python -m detect cam)")
    for p in sub.choices.values():
        p.set_defaults(usage_error=p.error)        # a subcommand's own usage with its errors (main's checks)
    return parser


def context_sections() -> list[Section]:
    """The settings sections of ``refactor context``: ``samples`` (:class:`SampleConfig`, the coupling rule)
    and ``context`` (:class:`ContextConfig`)."""
    return [Section("samples", SampleConfig), Section("context", ContextConfig)]


def _context(args) -> int:
    settings = resolve_settings(context_sections(), args, args.config)
    samples, config = SampleConfig(**settings["samples"]), ContextConfig(**settings["context"])
    if args.print_config:
        print(dump_settings({"samples": asdict(samples), "context": asdict(config)}), end="")
        return 0
    subset = args.subset or default_subsets(args.annotations)[0]
    pairs = build_pairs(args.features, args.annotations, subset, samples)
    scorer, info = train_context(pairs, args.features, config)
    save_context(args.out, scorer, pairs, samples, config, info)
    counts, k = info["counts"], len(pairs.classes)
    parts = ([f"{sum(counts[:k])} coupling samples"] if config.contexts else []) + \
        ([f"{sum(counts[-1 - k:-1])} action snippets"] if config.actions else [])
    print(f"refactor: context score of {k} classes (window {config.window}) from {', '.join(parts)} and "
          f"{counts[-1]} far snippets of {len(pairs.videos)} videos; final loss {info['final_loss']:.4f} -> {args.out}")
    return 0


def _cam(args) -> int:
    if checkpoint_kind(args.checkpoint, RefactorError) == "detector":
        raise RefactorError(f"{args.checkpoint} is a detector checkpoint: CAMs of a detector's front are drawn by "
                            "`python -m detect cam` with the same arguments")
    model, ckpt = load_refactor(args.checkpoint)
    streams = tuple(ckpt["feature_layout"]["streams"])
    drawn = draw_cams(model, streams, **cam_options(args), samples=checkpoint_samples(ckpt))
    for video_id, shown, dest, found in drawn:
        note = "" if found else " (source video not found: maps on grey)"
        print(f"refactor: {video_id}: snippets {', '.join(map(str, shown))} -> {dest}{note}")
    return 0


def train_settings(args) -> tuple[dict, SampleConfig, TrainConfig]:
    """``refactor train``'s settings: dataclass defaults < ``--dataset`` < ``--config`` < flags. Returns
    the ``model`` values (``in_dim`` comes from the features), the sample rule and the optimisation."""
    presets = None
    if args.dataset is not None:
        if args.dataset == "auto" and args.annotations is None:
            raise RefactorError("--dataset auto needs --annotations")
        dataset = (detect_dataset(subset_videos(args.annotations)) if args.dataset == "auto"
                   else get_dataset(args.dataset))
        presets = dataset.presets()
    settings = resolve_settings(sections(), args, args.config, presets)
    return settings["model"], SampleConfig(**settings["samples"]), TrainConfig(**settings["train"])


def _train(args) -> int:
    model_values, samples, train = train_settings(args)
    if args.print_config:
        print(dump_settings(settings_of(RefactorConfig(**model_values), samples, train)), end="")   # dims: C / 2
        return 0
    state = Path(str(args.out) + ".state")
    if args.restart:
        state.unlink(missing_ok=True)
    pairs = build_pairs(args.features, args.annotations, train.subset, samples)
    config = RefactorConfig(in_dim=pairs.action.shape[1], **model_values)
    model, history = train_refactor(pairs, config, train, state_path=state)
    save_checkpoint(args.out, model, pairs, samples, train, history)
    state.unlink(missing_ok=True)
    last = history[-1] if history else {"loss": float("nan"), "action": float("nan"), "cooccurrence": float("nan"),
                                        "kl": float("nan")}
    extra = "".join(f", {name} {last[key]:.4f}" for key, name, weight in
                    (("spread", "L_S", config.spread_weight), ("reconstruction", "L_rec", config.recon_weight))
                    if weight > 0 and key in last)
    print(f"refactor: {len(pairs.similarity)} pairs from {len(pairs.videos)} videos; form {config.form}; final loss "
          f"{last['loss']:.4f} (L_A {last['action']:.4f}, L_C {last['cooccurrence']:.4f}, "
          f"KL {last['kl']:.2f}{extra}) -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("train", "context") and not args.print_config:
        missing = [f"--{n}" for n in ("features", "annotations", "out") if getattr(args, n) is None]
        if missing:
            args.usage_error(f"the following arguments are required: {', '.join(missing)}")
    trains = args.command in ("train", "context")
    if unusable_outputs(f"refactor {args.command}", files={"--out": args.out if trains else None},
                        dirs={"--out": args.out if args.command in ("apply", "cam") else None}):
        return 2
    if args.features is not None and not getattr(args, "print_config", False):
        try:
            check_feature_folder(args.features, "--features")
        except RefactorError as exc:
            print(f"refactor {args.command}: {exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "context":
            return _context(args)
        if args.command == "apply":
            failed: dict = {}
            written = apply_refactor(args.checkpoint, args.features, args.out, overwrite=args.overwrite,
                                     failures=failed)
            print(f"refactor: {len(written)} refactored feature files -> {args.out}")
            if failed:
                print(f"refactor: failed ({len(failed)}): " + "; ".join(f"{p} ({r})" for p, r in failed.items()),
                      file=sys.stderr)
                return 1
            return 0
        return _cam(args)
    except NoCouplingSamples as exc:        # the sample rule's --threshold / --top-k leave a class without pairs
        print(f"refactor {args.command}: {exc}; lower --threshold or raise --top-k", file=sys.stderr)
        return 2
    except (RefactorError, FeatureFileError, AnnotationError, ConfigError, ValueError, VideoError) as exc:
        print(f"refactor {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
