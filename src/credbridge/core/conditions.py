"""Status conditions, written the way `kubectl wait --for=condition=...` and users expect, in one place.

Every kind credbridge reconciles reports a `Ready` condition (bindings also `RolloutReady`). The
rules are the same for all: a condition keeps its `lastTransitionTime` while its status stays the
same, and states the generation it was computed for.

A Credential's conditions have several writers — its reconciler (`Ready`), verification (`Verified`,
`ExpiringSoon`, `Expired`), OAuth2 (`OAuth2Ready`) — and a status patch replaces the whole list. So
each writer `merge`s its own conditions into the list it planned from, and leaves the others as
they are (a concurrent change of another writer fails the patch with 409, and it plans again).
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


def merge(
    previous: Status, new: collections.abc.Iterable[Json], *, drop: collections.abc.Iterable[str] = ()
) -> list[Json]:
    """The status's conditions with `new` ones replacing those of their type and the `drop` types removed;
    every other writer's conditions are kept, in their order. `Ready` stays first (`kubectl` users and
    scripts read `conditions[0]`)."""
    replaced = {condition["type"]: condition for condition in new}
    gone = set(drop)
    merged: list[Json] = []
    for condition in previous.get("conditions") or ():
        kind = condition.get("type")
        if kind in gone:
            continue
        merged.append(replaced.pop(kind) if kind in replaced else dict(condition))
    merged.extend(replaced.values())
    merged.sort(key=lambda condition: condition.get("type") != READY)
    return merged


READY = "Ready"
