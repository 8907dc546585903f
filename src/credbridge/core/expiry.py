"""Credential expiry in cert-manager's shape: when a credential runs out, and reminders before it does.

Keys and tokens expire (GitHub fine-grained tokens within a year, cloud keys by policy), and
Flowise users learn it when a flow fails. A Credential can say when it expires
(`spec.expiresAt`, set by whoever issued it) and a check can discover it (GitHub's
`GitHub-Authentication-Token-Expiration` header, kept in `status.discoveredExpiresAt`). The
earlier of the two is `status.expiresAt`. From it and `spec.remindBefore` (default 14 days):

- `ExpiringSoon=True` from `expiresAt - remindBefore` until `expiresAt`, else False;
- `Expired=True` from `expiresAt` on, else False;
- both conditions are absent while no expiry is known;
- a Warning Event when either turns True;
- `next_transition`: the next time one of them changes, so the controller can look again then
  (and at no other time) instead of polling.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import re
import typing

from credbridge.core import conditions, planning, verification

Json = dict[str, typing.Any]
Status = collections.abc.Mapping[str, typing.Any]

EXPIRING_SOON = "ExpiringSoon"
EXPIRED = "Expired"
DEFAULT_REMIND_BEFORE = datetime.timedelta(days=14)
"""How long before expiry `ExpiringSoon` turns True when `spec.remindBefore` is not set."""

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
DURATION_PATTERN = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
"""The CRD's pattern for `spec.remindBefore` (`14d`, `36h`, `1d12h`, `90m`)."""


def parse_duration(text: str) -> datetime.timedelta | None:
    """A duration written as days, hours, minutes and seconds (`14d`, `1d12h`, `90m`); None if malformed."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        return None
    days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


@dataclasses.dataclass(frozen=True)
class ExpiryPlan:
    """What expiry changes on a Credential now."""

    expires_at: str | None
    """`status.expiresAt`: the earlier of spec.expiresAt and the discovered expiry; None when unknown."""
    conditions: tuple[Json, ...]
    """The ExpiringSoon and Expired conditions (empty when no expiry is known)."""
    drop: tuple[str, ...]
    """Condition types to remove (both, when no expiry is known)."""
    events: tuple[planning.Event, ...]
    next_transition: datetime.datetime | None
    """When ExpiringSoon or Expired next changes (requeue then); None when nothing will change."""
    problem: str | None = None
    """A malformed spec.expiresAt or spec.remindBefore, named with the fix (never blocks anything)."""


def _describe(moment: datetime.datetime, now: datetime.datetime) -> str:
    left = moment - now
    if left.total_seconds() <= 0:
        return f"expired at {verification.format_time(moment)}"
    days = left.days
    return (
        f"expires at {verification.format_time(moment)} (in {days} day{'s' if days != 1 else ''})"
        if days
        else (f"expires at {verification.format_time(moment)} (in less than a day)")
    )


def plan_expiry(
    *,
    spec: collections.abc.Mapping[str, typing.Any],
    previous: Status,
    discovered_expires_at: str | None,
    now: datetime.datetime,
    generation: int,
    where: str,
) -> ExpiryPlan:
    """The expiry status of a Credential at `now`.

    `spec` is the Credential's spec (`expiresAt`, `remindBefore`), `previous` its status before,
    `discovered_expires_at` the expiry the last check found (`status.discoveredExpiresAt`, or a
    fresh verification plan's), `where` names the Credential for messages.
    """
    problems = []
    declared = verification.parse_time(spec.get("expiresAt"))
    if spec.get("expiresAt") is not None and declared is None:
        problems.append("spec.expiresAt is not an RFC 3339 time such as 2026-01-31T00:00:00Z: correct it")
    remind_text = spec.get("remindBefore")
    remind = DEFAULT_REMIND_BEFORE
    if remind_text is not None:
        parsed = parse_duration(str(remind_text))
        if parsed is None:
            problems.append("spec.remindBefore is not a duration such as 14d, 36h or 1d12h: correct it")
        else:
            remind = parsed
    candidates = [moment for moment in (declared, verification.parse_time(discovered_expires_at)) if moment]
    problem = f"{where}: {'; '.join(problems)}" if problems else None
    if not candidates:
        return ExpiryPlan(None, (), (EXPIRING_SOON, EXPIRED), (), None, problem)
    expires_at = min(candidates)
    remind_from = expires_at - remind
    now_text = verification.format_time(now)
    description = _describe(expires_at, now)
    expired = now >= expires_at
    soon = remind_from <= now < expires_at
    soon_condition = conditions.condition(
        previous,
        EXPIRING_SOON,
        "True" if soon else "False",
        "ExpiringSoon" if soon else ("Expired" if expired else "NotExpiringSoon"),
        f"the credential {description}" + ("; renew it and update the Credential" if soon else ""),
        now_text,
        generation,
    )
    expired_condition = conditions.condition(
        previous,
        EXPIRED,
        "True" if expired else "False",
        "Expired" if expired else "NotExpired",
        f"the credential {description}" + ("; issue a new one and update the Credential" if expired else ""),
        now_text,
        generation,
    )
    events = []
    old_soon = conditions.find(previous, EXPIRING_SOON)
    old_expired = conditions.find(previous, EXPIRED)
    if soon and (old_soon is None or old_soon.get("status") != "True"):
        events.append(planning.Event("Warning", EXPIRING_SOON, f"{where}: {soon_condition['message']}"))
    if expired and (old_expired is None or old_expired.get("status") != "True"):
        events.append(planning.Event("Warning", EXPIRED, f"{where}: {expired_condition['message']}"))
    next_transition = remind_from if now < remind_from else (expires_at if now < expires_at else None)
    return ExpiryPlan(
        verification.format_time(expires_at),
        (soon_condition, expired_condition),
        (),
        tuple(events),
        next_transition,
        problem,
    )
