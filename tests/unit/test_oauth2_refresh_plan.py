"""The refresh controller's pure decisions as state transitions: a Credential's status and tokens in,
the next attempt, the token fields to write, `status.oauth2`, the `OAuth2Ready` condition and Events
out. Applying a plan means feeding its status back into the Credential and its token fields into
the token Secret."""

from __future__ import annotations

import dataclasses
import datetime
import typing

import pytest

from credbridge.core import redaction, views
from credbridge.core.oauth2 import outcomes, planning, schedule, tokens

T0 = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
POLICY = schedule.RefreshPolicy()
ACCESS_CANARY = "ya29.access-canary-5e1f9a"
REFRESH_CANARY = "1//refresh-canary-8d2b4c"


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def token_fields(received: datetime.datetime, lifetime: float, access: str = ACCESS_CANARY) -> dict[str, str]:
    return {
        "access_token": access,
        "refresh_token": REFRESH_CANARY,
        "token_received_at": tokens.format_time(received),
        "expires_at": tokens.format_time(received + datetime.timedelta(seconds=lifetime)),
    }


def merge_patch(current: dict[str, typing.Any], patch: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """JSON merge patch (RFC 7386), as the API server applies a status patch: null removes a key."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclasses.dataclass
class World:
    """One Credential, its status and its token Secret, changed only by applying plans."""

    status: dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    version: int = 1
    grant: str = "authorization_code"
    problem: str | None = None

    def situation(self) -> planning.Situation:
        view = views.CredentialView.from_object(
            {
                "metadata": {"namespace": "team-a", "name": "gmail", "uid": "uid-1", "generation": 3},
                "spec": {"type": "gmailOAuth2"},
                "status": self.status,
            }
        )
        return planning.Situation(
            view, self.grant, tokens.StoredTokens.from_fields(self.fields), str(self.version), self.problem
        )

    def look(self, now: datetime.datetime, outcome: outcomes.Outcome | None = None) -> planning.OAuth2Plan:
        """Plans and applies: token fields into the Secret (a new resourceVersion), the status patch."""
        result = planning.plan(self.situation(), outcome, now, POLICY)
        if result.token_fields:
            self.fields.update({name: value.reveal() for name, value in result.token_fields.items()})
            self.version += 1
        patch = result.status_patch(self.status)
        if patch:
            self.status = merge_patch(self.status, patch)
        return result

    def authorize(self, now: datetime.datetime, lifetime: float = 3600) -> None:
        self.fields = token_fields(now, lifetime)
        self.version += 1

    @property
    def condition(self) -> dict[str, typing.Any]:
        found = [c for c in self.status.get("conditions", []) if c["type"] == planning.OAUTH2_READY]
        assert len(found) == 1
        return found[0]


def refreshed(now: datetime.datetime, lifetime: float = 3600, refresh: str | None = None) -> outcomes.Refreshed:
    body: dict[str, typing.Any] = {"access_token": f"{ACCESS_CANARY}-{now.isoformat()}", "expires_in": lifetime}
    if refresh:
        body["refresh_token"] = refresh
    return outcomes.Refreshed(
        tokens.parse_token_response(body, received_at=now, previous_refresh_token=redaction.Redacted(REFRESH_CANARY))
    )


# ---- the schedule ------------------------------------------------------------------------------------------


def test_a_token_is_refreshed_at_three_quarters_of_its_lifetime_less_the_jitter() -> None:
    stored = tokens.StoredTokens.from_fields(token_fields(T0, 3600))
    assert schedule.refresh_at(stored, POLICY, 0.0, T0) == at(2700)
    assert schedule.refresh_at(stored, POLICY, 0.999999, T0) > at(2700 - 0.05 * 3600 - 1)
    assert schedule.refresh_at(stored, dataclasses.replace(POLICY, refresh_share=0.5), 0.0, T0) == at(1800)
    short = tokens.StoredTokens.from_fields(token_fields(T0, 2))
    assert schedule.refresh_at(short, POLICY, 0.0, T0) == at(POLICY.min_interval)


def test_no_token_or_an_unreadable_expiry_is_due_now_and_a_token_without_expiry_never() -> None:
    assert schedule.refresh_at(tokens.StoredTokens.from_fields({}), POLICY, 0.5, T0) == T0
    broken = tokens.StoredTokens.from_fields({"access_token": "a", "expires_at": "tomorrow"})
    assert schedule.refresh_at(broken, POLICY, 0.5, T0) == T0
    assert schedule.refresh_at(tokens.StoredTokens.from_fields({"access_token": "xoxp"}), POLICY, 0.5, T0) is None
    unknown_age = tokens.StoredTokens.from_fields({"access_token": "a", "expires_at": tokens.format_time(at(3600))})
    assert schedule.refresh_at(unknown_age, POLICY, 0.0, T0) == at(3600 - 0.25 * POLICY.assumed_lifetime)


def test_jitter_is_stable_for_a_credential_and_token_and_spread_across_them() -> None:
    assert schedule.stable_jitter("uid-1", "t") == schedule.stable_jitter("uid-1", "t")
    spread = {round(schedule.stable_jitter(f"uid-{n}", "t"), 2) for n in range(100)}
    assert len(spread) > 40 and all(0 <= value < 1 for value in spread)


def test_backoff_doubles_up_to_the_maximum_and_never_undercuts_retry_after() -> None:
    delays = [schedule.retry_delay(failures, POLICY, 1.0) for failures in range(1, 10)]
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0] and max(delays) == POLICY.backoff_max
    assert schedule.retry_delay(1, POLICY, 0.0) == 2.5
    assert schedule.retry_delay(1, POLICY, 0.0, retry_after=90) == 90
    assert schedule.retry_delay(1, POLICY, 0.0, retry_after=10**6) == POLICY.retry_after_max


def test_a_policy_with_impossible_shares_is_refused() -> None:
    with pytest.raises(ValueError, match="refresh share"):
        schedule.RefreshPolicy(refresh_share=1.0)
    with pytest.raises(ValueError, match="jitter"):
        schedule.RefreshPolicy(refresh_share=0.5, jitter_share=0.6)


# ---- the planner ---------------------------------------------------------------------------------------------


def test_before_authorization_nothing_is_sent_and_the_condition_says_which_command_to_run() -> None:
    world = World()
    assert planning.next_attempt(world.situation(), T0, POLICY) is None
    result = world.look(T0)
    assert world.condition["status"] == "False" and world.condition["reason"] == "AuthorizationRequired"
    assert "credbridge oauth2 authorize gmail -n team-a" in world.condition["message"]
    assert result.event is not None and result.event.type == "Warning" and result.token_fields == {}
    assert result.requeue_after is None


def test_an_authorized_credential_is_ready_until_its_refresh_and_a_restart_writes_nothing() -> None:
    world = World()
    world.authorize(T0)
    situation = world.situation()
    first = world.look(at(1))
    assert world.condition["status"] == "True" and world.condition["reason"] == "TokenValid"
    assert tokens.format_time(at(3600)) in world.condition["message"]
    assert first.event is not None and first.event.type == "Normal"
    due = planning.next_attempt(world.situation(), at(1), POLICY)
    assert due is not None and at(2500) < due <= at(2700)
    assert world.status["oauth2"]["refreshAt"] == tokens.format_time(due)
    assert first.requeue_after == pytest.approx((due - at(1)).total_seconds())
    # The same inputs later (an operator restart, a standby taking over): no write, no Event.
    again = planning.plan(world.situation(), None, at(60), POLICY)
    assert again.status_patch(world.status) is None and again.event is None
    assert situation.jitter == world.situation().jitter


def test_a_refresh_writes_the_new_access_token_keeps_the_refresh_token_and_moves_the_schedule() -> None:
    world = World()
    world.authorize(T0)
    world.look(at(1))
    due = planning.next_attempt(world.situation(), at(2700), POLICY)
    assert due is not None and due <= at(2700)
    result = world.look(at(2700), refreshed(at(2700)))
    assert set(result.token_fields) >= {"access_token", "refresh_token", "expires_at", "token_received_at"}
    assert result.token_fields["refresh_token"].reveal() == REFRESH_CANARY  # omitted by the provider: kept
    assert world.fields["expires_at"] == tokens.format_time(at(2700 + 3600))
    assert result.event is None and world.condition["reason"] == "TokenValid"
    assert world.status["oauth2"]["lastRefreshTime"] == tokens.format_time(at(2700))
    next_due = planning.next_attempt(world.situation(), at(2701), POLICY)
    assert next_due is not None and at(2700 + 2500) < next_due <= at(2700 + 2700)
    assert ACCESS_CANARY not in repr(result)


def test_a_rotated_refresh_token_is_what_gets_written() -> None:
    world = World()
    world.authorize(T0)
    result = world.look(at(2700), refreshed(at(2700), refresh="1//rotated"))
    assert result.token_fields["refresh_token"].reveal() == "1//rotated"
    assert world.fields["refresh_token"] == "1//rotated"


def test_failures_back_off_report_once_and_recover_with_an_event() -> None:
    world = World()
    world.authorize(T0)
    world.look(at(1))
    first = world.look(at(2700), outcomes.RefreshFailed("idp.example answered HTTP 503"))
    assert world.condition["status"] == "False" and world.condition["reason"] == "RefreshFailed"
    assert "HTTP 503" in world.condition["message"] and "works until" in world.condition["message"]
    assert first.event is not None and first.event.type == "Warning" and first.token_fields == {}
    retry = planning.next_attempt(world.situation(), at(2700), POLICY)
    assert retry is not None and at(2700 + 2.5) <= retry <= at(2700 + 5)
    assert world.status["oauth2"]["failures"] == 1
    # Restarted while failing: same status, nothing written.
    assert planning.plan(world.situation(), None, at(2701), POLICY).status_patch(world.status) is None
    second = world.look(retry, outcomes.RefreshFailed("idp.example answered HTTP 429", retry_after=120))
    assert second.event is None and world.status["oauth2"]["failures"] == 2
    later = planning.next_attempt(world.situation(), retry, POLICY)
    assert later is not None and later >= retry + datetime.timedelta(seconds=120)
    recovered = world.look(later, refreshed(later))
    assert recovered.event is not None and recovered.event.type == "Normal"
    assert world.condition["reason"] == "TokenValid" and world.status["oauth2"]["failures"] == 0
    assert "retryAt" not in world.status["oauth2"]


def test_a_refused_client_waits_the_longest_backoff() -> None:
    world = World()
    world.authorize(T0)
    world.look(at(2700), outcomes.RefreshFailed("idp.example refused the request (invalid_client)", transient=False))
    retry = planning.next_attempt(world.situation(), at(2700), POLICY)
    assert retry == at(2700 + POLICY.backoff_max)


def test_a_revoked_refresh_token_stops_refreshing_until_the_credential_is_authorized_again() -> None:
    world = World()
    world.authorize(T0)
    world.look(at(1))
    refused = outcomes.ReauthorizationRequired("invalid_grant", "idp.example refused the refresh token (invalid_grant)")
    result = world.look(at(2700), refused)
    assert world.condition["reason"] == "ReauthorizationRequired"
    assert "credbridge oauth2 authorize gmail -n team-a" in world.condition["message"]
    assert f"works until {tokens.format_time(at(3600))}" in world.condition["message"]
    assert result.event is not None and result.event.type == "Warning"
    assert planning.next_attempt(world.situation(), at(2800), POLICY) is None
    assert result.requeue_after == pytest.approx(900)  # look again when the last access token expires
    expired = world.look(at(3601))
    assert expired.event is None and f"expired at {tokens.format_time(at(3600))}" in world.condition["message"]
    # `credbridge oauth2 authorize` wrote new tokens: a new resourceVersion, so the new grant is tried.
    world.authorize(at(4000))
    back = world.look(at(4001))
    assert world.condition["reason"] == "TokenValid" and back.event is not None
    assert planning.next_attempt(world.situation(), at(4001), POLICY) is not None


def test_client_credentials_needs_no_authorization_and_fetches_at_once() -> None:
    world = World(grant="client_credentials")
    assert planning.next_attempt(world.situation(), T0, POLICY) == T0
    body = {"access_token": ACCESS_CANARY, "expires_in": 30}
    got = outcomes.Refreshed(tokens.parse_token_response(body, received_at=T0, previous_refresh_token=None))
    result = world.look(T0, got)
    assert "refresh_token" not in result.token_fields and world.condition["reason"] == "TokenValid"
    due = planning.next_attempt(world.situation(), T0, POLICY)
    assert due is not None and at(21) <= due <= at(22.5)


def test_a_configuration_problem_is_reported_and_nothing_is_sent() -> None:
    world = World(problem="Credential team-a/gmail: it does not say where its OAuth2 tokens go: add ...")
    world.authorize(T0)
    assert planning.next_attempt(world.situation(), T0, POLICY) is None
    world.look(T0)
    assert world.condition["reason"] == "NotConfigured" and "where its OAuth2 tokens go" in world.condition["message"]


def test_the_status_patch_keeps_the_other_conditions() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Encrypted", "message": "m", "lastTransitionTime": "t"}
    world = World(status={"conditions": [ready], "id": "x"})
    world.authorize(T0)
    result = planning.plan(world.situation(), None, at(1), POLICY)
    patch = result.status_patch(world.status)
    assert patch is not None and patch["conditions"][0] == ready and len(patch["conditions"]) == 2
    assert "id" not in patch


def test_a_claim_by_another_replica_defers_the_request_until_it_runs_out_and_is_then_cleared() -> None:
    world = World()
    world.authorize(T0)
    world.look(at(1))
    mine = dataclasses.replace(world.situation(), holder="replica-a")
    claim = planning.claim_patch(mine, at(2700), 45)
    world.status = merge_patch(world.status, claim)
    assert world.status["oauth2"]["claim"] == {"holder": "replica-a", "until": tokens.format_time(at(2745))}
    other = dataclasses.replace(world.situation(), holder="replica-b")
    assert planning.next_attempt(other, at(2701), POLICY) == at(2745)
    assert planning.Memory.from_status(world.status).foreign_claim("replica-b", at(2701)) == at(2745)
    # The claim is not the holder's obstacle, and it lapses: a replica that died holds nothing.
    assert planning.Memory.from_status(world.status).foreign_claim("replica-a", at(2701)) is None
    assert planning.Memory.from_status(world.status).foreign_claim("replica-b", at(2746)) is None
    waiting = planning.plan(other, None, at(2701), POLICY)
    assert waiting.requeue_after is not None and waiting.requeue_after >= 44
    # The holder writes what it received: the claim goes with the same patch.
    result = planning.plan(
        dataclasses.replace(world.situation(), holder="replica-a"), refreshed(at(2701)), at(2701), POLICY
    )
    patch = result.status_patch(world.status)
    assert patch is not None and patch["oauth2"]["claim"] is None
    world.status = merge_patch(world.status, patch)
    assert "claim" not in world.status["oauth2"]


def test_keys_the_plan_drops_are_removed_by_the_merge_patch() -> None:
    world = World()
    world.authorize(T0)
    world.look(at(2700), outcomes.RefreshFailed("idp.example answered HTTP 503"))
    assert {"retryAt", "lastError"} <= set(world.status["oauth2"])
    patch = planning.plan(world.situation(), refreshed(at(2706)), at(2706), POLICY).status_patch(world.status)
    assert patch is not None and patch["oauth2"]["retryAt"] is None and patch["oauth2"]["lastError"] is None


def test_the_release_rule_refusing_is_reported_as_not_released() -> None:
    world = World(problem="Credential team-a/gmail: values come from the operator's environment (CRED_X)")
    world.authorize(T0)
    situation = dataclasses.replace(world.situation(), problem_reason=planning.NOT_RELEASED)
    assert planning.next_attempt(situation, T0, POLICY) is None
    result = planning.plan(situation, None, T0, POLICY)
    assert result.condition["reason"] == "NotReleased" and "CRED_X" in result.condition["message"]
