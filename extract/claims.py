"""Claim files: several extraction processes share one output folder with no coordinator.

Before a process decodes a video it claims the video's output ``<out>/<video_id>.h5`` by creating
``<out>/.<video_id>.h5.claim`` with ``O_CREAT | O_EXCL`` (exactly one creator wins, on a local disk
and on NFSv3+). The claim holds one JSON line: the owner's host, pid, a token unique to the claim,
and a heartbeat time (seconds since the epoch) that a background thread of the owner rewrites in
place every ``heartbeat`` seconds while the video is processed. Another process treats a claim as
live (and skips the video) unless its owner is dead:

* same host and the owner's pid is not running (found at once), or
* the heartbeat (the later of the recorded time and the file's modification time) is older than
  ``timeout`` seconds (any host: a process on another machine sharing the disk, or a hung one).

A dead owner's claim is taken over under a lock file ``<claim>.takeover`` (``O_EXCL``: one taker
at a time): checked to be still the very claim found stale, removed, and claimed afresh with
``O_EXCL`` (a process that finds the claim gone meanwhile may win instead; never both).
Claims are removed when their video is finished or abandoned, and all of a process's claims when
:class:`ClaimSet` closes (``with`` block: on exceptions too; SIGTERM is turned into SystemExit
while the set is open in the main thread). A process killed with SIGKILL leaves its claims; they
are taken over as above, and removed where the output was already finished (:meth:`ClaimSet.clear_stale`).
Clocks of machines sharing a disk must agree to well within ``timeout``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLAIM_SUFFIX", "ClaimInfo", "ClaimSet", "claim_path", "read_claim", "claim_is_live", "pid_alive"]

CLAIM_SUFFIX = ".claim"
_RECORD_WIDTH = 256   # claims are rewritten in place at one fixed length: a reader never sees a shorter tail


def claim_path(dest: str | os.PathLike) -> Path:
    """The claim file of output ``dest``: ``.<name>.claim`` beside it (hidden, like temporary files)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}{CLAIM_SUFFIX}")


@dataclass(frozen=True)
class ClaimInfo:
    """A claim as read from disk. ``host``/``pid``/``token`` are None for an unreadable (just created,
    or foreign) file; ``heartbeat`` (s since the epoch) is then the file's modification time."""

    host: str | None
    pid: int | None
    token: str | None
    heartbeat: float
    raw: bytes


def read_claim(path: str | os.PathLike) -> ClaimInfo | None:
    """The claim at ``path``, or None if there is none."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        record = json.loads(raw.decode())
        return ClaimInfo(str(record["host"]), int(record["pid"]), str(record["token"]),
                         max(float(record["heartbeat"]), mtime), raw)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return ClaimInfo(None, None, None, mtime, raw)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # exists, owned by someone else
        return True
    return True


def claim_is_live(info: ClaimInfo, timeout: float, *, now: float | None = None, host: str | None = None) -> bool:
    """Whether the claim's owner may still be working: its heartbeat is at most ``timeout`` s old and,
    if it ran on this ``host`` (default: this machine), its pid is running."""
    now = time.time() if now is None else now
    if now - info.heartbeat > timeout:
        return False
    host = socket.gethostname() if host is None else host
    return not (info.host == host and info.pid is not None and not pid_alive(info.pid))


class ClaimSet:
    """The claims one process holds in one folder, kept alive by a heartbeat thread.

    Args:
        heartbeat: seconds between refreshes of every held claim.
        timeout: a claim whose heartbeat is older than this is stale (must exceed ``heartbeat``
            by a safe margin: at least twice it).

    Use as a context manager; :meth:`close` releases every claim still held.
    """

    def __init__(self, heartbeat: float = 10.0, timeout: float = 60.0):
        if not (heartbeat > 0 and timeout >= 2 * heartbeat):
            raise ValueError(f"claim heartbeat must be > 0 and timeout >= 2 x heartbeat, got {heartbeat}, {timeout}")
        self.heartbeat, self.timeout = heartbeat, timeout
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._held: dict[Path, tuple[int, str]] = {}     # claim path -> (open fd, token)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._old_sigterm = None

    # -- lifetime ---------------------------------------------------------------------------------------
    def __enter__(self) -> ClaimSet:
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
        self._thread.start()
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for path in list(self._held):
            self.release(path)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                for fd, token in self._held.values():
                    with contextlib.suppress(OSError):
                        os.pwrite(fd, self._record(token), 0)

    def _record(self, token: str) -> bytes:
        line = json.dumps({"host": self.host, "pid": self.pid, "token": token, "heartbeat": round(time.time(), 3)})
        return (line + "\n").ljust(_RECORD_WIDTH).encode()

    # -- claims -----------------------------------------------------------------------------------------
    def holds(self, dest: str | os.PathLike) -> bool:
        return claim_path(dest) in self._held

    def state(self, dest: str | os.PathLike) -> str:
        """``"free"`` (no claim), ``"live"`` (claimed by a live process) or ``"stale"`` (its owner died)."""
        info = read_claim(claim_path(dest))
        if info is None:
            return "free"
        return "live" if claim_is_live(info, self.timeout, host=self.host) else "stale"

    def acquire(self, dest: str | os.PathLike) -> str | None:
        """Claim output ``dest``: ``"new"`` (it was free), ``"taken over"`` (its owner had died), or None
        (a live process holds it, or another process won the race)."""
        path = claim_path(dest)
        if path in self._held:
            return "new"
        if self._create(path):
            return "new"
        info = read_claim(path)
        if info is None:                                   # released between our two looks
            return "new" if self._create(path) else None
        if claim_is_live(info, self.timeout, host=self.host):
            return None
        return "taken over" if self._take_over(path, info) else None

    def clear_stale(self, dest: str | os.PathLike) -> bool:
        """Remove the claim of ``dest`` if its owner died: a process killed with SIGKILL between writing
        ``dest`` and releasing its claim leaves the claim beside a finished output, where no one would take
        it over. Taken over as any stale claim (:meth:`acquire`), then released. Returns whether a claim
        was removed; a live claim, or none, is left as it is."""
        if self.state(dest) != "stale" or self.acquire(dest) is None:
            return False
        self.release(dest)
        return True

    def _take_over(self, path: Path, stale: ClaimInfo) -> bool:
        """Replace the stale claim ``stale`` at ``path`` by ours, under the short-lived lock file
        ``<claim>.takeover`` (``O_EXCL``: one taker at a time; a lock older than the timeout is a
        taker that died in these few lines, and is removed)."""
        lock = path.with_name(path.name + ".takeover")
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - lock.stat().st_mtime > self.timeout:
                    lock.unlink()
            return False
        try:
            now = read_claim(path)
            if now is None or now.raw != stale.raw or claim_is_live(now, self.timeout, host=self.host):
                return False          # another taker finished first, or its owner came back
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return self._create(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()

    def _create(self, path: Path) -> bool:
        token = uuid.uuid4().hex
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        try:
            os.pwrite(fd, self._record(token), 0)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        with self._lock:
            self._held[path] = (fd, token)
        return True

    def release(self, dest_or_claim: str | os.PathLike) -> None:
        """Give up a claim (its file is removed if it is still ours); a no-op for claims not held."""
        path = Path(dest_or_claim)
        if not path.name.endswith(CLAIM_SUFFIX):
            path = claim_path(path)
        with self._lock:
            held = self._held.pop(path, None)
        if held is None:
            return
        fd, token = held
        with contextlib.suppress(OSError):
            os.close(fd)
        info = read_claim(path)
        if info is not None and info.token == token:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _sigterm_to_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)
