"""A background thread that runs an iterator a bounded number of items ahead of its consumer
(decoding overlaps with the model; memory stays bounded)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

__all__ = ["Prefetcher"]


class Prefetcher:
    """Runs an iterator in a daemon thread from construction on, ``size`` items ahead.

    Iterating yields its items in order and re-raises its exception, if any; :meth:`close`
    stops the thread (it finishes the item in hand) and drops what is queued.
    """

    def __init__(self, iterator: Iterator, size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iterator,), daemon=True, name="extract-decode")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, iterator: Iterator) -> None:
        try:
            for item in iterator:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(("error", exc))

    def __iter__(self) -> Iterator:
        try:
            while True:
                kind, payload = self._queue.get()
                if kind == "item":
                    yield payload
                elif kind == "error":
                    raise payload
                else:
                    return
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=10)
