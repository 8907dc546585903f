"""A reproducible random source for tests of pure code that takes one (keys, nonces, sealing)."""

from __future__ import annotations

import collections.abc
import hashlib


def deterministic_random(seed: str) -> collections.abc.Callable[[int], bytes]:
    """A stand-in for os.urandom: a SHA-256 stream of the seed and a counter, the same on every run."""
    state = {"counter": 0}

    def random_bytes(length: int) -> bytes:
        out = b""
        while len(out) < length:
            state["counter"] += 1
            out += hashlib.sha256(f"{seed}:{state['counter']}".encode()).digest()
        return out[:length]

    return random_bytes
