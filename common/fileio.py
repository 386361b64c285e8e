"""Atomic file writing, hashing and the cache folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TMP_MARK", "append_line", "atomic_path", "cache_dir", "remove_stale_temporaries", "sha256_file"]

TMP_MARK = ".partial-"


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` for ``path`` left by processes of this machine
    that no longer run (a writer killed with SIGKILL cannot clean up); those of live processes stay.

    Returns:
        the files removed.
    """
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{path.name}{TMP_MARK}*"):
        try:
            pid = int(stale.name.rsplit("-", 1)[-1])
        except ValueError:
            continue                          # not one of ours
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue                          # still running: leave it alone
        except ProcessLookupError:
            pass
        except PermissionError:
            continue                          # alive, another user's
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, clean_stale: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name is hidden (leading dot) and carries the process id, so concurrent writers
    never collide and a crash leaves no file under the final name. On any exception the
    temporary file is removed and the exception propagates. ``clean_stale`` first removes the
    temporary files that killed writers of ``path`` on this machine left
    (:func:`remove_stale_temporaries`); writers that share a folder across machines coordinate
    that themselves (extraction's claims) and pass False.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale_temporaries(path)
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


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (a newline is added) and fsync, so a record is either wholly in the file or absent
    when the process is killed (readers skip a last line without its newline)."""
    if "\n" in line:
        raise ValueError("append_line takes a single line")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
