"""What a FlowiseTarget says after a sync — its status, its Events — and whether the sync is retried.

The operator runs the plan of `sync.plan_sync` against Flowise and hands back what happened: the
result of each push and delete, and the failure that stopped the sync, if any, by its reason
(the Flowise client's typed errors each carry one). Everything decided from that lives here:
- which failures stop a sync (the next request would fail the same way: the server is down, the
  TLS handshake fails, the API key is refused) and which concern one credential only;
- which failures are transient and retried with backoff (the server is down or answers 5xx) and
  which wait for a change (a refused key waits for its Secret to change, or the periodic resync);
- the Ready condition, the counts and the entries, and the Events for a change of reason.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing

from credbridge.core import conditions, names, planning
from credbridge.core.flowise import sync

Json = dict[str, typing.Any]

STOPPING_REASONS = frozenset({"Unreachable", "TLSError", "Unauthorized", "Forbidden"})
"""Failures after which the sync stops: every further request would fail the same way."""
TRANSIENT_REASONS = frozenset({"Unreachable", "TLSError", "ServerError", "KeyUnavailable"})
"""Failures retried with backoff: they go away without a change the operator hears of. The others
(a refused key, a missing Secret, an unknown type, a bad answer) wait for a change of the target
or its Secrets, or the periodic resync."""
UNREACHABLE_REASONS = frozenset({"Unreachable", "TLSError"})
MESSAGE_LIMIT = 2000


@dataclasses.dataclass(frozen=True)
class Failure:
    """A failed request to Flowise: the client error's reason and message (never a value)."""

    reason: str
    message: str
    from_server: bool = True
    """False for failures found before asking Flowise (a missing Secret, an invalid URL, no keyring)."""

    @property
    def reachable(self) -> bool | None:
        """Whether Flowise answered (`status.reachable`), or None when it was not asked."""
        return self.reason not in UNREACHABLE_REASONS if self.from_server else None

    @property
    def stops_sync(self) -> bool:
        return self.reason in STOPPING_REASONS

    @property
    def transient(self) -> bool:
        return self.reason in TRANSIENT_REASONS


@dataclasses.dataclass(frozen=True)
class Report:
    """The status patch and Events after a sync, and whether to retry it with backoff."""

    status: Json
    events: tuple[planning.Event, ...]
    retry: bool
    outcome: str
    """For the reconcile metric: written, unchanged, or the reason the sync failed."""


def _ready_reason(status: collections.abc.Mapping[str, typing.Any]) -> str | None:
    return conditions.reason(status, names.READY_CONDITION)


def stopped(
    status: collections.abc.Mapping[str, typing.Any],
    failure: Failure,
    *,
    generation: int,
    now: str,
) -> Report:
    """The report of a sync that stopped before planning (Flowise unreachable, the key Secret missing):
    the entries stay as they were."""
    old = conditions.find(status, names.READY_CONDITION)
    patch: Json = {
        "observedGeneration": generation,
        "conditions": [
            conditions.condition(
                status, names.READY_CONDITION, "False", failure.reason, failure.message[:MESSAGE_LIMIT], now, generation
            )
        ],
    }
    if failure.reachable is not None:
        patch["reachable"] = failure.reachable
    changed = old is None or old.get("reason") != failure.reason or old.get("message") != failure.message
    events = (planning.Event("Warning", failure.reason, failure.message),) if changed else ()
    return Report(status=patch, events=events, retry=failure.transient, outcome=failure.reason)


def after_sync(
    status: collections.abc.Mapping[str, typing.Any],
    plan: sync.SyncPlan,
    results: collections.abc.Mapping[str, sync.PushResult],
    stop: Failure | None,
    *,
    url: str,
    version: str,
    generation: int,
    now: str,
) -> Report:
    """The report of a sync that reached Flowise and ran (some of) its plan."""
    entries = sync.entries_after(plan, results)
    if stop is not None:
        state, reason, message = "False", stop.reason, stop.message
    else:
        state, reason, message = sync.ready_condition(entries)
    patch: Json = {
        "url": url,
        "flowiseVersion": version,
        "reachable": stop is None or bool(stop.reachable),
        "counts": sync.counts(entries),
        "credentials": [entry.to_status() for entry in entries],
        "observedGeneration": generation,
        "conditions": [
            conditions.condition(status, names.READY_CONDITION, state, reason, message[:MESSAGE_LIMIT], now, generation)
        ],
    }
    events = [planning.Event(event.type, event.reason, event.message) for event in plan.events]
    if reason not in (_ready_reason(status), "Synced"):
        events.append(planning.Event("Warning", reason, message))
    retry = (stop is not None and stop.transient) or any(
        not result.ok and result.reason in TRANSIENT_REASONS for result in results.values()
    )
    if retry:
        outcome = reason
    elif plan.pushes or plan.deletes:
        outcome = "written"
    else:
        outcome = "unchanged"
    return Report(status=patch, events=tuple(events), retry=retry, outcome=outcome)


def claims(previous: collections.abc.Sequence[sync.Entry], plan: sync.SyncPlan, url: str) -> Json | None:
    """The status to write before the first push of new ids (ownership first: a crash after the POST
    must not turn credbridge's own credential into a "conflict"), or None when nothing is claimed."""
    if not plan.claims:
        return None
    return {"url": url, "credentials": [entry.to_status() for entry in sync.claimed_entries(previous, plan)]}
