"""The detector's files: its self-describing checkpoint and the training state of a resumable run.

Both go through :mod:`common.checkpoint` (``torch.save`` of a dict, written atomically, loaded
with ``weights_only=True``), each with its ``kind`` and format version:

* ``kind`` = "detector", :data:`FORMAT_VERSION`: ``config`` (:class:`detect.model.DetectorConfig`),
  ``train`` (:class:`detect.config.TrainConfig`), ``inference`` (:class:`detect.config.InferenceConfig`,
  its defaults unless given), ``classes``, ``feature_layout`` (streams, dim, window, stride, fps),
  ``subsets`` (video ids per subset of the annotations, so ``detect run --subset test`` needs
  nothing else), ``refactor_checkpoint`` (path and sha256), ``history`` and ``state_dict``;
  ``settings``: the run's effective settings ``{model, train, inference}`` (:mod:`detect.settings`, a
  file ``detect train --config`` reads back); with validation, ``best_epoch`` and ``val_average_mAP``.
* ``kind`` = "detector-training-state", :data:`STATE_VERSION`: ``fingerprint`` (what a resumed run
  must share with the interrupted one), ``history``, ``model`` and ``optimizer`` state dicts. The
  random streams derive from the seed and the epoch, so nothing else is needed to resume exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from common.checkpoint import load_checkpoint, rebuild_model, save_checkpoint
from detect.config import DetectorError, InferenceConfig
from detect.model import Detector, DetectorConfig

__all__ = ["FORMAT_VERSION", "STATE_VERSION", "save_detector", "load_detector", "save_training_state",
           "load_training_state", "run_files", "require_file"]

FORMAT_VERSION = 1
STATE_VERSION = 1
KIND = "detector"
STATE_KIND = "detector-training-state"


def run_files(out: str | os.PathLike) -> dict[str, Path]:
    """The files ``detect train --out OUT`` keeps next to its checkpoint ``OUT`` (``det.pt``):
    ``state`` (``det.pt.state``: the training state of an unfinished run), ``best`` (``det.best.pt``:
    the best validated epoch's checkpoint) and ``log`` (``det.log.jsonl``: losses and validation per epoch)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".pt" else out
    return {"state": Path(str(out) + ".state"), "best": Path(str(stem) + ".best.pt"),
            "log": Path(str(stem) + ".log.jsonl")}


def require_file(path: str | os.PathLike, what: str) -> None:
    """:class:`DetectorError` unless ``path`` is a file: ``no such file: PATH``, or ``PATH is a folder, not
    WHAT`` (``what``: e.g. "a detector checkpoint")."""
    path = Path(path)
    if path.is_dir():
        raise DetectorError(f"{path} is a folder, not {what}")
    if not path.is_file():
        raise DetectorError(f"no such file: {path}")


def save_detector(path: str | os.PathLike, model: Detector, meta: dict, inference: dict | None = None) -> Path:
    """Write a self-describing checkpoint atomically (see the module docstring).

    Args:
        meta: what :func:`detect.train.train_detector` returns next to the model.
        inference: post-processing settings to record (default: :class:`InferenceConfig`'s defaults).
    """
    payload = {"config": model.config.to_dict(), "inference": inference or asdict(InferenceConfig()), **meta,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    return save_checkpoint(path, KIND, FORMAT_VERSION, payload)


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Detector, dict]:
    """Rebuild a trained detector (eval mode, on ``device``) from its checkpoint alone.

    Returns:
        (model, the checkpoint dict). A path that is no file raises :class:`DetectorError`
        ``no such file: PATH`` (or ``PATH is a folder, not a detector checkpoint``); anything else that
        is not a detector checkpoint of this format raises it with a one-line message too.
    """
    require_file(path, "a detector checkpoint")
    what = f"detector checkpoint of format {FORMAT_VERSION}"
    ckpt = _upgrade(load_checkpoint(path, DetectorError, what, kind=KIND, format_version=FORMAT_VERSION))
    model = rebuild_model(path, ckpt, lambda c: Detector(DetectorConfig.from_dict(c["config"])), DetectorError, what)
    return model.to(device).eval(), ckpt


def _upgrade(ckpt: dict) -> dict:
    """A checkpoint from before the context front held several scorers (config ``context_score`` or, older,
    nothing; the one scorer's weights as ``front.*``) in today's layout (``context_scores``, ``front.0.*``)."""
    config = ckpt.get("config")
    if not isinstance(config, dict) or "context_scores" in config:
        return ckpt
    config = DetectorConfig.from_dict(config).to_dict()
    state = ckpt.get("state_dict")
    if config["front"] == "context" and isinstance(state, dict):
        state = {("front.0." + k[len("front."):] if k.startswith("front.") else k): v for k, v in state.items()}
    return ckpt | {"config": config, "state_dict": state}


def save_training_state(path: str | os.PathLike, fingerprint: dict, model: Detector, optimizer: torch.optim.Optimizer,
                        history: list[dict]) -> Path:
    """Write everything a resumed run needs, atomically (the random streams derive from the seed and the epoch)."""
    payload = {"fingerprint": fingerprint, "history": history, "model": model.state_dict(),
               "optimizer": optimizer.state_dict()}
    return save_checkpoint(path, STATE_KIND, STATE_VERSION, payload)


def load_training_state(path: str | os.PathLike, fingerprint: dict, model: Detector,
                        optimizer: torch.optim.Optimizer, device: str | torch.device) -> list[dict]:
    """Restore ``model`` and ``optimizer`` from a training state written with the same ``fingerprint``
    and return its loss history; :class:`DetectorError` (saying to delete the file) if it is not one."""
    state = load_checkpoint(path, DetectorError, "detector training state (delete it to start over)", device,
                            kind=STATE_KIND, format_version=STATE_VERSION)
    if json.loads(json.dumps(state.get("fingerprint"))) != json.loads(json.dumps(fingerprint)):
        raise DetectorError(f"{path} was written by a run with other data or settings; delete it to start over "
                            "(detect train --restart)")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return list(state["history"])
