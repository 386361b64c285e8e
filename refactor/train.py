"""Stage 1 of RefactorNet: train the encoders on a :class:`~refactor.pairs.PairSet`, and the
checkpoint that holds the result.

Checkpoint (:mod:`common.checkpoint`: ``torch.save`` of a dict, written atomically), kind
``"refactor"``, ``format_version`` 1: ``config`` (:class:`RefactorConfig` as a dict), ``samples``
(:class:`SampleConfig`), ``train`` (the :class:`TrainConfig`), ``feature_layout`` (``streams`` and
``dim`` of the features it was trained on), ``classes``, ``num_pairs``, ``state_dict`` and
``history`` (loss per epoch), and ``settings`` (the effective settings ``{model, samples, train}`` of
:func:`sections`, a file ``refactor train --config`` reads back). :func:`load_refactor`
rebuilds the model from it alone. Checkpoints written before kinds existed (the same entries
without ``kind``) load as well.

Training state (kind ``"refactor-training-state"``, :data:`STATE_VERSION`), written atomically after
every epoch when :func:`train_refactor` is given a ``state_path``: ``fingerprint`` (the settings and a
digest of the pairs: what a resumed run must share), ``history``, ``model`` and ``optimizer`` state
dicts, and the random streams (the batch-order generator's and torch's, CUDA's on CUDA), so a
resumed run ends with the model an uninterrupted one would have.

``PairSet``, ``build_pairs`` and ``RefactorError`` are importable from here too (their homes are
:mod:`refactor.pairs` and :mod:`refactor.errors`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common.checkpoint import load_checkpoint, rebuild_model
from common.checkpoint import save_checkpoint as write_checkpoint
from common.config import Section, effective_settings
from refactor.errors import RefactorError
from refactor.model import FORMS, RefactorConfig, RefactorLoss, RefactorNet
from refactor.pairs import PairSet, build_pairs
from refactor.samples import SampleConfig

__all__ = ["TrainConfig", "train_refactor", "save_checkpoint", "load_refactor", "FORMAT_VERSION", "CHECKPOINT_KIND",
           "PairSet", "build_pairs", "RefactorError", "STATE_KIND", "STATE_VERSION", "settings_of", "sections"]

FORMAT_VERSION = 1
CHECKPOINT_KIND = "refactor"
STATE_KIND = "refactor-training-state"
STATE_VERSION = 1


@dataclass
class TrainConfig:
    """Stage-1 optimisation (paper §4.1): Adam, lr 1e-3, 30 epochs.

    Attributes:
        epochs: training epochs.
        lr: Adam's learning rate.
        batch_size: (action, coupling) pairs per step.
        seed: seed of the initialisation, the batch order and the sampling.
        subset: training subset (THUMOS14: validation; ActivityNet: training).
        device: cpu, cuda, cuda:N.
    """

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 0
    subset: str = "validation"
    device: str = "cpu"


def _pairs_digest(pairs: PairSet) -> str:
    h = hashlib.sha256()
    for a in (pairs.action, pairs.coupling, pairs.similarity):
        arr = np.ascontiguousarray(a)
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _fingerprint(config: RefactorConfig, train: TrainConfig, pairs: PairSet) -> dict:
    """What a resumed run must share with the interrupted one (everything but the epoch count and device)."""
    return {"config": asdict(config), "train": asdict(train) | {"epochs": None, "device": None},
            "pairs": _pairs_digest(pairs)}


def _save_state(path, fingerprint: dict, model: RefactorNet, opt: torch.optim.Optimizer, history: list[dict],
                gen: torch.Generator, device: torch.device) -> None:
    payload = {"fingerprint": fingerprint, "history": history, "model": model.state_dict(),
               "optimizer": opt.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
               "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    write_checkpoint(path, STATE_KIND, STATE_VERSION, payload)


def _load_state(path, fingerprint: dict, model: RefactorNet, opt: torch.optim.Optimizer, gen: torch.Generator,
                device: torch.device) -> list[dict]:
    state = load_checkpoint(path, RefactorError, "RefactorNet training state (delete it to start over)",
                            kind=STATE_KIND, format_version=STATE_VERSION)
    if json.loads(json.dumps(state.get("fingerprint"))) != json.loads(json.dumps(fingerprint)):
        raise RefactorError(f"{path} was written by a run with other data or settings; delete it to start over "
                            "(refactor train --restart)")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return list(state["history"])


def train_refactor(pairs: PairSet, config: RefactorConfig | None = None,
                   train: TrainConfig = TrainConfig(), progress: bool | None = None,
                   state_path: str | os.PathLike | None = None) -> tuple[RefactorNet, list[dict]]:
    """Stage 1: train φA and φC on the pairs with L_R. Returns the model (eval mode) and the
    per-epoch mean losses (dicts with ``loss``, ``action``, ``cooccurrence``, ``kl``, ``epoch``).

    Args:
        state_path: training state written atomically after every epoch (see the module
            docstring); if the file exists, training resumes from it and ends with the model an
            uninterrupted run would have. It must come from the same pairs and settings (``epochs``
            and ``device`` aside), else :class:`RefactorError`.
    """
    dim = pairs.action.shape[1]
    config = config or RefactorConfig(in_dim=dim)
    if config.in_dim != dim:
        raise RefactorError(f"model expects {config.in_dim}-d features, the pairs are {dim}-d")
    torch.manual_seed(train.seed)
    device = torch.device(train.device)
    model = RefactorNet(config).to(device)
    criterion = RefactorLoss(model)
    opt = torch.optim.Adam(model.parameters(), lr=train.lr)
    a = torch.from_numpy(pairs.action).to(device)
    c = torch.from_numpy(pairs.coupling).to(device)
    alpha = torch.from_numpy(pairs.similarity.astype(np.float32)).to(device)
    labels = torch.from_numpy(pairs.label.astype(np.int64)).to(device)
    gen = torch.Generator().manual_seed(train.seed)
    history: list[dict] = []
    fingerprint = _fingerprint(config, train, pairs) if state_path is not None else None
    if state_path is not None and Path(state_path).is_file():
        history = _load_state(state_path, fingerprint, model, opt, gen, device)
        print(f"refactor: resuming from {state_path} after epoch {len(history)} of {train.epochs}", file=sys.stderr)
    bar = tqdm(range(len(history), train.epochs), desc="refactor stage 1", unit="epoch", initial=len(history),
               total=train.epochs, disable=(progress is False) or (progress is None and not sys.stderr.isatty()))
    for epoch in bar:
        model.train()
        totals = {"loss": 0.0, "action": 0.0, "cooccurrence": 0.0, "kl": 0.0, "spread": 0.0, "reconstruction": 0.0}
        order = torch.randperm(len(a), generator=gen).to(device)
        for start in range(0, len(a), train.batch_size):
            idx = order[start:start + train.batch_size]
            parts = criterion(a[idx], c[idx], alpha[idx], labels[idx])
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            for k in totals:
                totals[k] += float(parts[k].detach()) * len(idx)
        history.append({k: v / len(a) for k, v in totals.items()} | {"epoch": epoch + 1})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        if state_path is not None:
            _save_state(state_path, fingerprint, model, opt, history, gen, device)
    return model.eval(), history


def sections() -> list[Section]:
    """The settings sections of ``refactor train`` (:mod:`common.config`), ``{model, samples, train}``:
    ``model`` is :class:`RefactorConfig` (``in_dim`` comes from the features; the historical ``--no-kl``
    is ``--no-use-kl``), ``samples`` :class:`SampleConfig` (``--threshold -1`` and ``--top-k 0`` switch
    a rule off, as ``none`` does), ``train`` :class:`TrainConfig`."""
    return [Section("model", RefactorConfig, exclude=("in_dim",), aliases={"--no-kl": ("use_kl", False)},
                    choices={"form": tuple(FORMS)}),
            Section("samples", SampleConfig), Section("train", TrainConfig)]


def settings_of(config: RefactorConfig, samples: SampleConfig, train: TrainConfig) -> dict[str, dict]:
    """``{model, samples, train}`` (every settable field, :func:`sections`): what a checkpoint
    stores and ``refactor train --print-config`` prints. Component sizes that are the defaults derived
    from ``in_dim`` are written as None, so the settings apply to features of any size, and so are the
    fields that have their form's value (:data:`refactor.model.FORMS`)."""
    model, samp, tr = sections()
    out = effective_settings([(model, config), (samp, samples), (tr, train)])
    derived = RefactorConfig(in_dim=config.in_dim)
    if (config.action_dim, config.cooc_dim) == (derived.action_dim, derived.cooc_dim):
        out["model"] |= {"action_dim": None, "cooc_dim": None}
    out["model"] |= {k: None for k, v in FORMS[config.form].items() if getattr(config, k) == v}
    return out


def save_checkpoint(path: str | os.PathLike, model: RefactorNet, pairs: PairSet, samples: SampleConfig,
                    train: TrainConfig, history: list[dict]) -> Path:
    """Write a self-describing checkpoint (kind ``"refactor"``) atomically."""
    payload = {"config": asdict(model.config), "samples": asdict(samples), "train": asdict(train),
               "settings": settings_of(model.config, samples, train),
               "feature_layout": {"streams": list(pairs.streams), "dim": int(pairs.action.shape[1])},
               "classes": pairs.classes, "num_pairs": int(len(pairs.similarity)), "history": history,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    return write_checkpoint(path, CHECKPOINT_KIND, FORMAT_VERSION, payload)


def load_refactor(path: str | os.PathLike, in_dim: int | None = None) -> tuple[RefactorNet, dict]:
    """Rebuild a trained RefactorNet (eval mode) from its checkpoint alone.

    Args:
        in_dim: if given, the feature size it will be applied to (checked).

    Returns:
        (model, checkpoint dict).
    """
    what = "RefactorNet checkpoint"
    ckpt = load_checkpoint(path, RefactorError, what, kind=CHECKPOINT_KIND, format_version=FORMAT_VERSION,
                           legacy_kindless=True)
    if "state_dict" not in ckpt:
        raise RefactorError(f"{path} is not a {what} of format {FORMAT_VERSION} (no state_dict)")

    def build(c: dict) -> RefactorNet:
        list(c["feature_layout"]["streams"])         # required: detectors check the streams they are given
        return RefactorNet(RefactorConfig.from_dict(c["config"]))

    model = rebuild_model(path, ckpt, build, RefactorError, f"{what} of format {FORMAT_VERSION}")
    config = model.config
    streams = list(ckpt["feature_layout"]["streams"])
    if in_dim is not None and in_dim != config.in_dim:
        raise RefactorError(f"{path} was trained on {config.in_dim}-d features "
                            f"({'+'.join(streams)}), these are {in_dim}-d")
    return model.eval(), ckpt
