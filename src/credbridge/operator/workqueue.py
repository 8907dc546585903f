"""A deduplicating work queue with per-key serialization and retry backoff.

Watch events, referenced-Secret changes, type changes and key rotation all ask for "reconcile
this Credential"; many asks for the same key collapse into one run, and one key never runs in two
workers at once — the model of controller-runtime's workqueue, which keeps a level-based
reconciler simple.
"""

from __future__ import annotations

import collections
import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)


class WorkQueue(Generic[Key]):
    """Runs `handler(key)` for added keys on `workers` threads; re-adds a key after an error with backoff."""

    def __init__(
        self,
        handler: Callable[[Key], None],
        *,
        workers: int = 4,
        name: str = "reconcile",
        max_backoff: float = 60.0,
    ) -> None:
        self._handler = handler
        self._name = name
        self._max_backoff = max_backoff
        self._lock = threading.Condition()
        self._ready: collections.deque[Key] = collections.deque()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._delayed: list[tuple[float, int, Key]] = []
        self._failures: dict[Key, int] = {}
        self._counter = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True) for index in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    def add(self, key: Key) -> None:
        """Ask for `key` to be handled; a key already waiting is not queued twice."""
        with self._lock:
            self._enqueue(key)
            self._lock.notify()

    def add_after(self, key: Key, delay: float) -> None:
        """Ask for `key` to be handled in `delay` seconds."""
        with self._lock:
            self._counter += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay, self._counter, key))
            self._lock.notify()

    def pending(self) -> int:
        """How many keys wait or run right now (for metrics and tests)."""
        with self._lock:
            return len(self._queued) + len(self._running) + len(self._delayed)

    def _enqueue(self, key: Key) -> None:
        """Queue `key` once; a running key is marked to run again when it finishes. Hold the lock."""
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)

    def _next(self) -> Key | None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, key = heapq.heappop(self._delayed)
                    self._enqueue(key)
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._running.add(key)
                    return key
                timeout = self._delayed[0][0] - now if self._delayed else None
                self._lock.wait(timeout)
            return None

    def _work(self) -> None:
        while (key := self._next()) is not None:
            failed = False
            try:
                self._handler(key)
            except Exception as error:
                failed = True
                # The exception's type and HTTP status only: messages of library errors may quote bodies.
                status = getattr(error, "status", None)
                detail = f" (HTTP {status} {getattr(error, 'reason', '')})" if status else ""
                logger.warning("%s of %s failed with %s%s; retrying", self._name, key, type(error).__name__, detail)
            with self._lock:
                self._running.discard(key)
                if failed:
                    count = self._failures.get(key, 0) + 1
                    self._failures[key] = count
                    self._counter += 1
                    delay = min(self._max_backoff, 0.5 * 2.0 ** min(count - 1, 32))  # capped: no overflow
                    heapq.heappush(self._delayed, (time.monotonic() + delay, self._counter, key))
                else:
                    self._failures.pop(key, None)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self._enqueue(key)
                self._lock.notify_all()
