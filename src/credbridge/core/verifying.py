"""One pass of the verification consumer as pure steps: when a check is due, what a pass writes, what a mirror shows.

`core.verification` says what one check found and `core.expiry` what a known expiry means; this
module decides around them, from the Credential's status alone, so that a restarted operator
reaches the same decisions as the one before it and writes nothing when nothing changed:

- `next_check`: whether a check is due now, or when it will be. Status fields are the memory:
  `lastVerifiedTime` against `updatedDate` (the content changed since the last check: check it,
  `debounce` seconds after the change, so a burst of edits costs one check), the
  `credbridge.io/verify-requested` annotation against `lastVerifyRequest` (asked for now), and
  `lastVerifiedTime + interval` moved by a jitter derived from the Credential's uid (periodic;
  the same Credential keeps its place after a restart, and ten thousand Credentials created
  together do not come due together). Outcomes that sent nothing (`NotReleased`,
  `NotVerifiable` of a type without a check) are not repeated periodically: they are judged
  again when what decided them changes.
- `status_patch`: the merge patch that writes a pass's `Verified` condition and status fields
  and the expiry (`ExpiringSoon`, `Expired`, `status.expiresAt`), merged into the conditions the
  other writers own (`core.conditions.merge`); None when nothing differs.
- `plan_mirror`: a mirror is verified once, at its source. It shows the source's outcome (status,
  reason and time of the check, with a message that points at the source and carries none of
  its details: a host name of the source's check is the source's business) and the source's
  expiry, and never sends anything itself.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import hashlib
import hmac
import json
import typing

from credbridge.core import conditions, expiry, lint, planning, verification

Json = dict[str, typing.Any]
Status = collections.abc.Mapping[str, typing.Any]
Outcome = verification.Outcome

REQUESTED = "requested"
"""`credbridge verify` (the annotation) asked for a check."""
NEW = "new"
"""The Credential was never checked."""
CHANGED = "changed"
"""Its content changed since the last check."""
REJUDGED = "rejudged"
"""What decided an outcome that sent nothing changed (a grant, the type's check)."""
PERIODIC = "periodic"
"""The interval since the last check passed."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When checks run (VerificationSettings)."""

    interval: float
    """Seconds between periodic checks of one Credential; 0: none."""
    jitter: float
    """Fraction of `interval` each Credential's periodic check is moved by (its own, stable)."""
    debounce: float
    """Seconds from a content change to its check."""


@dataclasses.dataclass(frozen=True)
class Due:
    """Whether a check is due: `why` (one of the constants above) and `at` (due now when `at <= now`)."""

    why: str | None
    at: datetime.datetime | None
    """None: not before something changes (an event brings the Credential back)."""

    def now(self, now: datetime.datetime) -> bool:
        return self.why is not None and self.at is not None and self.at <= now


def spread(uid: str, last: datetime.datetime) -> float:
    """A number in [-1, 1] fixed by the Credential and its last check: where in the jitter window its next
    periodic check falls."""
    digest = hashlib.sha256(f"{uid}|{verification.format_time(last)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(2**64 - 1) * 2.0 - 1.0


def last_outcome(status: Status) -> Outcome | None:
    """The outcome of the last check (the Verified condition's reason), or None."""
    reason = conditions.reason(status, verification.VERIFIED)
    for outcome in Outcome:
        if outcome.value == reason:
            return outcome
    return None


def next_check(
    status: Status,
    *,
    uid: str,
    requested: str | None,
    has_check: bool,
    released: bool,
    now: datetime.datetime,
    schedule: Schedule,
    content_unchanged: bool = False,
) -> Due:
    """Whether a Credential with `status` needs a check now, and if not, when.

    `requested`: a pending verify request (verification.verify_requested); `has_check`: its type
    declares one; `released`: the release rule lets its values go to a check; `content_unchanged`:
    the plaintext is known to be what the last check saw although its Secret was written since (a
    key rotation re-encrypts every Secret and moves `updatedDate`, and is not a reason to ask every
    vendor again). Outcomes that never read the content (`NotReleased`, `NotVerifiable` of a type
    without a check) count as unchanged.
    """
    if requested is not None:
        return Due(REQUESTED, now)
    last = verification.parse_time(status.get("lastVerifiedTime"))
    updated = verification.parse_time(status.get("updatedDate"))
    outcome = last_outcome(status)
    debounce = datetime.timedelta(seconds=max(0.0, schedule.debounce))
    if outcome is None or last is None:
        return Due(NEW, updated + debounce if updated is not None else now)
    content_unchanged = (
        content_unchanged or outcome is Outcome.NOT_RELEASED or (outcome is Outcome.NOT_VERIFIABLE and not has_check)
    )
    if updated is not None and updated >= last and not content_unchanged:
        # Same second counts as changed: times have a resolution of one second.
        return Due(CHANGED, updated + debounce)
    if (outcome is Outcome.NOT_RELEASED) == released:
        return Due(REJUDGED, now)  # a grant came, or went
    if not has_check and outcome is not Outcome.NOT_VERIFIABLE:
        return Due(REJUDGED, now)  # the type's check was removed
    if not has_check or outcome is Outcome.NOT_RELEASED or schedule.interval <= 0:
        return Due(None, None)
    stretch = 1.0 + max(0.0, min(schedule.jitter, 1.0)) * spread(uid, last)
    return Due(PERIODIC, last + datetime.timedelta(seconds=schedule.interval * stretch))


def status_patch(
    previous: Status,
    *,
    checked: verification.VerificationPlan | None,
    expiry_plan: expiry.ExpiryPlan,
) -> Json | None:
    """The merge patch writing a finished check (`checked`, or None when none ran) and the expiry into a
    status that other writers share; None when nothing differs."""
    desired: Json = dict(checked.status) if checked is not None else {}
    desired["expiresAt"] = expiry_plan.expires_at
    new = ([checked.condition] if checked is not None else []) + list(expiry_plan.conditions)
    desired["conditions"] = conditions.merge(previous, new, drop=expiry_plan.drop)
    patch = {key: value for key, value in desired.items() if previous.get(key) != value}
    if list(patch) == ["conditions"] and not previous.get("conditions") and not desired["conditions"]:
        return None
    return patch or None


@dataclasses.dataclass(frozen=True)
class MirrorPlan:
    """What a mirror shows of its source's checks."""

    patch: Json | None
    events: tuple[planning.Event, ...]
    next_transition: datetime.datetime | None


def plan_mirror(
    mirror_status: Status,
    *,
    source: str,
    source_spec: collections.abc.Mapping[str, typing.Any],
    source_status: Status,
    now: datetime.datetime,
    generation: int,
    where: str,
) -> MirrorPlan:
    """The mirror's Verified condition, `lastVerifiedTime` and expiry, from its source's (`source`:
    "namespace/name")."""
    found = conditions.find(source_status, verification.VERIFIED)
    outcome = last_outcome(source_status)
    events: list[planning.Event] = []
    checked: verification.VerificationPlan | None = None
    if found is not None and outcome is not None:
        message = f"checked at its source, Credential {source}: {verification.describe(outcome)}"
        condition = conditions.condition(
            mirror_status,
            verification.VERIFIED,
            str(found.get("status")),
            outcome.value,
            message,
            _time(now),
            generation,
        )
        status: Json = {"lastVerifiedTime": source_status.get("lastVerifiedTime")}
        if conditions.reason(mirror_status, verification.VERIFIED) != outcome.value:
            kind = "Normal" if outcome is Outcome.VALID else "Warning"
            events.append(planning.Event(kind, outcome.value, f"{where}: {message}"))
        checked = verification.VerificationPlan(condition, status, None)
    # The source's expiresAt already is the earlier of its spec and what its check discovered.
    expiry_plan = expiry.plan_expiry(
        spec={"expiresAt": source_status.get("expiresAt"), "remindBefore": source_spec.get("remindBefore")},
        previous=mirror_status,
        discovered_expires_at=None,
        now=now,
        generation=generation,
        where=where,
    )
    events.extend(expiry_plan.events)
    return MirrorPlan(
        status_patch(mirror_status, checked=checked, expiry_plan=expiry_plan),
        tuple(events),
        expiry_plan.next_transition,
    )


def _time(now: datetime.datetime) -> str:
    return verification.format_time(now)


LINT_REASON = "ValueWarning"
"""Reason of the Warning Event that reports lint findings about resolved values."""


def lint_event(warnings: collections.abc.Sequence[lint.LintWarning], where: str) -> planning.Event | None:
    """One Warning Event naming every field a lint finding is about (never a value); None without findings."""
    if not warnings:
        return None
    findings = "; ".join(warning.message for warning in warnings)
    return planning.Event("Warning", LINT_REASON, f"{where}: {findings}")


def content_digest(key: bytes, fields: collections.abc.Mapping[str, str]) -> bytes:
    """A keyed digest of a Credential's plaintext, to tell later whether it changed (`key`: the process's own,
    random, never stored: the digest is kept in memory only and is useless without it)."""
    canonical = json.dumps(dict(fields), sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hmac.new(key, canonical, hashlib.sha256).digest()
