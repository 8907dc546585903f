"""The refresh controller's decisions: when to ask the provider, and what to write after it answered.

The operator's token refresh is a consumer like the others (DESIGN §2d) and reads as
gather → plan → apply:

1. gather a `Situation`: the Credential, its grant, the tokens in its token Secret now and that
   Secret's resourceVersion, or the configuration problem that stops everything;
2. `next_attempt(situation, now, policy)`: when to call the provider (a time ≤ now means now,
   None means not until something changes);
3. if it is time: build the request (`provider.refresh_request` or
   `provider.client_credentials_request`) and send it (`credbridge.oauth2client`), which gives an
   `outcomes.Outcome`;
4. `plan(situation, outcome, now, policy)` (outcome None when nothing was sent): the token
   fields to write into the token Secret, the `status.oauth2` block, the `OAuth2Ready` condition,
   an Event when the condition changed, and when to look again;
5. apply: write the token fields first (a rotated refresh token exists nowhere else), then the
   status, then the Event.

Level-based like every planner here: from the same inputs the same plan, so a restarted
operator or a standby that takes over schedules the same next refresh (the jitter is derived from
the Credential and the token, not drawn) and writes nothing when nothing changed.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import typing

from credbridge.core import conditions, planning, redaction, views
from credbridge.core.oauth2 import outcomes, schedule, tokens

Json = dict[str, typing.Any]

OAUTH2_READY = "OAuth2Ready"
"""Condition type on OAuth2 Credentials: True while the Credential holds a usable access token that
credbridge keeps fresh."""
TOKEN_VALID = "TokenValid"
AUTHORIZATION_REQUIRED = "AuthorizationRequired"
"""No refresh token yet: nobody has run `credbridge oauth2 authorize` for this Credential."""
REAUTHORIZATION_REQUIRED = "ReauthorizationRequired"
"""The provider refused the refresh token (`invalid_grant`): only a new authorization helps."""
REFRESH_FAILED = "RefreshFailed"
"""The last token request failed (provider down, throttling, refused client); retries go on."""
NOT_CONFIGURED = "NotConfigured"
"""The Credential's OAuth2 configuration cannot be used (token fields not from a Secret, no token URL...)."""
NOT_RELEASED = "NotReleased"
"""The release rule (core.release) forbids sending the Credential's values to a token endpoint (values from
the operator's environment that are not granted to its namespace, a mirror whose source is out of sight)."""
REASONS = (TOKEN_VALID, AUTHORIZATION_REQUIRED, REAUTHORIZATION_REQUIRED, REFRESH_FAILED, NOT_CONFIGURED, NOT_RELEASED)
"""Every reason of `OAuth2Ready`."""
STATUS_KEY = "oauth2"
"""`status.oauth2` on the Credential: what the refresh controller knows between two runs."""


@dataclasses.dataclass(frozen=True)
class Situation:
    """What the controller gathered about one OAuth2 Credential, besides the clock."""

    credential: views.CredentialView
    grant: str
    """`authorization_code` or `client_credentials` (the type's `oauth2.grant`)."""
    stored: tokens.StoredTokens
    """The tokens in the token Secret now (`store.TokenStore.fields_from` → `StoredTokens.from_fields`)."""
    store_version: str = ""
    """resourceVersion of the token Secret ("" when it does not exist): a new authorization changes it."""
    problem: str | None = None
    """A configuration problem (`store.TokenStoreError`, `provider.ConfigurationError`): nothing is sent."""
    problem_reason: str = NOT_CONFIGURED
    """The `OAuth2Ready` reason of `problem`: NotConfigured, or NotReleased for a refusal of the release rule."""
    holder: str = ""
    """Who plans (the operator process): a claim by someone else that has not run out means "not now"."""

    @property
    def where(self) -> str:
        return f"Credential {self.credential.namespace}/{self.credential.name}"

    @property
    def authorize_command(self) -> str:
        return f"credbridge oauth2 authorize {self.credential.name} -n {self.credential.namespace}"

    @property
    def jitter(self) -> float:
        """Fixed by the Credential and the token's received time: the same after a restart, on any replica."""
        received = self.stored.received_at.isoformat() if self.stored.received_at else ""
        return schedule.stable_jitter(self.credential.uid, received)


@dataclasses.dataclass(frozen=True)
class Memory:
    """`status.oauth2` as the last plan wrote it."""

    failures: int = 0
    """Failed attempts in a row since the last success."""
    retry_at: datetime.datetime | None = None
    """Not before this time after a failure."""
    refused_version: str | None = None
    """The token Secret's resourceVersion when the provider refused its refresh token: the same
    Secret is not tried again; a new authorization (a new resourceVersion) is."""
    last_refresh: str | None = None
    last_error: str | None = None
    """What the last failed attempt ended in (no value: status and error code), for the condition message."""
    claim_holder: str | None = None
    """The operator process that claimed the next token request (HA: replicas race for it with the
    Credential's resourceVersion, the winner sends), until `claim_until`."""
    claim_until: datetime.datetime | None = None

    @classmethod
    def from_status(cls, status: collections.abc.Mapping[str, typing.Any]) -> Memory:
        block = status.get(STATUS_KEY) or {}
        failures = block.get("failures")
        raw_claim = block.get("claim")
        claim: collections.abc.Mapping[str, typing.Any] = (
            raw_claim if isinstance(raw_claim, collections.abc.Mapping) else {}
        )
        return cls(
            failures=failures if isinstance(failures, int) and failures > 0 else 0,
            retry_at=tokens.parse_time(block.get("retryAt")),
            refused_version=block.get("refusedTokenVersion") or None,
            last_refresh=block.get("lastRefreshTime") or None,
            last_error=block.get("lastError") or None,
            claim_holder=str(claim.get("holder") or "") or None,
            claim_until=tokens.parse_time(claim.get("until")),
        )

    def foreign_claim(self, holder: str, now: datetime.datetime) -> datetime.datetime | None:
        """Until when another process holds the claim on the next token request; None when nobody else does."""
        if self.claim_holder is None or self.claim_holder == holder or self.claim_until is None:
            return None
        return self.claim_until if self.claim_until > now else None


def _needs_authorization(situation: Situation) -> bool:
    return situation.grant == "authorization_code" and situation.stored.refresh_token is None


def next_attempt(
    situation: Situation, now: datetime.datetime, policy: schedule.RefreshPolicy
) -> datetime.datetime | None:
    """When to send the next token request: a time ≤ `now` means now; None means not until the
    Credential or its token Secret changes (nothing to refresh with, a refused grant, a broken
    configuration, or a token that never expires)."""
    if situation.problem is not None or _needs_authorization(situation):
        return None
    memory = Memory.from_status(situation.credential.status)
    if memory.refused_version is not None and memory.refused_version == situation.store_version:
        return None
    planned = schedule.refresh_at(situation.stored, policy, situation.jitter, now)
    if planned is None:
        return None
    if memory.failures and memory.retry_at is not None:
        planned = memory.retry_at
    claimed = memory.foreign_claim(situation.holder, now)
    if claimed is not None:
        # Another replica is sending this request now: look again when its claim runs out (by then it
        # wrote the new tokens, which move the schedule, or it died and the claim lapses).
        return max(planned, claimed)
    return planned


def claim_patch(situation: Situation, now: datetime.datetime, seconds: float) -> Json:
    """The status merge patch that claims the next token request for `situation.holder` for `seconds`.

    Written with the resourceVersion the plan was made from, before anything is sent: of two replicas
    that planned the same refresh, one writes it and the other gets 409, reads the claim and waits. A
    rotating provider that saw one refresh token twice would revoke the whole grant.
    """
    until = now + datetime.timedelta(seconds=seconds)
    return {STATUS_KEY: {"claim": {"holder": situation.holder, "until": tokens.format_time(until)}}}


@dataclasses.dataclass(frozen=True)
class OAuth2Plan:
    """What to do after one look at an OAuth2 Credential."""

    token_fields: collections.abc.Mapping[str, redaction.Redacted] = dataclasses.field(repr=False)
    """Token fields to write into the token Secret (`store.TokenStore.secret_data` maps them to keys);
    empty unless tokens were received. Written before anything else."""
    status: Json
    """The `status.oauth2` block."""
    condition: Json
    """The `OAuth2Ready` condition."""
    event: planning.Event | None = None
    """Posted when the condition's reason (or, on failure, message) changed."""
    requeue_after: float | None = None
    """Seconds until the controller should look again; None: only when something changes."""

    def status_patch(self, current: collections.abc.Mapping[str, typing.Any]) -> Json | None:
        """The merge patch of the Credential's status, or None when it already says this.

        `status.oauth2` is merged key by key, so keys the plan no longer has (a `retryAt` after a
        success, a claim) are removed with null. `conditions` is a list that a merge patch replaces
        whole: the other writers' conditions are kept as they are (`conditions.merge`), and the
        patch carries the resourceVersion it was planned from, so a concurrent change is a 409.
        """
        patch: Json = {}
        block = current.get(STATUS_KEY)
        block = block if isinstance(block, collections.abc.Mapping) else {}
        if dict(block) != self.status:
            changed: Json = {key: value for key, value in self.status.items() if block.get(key) != value}
            changed.update({key: None for key in block if key not in self.status})
            patch[STATUS_KEY] = changed
        existing = conditions.find(current, OAUTH2_READY)
        if existing is None or dict(existing) != self.condition:
            patch["conditions"] = conditions.merge(current, [self.condition])
        return patch or None


def _time(moment: datetime.datetime | None) -> str | None:
    return tokens.format_time(moment) if moment is not None else None


def _until(stored: tokens.StoredTokens, now: datetime.datetime) -> str:
    if stored.access_token is None:
        return "it holds no access token"
    if not stored.expires_at_given:
        return "its access token does not expire"
    if stored.expires_at is None:
        return "the expiry of its access token is unreadable"
    if stored.expires_at <= now:
        return f"its access token expired at {_time(stored.expires_at)}"
    return f"its access token works until {_time(stored.expires_at)}"


def plan(
    situation: Situation,
    outcome: outcomes.Outcome | None,
    now: datetime.datetime,
    policy: schedule.RefreshPolicy,
) -> OAuth2Plan:
    """The plan after one look: `outcome` is what the token request gave, None when none was sent."""
    memory = Memory.from_status(situation.credential.status)
    stored = situation.stored
    token_fields: dict[str, redaction.Redacted] = {}
    last_refresh = memory.last_refresh
    # The refused refresh token stays refused only while the token Secret is the one it was refused in.
    refused = memory.refused_version if memory.refused_version == situation.store_version else None
    failures, retry_at, last_error = memory.failures, memory.retry_at, memory.last_error
    if isinstance(outcome, outcomes.Refreshed):
        token_fields = outcome.tokens.field_values()
        stored = tokens.StoredTokens.from_fields({name: value.reveal() for name, value in token_fields.items()})
        last_refresh, refused, failures, retry_at, last_error = tokens.format_time(now), None, 0, None, None
    elif isinstance(outcome, outcomes.ReauthorizationRequired):
        refused, failures, retry_at, last_error = situation.store_version, 0, None, outcome.detail
    elif isinstance(outcome, outcomes.RefreshFailed):
        failures, last_error = memory.failures + 1, outcome.detail
        jitter = schedule.stable_jitter(situation.credential.uid, str(failures))
        delay = (
            schedule.retry_delay(failures, policy, jitter, outcome.retry_after)
            if outcome.transient
            else max(policy.backoff_max, outcome.retry_after or 0.0)
        )
        retry_at = now + datetime.timedelta(seconds=delay)

    after = dataclasses.replace(situation, stored=stored)
    state, reason, message = _condition(after, last_error, failures, retry_at, refused, now)
    status: Json = {"grant": situation.grant, "failures": failures}
    claimed = memory.foreign_claim(situation.holder, now) if outcome is None else None
    if claimed is not None:
        # Another replica is sending a request: its claim stays until it writes what it received.
        status["claim"] = {"holder": memory.claim_holder, "until": tokens.format_time(claimed)}
    for key, value in (
        ("accessTokenExpiresAt", _time(stored.expires_at) if stored.access_token is not None else None),
        ("lastRefreshTime", last_refresh),
        ("retryAt", _time(retry_at) if failures else None),
        ("refusedTokenVersion", refused),
        ("lastError", last_error if failures or refused is not None else None),
    ):
        if value is not None:
            status[key] = value
    upcoming: datetime.datetime | None
    if isinstance(outcome, outcomes.Refreshed):
        upcoming = schedule.refresh_at(stored, policy, after.jitter, now)
    elif failures and retry_at is not None:
        upcoming = retry_at
    else:
        upcoming = None if reason != TOKEN_VALID else schedule.refresh_at(stored, policy, after.jitter, now)
    if upcoming is not None and claimed is not None:
        upcoming = max(upcoming, claimed)
    if upcoming is not None:
        status["refreshAt"] = tokens.format_time(upcoming)
    condition = conditions.condition(
        situation.credential.status,
        OAUTH2_READY,
        state,
        reason,
        message,
        tokens.format_time(now),
        situation.credential.generation,
    )
    old = conditions.find(situation.credential.status, OAUTH2_READY)
    changed = old is None or old.get("reason") != reason
    event = planning.Event("Normal" if state == "True" else "Warning", reason, message) if changed else None
    requeue = None if upcoming is None else max(0.0, (upcoming - now).total_seconds())
    expires = stored.expires_at if stored.access_token is not None else None
    if requeue is None and expires is not None and expires > now:
        requeue = (expires - now).total_seconds()  # look again when it expires: the message changes
    return OAuth2Plan(token_fields, status, condition, event, requeue)


def _condition(
    situation: Situation,
    last_error: str | None,
    failures: int,
    retry_at: datetime.datetime | None,
    refused: str | None,
    now: datetime.datetime,
) -> tuple[str, str, str]:
    """(status, reason, message) of `OAuth2Ready`."""
    where, stored = situation.where, situation.stored
    if situation.problem is not None:
        return "False", situation.problem_reason, situation.problem
    if refused is not None and refused == situation.store_version:
        detail = last_error or "the provider refused the refresh token (invalid_grant)"
        return (
            "False",
            REAUTHORIZATION_REQUIRED,
            f"{where}: {detail}; run `{situation.authorize_command}` to authorize it again ({_until(stored, now)})",
        )
    if failures:
        why = last_error or "the last token request failed"
        return (
            "False",
            REFRESH_FAILED,
            f"{where}: {why}; {failures} failure(s) in a row, next attempt at {_time(retry_at)} "
            f"({_until(stored, now)})",
        )
    if _needs_authorization(situation) and not stored.access_token_valid(now):
        return (
            "False",
            AUTHORIZATION_REQUIRED,
            f"{where} has no refresh token yet: run `{situation.authorize_command}`",
        )
    if not stored.access_token_valid(now):
        return "False", REFRESH_FAILED, f"{where}: {_until(stored, now)} and no new one was received yet"
    return "True", TOKEN_VALID, f"{where}: {_until(stored, now)}"
