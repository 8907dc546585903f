"""What a FlowiseTarget says after a sync and whether it is retried (core.flowise.report), from typed
failure reasons — never from the wording of a message."""

from __future__ import annotations

import pytest

from credbridge.core.flowise import report, sync

NOW = "2026-01-01T00:00:00Z"


def entry(name: str, state: str, message: str | None = None) -> sync.Entry:
    return sync.Entry(name, f"id-{name}", state, owned=True, message=message)


@pytest.mark.parametrize(
    ("reason", "stops", "transient", "reachable"),
    [
        ("Unreachable", True, True, False),
        ("TLSError", True, True, False),
        ("Unauthorized", True, False, True),
        ("Forbidden", True, False, True),
        ("ServerError", False, True, True),
        ("NotFound", False, False, True),
        ("BadResponse", False, False, True),
    ],
)
def test_each_failure_reason_is_sorted_once(reason: str, stops: bool, transient: bool, reachable: bool) -> None:
    failure = report.Failure(reason, f"Flowise said {reason}")
    assert (failure.stops_sync, failure.transient, failure.reachable) == (stops, transient, reachable)


def test_a_failure_before_asking_flowise_says_nothing_about_reachability() -> None:
    failure = report.Failure("SecretReferenceMissing", "the API key Secret is missing", from_server=False)
    stopped = report.stopped({}, failure, generation=3, now=NOW)
    assert "reachable" not in stopped.status
    assert stopped.retry is False and stopped.outcome == "SecretReferenceMissing"
    assert stopped.status["conditions"][0]["reason"] == "SecretReferenceMissing"
    assert [event.reason for event in stopped.events] == ["SecretReferenceMissing"]


def test_a_stopped_sync_posts_its_event_once_while_the_reason_and_message_stay() -> None:
    failure = report.Failure("Unreachable", "Flowise at http://x did not answer within 5s")
    first = report.stopped({}, failure, generation=1, now=NOW)
    assert first.retry is True and first.status["reachable"] is False and len(first.events) == 1
    again = report.stopped(first.status, failure, generation=1, now="2026-01-01T00:01:00Z")
    assert again.events == ()
    assert again.status["conditions"][0]["lastTransitionTime"] == NOW


def test_a_sync_whose_pushes_failed_with_5xx_is_retried_and_says_which() -> None:
    push = sync.Push("id-a", "a", "create", {}, entry("a", sync.SYNCED))
    plan = sync.SyncPlan(entries={}, pushes=[push])
    results = {"id-a": sync.PushResult("id-a", False, message="HTTP 500 from Flowise", reason="ServerError")}
    after = report.after_sync({}, plan, results, None, url="http://x", version="3.1.4", generation=1, now=NOW)
    assert after.retry is True and after.outcome == "PushFailed"
    assert after.status["conditions"][0]["reason"] == "PushFailed"
    assert after.status["counts"]["failed"] == 1


def test_a_permanent_push_failure_waits_for_a_change_instead_of_retrying() -> None:
    push = sync.Push("id-a", "a", "create", {}, entry("a", sync.SYNCED))
    plan = sync.SyncPlan(entries={}, pushes=[push])
    results = {"id-a": sync.PushResult("id-a", False, message="Flowise refused the body", reason="BadResponse")}
    after = report.after_sync({}, plan, results, None, url="http://x", version="", generation=1, now=NOW)
    assert after.retry is False and after.status["conditions"][0]["status"] == "False"


def test_a_clean_sync_is_ready_and_written_or_unchanged() -> None:
    synced = sync.SyncPlan(entries={"id-a": entry("a", sync.SYNCED)})
    after = report.after_sync({}, synced, {}, None, url="http://x", version="3.1.4", generation=2, now=NOW)
    assert after.status["conditions"][0]["reason"] == "Synced" and after.status["reachable"] is True
    assert (after.retry, after.outcome, after.events) == (False, "unchanged", ())


def test_claims_come_before_the_first_push_and_keep_earlier_entries() -> None:
    earlier = entry("old", sync.SYNCED)
    claim = sync.Entry("new", "id-new", sync.PUSHING, owned=True)
    plan = sync.SyncPlan(entries={}, claims=[claim])
    claimed = report.claims([earlier], plan, "http://x")
    assert claimed is not None
    assert [item["id"] for item in claimed["credentials"]] == ["id-new", "id-old"]
    assert report.claims([earlier], sync.SyncPlan(entries={}), "http://x") is None
