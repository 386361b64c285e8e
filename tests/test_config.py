"""Settings: dataclass fields <-> flags and config files (common.config), dataset and front registries,
the effective settings in checkpoints, and validation during detector training."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from common.annotations import load_ground_truth, write_annotations
from common.config import (ConfigError, Section, add_section_arguments, coerce_value, field_docs, parse_value,
                           resolve_settings, section_values)
from common.datasets import ActivityNet, Thumos14, detect_dataset, get_dataset
from common.predictions import load_predictions
from detect import Detector, DetectorConfig, InferenceConfig, TrainConfig, load_detector, run_detector, train_detector
from detect.__main__ import build_parser as detect_parser
from detect.__main__ import fit_config
from detect.__main__ import main as detect_main
from detect.__main__ import train_settings
from detect.checkpoint import run_files
from detect.fronts import Front, front_names, register_front
from detect.settings import train_sections
from detect.validation import read_log
from evaluate.data import parse_thresholds
from evaluate.detection import evaluate_detection
from extract.__main__ import main as extract_main
from extract.config import SECTION as EXTRACT, ExtractConfig
from refactor.__main__ import main as refactor_main
from refactor.train import load_refactor
from tests.featfiles import detection_dataset

REPO = Path(__file__).resolve().parents[1]
SMALL_MODEL = {"base_dim": 32, "boundary_hidden": 32, "head_hidden": 64, "dropout": 0.0, "max_duration": 32}


def detect_args(*argv: str):
    return detect_parser().parse_args(["train", *argv])


# ---------------------------------------------------------------------------------------------- machinery

def test_field_docs_cover_every_setting():
    """Every flag gets a help text: each settable field of every section is documented on its own."""
    from refactor.train import sections as refactor_sections

    for section in [*train_sections(), *refactor_sections(), EXTRACT]:
        docs = field_docs(section.cls)
        missing = [f.name for f in fields(section.cls) if f.name not in section.exclude and not docs.get(f.name)]
        assert not missing, (section.name, missing)


def test_front_help_describes_every_built_in_front():
    """``--front``'s help (DetectorConfig's docstring) names each front the package registers, with its flag."""
    doc = " ".join(field_docs(DetectorConfig)["front"].split())
    flags = {"none": "--baseline", "refactor": "--refactor CKPT", "context": "--context-score CKPT",
             "deep": "--deep-baseline"}
    assert {n for n in front_names() if not n.startswith("test-")} == set(flags)   # (a test registers test-*)
    for name, flag in flags.items():
        assert f'"{name}"' in doc and flag in doc, (name, doc)


def test_parse_and_coerce_values():
    assert parse_value("2,8,2", tuple[int, int, int]) == (2, 8, 2)
    assert parse_value("rgb, flow", tuple[str, ...]) == ("rgb", "flow")
    assert parse_value("none", int | None) is None and parse_value("7", int | None) == 7
    assert parse_value("-1", float | None, none_at=-1.0) is None
    assert parse_value("-0.5", float | None, none_at=-1) == -0.5
    assert parse_value("0", int | None, none_at=0) is None
    assert parse_value("false", bool) is False
    with pytest.raises(ConfigError, match="expected int"):
        parse_value("1.5", int, "--epochs")
    assert coerce_value([1, 6, 1], tuple[int, int, int], "x") == (1, 6, 1)
    assert coerce_value(3, float, "x") == 3.0 and isinstance(coerce_value(3, float, "x"), float)
    for bad, tp in ((True, int), ("3", int), (None, int), (1.5, int), ([1], str)):
        with pytest.raises(ConfigError):
            coerce_value(bad, tp, "train.epochs")


def test_every_legacy_flag_is_generated_with_its_default():
    """The flags of detect train before settings were generated still parse to the same fields, and a
    flag not given leaves the dataclass default (one default per field)."""
    args = detect_args("--features", "f", "--annotations", "a", "--out", "o", "--epochs", "3", "--lr", "0.01",
                       "--batch-size", "4", "--window", "64", "--max-duration", "32", "--max-proposals", "50",
                       "--temporal-scale", "100", "--actionness-weight", "0", "--seed", "5", "--device", "cpu",
                       "--subset", "training", "--mode", "anet", "--sigma", "0.7", "--top-k", "9",
                       "--top-classes", "3")
    config, train, inference = train_settings(args)
    assert (config.max_duration, config.max_proposals, config.temporal_scale) == (32, 50, 100)
    assert (train.epochs, train.lr, train.batch_size, train.window, train.actionness_weight, train.seed,
            train.subset) == (3, 0.01, 4, 64, 0.0, 5, "training")
    assert (inference.mode, inference.sigma, inference.top_k, inference.top_classes) == ("anet", 0.7, 9, 3)
    # everything else: the dataclass defaults
    config, train, inference = train_settings(detect_args())
    assert config == DetectorConfig() and train == TrainConfig() and inference == InferenceConfig()
    for front, flags in (("deep", ["--deep-baseline"]), ("none", ["--baseline"]), ("deep", ["--front", "deep"])):
        assert train_settings(detect_args(*flags))[0].front == front


def test_config_file_and_flag_override(tmp_path):
    """--config sets any field (YAML or JSON), flags override the file, dataset presets sit below both."""
    yml = tmp_path / "run.yaml"
    yml.write_text("model:\n  max_duration: 40\n  bins: [1, 4, 1]\ntrain:\n  epochs: 7\n  lr: 0.01\n"
                   "  ratio: [1, 2, 1]\ninference:\n  top_k: 30\n  regress: false\n")
    config, train, inference = train_settings(detect_args("--config", str(yml), "--epochs", "2"))
    assert (config.max_duration, config.bins, train.epochs, train.lr) == (40, (1, 4, 1), 2, 0.01)
    assert train.ratio == (1, 2, 1)
    assert inference.top_k == 30 and inference.regress is False
    assert train_settings(detect_args("--config", str(yml), "--regress"))[2].regress is True
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"train": {"epochs": 4}}))
    assert train_settings(detect_args("--config", str(js)))[1].epochs == 4
    # presets: ActivityNet's conventions, under the file and the flags
    config, train, inference = train_settings(detect_args("--dataset", "activitynet", "--config", str(yml)))
    assert (config.temporal_scale, config.max_duration, train.subset, inference.mode) == (100, 40, "training", "anet")
    # the printed settings are a config file that gives the same settings back
    out = tmp_path / "printed.yaml"
    args = detect_args("--dataset", "activitynet", "--config", str(yml), "--sigma", "0.3")
    printed = subprocess.run([sys.executable, "-m", "detect", "train", "--dataset", "activitynet", "--config", str(yml),
                              "--sigma", "0.3", "--print-config"], cwd=REPO, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    out.write_text(printed.stdout)
    assert train_settings(detect_args("--config", str(out))) == train_settings(args)


@pytest.mark.parametrize("text, match", [
    ("train:\n  epoch: 3\n", "unknown key train.epoch; did you mean epochs"),
    ("trian:\n  epochs: 3\n", "unknown section 'trian'"),
    ("model:\n  in_dim: 8\n", "unknown key model.in_dim"),          # set from the data, not by users
    ("train:\n  epochs: three\n", "train.epochs: expected int"),
    ("inference:\n  mode: coco\n", "inference.mode must be one of thumos, anet"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("train: [\n", "not valid YAML"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, match):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert detect_main(["train", "--features", str(tmp_path), "--annotations", str(tmp_path / "a.json"), "--out",
                        str(tmp_path / "x.pt"), "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err and str(bad) in err, err
    assert not (tmp_path / "x.pt").exists()


def test_other_commands_read_config_files(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  hidden_dim: 12\nsamples:\n  threshold: -1\n  top_k: 2\ntrain:\n  epochs: 3\n")
    assert refactor_main(["train", "--config", str(cfg), "--beta", "0.5", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["hidden_dim"] == 12 and printed["model"]["beta"] == 0.5
    assert printed["samples"] == {"threshold": None, "top_k": 2} and printed["train"]["epochs"] == 3
    cfg.write_text("extract:\n  stride: 4\n  streams: [flow, rgb]\n")
    assert extract_main(["--config", str(cfg), "--workers", "1", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["extract"]
    assert ExtractConfig(**printed) == ExtractConfig(stride=4, streams=("rgb", "flow"), workers=1)
    cfg.write_text("extract:\n  strid: 4\n")
    assert extract_main(["--config", str(cfg), "--print-config"]) == 2
    assert "unknown key extract.strid" in capsys.readouterr().err


def test_resolve_settings_order():
    section = Section("train", TrainConfig)
    args = detect_args("--epochs", "9")
    got = resolve_settings([section], args, {"train": {"epochs": 5, "lr": 0.5}}, presets={"subset": "training",
                                                                                         "mode": "anet"})
    assert got == {"train": {"subset": "training", "epochs": 9, "lr": 0.5}}      # mode: not a TrainConfig field


@dataclass
class Switches:
    """Settings of the help tests.

    Attributes:
        loud: say more.
        fast: skip the checks.
        level: how much.
        tags: labels.
    """

    loud: bool = False
    fast: bool | None = None
    level: int = 1
    tags: tuple[str, ...] = ("a",)


def switches_parser(**aliases) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prog", formatter_class=lambda prog: argparse.HelpFormatter(prog, width=200))
    add_section_arguments(parser, Section("s", Switches, aliases=aliases))
    return parser


def help_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_boolean_flags_and_aliases_in_help():
    """A boolean field is one help entry naming both forms, with its help text and default; an alias's help
    names the flag with the value it sets (``--no-loud`` for False, not ``--loud``)."""
    parser = switches_parser(**{"--quiet": ("loud", False), "--shout": ("loud", True), "--max": ("level", 9),
                                "--plain": ("tags", ("x", "y")), "--careful": ("fast", None)})
    lines = help_lines(parser.format_help())
    assert "  --loud, --no-loud  say more (default: False)" in lines
    assert "  --fast, --no-fast  skip the checks (default: none)" in lines
    assert "  --quiet            same as --no-loud" in lines
    assert "  --shout            same as --loud" in lines
    assert "  --max              same as --level 9" in lines
    assert "  --plain            same as --tags x,y" in lines
    assert "  --careful          same as --fast none" in lines
    assert not any(line.lstrip().startswith("--no-loud") for line in lines)      # not a second entry
    assert ("usage: prog [-h] [--loud | --no-loud] [--fast | --no-fast] [--level INT] [--tags STR[,...]] [--quiet] "
            "[--shout] [--max] [--plain] [--careful]") in lines
    section = Section("s", Switches)
    for argv, expected in ((["--loud"], {"loud": True}), (["--no-loud"], {"loud": False}),
                           (["--loud", "--no-loud"], {"loud": False}), (["--no-fast", "--fast"], {"fast": True}),
                           (["--quiet"], {"loud": False}), (["--shout"], {"loud": True}), ([], {}),
                           (["--careful", "--max"], {"fast": None, "level": 9})):
        assert section_values(parser.parse_args(argv), section) == expected, argv
    with pytest.raises(SystemExit):
        parser.parse_args(["--no-level"])                                          # only booleans have a --no- form


def cli_help(*argv: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", *argv, "--help"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return help_lines(proc.stdout)


def help_entry(lines: list[str], invocation: str) -> str:
    """The help text of the entry whose invocation is ``invocation``, its wrapped lines joined."""
    i = next(i for i, line in enumerate(lines) if line == f"  {invocation}" or line.startswith(f"  {invocation}  "))
    parts = [lines[i][len(invocation) + 2:].strip()]
    for line in lines[i + 1:]:
        if not line.startswith("   "):                  # a blank line, a group title or the next entry ("  --x")
            break
        parts.append(line.strip())
    return " ".join(p for p in parts if p)


def test_refactor_train_help_names_the_flags_aliases_set():
    lines = cli_help("refactor", "train")
    assert "  --no-kl               same as --no-use-kl" in lines
    assert help_entry(lines, "--use-kl, --no-use-kl") == ("KL regularization of the co-occurrence component "
                                                          "(ablation, --no-kl: L_A & L_C only) (default: True)")
    assert not any(line.strip().startswith("--no-use-kl") for line in lines)


def test_detect_fit_help_shows_the_no_forms_and_they_parse():
    """``detect fit``'s booleans (generated from FitConfig) list ``--no-NAME`` beside ``--NAME``, in the usage
    line and the help, and both forms set the field."""
    lines = cli_help("detect", "fit")
    usage = " ".join(line.strip() for line in lines[:lines.index("")])
    for name in ("spatial", "ablation", "select-front", "context-boundaries"):
        assert f"[--{name} | --no-{name}]" in usage, name
        assert help_entry(lines, f"--{name}, --no-{name}").endswith("(default: True)" if name != "ablation" else
                                                                    "(default: False)"), name
    assert "  --no-cam              same as --no-spatial" in lines
    assert help_entry(lines, "--spatial, --no-spatial") == ("store the Mixed_5c maps the CAM figures need (--no-cam: "
                                                            "neither maps nor CAM figures) (default: True)")
    assert help_entry(lines, "--select-front, --no-select-front").endswith(
        "(about 3x the training time; --no-select-front: RefactorNet in the fit's form) (default: True)")
    parse = detect_parser().parse_args
    cfg = fit_config(parse(["fit", "--no-select-front", "--no-context-boundaries", "--no-cam"]))
    assert (cfg.select_front, cfg.context_boundaries, cfg.spatial) == (False, False, False)
    cfg = fit_config(parse(["fit", "--no-select-front", "--select-front", "--no-spatial", "--spatial"]))
    assert (cfg.select_front, cfg.context_boundaries, cfg.spatial) == (True, True, True)


# ---------------------------------------------------------------------------------------------- registries

def test_dataset_registry():
    assert get_dataset("ActivityNet") is ActivityNet and get_dataset("thumos14") is Thumos14
    assert detect_dataset(["Training", "Validation"]) is ActivityNet
    assert detect_dataset(["validation", "test"]) is Thumos14
    with pytest.raises(ValueError, match="known: thumos14, activitynet"):
        get_dataset("kinetics")


def test_a_new_front_is_one_class_and_one_registration():
    @register_front
    class Scaled(Front):
        """f' = 2 f through a parameter-free module."""

        name = "test-scaled"

        @classmethod
        def build(cls, config):
            return nn.Identity()

        @classmethod
        def apply(cls, module, x, mask):
            return 2 * module(x) * mask, None

    assert "test-scaled" in front_names()
    cfg = DetectorConfig(in_dim=4, num_classes=2, front="test-scaled", **SMALL_MODEL)
    model = Detector(cfg).eval()
    plain = Detector(DetectorConfig(in_dim=4, num_classes=2, **SMALL_MODEL)).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 4, 10)
    torch.testing.assert_close(model.encode(x).features, 2 * x)
    torch.testing.assert_close(model.encode(x).base, plain.encode(2 * x).base)
    with pytest.raises(ValueError, match="front must be one of"):
        DetectorConfig(front="nope")


# ---------------------------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """8 videos: 5 train (validation subset), 3 held out (test subset)."""
    root = tmp_path_factory.mktemp("config_world")
    features, ann, db = detection_dataset(root, videos=8, seed=3)
    for vid in list(db)[5:]:
        db[vid]["subset"] = "test"
    write_annotations(ann, db)
    return features, ann, db


def test_settings_stored_in_checkpoint_and_cli_equals_api(world, tmp_path):
    """detect train --config FILE: the checkpoint stores the effective settings, they equal
    --print-config's, and the model equals train_detector's with the same dataclasses."""
    features, ann, _ = world
    cfg = tmp_path / "det.yaml"
    cfg.write_text(yaml.safe_dump({"model": SMALL_MODEL, "train": {"epochs": 2, "window": 64, "batch_size": 8},
                                   "inference": {"top_k": 20}}))
    out = tmp_path / "cli.pt"
    assert detect_main(["train", "--features", str(features), "--annotations", str(ann), "--out", str(out),
                        "--config", str(cfg), "--seed", "2"]) == 0
    _, ckpt = load_detector(out)
    printed = subprocess.run([sys.executable, "-m", "detect", "train", "--config", str(cfg), "--seed", "2",
                              "--print-config"], cwd=REPO, capture_output=True, text=True)
    assert ckpt["settings"] == yaml.safe_load(printed.stdout)
    assert ckpt["settings"]["train"]["seed"] == 2 and ckpt["settings"]["model"]["max_duration"] == 32
    assert ckpt["inference"]["top_k"] == 20
    # the API with the same dataclasses: the same model
    config = DetectorConfig(**SMALL_MODEL)
    train = TrainConfig(epochs=2, window=64, batch_size=8, seed=2)
    model, meta = train_detector(features, ann, config, train, inference=InferenceConfig(top_k=20))
    assert meta["settings"] == ckpt["settings"]
    loaded, _ = load_detector(out)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=k)
    # the stored settings, given back as a file, reproduce the run's settings
    back = tmp_path / "back.json"
    back.write_text(json.dumps(ckpt["settings"]))
    assert train_settings(detect_args("--config", str(back))) == (config, train, InferenceConfig(top_k=20))


def test_refactor_checkpoint_stores_settings(tmp_path):
    from tests.test_refactor import make_dataset

    features, ann = make_dataset(tmp_path)
    cfg = tmp_path / "r.yaml"
    cfg.write_text("model:\n  hidden_dim: 8\nsamples:\n  top_k: 0\n  threshold: 0.1\ntrain:\n  epochs: 2\n")
    assert refactor_main(["train", "--features", str(features), "--annotations", str(ann), "--out",
                          str(tmp_path / "r.pt"), "--config", str(cfg), "--no-kl"]) == 0
    _, ckpt = load_refactor(tmp_path / "r.pt")
    assert ckpt["settings"]["model"]["hidden_dim"] == 8 and ckpt["settings"]["model"]["use_kl"] is False
    assert ckpt["settings"]["samples"] == {"threshold": 0.1, "top_k": None}
    assert ckpt["config"]["use_kl"] is False and ckpt["samples"] == {"threshold": 0.1, "top_k": None}
    assert ckpt["settings"]["model"]["action_dim"] is None           # C / 2: applies to any feature size


# ---------------------------------------------------------------------------------------------- validation

def _offline_map(ckpt: Path, features: Path, ann: Path, subset: str, tmp_path: Path) -> list[float]:
    run_detector(ckpt, features, tmp_path / "pred.json", subset=subset)
    gt = load_ground_truth(ann, subset)
    result = evaluate_detection(gt, load_predictions(tmp_path / "pred.json", gt, unknown_labels="ignore"),
                                parse_thresholds("0.3:0.7:0.1"))
    return [float(m) for m in result.mAP]


def test_validation_map_best_checkpoint_and_log(world, tmp_path):
    """--val-subset test --val-every 2 over 5 epochs: epochs 2, 4 and 5 are validated; the mAP logged
    is the evaluator's on the best checkpoint's own detections; OUT.best.pt is the best epoch's."""
    features, ann, _ = world
    out = tmp_path / "det.pt"
    argv = ["train", "--features", str(features), "--annotations", str(ann), "--out", str(out), "--epochs", "5",
            "--window", "64", "--batch-size", "8", "--max-duration", "32", "--base-dim", "32", "--boundary-hidden",
            "32", "--head-hidden", "64", "--dropout", "0", "--val-subset", "test", "--val-every", "2",
            "--plot", str(tmp_path / "figs")]
    assert detect_main(argv) == 0
    files = run_files(out)
    log = read_log(files["log"])
    assert [h["epoch"] for h in log] == [1, 2, 3, 4, 5]
    assert [h["epoch"] for h in log if "val_average_mAP" in h] == [2, 4, 5]
    _, ckpt = load_detector(out)
    assert ckpt["history"] == log
    vals = {h["epoch"]: h for h in log if "val_mAP" in h}
    best_epoch = max(vals, key=lambda e: (vals[e]["val_average_mAP"], -e))
    _, best = load_detector(files["best"])
    assert best["best_epoch"] == ckpt["best_epoch"] == best_epoch
    assert [h["epoch"] for h in best["history"]] == list(range(1, best_epoch + 1))
    # the logged numbers are those of the official-rule evaluator on the checkpoints' detections
    np.testing.assert_allclose(_offline_map(files["best"], features, ann, "test", tmp_path),
                               vals[best_epoch]["val_mAP"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(_offline_map(out, features, ann, "test", tmp_path), vals[5]["val_mAP"],
                               rtol=0, atol=1e-12)
    assert vals[best_epoch]["val_average_mAP"] == pytest.approx(np.mean(vals[best_epoch]["val_mAP"]))
    assert 0 < max(v["val_average_mAP"] for v in vals.values()) <= 1
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["loss.png", "val_map.png"]


def test_validation_resumes(world, tmp_path):
    """An interrupted run with validation resumes to the log and best checkpoint of an uninterrupted one."""
    features, ann, _ = world
    config = DetectorConfig(**SMALL_MODEL)

    def run(folder: Path, epochs: int) -> dict:
        files = run_files(folder / "det.pt")
        return train_detector(features, ann, config, TrainConfig(epochs=epochs, window=64, batch_size=8,
                                                                  val_subset="Test"),
                              state_path=files["state"], best_path=files["best"], log_path=files["log"])[1]

    straight = run(tmp_path / "a", 3)
    (tmp_path / "b").mkdir()
    run(tmp_path / "b", 1)                                    # interrupted after epoch 1 (its state is on disk)
    resumed = run(tmp_path / "b", 3)
    a_log, b_log = (read_log(run_files(tmp_path / d / "det.pt")["log"]) for d in "ab")
    assert [h["epoch"] for h in b_log] == [1, 2, 3] and all("val_average_mAP" in h for h in b_log)
    for x, y in zip(a_log, b_log):
        assert x["val_average_mAP"] == pytest.approx(y["val_average_mAP"], abs=1e-6)
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
    assert straight["best_epoch"] == resumed["best_epoch"]


def test_validation_subset_errors(world, tmp_path, capsys):
    features, ann, _ = world
    base = ["train", "--features", str(features), "--annotations", str(ann), "--out", str(tmp_path / "x.pt"),
            "--epochs", "1", "--window", "64"]
    assert detect_main([*base, "--val-subset", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no video in subset 'nosuch'" in err
    assert detect_main([*base, "--val-every", "0"]) == 1
    assert "val_every" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
