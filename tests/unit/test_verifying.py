"""One verification pass as pure steps: when a check is due, what a pass writes, what a mirror shows, the pace.

Status in, decision or patch out: the same status always gives the same decision, which is what
lets a restarted operator write nothing for Credentials that are not due.
"""

from __future__ import annotations

import datetime
import heapq
import ipaddress
import itertools
import typing

import hypothesis
import pytest
from hypothesis import strategies

from credbridge.core import (
    conditions,
    egress,
    envrefs,
    expiry,
    lint,
    ratelimit,
    registry,
    release,
    verification,
    verifying,
    views,
)

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
SCHEDULE = verifying.Schedule(interval=3600.0, jitter=0.1, debounce=10.0)
Outcome = verification.Outcome


def at(seconds: float) -> str:
    return verification.format_time(NOW + datetime.timedelta(seconds=seconds))


def status(
    outcome: Outcome | None = None, *, checked: float | None = None, updated: float | None = -600
) -> dict[str, typing.Any]:
    found: dict[str, typing.Any] = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Encrypted"}],
    }
    if updated is not None:
        found["updatedDate"] = at(updated)
    if outcome is not None:
        found["conditions"].append(
            {"type": "Verified", "status": verification.CONDITION_STATUS[outcome], "reason": outcome.value}
        )
    if checked is not None:
        found["lastVerifiedTime"] = at(checked)
    return found


def due(
    found: dict[str, typing.Any],
    *,
    requested: str | None = None,
    has_check: bool = True,
    released: bool = True,
    now: datetime.datetime = NOW,
    schedule: verifying.Schedule = SCHEDULE,
    uid: str = "uid-1",
    content_unchanged: bool = False,
) -> verifying.Due:
    return verifying.next_check(
        found,
        uid=uid,
        requested=requested,
        has_check=has_check,
        released=released,
        now=now,
        schedule=schedule,
        content_unchanged=content_unchanged,
    )


# ---- when a check is due ------------------------------------------------------------------------


def test_a_never_checked_credential_is_checked_a_debounce_after_its_content_was_written() -> None:
    fresh = due(status(updated=-3))
    assert fresh.why == verifying.NEW and not fresh.now(NOW)
    assert fresh.at == NOW + datetime.timedelta(seconds=7)
    assert due(status(updated=-10)).now(NOW)


def test_content_written_after_the_last_check_is_checked_again_after_the_debounce() -> None:
    changed = due(status(Outcome.VALID, checked=-100, updated=-5))
    assert changed.why == verifying.CHANGED and changed.at == NOW + datetime.timedelta(seconds=5)
    # The same second counts as changed: times are written to the second.
    assert due(status(Outcome.VALID, checked=-20, updated=-20)).why == verifying.CHANGED


def test_a_request_is_due_at_once_whatever_else_holds() -> None:
    request = due(status(Outcome.VALID, checked=-1), requested="2026-03-01T12:00:00.000001Z")
    assert request.why == verifying.REQUESTED and request.now(NOW)


def test_a_checked_credential_is_next_due_after_the_interval_moved_by_its_own_stable_jitter() -> None:
    checked = due(status(Outcome.VALID, checked=-60))
    assert checked.why == verifying.PERIODIC and checked.at is not None and not checked.now(NOW)
    last = NOW - datetime.timedelta(seconds=60)
    offset = (checked.at - last).total_seconds()
    assert 3600 * 0.9 <= offset <= 3600 * 1.1
    # The same status gives the same time (a restart keeps the schedule) ...
    assert due(status(Outcome.VALID, checked=-60)).at == checked.at
    # ... and two Credentials checked together come due apart.
    other = due(status(Outcome.VALID, checked=-60), uid="uid-2")
    assert other.at != checked.at
    assert due(status(Outcome.VALID, checked=-60), now=checked.at).now(checked.at)


@hypothesis.given(strategies.text(min_size=1, max_size=40), strategies.integers(0, 10**9))
def test_the_jitter_stays_within_its_window(uid: str, seconds: int) -> None:
    spread = verifying.spread(uid, NOW + datetime.timedelta(seconds=seconds))
    assert -1.0 <= spread <= 1.0


def test_outcomes_that_sent_nothing_are_not_repeated_periodically_but_judged_again_when_their_cause_changes() -> None:
    much_later = NOW + datetime.timedelta(days=365)
    never = due(status(Outcome.NOT_RELEASED, checked=-10), released=False, now=much_later)
    assert never.why is None and never.at is None
    granted = due(status(Outcome.NOT_RELEASED, checked=-10), released=True)
    assert granted.why == verifying.REJUDGED and granted.now(NOW)
    withdrawn = due(status(Outcome.VALID, checked=-10), released=False)
    assert withdrawn.why == verifying.REJUDGED and withdrawn.now(NOW)
    no_check = due(status(Outcome.NOT_VERIFIABLE, checked=-10), has_check=False, now=much_later)
    assert no_check.why is None
    check_removed = due(status(Outcome.VALID, checked=-10), has_check=False)
    assert check_removed.why == verifying.REJUDGED


def test_a_secret_rewritten_with_content_known_to_be_the_same_is_not_due_again() -> None:
    rewritten = status(Outcome.VALID, checked=-100, updated=-50)  # a key rotation re-encrypted it
    assert due(rewritten).why == verifying.CHANGED
    same = due(rewritten, content_unchanged=True)
    assert same.why == verifying.PERIODIC and not same.now(NOW)


def test_an_interval_of_zero_turns_periodic_checks_off() -> None:
    off = verifying.Schedule(interval=0, jitter=0.1, debounce=10)
    assert due(status(Outcome.VALID, checked=-10), schedule=off, now=NOW + datetime.timedelta(days=365)).why is None
    assert due(status(Outcome.VALID, checked=-100, updated=-50), schedule=off).why == verifying.CHANGED


# ---- what a pass writes -------------------------------------------------------------------------


def expiry_plan(found: typing.Mapping[str, typing.Any], **spec: str) -> expiry.ExpiryPlan:
    return expiry.plan_expiry(
        spec=spec,
        previous=found,
        discovered_expires_at=found.get("discoveredExpiresAt"),
        now=NOW,
        generation=1,
        where="w",
    )


def test_a_check_is_merged_into_the_other_writers_conditions_and_ready_stays_first() -> None:
    previous = status(checked=None)
    previous["conditions"].append({"type": "OAuth2Ready", "status": "True", "reason": "Refreshed"})
    result = verification.ProbeResult(Outcome.INVALID, "api.openai.com answered HTTP 401")
    checked = verification.plan_verification(previous, result, now=NOW, generation=1)
    patch = verifying.status_patch(previous, checked=checked, expiry_plan=expiry_plan(previous))
    assert patch is not None
    assert [c["type"] for c in patch["conditions"]] == ["Ready", "OAuth2Ready", "Verified"]
    assert patch["lastVerifiedTime"] == at(0)
    assert "expiresAt" not in patch  # no expiry known, none written


def test_a_pass_with_nothing_new_writes_nothing() -> None:
    previous = status(Outcome.VALID, checked=-60)
    assert verifying.status_patch(previous, checked=None, expiry_plan=expiry_plan(previous)) is None


def test_a_known_expiry_adds_its_conditions_and_status_expires_at() -> None:
    previous = status(Outcome.VALID, checked=-60)
    plan = expiry_plan(previous, expiresAt=at(86400 * 3))
    patch = verifying.status_patch(previous, checked=None, expiry_plan=plan)
    assert patch is not None and patch["expiresAt"] == at(86400 * 3)
    found = {"conditions": patch["conditions"]}
    soon = conditions.find(found, expiry.EXPIRING_SOON)
    assert soon is not None and soon["status"] == "True"
    assert [c["type"] for c in patch["conditions"]][:2] == ["Ready", "Verified"]
    # Written once, the same expiry writes nothing more.
    written = {**previous, **patch}
    assert (
        verifying.status_patch(written, checked=None, expiry_plan=expiry_plan(written, expiresAt=at(86400 * 3))) is None
    )


# ---- mirrors ---------------------------------------------------------------------------------


def test_a_mirror_shows_its_sources_outcome_and_expiry_without_its_details() -> None:
    source = status(Outcome.VALID, checked=-30)
    source["conditions"][1]["message"] = "the service accepted the credential: db.internal answered"
    source["expiresAt"] = at(86400 * 60)
    mirror = status(updated=-600)
    plan = verifying.plan_mirror(
        mirror, source="team-a/openai", source_spec={}, source_status=source, now=NOW, generation=1, where="m"
    )
    assert plan.patch is not None
    verified = conditions.find({"conditions": plan.patch["conditions"]}, "Verified")
    assert verified is not None and (verified["status"], verified["reason"]) == ("True", "Valid")
    assert "team-a/openai" in verified["message"] and "db.internal" not in verified["message"]
    assert plan.patch["lastVerifiedTime"] == at(-30) and plan.patch["expiresAt"] == at(86400 * 60)
    assert [event.reason for event in plan.events] == ["Valid"]
    # Nothing changed at the source: nothing to write, no Event.
    again = verifying.plan_mirror(
        {**mirror, **plan.patch},
        source="team-a/openai",
        source_spec={},
        source_status=source,
        now=NOW,
        generation=1,
        where="m",
    )
    assert again.patch is None and again.events == ()


def test_lint_findings_become_one_warning_event_that_names_fields_not_values() -> None:
    spec = registry.Registry.builtin().get("openAIApi")
    assert spec is not None
    value = "sk-ant-api03-" + "x" * 40 + "\n"
    event = verifying.lint_event(lint.lint_values(spec, {"openAIApiKey": value}), "Credential team-a/openai")
    assert event is not None and event.type == "Warning" and event.reason == verifying.LINT_REASON
    assert "openAIApiKey" in event.message and value.strip() not in event.message
    assert verifying.lint_event([], "x") is None


# ---- the global pace --------------------------------------------------------------------------


def run_pacer(rate: float, keys: int, jitter: typing.Callable[[int], float]) -> list[float]:
    """Keys all due at 0, coming back when told (plus `jitter(n)` late on their n-th wake); start times."""
    pacer = ratelimit.Pacer(rate)
    waiting = [(0.0, key) for key in range(keys)]
    starts: list[float] = []
    wakes = 0
    while waiting:
        when, key = heapq.heappop(waiting)
        when += jitter(wakes)
        wakes += 1
        wait = pacer.take(key, when)
        if wait == 0:
            starts.append(when)
        else:
            heapq.heappush(waiting, (when + wait, key))
    return starts


@pytest.mark.parametrize("rate", [2.0, 50.0])
@pytest.mark.parametrize("jitter", [0.0, 0.003, 0.02])
def test_a_thousand_keys_due_at_once_start_at_the_rate_and_no_faster(rate: float, jitter: float) -> None:
    starts = run_pacer(rate, 1000, lambda n: (n * 7919 % 1000) / 1000 * jitter)
    assert len(starts) == 1000
    spacing = 1 / rate
    assert min(b - a for a, b in itertools.pairwise(starts)) >= spacing * 0.998
    # Waking slightly late costs little: nearly the rate is kept.
    assert starts[-1] <= 999 * spacing * 1.25 + 1


def test_after_a_stall_the_overdue_keys_start_one_by_one() -> None:
    pacer = ratelimit.Pacer(10.0)
    slots = {key: pacer.take(key, 0.0) for key in range(5)}
    assert sorted(slots.values()) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    # Everyone comes back 3 s late, at once.
    started = [key for key in range(1, 5) if pacer.take(key, 3.0) == 0]
    assert len(started) == 1
    assert pacer.waiting() == 3


def test_a_start_that_does_not_wait_its_turn_still_spaces_the_next() -> None:
    pacer = ratelimit.Pacer(1.0)
    pacer.start_now(10.0)
    assert pacer.take("a", 10.2) == pytest.approx(0.8)
    pacer.forget("a")
    assert pacer.waiting() == 0


# ---- block_consumers through the release rule -----------------------------------------------------


def credential(outcome: str | None, status_: str = "False") -> views.CredentialView:
    conditions_ = [{"type": "Ready", "status": "True", "reason": "Encrypted"}]
    if outcome:
        conditions_.append({"type": "Verified", "status": status_, "reason": outcome})
    return views.CredentialView.from_object(
        {
            "metadata": {"name": "openai", "namespace": "team-a"},
            "spec": {"type": "openAIApi", "data": {"openAIApiKey": "literal"}},
            "status": {"conditions": conditions_},
        }
    )


OUTPUTS = [
    release.binding_secret("team-a"),
    release.workload_read("team-a"),
    release.external("Flowise", "team-a"),
]


@pytest.mark.parametrize("output", OUTPUTS, ids=lambda output: output.description)
def test_verification_informs_unless_the_admin_blocks_invalid_credentials(output: release.Output) -> None:
    env = envrefs.parse_policy(("CRED_*",), ())
    invalid = credential("Invalid")
    assert release.denial(release.Facts(invalid), output, release.Policy(env=env)) is None
    blocking = release.Policy(env=env, block_unverified=True)
    denial = release.denial(release.Facts(invalid), output, blocking)
    assert denial is not None and denial.reason == release.NOT_VERIFIED and "credbridge verify" in denial.message
    assert release.NOT_VERIFIED not in release.REASONS  # holds back; withdraws nothing
    for fine in (credential(None), credential("Valid", "True"), credential("RateLimited"), credential("Forbidden")):
        assert release.denial(release.Facts(fine), output, blocking) is None
    # The check itself is never held back by an earlier check's outcome.
    probe = release.external(release.VERIFICATION_PROBE, "team-a")
    assert probe.verification and release.denial(release.Facts(invalid), probe, blocking) is None


# ---- static answers instead of DNS ----------------------------------------------------------------


def test_static_hosts_parse_names_addresses_and_port_routes() -> None:
    hosts = egress.parse_static_hosts(
        [
            "api.openai.com:443=127.0.0.1:8443",
            "rebind.test=203.0.113.10",
            "rebind.test=10.1.2.3",
            "v6.test:443=[::1]:99",
        ]
    )
    assert [str(a) for a in hosts.names["api.openai.com"]] == ["127.0.0.1"]
    assert [str(a) for a in hosts.names["rebind.test"]] == ["203.0.113.10", "10.1.2.3"]
    assert hosts.ports[(ipaddress.ip_address("127.0.0.1"), 443)] == 8443
    assert "v6.test" in hosts.names


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("nothing", "NAME=ADDRESS"),
        ("host=not-an-ip", "is not an IP address"),
        ("host:443=127.0.0.1", "on both sides"),
        ("host=127.0.0.1:0", "between 1 and 65535"),
    ],
)
def test_a_malformed_static_host_is_refused_naming_it(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        egress.parse_static_hosts([entry])
    assert "--verification-resolve" in str(raised.value)
