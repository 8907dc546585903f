"""A deduplicating work queue with per-key serialization, delays and retry backoff.

Watch events, referenced-Secret changes, type changes, key rotation and periodic resyncs all ask
for "reconcile this key"; many asks for the same key collapse into one run, and one key never
runs in two workers at once — the model of client-go's workqueue, which keeps a level-based
reconciler simple.

The state, and how a key moves through it (every move happens under `_lock`):
- `_ready` is the FIFO of keys waiting for a worker; `_queued` is the same keys as a set. A key is
  in both or in neither, and at most once.
- `_running` holds the keys a worker is handling now. A key is never in `_running` and `_queued`
  at once: `add` of a running key marks it `_dirty` instead, and when its run ends a dirty key is
  queued again (so a change that arrived during a run is never lost, and never runs in parallel).
- `_delayed` is a heap of (due time, sequence, key) for `add_after`, a requeue a reconcile asked
  for, and retries. Due entries move to `_ready` through the same dedup as `add`; a key may sit in
  `_delayed` several times (the earliest wins, the later ones collapse into it or run it again —
  both harmless for a level-based reconcile).
- `_failures` counts consecutive failed runs per key; the backoff doubles with each (capped at
  `max_backoff`) and resets after a run that did not ask for a retry.

A run ends with the handler's `Result` (see `reconciling`): `retry` → back after the backoff;
`requeue_after` → back after that delay; otherwise the key leaves until the next `add`. An
exception counts as a retry.

A queue given a `gate` hands out no key while the gate is closed (a replica kopf paused, see
`activity`); keys keep collecting, deduplicated, and run once it opens.

`stop` drains: no key is handed out after it, the runs in progress finish (up to `drain_timeout`
seconds), and keys still waiting are dropped — a restarted operator queues every object again.
"""

from __future__ import annotations

import collections
import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from credbridge.operator import metrics, reconciling

logger = logging.getLogger(__name__)

Key = TypeVar("Key", bound=Hashable)

Handler = Callable[[Key], "reconciling.Result | None"]

GATE_POLL_SECONDS = 1.0
"""How often a worker looks at a closed gate again."""


class WorkQueue(Generic[Key]):
    """Runs `handler(key)` for added keys on `workers` threads, following the Result each run returns."""

    def __init__(
        self,
        handler: Handler[Key],
        *,
        workers: int = 4,
        name: str = "reconcile",
        max_backoff: float = 60.0,
        base_backoff: float = 0.5,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self._handler = handler
        self._gate = gate
        self.name = name
        self._max_backoff = max_backoff
        self._base_backoff = base_backoff
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
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True) for index in range(max(1, workers))
        ]
        metrics.QUEUES.register(self)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Hand out no more keys; wait up to `drain_timeout` seconds for the runs in progress to finish."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        deadline = time.monotonic() + drain_timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            unfinished = sorted(map(str, self._running))
        if unfinished:
            logger.warning("%s queue stopped with %d run(s) unfinished: %s", self.name, len(unfinished), unfinished[:5])
        metrics.QUEUES.unregister(self)

    def add(self, key: Key) -> None:
        """Ask for `key` to be handled; a key already waiting is not queued twice."""
        with self._lock:
            self._enqueue(key)
            self._lock.notify()

    def add_after(self, key: Key, delay: float) -> None:
        """Ask for `key` to be handled in `delay` seconds."""
        with self._lock:
            self._push_delayed(key, delay)
            self._lock.notify()

    def pending(self) -> int:
        """How many keys wait or run right now (for metrics and tests)."""
        with self._lock:
            return len(self._queued) + len(self._running) + len(self._delayed)

    def waiting(self) -> set[Key]:
        """The keys waiting for a worker or a delay now (a snapshot, for tests and diagnostics)."""
        with self._lock:
            return set(self._queued) | {key for _, _, key in self._delayed}

    def depth(self) -> int:
        """How many keys wait for a worker now (the queue-depth metric)."""
        with self._lock:
            return len(self._queued)

    def _push_delayed(self, key: Key, delay: float) -> None:
        self._counter += 1
        heapq.heappush(self._delayed, (time.monotonic() + delay, self._counter, key))

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
                if self._ready and self._gate is not None and not self._gate():
                    self._lock.wait(GATE_POLL_SECONDS)
                    continue
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
            result: reconciling.Result | None = None
            try:
                result = self._handler(key)
            except Exception as error:
                result = reconciling.Result.retry_later("error")
                # The exception's type and HTTP status only: messages of library errors may quote bodies.
                status = getattr(error, "status", None)
                detail = f" (HTTP {status} {getattr(error, 'reason', '')})" if status else ""
                logger.warning("%s of %s failed with %s%s; retrying", self.name, key, type(error).__name__, detail)
            with self._lock:
                self._finish(key, result)

    def _finish(self, key: Key, result: reconciling.Result | None) -> None:
        """Move a key out of `_running` as its Result says. Hold the lock."""
        self._running.discard(key)
        if result is not None and result.retry:
            count = self._failures.get(key, 0) + 1
            self._failures[key] = count
            delay = min(self._max_backoff, self._base_backoff * 2.0 ** min(count - 1, 32))  # capped: no overflow
            self._push_delayed(key, delay)
        else:
            self._failures.pop(key, None)
            if result is not None and result.requeue_after is not None:
                self._push_delayed(key, result.requeue_after)
        if key in self._dirty:
            self._dirty.discard(key)
            self._enqueue(key)
        self._lock.notify_all()
