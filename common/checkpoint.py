"""Checkpoints: one on-disk format for every trained model and training state in the project.

A checkpoint is ``torch.save`` of a dict whose entries are plain Python values and tensors (it
loads with ``weights_only=True``: no code is unpickled). Every checkpoint carries

* ``kind``: what it holds (``"refactor"``: RefactorNet stage 1; ``"detector"``; ``"detector-training-state"``),
* ``format_version``: the layout version of that kind,

next to the kind's own entries (config, feature layout, classes, history, ``state_dict``...).
Checkpoints are written atomically: a file that exists is whole.

RefactorNet checkpoints written before kinds existed carry no ``kind``; :func:`load_checkpoint`
accepts them where the caller names ``legacy_kindless``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.fileio import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_kind", "rebuild_model"]


def save_checkpoint(path: str | os.PathLike, kind: str, format_version: int, payload: dict) -> Path:
    """Write ``{"kind": kind, "format_version": format_version, **payload}`` atomically to ``path``."""
    import torch

    path = Path(path)
    reserved = {"kind", "format_version"} & set(payload)
    if reserved:
        raise ValueError(f"payload must not set {sorted(reserved)}")
    with atomic_path(path) as tmp:
        torch.save({"kind": kind, "format_version": format_version, **payload}, tmp)
    return path


def _read(path: Path, error: type[Exception], what: str, map_location) -> dict:
    import torch

    if not path.is_file():
        raise error(f"no such {what}: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear error
        raise error(f"{path} is not a {what} ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise error(f"{path} is not a {what}")
    return data


def load_checkpoint(path: str | os.PathLike, error: type[Exception], what: str, map_location="cpu", *,
                    kind: str | None = None, format_version: int | None = None,
                    legacy_kindless: bool = False) -> dict:
    """Read a checkpoint dict; every failure becomes one line: ``error(f"no such {what}: …")`` or
    ``error(f"… is not a {what} …")``.

    Args:
        error: the exception type raised (the caller's package error).
        what: what the file should be, for messages ("detector checkpoint").
        kind, format_version: when given, the checkpoint must carry them.
        legacy_kindless: accept a checkpoint without ``kind`` (written before kinds existed) as
            being of ``kind``.
    """
    path = Path(path)
    data = _read(path, error, what, map_location)
    if kind is not None:
        found = data.get("kind", kind if legacy_kindless else None)
        if found != kind:
            raise error(f"{path} is not a {what} (its kind is {found!r}, expected {kind!r})")
    if format_version is not None and data.get("format_version") != format_version:
        raise error(f"{path} is not a {what} of format {format_version} "
                    f"(it has format {data.get('format_version')!r})")
    return data


def rebuild_model(path: str | os.PathLike, ckpt: dict, build: Callable[[dict], Any], error: type[Exception],
                  what: str) -> Any:
    """``build(ckpt)`` (a ``torch.nn.Module``) with ``ckpt["state_dict"]`` loaded strictly. A damaged or
    hand-edited checkpoint (an entry missing, of the wrong type, a tensor of the wrong shape) raises
    ``error(f"{path} is not a {what} (<exception type>: <its first line>)")``: one line, never
    ``load_state_dict``'s multi-line report."""
    try:
        model = build(ckpt)
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise error(f"{path} is not a {what} ({type(exc).__name__}: {detail})") from exc
    return model


def checkpoint_kind(path: str | os.PathLike, error: type[Exception], what: str = "checkpoint") -> str | None:
    """The ``kind`` of a checkpoint (None for one written before kinds existed)."""
    kind = _read(Path(path), error, what, "cpu").get("kind")
    return kind if isinstance(kind, str) else None
