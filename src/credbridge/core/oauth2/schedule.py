"""When to refresh an access token, and how long to wait after a failed attempt.

A token is refreshed once a share of its lifetime has passed (75 % by default), a little earlier
by a jitter so that a thousand Credentials authorized in the same minute do not refresh in the
same second. The jitter is a number in [0, 1) passed in; `stable_jitter` derives it from the
Credential and the token's received time, so an operator restarted, or a standby taking over,
computes exactly the same time — no extra refresh because a process started again.

After a failure the wait grows exponentially up to a maximum, and never undercuts the provider's
`Retry-After`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

from credbridge.core.oauth2 import tokens


@dataclasses.dataclass(frozen=True)
class RefreshPolicy:
    """How the operator schedules refreshes and retries (`credbridge run --oauth2-*`)."""

    refresh_share: float = 0.75
    """Share of an access token's lifetime after which it is refreshed (0.75: a one-hour token is
    refreshed after 45 minutes, leaving 15 minutes for retries before it expires)."""
    jitter_share: float = 0.05
    """Up to this share of the lifetime earlier, spread by the jitter, so refreshes do not bunch up."""
    assumed_lifetime: float = 3600.0
    """Seconds assumed for a token whose received time is unknown (imported, or written by hand)."""
    min_interval: float = 5.0
    """Seconds between a token and the next refresh at least, whatever the lifetime: a provider that
    hands out tokens valid for a second cannot make credbridge loop."""
    backoff_initial: float = 5.0
    """Seconds before the first retry after a transient failure; doubled after each further failure."""
    backoff_max: float = 600.0
    """Longest wait between retries, in seconds; also the wait after a refused client (a wrong client
    secret), which no quick retry can fix."""
    retry_after_max: float = 3600.0
    """Longest `Retry-After` honoured, in seconds: a provider cannot park a Credential for a day."""

    def __post_init__(self) -> None:
        if not 0.0 < self.refresh_share < 1.0:
            raise ValueError("the OAuth2 refresh share must be between 0 and 1 (exclusive), such as 0.75")
        if not 0.0 <= self.jitter_share < self.refresh_share:
            raise ValueError("the OAuth2 refresh jitter share must be at least 0 and below the refresh share")
        if self.min_interval <= 0 or self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("OAuth2 refresh intervals must be positive, and the maximum backoff at least the initial")


def stable_jitter(*parts: str) -> float:
    """A number in [0, 1) fixed by `parts` (e.g. the Credential's uid and the token's received time)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def refresh_at(
    stored: tokens.StoredTokens, policy: RefreshPolicy, jitter: float, now: datetime.datetime
) -> datetime.datetime | None:
    """When the stored access token should be refreshed: `now` when there is none or its expiry is
    unreadable, None when it never expires, else the policy's share of its lifetime (minus jitter)."""
    if stored.access_token is None:
        return now
    if not stored.expires_at_given:
        return None
    if stored.expires_at is None:
        return now
    expires = stored.expires_at
    received = stored.received_at
    if received is None or received >= expires:
        lifetime = policy.assumed_lifetime
        received = expires - datetime.timedelta(seconds=lifetime)
    else:
        lifetime = (expires - received).total_seconds()
    share = policy.refresh_share - policy.jitter_share * min(max(jitter, 0.0), 1.0)
    planned = received + datetime.timedelta(seconds=lifetime * share)
    earliest = received + datetime.timedelta(seconds=policy.min_interval)
    return max(planned, earliest)


def retry_delay(failures: int, policy: RefreshPolicy, jitter: float, retry_after: float | None = None) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1 for the first).

    Exponential from `backoff_initial` up to `backoff_max`, spread over its upper half by the
    jitter, and never shorter than the provider's Retry-After (capped at `retry_after_max`).
    """
    base = min(policy.backoff_max, policy.backoff_initial * 2.0 ** max(0, failures - 1))
    delay = base / 2 + base / 2 * min(max(jitter, 0.0), 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.retry_after_max))
    return delay
