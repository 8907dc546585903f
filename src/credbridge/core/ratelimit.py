"""Per-identity token buckets: a runaway client cannot turn the read endpoint into a decryption loop.

Every read through the workload endpoint costs a SubjectAccessReview on the API server and an
AES-GCM open with the keyring. A Pod stuck in a restart loop, or a script polling in a tight loop,
should slow down only itself: each identity (a ServiceAccount's user name) has its own bucket of
`burst` reads that refills at `rate` reads per second. An empty bucket answers how long to wait,
which the endpoint sends as `Retry-After`.

The clock is a parameter (`now`, in seconds on any monotonic scale), so the behaviour is tested
without sleeping. The number of buckets is bounded: when full, the identity seen least recently
is forgotten (it comes back with a full bucket, which is what it would have after a pause anyway).
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import math


@dataclasses.dataclass
class _Bucket:
    tokens: float
    """Reads this identity may make right now (fractional while refilling)."""
    updated: float
    """`now` of the last refill."""


class RateLimiter:
    """Token buckets by identity. Not thread-safe: the endpoint calls it from its one event loop."""

    def __init__(self, rate: float, burst: int, *, max_identities: int = 10_000) -> None:
        """`rate` reads per second refill each bucket up to `burst`; at most `max_identities` buckets are kept."""
        if rate <= 0 or burst < 1 or max_identities < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_identities >= 1")
        self.rate = rate
        self.burst = burst
        self.max_identities = max_identities
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()

    def take(self, identity: str, now: float) -> float:
        """Takes one read from `identity`'s bucket: 0.0 when allowed, else the seconds until one is available."""
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
            self._buckets[identity] = bucket
            while len(self._buckets) > self.max_identities:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(identity)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """`Retry-After` is whole seconds: round up, and never say 0 to a client that was refused."""
    return str(max(1, math.ceil(seconds)))


class Pacer:
    """A global pace for work that many keys want at once: starts at least `1 / rate` seconds apart.

    Verification checks of a thousand Credentials may come due in the same second (a restart of a
    cluster, a new type). Each key that may not start yet gets its own slot in a line and is told
    how long to wait, so the keys wake one by one instead of all retrying together. When a key
    comes back it starts only if its slot has come *and* the last start is `1 / rate` ago: the
    pace holds when work starts, not only when it was planned. A key whose slot passed while the
    last start is too recent (it woke a little early relative to the one before, or a stall of a
    busy machine let several slots pass) takes the next place in a front line, spaced like the
    main one, ahead of the keys still waiting for their first slot.

    In any window of W seconds at most `1 + W * rate` starts happen, besides `start_now`.
    Not thread-safe: the caller holds a lock. `now` is monotonic seconds.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.spacing = 1.0 / rate
        self._last_start = -math.inf
        self._next_free = -math.inf
        """The first slot of the main line nobody holds."""
        self._front = -math.inf
        """The last slot given in the front line."""
        self._slots: dict[collections.abc.Hashable, float] = {}

    def take(self, key: collections.abc.Hashable, now: float) -> float:
        """0.0 when `key` may start now (the start is recorded); else the seconds until it may try again."""
        slot = self._slots.get(key)
        if slot is None:
            slot = max(now, self._next_free, self._last_start + self.spacing)
            self._next_free = slot + self.spacing
            self._slots[key] = slot
        if slot > now:
            return slot - now
        earliest = self._last_start + self.spacing
        if now < earliest - self.spacing * (1.0 - _SPACING_TOLERANCE):
            if now - slot < self.spacing:
                return earliest - now  # woke a little before the previous start's spacing ran out
            self._front = max(self._front + self.spacing, earliest)
            self._slots[key] = self._front
            return self._front - now
        del self._slots[key]
        self._last_start = now
        return 0.0

    def start_now(self, now: float) -> None:
        """Records a start that does not wait its turn (a check a user asked for)."""
        self._last_start = max(self._last_start, now)

    def forget(self, key: collections.abc.Hashable) -> None:
        """`key` does not need its slot any more (it was deleted, or its work happened another way)."""
        self._slots.pop(key, None)

    def waiting(self) -> int:
        """Keys holding a slot."""
        return len(self._slots)


_SPACING_TOLERANCE = 0.999
"""A start this fraction of the spacing after the last one is on time (float rounding of slot times)."""
