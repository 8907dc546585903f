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
