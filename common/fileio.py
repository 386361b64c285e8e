"""Atomic file writing, hashing and the cache folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "sha256_file", "cache_dir", "load_checkpoint", "TMP_MARK"]

TMP_MARK = ".partial-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name is hidden (leading dot) and carries the process id, so concurrent writers
    never collide and a crash leaves no file under the final name. On any exception the
    temporary file is removed and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """The project's cache folder: ``$REFACTORNET_CACHE``, else ``$XDG_CACHE_HOME/refactornet``,
    else ``~/.cache/refactornet``. Created on demand by the writers, never inside the repository."""
    env = os.environ.get("REFACTORNET_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base).expanduser() / "refactornet").resolve()


def load_checkpoint(path: str | os.PathLike, error: type[Exception], what: str, map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)`` of a checkpoint dict, every failure turned into one
    line: ``error(f"no such {what}: …")`` or ``error(f"… is not a {what} (…)")``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"no such {what}: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear error
        raise error(f"{path} is not a {what} ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise error(f"{path} is not a {what}")
    return data
