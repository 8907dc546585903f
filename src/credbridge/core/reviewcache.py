"""A short-lived memory of TokenReview answers, so a burst of reads does not become a burst of reviews.

A workload that reads five bindings at start, or a sidecar that polls, presents the same token
again and again. Asking the API server to review it every time would put the endpoint's load on the
API server one for one. So answers are remembered, keyed by a SHA-256 of the token (never the
token itself, so a heap dump of the cache holds no credential), for a short time:

- at most `ttl` seconds (default 10 s), so a deleted ServiceAccount or a revoked token is refused
  again within that time;
- never past the token's own `exp` claim, so an expired token is not accepted from memory;
- refusals are remembered too (same `ttl`), so a client retrying a bad token in a loop costs one
  review per `ttl`, not one per request. Failures to reach the API server are not remembered.

Authorization (SubjectAccessReview) is never cached: a revoked `use` grant takes effect at once.

The clock is a parameter (`now`: seconds since the epoch, as the `exp` claim counts), and the
number of entries is bounded (least recently used entries go first).
"""

from __future__ import annotations

import base64
import binascii
import collections
import collections.abc
import dataclasses
import hashlib
import json


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a token belongs to, as TokenReview says: what SubjectAccessReview needs to ask about them."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: collections.abc.Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TokenReview:
    """The API server's answer about one token."""

    authenticated: bool
    identity: Identity | None = None
    audiences: tuple[str, ...] = ()
    """The audiences the API server validated the token for (the intersection with the ones asked)."""
    error: str = ""
    """The API server's reason for refusing the token (it never quotes the token)."""


def token_key(token: str) -> str:
    """The cache key of a token: its SHA-256, so the token itself is never stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (seconds since the epoch), read without checking the signature.

    Only used to bound how long an answer the API server gave about this very token is kept;
    None when the token is not a JWT with a numeric `exp`.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(expiry, bool) or not isinstance(expiry, int | float):
        return None
    return float(expiry)


class ReviewCache:
    """TokenReview answers by token hash, each until min(now + ttl, the token's exp). Not thread-safe."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        """Keeps an answer at most `ttl` seconds (0 turns caching off), and at most `max_entries` answers."""
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, tuple[float, TokenReview]] = collections.OrderedDict()

    def get(self, key: str, now: float) -> TokenReview | None:
        """The remembered answer for the token with this key, or None when there is none (or it expired)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, review = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return review

    def put(self, key: str, review: TokenReview, now: float, token_expires: float | None) -> None:
        """Remembers `review` for at most `ttl` seconds, and not past `token_expires` when known."""
        expires = now + self.ttl
        if token_expires is not None:
            expires = min(expires, token_expires)
        if expires <= now or self.max_entries < 1:
            return
        self._entries[key] = (expires, review)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
