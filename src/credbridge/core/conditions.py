"""Status conditions, written the way `kubectl wait --for=condition=...` and users expect, in one place.

Every kind credbridge reconciles reports a `Ready` condition (bindings also `RolloutReady`). The
rules are the same for all: a condition keeps its `lastTransitionTime` while its status stays the
same, and states the generation it was computed for.
"""

from __future__ import annotations

import collections.abc
import typing

Json = dict[str, typing.Any]
Status = collections.abc.Mapping[str, typing.Any]


def find(status: Status, condition_type: str) -> Status | None:
    """The condition of `condition_type` in a status, or None."""
    for condition in status.get("conditions") or ():
        if condition.get("type") == condition_type:
            return typing.cast(Status, condition)
    return None


def reason(status: Status, condition_type: str) -> str | None:
    """The reason of the condition of `condition_type`, or None when there is none."""
    condition = find(status, condition_type)
    return None if condition is None else str(condition.get("reason"))


def condition(
    previous: Status,
    condition_type: str,
    state: str,
    why: str,
    message: str,
    now: str,
    generation: int,
) -> Json:
    """A condition for the new status, keeping the previous transition time while `state` stays the same."""
    old = find(previous, condition_type)
    since = old.get("lastTransitionTime") if old and old.get("status") == state else None
    return {
        "type": condition_type,
        "status": state,
        "reason": why,
        "message": message,
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }
