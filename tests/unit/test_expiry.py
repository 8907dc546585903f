"""Expiry in cert-manager's shape: ExpiringSoon and Expired, Events, and when to look again."""

from __future__ import annotations

import datetime

import hypothesis
from hypothesis import strategies

from credbridge.core import conditions, expiry

EXPIRES = datetime.datetime(2026, 6, 30, tzinfo=datetime.UTC)
WHERE = "Credential team-a/gh"


def plan(now: datetime.datetime, previous: dict[str, object] | None = None, **spec: str) -> expiry.ExpiryPlan:
    return expiry.plan_expiry(
        spec={"expiresAt": "2026-06-30T00:00:00Z", **spec},
        previous=previous or {},
        discovered_expires_at=None,
        now=now,
        generation=2,
        where=WHERE,
    )


def states(result: expiry.ExpiryPlan) -> tuple[str, str]:
    status = {"conditions": list(result.conditions)}
    soon, expired = conditions.find(status, "ExpiringSoon"), conditions.find(status, "Expired")
    assert soon is not None and expired is not None
    return soon["status"], expired["status"]


def test_long_before_expiry_both_conditions_are_false_and_the_reminder_time_is_next() -> None:
    result = plan(EXPIRES - datetime.timedelta(days=30))
    assert states(result) == ("False", "False")
    assert result.expires_at == "2026-06-30T00:00:00Z"
    assert result.next_transition == EXPIRES - expiry.DEFAULT_REMIND_BEFORE
    assert result.events == ()


def test_within_remind_before_it_is_expiring_soon_with_one_warning() -> None:
    now = EXPIRES - datetime.timedelta(days=3)
    result = plan(now)
    assert states(result) == ("True", "False")
    assert [event.reason for event in result.events] == ["ExpiringSoon"]
    assert result.next_transition == EXPIRES
    again = plan(now + datetime.timedelta(hours=1), previous={"conditions": list(result.conditions)})
    assert again.events == ()


def test_after_expiry_it_is_expired_and_nothing_changes_any_more() -> None:
    result = plan(EXPIRES + datetime.timedelta(seconds=1))
    assert states(result) == ("False", "True")
    assert [event.reason for event in result.events] == ["Expired"]
    assert result.next_transition is None


def test_remind_before_is_taken_from_the_spec() -> None:
    result = plan(EXPIRES - datetime.timedelta(days=20), remindBefore="30d")
    assert states(result) == ("True", "False")
    assert expiry.parse_duration("1d12h") == datetime.timedelta(hours=36)
    assert expiry.parse_duration("fortnight") is None


def test_the_earlier_of_declared_and_discovered_expiry_wins() -> None:
    result = expiry.plan_expiry(
        spec={"expiresAt": "2026-06-30T00:00:00Z"},
        previous={},
        discovered_expires_at="2026-05-01T00:00:00Z",
        now=EXPIRES - datetime.timedelta(days=90),
        generation=1,
        where=WHERE,
    )
    assert result.expires_at == "2026-05-01T00:00:00Z"


def test_without_any_expiry_both_conditions_are_dropped() -> None:
    result = expiry.plan_expiry(
        spec={}, previous={}, discovered_expires_at=None, now=EXPIRES, generation=1, where=WHERE
    )
    assert result.expires_at is None and result.conditions == ()
    assert set(result.drop) == {"ExpiringSoon", "Expired"}


def test_malformed_spec_values_are_named_and_do_not_break_the_plan() -> None:
    result = plan(EXPIRES, remindBefore="two weeks")
    assert result.problem is not None and "spec.remindBefore" in result.problem
    bad = expiry.plan_expiry(
        spec={"expiresAt": "tomorrow"}, previous={}, discovered_expires_at=None, now=EXPIRES, generation=1, where=WHERE
    )
    assert bad.problem is not None and "spec.expiresAt" in bad.problem and bad.conditions == ()


@hypothesis.given(strategies.integers(min_value=-400 * 86400, max_value=400 * 86400), strategies.integers(0, 60))
def test_the_next_transition_is_always_in_the_future(offset: int, remind_days: int) -> None:
    now = EXPIRES + datetime.timedelta(seconds=offset)
    result = plan(now, remindBefore=f"{remind_days}d")
    assert result.next_transition is None or result.next_transition > now
    if result.next_transition is None:
        assert states(result)[1] == "True"
